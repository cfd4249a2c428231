//! Open vSwitch: the `external_ids` that Nova (os-vif), Neutron's agents and libvirt's
//! `<virtualport type='openvswitch'>` write on each VM port's Interface row:
//! - `vm-uuid` (os-vif) or `vm-id` (libvirt) is the instance id: the domain's uuid,
//!   which Nova makes the OpenStack instance's;
//! - `iface-id` (the Neutron port) and `attached-mac` are kept as the NIC's port ids.
//!
//! OVS knows no names, tags or plans: list `libvirt` after `ovs` to add the domain's,
//! or set them in `[instances]`.
//!
//! Read with `ovs-vsctl` (argv, the backend's `agent.ovs_vsctl` and `agent.ovsdb`) on
//! the inventory's thread, never the tick's. The stamp is the database file's size and
//! times: ovsdb-server appends to it on every committed change, and the columns
//! vswitchd rewrites every few seconds (statistics, status) are ephemeral and never
//! reach it, so a VM's port appearing moves it and nothing else does.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::{Instance, Nic, PortIds, Problem, Reading, Source, SourceError};
use crate::config::{OvsSource, SourceKind};
use crate::model::ids::{IfName, InstanceId};
use crate::sys::run_command;

pub struct ExternalIds {
    config: OvsSource,
    /// The command runner is async; this thread has no runtime of its own otherwise.
    runtime: Option<tokio::runtime::Runtime>,
}

impl ExternalIds {
    pub fn new(config: OvsSource) -> ExternalIds {
        ExternalIds {
            config,
            runtime: None,
        }
    }
}

impl Source for ExternalIds {
    fn kind(&self) -> SourceKind {
        SourceKind::Ovs
    }
    fn stamp(&mut self) -> Option<u64> {
        use std::hash::{Hash, Hasher};
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(&self.config.db_file).ok()?;
        let mut h = std::hash::DefaultHasher::new();
        (
            m.len(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
            m.ino(),
        )
            .hash(&mut h);
        Some(h.finish())
    }
    fn read(&mut self) -> Result<Reading, SourceError> {
        let what = || "ovs-vsctl list Interface".to_owned();
        let runtime = match &mut self.runtime {
            Some(r) => r,
            slot => slot.insert(
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| SourceError::Answer {
                        what: what(),
                        message: format!("cannot start a runtime for it: {e}"),
                    })?,
            ),
        };
        let mut args = Vec::new();
        if let Some(db) = &self.config.db {
            args.push(format!("--db={db}"));
        }
        args.push(format!(
            "--timeout={}",
            self.config.timeout.as_secs().max(1)
        ));
        args.extend(
            [
                "--format=json",
                "--columns=name,external_ids",
                "list",
                "Interface",
            ]
            .map(String::from),
        );
        let out = runtime
            .block_on(run_command(&self.config.vsctl, &args, self.config.timeout))
            .map_err(|e| SourceError::Answer {
                what: what(),
                message: e.to_string(),
            })?;
        parse(&self.config.db_file, &out)
    }
}

#[derive(Deserialize)]
struct ListOutput {
    headings: Vec<String>,
    data: Vec<Vec<serde_json::Value>>,
}

