//! What an agent sends the store: its measured traffic, in numbered batches.
//!
//! Exactly once: each batch carries the agent's id and a sequence number the agent never
//! reuses (its spool persists it). The store records (agent, seq) in the same transaction
//! that adds the batch's bytes, so a batch retried after a lost reply is recognised and
//! not added twice.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::model::ids::{InstanceId, Label};
use crate::model::percentile::Interval;

/// `POST /v1/reports`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// The reporting agent: its host name (an agent token may report only for its host).
    pub agent: Label,
    pub batches: Vec<Batch>,
}

/// One tick's deltas (or several ticks', when the spool was merged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    pub seq: u64,
    pub samples: Vec<Sample>,
}

/// Bytes one instance moved in the tick that ended at `at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    pub at: Timestamp,
    pub instance: InstanceId,
    pub upload: u64,
    pub download: u64,
    /// Its bytes were spread over an outage of the agent (one sample per 5-minute
    /// interval of the gap): counted in volume, left out of percentiles.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub estimated: bool,
}

/// Which batches were added now and which had been before (both are acknowledged).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ingested {
    pub applied: Vec<u64>,
    pub duplicates: Vec<u64>,
    pub samples: u64,
}

/// A batch's sequence number must fit the databases' signed 64-bit integers.
pub const MAX_SEQ: u64 = i64::MAX as u64;

/// (upload, download) bytes per (instance, hour start in Unix ms), in key order.
pub type Hours<'a> = std::collections::BTreeMap<(&'a str, i64), (u64, u64)>;

/// The bytes of `batches` per instance and hour (starting in `tz`), and how many samples
/// that was: what both backends add to their hourly traffic.
pub fn hourly<'a>(
    batches: impl IntoIterator<Item = &'a Batch>,
    tz: &jiff::tz::TimeZone,
) -> (Hours<'a>, u64) {
    let mut hours = Hours::new();
    // Samples of one tick share their time: find its hour once.
    let mut hour_of: std::collections::HashMap<Timestamp, i64> = Default::default();
    let mut samples = 0;
    for b in batches {
        for s in &b.samples {
            let hour = *hour_of.entry(s.at).or_insert_with(|| {
                super::traffic::StorePeriod::Hour
                    .containing(s.at, tz)
                    .map_or(s.at.as_millisecond(), |(start, _)| start.as_millisecond())
            });
            let e = hours.entry((s.instance.as_str(), hour)).or_default();
            e.0 = e.0.saturating_add(s.upload);
            e.1 = e.1.saturating_add(s.download);
            samples += 1;
        }
    }
    (hours, samples)
}

/// Each instance's 5-minute intervals of a report, keyed by (instance, start in Unix ms).
pub type Intervals<'a> = std::collections::BTreeMap<(&'a str, i64), Interval>;

/// The bytes of `batches` per instance and UTC-aligned 5-minute interval (start in Unix
/// ms), placed by each sample's `at` as [`hourly`] places them; an interval is estimated
/// when any of its samples is.
pub fn five_minutes<'a>(batches: impl IntoIterator<Item = &'a Batch>) -> Intervals<'a> {
    let len = crate::model::percentile::INTERVAL_SECS * 1000;
    let mut out = Intervals::new();
    for s in batches.into_iter().flat_map(|b| &b.samples) {
        let bucket = s.at.as_millisecond().div_euclid(len) * len;
        out.entry((s.instance.as_str(), bucket))
            .or_default()
            .add(&Interval {
                upload: s.upload,
                download: s.download,
                estimated: s.estimated,
            });
    }
    out
}
