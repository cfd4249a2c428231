//! Quota rules on the real kernel, end to end: three instances behind taps, each with a
//! small daily limit and a different action.
//! - rate_limit: once over, its upload is shaped by tc to the rule's rate (measured with
//!   a real TCP flow after the shaper);
//! - disconnect: its link goes down, and is downed again when the tap is re-created;
//! - shutdown: the hook runs exactly once, even across a kill -9 and restart.
//!
//! A restart after the period ended (the ledger's period end moved into the past, as if
//! the agent had been down across midnight) restores all three: limit lifted, link up,
//! `on_reset` run, `restored` events logged.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice::account::ledger::packed_quotas;
use sluice::enforce::tc::ifb_name;
use sluice::model::calendar::Period;
use sluice::state::{self, InterfaceRecord};
use support::{AgentProc, Iperf3Server, Netns, events, eventually, send_udp, settled_rate, veth};

fn record(run: &Path, name: &str) -> Option<InterfaceRecord> {
    let snap = state::read(&run.join("state.json")).ok().flatten()?;
    snap.interfaces
        .into_iter()
        .find(|r| r.interface.as_str() == name)
}

/// Whether `dev` is administratively up (UP among its flags).
fn is_up(ns: &Netns, dev: &str) -> bool {
    let line = ns.ip(&["-o", "link", "show", dev]);
    let flags = line
        .split('<')
        .nth(1)
        .and_then(|s| s.split('>').next())
        .unwrap_or("");
    flags.split(',').any(|f| f == "UP")
}

/// Wait until the agent in `ns` has finished `n` more ticks (its `/v1/status` says when
/// it last ticked): "nothing happened" is then checked after the agent had its chances.
fn ticks_after_now(ns: &Netns, n: i64) {
    let tick =
        |s: serde_json::Value| -> Option<jiff::Timestamp> { s["last_tick"].as_str()?.parse().ok() };
    support::http::wait_healthy(ns, 9477, Duration::from_secs(15));
    let first = tick(support::http::get_json(ns, 9477, "/v1/status")).unwrap();
    eventually(Duration::from_secs(5 + n as u64 * 2), "more ticks", || {
        let t = tick(support::http::get_json(ns, 9477, "/v1/status"))?;
        (t.duration_since(first) >= jiff::SignedDuration::from_secs(n)).then_some(())
    });
}

/// A hook in `dir` that appends its arguments to `dir/<first argument>.log`.
fn hook_script(dir: &Path) -> std::path::PathBuf {
    let hook = dir.join("hook.sh");
    std::fs::write(
        &hook,
        "#!/bin/sh\necho \"$@\" >> \"$(dirname \"$0\")/$1.log\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    hook
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn rule_states(events: &[serde_json::Value], rule: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"] == "rule" && e["rule"] == rule)
        .map(|e| e["state"].as_str().unwrap().to_owned())
        .collect()
}

/// 1 MB of UDP from an instance (paced at 20 Mbit, at most 5 s).
fn megabytes(ns: &Netns, to: std::net::Ipv4Addr, mb: u64) {
    let sent = send_udp(
        &ns.name,
        to,
        1000,
        mb * 1000,
        20_000_000,
        Duration::from_secs(5),
    );
    assert!(sent >= mb * 900, "sent {sent} datagrams");
}

type Received = Arc<Mutex<Vec<(Option<String>, serde_json::Value)>>>;

/// A webhook receiver on the loopback of `ns` (where the agent runs): every POST's
/// signature header and JSON body, answered 200.
fn webhook_sink(ns: &Netns) -> (u16, Received) {
    let listener = ns.run(|| TcpListener::bind("127.0.0.1:0").unwrap());
    let port = listener.local_addr().unwrap().port();
    let received: Received = Arc::default();
    let sink = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (mut length, mut signature) = (0, None);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                let (k, v) = line.split_once(':').unwrap_or((line, ""));
                match k.to_ascii_lowercase().as_str() {
                    "content-length" => length = v.trim().parse().unwrap(),
                    "x-sluice-signature" => signature = Some(v.trim().to_owned()),
                    _ => {}
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            // The signature covers the exact bytes sent; re-serializing must match them.
            sink.lock().unwrap().push((signature, body));
        }
    });
    (port, received)
}

