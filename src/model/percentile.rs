//! Percentile billing: the rate that transit, dedicated servers and many VPS plans bill.
//!
//! The industry's rule, written once for the ledger and the store alike: a period's
//! 5-minute intervals become rates (bytes × 8 / 300 s), sorted ascending; the bill is the
//! value at rank ⌈p/100 · n⌉ (1-based), so for p = 95 the top 5 % are discarded. Rates are
//! read per direction, as the larger of the two per interval (`max`) or as their sum
//! (`aggregate`).
//!
//! An interval the agent was down for is not a zero: the bytes it counted on its return
//! were spread over the gap and flagged estimated, so their timing is a guess. Those
//! intervals are left out and counted, so an outage can neither lower nor raise a bill.
//! An interval with no record at all moved nothing: sluice writes no row for an idle
//! interval, and whatever a gap hid would have been spread over it. The window is the
//! whole period (see [`of_curve`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::units::Rate;

/// The length of one interval, seconds. Intervals are aligned to UTC (the epoch), so a
/// civil month in any zone whose offset is a multiple of 5 minutes holds whole intervals.
pub const INTERVAL_SECS: i64 = 300;

/// One instance's bytes in one 5-minute interval: every interface, every host, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Interval {
    pub upload: u64,
    pub download: u64,
    /// Some of it was spread over a sampling gap: its timing is a guess.
    pub estimated: bool,
}

impl Interval {
    /// Add `other`'s bytes (another interface's, another host's) to this interval's.
    pub fn add(&mut self, other: &Interval) {
        self.upload = self.upload.saturating_add(other.upload);
        self.download = self.download.saturating_add(other.download);
        self.estimated |= other.estimated;
    }
}

/// Where the intervals over by `now` end (seconds): the start of the open one, which
/// would read low if it were ranked.
pub fn over_by(now_s: i64) -> i64 {
    now_s.div_euclid(INTERVAL_SECS) * INTERVAL_SECS
}

/// Which percentile: 1 to 100 (100 is the peak).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Percentile(u8);

impl Percentile {
    pub const P95: Percentile = Percentile(95);

    pub fn new(p: u8) -> Result<Percentile, String> {
        if (1..=100).contains(&p) {
            Ok(Percentile(p))
        } else {
            Err(format!("a percentile is 1 to 100, got {p}"))
        }
    }

    pub fn get(self) -> u8 {
        self.0
    }

    /// The 1-based rank of the billed value among `n` sorted ones: ⌈p·n/100⌉, at least 1.
    pub fn rank(self, n: usize) -> usize {
        (usize::from(self.0) * n).div_ceil(100).max(1)
    }

    /// The value at [`Percentile::rank`] of `values` (reordered in place, linear time);
    /// `None` when there are none.
    pub fn of(self, values: &mut [u64]) -> Option<u64> {
        if values.is_empty() {
            return None;
        }
        let at = self.rank(values.len()) - 1;
        Some(*values.select_nth_unstable(at).1)
    }
}

impl FromStr for Percentile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let p: u8 = s
            .trim()
            .parse()
            .map_err(|_| format!("a percentile is a whole number 1 to 100, got {s:?}"))?;
        Percentile::new(p)
    }
}

impl<'de> Deserialize<'de> for Percentile {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Percentile::new(u8::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Percentile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// How the two directions make one billed rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Upload,
    Download,
    /// The larger of upload and download in each interval.
    Max,
    /// Upload plus download in each interval.
    Aggregate,
}

impl Direction {
    pub const ALL: [Direction; 4] = [
        Direction::Upload,
        Direction::Download,
        Direction::Max,
        Direction::Aggregate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Upload => "upload",
            Direction::Download => "download",
            Direction::Max => "max",
            Direction::Aggregate => "aggregate",
        }
    }

    /// This direction's bytes in one interval.
    pub fn bytes(self, i: &Interval) -> u64 {
        match self {
            Direction::Upload => i.upload,
            Direction::Download => i.download,
            Direction::Max => i.upload.max(i.download),
            Direction::Aggregate => i.upload.saturating_add(i.download),
        }
    }
}

impl FromStr for Direction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Direction::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| format!("must be upload, download, max or aggregate, got {s:?}"))
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The average rate of one interval's bytes, rounded down to the bit per second.
pub fn interval_rate(bytes: u64) -> Rate {
    let bps = u128::from(bytes) * 8 / INTERVAL_SECS as u128;
    Rate::from_bits_per_sec(u64::try_from(bps).unwrap_or(u64::MAX))
}

