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

/// The spelling [`Display`](std::fmt::Display) prints, read back: `hour`, `day`,
/// `week from monday`, `month from day 15` (what the agent's API answers).
impl std::str::FromStr for PeriodKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("{s:?} is not a period (hour, day, week from WEEKDAY, month from day N)");
        match s {
            "hour" => return Ok(PeriodKind::Hour),
            "day" => return Ok(PeriodKind::Day),
            _ => {}
        }
        if let Some(w) = s.strip_prefix("week from ") {
            let day = [
                Weekday::Monday,
                Weekday::Tuesday,
                Weekday::Wednesday,
                Weekday::Thursday,
                Weekday::Friday,
                Weekday::Saturday,
                Weekday::Sunday,
            ]
            .into_iter()
            .find(|d| format!("{d:?}").to_lowercase() == w)
            .ok_or_else(bad)?;
            return Ok(PeriodKind::Week(day));
        }
        let day: u8 = s
            .strip_prefix("month from day ")
            .and_then(|d| d.parse().ok())
            .filter(|d| (1..=31).contains(d))
            .ok_or_else(bad)?;
        Ok(PeriodKind::Month(day))
    }
}

impl serde::Serialize for PeriodKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for PeriodKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
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

/// The step of a usage report, an export or a chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    FiveMinutes,
    Hour,
    Day,
    Month,
}

impl std::str::FromStr for Granularity {
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

impl std::fmt::Display for Granularity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Granularity::FiveMinutes => "5m",
            Granularity::Hour => "hour",
            Granularity::Day => "day",
            Granularity::Month => "month",
        })
    }
}

impl Granularity {
    /// The start of the step that contains `at`, in `tz`.
    pub fn start_of(self, at: Timestamp, tz: &TimeZone) -> Timestamp {
        self.step(at, tz).map_or(at, |p| p.start)
    }

    /// The starts of every step from the one holding `from` until `to`.
    pub fn starts(self, from: Timestamp, to: Timestamp, tz: &TimeZone) -> Vec<Timestamp> {
        let mut out = Vec::new();
        let mut at = self.start_of(from, tz);
        while at < to {
            out.push(at);
            match self.step(at, tz) {
                Ok(p) if p.end > at => at = p.end,
                _ => break,
            }
        }
        out
    }

    /// Every step from the one holding `from` until `to`, whole (the first may start
    /// before `from`, the last end after `to`).
    pub fn periods(self, from: Timestamp, to: Timestamp, tz: &TimeZone) -> Vec<Period> {
        let mut out = Vec::new();
        let mut at = self.start_of(from, tz);
        while at < to {
            match self.step(at, tz) {
                Ok(p) if p.end > at => {
                    out.push(p);
                    at = p.end;
                }
                _ => break,
            }
        }
        out
    }

    /// The step holding `at`: 5 minutes and hours as the ledger's UTC-aligned buckets
    /// are cut (so in zones offset by :30 or :45 an hour that straddles local midnight
    /// counts in the day it starts in), days and months as [`period_containing`] cuts
    /// them (local midnight, DST included; months from the 1st).
    fn step(self, at: Timestamp, tz: &TimeZone) -> Result<Period, PeriodError> {
        let fixed = |len: i64| -> Result<Period, PeriodError> {
            let start =
                Timestamp::from_second(at.as_second().div_euclid(len) * len).map_err(err)?;
            let end = Timestamp::from_second(start.as_second() + len).map_err(err)?;
            Ok(Period { start, end })
        };
        match self {
            Granularity::FiveMinutes => fixed(300),
            Granularity::Hour => fixed(3600),
            Granularity::Day => period_containing(PeriodKind::Day, at, tz),
            Granularity::Month => period_containing(PeriodKind::Month(1), at, tz),
        }
    }
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

    #[test]
    fn period_kinds_read_back_what_they_print() {
        let table = [
            PeriodKind::Hour,
            PeriodKind::Day,
            PeriodKind::Week(Weekday::Monday),
            PeriodKind::Week(Weekday::Sunday),
            PeriodKind::Month(1),
            PeriodKind::Month(31),
        ];
        for k in table {
            assert_eq!(k.to_string().parse::<PeriodKind>(), Ok(k), "{k}");
        }
        for bad in [
            "week",
            "week from funday",
            "month from day 0",
            "month from day 32",
            "Day",
        ] {
            assert!(bad.parse::<PeriodKind>().is_err(), "{bad}");
        }
        assert_eq!(
            serde_json::to_string(&PeriodKind::Month(15)).unwrap(),
            "\"month from day 15\""
        );
    }

    // Granularity: the steps of reports, exports and charts.

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
            assert_eq!(by.start_of(ts(at), tz), ts(want), "{at} by {by}");
        }
    }

    #[test]
    fn granularity_parses_or_says_what_it_takes() {
        assert_eq!("day".parse::<Granularity>(), Ok(Granularity::Day));
        let e = "week".parse::<Granularity>().unwrap_err();
        assert!(e.contains("5m, hour, day or month"), "{e}");
    }

    #[test]
    fn periods_step_by_the_zones_calendar() {
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        // Across the autumn change: 2026-10-25 is 25 hours long in Berlin.
        let days = Granularity::Day.starts(
            ts("2026-10-24T10:00:00Z"),
            ts("2026-10-27T00:00:00Z"),
            &berlin,
        );
        assert_eq!(
            days,
            [
                ts("2026-10-23T22:00:00Z"),
                ts("2026-10-24T22:00:00Z"),
                ts("2026-10-25T23:00:00Z"),
                ts("2026-10-26T23:00:00Z"),
            ]
        );
        let months = Granularity::Month.starts(
            ts("2026-01-15T00:00:00Z"),
            ts("2026-04-01T00:00:00Z"),
            &TimeZone::UTC,
        );
        assert_eq!(months.len(), 3);
        assert_eq!(months[1], ts("2026-02-01T00:00:00Z"));
        let fives = Granularity::FiveMinutes.starts(
            ts("2026-01-01T00:02:00Z"),
            ts("2026-01-01T00:30:00Z"),
            &TimeZone::UTC,
        );
        assert_eq!(fives.len(), 6);
    }
}