#[test]
fn rate_limit_disconnect_and_shutdown_trip_hold_and_restore() {
    let host = Netns::new("qh");
    let limited = Netns::new("qa");
    let cut = Netns::new("qb");
    let off = Netns::new("qc");
    let link_a = veth(&host, "tap501i0", &limited, "eth0", 121);
    let link_b = veth(&host, "tap502i0", &cut, "eth0", 122);
    let link_c = veth(&host, "tap503i0", &off, "eth0", 123);
    limited.exec("ethtool", &["-K", "eth0", "tso", "off", "gso", "off"]);

    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let hook = hook_script(tmp.path());
    let (port, received) = webhook_sink(&host);
    let config = tmp.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[webhook]]
url = "http://127.0.0.1:{port}/events"
secret = "test-secret"
events = ["rule", "hook"]
[agent]
interval = "1s"
interfaces = ['^tap(?P<instance>[0-9]+)i[0-9]+$']
backend = "tc"
enforce_base = false
state_dir = "{run}"
data_dir = "{run}/lib"
instances_dir = "{dir}/instances.d"
[log]
dir = ""
[penalty]
base_rate = "1000mbit"
[instances."503"]
tags = ["metered"]
[[rule]]
name = "small"
period = "day"
timezone = "UTC"
direction = "upload"
limit = "2MB"
notify_at = [0.5]
action = "rate_limit"
rate = {{ upload = "5mbit" }}
instances = ["501"]
[[rule]]
name = "cut"
period = "day"
limit = "1MB"
action = "disconnect"
instances = ["502"]
[[rule]]
name = "off"
period = "day"
limit = "1MB"
action = "shutdown"
tags = ["metered"]
[hooks]
shutdown = ["{hook}", "shutdown", "{{instance}}", "{{interface}}"]
on_reset = ["{hook}", "reset", "{{instance}}", "{{rule}}"]
timeout = "10s"
"#,
            run = run.display(),
            dir = tmp.path().display(),
            hook = hook.display(),
        ),
    )
    .unwrap();

    let agent = AgentProc::start(&host, &config, tmp.path().join("agent1.log"));
    eventually(Duration::from_secs(15), "agent sees the taps", || {
        record(&run, "tap503i0")
    });
    // Under the limits: nothing is limited.
    assert_eq!(record(&run, "tap501i0").unwrap().upload_limit_kbps, None);

    megabytes(&limited, link_a.a_ip, 3);
    megabytes(&cut, link_b.a_ip, 2);
    megabytes(&off, link_c.a_ip, 2);

    // rate_limit: the rule's rate enters the verdict and tc enforces it.
    let rec = eventually(Duration::from_secs(15), "rate limit applied", || {
        record(&run, "tap501i0").filter(|r| {
            r.upload_limit_kbps == Some(5_000)
                && r.enforcement
                    .as_ref()
                    .is_some_and(|e| e.label() == "applied")
        })
    });
    assert_eq!(rec.rule.as_deref(), Some("rate_limit by small"));
    assert_eq!(rec.download_limit_kbps, None, "the rule limits upload only");
    // disconnect: the link is down.
    eventually(Duration::from_secs(10), "tap502i0 down", || {
        (!is_up(&host, "tap502i0")).then_some(())
    });
    assert!(record(&run, "tap502i0").unwrap().disconnected);
    // shutdown: the hook ran once, with the instance and its interface.
    let shutdown_log = tmp.path().join("shutdown.log");
    eventually(Duration::from_secs(10), "shutdown hook ran", || {
        (!lines(&shutdown_log).is_empty()).then_some(())
    });
    assert_eq!(lines(&shutdown_log), vec!["shutdown 503 tap503i0"]);

    // The limit bites: a TCP flow from 501 gets 5 Mbit after the shaper.
    let server = Iperf3Server::start(&host, link_a.a_ip, 5501);
    let mut flow = server.client(&limited, 15, 0);
    let ifb = ifb_name(host.ifindex("tap501i0"));
    let shaped = settled_rate(&host, &ifb, "tx_bytes", Duration::from_secs(3));
    let _ = flow.kill();
    let _ = flow.wait();
    assert!(
        (shaped - 5e6).abs() <= 5e6 * 0.10,
        "rate_limit should hold upload to 5 Mbit, measured {:.2} Mbit\n{}",
        shaped / 1e6,
        agent.log()
    );
    eprintln!(
        "rate_limit 5 Mbit: measured {:.2} Mbit after the shaper",
        shaped / 1e6
    );

    // The tap is re-created (VM restarted on the host side) and comes up: downed again.
    host.ip(&["link", "del", "tap502i0"]);
    let link_b = veth(&host, "tap502i0", &cut, "eth0", 122);
    eventually(
        Duration::from_secs(10),
        "re-created tap502i0 downed again",
        || (!is_up(&host, "tap502i0")).then_some(()),
    );

    // kill -9 and restart: the exceeds are remembered, nothing is repeated.
    agent.signal(libc::SIGKILL);
    drop(agent);
    let agent = AgentProc::start(&host, &config, tmp.path().join("agent2.log"));
    megabytes(&off, link_c.a_ip, 1);
    eventually(
        Duration::from_secs(15),
        "restarted agent re-applies the limit",
        || {
            record(&run, "tap501i0").filter(|r| {
                r.upload_limit_kbps == Some(5_000)
                    && r.enforcement
                        .as_ref()
                        .is_some_and(|e| e.label() == "applied")
            })
        },
    );
    assert!(!is_up(&host, "tap502i0"));
    ticks_after_now(&host, 2);
    assert_eq!(
        lines(&shutdown_log),
        vec!["shutdown 503 tap503i0"],
        "hook ran once"
    );
    let ev = events(&config);
    assert_eq!(rule_states(&ev, "small"), vec!["threshold", "exceeded"]);
    assert_eq!(rule_states(&ev, "cut"), vec!["exceeded"]);
    assert_eq!(rule_states(&ev, "off"), vec!["exceeded"]);
    assert!(
        ev.iter()
            .any(|e| e["event"] == "hook" && e["hook"] == "shutdown" && e["ok"] == true),
        "{ev:?}"
    );
    assert!(
        ev.iter()
            .any(|e| e["event"] == "link_down" && e["interface"] == "tap502i0")
    );
    // The webhook got the rule and hook events (and nothing else), signed.
    let posted = eventually(Duration::from_secs(10), "webhook deliveries", || {
        let got = received.lock().unwrap().clone();
        (got.iter().any(|(_, b)| b["event"] == "hook")).then_some(got)
    });
    assert!(
        posted
            .iter()
            .all(|(_, b)| b["event"] == "rule" || b["event"] == "hook")
    );
    let exceeded = posted
        .iter()
        .find(|(_, b)| b["rule"] == "cut" && b["state"] == "exceeded")
        .expect("the disconnect exceed was posted");
    assert_eq!(
        exceeded.0.as_deref(),
        Some(
            sluice::report::webhook::signature("test-secret", exceeded.1.to_string().as_bytes())
                .as_str()
        )
    );
    assert_eq!(agent.stop(), Some(0));

    // `sluice release tap502i0` (the package's removal runs `sluice release`): the link
    // the disconnect rule held down comes up; tap501i0's shaper is not touched.
    assert!(!is_up(&host, "tap502i0"), "a stopped agent leaves it down");
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &host.name])
        .arg(support::sluice_bin())
        .args(["release", "tap502i0", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("raised: tap502i0 (held down by a disconnect rule)"),
        "{stdout}"
    );
    assert!(is_up(&host, "tap502i0"), "released link is up");
    let q = host.exec("tc", &["qdisc", "show", "dev", "tap501i0"]);
    assert!(q.contains("ingress"), "release was scoped to tap502i0: {q}");
    // Put it back down as the agent left it, for the period's end below.
    host.ip(&["link", "set", "tap502i0", "down"]);

    // The day ends while the agent is down: it restores everything when it comes back.
    let db = rusqlite::Connection::open(run.join("lib/ledger.db")).unwrap();
    let past = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(1);
    let mut counts: packed_quotas::QuotaMap =
        packed_quotas::read(&db).unwrap().into_iter().collect();
    for u in counts.values_mut() {
        u.period = Period {
            start: past - jiff::SignedDuration::from_hours(24),
            end: past,
        };
    }
    packed_quotas::write(&db, &counts).unwrap();
    assert_eq!(counts.len(), 3);
    drop(db);
    let agent = AgentProc::start(&host, &config, tmp.path().join("agent3.log"));
    eventually(Duration::from_secs(15), "tap502i0 back up", || {
        is_up(&host, "tap502i0").then_some(())
    });
    eventually(
        Duration::from_secs(15),
        "limit lifted and shaper removed",
        || {
            let r = record(&run, "tap501i0")?;
            let q = host.exec("tc", &["qdisc", "show", "dev", "tap501i0"]);
            (r.upload_limit_kbps.is_none() && r.rule.is_none() && !q.contains("51ce:"))
                .then_some(())
        },
    );
    let reset_log = tmp.path().join("reset.log");
    eventually(
        Duration::from_secs(10),
        "on_reset ran for all three",
        || (lines(&reset_log).len() == 3).then_some(()),
    );
    let mut resets = lines(&reset_log);
    resets.sort();
    assert_eq!(
        resets,
        vec!["reset 501 small", "reset 502 cut", "reset 503 off"]
    );
    let ev = events(&config);
    for rule in ["small", "cut", "off"] {
        assert_eq!(
            rule_states(&ev, rule).last().map(String::as_str),
            Some("restored"),
            "{rule}"
        );
    }
    // Traffic flows again on the raised link: the host's side receives it (sendto()
    // succeeds on a downed veth too, so only the far side's counter is evidence).
    let host_rx = || host.sysfs_counter("tap502i0", "rx_bytes");
    let before = host_rx();
    let sent = send_udp(
        &cut.name,
        link_b.a_ip,
        1000,
        100,
        10_000_000,
        Duration::from_secs(2),
    );
    assert_eq!(sent, 100);
    let arrived = eventually(Duration::from_secs(5), "the datagrams arrive", || {
        let got = host_rx() - before;
        (got >= 100 * (1000 + support::UDP_FRAME_OVERHEAD)).then_some(got)
    });
    assert!(
        arrived >= 100 * (1000 + support::UDP_FRAME_OVERHEAD),
        "{arrived} bytes"
    );
    assert_eq!(lines(&shutdown_log).len(), 1);
    assert_eq!(agent.stop(), Some(0));
}

