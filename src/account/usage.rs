//! Reading the ledger back: totals per instance (or interface) and period.
//!
//! 5-minute periods come from the 5-minute buckets; hours, days and months from the
//! hourly ones, grouped in the asked time zone (days and months start at local midnight,
//! DST included). Buckets are aligned to UTC hours, so in zones offset by :30 or :45 an
//! hour that straddles local midnight counts in the day it starts in.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use rusqlite::Connection;
use serde::Serialize;

use super::ledger::packed::Table;
use super::ledger::{BucketFilter, BucketRow, LedgerError, bucket_rows};
use crate::model::ids::{IfName, InstanceId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    FiveMinutes,
    Hour,
    Day,
    Month,
}

impl FromStr for Granularity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "5m" => Ok(Granularity::FiveMinutes),
            "hour" => Ok(Granularity::Hour),
            "day" => Ok(Granularity::Day),
            "month" => Ok(Granularity::Month),
            other => Err(format!("must be 5m, hour, day or month, got {other:?}")),
        }
    }
}

impl fmt::Display for Granularity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Granularity::FiveMinutes => "5m",
            Granularity::Hour => "hour",
            Granularity::Day => "day",
            Granularity::Month => "month",
        })
    }
}

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
        let period = period_start(at, q.by, &q.tz);
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

/// The start of the period of granularity `by` that contains `at`, in `tz`.
pub fn period_start(at: Timestamp, by: Granularity, tz: &TimeZone) -> Timestamp {
    let floor =
        |len: i64| Timestamp::from_second(at.as_second().div_euclid(len) * len).unwrap_or(at);
    match by {
        Granularity::FiveMinutes => floor(300),
        Granularity::Hour => floor(3600),
        Granularity::Day | Granularity::Month => {
            let zoned = at.to_zoned_datetime(tz.clone());
            let day = if by == Granularity::Month {
                zoned.first_of_month().unwrap_or(zoned)
            } else {
                zoned
            };
            day.start_of_day().map(|z| z.timestamp()).unwrap_or(at)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn periods_start_at_local_midnight_and_the_first_of_the_month() {
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        let kolkata = TimeZone::get("Asia/Kolkata").unwrap();
        // (instant, granularity, zone, start)
        let table = [
            (
                "2026-11-23T10:07:00Z",
                Granularity::FiveMinutes,
                &berlin,
                "2026-11-23T10:05:00Z",
            ),
            (
                "2026-11-23T10:07:00Z",
                Granularity::Hour,
                &berlin,
                "2026-11-23T10:00:00Z",
            ),
            // 00:30 UTC is 01:30 in Berlin (CET): the Berlin day began 23:00 UTC.
            (
                "2026-11-23T00:30:00Z",
                Granularity::Day,
                &berlin,
                "2026-11-22T23:00:00Z",
            ),
            (
                "2026-11-23T00:30:00Z",
                Granularity::Month,
                &berlin,
                "2026-10-31T23:00:00Z",
            ),
            // Summer time: the day began 22:00 UTC.
            (
                "2026-07-01T12:00:00Z",
                Granularity::Day,
                &berlin,
                "2026-06-30T22:00:00Z",
            ),
            // The day of the spring-forward change is 23 hours long and still starts at 00:00.
            (
                "2026-03-29T20:00:00Z",
                Granularity::Day,
                &berlin,
                "2026-03-28T23:00:00Z",
            ),
            // +05:30: local midnight is 18:30 UTC.
            (
                "2026-11-23T19:00:00Z",
                Granularity::Day,
                &kolkata,
                "2026-11-23T18:30:00Z",
            ),
        ];
        for (at, by, tz, want) in table {
            assert_eq!(period_start(ts(at), by, tz), ts(want), "{at} by {by}");
        }
    }

    #[test]
    fn granularity_parses_or_says_what_it_takes() {
        assert_eq!("day".parse::<Granularity>(), Ok(Granularity::Day));
        let e = "week".parse::<Granularity>().unwrap_err();
        assert!(e.contains("5m, hour, day or month"), "{e}");
    }
}
