//! What OVSDB holds for the backend, read from a native session's replica or from
//! `ovs-vsctl list Interface`: each Interface row's policing (bytes and, where the schema
//! has the columns, packets) and mark, and (native only) the QoS on its port.
//!
//! A QoS is sluice's only when its `external_ids` carries the mark: an operator's own QoS
//! is never changed or removed, only reported. sluice's QoS rows (and their queues) that
//! no port refers to any more — the port was deleted under them — are orphans: QoS and
//! Queue are root tables, so OVSDB keeps them until someone deletes them.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;
use serde_json::Value;

use crate::sample::ovsdb::USERSPACE_TYPES;
use crate::sys::ovsdb::{Row, map_pairs, set_elements};

/// The mark sluice leaves in `external_ids` of the rows it limits or creates.
pub const MARK: &str = "sluice";

/// (ingress_policing_rate kbit/s, ingress_policing_burst kbit); (0, 0) = no policing.
pub type Policing = (u64, u64);

/// The QoS on an interface's port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortQos {
    /// Not read (the `vsctl` client reads the Interface table only).
    Unread,
    /// The interface is in no port, or in a port with other interfaces (a bond): there
    /// is no per-interface egress to shape.
    NoPort { why: &'static str },
    /// The port (its uuid) has no QoS.
    Free { port: String },
    /// sluice's `linux-htb` QoS. `max_rate` is the rate it holds when the QoS and its
    /// queue 0 agree on one, `None` when they do not (then it is rewritten).
    Ours {
        port: String,
        qos: String,
        queue: Option<String>,
        max_rate: Option<u64>,
    },
    /// A QoS sluice did not create.
    Foreign { qos: String, kind: String },
}

impl PortQos {
    /// The download rate (bit/s) sluice's QoS holds, if any.
    pub fn held_rate(&self) -> Option<u64> {
        match self {
            PortQos::Ours { max_rate, .. } => *max_rate,
            _ => None,
        }
    }
}

/// One Interface row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceRow {
    /// The row's uuid (native client only): writes find the row by it.
    pub uuid: Option<String>,
    pub policing: Policing,
    /// `ingress_policing_kpkts_rate` (kpkts/s) and `_burst` (kpkts); (0, 0) where the
    /// schema lacks them.
    pub packets: Policing,
    /// The row carries `external_ids:sluice`: its policing is sluice's, which it therefore
    /// also clears when the interface is no longer watched.
    pub marked: bool,
    pub qos: PortQos,
}

/// The Interface rows as OVSDB holds them, by name.
#[derive(Debug, Default, Clone)]
pub struct InterfaceRows {
    pub rows: HashMap<String, InterfaceRow>,
    /// The uuids of Interface rows with no kernel netdev (DPDK, vhost-user), sorted.
    pub userspace: Vec<String>,
    /// `Open_vSwitch.cur_cfg`: the configuration vswitchd last applied (native only).
    pub cur_cfg: Option<i64>,
    /// Why packet-rate policing cannot be written (`None`: it can).
    pub packets_unsupported: Option<String>,
    /// sluice's QoS rows no port refers to (uuids).
    pub orphan_qos: Vec<String>,
    /// sluice's Queue rows no QoS refers to (uuids).
    pub orphan_queues: Vec<String>,
}

impl InterfaceRows {
    pub fn policing(&self, name: &str) -> Option<Policing> {
        self.rows.get(name).map(|r| r.policing)
    }
}

type Table = HashMap<String, Row>;

