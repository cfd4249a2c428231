//! Quota periods on the calendar: where the hour, day, week or billing month that
//! contains an instant starts and ends, in a time zone.
//!
//! Periods are civil (people's calendars), so their length in seconds varies: a day is
//! 23 or 25 hours across a DST change, a month 28..31 days, and a billing day past the
//! month's end is clamped to its last day (reset day 31 → 28 or 29 February, 30 April).
//! Hours are the zone's hours: in a +05:45 zone they start at :15 UTC. When a local
//! midnight does not exist (a DST gap at 00:00), the period starts at the first instant
//! after it (jiff's `start_of_day`).

use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, ZonedDateTime};

/// The calendar unit a rule counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeriodKind {
    Hour,
    Day,
    /// Weeks starting on this weekday.
    Week(Weekday),
    /// Months starting on this day of the month (1..=31, clamped to the month's length).
    Month(u8),
}

impl std::fmt::Display for PeriodKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeriodKind::Hour => f.write_str("hour"),
            PeriodKind::Day => f.write_str("day"),
            PeriodKind::Week(w) => write!(f, "week from {}", format!("{w:?}").to_lowercase()),
            PeriodKind::Month(d) => write!(f, "month from day {d}"),
        }
    }
}

/// [start, end) of one period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub start: Timestamp,
    pub end: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("period outside the calendar's range: {0}")]
pub struct PeriodError(String);

fn err(e: jiff::Error) -> PeriodError {
    PeriodError(e.to_string())
}

/// The period of `kind` containing `at`, in `tz`.
pub fn period_containing(
    kind: PeriodKind,
    at: Timestamp,
    tz: &TimeZone,
) -> Result<Period, PeriodError> {
    let z = at.to_zoned_datetime(tz.clone());
    let (start, end) = match kind {
        PeriodKind::Hour => {
            let start = z
                .with()
                .minute(0)
                .second(0)
                .subsec_nanosecond(0)
                .build()
                .map_err(err)?;
            // In a repeated hour (DST fold) the floor may land in the earlier occurrence;
            // an hour is an hour of elapsed time from its start.
            let start = if start.timestamp() > at {
                start.checked_sub(1.hour()).map_err(err)?
            } else {
                start
            };
            let end = start.checked_add(1.hour()).map_err(err)?;
            (start.timestamp(), end.timestamp())
        }
        PeriodKind::Day => {
            let d = z.date();
            (midnight(d, tz)?, midnight(d.tomorrow().map_err(err)?, tz)?)
        }
        PeriodKind::Week(first) => {
            let d = z.date();
            let back = i64::from(d.weekday().since(first));
            let start = d.checked_sub(back.days()).map_err(err)?;
            let end = start.checked_add(7.days()).map_err(err)?;
            (midnight(start, tz)?, midnight(end, tz)?)
        }
        PeriodKind::Month(day) => {
            let d = z.date();
            let this = billing_day(d.year(), d.month(), day)?;
            let start = if d >= this {
                this
            } else {
                let prev = d.first_of_month().checked_sub(1.day()).map_err(err)?;
                billing_day(prev.year(), prev.month(), day)?
            };
            let next_month = start.first_of_month().checked_add(1.month()).map_err(err)?;
            let end = billing_day(next_month.year(), next_month.month(), day)?;
            (midnight(start, tz)?, midnight(end, tz)?)
        }
    };
    Ok(Period { start, end })
}

/// Day `day` of the month, clamped to its last day.
fn billing_day(year: i16, month: i8, day: u8) -> Result<Date, PeriodError> {
    let first = Date::new(year, month, 1).map_err(err)?;
    let clamped = (day.max(1) as i8).min(first.days_in_month());
    Date::new(year, month, clamped).map_err(err)
}

