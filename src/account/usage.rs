//! Reading the ledger back: totals per instance (or interface) and period.
//!
//! 5-minute periods come from the 5-minute buckets; hours, days and months from the
//! hourly ones, grouped by [`Granularity`] in the asked time zone.

use std::collections::BTreeMap;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use rusqlite::Connection;
use serde::Serialize;

use super::ledger::packed::Table;
use super::ledger::{BucketFilter, BucketRow, LedgerError, bucket_rows, instance_intervals};
use crate::model::calendar::Granularity;
use crate::model::ids::{IfName, InstanceId};
use crate::model::percentile::{Percentile, Percentiles, of_curve, over_by};

#[derive(Debug, Clone)]
pub struct UsageQuery {
    pub instance: Option<InstanceId>,
    /// Only this interface, and totals per interface rather than per instance.
    pub interface: Option<IfName>,
    pub by: Granularity,
    /// Buckets starting in [from, to).
    pub from: Timestamp,
    pub to: Timestamp,
    pub tz: TimeZone,
}

/// Traffic of one instance (or interface) in one period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageRow {
    /// Start of the period.
    pub period: Timestamp,
    pub instance: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Instance → world (the host received it).
    pub upload_bytes: u64,
    /// World → instance (the host sent it).
    pub download_bytes: u64,
    /// Some of it was spread over a gap in sampling (the agent was down).
    pub estimated: bool,
}

/// Rows ordered by instance (and interface), then period.
pub fn query(conn: &Connection, q: &UsageQuery) -> Result<Vec<UsageRow>, LedgerError> {
    let table = match q.by {
        Granularity::FiveMinutes => Table::FiveMinutes,
        _ => Table::Hour,
    };
    let rows = bucket_rows(
        conn,
        &BucketFilter {
            table,
            from: q.from.as_second(),
            to: q.to.as_second(),
            instance: q.instance.as_ref().map(|i| i.as_str()),
            interface: q.interface.as_ref().map(|i| i.as_str()),
        },
    )?;
    // (instance, interface when asked per interface, period) → (rx, tx, estimated)
    type Key = (String, Option<String>, Timestamp);
    let mut grouped: BTreeMap<Key, (u64, u64, bool)> = BTreeMap::new();
    for BucketRow {
        instance,
        interface,
        bucket,
        rx,
        tx,
        estimated,
    } in rows
    {
        let Ok(at) = Timestamp::from_second(bucket) else {
            continue;
        };
        let period = q.by.start_of(at, &q.tz);
        let key = (instance, q.interface.as_ref().map(|_| interface), period);
        let e = grouped.entry(key).or_default();
        e.0 += rx;
        e.1 += tx;
        e.2 |= estimated;
    }
    Ok(grouped
        .into_iter()
        .map(
            |((instance, interface, period), (rx, tx, estimated))| UsageRow {
                period,
                instance,
                interface,
                upload_bytes: rx,
                download_bytes: tx,
                estimated,
            },
        )
        .collect())
}

/// One instance's percentiles in one period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PercentileRow {
    pub period: Timestamp,
    pub period_end: Timestamp,
    pub instance: String,
    #[serde(flatten)]
    pub figures: Percentiles,
}

/// Each instance's `p`th percentile of 5-minute rates in every `by` period (in `tz`) that
/// overlaps [from, to), as of `now`.
///
/// Only intervals over by `now` count (the open one would read low). The window is the
/// period up to its end or `now`; its intervals without a record are idle ones (see
/// [`crate::model::percentile`]).
pub fn percentiles(
    conn: &Connection,
    instance: Option<&InstanceId>,
    by: Granularity,
    (from, to): (Timestamp, Timestamp),
    now: Timestamp,
    tz: &TimeZone,
    p: Percentile,
) -> Result<Vec<PercentileRow>, LedgerError> {
    let periods = by.periods(from, to, tz);
    let (Some(first), Some(last)) = (periods.first(), periods.last()) else {
        return Ok(Vec::new());
    };
    let read_to = last.end.as_second().min(over_by(now.as_second()));
    let all = instance_intervals(
        conn,
        (first.start.as_second(), read_to),
        instance.map(|i| i.as_str()),
    )?;
    let mut out = Vec::new();
    for (name, curve) in all {
        for period in &periods {
            let window = (
                period.start.as_second(),
                period.end.as_second().min(read_to),
            );
            if let Some(figures) = of_curve(p, &curve, window) {
                out.push(PercentileRow {
                    period: period.start,
                    period_end: period.end,
                    instance: name.clone(),
                    figures,
                });
            }
        }
    }
    Ok(out)
}
