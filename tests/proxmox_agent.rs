//! The Proxmox inventory source in a running agent, on PVE's documented config format
//! (PVE itself cannot be installed here): guest configs with tags, `rate=`, a template
//! and a firewall NIC; the tap shaped first by pve-common's own tc commands.
//!
//! The agent knows the tap as VM 201 "db1" with PVE's rate as its plan, takes PVE's
//! shaping over at that rate (no `enforce_failed`), never counts the firewall bridge's
//! ports although its name pattern matches them, repairs PVE's shaping once when PVE
//! puts it back, and a rule's `tags` match PVE's tags.

mod support;

use std::path::Path;
use std::time::Duration;

use sluice::enforce::Enforcement;
use sluice::state::{self, InterfaceRecord};
use support::{AgentProc, Netns, eventually, kernel_can_police, pve_tap_rate_limit, veth};

fn records(run: &Path) -> Vec<InterfaceRecord> {
    state::read(&run.join("state.json"))
        .ok()
        .flatten()
        .map(|s| s.interfaces)
        .unwrap_or_default()
}

fn metric(ns: &Netns, name: &str) -> Option<u64> {
    let (_, body) = support::http::request(ns, 9477, "GET", "/metrics", None);
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} "))?.trim().parse().ok())
}

#[test]
fn proxmox_guests_own_their_taps_with_their_names_tags_and_rates() {
    let police = kernel_can_police();
    let host = Netns::new("pxh");
    let guest = Netns::new("pxg");
    let tap = veth(&host, "tap201i0", &guest, "eth0", 71);
    // The firewall bridge's pair carries the same packets as the tap.
    host.ip(&[
        "link",
        "add",
        "fwpr201p0",
        "type",
        "veth",
        "peer",
        "name",
        "fwln201i0",
    ]);
    host.ip(&["link", "set", "fwpr201p0", "up"]);
    host.ip(&["link", "set", "fwln201i0", "up"]);
    pve_tap_rate_limit(&host, "tap201i0", 1, police);

    let tmp = tempfile::tempdir().unwrap();
    let pve = tmp.path().join("pve");
    std::fs::create_dir_all(pve.join("qemu-server")).unwrap();
    std::fs::write(
        pve.join("qemu-server/201.conf"),
        "#db server\nboot: order=scsi0\nname: db1\ntags: gold;eu\nnet0: virtio=BC:24:11:2A:00:01,bridge=vmbr0,firewall=1,rate=1\n\
         [PENDING]\nnet0: virtio=BC:24:11:2A:00:01,bridge=vmbr0,rate=50\n",
    )
    .unwrap();
    std::fs::write(
        pve.join("qemu-server/9000.conf"),
        "name: tpl\ntemplate: 1\nnet0: virtio=BC:24:11:2A:00:02,bridge=vmbr0\n",
    )
    .unwrap();
    let run = tmp.path().join("run");
    let config = tmp.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[agent]
interval = "1s"
interfaces = ['^(tap|fwpr|fwln)(?P<instance>[0-9]+)[ip][0-9]+$']
backend = "tc"
enforce_base = false
state_dir = "{run}"
data_dir = "{run}/lib"
instances_dir = "{run}/instances.d"
[log]
dir = ""
[penalty]
base_rate = "1000mbit"
[inventory]
sources = ["proxmox", "names"]
proxmox.config_dir = "{pve}"
[[rule]]
name = "gold"
period = "day"
timezone = "UTC"
limit = "10GB"
action = "warn"
tags = ["gold"]
"#,
            run = run.display(),
            pve = pve.display()
        ),
    )
    .unwrap();
    let agent = AgentProc::start(&host, &config, tmp.path().join("agent.log"));
    let rec = eventually(Duration::from_secs(20), "tap201i0 applied", || {
        records(&run).into_iter().find(|r| {
            r.interface.as_str() == "tap201i0" && r.enforcement == Some(Enforcement::Applied)
        })
    });
    assert_eq!(rec.instance.as_str(), "201");
    assert_eq!(rec.instance_name.as_deref(), Some("db1"));
    // PVE's rate=1 (MiB/s), not the pending 50 and not the config's 1000mbit, held even
    // with enforce_base = false: the hypervisor shaped it, so sluice must.
    assert_eq!(
        rec.upload_limit_kbps,
        Some(8388),
        "{rec:?}\n{}",
        agent.log()
    );
    assert_eq!(rec.download_limit_kbps, Some(8388));
    let names: Vec<String> = records(&run)
        .iter()
        .map(|r| r.interface.to_string())
        .collect();
    assert_eq!(names, ["tap201i0"], "the firewall ports are never counted");
    let root = host.exec("tc", &["qdisc", "show", "dev", "tap201i0", "root"]);
    assert!(root.contains("qdisc htb 51ce: root"), "{root}");
    assert_eq!(
        metric(&host, "sluice_hypervisor_shaping_replaced_total"),
        Some(1)
    );

    // The tag from PVE reaches the rule: the VM's traffic is counted under it.
    let sent = support::send_udp(
        &guest.name,
        tap.a_ip,
        1000,
        100,
        2_000_000,
        Duration::from_secs(5),
    );
    assert_eq!(sent, 100);
    eventually(
        Duration::from_secs(10),
        "201's count under the gold rule",
        || {
            let view = support::http::get_json(&host, 9477, "/v1/instances/201");
            view["quotas"]
                .as_array()?
                .iter()
                .find(|q| q["rule"] == "gold")
                .and_then(|q| q["used_bytes"].as_u64())
                .filter(|used| *used >= 100 * 1000)
        },
    );

    // PVE re-applies its shaping (a hotplug): repaired once, then left alone.
    pve_tap_rate_limit(&host, "tap201i0", 1, police);
    eventually(Duration::from_secs(10), "the repair", || {
        (metric(&host, "sluice_hypervisor_shaping_replaced_total") == Some(2)).then_some(())
    });
    let root = host.exec("tc", &["qdisc", "show", "dev", "tap201i0", "root"]);
    assert!(root.contains("qdisc htb 51ce: root"), "{root}");
    // Three more ticks, each of which would have counted a flap.
    let tick =
        |s: serde_json::Value| -> Option<jiff::Timestamp> { s["last_tick"].as_str()?.parse().ok() };
    let first = tick(support::http::get_json(&host, 9477, "/v1/status")).unwrap();
    eventually(Duration::from_secs(10), "three more ticks", || {
        let t = tick(support::http::get_json(&host, 9477, "/v1/status"))?;
        (t.duration_since(first) >= jiff::SignedDuration::from_secs(3)).then_some(())
    });
    assert_eq!(
        metric(&host, "sluice_hypervisor_shaping_replaced_total"),
        Some(2),
        "no flapping: {}",
        agent.log()
    );
    let status = support::http::get_json(&host, 9477, "/v1/status");
    assert_eq!(status["inventory"][0]["source"], "proxmox");
    assert_eq!(status["inventory"][0]["ok"], true);
    assert_eq!(
        status["inventory"][0]["instances"], 1,
        "the template is left out"
    );
    assert_eq!(agent.stop(), Some(0));
}