/// The guarantee for a `shutdown` hook across a crash is *at most once*: an agent killed
/// after its tick committed the exceed but before it started the hook does not run the
/// hook when it comes back (the exceed is remembered, so nothing fires again). The
/// process dies inside that window by the `before-hook` crash point, as by `kill -9`.
#[test]
fn shutdown_hook_at_most_once_when_killed_between_commit_and_hook() {
    let host = Netns::new("qk");
    let inst = Netns::new("ql");
    let link = veth(&host, "tap601i0", &inst, "eth0", 124);
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let hook = hook_script(tmp.path());
    let config = tmp.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[agent]
interval = "1s"
interfaces = ['^tap(?P<instance>[0-9]+)i[0-9]+$']
backend = "tc"
enforce_base = false
state_dir = "{run}"
data_dir = "{run}/lib"
[log]
dir = ""
[penalty]
base_rate = "1000mbit"
[[rule]]
name = "off"
period = "day"
timezone = "UTC"
limit = "1MB"
action = "shutdown"
instances = ["601"]
[hooks]
shutdown = ["{hook}", "shutdown", "{{instance}}"]
timeout = "10s"
"#,
            run = run.display(),
            hook = hook.display(),
        ),
    )
    .unwrap();
    let shutdown_log = tmp.path().join("shutdown.log");

    let mut agent = AgentProc::start_with_env(
        &host,
        &config,
        tmp.path().join("agent1.log"),
        &[("SLUICE_CRASH_AT", "before-hook")],
    );
    eventually(Duration::from_secs(15), "agent sees the tap", || {
        record(&run, "tap601i0")
    });
    megabytes(&inst, link.a_ip, 2);
    let ended = agent.wait_exit(Duration::from_secs(15));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        ended.signal(),
        Some(libc::SIGKILL),
        "died at the crash point: {ended:?}\n{}",
        agent.log()
    );
    assert!(!shutdown_log.exists(), "the hook never started");
    // The exceed was committed before the crash.
    let ev = events(&config);
    assert_eq!(rule_states(&ev, "off"), vec!["exceeded"], "{ev:?}");
    drop(agent);

    // Restarted: the exceed is read back from the ledger and nothing runs, even with more
    // traffic over the limit. "Nothing runs" is checked after the new agent has ticked
    // three times past the exceed it loaded.
    let agent = AgentProc::start(&host, &config, tmp.path().join("agent2.log"));
    support::http::wait_healthy(&host, 9477, Duration::from_secs(15));
    let first = support::http::get_json(&host, 9477, "/v1/status");
    assert_eq!(first["quotas_exceeded"], 1, "{first}");
    megabytes(&inst, link.a_ip, 1);
    ticks_after_now(&host, 3);
    assert!(
        !shutdown_log.exists(),
        "at most once: the restarted agent must not run the hook\n{}",
        agent.log()
    );
    let ev = events(&config);
    assert_eq!(rule_states(&ev, "off"), vec!["exceeded"], "{ev:?}");
    assert!(!ev.iter().any(|e| e["event"] == "hook"), "{ev:?}");
    assert_eq!(agent.stop(), Some(0));
}