/// A period's percentiles, and how much data they stand on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Percentiles {
    pub percentile: Percentile,
    /// Intervals ranked: measured ones, idle ones (zero) included.
    pub samples: u64,
    /// Intervals left out because the agent was down (their bytes were spread over the
    /// gap): counted in volume, not ranked.
    pub estimated: u64,
    /// Bits per second (a number in JSON, `null` when nothing was ranked).
    #[serde(rename = "upload_bps", serialize_with = "bps")]
    pub upload: Option<Rate>,
    #[serde(rename = "download_bps", serialize_with = "bps")]
    pub download: Option<Rate>,
    #[serde(rename = "max_bps", serialize_with = "bps")]
    pub max: Option<Rate>,
    #[serde(rename = "aggregate_bps", serialize_with = "bps")]
    pub aggregate: Option<Rate>,
}

/// A billed rate as a plain number of bits per second: what billing code reads.
fn bps<S: serde::Serializer>(r: &Option<Rate>, s: S) -> Result<S::Ok, S::Error> {
    r.map(Rate::bits_per_sec).serialize(s)
}

impl Percentiles {
    /// The percentiles of a window of `window` intervals, of which `recorded` (one per
    /// interval, any order) have a record: the others are idle, zero.
    pub fn of(p: Percentile, recorded: &[Interval], window: u64) -> Percentiles {
        let measured: Vec<&Interval> = recorded.iter().filter(|i| !i.estimated).collect();
        let estimated = (recorded.len() - measured.len()) as u64;
        let idle = usize::try_from(window.saturating_sub(recorded.len() as u64)).unwrap_or(0);
        let mut scratch = Vec::with_capacity(measured.len() + idle);
        let mut read = |d: Direction| {
            scratch.clear();
            scratch.extend(measured.iter().map(|i| d.bytes(i)));
            scratch.resize(measured.len() + idle, 0);
            p.of(&mut scratch).map(interval_rate)
        };
        Percentiles {
            percentile: p,
            samples: (measured.len() + idle) as u64,
            estimated,
            upload: read(Direction::Upload),
            download: read(Direction::Download),
            max: read(Direction::Max),
            aggregate: read(Direction::Aggregate),
        }
    }

    /// The billed rate in `direction`.
    pub fn rate(&self, direction: Direction) -> Option<Rate> {
        match direction {
            Direction::Upload => self.upload,
            Direction::Download => self.download,
            Direction::Max => self.max,
            Direction::Aggregate => self.aggregate,
        }
    }
}

/// The percentiles of one curve (interval starts in seconds, oldest first, one entry per
/// interval) over the window [start, end); `None` when the window is empty or the curve
/// has no interval in it.
///
/// The window is the whole period, also for an instance first seen part-way through it:
/// its earlier intervals count as idle. That can only lower a percentile, never raise
/// it (an instance idle for the first weeks is not billed on its busy days alone), and
/// it is the same whether or not older data was read; prorating a new instance is the
/// panel's business.
pub fn of_curve(
    p: Percentile,
    curve: &[(i64, Interval)],
    (start, end): (i64, i64),
) -> Option<Percentiles> {
    if start >= end {
        return None;
    }
    let lo = curve.partition_point(|(b, _)| *b < start);
    let hi = curve.partition_point(|(b, _)| *b < end);
    if lo == hi {
        return None;
    }
    let inside: Vec<Interval> = curve[lo..hi].iter().map(|(_, i)| *i).collect();
    Some(Percentiles::of(p, &inside, intervals_in(start, end)))
}

/// The intervals [first, end) that a window [from, to) holds: an interval counts when it
/// starts inside the window (seconds since the epoch; `from` rounded up to an interval).
pub fn interval_starts(from: i64, to: i64) -> std::ops::Range<i64> {
    let first = from.div_euclid(INTERVAL_SECS) * INTERVAL_SECS;
    let first = if first < from {
        first + INTERVAL_SECS
    } else {
        first
    };
    first..to.max(first)
}

