//! `sluice events`: the event log in the ledger — stage changes, quota thresholds,
//! exceeds and restores, hooks, links, enforcement failures — oldest first.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::ConfigArg;
use super::usage::{ledger_path, parse_when};
use crate::account::ledger::{EventRow, open_read_only, read_events};
use crate::model::ids::InstanceId;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only events at or after this: a duration back from now (1h, 7d), a date, a local
    /// time or an RFC 3339 instant; default: the last 24 hours
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Only this instance's events
    #[arg(long, value_name = "ID", value_parser = |s: &str| InstanceId::new(s))]
    pub instance: Option<InstanceId>,
    /// At most this many (the newest)
    #[arg(long, default_value_t = 1000)]
    pub limit: usize,
    /// One JSON object per line, as webhooks receive them
    #[arg(long)]
    pub json: bool,
    /// Read the ledger from this directory instead of the config's agent.data_dir
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub config: ConfigArg,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let now = Timestamp::now();
    let since = match &args.since {
        None => now - jiff::SignedDuration::from_hours(24),
        Some(s) => parse_since(s, now).with_context(|| format!("--since {s:?}"))?,
    };
    let path = ledger_path(args.data_dir, &args.config)?;
    let conn = open_read_only(&path)?;
    let rows: Vec<EventRow> = read_events(&conn, Some(since), args.instance.as_ref(), args.limit)?;
    if args.json {
        for e in &rows {
            println!("{}", e.body);
        }
    } else {
        print!("{}", render(&rows, &TimeZone::system()));
    }
    Ok(ExitCode::SUCCESS)
}

/// "1h", "7d" back from `now`, or what `usage --from` takes.
fn parse_since(s: &str, now: Timestamp) -> anyhow::Result<Timestamp> {
    if let Ok(d) = crate::model::units::parse_duration(s) {
        let d = jiff::SignedDuration::try_from(d)?;
        return Ok(now.checked_sub(d)?);
    }
    parse_when(s, &TimeZone::system())
}

/// One line per event: local time, kind, instance, then the rest of its fields.
pub fn render(rows: &[EventRow], tz: &TimeZone) -> String {
    let mut out = String::new();
    for e in rows {
        let when =
            e.at.to_zoned_datetime(tz.clone())
                .strftime("%Y-%m-%d %H:%M:%S %Z");
        let mut rest = Vec::new();
        if let serde_json::Value::Object(m) = &e.body {
            for (k, v) in m {
                if matches!(k.as_str(), "time" | "event" | "instance") || v.is_null() {
                    continue;
                }
                let v = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                rest.push(format!("{k}={v}"));
            }
        }
        out.push_str(&format!(
            "{when}  {:<14} {:<10} {}\n",
            e.kind,
            e.instance.as_ref().map_or("-", |i| i.as_str()),
            rest.join(" ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn since_takes_durations_and_instants() {
        let now: Timestamp = "2026-11-24T12:00:00Z".parse().unwrap();
        let table = [
            ("1h", "2026-11-24T11:00:00Z"),
            ("7d", "2026-11-17T12:00:00Z"),
            ("2026-11-20T00:00:00Z", "2026-11-20T00:00:00Z"),
        ];
        for (s, want) in table {
            assert_eq!(parse_since(s, now).unwrap(), want.parse().unwrap(), "{s}");
        }
        assert!(parse_since("yesterday-ish", now).is_err());
    }

    #[test]
    fn lines_show_kind_instance_and_fields() {
        let at: Timestamp = "2026-11-24T12:00:00Z".parse().unwrap();
        let rows = vec![EventRow {
            at,
            kind: crate::model::event::LogKind::Rule,
            instance: Some(InstanceId::new("101").unwrap()),
            body: json!({"time": 1, "event": "rule", "rule": "monthly", "instance": "101", "state": "exceeded", "action": "rate_limit"}),
        }];
        assert_eq!(
            render(&rows, &TimeZone::UTC),
            "2026-11-24 12:00:00 UTC  rule           101        rule=monthly state=exceeded action=rate_limit\n"
        );
    }
}
