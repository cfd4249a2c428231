//! Counters of Open vSwitch ports that have no kernel netdev — DPDK physical ports and
//! vhost-user ports, which vswitchd's userspace datapath drives itself — read from
//! `Interface.statistics` as vswitchd last wrote it (every
//! `other_config:stats-update-interval`, 5 s by default: rates over shorter ticks come in
//! steps).
//!
//! Such an interface has no kernel ifindex. It gets a synthetic one with the top bit set,
//! which no kernel index has (they are positive `int`s), derived from its OVSDB row: the
//! same for the life of the port, and another when the port is re-created, so the one
//! counter delta sees a reset just as it does for a re-created tap.

use std::hash::{DefaultHasher, Hash, Hasher};

use serde_json::Value;

use super::Sample;
use crate::model::ids::IfName;

/// The bit that marks an ifindex as synthetic: counters from OVSDB, no kernel netdev.
pub const USERSPACE_IFINDEX: u32 = 1 << 31;

/// The Interface types with no kernel netdev.
pub const USERSPACE_TYPES: [&str; 3] = ["dpdk", "dpdkvhostuser", "dpdkvhostuserclient"];

/// Whether `ifindex` is synthetic: the interface is counted from OVSDB.
pub fn is_userspace(ifindex: u32) -> bool {
    ifindex & USERSPACE_IFINDEX != 0
}

/// The synthetic ifindex of the OVSDB row `uuid`.
pub fn userspace_ifindex(uuid: &str) -> u32 {
    let mut h = DefaultHasher::new();
    uuid.hash(&mut h);
    USERSPACE_IFINDEX | (h.finish() as u32 & !USERSPACE_IFINDEX)
}

/// Samples of the rows an OVSDB `select` of `_uuid`, `name` and `statistics` answered.
/// A row whose statistics lack a counter is skipped (vswitchd has not filled it in yet);
/// a malformed one is an error naming the interface.
pub fn samples_of(rows: &[Value]) -> Result<Vec<Sample>, String> {
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let name = row
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("an OVSDB Interface row without a name: {row}"))?;
        let uuid = match row
            .get("_uuid")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
        {
            Some([tag, Value::String(u)]) if tag == "uuid" => u.as_str(),
            _ => return Err(format!("OVSDB Interface {name}: no _uuid")),
        };
        let name = IfName::new(name).map_err(|e| format!("OVSDB Interface {name:?}: {e}"))?;
        let pairs = match row
            .get("statistics")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
        {
            Some([tag, Value::Array(pairs)]) if tag == "map" => pairs,
            _ => return Err(format!("OVSDB Interface {name}: statistics is not a map")),
        };
        let counter = |key: &str| -> Result<Option<u64>, String> {
            for p in pairs {
                if let Some([k, v]) = p.as_array().map(Vec::as_slice)
                    && k.as_str() == Some(key)
                {
                    return v.as_u64().map(Some).ok_or_else(|| {
                        format!("OVSDB Interface {name}: statistics:{key} is not a count: {v}")
                    });
                }
            }
            Ok(None)
        };
        let (Some(rx_bytes), Some(tx_bytes), Some(rx_packets), Some(tx_packets)) = (
            counter("rx_bytes")?,
            counter("tx_bytes")?,
            counter("rx_packets")?,
            counter("tx_packets")?,
        ) else {
            continue;
        };
        out.push(Sample {
            ifindex: userspace_ifindex(uuid),
            name,
            rx_bytes,
            tx_bytes,
            rx_packets,
            tx_packets,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn statistics_become_samples_with_a_synthetic_ifindex() {
        let rows = [
            json!({"_uuid": ["uuid", "u2"], "name": "vhu102.0",
                   "statistics": ["map", [["rx_bytes", 10], ["rx_packets", 1],
                                          ["tx_bytes", 20], ["tx_packets", 2],
                                          ["rx_dropped", 0]]]}),
            // vswitchd has not written its counters yet: skipped, not zero.
            json!({"_uuid": ["uuid", "u3"], "name": "vhu103.0", "statistics": ["map", []]}),
            json!({"_uuid": ["uuid", "u1"], "name": "vhu101.0",
                   "statistics": ["map", [["rx_bytes", 5], ["rx_packets", 3],
                                          ["tx_bytes", 7], ["tx_packets", 4]]]}),
        ];
        let s = samples_of(&rows).unwrap();
        let names: Vec<&str> = s.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["vhu101.0", "vhu102.0"]);
        assert_eq!(
            (
                s[1].rx_bytes,
                s[1].tx_bytes,
                s[1].rx_packets,
                s[1].tx_packets
            ),
            (10, 20, 1, 2)
        );
        assert!(s.iter().all(|s| is_userspace(s.ifindex)));
        assert_eq!(s[0].ifindex, userspace_ifindex("u1"), "stable for a row");
        assert_ne!(
            userspace_ifindex("u1"),
            userspace_ifindex("u4"),
            "another row, another"
        );
        assert!(!is_userspace(4_000), "a kernel ifindex is not synthetic");
        for (bad, says) in [
            (json!({"_uuid": ["uuid", "u"]}), "without a name"),
            (
                json!({"name": "x", "statistics": ["map", []]}),
                "x: no _uuid",
            ),
            (
                json!({"_uuid": ["uuid", "u"], "name": "x", "statistics": 3}),
                "x: statistics is not a map",
            ),
            (
                json!({"_uuid": ["uuid", "u"], "name": "x",
                       "statistics": ["map", [["rx_bytes", "many"]]]}),
                "x: statistics:rx_bytes is not a count",
            ),
            (
                json!({"_uuid": ["uuid", "u"], "name": "a/b", "statistics": ["map", []]}),
                "OVSDB Interface \"a/b\"",
            ),
        ] {
            let e = samples_of(&[bad]).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }
}
