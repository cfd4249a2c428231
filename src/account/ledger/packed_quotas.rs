//! The quota counts, packed into one row like the counters ([`super::packed`]).
//!
//! A rule that covers every instance moves every instance's count every tick: as rows,
//! 10,000 upserts a tick (~14 ms at 10,000 instances). As one postcard value (rule names
//! and periods once, then ~15 bytes plus the instance id per count) it is one row write,
//! and only in ticks where some count changed.

use std::collections::BTreeMap;

use jiff::Timestamp;
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use super::LedgerError;
use super::packed::PackedRow;
use crate::account::quota_counts::{QuotaKey, QuotaRows, QuotaUsage};
use crate::model::calendar::Period;
use crate::model::ids::{InstanceId, RuleName};

/// The `state` row the counts live in (row 1 is the counters).
const QUOTAS: PackedRow = PackedRow::new(
    2,
    1,
    "reading the quota counts (state row 2)",
    "writing the quota counts",
);

/// The stored layout, as read. Rule names and periods are listed once; a count refers
/// to them by index (every count of a rule usually shares one period).
#[derive(Deserialize)]
struct Wire {
    /// Checked on the first byte before decoding.
    _format: u8,
    rules: Vec<String>,
    /// (start ms, length ms)
    periods: Vec<(i64, i64)>,
    counts: Vec<WireCount>,
}

#[derive(Deserialize)]
struct WireCount {
    rule: u32,
    period: u32,
    instance: String,
    upload: u64,
    download: u64,
    notified: u32,
    exceeded: bool,
}

/// The same layout, as written (borrowed: no per-count allocation).
#[derive(Serialize)]
struct WireOut<'a> {
    format: u8,
    rules: Vec<&'a str>,
    periods: Vec<(i64, i64)>,
    counts: Vec<WireCountOut<'a>>,
}

#[derive(Serialize)]
struct WireCountOut<'a> {
    rule: u32,
    period: u32,
    instance: &'a str,
    upload: u64,
    download: u64,
    notified: u32,
    exceeded: bool,
}

pub type QuotaMap = BTreeMap<QuotaKey, QuotaUsage>;

pub fn encode(counts: &QuotaMap) -> Result<Vec<u8>, LedgerError> {
    /// A handful of rules and periods, so a scan from the last hit beats a map.
    fn index_of<T: PartialEq + Copy>(list: &mut Vec<T>, last: &mut usize, v: T) -> u32 {
        if list.get(*last) != Some(&v) {
            *last = match list.iter().position(|x| *x == v) {
                Some(i) => i,
                None => {
                    list.push(v);
                    list.len() - 1
                }
            };
        }
        *last as u32
    }
    let (mut rules, mut rule_ix) = (Vec::new(), 0);
    let (mut periods, mut period_ix) = (Vec::new(), 0);
    let mut out = Vec::with_capacity(counts.len());
    for ((rule, instance), u) in counts {
        let start = u.period.start.as_millisecond();
        let len = u.period.end.as_millisecond() - start;
        out.push(WireCountOut {
            rule: index_of(&mut rules, &mut rule_ix, rule.as_str()),
            period: index_of(&mut periods, &mut period_ix, (start, len)),
            instance: instance.as_str(),
            upload: u.upload,
            download: u.download,
            notified: u32::try_from(u.notified).unwrap_or(u32::MAX),
            exceeded: u.exceeded,
        });
    }
    let wire = WireOut {
        format: QUOTAS.format(),
        rules,
        periods,
        counts: out,
    };
    QUOTAS.encode(&wire, 32 + 24 * counts.len())
}

/// Counts whose names are no longer valid are skipped (they cannot match a rule).
pub fn decode(bytes: &[u8]) -> Result<QuotaRows, LedgerError> {
    let wire: Wire = QUOTAS.decode(bytes)?;
    let rules: Vec<Option<RuleName>> = wire.rules.iter().map(|r| RuleName::new(r).ok()).collect();
    let mut out = Vec::with_capacity(wire.counts.len());
    for c in wire.counts {
        let rule = rules.get(c.rule as usize).cloned().flatten();
        let Some(&(start_ms, len_ms)) = wire.periods.get(c.period as usize) else {
            return Err(QUOTAS.bad(format!(
                "a count refers to period {} of {}",
                c.period,
                wire.periods.len()
            )));
        };
        let (Some(rule), Ok(instance), Ok(start), Ok(end)) = (
            rule,
            InstanceId::new(&c.instance),
            Timestamp::from_millisecond(start_ms),
            Timestamp::from_millisecond(start_ms.saturating_add(len_ms)),
        ) else {
            continue;
        };
        out.push((
            (rule, instance),
            QuotaUsage {
                period: Period { start, end },
                upload: c.upload,
                download: c.download,
                notified: c.notified as usize,
                exceeded: c.exceeded,
            },
        ));
    }
    Ok(out)
}

pub fn read(conn: &Connection) -> Result<QuotaRows, LedgerError> {
    QUOTAS.read(conn)?.map_or(Ok(Vec::new()), |b| decode(&b))
}

pub fn write(conn: &Connection, counts: &QuotaMap) -> Result<(), LedgerError> {
    QUOTAS.write(conn, &encode(counts)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(upload: u64, exceeded: bool) -> QuotaUsage {
        QuotaUsage {
            period: Period {
                start: Timestamp::from_second(1_800_000_000).unwrap(),
                end: Timestamp::from_second(1_802_592_000).unwrap(),
            },
            upload,
            download: 7,
            notified: 2,
            exceeded,
        }
    }

    #[test]
    fn round_trips_with_each_rule_name_once() {
        let mut m = QuotaMap::new();
        for (rule, inst, up, ex) in [
            ("monthly", "101", u64::MAX, true),
            ("monthly", "102", 0, false),
            ("daily-cap", "101", 5, false),
        ] {
            m.insert(
                (RuleName::new(rule).unwrap(), InstanceId::new(inst).unwrap()),
                usage(up, ex),
            );
        }
        let bytes = encode(&m).unwrap();
        let back: QuotaMap = decode(&bytes).unwrap().into_iter().collect();
        assert_eq!(back, m);
        let text = String::from_utf8_lossy(&bytes);
        assert_eq!(
            text.matches("monthly").count(),
            1,
            "rule names are not repeated"
        );
    }

    #[test]
    fn damage_is_an_error_naming_the_row() {
        let mut m = QuotaMap::new();
        m.insert(
            (RuleName::new("r").unwrap(), InstanceId::new("1").unwrap()),
            usage(1, false),
        );
        let bytes = encode(&m).unwrap();
        let err = decode(&bytes[..bytes.len() - 3]).unwrap_err().to_string();
        assert!(err.contains("quota counts (state row 2)"), "{err}");
    }
}