/// How many intervals start in [from, to).
pub fn intervals_in(from: i64, to: i64) -> u64 {
    let r = interval_starts(from, to);
    ((r.end - r.start + INTERVAL_SECS - 1) / INTERVAL_SECS) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(upload: u64, download: u64) -> Interval {
        Interval {
            upload,
            download,
            estimated: false,
        }
    }

    #[test]
    fn the_rank_discards_the_top_share() {
        // (p, n, rank): ⌈p·n/100⌉, never 0.
        for (p, n, rank) in [
            (95, 100, 95),
            (95, 8928, 8482), // a 31-day month: 8,928 intervals, the top 446 discarded
            (95, 8064, 7661), // a 28-day month
            (95, 20, 19),
            (95, 19, 19), // under 20 samples, nothing is discarded but the top one
            (95, 1, 1),
            (95, 0, 1),
            (100, 10, 10),
            (1, 10, 1),
            (50, 3, 2),
        ] {
            assert_eq!(Percentile::new(p).unwrap().rank(n), rank, "p={p} n={n}");
        }
    }

    #[test]
    fn the_value_is_read_at_the_rank_whatever_the_order() {
        let mut v: Vec<u64> = (1..=100).rev().collect();
        assert_eq!(Percentile::P95.of(&mut v), Some(95));
        let mut v: Vec<u64> = vec![7, 7, 7, 1];
        assert_eq!(Percentile::P95.of(&mut v), Some(7));
        assert_eq!(Percentile::P95.of(&mut []), None);
        // Fewer than 20 samples: rank ⌈0.95·5⌉ = 5, the peak itself.
        let mut v = vec![10, 50, 20, 40, 30];
        assert_eq!(Percentile::P95.of(&mut v), Some(50));
    }

    #[test]
    fn rates_are_bits_per_second_rounded_down() {
        for (bytes, bps) in [
            (0, 0),
            (37, 0), // 296 bits over 300 s
            (38, 1), // 304 bits
            (3_750_000, 100_000),
            (u64::MAX, 491_913_175_298_921_376), // floor((2^64 - 1) · 8 / 300)
        ] {
            assert_eq!(interval_rate(bytes).bits_per_sec(), bps, "{bytes} bytes");
        }
    }

    #[test]
    fn each_direction_is_read_per_interval() {
        // Upload peaks when download is low: max and aggregate are per-interval, not the
        // max or sum of the two percentiles.
        let intervals = [iv(3_750_000, 0), iv(0, 3_750_000), iv(1_875_000, 1_875_000)];
        let p = Percentiles::of(Percentile::new(50).unwrap(), &intervals, 3);
        assert_eq!(p.upload, Some(Rate::from_bits_per_sec(50_000)));
        assert_eq!(p.download, Some(Rate::from_bits_per_sec(50_000)));
        assert_eq!(p.max, Some(Rate::from_bits_per_sec(100_000)));
        assert_eq!(p.aggregate, Some(Rate::from_bits_per_sec(100_000)));
        assert_eq!((p.samples, p.estimated), (3, 0));
    }

    #[test]
    fn estimated_intervals_are_left_out_and_idle_ones_are_zeros() {
        // 10 recorded intervals of 100..1000 bit/s, the 4th estimated, in a day's window.
        let mut recorded: Vec<Interval> = (1..=10).map(|i| iv(i * 3750, 0)).collect();
        recorded[3].estimated = true;
        let p = Percentiles::of(Percentile::P95, &recorded, 288);
        assert_eq!((p.samples, p.estimated), (287, 1));
        // 278 idle zeros + 9 measured: rank ⌈0.95·287⌉ = 273 is a zero.
        assert_eq!(p.upload, Some(Rate::ZERO));
        // In a window of exactly the recorded intervals the top of the 9 is read
        // (rank ⌈0.95·9⌉ = 9): 1000 bit/s, the estimated 400 never ranked.
        let p = Percentiles::of(Percentile::P95, &recorded, 10);
        assert_eq!((p.samples, p.estimated), (9, 1));
        assert_eq!(p.upload, Some(Rate::from_bits_per_sec(1000)));
        // Only estimated: nothing ranked.
        let p = Percentiles::of(Percentile::P95, &recorded[3..4], 1);
        assert_eq!((p.samples, p.upload), (0, None));
    }

    #[test]
    fn windows_count_the_intervals_that_start_in_them() {
        for (from, to, n) in [
            (0, 300, 1),
            (0, 301, 2),
            (1, 300, 0),
            (1, 601, 2),
            (1, 600, 1),
            (-300, 0, 1),
            (600, 600, 0),
            (900, 600, 0),
            (0, 31 * 86_400, 8928),
            // February 2027, 28 days: 8,064 intervals (rank 7,661 is billed).
            (1_801_440_000, 1_803_859_200, 8064),
            // India: a civil month starting at 18:30 UTC still holds whole intervals.
            (1_764_527_400, 1_767_205_800, 8928),
        ] {
            assert_eq!(intervals_in(from, to), n, "[{from}, {to})");
        }
    }

    #[test]
    fn names_are_checked() {
        assert_eq!("max".parse::<Direction>(), Ok(Direction::Max));
        assert!(
            "both"
                .parse::<Direction>()
                .unwrap_err()
                .contains("aggregate")
        );
        assert_eq!("95".parse::<Percentile>(), Ok(Percentile::P95));
        assert!("0".parse::<Percentile>().unwrap_err().contains("1 to 100"));
        assert!("95.5".parse::<Percentile>().unwrap_err().contains("whole"));
    }
}
