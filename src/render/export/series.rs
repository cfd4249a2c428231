//! The numbers behind every export: each instance's traffic per period (gaps filled with
//! zeros so a chart's time axis is continuous), its totals, the quota rule that applies
//! and its count through the range, the penalty periods and the events of the range.

use std::collections::BTreeMap;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use rusqlite::Connection;
use serde::Serialize;

use crate::account::ledger::{EventRow, LedgerError, read_events};
use crate::account::usage::{UsageQuery, UsageRow, query};
use crate::config::{Config, Direction, RuleConfig};
use crate::model::calendar::Granularity;
use crate::model::calendar::{Period, period_containing};
use crate::model::event::LogKind;
use crate::model::ids::{IfName, InstanceId};
use crate::model::percentile::{Interval, Percentile, Percentiles, of_curve, over_by};

/// Which directions a chart shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Directions {
    Upload,
    Download,
    Both,
}

impl Directions {
    pub fn upload(self) -> bool {
        self != Directions::Download
    }
    pub fn download(self) -> bool {
        self != Directions::Upload
    }
}

/// What to export.
#[derive(Debug, Clone)]
pub struct Spec {
    /// `None`: every instance in the ledger for the range.
    pub instance: Option<InstanceId>,
    pub interface: Option<IfName>,
    pub by: Granularity,
    /// Periods starting in [from, to).
    pub from: Timestamp,
    pub to: Timestamp,
    pub tz: TimeZone,
    pub directions: Directions,
}

/// One period's traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Point {
    pub start: Timestamp,
    pub upload_bytes: u64,
    pub download_bytes: u64,
    /// Part of it was spread over a sampling gap (the agent was down).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub estimated: bool,
}

/// A quota rule over the range: its limit and its count at the end of each point,
/// restarting at each of the rule's period boundaries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuotaLine {
    pub rule: String,
    pub direction: String,
    pub limit_bytes: u64,
    /// The rule's count after each point (same length as the points).
    pub used_bytes: Vec<u64>,
}

/// A running penalty: [start, end) and the highest stage reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shade {
    pub start: Timestamp,
    pub end: Timestamp,
    pub stage: u64,
}

/// One instance (or, with an interface, one interface) over the range.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    pub instance: String,
    /// The hypervisor's name for it, shown beside the id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    pub upload_bytes: u64,
    pub download_bytes: u64,
    pub points: Vec<Point>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaLine>,
    pub penalties: Vec<Shade>,
    pub events: Vec<serde_json::Value>,
    /// With 5-minute points: the 95th percentiles of the range's intervals over by now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percentiles: Option<Percentiles>,
}

impl Series {
    /// The id, with the name beside it when there is one: `101 (web1)`.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => format!("{} ({n})", self.instance),
            None => self.instance.clone(),
        }
    }
    pub fn total(&self) -> u64 {
        self.upload_bytes + self.download_bytes
    }
}

/// Everything one export shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub generated_at: Timestamp,
    pub from: Timestamp,
    pub to: Timestamp,
    pub by: String,
    pub timezone: String,
    pub directions: Directions,
    pub upload_bytes: u64,
    pub download_bytes: u64,
    /// Biggest total first.
    pub series: Vec<Series>,
}

/// The penalty periods of one interface or instance from its `stage` events (oldest
/// first): an escalation from 0 opens one, a return to 0 closes it; one open at the
/// range's start or end is cut there.
pub fn shades(events: &[&EventRow], from: Timestamp, to: Timestamp) -> Vec<Shade> {
    let mut out = Vec::new();
    let mut open: Option<(Timestamp, u64)> = None;
    for e in events.iter().filter(|e| e.kind == LogKind::Stage) {
        let stage_from = e.body["from"].as_u64().unwrap_or(0);
        let stage_to = e.body["to"].as_u64().unwrap_or(0);
        match (open, stage_to) {
            (None, 0) if stage_from > 0 => out.push(Shade {
                start: from,
                end: e.at,
                stage: stage_from,
            }),
            (None, s) if s > 0 => open = Some((e.at, s)),
            (Some((start, top)), 0) => {
                out.push(Shade {
                    start,
                    end: e.at,
                    stage: top,
                });
                open = None;
            }
            (Some((start, top)), s) => open = Some((start, top.max(s))),
            _ => {}
        }
    }
    if let Some((start, stage)) = open {
        out.push(Shade {
            start,
            end: to,
            stage,
        });
    }
    out
}