fn midnight(d: Date, tz: &TimeZone) -> Result<Timestamp, PeriodError> {
    let z: ZonedDateTime = d.to_zoned_datetime(tz.clone()).map_err(err)?;
    Ok(z.start_of_day().map_err(err)?.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn tz(name: &str) -> TimeZone {
        TimeZone::get(name).unwrap()
    }

    #[test]
    fn periods_follow_the_calendar() {
        use PeriodKind::*;
        // (what, kind, zone, instant, start, end)
        let table = [
            (
                "plain UTC day",
                Day,
                "UTC",
                "2026-11-23T10:00:00Z",
                "2026-11-23T00:00:00Z",
                "2026-11-24T00:00:00Z",
            ),
            (
                "Berlin day in winter",
                Day,
                "Europe/Berlin",
                "2026-11-23T10:00:00Z",
                "2026-11-22T23:00:00Z",
                "2026-11-23T23:00:00Z",
            ),
            (
                "spring forward: a 23-hour day",
                Day,
                "Europe/Berlin",
                "2026-03-29T12:00:00Z",
                "2026-03-28T23:00:00Z",
                "2026-03-29T22:00:00Z",
            ),
            (
                "fall back: a 25-hour day",
                Day,
                "Europe/Berlin",
                "2026-10-25T12:00:00Z",
                "2026-10-24T22:00:00Z",
                "2026-10-25T23:00:00Z",
            ),
            (
                "New York spring forward",
                Day,
                "America/New_York",
                "2026-03-08T12:00:00Z",
                "2026-03-08T05:00:00Z",
                "2026-03-09T04:00:00Z",
            ),
            (
                "+05:45 hour starts at :15 UTC",
                Hour,
                "Asia/Kathmandu",
                "2026-11-23T10:20:00Z",
                "2026-11-23T10:15:00Z",
                "2026-11-23T11:15:00Z",
            ),
            (
                "+05:30 hour starts at :30 UTC",
                Hour,
                "Asia/Kolkata",
                "2026-11-23T10:20:00Z",
                "2026-11-23T09:30:00Z",
                "2026-11-23T10:30:00Z",
            ),
            (
                "+05:30 day",
                Day,
                "Asia/Kolkata",
                "2026-11-23T19:00:00Z",
                "2026-11-23T18:30:00Z",
                "2026-11-24T18:30:00Z",
            ),
            (
                "the repeated hour of a fall-back",
                Hour,
                "Europe/Berlin",
                "2026-10-25T01:30:00Z",
                "2026-10-25T01:00:00Z",
                "2026-10-25T02:00:00Z",
            ),
            (
                "week from Monday (2026-11-23 is a Monday)",
                Week(Weekday::Monday),
                "UTC",
                "2026-11-25T08:00:00Z",
                "2026-11-23T00:00:00Z",
                "2026-11-30T00:00:00Z",
            ),
            (
                "week from Sunday",
                Week(Weekday::Sunday),
                "UTC",
                "2026-11-25T08:00:00Z",
                "2026-11-22T00:00:00Z",
                "2026-11-29T00:00:00Z",
            ),
            (
                "on the week's first day",
                Week(Weekday::Monday),
                "UTC",
                "2026-11-23T00:00:00Z",
                "2026-11-23T00:00:00Z",
                "2026-11-30T00:00:00Z",
            ),
            (
                "calendar month",
                Month(1),
                "UTC",
                "2026-11-23T08:00:00Z",
                "2026-11-01T00:00:00Z",
                "2026-12-01T00:00:00Z",
            ),
            (
                "billing day 15, before it",
                Month(15),
                "UTC",
                "2026-11-10T08:00:00Z",
                "2026-10-15T00:00:00Z",
                "2026-11-15T00:00:00Z",
            ),
            (
                "billing day 15, on it",
                Month(15),
                "UTC",
                "2026-11-15T00:00:00Z",
                "2026-11-15T00:00:00Z",
                "2026-12-15T00:00:00Z",
            ),
            (
                "billing day 31 in February (2026)",
                Month(31),
                "UTC",
                "2026-02-28T12:00:00Z",
                "2026-02-28T00:00:00Z",
                "2026-03-31T00:00:00Z",
            ),
            (
                "billing day 31 before February's end",
                Month(31),
                "UTC",
                "2026-02-27T12:00:00Z",
                "2026-01-31T00:00:00Z",
                "2026-02-28T00:00:00Z",
            ),
            (
                "billing day 30 in a leap February",
                Month(30),
                "UTC",
                "2028-02-29T12:00:00Z",
                "2028-02-29T00:00:00Z",
                "2028-03-30T00:00:00Z",
            ),
            (
                "billing day 29 in a common February",
                Month(29),
                "UTC",
                "2026-03-01T12:00:00Z",
                "2026-02-28T00:00:00Z",
                "2026-03-29T00:00:00Z",
            ),
            (
                "billing day 31 into April",
                Month(31),
                "UTC",
                "2026-04-30T12:00:00Z",
                "2026-04-30T00:00:00Z",
                "2026-05-31T00:00:00Z",
            ),
            (
                "month across a DST change",
                Month(1),
                "Europe/Berlin",
                "2026-03-15T12:00:00Z",
                "2026-02-28T23:00:00Z",
                "2026-03-31T22:00:00Z",
            ),
        ];
        for (what, kind, zone, at, start, end) in table {
            let p = period_containing(kind, ts(at), &tz(zone)).unwrap();
            assert_eq!((p.start, p.end), (ts(start), ts(end)), "{what}");
            assert!(
                p.start <= ts(at) && ts(at) < p.end,
                "{what}: contains the instant"
            );
        }
    }

    #[test]
    fn consecutive_periods_tile_time() {
        // The end of one period is the start of the next, across a year of billing months
        // on day 31 and of days across both DST changes.
        let berlin = tz("Europe/Berlin");
        for kind in [
            PeriodKind::Month(31),
            PeriodKind::Day,
            PeriodKind::Week(Weekday::Monday),
        ] {
            let mut at = ts("2026-01-01T00:00:00Z");
            let stop = ts("2027-01-01T00:00:00Z");
            while at < stop {
                let p = period_containing(kind, at, &berlin).unwrap();
                let next = period_containing(kind, p.end, &berlin).unwrap();
                assert_eq!(next.start, p.end, "{kind:?} at {at}");
                assert!(p.end > p.start);
                at = p.end;
            }
        }
    }
}
