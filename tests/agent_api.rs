//! The agent's HTTP API and metrics against a real agent: real traffic from an instance
//! namespace pushes it into a penalty and over a quota; every endpoint must then tell the
//! same story as the kernel and the state file, `/metrics` must carry the kernel's byte
//! counts, and an admin token (and only one) releases the penalty — which the real tc
//! class then shows.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sluice::enforce::tc::ifb_name;
use support::http::{get_json, request, wait_healthy};
use support::{AgentProc, Netns, eventually, send_udp, sluice_bin, veth};

const PORT: u16 = 9477;

fn sluice_in(ns: &Netns, args: &[&str], config: &Path) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(sluice_bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

/// The value of the one sample line starting with `series` (name and labels).
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn every_endpoint_tells_what_the_kernel_and_the_state_say() {
    let host = Netns::new("ah");
    let inst = Netns::new("ai");
    let link = veth(&host, "tap401i0", &inst, "eth0", 91);
    let ifb = ifb_name(host.ifindex(&link.a));
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
backend = "tc"
state_dir = "{run}"
data_dir = "{run}/lib"
listen = "127.0.0.1:{PORT}"
[log]
dir = ""
[penalty]
base_rate = "20mbit"
[[penalty.stage]]
usage = 0.5
trigger = "2s"
rate = 0.5
duration = "1h"
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
    let agent = AgentProc::start(&host, &config, tmp.path().join("agent.log"));
    wait_healthy(&host, PORT, Duration::from_secs(15));
    // The agent's first sample is the rule's baseline; the link is quiet until the
    // traffic below (IPv6 is off, neighbours are static), so the kernel's counter now
    // is the counter then.
    eventually(Duration::from_secs(15), "the agent's first tick", || {
        (get_json(&host, PORT, "/healthz")["status"] == "ok").then_some(())
    });
    let rx_before = host.sysfs_counter("tap401i0", "rx_bytes");

    // ~15 Mbit of UDP for up to 6 s: over stage 1's 10 Mbit trigger and over 1 MB.
    let payload = 1200;
    let sent = send_udp(
        &inst.name,
        link.a_ip,
        payload,
        8_000,
        15_000_000,
        Duration::from_secs(6),
    );
    assert!(sent > 1000, "sent {sent}");
    eventually(Duration::from_secs(15), "stage 1 in the API", || {
        let v = get_json(&host, PORT, "/v1/interfaces");
        (v["interfaces"][0]["stage"] == 1).then_some(())
    });
    // Let the last of the traffic be counted: two more ticks.
    std::thread::sleep(Duration::from_millis(2500));

    // /v1/interfaces is what `sluice list --json` prints (the state file), record for record.
    let api = get_json(&host, PORT, "/v1/interfaces");
    let listed: serde_json::Value =
        serde_json::from_slice(&sluice_in(&host, &["list", "--json"], &config).stdout).unwrap();
    let iface = &api["interfaces"][0];
    assert_eq!(iface["interface"], "tap401i0");
    assert_eq!(iface["upload_limit_kbps"], 10_000);
    assert_eq!(iface["enforcement"], listed["interfaces"][0]["enforcement"]);
    for key in [
        "interface",
        "instance",
        "stage",
        "since",
        "until",
        "upload_limit_kbps",
    ] {
        assert_eq!(iface[key], listed["interfaces"][0][key], "{key}");
    }
    assert_eq!(api["backend"], "tc");

    // One instance: its interface and its rule's count, over the limit.
    let one = get_json(&host, PORT, "/v1/instances/401");
    assert_eq!(one["base_rate_bps"], 20_000_000);
    assert_eq!(one["interfaces"][0]["stage"], 1);
    let q = &one["quotas"][0];
    assert_eq!(
        (q["rule"].as_str(), q["exceeded"].as_bool()),
        (Some("daily"), Some(true))
    );
    // The count is the bytes the tap received since the baseline, as the kernel has them
    // (the traffic is over: the next tick counts the last of it).
    let received = host.sysfs_counter("tap401i0", "rx_bytes") - rx_before;
    let used = eventually(
        Duration::from_secs(10),
        "the count reaches the kernel's",
        || {
            let v =
                get_json(&host, PORT, "/v1/instances/401")["quotas"][0]["used_bytes"].as_u64()?;
            (v == received).then_some(v)
        },
    );
    assert!(q["used_bytes"].as_u64().unwrap() <= used);
    let (code, body) = request(&host, PORT, "GET", "/v1/instances/999", None);
    assert_eq!(code, 404, "{body}");
    let (code, body) = request(&host, PORT, "GET", "/v1/instances/a%20b", None);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("\"field\":\"id\""), "{body}");

    let rules = get_json(&host, PORT, "/v1/rules");
    let r = &rules["rules"][0];
    assert_eq!(
        (r["name"].as_str(), r["limit_bytes"].as_u64()),
        (Some("daily"), Some(1_000_000))
    );
    assert_eq!(
        (r["source"].as_str(), r["action"].as_str()),
        (Some("config"), Some("warn"))
    );

    // /metrics: the kernel's counter exactly (no traffic since; IPv6 is off), the stage,
    // the limit, the rule's count as the instance view has it.
    let (code, text) = request(&host, PORT, "GET", "/metrics", None);
    assert_eq!(code, 200);
    let labels = r#"{interface="tap401i0",instance="401"}"#;
    let rx = metric(
        &text,
        &format!("sluice_interface_receive_bytes_total{labels}"),
    )
    .unwrap();
    assert_eq!(
        rx as u64,
        host.sysfs_counter("tap401i0", "rx_bytes"),
        "{text}"
    );
    assert!(rx as u64 >= sent * payload as u64);
    assert_eq!(
        metric(&text, &format!("sluice_penalty_stage{labels}")),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            r#"sluice_limit_bytes_per_second{interface="tap401i0",instance="401",direction="upload"}"#
        ),
        Some(1_250_000.0)
    );
    assert_eq!(
        metric(
            &text,
            r#"sluice_rule_usage_bytes{rule="daily",instance="401"}"#
        ),
        Some(used as f64)
    );
    assert_eq!(
        metric(
            &text,
            r#"sluice_rule_limit_bytes{rule="daily",instance="401"}"#
        ),
        Some(1e6)
    );
    assert!(metric(&text, "sluice_tick_duration_seconds_count").unwrap() >= 3.0);
    assert_eq!(metric(&text, "sluice_enforce_failures_total"), Some(0.0));

    // Releasing needs an admin token.
    let path = "/v1/interfaces/tap401i0/release";
    let (code, body) = request(&host, PORT, "POST", path, None);
    assert_eq!(code, 401, "{body}");
    let bogus = "sluice_0123abcd_0000000000000000000000000000000000000000000000000000000000000000";
    assert_eq!(request(&host, PORT, "POST", path, Some(bogus)).0, 401);
    let made = sluice_in(&host, &["token", "create"], &config);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let token = String::from_utf8(made.stdout).unwrap().trim().to_owned();
    // The operator's way: the dashboard in a real browser, the token typed in, the
    // Release button clicked and its confirm dialog accepted.
    let driver = support::browser::Chromedriver::start(&host);
    let typed = token.clone();
    let note = driver.session(move |c| async move {
        use support::browser::{click_and_confirm, enter_token, note_saying};
        c.goto(&format!("http://127.0.0.1:{PORT}/")).await.unwrap();
        enter_token(&c, &typed).await;
        click_and_confirm(&c, "button[data-release=\"tap401i0\"]", "tap401i0").await;
        note_saying(&c, "Released").await
    });
    assert!(note.contains("Released: tap401i0"), "{note}");
    let all = get_json(&host, PORT, "/v1/interfaces");
    let released = all["interfaces"]
        .as_array()
        .unwrap_or_else(|| panic!("{all}"))
        .iter()
        .find(|i| i["interface"] == "tap401i0")
        .unwrap_or_else(|| panic!("{all}"))
        .clone();
    assert_eq!(released["stage"], 0, "{released}");
    assert_eq!(released["upload_limit_kbps"], 20_000, "{released}");
    // The kernel has the base rate back already (the release ticks at once).
    let classes = host.exec("tc", &["class", "show", "dev", &ifb]);
    assert!(classes.contains("rate 20Mbit"), "{classes}");
    let (code, body) = request(&host, PORT, "POST", path, Some(&token));
    assert_eq!(code, 409, "{body}");
    let (code, _) = request(
        &host,
        PORT,
        "POST",
        "/v1/interfaces/tap999i0/release",
        Some(&token),
    );
    assert_eq!(code, 404);

    // An operator's quota reset: the count starts over and the exceeded action lifts.
    let reset = "/v1/instances/401/rules/daily/reset";
    assert_eq!(request(&host, PORT, "POST", reset, None).0, 401);
    let (code, _) = request(
        &host,
        PORT,
        "POST",
        "/v1/instances/401/rules/nope/reset",
        Some(&token),
    );
    assert_eq!(code, 404);
    // Reset clicked on the instance's page (the token is kept for the tab's session).
    let typed = token.clone();
    let note = driver.session(move |c| async move {
        use support::browser::{click_and_confirm, enter_token, note_saying};
        c.goto(&format!("http://127.0.0.1:{PORT}/instances/401"))
            .await
            .unwrap();
        enter_token(&c, &typed).await;
        click_and_confirm(&c, "button[data-reset-rule=\"daily\"]", "401 · daily").await;
        note_saying(&c, "Reset:").await
    });
    assert!(note.contains("Reset: 401 · daily"), "{note}");
    drop(driver);
    let after = get_json(&host, PORT, "/v1/instances/401");
    let daily = after["quotas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["rule"] == "daily")
        .unwrap_or_else(|| panic!("{after}"));
    assert_eq!(
        (daily["used_bytes"].as_u64(), daily["exceeded"].as_bool()),
        (Some(0), Some(false)),
        "{after}"
    );
    let (_, text) = request(&host, PORT, "GET", "/metrics", None);
    assert_eq!(
        metric(
            &text,
            r#"sluice_rule_usage_bytes{rule="daily",instance="401"}"#
        ),
        Some(0.0)
    );

    // The event log has the release, as the CLI's does.
    let ev = get_json(&host, PORT, "/v1/events?since=10m&instance=401");
    let kinds: Vec<(String, String)> = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap_or("").to_owned(),
                e["cause"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert!(
        kinds.contains(&("stage".into(), "escalated".into())),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("stage".into(), "released".into())),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("quota_reset".into(), String::new())),
        "{kinds:?}"
    );
    let restored = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["event"] == "rule" && e["state"] == "restored" && e["rule"] == "daily");
    assert!(restored, "{:?}", ev["events"]);
    let (code, body) = request(&host, PORT, "GET", "/v1/events?since=soon", None);
    assert_eq!(code, 400);
    assert!(body.contains("\"field\":\"since\""), "{body}");

    // `sluice status`: one screen from the API (the reset above lifted the exceed).
    let out = sluice_in(&host, &["status"], &config);
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{screen}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(screen.contains("running (pid"), "{screen}");
    assert!(screen.contains("1 matched (1 instances)"), "{screen}");
    assert!(screen.contains("0 active"), "{screen}");
    assert!(screen.contains("1 in force, 0 quotas exceeded"), "{screen}");
    let json: serde_json::Value =
        serde_json::from_slice(&sluice_in(&host, &["status", "--json"], &config).stdout).unwrap();
    assert_eq!(
        (json["interfaces"].as_u64(), json["backend"].as_str()),
        (Some(1), Some("tc"))
    );

    // A revoked token is refused from the next request.
    let id = &token["sluice_".len().."sluice_".len() + 8];
    let revoked = sluice_in(&host, &["token", "revoke", id], &config);
    assert!(revoked.status.success());
    assert_eq!(request(&host, PORT, "POST", path, Some(&token)).0, 401);

    assert_eq!(agent.stop(), Some(0));
    // The reset is in the ledger: a restarted agent would count from zero.
    let ledger = sluice::account::Ledger::open(&run.join("lib/ledger.db"), "test").unwrap();
    let counts = ledger.quotas().unwrap();
    let (_, daily) = counts
        .iter()
        .find(|((rule, inst), _)| rule.as_str() == "daily" && inst.as_str() == "401")
        .unwrap();
    assert_eq!((daily.upload, daily.exceeded), (0, false));
    let out = sluice_in(&host, &["status"], &config);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).contains("NOT running"));
}