/// The first enabled rule covering `instance`, or the named one.
fn rule_for<'a>(config: &'a Config, instance: &str, named: Option<&str>) -> Option<&'a RuleConfig> {
    let id = InstanceId::new(instance).ok()?;
    match named {
        Some(n) => config.rules.iter().find(|r| r.name.as_str() == n),
        None => config
            .rules
            .iter()
            .find(|r| r.enabled && r.covers(&id, config.tags(&id))),
    }
}

/// The rule's count after each point, restarting at its period boundaries (in the
/// rule's own time zone). Only meaningful when a point is no longer than the rule's
/// period; `None` otherwise.
fn quota_line(rule: &RuleConfig, by: Granularity, points: &[Point]) -> Option<QuotaLine> {
    let point_secs = match by {
        Granularity::FiveMinutes => 300,
        Granularity::Hour => 3600,
        Granularity::Day => 86_400,
        Granularity::Month => 28 * 86_400,
    };
    let mut used = Vec::with_capacity(points.len());
    let mut running = 0u64;
    let mut current: Option<Period> = None;
    for p in points {
        let period = period_containing(rule.period, p.start, &rule.timezone).ok()?;
        if period.end.duration_since(period.start).as_secs() < point_secs {
            return None;
        }
        if current.as_ref() != Some(&period) {
            running = 0;
            current = Some(period);
        }
        running += match rule.direction {
            Direction::Upload => p.upload_bytes,
            Direction::Download => p.download_bytes,
            Direction::Both => p.upload_bytes + p.download_bytes,
        };
        used.push(running);
    }
    Some(QuotaLine {
        rule: rule.name.to_string(),
        direction: rule.direction.to_string(),
        limit_bytes: rule.limit.get(),
        used_bytes: used,
    })
}

/// The 95th percentile of 5-minute points over [from, to), counting only intervals over
/// by `now` (the open one would read low); the points are the whole range, idle ones
/// zero, so the window is the range's.
pub fn points_percentile(
    points: &[Point],
    (from, to): (Timestamp, Timestamp),
    now: Timestamp,
) -> Option<Percentiles> {
    let curve: Vec<(i64, Interval)> = points
        .iter()
        .map(|p| {
            let interval = Interval {
                upload: p.upload_bytes,
                download: p.download_bytes,
                estimated: p.estimated,
            };
            (p.start.as_second(), interval)
        })
        .collect();
    let window = (
        from.as_second(),
        to.as_second().min(over_by(now.as_second())),
    );
    of_curve(Percentile::P95, &curve, window)
}

