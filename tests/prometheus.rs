//! The metrics as Prometheus itself reads them: Debian's `promtool check metrics` lints
//! the agent's and the store's `/metrics`, and a real `prometheus` scrapes an agent that
//! counts real traffic (a penalty, a quota over its limit, reports spooled for a store)
//! and answers every expression of the shipped Grafana dashboard with data.

mod support;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::http::{exchange, get_json, request, wait_healthy};
use support::store::{StoreProc, create_token};
use support::{AgentProc, Netns, eventually, send_udp, veth};

const AGENT_PORT: u16 = 9483;
const PROMETHEUS_PORT: u16 = 9484;

/// `promtool check metrics` on `text`: (passed, what it said).
fn promtool(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// A `prometheus` server in `ns`, killed by pid on drop.
struct Prometheus {
    child: Child,
}

impl Prometheus {
    fn start(ns: &Netns, dir: &std::path::Path, target: u16) -> Prometheus {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: sluice\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "prometheus"])
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus (Debian's prometheus package)");
        Prometheus { child }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every `expr` of the dashboard, its variables matching everything.
fn dashboard_expressions() -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v.as_str()) {
                        ("expr", Some(e)) => out.push(e.to_owned()),
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/grafana/sluice.json"
    ))
    .unwrap();
    let mut out = Vec::new();
    walk(&serde_json::from_str(&text).unwrap(), &mut out);
    out.iter()
        .map(|e| e.replace("$host", ".*").replace("$vm", ".*"))
        .collect()
}

/// `s` percent-encoded for a query string.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn prometheus_reads_both_expositions_and_every_dashboard_expression_has_data() {
    support::require_root();
    let host = Netns::new("ph");
    let inst = Netns::new("pi");
    let link = veth(&host, "tap601i0", &inst, "eth0", 93);
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("quota.db");
    let token = create_token(&db, &["--role", "agent", "--host", "hv-p"]);
    let store = StoreProc::start_in(Some(&host.name), &db, &[]);
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
listen = "127.0.0.1:{AGENT_PORT}"
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
[store]
url = "{url}"
token = "{token}"
host = "hv-p"
"#,
            run = run.display(),
            url = store.base,
        ),
    )
    .unwrap();
    let agent = AgentProc::start(&host, &config, tmp.path().join("agent.log"));
    wait_healthy(&host, AGENT_PORT, Duration::from_secs(15));
    let prometheus = Prometheus::start(&host, tmp.path(), AGENT_PORT);
    let query = |expr: &str| -> serde_json::Value {
        let (code, body) = request(
            &host,
            PROMETHEUS_PORT,
            "GET",
            &format!("/api/v1/query?query={}", encode(expr)),
            None,
        );
        assert_eq!(code, 200, "{expr}: {body}");
        serde_json::from_str(&body).unwrap()
    };
    eventually(
        Duration::from_secs(30),
        "prometheus scraping the agent",
        || {
            let v = std::panic::catch_unwind(|| query("up{job=\"sluice\"}")).ok()?;
            (v["data"]["result"][0]["value"][1] == "1").then_some(())
        },
    );

    // ~15 Mbit of UDP for up to 6 s: a penalty (over 10 Mbit for 2 s) and over 1 MB.
    let sent = send_udp(
        &inst.name,
        link.a_ip,
        1200,
        8_000,
        15_000_000,
        Duration::from_secs(6),
    );
    assert!(sent > 1000, "sent {sent}");
    eventually(Duration::from_secs(15), "stage 1", || {
        (get_json(&host, AGENT_PORT, "/v1/interfaces")["interfaces"][0]["stage"] == 1).then_some(())
    });

    // Both expositions, read in the text format (no Accept header), pass promtool's lint;
    // asked for OpenMetrics (as Prometheus asks), they answer in it.
    let plain = exchange(&host, AGENT_PORT, "GET", "/metrics", &[], "");
    assert_eq!(plain.status, 200);
    assert_eq!(
        plain.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = plain.body;
    assert!(text.contains("sluice_limit_bytes_per_second{"), "{text}");
    assert!(
        text.contains("# TYPE sluice_interface_receive_bytes_total counter"),
        "{text}"
    );
    assert!(!text.contains("# EOF"), "{text}");
    let (ok, said) = promtool(&text);
    assert!(ok, "agent /metrics: {said}\n{text}");
    let (code, store_text) = request(&host, store.port(), "GET", "/metrics", None);
    assert_eq!(code, 200, "{store_text}");
    assert!(store_text.contains("_total counter"), "{store_text}");
    let (ok, said) = promtool(&store_text);
    assert!(ok, "store /metrics: {said}\n{store_text}");
    for port in [AGENT_PORT, store.port()] {
        let om = exchange(
            &host,
            port,
            "GET",
            "/metrics",
            &[(
                "Accept",
                "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
            )],
            "",
        );
        assert_eq!(
            om.header("content-type"),
            Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
        );
        assert!(om.body.ends_with("# EOF\n"), "{}", om.body);
    }

    // Every dashboard expression answers with at least one series: rates need two
    // scrapes of the traffic, so give it a few.
    let expressions = dashboard_expressions();
    assert!(expressions.len() >= 10, "{expressions:?}");
    for expr in &expressions {
        eventually(Duration::from_secs(20), expr, || {
            let v = query(expr);
            assert_eq!(v["status"], "success", "{expr}: {v}");
            let result = v["data"]["result"].as_array()?;
            (!result.is_empty()).then_some(())
        });
    }
    // The limit panel shows bit/s again: 10 Mbit/s, stage 1's half of the base rate.
    let limit = query(
        &expressions
            .iter()
            .find(|e| e.contains("sluice_limit_bytes_per_second"))
            .unwrap()
            .clone(),
    );
    assert_eq!(
        limit["data"]["result"][0]["value"][1], "10000000",
        "{limit}"
    );
    drop(prometheus);
    assert_eq!(agent.stop(), Some(0));
}
