//! From verdicts and what OVSDB holds to the changes that make them agree, and those
//! changes as one `transact` (or one `ovs-vsctl` call).
//!
//! Upload is the Interface's ingress policing: bytes, and packets where the schema has
//! the kpkts columns (OVS 2.16+). Download is a `linux-htb` QoS on the
//! interface's port with one queue (queue 0, where HTB sends whatever no flow assigns),
//! both carrying the rate as `other_config:max-rate`: one QoS and one Queue per limited
//! port, created, changed and deleted only by sluice and marked as its own.

use std::collections::HashSet;

use serde_json::{Value, json};

use super::Wanted;
use super::rows::{InterfaceRows, MARK, Policing, PortQos};
use crate::model::ids::IfName;

/// What sluice wants one OVS interface to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct PortLimits {
    /// Upload: ingress policing; (0, 0) for none.
    pub policing: Policing,
    /// Upload packets: kpkts policing; (0, 0) for none.
    pub packets: Policing,
    /// Download: the port's shaping rate in bit/s; `None` for none.
    pub download: Option<u64>,
}

impl PortLimits {
    pub const NONE: PortLimits = PortLimits {
        policing: (0, 0),
        packets: (0, 0),
        download: None,
    };

    pub fn of(w: &Wanted<'_>) -> PortLimits {
        PortLimits {
            policing: w
                .verdict
                .upload
                .map_or((0, 0), |l| (l.rate.kbps(), l.burst.kb())),
            packets: w
                .verdict
                .packets
                .map_or((0, 0), |p| (p.rate.kpps(), p.burst_kpkts)),
            download: w.verdict.download.map(|l| l.rate.bits_per_sec()),
        }
    }
}

/// A change to a port's QoS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QosChange {
    /// A new QoS and queue holding `rate`, set on the port.
    Create { port: String, rate: u64 },
    /// sluice's QoS (and its queue 0, a new one when it has none) set to `rate`.
    Update {
        qos: String,
        queue: Option<String>,
        rate: u64,
    },
    /// sluice's QoS taken off the port and deleted with its queue.
    Remove {
        port: String,
        qos: String,
        queue: Option<String>,
    },
}

/// An Interface row's policing as written: bytes always, packets where the schema has
/// the columns (`None`: not written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Police {
    pub bytes: Policing,
    pub packets: Option<Policing>,
}

impl Police {
    /// No policing, in the columns the schema has.
    pub fn none(packets_supported: bool) -> Police {
        Police {
            bytes: (0, 0),
            packets: packets_supported.then_some((0, 0)),
        }
    }

    /// Whether it limits anything (and so carries sluice's mark).
    pub fn limited(&self) -> bool {
        self.bytes != (0, 0) || self.packets.is_some_and(|p| p != (0, 0))
    }
}

/// One interface's change: its policing, its port's QoS, or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub name: IfName,
    pub police: Option<Police>,
    pub qos: Option<QosChange>,
}

/// What a reconcile writes, and what it cannot.
#[derive(Debug, Default)]
pub struct Plan<'a> {
    pub changes: Vec<Change>,
    /// Wanted interfaces OVSDB has no row for.
    pub missing: Vec<&'a IfName>,
    /// Wanted interfaces whose download or packet rate cannot be limited, and why (what
    /// can be is still written).
    pub refused: Vec<(&'a IfName, String)>,
    /// sluice's QoS and Queue rows nothing refers to: deleted with the changes.
    pub orphan_qos: Vec<String>,
    pub orphan_queues: Vec<String>,
}

impl Plan<'_> {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.orphan_qos.is_empty() && self.orphan_queues.is_empty()
    }
}

/// The QoS change that takes `held` to `want`; `Err` when it cannot be made.
fn qos_change(want: Option<u64>, held: &PortQos) -> Result<Option<QosChange>, String> {
    Ok(match (want, held) {
        (
            None,
            PortQos::Ours {
                port, qos, queue, ..
            },
        ) => Some(QosChange::Remove {
            port: port.clone(),
            qos: qos.clone(),
            queue: queue.clone(),
        }),
        (None, _) => None,
        (Some(_), PortQos::Unread) => {
            return Err("download limits on OVS need agent.ovs_client = \"native\" \
                        (the ovs-vsctl client reads no QoS)"
                .into());
        }
        (Some(_), PortQos::NoPort { why }) => {
            return Err(format!("cannot shape its download: {why}"));
        }
        (Some(_), PortQos::Foreign { qos, kind }) => {
            return Err(format!(
                "cannot shape its download: its port carries a QoS sluice did not create \
                 (type {kind:?}, {qos}); left alone"
            ));
        }
        (Some(rate), PortQos::Free { port }) => Some(QosChange::Create {
            port: port.clone(),
            rate,
        }),
        (Some(rate), PortQos::Ours { max_rate, .. }) if *max_rate == Some(rate) => None,
        (Some(rate), PortQos::Ours { qos, queue, .. }) => Some(QosChange::Update {
            qos: qos.clone(),
            queue: queue.clone(),
            rate,
        }),
    })
}