/// The rows of a native session's replica (a column at its default is absent from it: 0,
/// an empty set or map).
pub fn of_replica(
    tables: &HashMap<String, Table>,
    columns: &HashMap<String, HashSet<String>>,
) -> Result<InterfaceRows, String> {
    let empty = Table::new();
    let table = |name: &str| tables.get(name).unwrap_or(&empty);
    let (interfaces, ports, qoses, queues) = (
        table("Interface"),
        table("Port"),
        table("QoS"),
        table("Queue"),
    );

    // Queue 0's max-rate, by queue uuid, and which queues are sluice's.
    let mut queue_rate: HashMap<&str, Option<u64>> = HashMap::new();
    let mut our_queues: HashSet<&str> = HashSet::new();
    for (uuid, row) in queues {
        let at = format!("OVSDB Queue {uuid}");
        queue_rate.insert(uuid, max_rate(row, &at)?);
        if marked(row, &at)? {
            our_queues.insert(uuid);
        }
    }
    // Each QoS: ours or not, its kind, its queue 0 and the rate they agree on.
    struct Qos<'a> {
        ours: bool,
        kind: String,
        queue: Option<String>,
        rate: Option<u64>,
        queues: Vec<&'a str>,
    }
    let mut qos_rows: HashMap<&str, Qos> = HashMap::new();
    for (uuid, row) in qoses {
        let at = format!("OVSDB QoS {uuid}");
        let kind = row
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let mut queue0 = None;
        let mut referenced = Vec::new();
        for (k, v) in map_pairs(row.get("queues")).map_err(|e| format!("{at}: queues: {e}"))? {
            let q = uuid_of(&v).ok_or_else(|| format!("{at}: queues: {v} is not a uuid"))?;
            if k.as_u64() == Some(0) {
                queue0 = Some(q.to_owned());
            }
            if let Some((held, _)) = queues.get_key_value(q) {
                referenced.push(held.as_str());
            }
        }
        let own = max_rate(row, &at)?;
        let rate = match (&queue0, own) {
            (Some(q), Some(r)) if kind == "linux-htb" => {
                (queue_rate.get(q.as_str()).copied().flatten() == Some(r)).then_some(r)
            }
            _ => None,
        };
        qos_rows.insert(
            uuid,
            Qos {
                ours: marked(row, &at)?,
                kind,
                queue: queue0,
                rate,
                queues: referenced,
            },
        );
    }
    // Each interface's port: the one port that holds it alone.
    let mut port_of: HashMap<&str, Result<(&str, Option<String>), &'static str>> = HashMap::new();
    let mut qos_in_use: HashSet<&str> = HashSet::new();
    for (uuid, row) in ports {
        let at = format!("OVSDB Port {uuid}");
        let members = set_elements(row.get("interfaces")).map_err(|e| format!("{at}: {e}"))?;
        let qos = set_elements(row.get("qos")).map_err(|e| format!("{at}: {e}"))?;
        let qos = match qos.as_slice() {
            [] => None,
            [q] => Some(
                uuid_of(q)
                    .ok_or_else(|| format!("{at}: qos: {q} is not a uuid"))?
                    .to_owned(),
            ),
            _ => return Err(format!("{at}: qos holds more than one row")),
        };
        if let Some(q) = qos.as_deref().and_then(|q| qoses.get_key_value(q)) {
            qos_in_use.insert(q.0.as_str());
        }
        for m in &members {
            let i = uuid_of(m).ok_or_else(|| format!("{at}: interfaces: {m} is not a uuid"))?;
            let entry = if members.len() == 1 {
                Ok((uuid.as_str(), qos.clone()))
            } else {
                Err("its port has more than one interface (a bond)")
            };
            if let Some((held, _)) = interfaces.get_key_value(i) {
                port_of.insert(held.as_str(), entry);
            }
        }
    }

    let mut rows = InterfaceRows::default();
    for (uuid, row) in interfaces {
        let Some(name) = row.get("name").and_then(Value::as_str) else {
            return Err(format!("OVSDB Interface row {uuid} has no name"));
        };
        let at = format!("OVSDB Interface {name}");
        let int = |column: &str| match row.get(column) {
            None => Ok(0),
            Some(v) => v
                .as_u64()
                .ok_or_else(|| format!("{at}: {column} is not a count: {v}")),
        };
        let policing = (
            int("ingress_policing_rate")?,
            int("ingress_policing_burst")?,
        );
        let packets = (
            int("ingress_policing_kpkts_rate")?,
            int("ingress_policing_kpkts_burst")?,
        );
        let qos = match port_of.get(uuid.as_str()) {
            None => PortQos::NoPort {
                why: "it is in no port",
            },
            Some(Err(why)) => PortQos::NoPort { why },
            Some(Ok((port, None))) => PortQos::Free {
                port: (*port).to_owned(),
            },
            Some(Ok((port, Some(q)))) => match qos_rows.get(q.as_str()) {
                Some(held) if held.ours => PortQos::Ours {
                    port: (*port).to_owned(),
                    qos: q.clone(),
                    queue: held.queue.clone(),
                    max_rate: held.rate,
                },
                Some(held) => PortQos::Foreign {
                    qos: q.clone(),
                    kind: held.kind.clone(),
                },
                // A reference the replica has not caught up with yet: treat as foreign,
                // so nothing is written over it this tick.
                None => PortQos::Foreign {
                    qos: q.clone(),
                    kind: "unknown".into(),
                },
            },
        };
        if row
            .get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| USERSPACE_TYPES.contains(&t))
        {
            rows.userspace.push(uuid.clone());
        }
        rows.rows.insert(
            name.to_owned(),
            InterfaceRow {
                uuid: Some(uuid.clone()),
                policing,
                packets,
                marked: marked(row, &at)?,
                qos,
            },
        );
    }
    rows.cur_cfg = tables
        .get("Open_vSwitch")
        .and_then(|t| t.values().next())
        .map(|row| row.get("cur_cfg").and_then(Value::as_i64).unwrap_or(0));
    let has = |c: &str| {
        columns
            .get("Interface")
            .is_some_and(|cols| cols.contains(c))
    };
    if !(has("ingress_policing_kpkts_rate") && has("ingress_policing_kpkts_burst")) {
        rows.packets_unsupported = Some(
            "this Open vSwitch has no Interface.ingress_policing_kpkts_rate \
             (packet-rate policing came with OVS 2.16)"
                .into(),
        );
    }
    let mut queues_in_use: HashSet<&str> = HashSet::new();
    for (uuid, q) in &qos_rows {
        if q.ours && !qos_in_use.contains(uuid) {
            rows.orphan_qos.push((*uuid).to_owned());
        } else {
            queues_in_use.extend(q.queues.iter().copied());
        }
    }
    rows.orphan_queues = our_queues
        .into_iter()
        .filter(|q| !queues_in_use.contains(q))
        .map(str::to_owned)
        .collect();
    rows.userspace.sort();
    rows.orphan_qos.sort();
    rows.orphan_queues.sort();
    Ok(rows)
}

