//! `sluice usage`: traffic totals per instance and period, from the ledger (works with
//! the agent running or not).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

use super::ConfigArg;
use crate::account::ledger::open_read_only;
use crate::account::usage::{PercentileRow, UsageQuery, UsageRow, percentiles, query};
use crate::config::{Config, DEFAULT_DATA_DIR, LEDGER_FILE};
use crate::model::calendar::Granularity;
use crate::model::human::{human_bytes, human_rate};
use crate::model::ids::{IfName, InstanceId};
use crate::model::percentile::Percentile;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this instance
    #[arg(long, value_name = "ID", value_parser = |s: &str| InstanceId::new(s))]
    pub instance: Option<InstanceId>,
    /// Only this interface (totals per interface)
    #[arg(long, value_name = "IF", value_parser = |s: &str| IfName::new(s))]
    pub interface: Option<IfName>,
    /// Period length: 5m, hour, day or month; default: day, or month with --percentile
    #[arg(long, value_parser = |s: &str| s.parse::<Granularity>())]
    pub by: Option<Granularity>,
    /// The Nth percentile of each period's 5-minute rates instead (95 is how transit is
    /// billed): upload, download, the larger of the two and their sum, in bit/s, with
    /// how many intervals were ranked and how many left out (the agent was down)
    #[arg(long, value_name = "N", value_parser = |s: &str| s.parse::<Percentile>(),
          conflicts_with_all = ["interface", "csv"])]
    pub percentile: Option<Percentile>,
    /// Start: a date (2026-11-01), a local time (2026-11-01T08:00) or an RFC 3339 instant;
    /// default: 2 hours, 1 day, 30 days or 11 months back, by --by
    #[arg(long, value_name = "WHEN")]
    pub from: Option<String>,
    /// End (exclusive), same forms; default: now
    #[arg(long, value_name = "WHEN")]
    pub to: Option<String>,
    /// Time zone for days, months and local times (IANA name); default: the host's, or
    /// the rule's with --rule
    #[arg(long, value_name = "ZONE")]
    pub tz: Option<String>,
    /// As a quota rule sees it: in the rule's time zone, only the instances it covers
    #[arg(long, value_name = "NAME")]
    pub rule: Option<String>,
    /// Print JSON
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print CSV
    #[arg(long)]
    pub csv: bool,
    /// Read the ledger from this directory instead of the config's agent.data_dir
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Each quota rule's count in its current period instead, as the running agent
    /// holds it: limit, used (with what other hosts counted), overage, the period
    #[arg(long, conflicts_with_all = ["csv", "from", "to", "interface"])]
    pub quotas: bool,
    /// With --quotas: read the agent's state from this directory instead of the
    /// config's agent.state_dir
    #[arg(long, value_name = "DIR", requires = "quotas")]
    pub state_dir: Option<PathBuf>,
    #[command(flatten)]
    pub config: ConfigArg,
}

/// One rule's count as `sluice usage --quotas` shows it.
#[derive(Debug, serde::Serialize, PartialEq, Eq)]
pub struct QuotaLine {
    pub rule: String,
    pub instance: String,
    pub start: Timestamp,
    pub end: Timestamp,
    pub limit: u64,
    pub used: u64,
    /// Of `used`, what other hosts counted.
    pub elsewhere: u64,
    pub overage: u64,
    pub exceeded: bool,
}

/// The quota counts of the agent's state file, filtered as asked.
pub fn quota_lines(
    quotas: &[crate::state::QuotaRecord],
    instance: Option<&InstanceId>,
    rule: Option<&str>,
) -> Vec<QuotaLine> {
    quotas
        .iter()
        .filter(|q| instance.is_none_or(|i| &q.instance == i))
        .filter(|q| rule.is_none_or(|r| q.rule.as_str() == r))
        .map(|q| QuotaLine {
            rule: q.rule.to_string(),
            instance: q.instance.to_string(),
            start: q.period_start,
            end: q.period_end,
            limit: q.limit_bytes,
            used: q.used_bytes,
            elsewhere: q.elsewhere_bytes,
            overage: q.used_bytes.saturating_sub(q.limit_bytes),
            exceeded: q.exceeded,
        })
        .collect()
}

