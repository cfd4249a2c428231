//! The Incus inventory source against a real Incus daemon: a container's veth, whose
//! random name carries no id, is the container's; its `user.sluice.tags` reach a quota
//! rule and its NIC's `limits.ingress` is its download plan; a container started while
//! the agent runs is known within a tick through the lifecycle events (the periodic
//! refresh is an hour, so nothing else could have read it); and the rule's
//! `shutdown = "hypervisor"` stops the container through the API.

mod support;

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use sluice::state;
use support::incus::Incusd;
use support::{AgentProc, Netns, events, eventually, inventory_json, send_udp, sh};

fn owner_in_state(run: &Path, veth: &str) -> Option<state::InterfaceRecord> {
    let snap = state::read(&run.join("state.json")).ok().flatten()?;
    snap.interfaces
        .into_iter()
        .find(|r| r.interface.as_str() == veth)
}

#[test]
fn an_incus_container_is_known_by_its_name_found_by_events_and_stopped_through_the_api() {
    let incus = Incusd::start();
    let pid = std::process::id();
    // A peer on the Incus bridge, in its own namespace: what it sends to the
    // container's MAC leaves the bridge through the container's host veth.
    let peer = Netns::new("ic");
    let outside = format!("slip{pid}");
    sh(
        "ip",
        &[
            "link", "add", &outside, "type", "veth", "peer", "name", "eth0", "netns", &peer.name,
        ],
    );
    sh(
        "ip",
        &["link", "set", &outside, "master", &incus.bridge, "up"],
    );
    peer.ip(&["addr", "add", "10.214.0.1/24", "dev", "eth0"]);
    peer.ip(&["link", "set", "eth0", "up"]);

    let web = format!("web-{pid}");
    let tag = format!("t{pid}");
    incus.launch(
        &web,
        &[&format!("user.sluice.tags=gold,{tag}")],
        &["limits.ingress=20Mbit"],
    );
    let veth = incus.host_veth(&web);
    let mac = incus.query(&web)["config"]["volatile.eth0.hwaddr"]
        .as_str()
        .unwrap()
        .to_owned();
    peer.ip(&["neigh", "add", "10.214.0.2", "lladdr", &mac, "dev", "eth0"]);

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
sources = ["incus"]
refresh = "1h"
incus.socket = "{socket}"
[hooks]
shutdown = "hypervisor"
timeout = "5s"
[[rule]]
name = "cap"
period = "day"
timezone = "UTC"
direction = "download"
limit = "300KB"
action = "shutdown"
tags = ["{tag}"]
"#,
            run = run.display(),
            socket = incus.socket.display(),
        ),
    )
    .unwrap();

    // The operator's check: the container as Incus describes it.
    let listed = inventory_json(&config);
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == web.as_str())
        .unwrap_or_else(|| panic!("{web} not in sluice inventory:\n{listed:#}"));
    assert_eq!(entry["name"], web.as_str());
    assert_eq!(entry["source"], "incus");
    assert_eq!(entry["tags"], serde_json::json!(["gold", tag]));
    assert_eq!(entry["base_rate"], serde_json::Value::Null);
    assert_eq!(entry["download_rate"], "20mbit");
    assert_eq!(entry["interfaces"], serde_json::json!([veth]));
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
    let rec = eventually(
        Duration::from_secs(20),
        "the veth in the state file",
        || owner_in_state(&run, &veth),
    );
    assert_eq!(rec.instance.as_str(), web, "{}", agent.log());
    assert_eq!(rec.instance_name.as_deref(), Some(web.as_str()));

    // A container started now: only its lifecycle events can make the agent read
    // Incus again before the hour is up.
    let late = format!("late-{pid}");
    incus.launch(&late, &[], &[]);
    let launched = Instant::now();
    let late_veth = incus.host_veth(&late);
    let rec = eventually(Duration::from_secs(15), "the new container's veth", || {
        owner_in_state(&run, &late_veth).filter(|r| r.instance.as_str() == late)
    });
    let took = launched.elapsed();
    assert_eq!(rec.instance_name.as_deref(), Some(late.as_str()));
    // An event is read within the inventory's 1 s poll, and the next 1 s tick has it.
    assert!(
        took < Duration::from_millis(3500),
        "known {took:?} after it started\n{}",
        agent.log()
    );

    assert_eq!(incus.status(&web), "Running", "before the limit");
    // 400 datagrams of 1000 bytes: over the 300 KB download limit of the tagged rule.
    let sent = send_udp(
        &peer.name,
        Ipv4Addr::new(10, 214, 0, 2),
        1000,
        400,
        15_000_000,
        Duration::from_secs(10),
    );
    assert_eq!(sent, 400);
    eventually(
        Duration::from_secs(30),
        "the container to be stopped",
        || (incus.status(&web) == "Stopped").then_some(()),
    );
    assert_eq!(incus.status(&late), "Running", "only the tagged one");
    // The API call is the hook's event: a clean stop (the image's init exits on
    // SIGPWR), so nothing was forced.
    let hooks: Vec<serde_json::Value> =
        eventually(Duration::from_secs(10), "the hook's event", || {
            let hooks: Vec<serde_json::Value> = events(&config)
                .into_iter()
                .filter(|e| e["event"] == "hook")
                .collect();
            (!hooks.is_empty()).then_some(hooks)
        });
    assert_eq!(hooks.len(), 1, "{hooks:#?}");
    assert_eq!(hooks[0]["instance"], web.as_str());
    assert_eq!(
        hooks[0]["instance_name"],
        web.as_str(),
        "the name beside the id"
    );
    assert_eq!(hooks[0]["ok"], true, "{hooks:#?}");
    assert_eq!(hooks[0]["argv"][0], "PUT");
    assert_eq!(
        hooks[0]["argv"][1],
        format!("/1.0/instances/{web}/state?project=default")
    );
    let body: serde_json::Value =
        serde_json::from_str(hooks[0]["argv"][2].as_str().unwrap()).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"action": "stop", "timeout": 5, "force": false})
    );
    assert_eq!(agent.stop(), Some(0));
}