/// Bound beyond loopback (`0.0.0.0`), every read needs a viewer or admin token:
/// `/healthz` stays open, `/metrics` only with `metrics_public`. A viewer reads but
/// carries out nothing; the dashboard's sign-in keeps a viewer's token in an HTTP-only
/// cookie that a real browser then sends with the page's refreshes; `Host` must be an
/// address, localhost or a listed name.
#[test]
fn off_loopback_reads_need_a_token_and_a_viewer_only_reads() {
    use support::http::exchange;
    let host = Netns::new("ao");
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let config = tmp.path().join("sluice.toml");
    let write_config = |metrics_public: bool| {
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
listen = "0.0.0.0:{PORT}"
allowed_hosts = ["hv1.example.net"]
metrics_public = {metrics_public}
[log]
dir = ""
[penalty]
base_rate = "20mbit"
"#,
                run = run.display()
            ),
        )
        .unwrap();
    };
    write_config(false);
    let token = |role: &str| {
        let out = sluice_in(&host, &["token", "create", "--role", role], &config);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let (admin, viewer) = (token("admin"), token("viewer"));
    let agent = AgentProc::start(&host, &config, tmp.path().join("agent.log"));
    wait_healthy(&host, PORT, Duration::from_secs(15));
    let ask = |method: &str, path: &str, headers: &[(&str, &str)]| {
        exchange(&host, PORT, method, path, headers, "")
    };
    let (admin_auth, viewer_auth) = (format!("Bearer {admin}"), format!("Bearer {viewer}"));
    for path in [
        "/v1/status",
        "/v1/interfaces",
        "/v1/rules",
        "/v1/events",
        "/metrics",
    ] {
        let a = ask("GET", path, &[]);
        assert_eq!(a.status, 401, "{path} without a token: {}", a.body);
        for auth in [&viewer_auth, &admin_auth] {
            assert_eq!(
                ask("GET", path, &[("Authorization", auth)]).status,
                200,
                "{path}"
            );
        }
    }
    let page = ask("GET", "/", &[]);
    assert_eq!(page.status, 401);
    assert!(page.body.contains("action=\"/login\""), "{}", page.body);
    // A viewer is refused every action, before the action looks at its target.
    let release = "/v1/interfaces/tap402i0/release";
    let a = ask("POST", release, &[("Authorization", &viewer_auth)]);
    assert_eq!(a.status, 403, "{}", a.body);
    let reset = "/v1/instances/402/rules/daily/reset";
    assert_eq!(
        ask("POST", reset, &[("Authorization", &viewer_auth)]).status,
        403
    );
    // An admin's sign-in cookie reads, but an action still needs the header.
    let jar = format!("sluice_token={admin}");
    assert_eq!(ask("GET", "/v1/status", &[("Cookie", &jar)]).status, 200);
    assert_eq!(ask("POST", release, &[("Cookie", &jar)]).status, 401);
    for (name, want) in [
        ("hv1.example.net:9477", 200),
        ("127.0.0.1:9477", 200),
        ("evil.example:9477", 421),
    ] {
        let a = ask("GET", "/healthz", &[("Host", name)]);
        assert_eq!(a.status, want, "Host {name}: {}", a.body);
    }

    // A real browser signs in with the viewer's token, then the page refreshes itself.
    let driver = support::browser::Chromedriver::start(&host);
    let typed = viewer.clone();
    let (cookie_seen, note) = driver.session(move |c| async move {
        use fantoccini::Locator;
        use support::browser::{note_saying, until};
        c.goto(&format!("http://127.0.0.1:{PORT}/")).await.unwrap();
        let input = c
            .find(Locator::Css("#login input[name=token]"))
            .await
            .unwrap();
        input.send_keys(&typed).await.unwrap();
        c.find(Locator::Css("#login button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        until(&c, "the dashboard", "document.getElementById('instances')").await;
        // The note says "Updated …" once the page's own refresh came back 200.
        let note = note_saying(&c, "Updated").await;
        let cookie = c.execute("return document.cookie;", vec![]).await.unwrap();
        (cookie, note)
    });
    drop(driver);
    assert_eq!(
        cookie_seen,
        serde_json::json!(""),
        "the cookie is HTTP-only"
    );
    assert!(note.starts_with("Updated"), "{note}");
    assert_eq!(agent.stop(), Some(0));

    // metrics_public: a scraper needs no token, the rest still does.
    write_config(true);
    let agent = AgentProc::start(&host, &config, tmp.path().join("agent2.log"));
    wait_healthy(&host, PORT, Duration::from_secs(15));
    let a = exchange(&host, PORT, "GET", "/metrics", &[], "");
    assert_eq!(a.status, 200);
    assert!(a.body.contains("sluice_"), "{}", a.body);
    assert_eq!(
        exchange(&host, PORT, "GET", "/v1/status", &[], "").status,
        401
    );
    assert_eq!(agent.stop(), Some(0));
}
