//! The libvirt inventory source against a real libvirtd and qemu: a domain's `vnetN`,
//! whose name carries no id, is the domain's (uuid and name); the tags in its sluice
//! `<metadata>` reach a quota rule; and that rule's `shutdown = "hypervisor"` stops the
//! domain through libvirt (asked, then destroyed after `hooks.timeout`, since a guest
//! without an OS ignores the ACPI request).

mod support;

use std::net::Ipv4Addr;
use std::time::Duration;

use sluice::state;
use support::libvirt::{Domain, Libvirtd};
use support::{AgentProc, Netns, events, eventually, inventory_json, send_udp, sh};

/// A bridge in the host's namespace (where libvirt puts its taps), deleted on drop.
struct Bridge(String);

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.0])
            .status();
    }
}

#[test]
fn a_libvirt_domain_is_known_by_its_uuid_and_stopped_through_libvirt() {
    let _libvirtd = Libvirtd::ensure();
    let pid = std::process::id();
    let bridge = Bridge(format!("slvb{pid}"));
    sh("ip", &["link", "add", &bridge.0, "type", "bridge"]);
    sh("ip", &["link", "set", &bridge.0, "up"]);
    // A peer on the bridge, in its own namespace: what it sends to the guest's MAC
    // leaves the bridge through the domain's tap (the guest's download).
    let peer = Netns::new("lv");
    let outside = format!("slvp{pid}");
    sh(
        "ip",
        &[
            "link", "add", &outside, "type", "veth", "peer", "name", "eth0", "netns", &peer.name,
        ],
    );
    sh("ip", &["link", "set", &outside, "master", &bridge.0, "up"]);
    peer.ip(&["addr", "add", "10.213.0.1/24", "dev", "eth0"]);
    peer.ip(&["link", "set", "eth0", "up"]);
    let mac = "52:54:00:5a:11:01";
    peer.ip(&["neigh", "add", "10.213.0.2", "lladdr", mac, "dev", "eth0"]);

    let uuid = format!("5a1c0000-0000-4000-8000-{pid:012x}");
    let tag = format!("t{pid}");
    let domain = Domain::create(
        &format!("sluice-test-{pid}"),
        &uuid,
        &format!(
            r#"<s:instance xmlns:s="https://sluice.invalid/1" tags="gold,{tag}" base_rate="30mbit"/>"#
        ),
        &format!(
            "<interface type='bridge'><mac address='{mac}'/><source bridge='{}'/><model type='e1000'/></interface>",
            bridge.0
        ),
    );
    let tap = domain.tap();

    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let config = tmp.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[agent]
interval = "1s"
interfaces = ['^sluice-test-never$']
backend = "tc"
enforce_base = false
state_dir = "{run}"
data_dir = "{run}/lib"
instances_dir = "{run}/instances.d"
listen = ""
[log]
dir = ""
[penalty]
base_rate = "1000mbit"
[inventory]
sources = ["libvirt"]
[hooks]
shutdown = "hypervisor"
timeout = "3s"
[[rule]]
name = "cap"
period = "day"
timezone = "UTC"
direction = "download"
limit = "300KB"
action = "shutdown"
tags = ["{tag}"]
"#,
            run = run.display()
        ),
    )
    .unwrap();

    // The operator's check first: the domain, as libvirt describes it.
    let listed = inventory_json(&config);
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == uuid.as_str())
        .unwrap_or_else(|| panic!("{uuid} not in sluice inventory:\n{listed:#}"));
    assert_eq!(entry["name"], domain.name.as_str());
    assert_eq!(entry["source"], "libvirt");
    assert_eq!(entry["tags"], serde_json::json!(["gold", tag]));
    assert_eq!(entry["base_rate"], "30mbit");
    assert_eq!(entry["interfaces"], serde_json::json!([tap]));
    let unclaimed = &listed.as_array().unwrap().last().unwrap()["interfaces"];
    assert!(
        unclaimed
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i == outside.as_str()),
        "the peer's port is nobody's: {unclaimed}"
    );

    let agent = AgentProc::start_on_host(&config, tmp.path().join("agent.log"));
    let rec = eventually(Duration::from_secs(20), "the tap in the state file", || {
        let snap = state::read(&run.join("state.json")).ok().flatten()?;
        snap.interfaces
            .into_iter()
            .find(|r| r.interface.as_str() == tap)
    });
    assert_eq!(rec.instance.as_str(), uuid, "{}", agent.log());
    assert_eq!(rec.instance_name.as_deref(), Some(domain.name.as_str()));

    assert_eq!(
        domain.state().as_deref(),
        Some("running"),
        "before the limit"
    );
    // 400 datagrams of 1000 bytes: over the 300 KB download limit of the tagged rule.
    let sent = send_udp(
        &peer.name,
        Ipv4Addr::new(10, 213, 0, 2),
        1000,
        400,
        20_000_000,
        Duration::from_secs(10),
    );
    assert_eq!(sent, 400);
    assert_eq!(
        domain.state().as_deref(),
        Some("running"),
        "before the limit"
    );
    eventually(Duration::from_secs(30), "the domain to be stopped", || {
        domain.state().is_none().then_some(())
    });
    // Both commands' events are committed with the ticks after they ran.
    let hooks: Vec<Vec<String>> = eventually(Duration::from_secs(10), "two hook events", || {
        let argvs: Vec<Vec<String>> = events(&config)
            .into_iter()
            .filter(|e| e["event"] == "hook")
            .map(|e| {
                e["argv"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap().to_owned())
                    .collect()
            })
            .collect();
        (argvs.len() >= 2).then_some(argvs)
    });
    let verbs: Vec<&str> = hooks
        .iter()
        .map(|argv| argv[argv.len() - 2].as_str())
        .collect();
    assert_eq!(verbs, ["shutdown", "destroy"], "{hooks:?}\n{}", agent.log());
    assert!(
        hooks.iter().all(|argv| argv.last() == Some(&uuid)),
        "{hooks:?}"
    );
    assert_eq!(agent.stop(), Some(0));
}