/// `other_config:max-rate` in bit/s, if set.
fn max_rate(row: &Row, at: &str) -> Result<Option<u64>, String> {
    let pairs =
        map_pairs(row.get("other_config")).map_err(|e| format!("{at}: other_config: {e}"))?;
    match pairs.iter().find(|(k, _)| k.as_str() == Some("max-rate")) {
        None => Ok(None),
        Some((_, v)) => v
            .as_str()
            .and_then(|s| s.parse().ok())
            .map(Some)
            .ok_or_else(|| format!("{at}: other_config:max-rate is not a rate in bit/s: {v}")),
    }
}

fn marked(row: &Row, at: &str) -> Result<bool, String> {
    let ids = map_pairs(row.get("external_ids")).map_err(|e| format!("{at}: external_ids: {e}"))?;
    Ok(ids.iter().any(|(k, _)| k.as_str() == Some(MARK)))
}

/// The uuid of a reference datum `["uuid", "…"]`.
fn uuid_of(v: &Value) -> Option<&str> {
    match v.as_array().map(Vec::as_slice) {
        Some([tag, Value::String(u)]) if tag == "uuid" => Some(u),
        _ => None,
    }
}

#[derive(Deserialize)]
struct ListOutput {
    headings: Vec<String>,
    data: Vec<Vec<Value>>,
}

/// Parse `ovs-vsctl --format=json --columns=name,ingress_policing_rate,ingress_policing_burst,external_ids list Interface`
/// (`external_ids` is optional: without it no row is marked). Ports are not read.
pub fn of_vsctl_list(text: &str) -> Result<InterfaceRows, String> {
    let out: ListOutput =
        serde_json::from_str(text).map_err(|e| format!("unexpected ovs-vsctl output: {e}"))?;
    let col = |name: &str| {
        out.headings
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| format!("ovs-vsctl output lacks column {name}"))
    };
    let (n, r, b) = (
        col("name")?,
        col("ingress_policing_rate")?,
        col("ingress_policing_burst")?,
    );
    let ids = out.headings.iter().position(|h| h == "external_ids");
    let mut rows = InterfaceRows {
        packets_unsupported: Some(
            "packet-rate limits on OVS need agent.ovs_client = \"native\"".into(),
        ),
        ..InterfaceRows::default()
    };
    for row in &out.data {
        let name = row.get(n).and_then(|v| v.as_str());
        let rate = row.get(r).and_then(|v| v.as_u64());
        let burst = row.get(b).and_then(|v| v.as_u64());
        match (name, rate, burst) {
            (Some(name), Some(rate), Some(burst)) => {
                let marked = match ids.and_then(|i| row.get(i)) {
                    None => false,
                    Some(v) => map_pairs(Some(v))
                        .map_err(|e| format!("ovs-vsctl output: {name}: external_ids: {e}"))?
                        .iter()
                        .any(|(k, _)| k.as_str() == Some(MARK)),
                };
                rows.rows.insert(
                    name.to_owned(),
                    InterfaceRow {
                        uuid: None,
                        policing: (rate, burst),
                        packets: (0, 0),
                        marked,
                        qos: PortQos::Unread,
                    },
                );
            }
            _ => return Err(format!("unexpected row in ovs-vsctl output: {row:?}")),
        }
    }
    Ok(rows)
}
