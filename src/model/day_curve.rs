//! One UTC day of an instance's 5-minute intervals packed into one value.
//!
//! A month's percentile for a whole fleet reads every interval of the month: as one row
//! per interval that is millions of rows, and handing each to the reader costs more than
//! ranking them. A closed day changes only when a late report arrives, so the store
//! keeps it as one value per instance and day (a month becomes 31 rows per instance),
//! and the reader decodes it in memory. The encoding is postcard's: integers as varints,
//! idle intervals left out.

use serde::{Deserialize, Serialize};

use super::percentile::{INTERVAL_SECS, Interval};

/// Seconds in a UTC day; a day's intervals start at `day + k × 300`, k < 288.
pub const DAY_SECS: i64 = 86_400;

/// Intervals in a day.
pub const DAY_SLOTS: i64 = DAY_SECS / INTERVAL_SECS;

/// A packed day that cannot be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a packed day of 5-minute traffic is unreadable: {0}")]
pub struct DayCurveError(String);

/// One interval of the day as stored: its slot (0..288) and its bytes.
#[derive(Debug, Serialize, Deserialize)]
struct Slot {
    slot: u16,
    upload: u64,
    download: u64,
    estimated: bool,
}

/// The UTC day holding `t` (seconds): its start.
pub fn day_of(t: i64) -> i64 {
    t.div_euclid(DAY_SECS) * DAY_SECS
}

/// Pack the intervals of the day starting at `day` (seconds, a UTC midnight): each
/// `(start, interval)` must start inside it, oldest first, once.
pub fn encode(day: i64, curve: &[(i64, Interval)]) -> Result<Vec<u8>, DayCurveError> {
    let mut slots = Vec::with_capacity(curve.len());
    let mut last = -1;
    for (start, i) in curve {
        let k = (start - day) / INTERVAL_SECS;
        if !(0..DAY_SLOTS).contains(&k) || (start - day) % INTERVAL_SECS != 0 || k <= last {
            return Err(DayCurveError(format!(
                "interval at {start} is not a new interval of the day starting at {day}"
            )));
        }
        last = k;
        slots.push(Slot {
            slot: k as u16,
            upload: i.upload,
            download: i.download,
            estimated: i.estimated,
        });
    }
    postcard::to_stdvec(&slots).map_err(|e| DayCurveError(e.to_string()))
}

/// The intervals packed for the day starting at `day`, oldest first.
pub fn decode(day: i64, bytes: &[u8]) -> Result<Vec<(i64, Interval)>, DayCurveError> {
    let slots: Vec<Slot> = postcard::from_bytes(bytes).map_err(|e| DayCurveError(e.to_string()))?;
    let mut out = Vec::with_capacity(slots.len());
    let mut last = -1;
    for s in slots {
        let k = i64::from(s.slot);
        if k >= DAY_SLOTS || k <= last {
            return Err(DayCurveError(format!(
                "slot {k} after slot {last} (a day has {DAY_SLOTS}, each once, in order)"
            )));
        }
        last = k;
        out.push((
            day + k * INTERVAL_SECS,
            Interval {
                upload: s.upload,
                download: s.download,
                estimated: s.estimated,
            },
        ));
    }
    Ok(out)
}

/// Merge `more` into `curve` (both oldest first, one entry per interval): an interval in
/// both is summed, as two hosts' shares are.
pub fn merge(curve: Vec<(i64, Interval)>, more: Vec<(i64, Interval)>) -> Vec<(i64, Interval)> {
    if more.is_empty() {
        return curve;
    }
    if curve.is_empty() {
        return more;
    }
    let mut out = Vec::with_capacity(curve.len() + more.len());
    let mut a = curve.into_iter().peekable();
    let mut b = more.into_iter().peekable();
    loop {
        let order = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => x.0.cmp(&y.0),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => return out,
        };
        match order {
            std::cmp::Ordering::Less => out.extend(a.next()),
            std::cmp::Ordering::Greater => out.extend(b.next()),
            std::cmp::Ordering::Equal => {
                if let (Some((t, mut i)), Some((_, j))) = (a.next(), b.next()) {
                    i.add(&j);
                    out.push((t, i));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(upload: u64, download: u64, estimated: bool) -> Interval {
        Interval {
            upload,
            download,
            estimated,
        }
    }

    const DAY: i64 = 1_798_761_600; // 2027-01-01T00:00:00Z

    #[test]
    fn a_day_reads_back_as_it_was_packed() {
        let full: Vec<(i64, Interval)> = (0..DAY_SLOTS)
            .map(|k| {
                (
                    DAY + k * 300,
                    iv(k as u64 * 1_000_003, u64::MAX - k as u64, k % 7 == 0),
                )
            })
            .collect();
        let sparse = vec![(DAY, iv(1, 0, false)), (DAY + 287 * 300, iv(0, 5, true))];
        for curve in [full, sparse, Vec::new()] {
            let bytes = encode(DAY, &curve).unwrap();
            assert_eq!(decode(DAY, &bytes).unwrap(), curve);
        }
        // Idle intervals cost nothing: two intervals are a handful of bytes.
        let two = encode(DAY, &[(DAY, iv(1, 0, false)), (DAY + 300, iv(1, 1, false))]).unwrap();
        assert!(two.len() <= 12, "{} bytes", two.len());
    }

    #[test]
    fn intervals_outside_the_day_or_out_of_order_are_refused() {
        let table = [
            vec![(DAY - 300, iv(1, 1, false))],
            vec![(DAY + DAY_SECS, iv(1, 1, false))],
            vec![(DAY + 150, iv(1, 1, false))],
            vec![(DAY + 600, iv(1, 1, false)), (DAY + 300, iv(1, 1, false))],
            vec![(DAY + 300, iv(1, 1, false)), (DAY + 300, iv(1, 1, false))],
        ];
        for curve in table {
            assert!(encode(DAY, &curve).is_err(), "{curve:?}");
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_curve() {
        let table: [&[u8]; 3] = [
            &[0xff, 0xff, 0xff],
            // One slot numbered 300: past the day's last.
            &[1, 0xac, 0x02, 1, 1, 0],
            // Two slots, the second before the first.
            &[2, 5, 1, 1, 0, 4, 1, 1, 0],
        ];
        for bytes in table {
            assert!(decode(DAY, bytes).is_err(), "{bytes:?}");
        }
    }

    #[test]
    fn merging_sums_the_intervals_both_hold() {
        let a = vec![
            (0, iv(1, 2, false)),
            (300, iv(3, 4, false)),
            (900, iv(1, 1, false)),
        ];
        let b = vec![(300, iv(10, 20, true)), (600, iv(5, 5, false))];
        assert_eq!(
            merge(a, b),
            vec![
                (0, iv(1, 2, false)),
                (300, iv(13, 24, true)),
                (600, iv(5, 5, false)),
                (900, iv(1, 1, false)),
            ]
        );
    }
}