/// `ovs-vsctl --format=json --columns=name,external_ids list Interface`. A row whose
/// ids are unusable is a problem naming the interface; rows without `vm-uuid`/`vm-id`
/// (a bridge's own port, a tunnel, a physical NIC) are no instance's.
pub fn parse(db_file: &Path, text: &str) -> Result<Reading, SourceError> {
    let bad = |message: String| SourceError::Answer {
        what: "ovs-vsctl list Interface".into(),
        message,
    };
    let out: ListOutput =
        serde_json::from_str(text).map_err(|e| bad(format!("not ovs-vsctl's JSON: {e}")))?;
    let col = |name: &str| {
        out.headings
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| bad(format!("no column {name}")))
    };
    let (n, x) = (col("name")?, col("external_ids")?);
    let mut by_id: BTreeMap<InstanceId, Vec<Nic>> = BTreeMap::new();
    let mut reading = Reading::default();
    for row in &out.data {
        let name = row
            .get(n)
            .and_then(|v| v.as_str())
            .ok_or_else(|| bad(format!("a row without a name: {row:?}")))?;
        let ids = row
            .get(x)
            .and_then(map_pairs)
            .ok_or_else(|| bad(format!("Interface {name}: external_ids is not a map")))?;
        let get = |k: &str| ids.get(k).map(|v| v.to_string());
        let Some(vm) = get("vm-uuid").or_else(|| get("vm-id")) else {
            continue;
        };
        let problem = |m: String| Problem::at(db_file, None, format!("Interface {name}: {m}"));
        let interface = match IfName::new(name) {
            Ok(i) => i,
            Err(e) => {
                reading.problems.push(problem(e.to_string()));
                continue;
            }
        };
        let id = match InstanceId::new(&vm.to_ascii_lowercase()) {
            Ok(i) => i,
            Err(e) => {
                reading
                    .problems
                    .push(problem(format!("external_ids vm id {vm:?}: {e}")));
                continue;
            }
        };
        by_id.entry(id).or_default().push(Nic {
            interface,
            upload: None,
            download: None,
            port: PortIds {
                iface_id: get("iface-id"),
                attached_mac: get("attached-mac"),
            },
        });
    }
    for (id, mut interfaces) in by_id {
        interfaces.sort_by(|a, b| a.interface.cmp(&b.interface));
        reading.instances.push(Instance {
            id,
            source: SourceKind::Ovs,
            name: None,
            stop: None,
            shaped: false,
            tags: Default::default(),
            interfaces,
        });
    }
    Ok(reading)
}

