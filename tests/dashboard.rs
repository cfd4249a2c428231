//! The dashboard in a real browser: an agent whose ledger and quota counts come from real
//! traffic between namespaces serves `/`; headless Chromium (run inside the agent's
//! namespace, so it reaches the agent's loopback) loads it, runs its script, and the DOM
//! it dumps must hold each instance with the exact count the agent's API reports; a
//! screenshot must not be blank; a second load switches language and theme.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::http::{get_json, wait_healthy};
use support::{AgentProc, Netns, eventually, send_udp, veth};

const PORT: u16 = 9477;

fn chromium() -> PathBuf {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("chromium is installed by scripts/test")
}

/// Run headless Chromium inside `ns` with a fresh profile; returns stdout.
fn browse(ns: &Netns, profile: &Path, args: &[&str]) -> String {
    let out = Command::new("timeout")
        .arg("60")
        .args(["ip", "netns", "exec", &ns.name])
        .arg(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// (width, height, mean brightness 0..255, distinct colours) of a PNG file.
fn png_facts(path: &Path) -> (u32, u32, f64, usize) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let px: Vec<&[u8]> = buf[..info.buffer_size()].chunks(channels).collect();
    let mean = px
        .iter()
        .map(|p| (p[0] as f64 + p[1] as f64 + p[2] as f64) / 3.0)
        .sum::<f64>()
        / px.len() as f64;
    let mut colours: Vec<&[u8]> = px.iter().map(|p| &p[..3]).collect();
    colours.sort_unstable();
    colours.dedup();
    (info.width, info.height, mean, colours.len())
}

/// With `SLUICE_DASHBOARD_KEEP=DIR`, keep a copy of a screenshot to look at.
fn keep(file: &Path) {
    if let Some(dir) = std::env::var_os("SLUICE_DASHBOARD_KEEP") {
        std::fs::copy(file, PathBuf::from(dir).join(file.file_name().unwrap())).unwrap();
    }
}

#[test]
fn the_page_shows_each_instance_with_its_count_in_a_real_browser() {
    let host = Netns::new("dh");
    let a = Netns::new("da");
    let b = Netns::new("db");
    let la = veth(&host, "tap601i0", &a, "eth0", 61);
    let lb = veth(&host, "tap602i0", &b, "eth0", 62);
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let config = tmp.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[agent]
interval = "1s"
interfaces = ['^tap(?P<instance>[0-9]+)i[0-9]+$']
backend = "none"
state_dir = "{run}"
data_dir = "{run}/lib"
listen = "127.0.0.1:{PORT}"
[log]
dir = ""
[penalty]
base_rate = "100mbit"
[[rule]]
name = "daily"
period = "day"
timezone = "UTC"
direction = "upload"
limit = "1MB"
action = "warn"
"#,
            run = run.display()
        ),
    )
    .unwrap();
    let _agent = AgentProc::start(&host, &config, tmp.path().join("agent.log"));
    wait_healthy(&host, PORT, Duration::from_secs(15));
    // The agent's first sample is each rule count's baseline; the links are quiet until
    // the traffic below (IPv6 is off, neighbours are static).
    eventually(Duration::from_secs(15), "the agent's first tick", || {
        (get_json(&host, PORT, "/healthz")["status"] == "ok").then_some(())
    });
    let rx = |tap: &str| host.sysfs_counter(tap, "rx_bytes");
    let before = (rx("tap601i0"), rx("tap602i0"));
    // 601 sends ~2 MB, 602 ~0.3 MB, both bounded in time.
    send_udp(
        &a.name,
        la.a_ip,
        1000,
        2000,
        20_000_000,
        Duration::from_secs(5),
    );
    send_udp(
        &b.name,
        lb.a_ip,
        1000,
        300,
        20_000_000,
        Duration::from_secs(5),
    );
    let used = |id: &str| -> Option<u64> {
        get_json(&host, PORT, &format!("/v1/instances/{id}"))["quotas"][0]["used_bytes"].as_u64()
    };
    // Counted: each rule count reaches what the kernel says its tap received since.
    let received = (rx("tap601i0") - before.0, rx("tap602i0") - before.1);
    assert!(received.0 > 2_000_000, "601 sent {} bytes", received.0);
    let counts = eventually(Duration::from_secs(15), "counts reach the kernel's", || {
        let now = (used("601")?, used("602")?);
        (now == received).then_some(now)
    });

    let profile = tempfile::tempdir().unwrap();
    let dom = browse(
        &host,
        profile.path(),
        &["--dump-dom", &format!("http://127.0.0.1:{PORT}/")],
    );
    for (id, bytes) in [("601", counts.0), ("602", counts.1)] {
        assert!(
            dom.contains(&format!("<tr data-instance=\"{id}\">")),
            "{id} row\n{dom}"
        );
        assert!(
            dom.contains(&format!(
                "data-rule=\"daily\" data-used=\"{bytes}\" data-limit=\"1000000\""
            )),
            "{id}: count {bytes}\n{dom}"
        );
    }
    // The script ran: the summary and English labels are there, the release buttons are
    // hidden without a token (buttons show only under the root's `admin` class, which
    // the script sets once a token is typed in), no error note.
    assert!(dom.contains("<html lang=\"en\""), "{}", &dom[..200]);
    let root_tag = &dom[dom.find("<html").unwrap()..];
    let root_tag = &root_tag[..root_tag.find('>').unwrap()];
    assert!(
        !root_tag.contains("admin"),
        "buttons shown without a token: {root_tag}"
    );
    let note = &dom[dom.find("<p id=\"note\"").expect("the note element")..];
    let note = &note[..note.find("</p>").unwrap()];
    assert!(!note.contains("Failed"), "an error note: {note}");
    assert!(dom.contains(">Period usage<"));
    assert!(
        dom.contains("<td>rule</td>") || dom.contains("<td>stage</td>"),
        "events listed"
    );

    let shot = tmp.path().join("light.png");
    browse(
        &host,
        profile.path(),
        &[
            "--window-size=1280,800",
            &format!("--screenshot={}", shot.display()),
            &format!("http://127.0.0.1:{PORT}/"),
        ],
    );
    keep(&shot);
    let (w, h, light, colours) = png_facts(&shot);
    assert_eq!((w, h), (1280, 800));
    assert!(colours > 30, "a blank screenshot: {colours} colours");
    assert!(light > 180.0, "light theme is light: mean {light:.0}");

    // Chinese and dark, as the switches would set them.
    let profile2 = tempfile::tempdir().unwrap();
    let zh = browse(
        &host,
        profile2.path(),
        &[
            "--dump-dom",
            &format!("http://127.0.0.1:{PORT}/?lang=zh&theme=dark"),
        ],
    );
    assert!(
        zh.contains("lang=\"zh\"") && zh.contains("class=\"dark\""),
        "{}",
        &zh[..300]
    );
    assert!(
        zh.contains(">周期用量<") && zh.contains(">实例<"),
        "translated"
    );
    assert!(
        zh.contains(
            "data-used=\"{}\""
                .replace("{}", &counts.0.to_string())
                .as_str()
        )
    );
    let dark = tmp.path().join("dark.png");
    browse(
        &host,
        profile2.path(),
        &[
            "--window-size=1280,800",
            &format!("--screenshot={}", dark.display()),
            &format!("http://127.0.0.1:{PORT}/?theme=dark"),
        ],
    );
    keep(&dark);
    let (_, _, darkness, colours) = png_facts(&dark);
    assert!(colours > 30);
    assert!(darkness < 80.0, "dark theme is dark: mean {darkness:.0}");

    // Filtering and sorting, as a shared link sets them.
    let filtered = browse(
        &host,
        profile.path(),
        &["--dump-dom", &format!("http://127.0.0.1:{PORT}/?q=602")],
    );
    assert!(
        filtered.contains("<tr data-instance=\"601\" hidden=\"\">"),
        "{filtered}"
    );
    assert!(filtered.contains("<tr data-instance=\"602\">"));
    let row_order = |dir: &str| {
        let dom = browse(
            &host,
            profile.path(),
            &[
                "--dump-dom",
                &format!("http://127.0.0.1:{PORT}/?sort=4&dir={dir}"),
            ],
        );
        let (a, b) = (
            dom.find("data-instance=\"601\"").unwrap(),
            dom.find("data-instance=\"602\"").unwrap(),
        );
        assert!(dom.contains("data-dir=\""), "the sorted header is marked");
        a < b
    };
    assert!(
        row_order("desc"),
        "601 uses more of its quota: first when descending"
    );
    assert!(!row_order("asc"));

    // Auto-refresh: with virtual time run ahead past the 5 s refresh, the script has
    // fetched the fragments again and swapped them in (its note says so), rows intact.
    let later = browse(
        &host,
        profile.path(),
        &[
            "--virtual-time-budget=12000",
            "--dump-dom",
            &format!("http://127.0.0.1:{PORT}/"),
        ],
    );
    assert!(
        later.contains("<p id=\"note\">Updated "),
        "no refresh happened:\n{later}"
    );
    assert!(later.contains(&format!("data-used=\"{}\"", counts.1)));

    // What a browser gets on the wire: gzip when it asks for it.
    let head = host.run(|| {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(("127.0.0.1", PORT)).unwrap();
        c.write_all(
            b"GET / HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        let mut raw = Vec::new();
        c.read_to_end(&mut raw).unwrap();
        let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase()
    });
    assert!(head.contains("content-encoding: gzip"), "{head}");

    // The instance page and its chart.
    let inst = tmp.path().join("instance.png");
    browse(
        &host,
        profile.path(),
        &[
            "--window-size=1280,1000",
            &format!("--screenshot={}", inst.display()),
            &format!("http://127.0.0.1:{PORT}/instances/601"),
        ],
    );
    keep(&inst);
    assert!(png_facts(&inst).3 > 30);
    let page = browse(
        &host,
        profile.path(),
        &[
            "--dump-dom",
            &format!("http://127.0.0.1:{PORT}/instances/601"),
        ],
    );
    assert!(page.contains("data-interface=\"tap601i0\""), "{page}");
    assert!(page.contains("chart.svg?by=hour"));
    let (code, svg) = support::http::request(
        &host,
        PORT,
        "GET",
        "/v1/instances/601/chart.svg?by=5m",
        None,
    );
    assert_eq!(code, 200);
    assert!(
        svg.starts_with("<svg") || svg.contains("<svg"),
        "{}",
        &svg[..100.min(svg.len())]
    );
    assert!(
        svg.contains("Instance 601") && svg.contains("Rule daily"),
        "quota panel"
    );
}