/// Read the ledger and build the report. `config` (when readable) gives each instance's
/// quota rule; `rule` names one to use instead of the first that covers the instance.
pub fn build(
    conn: &Connection,
    spec: &Spec,
    config: Option<&Config>,
    rule: Option<&str>,
    now: Timestamp,
) -> Result<Report, LedgerError> {
    let rows = query(
        conn,
        &UsageQuery {
            instance: spec.instance.clone(),
            interface: spec.interface.clone(),
            by: spec.by,
            from: spec.from,
            to: spec.to,
            tz: spec.tz.clone(),
        },
    )?;
    let starts = spec.by.starts(spec.from, spec.to, &spec.tz);
    let mut by_key: BTreeMap<(String, Option<String>), Vec<UsageRow>> = BTreeMap::new();
    for r in rows {
        by_key
            .entry((r.instance.clone(), r.interface.clone()))
            .or_default()
            .push(r);
    }
    if let Some(id) = &spec.instance
        && by_key.is_empty()
    {
        by_key.insert(
            (
                id.to_string(),
                spec.interface.as_ref().map(ToString::to_string),
            ),
            Vec::new(),
        );
    }
    let events = read_events(conn, Some(spec.from), None, 100_000)?;
    let mut series = Vec::new();
    for ((instance, interface), rows) in by_key {
        let mut at: BTreeMap<Timestamp, &UsageRow> = BTreeMap::new();
        for r in &rows {
            at.insert(r.period, r);
        }
        let points: Vec<Point> = starts
            .iter()
            .map(|s| match at.get(s) {
                Some(r) => Point {
                    start: *s,
                    upload_bytes: r.upload_bytes,
                    download_bytes: r.download_bytes,
                    estimated: r.estimated,
                },
                None => Point {
                    start: *s,
                    upload_bytes: 0,
                    download_bytes: 0,
                    estimated: false,
                },
            })
            .collect();
        let mine: Vec<&EventRow> = events
            .iter()
            .filter(|e| e.at < spec.to)
            .filter(|e| e.instance.as_ref().is_some_and(|i| i.as_str() == instance))
            .filter(|e| {
                interface
                    .as_deref()
                    .is_none_or(|i| e.body["interface"].as_str().is_none_or(|x| x == i))
            })
            .collect();
        let quota = config
            .and_then(|c| rule_for(c, &instance, rule))
            .and_then(|r| quota_line(r, spec.by, &points));
        // The name its newest event was written with (the caller may know a newer one).
        let name = mine
            .iter()
            .rev()
            .find_map(|e| e.body["instance_name"].as_str().map(str::to_owned));
        let percentiles = (spec.by == Granularity::FiveMinutes)
            .then(|| points_percentile(&points, (spec.from, spec.to), now))
            .flatten();
        series.push(Series {
            percentiles,
            name,
            upload_bytes: points.iter().map(|p| p.upload_bytes).sum(),
            download_bytes: points.iter().map(|p| p.download_bytes).sum(),
            penalties: shades(&mine, spec.from, spec.to.min(now)),
            events: mine.iter().map(|e| e.body.clone()).collect(),
            instance,
            interface,
            points,
            quota,
        });
    }
    series.sort_by(|a, b| b.total().cmp(&a.total()).then(a.instance.cmp(&b.instance)));
    Ok(Report {
        generated_at: now,
        from: spec.from,
        to: spec.to,
        by: spec.by.to_string(),
        timezone: spec.tz.iana_name().unwrap_or("UTC").to_owned(),
        directions: spec.directions,
        upload_bytes: series.iter().map(|s| s.upload_bytes).sum(),
        download_bytes: series.iter().map(|s| s.download_bytes).sum(),
        series,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn five_minute_points_give_the_ranges_percentile_so_far() {
        let point = |k: i64, up: u64| Point {
            start: Timestamp::from_second(1_800_000_000 + 300 * k).unwrap(),
            upload_bytes: up,
            download_bytes: 0,
            estimated: false,
        };
        // 40 points of 100..4000 kB: rank ⌈0.95·40⌉ = 38 → 3.8 MB / 300 s.
        let points: Vec<Point> = (0..40)
            .map(|k| point(k, (k as u64 + 1) * 100_000))
            .collect();
        let from = points[0].start;
        let to = Timestamp::from_second(1_800_000_000 + 300 * 40).unwrap();
        let p = points_percentile(&points, (from, to), to).unwrap();
        assert_eq!((p.samples, p.upload.unwrap().bits_per_sec()), (40, 101_333));
        // Half-way through the 21st interval only 20 are over: rank 19 → 1.9 MB.
        let now = Timestamp::from_second(1_800_000_000 + 300 * 20 + 150).unwrap();
        let p = points_percentile(&points, (from, to), now).unwrap();
        assert_eq!((p.samples, p.upload.unwrap().bits_per_sec()), (20, 50_666));
        assert_eq!(points_percentile(&points, (from, to), from), None);
    }

    #[test]
    fn penalties_open_and_close_on_stage_events_and_are_cut_at_the_range() {
        let ev = |at: &str, from: u64, to: u64| EventRow {
            at: ts(at),
            kind: LogKind::Stage,
            instance: None,
            body: serde_json::json!({"from": from, "to": to}),
        };
        let (from, to) = (ts("2026-11-20T00:00:00Z"), ts("2026-11-21T00:00:00Z"));
        let shade = |a: &str, b: &str, stage| Shade {
            start: ts(a),
            end: ts(b),
            stage,
        };
        // (events, shades)
        let table = [
            (
                vec![
                    ev("2026-11-20T09:00:00Z", 0, 1),
                    ev("2026-11-20T11:00:00Z", 1, 2),
                    ev("2026-11-20T12:30:00Z", 2, 0),
                ],
                vec![shade("2026-11-20T09:00:00Z", "2026-11-20T12:30:00Z", 2)],
            ),
            // Running when the range starts; still running when it ends.
            (
                vec![
                    ev("2026-11-20T01:00:00Z", 1, 0),
                    ev("2026-11-20T22:00:00Z", 0, 1),
                ],
                vec![
                    shade("2026-11-20T00:00:00Z", "2026-11-20T01:00:00Z", 1),
                    shade("2026-11-20T22:00:00Z", "2026-11-21T00:00:00Z", 1),
                ],
            ),
            (Vec::new(), Vec::new()),
        ];
        for (events, want) in table {
            let refs: Vec<&EventRow> = events.iter().collect();
            assert_eq!(shades(&refs, from, to), want);
        }
    }
}