/// An OVSDB map in JSON (`["map", [["key", "value"], …]]`), its values as text.
fn map_pairs(v: &serde_json::Value) -> Option<BTreeMap<&str, &str>> {
    let [kind, pairs] = v.as_array()?.as_slice() else {
        return None;
    };
    if kind.as_str() != Some("map") {
        return None;
    }
    pairs
        .as_array()?
        .iter()
        .map(|p| match p.as_array()?.as_slice() {
            [k, v] => Some((k.as_str()?, v.as_str()?)),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DB: &str = "/etc/openvswitch/conf.db";

    /// As `ovs-vsctl --format=json --columns=name,external_ids list Interface` prints
    /// it on a compute node: a libvirt port, two os-vif ports of one VM, the bridge's
    /// own port and a tunnel.
    const LISTING: &str = r#"{"data":[
      ["vnet3",["map",[["attached-mac","52:54:00:aa:bb:01"],["iface-id","6a1b7c3e-0000-4000-8000-000000000001"],["iface-status","active"],["vm-id","9C1F7B5E-1111-4222-8333-944455556666"]]]],
      ["tap3f2a9b1c-d4",["map",[["attached-mac","fa:16:3e:00:00:02"],["iface-id","3f2a9b1c-d4e5-4f60-8a7b-000000000002"],["iface-status","active"],["vm-uuid","0d9c4f6e-2222-4333-8444-555566667777"]]]],
      ["tap77aa0011-22",["map",[["attached-mac","fa:16:3e:00:00:03"],["iface-id","77aa0011-2233-4455-8667-000000000003"],["vm-uuid","0d9c4f6e-2222-4333-8444-555566667777"]]]],
      ["br-int",["map",[]]],
      ["vxlan-0a000002",["map",[["skip","x"]]]]
    ],"headings":["name","external_ids"]}"#;

    #[test]
    fn vm_ports_are_their_instances_with_the_neutron_port_kept() {
        let reading = parse(Path::new(DB), LISTING).unwrap();
        assert_eq!(reading.problems, vec![]);
        type Row<'a> = (&'a str, Vec<(String, Option<&'a str>, Option<&'a str>)>);
        let got: Vec<Row> = reading
            .instances
            .iter()
            .map(|i| {
                (
                    i.id.as_str(),
                    i.interfaces
                        .iter()
                        .map(|n| {
                            (
                                n.interface.to_string(),
                                n.port.iface_id.as_deref(),
                                n.port.attached_mac.as_deref(),
                            )
                        })
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "0d9c4f6e-2222-4333-8444-555566667777",
                    vec![
                        (
                            "tap3f2a9b1c-d4".into(),
                            Some("3f2a9b1c-d4e5-4f60-8a7b-000000000002"),
                            Some("fa:16:3e:00:00:02")
                        ),
                        (
                            "tap77aa0011-22".into(),
                            Some("77aa0011-2233-4455-8667-000000000003"),
                            Some("fa:16:3e:00:00:03")
                        ),
                    ]
                ),
                // libvirt's vm-id, upper-case as some versions write it: one id.
                (
                    "9c1f7b5e-1111-4222-8333-944455556666",
                    vec![(
                        "vnet3".into(),
                        Some("6a1b7c3e-0000-4000-8000-000000000001"),
                        Some("52:54:00:aa:bb:01")
                    )]
                ),
            ]
        );
        assert!(
            reading
                .instances
                .iter()
                .all(|i| i.source == SourceKind::Ovs)
        );
    }

    #[test]
    fn bad_rows_are_named_and_a_bad_listing_fails_the_read() {
        let rows = r#"{"data":[
          ["vnet1",["map",[["vm-id","has spaces"]]]],
          ["a-name-far-too-long-for-linux",["map",[["vm-uuid","0d9c4f6e"]]]],
          ["vnet2",["map",[["vm-id","0d9c4f6e"]]]]
        ],"headings":["name","external_ids"]}"#;
        let reading = parse(Path::new(DB), rows).unwrap();
        let ids: Vec<&str> = reading.instances.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["0d9c4f6e"]);
        let problems: Vec<String> = reading.problems.iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].starts_with(&format!(
                "{DB}: Interface vnet1: external_ids vm id \"has spaces\""
            )),
            "{}",
            problems[0]
        );
        assert!(
            problems[1].starts_with(&format!("{DB}: Interface a-name-far-too-long-for-linux:")),
            "{}",
            problems[1]
        );

        let cases = [
            (
                "ovs-vsctl: unix:/x: database connection failed",
                "not ovs-vsctl's JSON",
            ),
            (
                r#"{"data":[],"headings":["name"]}"#,
                "no column external_ids",
            ),
            (
                r#"{"data":[[1,["map",[]]]],"headings":["name","external_ids"]}"#,
                "a row without a name",
            ),
            (
                r#"{"data":[["vnet1",["set",[]]]],"headings":["name","external_ids"]}"#,
                "Interface vnet1: external_ids is not a map",
            ),
        ];
        for (text, want) in cases {
            let err = parse(Path::new(DB), text).unwrap_err().to_string();
            assert!(err.contains(want), "{err} (wanted {want:?})");
        }
    }

    #[test]
    fn the_stamp_moves_with_the_database_file_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("conf.db");
        let mut src = ExternalIds::new(OvsSource {
            db_file: file.clone(),
            vsctl: "ovs-vsctl".into(),
            db: None,
            timeout: std::time::Duration::from_secs(1),
        });
        assert_eq!(src.stamp(), None, "no database: read every refresh");
        std::fs::write(&file, "OVSDB JSON 1\n").unwrap();
        let first = src.stamp();
        assert!(first.is_some());
        assert_eq!(src.stamp(), first);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap();
        std::io::Write::write_all(&mut f, b"{\"Interface\":{}}\n").unwrap();
        assert_ne!(src.stamp(), first);
    }
}