fn render_quotas(lines: &[QuotaLine], tz: &TimeZone) -> String {
    let when = |t: Timestamp| {
        t.to_zoned_datetime(tz.clone())
            .strftime("%Y-%m-%d %H:%M")
            .to_string()
    };
    let mut out = format!(
        "{:<32} {:<12} {:<35} {:>10} {:>10} {:>10} {:>10}  STATE\n",
        "RULE", "INSTANCE", "PERIOD", "LIMIT", "USED", "ELSEWHERE", "OVERAGE"
    );
    for l in lines {
        out.push_str(&format!(
            "{:<32} {:<12} {:<35} {:>10} {:>10} {:>10} {:>10}  {}\n",
            l.rule,
            l.instance,
            format!("{} → {}", when(l.start), when(l.end)),
            human_bytes(l.limit),
            human_bytes(l.used),
            human_bytes(l.elsewhere),
            human_bytes(l.overage),
            if l.exceeded { "EXCEEDED" } else { "ok" }
        ));
    }
    out
}

fn run_quotas(args: &Args) -> anyhow::Result<ExitCode> {
    let dir = match &args.state_dir {
        Some(d) => d.clone(),
        None => Config::load(&args.config.config)
            .map(|l| l.config.agent.state_dir)
            .with_context(|| "the agent's state directory (or give --state-dir)")?,
    };
    let path = dir.join(crate::state::STATE_FILE);
    let snap = crate::state::read(&path)
        .with_context(|| format!("reading {}", path.display()))?
        .with_context(|| {
            format!(
                "no state at {} (is `sluice agent` running?)",
                path.display()
            )
        })?;
    let lines = quota_lines(&snap.quotas, args.instance.as_ref(), args.rule.as_deref());
    if args.json {
        println!("{}", serde_json::to_string_pretty(&lines)?);
    } else {
        let tz = match &args.tz {
            Some(name) => TimeZone::get(name).with_context(|| format!("--tz {name:?}"))?,
            None => TimeZone::system(),
        };
        print!("{}", render_quotas(&lines, &tz));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.quotas {
        return run_quotas(&args);
    }
    let rule = match &args.rule {
        None => None,
        Some(name) => {
            let cfg = Config::load(&args.config.config)?.config;
            let (cfg, _) = cfg.with_drop_ins();
            let rule = cfg
                .rules
                .iter()
                .find(|r| r.name.as_str() == name)
                .with_context(|| {
                    format!(
                        "--rule {name:?}: no such rule in {}",
                        args.config.config.display()
                    )
                })?
                .clone();
            Some((rule, cfg))
        }
    };
    let tz = match (&args.tz, &rule) {
        (Some(name), _) => TimeZone::get(name).with_context(|| format!("--tz {name:?}"))?,
        (None, Some((r, _))) => r.timezone.clone(),
        (None, None) => TimeZone::system(),
    };
    let now = Timestamp::now();
    let by = args.by.unwrap_or(if args.percentile.is_some() {
        Granularity::Month
    } else {
        Granularity::Day
    });
    anyhow::ensure!(
        args.percentile.is_none() || by != Granularity::FiveMinutes,
        "--by 5m: a percentile is read over an hour, a day or a month of 5-minute intervals"
    );
    let to = match &args.to {
        Some(s) => parse_when(s, &tz).with_context(|| format!("--to {s:?}"))?,
        None => now,
    };
    let from = match &args.from {
        Some(s) => parse_when(s, &tz).with_context(|| format!("--from {s:?}"))?,
        None if args.percentile.is_some() => by.start_of(now, &tz),
        None => default_from(by, now, &tz)?,
    };
    anyhow::ensure!(from < to, "--from must be before --to");
    let path = ledger_path(args.data_dir, &args.config)?;
    let conn = open_read_only(&path)?;
    if let Some(p) = args.percentile {
        let mut rows = percentiles(&conn, args.instance.as_ref(), by, (from, to), now, &tz, p)?;
        if let Some((rule, cfg)) = &rule {
            rows.retain(|r| {
                InstanceId::new(&r.instance).is_ok_and(|id| rule.covers(&id, cfg.tags(&id)))
            });
        }
        if args.json {
            println!("{}", serde_json::to_string_pretty(&rows)?);
        } else {
            print!("{}", render_percentiles(&rows, by, &tz));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let q = UsageQuery {
        instance: args.instance,
        interface: args.interface,
        by,
        from,
        to,
        tz: tz.clone(),
    };
    let mut rows = query(&conn, &q)?;
    if let Some((rule, cfg)) = &rule {
        rows.retain(|r| {
            InstanceId::new(&r.instance).is_ok_and(|id| rule.covers(&id, cfg.tags(&id)))
        });
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else if args.csv {
        let mut w = csv::Writer::from_writer(std::io::stdout());
        w.write_record([
            "period",
            "instance",
            "interface",
            "upload_bytes",
            "download_bytes",
            "estimated",
        ])?;
        for r in &rows {
            w.write_record([
                r.period.to_string(),
                r.instance.clone(),
                r.interface.clone().unwrap_or_default(),
                r.upload_bytes.to_string(),
                r.download_bytes.to_string(),
                r.estimated.to_string(),
            ])?;
        }
        w.flush()?;
    } else {
        print!("{}", render(&rows, by, &tz));
    }
    Ok(ExitCode::SUCCESS)
}

/// The ledger file: in `data_dir` when given, else in the config's `agent.data_dir`
/// (the default one when the config cannot be read); it must exist.
pub fn ledger_path(data_dir: Option<PathBuf>, config: &ConfigArg) -> anyhow::Result<PathBuf> {
    let dir = match data_dir {
        Some(d) => d,
        None => Config::load(&config.config)
            .map(|l| l.config.agent.data_dir)
            .unwrap_or_else(|_| PathBuf::from(DEFAULT_DATA_DIR)),
    };
    let path = dir.join(LEDGER_FILE);
    anyhow::ensure!(
        path.exists(),
        "no ledger at {} (has `sluice agent` run on this host?)",
        path.display()
    );
    Ok(path)
}

/// A date, a civil date-time (both in `tz`) or an RFC 3339 instant.
pub fn parse_when(s: &str, tz: &TimeZone) -> anyhow::Result<Timestamp> {
    if let Ok(t) = s.parse::<Timestamp>() {
        return Ok(t);
    }
    // A date alone means its local midnight (a date parser would also take a date-time
    // and drop the time, so the date-time goes first when there is one).
    if s.contains('T')
        && let Ok(dt) = s.parse::<DateTime>()
    {
        return Ok(dt.to_zoned_datetime(tz.clone())?.timestamp());
    }
    if let Ok(d) = s.parse::<Date>() {
        return Ok(d.to_zoned_datetime(tz.clone())?.start_of_day()?.timestamp());
    }
    anyhow::bail!(
        "not a date (2026-11-01), a local time (2026-11-01T08:00) or an instant (2026-11-01T08:00:00Z)"
    )
}

fn default_from(by: Granularity, now: Timestamp, tz: &TimeZone) -> anyhow::Result<Timestamp> {
    let zoned = now.to_zoned_datetime(tz.clone());
    Ok(match by {
        Granularity::FiveMinutes => now - 2.hours(),
        Granularity::Hour => now - 24.hours(),
        Granularity::Day => zoned.start_of_day()?.checked_sub(30.days())?.timestamp(),
        Granularity::Month => zoned
            .first_of_month()?
            .start_of_day()?
            .checked_sub(11.months())?
            .timestamp(),
    })
}

/// The human table: one line per instance (or interface) and period.
pub fn render(rows: &[UsageRow], by: Granularity, tz: &TimeZone) -> String {
    let per_interface = rows.iter().any(|r| r.interface.is_some());
    let mut table: Vec<Vec<String>> = vec![cells(&[
        "PERIOD",
        "INSTANCE",
        "INTERFACE",
        "UPLOAD",
        "DOWNLOAD",
        "TOTAL",
    ])];
    for r in rows {
        table.push(vec![
            format!(
                "{}{}",
                period_label(r.period, by, tz),
                if r.estimated { " *" } else { "" }
            ),
            r.instance.clone(),
            r.interface.clone().unwrap_or_default(),
            human_bytes(r.upload_bytes),
            human_bytes(r.download_bytes),
            human_bytes(r.upload_bytes + r.download_bytes),
        ]);
    }
    if !per_interface {
        for row in &mut table {
            row.remove(2);
        }
    }
    let mut out = columns(&table);
    if rows.is_empty() {
        out.push_str("(no traffic recorded in this range)\n");
    }
    if rows.iter().any(|r| r.estimated) {
        out.push_str("* includes traffic the agent could not time (it was down): spread evenly over the gap\n");
    }
    out
}

/// The percentile table: one line per instance and period.
pub fn render_percentiles(rows: &[PercentileRow], by: Granularity, tz: &TimeZone) -> String {
    let p = rows.first().map_or(95, |r| r.figures.percentile.get());
    let mut table = vec![cells(&[
        "PERIOD",
        "INSTANCE",
        &format!("UPLOAD p{p}"),
        &format!("DOWNLOAD p{p}"),
        &format!("MAX p{p}"),
        &format!("AGGREGATE p{p}"),
        "SAMPLES",
        "LEFT OUT",
    ])];
    let rate = |r: Option<crate::model::units::Rate>| {
        r.map_or_else(|| "-".to_string(), |r| human_rate(r.bits_per_sec()))
    };
    for r in rows {
        let f = &r.figures;
        table.push(vec![
            period_label(r.period, by, tz),
            r.instance.clone(),
            rate(f.upload),
            rate(f.download),
            rate(f.max),
            rate(f.aggregate),
            f.samples.to_string(),
            f.estimated.to_string(),
        ]);
    }
    let mut out = columns(&table);
    if rows.is_empty() {
        out.push_str("(no 5-minute intervals recorded in this range)\n");
    }
    if rows.iter().any(|r| r.figures.estimated > 0) {
        out.push_str(
            "LEFT OUT: intervals the agent was down for (their bytes were spread over the gap), not ranked\n",
        );
    }
    out
}

fn cells(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn period_label(t: Timestamp, by: Granularity, tz: &TimeZone) -> String {
    let z = t.to_zoned_datetime(tz.clone());
    match by {
        Granularity::FiveMinutes | Granularity::Hour => z.strftime("%Y-%m-%d %H:%M").to_string(),
        Granularity::Day => z.strftime("%Y-%m-%d").to_string(),
        Granularity::Month => z.strftime("%Y-%m").to_string(),
    }
}

/// Left-aligned columns two spaces apart.
fn columns(table: &[Vec<String>]) -> String {
    let cols = table.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            table
                .iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in table {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each count's overage is what it used past its limit, with the fleet's part shown.
    #[test]
    fn quota_lines_give_limit_used_elsewhere_and_overage() {
        let rec = |rule: &str, instance: &str, used, elsewhere, limit, exceeded| {
            crate::state::QuotaRecord {
                rule: crate::model::ids::RuleName::new(rule).unwrap(),
                instance: InstanceId::new(instance).unwrap(),
                period_start: "2027-01-01T00:00:00Z".parse().unwrap(),
                period_end: "2027-02-01T00:00:00Z".parse().unwrap(),
                used_bytes: used,
                elsewhere_bytes: elsewhere,
                limit_bytes: limit,
                action: crate::config::ActionKind::Warn,
                exceeded,
                judged: false,
            }
        };
        let all = [
            rec("store:month:total:101", "101", 1_200, 900, 1_000, true),
            rec("monthly", "101", 400, 0, 1_000, false),
            rec("monthly", "102", 10, 0, 1_000, false),
        ];
        // (instance, rule) filters → (rule, instance, used, elsewhere, overage)
        type Row = (String, String, u64, u64, u64);
        let pick = |i: Option<&str>, r: Option<&str>| -> Vec<Row> {
            let id = i.map(|i| InstanceId::new(i).unwrap());
            quota_lines(&all, id.as_ref(), r)
                .into_iter()
                .map(|l| (l.rule, l.instance, l.used, l.elsewhere, l.overage))
                .collect()
        };
        assert_eq!(
            pick(Some("101"), None),
            vec![
                (
                    "store:month:total:101".into(),
                    "101".into(),
                    1_200,
                    900,
                    200
                ),
                ("monthly".into(), "101".into(), 400, 0, 0),
            ]
        );
        assert_eq!(pick(None, Some("monthly")).len(), 2);
        let text = render_quotas(&quota_lines(&all, None, None), &TimeZone::UTC);
        assert!(
            text.contains("EXCEEDED") && text.contains("2027-01-01 00:00 → 2027-02-01 00:00"),
            "{text}"
        );
    }

    #[test]
    fn when_takes_dates_local_times_and_instants() {
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        let table = [
            ("2026-11-01", "2026-10-31T23:00:00Z"),
            ("2026-11-01T08:30", "2026-11-01T07:30:00Z"),
            ("2026-11-01T08:30:00Z", "2026-11-01T08:30:00Z"),
        ];
        for (input, want) in table {
            assert_eq!(
                parse_when(input, &berlin).unwrap(),
                want.parse::<Timestamp>().unwrap(),
                "{input}"
            );
        }
        let e = parse_when("yesterday", &berlin).unwrap_err().to_string();
        assert!(e.contains("not a date"), "{e}");
    }

    #[test]
    fn table_marks_estimates_and_uses_si_units() {
        let utc = TimeZone::UTC;
        let rows = vec![UsageRow {
            period: "2026-11-23T00:00:00Z".parse().unwrap(),
            instance: "101".into(),
            interface: None,
            upload_bytes: 1_230_000_000,
            download_bytes: 512,
            estimated: true,
        }];
        let text = render(&rows, Granularity::Day, &utc);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("PERIOD") && !lines[0].contains("INTERFACE"));
        assert!(lines[1].starts_with("2026-11-23 *"), "{}", lines[1]);
        assert!(
            lines[1].contains("1.23 GB") && lines[1].contains("512 B"),
            "{}",
            lines[1]
        );
        assert!(lines[2].starts_with("* includes"));
    }
}