/// What to change: wanted rows that differ or lack the mark; marked rows no longer
/// wanted, back to no policing, and sluice's QoS on ports no longer wanted, removed.
pub fn plan<'a>(current: &InterfaceRows, wanted: &'a [Wanted<'a>]) -> Plan<'a> {
    let mut plan = Plan {
        orphan_qos: current.orphan_qos.clone(),
        orphan_queues: current.orphan_queues.clone(),
        ..Plan::default()
    };
    let packets_supported = current.packets_unsupported.is_none();
    for w in wanted {
        let want = PortLimits::of(w);
        let name = w.interface.as_str();
        let Some(row) = current.rows.get(name) else {
            plan.missing.push(w.interface);
            continue;
        };
        let mut refused = Vec::new();
        if let Some(why) = &current.packets_unsupported
            && want.packets != (0, 0)
        {
            refused.push(format!("cannot limit its packet rate: {why}"));
        }
        let police = Police {
            bytes: want.policing,
            packets: packets_supported.then_some(want.packets),
        };
        let differs = row.policing != want.policing
            || (packets_supported && row.packets != want.packets)
            || police.limited() != row.marked;
        let police = differs.then_some(police);
        let qos = qos_change(want.download, &row.qos).unwrap_or_else(|why| {
            refused.push(why);
            None
        });
        if !refused.is_empty() {
            plan.refused.push((w.interface, refused.join("; ")));
        }
        if police.is_some() || qos.is_some() {
            plan.changes.push(Change {
                name: w.interface.clone(),
                police,
                qos,
            });
        }
    }
    let wanted_names: HashSet<&str> = wanted.iter().map(|w| w.interface.as_str()).collect();
    let mut left: Vec<Change> = current
        .rows
        .iter()
        .filter(|(n, _)| !wanted_names.contains(n.as_str()))
        .filter_map(|(n, row)| {
            let police = row.marked.then_some(Police::none(packets_supported));
            let qos = qos_change(None, &row.qos).ok().flatten();
            if police.is_none() && qos.is_none() {
                return None;
            }
            Some(Change {
                name: IfName::new(n).ok()?,
                police,
                qos,
            })
        })
        .collect();
    left.sort_by(|a, b| a.name.cmp(&b.name));
    plan.changes.extend(left);
    plan
}

/// `--no-wait -- set interface X ingress_policing_rate=R ingress_policing_burst=B
/// external_ids:sluice=limited -- …`; clearing a limit removes the mark. The `vsctl`
/// client writes byte policing only (it never plans a QoS or packet change).
pub fn set_clauses(changes: &[Change]) -> Vec<String> {
    let mut args = vec!["--no-wait".to_owned()];
    for (name, (rate, burst)) in changes
        .iter()
        .filter_map(|c| c.police.map(|p| (&c.name, p.bytes)))
    {
        args.extend([
            "--".to_owned(),
            "set".to_owned(),
            "interface".to_owned(),
            name.to_string(),
            format!("ingress_policing_rate={rate}"),
            format!("ingress_policing_burst={burst}"),
        ]);
        if (rate, burst) == (0, 0) {
            args.extend(
                [
                    "--",
                    "remove",
                    "interface",
                    name.as_str(),
                    "external_ids",
                    MARK,
                ]
                .map(String::from),
            );
        } else {
            args.push(format!("external_ids:{MARK}=limited"));
        }
    }
    args
}

/// Ops that end a write: bump `Open_vSwitch.next_cfg` (vswitchd sets `cur_cfg` to it
/// once it has reconfigured) and read the new value back.
pub fn cfg_ops() -> [Value; 2] {
    [
        json!({"op": "mutate", "table": "Open_vSwitch", "where": [],
               "mutations": [["next_cfg", "+=", 1]]}),
        json!({"op": "select", "table": "Open_vSwitch", "where": [], "columns": ["next_cfg"]}),
    ]
}

/// The `next_cfg` a `select` of [`cfg_ops`] answered.
pub fn next_cfg_of(result: &Value) -> Option<i64> {
    result.get("rows")?.get(0)?.get("next_cfg")?.as_i64()
}

fn at_uuid(uuid: &str) -> Value {
    json!([["_uuid", "==", ["uuid", uuid]]])
}

fn max_rate(rate: u64) -> Value {
    json!(["map", [["max-rate", rate.to_string()]]])
}

/// The `transact` ops of a plan.
///
/// Policing: each row's columns, and sluice's mark added to its `external_ids` (or
/// removed with the limit) by a mutation that leaves the other keys alone. Rows are found
/// by their uuid where it is known: ovsdb-server looks a `_uuid` up directly but scans
/// the table for any other column, which made 1,000 changes at 1,000 ports a million
/// comparisons.
///
/// QoS: new rows get a `uuid-name` the same transaction refers to; OVSDB checks
/// references when the transaction commits, so the order of the ops does not matter.
pub fn transact_ops(plan: &Plan<'_>, rows: &InterfaceRows) -> Vec<Value> {
    let mut ops = Vec::with_capacity(plan.changes.len() * 2);
    for (i, c) in plan.changes.iter().enumerate() {
        let name = c.name.as_str();
        let at = match rows.rows.get(name).and_then(|r| r.uuid.as_deref()) {
            Some(uuid) => at_uuid(uuid),
            None => json!([["name", "==", name]]),
        };
        if let Some(police) = c.police {
            let (rate, burst) = police.bytes;
            let mut row = json!({"ingress_policing_rate": rate, "ingress_policing_burst": burst});
            if let Some((rate, burst)) = police.packets {
                row["ingress_policing_kpkts_rate"] = json!(rate);
                row["ingress_policing_kpkts_burst"] = json!(burst);
            }
            ops.push(json!({
                "op": "update",
                "table": "Interface",
                "where": at,
                "row": row,
            }));
            let mutation = if !police.limited() {
                json!(["external_ids", "delete", ["set", [MARK]]])
            } else {
                json!(["external_ids", "insert", ["map", [[MARK, "limited"]]]])
            };
            ops.push(json!({
                "op": "mutate",
                "table": "Interface",
                "where": at,
                "mutations": [mutation],
            }));
        }
        let ours = json!(["map", [[MARK, name]]]);
        let new_queue = |ops: &mut Vec<Value>, rate: u64| {
            let id = format!("queue{i}");
            ops.push(json!({
                "op": "insert",
                "table": "Queue",
                "uuid-name": id,
                "row": {"other_config": max_rate(rate), "external_ids": ours},
            }));
            json!(["named-uuid", id])
        };
        let qos_row = |queue: Value, rate: u64| {
            json!({
                "type": "linux-htb",
                "other_config": max_rate(rate),
                "queues": ["map", [[0, queue]]],
                "external_ids": ours,
            })
        };
        match &c.qos {
            None => {}
            Some(QosChange::Create { port, rate }) => {
                let queue = new_queue(&mut ops, *rate);
                let id = format!("qos{i}");
                ops.push(json!({
                    "op": "insert",
                    "table": "QoS",
                    "uuid-name": id,
                    "row": qos_row(queue, *rate),
                }));
                ops.push(json!({
                    "op": "update",
                    "table": "Port",
                    "where": at_uuid(port),
                    "row": {"qos": ["named-uuid", id]},
                }));
            }
            Some(QosChange::Update { qos, queue, rate }) => {
                let queue = match queue {
                    Some(q) => {
                        ops.push(json!({
                            "op": "update",
                            "table": "Queue",
                            "where": at_uuid(q),
                            "row": {"other_config": max_rate(*rate)},
                        }));
                        json!(["uuid", q])
                    }
                    None => new_queue(&mut ops, *rate),
                };
                ops.push(json!({
                    "op": "update",
                    "table": "QoS",
                    "where": at_uuid(qos),
                    "row": qos_row(queue, *rate),
                }));
            }
            Some(QosChange::Remove { port, qos, queue }) => {
                ops.push(json!({
                    "op": "update",
                    "table": "Port",
                    "where": at_uuid(port),
                    "row": {"qos": ["set", []]},
                }));
                ops.push(json!({"op": "delete", "table": "QoS", "where": at_uuid(qos)}));
                if let Some(q) = queue {
                    ops.push(json!({"op": "delete", "table": "Queue", "where": at_uuid(q)}));
                }
            }
        }
    }
    for (table, uuids) in [("QoS", &plan.orphan_qos), ("Queue", &plan.orphan_queues)] {
        for u in uuids {
            ops.push(json!({"op": "delete", "table": table, "where": at_uuid(u)}));
        }
    }
    ops
}
