//! The `ovs` inventory source against what libvirt itself writes: a real libvirtd plugs
//! a qemu domain's tap into a real Open vSwitch bridge (`<virtualport
//! type='openvswitch'/>`), and writes the port's `external_ids` (`vm-id`, `iface-id`,
//! `attached-mac`) as Nova's hosts see them. Its own binary: its libvirtd must be the
//! test's, started with `OVS_RUNDIR` at the test's OVS, so libvirt's `ovs-vsctl` calls
//! reach it and no other.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use sluice::state;
use support::libvirt::{Domain, Libvirtd};
use support::{AgentProc, Ovs, eventually, inventory_json};

fn config(dir: &Path, ovs: &Ovs, sources: &str) -> std::path::PathBuf {
    let run = dir.join("run");
    let path = dir.join(format!("sluice-{}.toml", sources.len()));
    std::fs::write(
        &path,
        format!(
            r#"
[agent]
interval = "1s"
interfaces = ['^sluice-test-never$']
backend = "none"
ovsdb = "{db}"
state_dir = "{run}"
data_dir = "{run}/lib"
instances_dir = "{run}/instances.d"
listen = ""
[log]
dir = ""
[penalty]
base_rate = "1000mbit"
[inventory]
sources = [{sources}]
refresh = "1h"
ovs.db_file = "{db_file}"
"#,
            db = ovs.db,
            run = run.display(),
            db_file = ovs.dir.path().join("conf.db").display(),
        ),
    )
    .unwrap();
    path
}

#[test]
fn a_libvirt_domain_on_open_vswitch_is_found_by_the_external_ids_libvirt_wrote() {
    let pid = std::process::id();
    let bridge = format!("slo{pid}");
    let ovs = Ovs::start_on_host(&bridge);
    let _libvirtd = Libvirtd::start_with_env(&[("OVS_RUNDIR", ovs.dir.path())]);
    let tmp = tempfile::tempdir().unwrap();
    let only_ovs = config(tmp.path(), &ovs, r#""ovs""#);
    let run = tmp.path().join("run");

    // The agent runs first, reading OVS only when its database file changes (the
    // periodic refresh is an hour): libvirt's port is what must move it.
    let agent = AgentProc::start_on_host(&only_ovs, tmp.path().join("agent.log"));
    eventually(Duration::from_secs(20), "the agent's first state", || {
        state::read(&run.join("state.json")).ok().flatten()
    });

    let uuid = format!("5a1c0000-0000-4000-8000-{:012x}", pid + 1);
    let mac = "52:54:00:5a:22:01";
    let domain = Domain::create(
        &format!("sluice-ovs-{pid}"),
        &uuid,
        "",
        &format!(
            "<interface type='bridge'><mac address='{mac}'/><source bridge='{bridge}'/>\
             <virtualport type='openvswitch'/><model type='e1000'/></interface>"
        ),
    );
    let created = Instant::now();
    let tap = domain.tap();
    // What libvirt wrote, as OVS holds it.
    let ids = ovs.vsctl(&["get", "Interface", &tap, "external_ids"]);
    assert!(ids.contains(&format!("vm-id=\"{uuid}\"")), "{ids}");
    let iface_id = ovs
        .vsctl(&["get", "Interface", &tap, "external_ids:iface-id"])
        .trim()
        .trim_matches('"')
        .to_owned();
    assert_eq!(
        iface_id.len(),
        36,
        "libvirt's generated interfaceid: {iface_id}"
    );

    let rec = eventually(Duration::from_secs(15), "the tap in the state file", || {
        let snap = state::read(&run.join("state.json")).ok().flatten()?;
        snap.interfaces
            .into_iter()
            .find(|r| r.interface.as_str() == tap)
    });
    let took = created.elapsed();
    assert_eq!(rec.instance.as_str(), uuid, "{}", agent.log());
    assert!(
        took < Duration::from_secs(5),
        "known {took:?} after the domain was created\n{}",
        agent.log()
    );
    assert_eq!(agent.stop(), Some(0));

    // The operator's check: OVS knows the id and the port, not the name.
    let listed = inventory_json(&only_ovs);
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == uuid.as_str())
        .unwrap_or_else(|| panic!("{uuid} not in sluice inventory:\n{listed:#}"));
    assert_eq!(entry["source"], "ovs");
    assert_eq!(entry["name"], serde_json::Value::Null);
    assert_eq!(entry["interfaces"], serde_json::json!([tap]));
    assert_eq!(
        entry["ports"][&tap],
        serde_json::json!({"iface_id": iface_id, "attached_mac": mac})
    );

    // With libvirt after it, the same instance (one id) gains the domain's name.
    let both = config(tmp.path(), &ovs, r#""ovs", "libvirt""#);
    let listed = inventory_json(&both);
    let entries: Vec<&serde_json::Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["id"] == uuid.as_str())
        .collect();
    assert_eq!(entries.len(), 1, "{listed:#}");
    assert_eq!(entries[0]["source"], "ovs");
    assert_eq!(entries[0]["name"], domain.name.as_str());
    assert_eq!(entries[0]["interfaces"], serde_json::json!([tap]));
}
