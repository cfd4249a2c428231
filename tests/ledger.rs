//! The ledger on the real kernel: bytes in the ledger equal the kernel's counters to the
//! byte, a kill -9 in the middle of traffic neither loses nor doubles anything, and a
//! re-created interface does not produce a spike. Read back with `sluice usage`.

mod support;

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use support::{AgentProc, Netns, eventually, send_udp, sluice_stdout, veth};

fn write_config(dir: &Path) -> std::path::PathBuf {
    let config = dir.join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[agent]
interval = "1s"
interfaces = ['^tap(?P<instance>[0-9]+)i[0-9]+$']
backend = "none"
state_dir = "{0}/run"
data_dir = "{0}/lib"
[log]
dir = ""
[penalty]
base_rate = "100mbit"
"#,
            dir.display()
        ),
    )
    .unwrap();
    config
}

fn ledger_totals(config: &Path, interface: &str) -> (u64, u64) {
    support::ledger_totals(config, "--interface", interface)
}

#[test]
fn ledger_equals_kernel_counters_across_kill_and_recreation() {
    let host = Netns::new("lh");
    let inst = Netns::new("li");
    let link = veth(&host, "tap401i0", &inst, "eth0", 101);
    // Nothing has crossed the link yet: the agent's first sample is a baseline of zero.
    assert_eq!(host.sysfs_counter("tap401i0", "rx_bytes"), 0);
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path());

    let agent = AgentProc::start(&host, &config, tmp.path().join("agent1.log"));
    eventually(Duration::from_secs(10), "ledger created", || {
        tmp.path().join("lib/ledger.db").exists().then_some(())
    });
    // Traffic over ~4 s; the agent is killed -9 in the middle of it and restarted.
    let inst_name = inst.name.clone();
    let dst = link.a_ip;
    let sender = std::thread::spawn(move || {
        send_udp(
            &inst_name,
            dst,
            1000,
            2000,
            4_000_000,
            Duration::from_secs(8),
        )
    });
    std::thread::sleep(Duration::from_millis(2000));
    agent.signal(libc::SIGKILL);
    drop(agent);
    let agent = AgentProc::start(&host, &config, tmp.path().join("agent2.log"));
    assert!(sender.join().unwrap() > 1500);

    let kernel = || {
        (
            host.sysfs_counter("tap401i0", "rx_bytes"),
            host.sysfs_counter("tap401i0", "tx_bytes"),
        )
    };
    let want = kernel();
    assert!(want.0 > 1_500_000, "sent traffic arrived: {want:?}");
    eventually(
        Duration::from_secs(10),
        "ledger catches up with the kernel",
        || (ledger_totals(&config, "tap401i0") == want).then_some(()),
    );
    // And stays there: nothing counted twice on later ticks.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(ledger_totals(&config, "tap401i0"), kernel());

    // The tap is re-created (VM restart): counters restart at 0 on a new ifindex.
    host.ip(&["link", "del", "tap401i0"]);
    let link = veth(&host, "tap401i0", &inst, "eth0", 101);
    let before = ledger_totals(&config, "tap401i0");
    let sent = send_udp(
        &inst.name,
        link.a_ip,
        500,
        300,
        2_000_000,
        Duration::from_secs(5),
    );
    assert!(sent > 200);
    let fresh = kernel();
    eventually(
        Duration::from_secs(10),
        "re-created interface counted from zero",
        || {
            let now = ledger_totals(&config, "tap401i0");
            (now == (before.0 + fresh.0, before.1 + fresh.1)).then_some(())
        },
    );
    let log = agent.log();
    assert_eq!(agent.stop(), Some(0), "{log}");

    // prune: a dry run says what would go and removes nothing; then it goes.
    let total = ledger_totals(&config, "tap401i0");
    let later = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(2)).to_string();
    let prune = |dry: bool| {
        let mut args: Vec<&OsStr> = ["prune", "--before", &later, "--instance", "401"]
            .map(OsStr::new)
            .to_vec();
        args.extend([OsStr::new("--config"), config.as_os_str()]);
        if dry {
            args.push(OsStr::new("--dry-run"));
        }
        String::from_utf8_lossy(&sluice_stdout(&args)).into_owned()
    };
    let said = prune(true);
    assert!(said.starts_with("would delete"), "{said}");
    assert_eq!(ledger_totals(&config, "tap401i0"), total);
    let done = prune(false);
    assert_eq!(done.replace("deleted", "would delete"), said);
    assert_eq!(ledger_totals(&config, "tap401i0"), (0, 0));
}
