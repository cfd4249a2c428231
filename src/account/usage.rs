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
use super::ledger::{BucketFilter, BucketRow, LedgerError, bucket_rows};
use crate::model::calendar::Granularity;
use crate::model::ids::{IfName, InstanceId};

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
