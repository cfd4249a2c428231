//! The agent API's cost, printed as ratios against baselines measured in the same run.
//! Needs root (a network namespace with cheap links and a real agent in it).
//!
//!   cargo bench --bench api            # 10,000 interfaces (target: /metrics <= 50 ms)
//!   cargo bench --bench api -- quick   # 1,000 interfaces
//!
//! 1. A real `sluice agent` (release build) watching N interfaces, asked over HTTP on
//!    its loopback: `GET /metrics` against `GET /healthz` (the HTTP floor: no question
//!    to the tick loop) and `GET /v1/interfaces` (the same state as JSON).
//! 2. In process, the worst case the agent can be asked to encode: every interface
//!    penalised with both limits, and a quota rule's count for every instance — against
//!    serde_json of the same records (what the state file write costs).

#[path = "common.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{KillOnDrop, median, release_binary};
use sluice::api::agent::metrics::{AgentMetrics, InterfaceSeries, RuleSeries, Scrape, render};
use sluice::model::ids::{IfName, InstanceId, RuleName};
use support::Netns;
use support::http::{request, wait_healthy};

const PORT: u16 = 9477;

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn over_http(n: usize) {
    let ns = Netns::new("api");
    let names: Vec<String> = (0..n).map(|i| format!("kvm{i}.0")).collect();
    ns.add_cheap_links(&names);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("sluice.toml");
    std::fs::write(
        &cfg,
        format!(
            "[agent]\ninterval=\"10s\"\ninterfaces=['^kvm(?P<instance>[0-9]+)\\..*$']\nbackend=\"none\"\nstate_dir=\"{0}\"\ndata_dir=\"{0}/lib\"\nlisten=\"127.0.0.1:{PORT}\"\n[log]\ndir=\"\"\n[penalty]\nbase_rate=\"1gbit\"\n[[rule]]\nname=\"monthly\"\nperiod=\"month\"\nlimit=\"1TB\"\naction=\"warn\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let bin = release_binary();
    let child = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(&bin)
        .args(["agent", "--config"])
        .arg(&cfg)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _child = KillOnDrop(child);
    wait_healthy(&ns, PORT, Duration::from_secs(60));
    let (_, text) = request(&ns, PORT, "GET", "/metrics", None);
    let series = text.lines().filter(|l| !l.starts_with('#')).count();
    let per_iface = text
        .lines()
        .filter(|l| l.starts_with("sluice_interface_receive_bytes_total{"))
        .count();
    assert_eq!(per_iface, n, "every interface exported");
    let get = |path: &'static str| {
        let ns = &ns;
        median(21, move || {
            let (code, _) = request(ns, PORT, "GET", path, None);
            assert_eq!(code, 200);
        })
    };
    let floor = get("/healthz");
    let json = get("/v1/interfaces");
    let metrics = get("/metrics");
    println!(
        "{n:>6} interfaces over HTTP (median of 21): /metrics {} ({series} samples, {} KB)  /v1/interfaces {}  /healthz {}  metrics/interfaces-json = {:.2}x  metrics/floor = {:.1}x  (target /metrics <= 50 ms: {})",
        ms(metrics),
        text.len() / 1000,
        ms(json),
        ms(floor),
        metrics.as_secs_f64() / json.as_secs_f64(),
        metrics.as_secs_f64() / floor.as_secs_f64(),
        if metrics <= Duration::from_millis(50) {
            "met"
        } else {
            "MISSED"
        }
    );
}

fn in_process(n: usize) {
    let instance = |i: usize| InstanceId::new(&i.to_string()).unwrap();
    let scrape = Scrape {
        backend: "tc".into(),
        interfaces: (0..n)
            .map(|i| InterfaceSeries {
                interface: IfName::new(&format!("tap{i}i0")).unwrap(),
                instance: instance(i),
                receive_bytes: 1_234_567_890_123 + i as u64,
                transmit_bytes: 987_654_321_098 + i as u64,
                receive_packets: 1_234_567_890 + i as u64,
                transmit_packets: 987_654_321 + i as u64,
                stage: 2,
                upload_limit_bps: Some(800_000_000),
                download_limit_bps: Some(1_000_000_000),
                packet_limit_pps: Some(100_000),
            })
            .collect(),
        rules: (0..n)
            .map(|i| RuleSeries {
                rule: RuleName::new("monthly").unwrap(),
                instance: instance(i),
                used_bytes: 812_345_678_901,
                limit_bytes: 1_000_000_000_000,
                exceeded: false,
            })
            .collect(),
        spool_bytes: Some(12_345),
        sources: Vec::new(),
        hypervisor_replacements: Some(0),
        ledger_failures: 0,
        ledger_failing: false,
    };
    let metrics = AgentMetrics::default();
    let enc = median(21, || {
        let text = render(&metrics, scrape.clone()).unwrap();
        assert!(text.len() > n * 100);
    });
    let baseline = median(21, || {
        let rows: Vec<serde_json::Value> = scrape
            .interfaces
            .iter()
            .map(|s| {
                serde_json::json!({
                    "interface": s.interface, "instance": s.instance, "rx": s.receive_bytes,
                    "tx": s.transmit_bytes, "stage": s.stage, "up": s.upload_limit_bps,
                    "down": s.download_limit_bps,
                })
            })
            .chain(scrape.rules.iter().map(|r| {
                serde_json::json!({"rule": r.rule, "instance": r.instance, "used": r.used_bytes, "limit": r.limit_bytes})
            }))
            .collect();
        assert!(serde_json::to_string(&rows).unwrap().len() > n * 100);
    });
    println!(
        "{n:>6} interfaces + {n} rule counts, in process (median of 21): encode {}  serde_json of the same = {}  ratio {:.2}x",
        ms(enc),
        ms(baseline),
        enc.as_secs_f64() / baseline.as_secs_f64()
    );
}

fn main() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the benchmark needs root (network namespaces)"
    );
    let quick = std::env::args().any(|a| a == "quick");
    let n = if quick { 1_000 } else { 10_000 };
    println!("## agent API");
    over_http(n);
    in_process(n);
}