/// `backend = "none"` observes only: an exceeded `disconnect` rule leaves the link up
/// and an exceeded `shutdown` rule runs no hook; each is logged and recorded as a
/// `skipped` event saying what would have been done.
#[test]
fn observe_only_carries_out_no_action() {
    let host = Netns::new("qo");
    let a = Netns::new("qp");
    let b = Netns::new("qq");
    let link_a = veth(&host, "tap701i0", &a, "eth0", 125);
    let link_b = veth(&host, "tap702i0", &b, "eth0", 126);
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let hook = hook_script(tmp.path());
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
[log]
dir = ""
[penalty]
base_rate = "1000mbit"
[[rule]]
name = "cut"
period = "day"
limit = "1MB"
action = "disconnect"
instances = ["701"]
[[rule]]
name = "off"
period = "day"
limit = "1MB"
action = "shutdown"
instances = ["702"]
[hooks]
shutdown = ["{hook}", "shutdown", "{{instance}}"]
"#,
            run = run.display(),
            hook = hook.display(),
        ),
    )
    .unwrap();
    let agent = AgentProc::start(&host, &config, tmp.path().join("agent.log"));
    eventually(Duration::from_secs(15), "agent sees the taps", || {
        record(&run, "tap702i0")
    });
    megabytes(&a, link_a.a_ip, 2);
    megabytes(&b, link_b.a_ip, 2);
    let skipped = eventually(Duration::from_secs(15), "both actions skipped", || {
        let ev = events(&config);
        let actions: Vec<(String, String)> = ev
            .iter()
            .filter(|e| e["event"] == "skipped")
            .map(|e| {
                (
                    e["instance"].as_str().unwrap_or("").to_owned(),
                    e["action"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        (actions.len() >= 2).then_some(actions)
    });
    assert!(
        skipped.contains(&("701".into(), "link_down".into()))
            && skipped.contains(&("702".into(), "shutdown_hook".into())),
        "{skipped:?}"
    );
    ticks_after_now(&host, 2);
    assert!(is_up(&host, "tap701i0"), "observe only: the link stays up");
    assert!(
        !tmp.path().join("shutdown.log").exists(),
        "observe only: no hook runs"
    );
    let ev = events(&config);
    assert_eq!(rule_states(&ev, "cut"), vec!["exceeded"]);
    assert_eq!(
        ev.iter().filter(|e| e["event"] == "skipped").count(),
        2,
        "once each, not every tick: {ev:?}"
    );
    assert!(
        !ev.iter()
            .any(|e| e["event"] == "link_down" || e["event"] == "hook")
    );
    let log = agent.log();
    assert!(
        log.contains("observe only (backend none): the link is not set down"),
        "{log}"
    );
    assert!(
        log.contains("observe only (backend none): the hook is not run"),
        "{log}"
    );
    assert_eq!(agent.stop(), Some(0));
}
