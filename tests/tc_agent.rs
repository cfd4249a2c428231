//! The acceptance test of the product so far: an agent with the tc backend, a real TCP
//! flow from an instance that hogs its upload, really slowed to stage 1's rate, really
//! restored when the penalty ends — measured at layer 2 after the shaper (the ifb's
//! transmit counter, with segmentation offloads off on the sender so every skb is a frame).
//! Then `sluice release` removes everything the agent installed.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sluice::enforce::tc::ifb_name;
use sluice::state::{self, InterfaceRecord};
use support::{AgentProc, Iperf3Server, Netns, eventually, settled_rate, sluice_bin, veth};

fn record(run: &Path, name: &str) -> Option<InterfaceRecord> {
    let snap = state::read(&run.join("state.json")).ok().flatten()?;
    snap.interfaces
        .into_iter()
        .find(|r| r.interface.as_str() == name)
}

fn within(measured: f64, want: f64, tolerance: f64) -> bool {
    (measured - want).abs() <= want * tolerance
}

#[test]
fn a_hog_is_slowed_to_stage_one_and_restored() {
    let host = Netns::new("eh");
    let inst = Netns::new("ei");
    let link = veth(&host, "tap301i0", &inst, "eth0", 81);
    inst.exec("ethtool", &["-K", "eth0", "tso", "off", "gso", "off"]);
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
[log]
dir = ""
[penalty]
base_rate = "20mbit"
download_rate = "50mbit"
[[penalty.stage]]
usage = 0.5
trigger = "8s"
rate = 0.5
duration = "10s"
"#,
            run = run.display()
        ),
    )
    .unwrap();

    let agent = AgentProc::start(&host, &config, tmp.path().join("agent.log"));
    let rec = eventually(Duration::from_secs(15), "base limits applied", || {
        record(&run, "tap301i0").filter(|r| {
            r.enforcement
                .as_ref()
                .is_some_and(|e| e.label() == "applied")
        })
    });
    assert_eq!(rec.upload_limit_kbps, Some(20_000));
    assert_eq!(rec.download_limit_kbps, Some(50_000));

    let server = Iperf3Server::start(&host, link.a_ip, 5301);
    let mut flow = server.client(&inst, 40, 0);

    eventually(Duration::from_secs(30), "stage 1", || {
        record(&run, "tap301i0").filter(|r| r.stage == 1)
    });
    let slowed = settled_rate(&host, &ifb, "tx_bytes", Duration::from_secs(3));
    let rec = record(&run, "tap301i0").unwrap();
    assert_eq!(rec.stage, 1, "still in stage 1 after the measurement");
    assert_eq!(rec.upload_limit_kbps, Some(10_000));
    assert!(
        within(slowed, 10e6, 0.10),
        "stage 1 should hold upload to 10 Mbit, measured {:.2} Mbit\n{}",
        slowed / 1e6,
        agent.log()
    );
    let drops = rec.shaper.expect("shaper counters in state");
    assert!(
        drops.upload_overlimits > 0,
        "a throttled flow shows overlimits: {drops:?}"
    );

    eventually(Duration::from_secs(20), "penalty over", || {
        record(&run, "tap301i0").filter(|r| r.stage == 0)
    });
    // The state file says stage 0 once the tick that raised the limit wrote it; TCP then
    // needs a moment to grow its window from the 10 Mbit it was held to, as it did after
    // the cut: the measurement starts once the rate is steady. The flow still hogs, so the
    // agent escalates again one trigger (8 s) after the expiry; the state is checked after
    // the window, so an overlap fails with that message instead of a rate. (With a 4 s
    // trigger the window overlapped the new penalty and CI measured 17.99 Mbit.)
    let restored = settled_rate(&host, &ifb, "tx_bytes", Duration::from_secs(3));
    let rec = record(&run, "tap301i0").unwrap();
    assert_eq!(rec.stage, 0, "still at base after the measurement");
    assert_eq!(rec.upload_limit_kbps, Some(20_000));
    assert!(
        within(restored, 20e6, 0.10),
        "back at base the flow should get 20 Mbit, measured {:.2} Mbit",
        restored / 1e6
    );
    eprintln!(
        "stage 1: {:.2} Mbit (limit 10), restored: {:.2} Mbit (limit 20)",
        slowed / 1e6,
        restored / 1e6
    );
    let _ = flow.kill();
    let _ = flow.wait();

    // While the agent runs, release refuses: the agent would put the limits back.
    let refused = release(&host, &config);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("stop the agent first"), "{stderr}");

    assert_eq!(agent.stop(), Some(0));
    // The limits stay with the agent stopped, until released.
    let q = host.exec("tc", &["qdisc", "show", "dev", "tap301i0"]);
    assert!(q.contains("htb 51ce:"), "{q}");
    let out = release(&host, &config);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("released: 3 change(s)"), "{stdout}");
    let q = host.exec("tc", &["qdisc", "show", "dev", "tap301i0"]);
    assert!(!q.contains("51ce:") && !q.contains("ingress"), "{q}");
    assert!(!host.ip(&["-o", "link", "show"]).contains(&ifb));
}

fn release(ns: &Netns, config: &Path) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(sluice_bin())
        .args(["release", "--config"])
        .arg(config)
        .output()
        .unwrap()
}
