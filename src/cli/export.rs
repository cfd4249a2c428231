//! `sluice export`: charts and numbers of an instance's traffic (or every instance's)
//! from the ledger, as JSON, CSV, SVG, PNG or one self-contained HTML file.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

use super::ConfigArg;
use super::usage::{ledger_path, parse_when};
use crate::account::ledger::open_read_only;
use crate::config::Config;
use crate::model::calendar::Granularity;
use crate::model::ids::{IfName, InstanceId};
use crate::render::export::chart::{self, Figure, Theme};
use crate::render::export::{self, Directions, Report, Spec};
use crate::sys::write_atomic;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Csv,
    Html,
    Png,
    Svg,
}

impl Format {
    fn ext(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Csv => "csv",
            Format::Html => "html",
            Format::Png => "png",
            Format::Svg => "svg",
        }
    }
}

/// The current period the range covers with `--period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CurrentPeriod {
    Day,
    Month,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// An instance id, or "all" for a summary plus one chart per instance
    #[arg(long, value_name = "ID|all")]
    pub instance: String,
    /// Only this interface of the instance
    #[arg(long, value_name = "IF", value_parser = |s: &str| IfName::new(s))]
    pub interface: Option<IfName>,
    /// Period length: 5m, hour, day or month (default: hour, or day for --period month)
    #[arg(long, value_parser = |s: &str| s.parse::<Granularity>())]
    pub by: Option<Granularity>,
    /// Start: a date, a local time or an RFC 3339 instant (default: 24 hours back)
    #[arg(long, value_name = "WHEN", conflicts_with_all = ["date", "period"])]
    pub from: Option<String>,
    /// End (exclusive), same forms; default: now
    #[arg(long, value_name = "WHEN", conflicts_with_all = ["date", "period"])]
    pub to: Option<String>,
    /// One local day (2026-11-23)
    #[arg(long, value_name = "DATE", conflicts_with = "period")]
    pub date: Option<String>,
    /// The current day or month so far
    #[arg(long, value_enum)]
    pub period: Option<CurrentPeriod>,
    /// Which directions to show
    #[arg(long, value_enum, default_value_t = Directions::Both)]
    pub direction: Directions,
    #[arg(long, value_enum)]
    pub format: Format,
    /// Dark theme (charts and HTML)
    #[arg(long)]
    pub dark: bool,
    /// Write here (atomically) instead of stdout; a directory for png/svg with --instance all
    #[arg(long, short = 'o', value_name = "PATH")]
    pub out: Option<PathBuf>,
    /// Time zone of days, months and axis labels (IANA name); default: the host's
    #[arg(long, value_name = "ZONE")]
    pub tz: Option<String>,
    /// Draw this quota rule's count (default: the first enabled rule covering the instance)
    #[arg(long, value_name = "NAME")]
    pub rule: Option<String>,
    /// Read the ledger from this directory instead of the config's agent.data_dir
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub config: ConfigArg,
}

/// [from, to) and the granularity, from the range flags.
fn range(
    args: &Args,
    tz: &TimeZone,
    now: Timestamp,
) -> anyhow::Result<(Timestamp, Timestamp, Granularity)> {
    if let Some(d) = &args.date {
        let date: Date = d
            .parse()
            .with_context(|| format!("--date {d:?}: not a date like 2026-11-23"))?;
        let start = date.to_zoned_datetime(tz.clone())?.start_of_day()?;
        let end = start.checked_add(1.day())?;
        return Ok((
            start.timestamp(),
            end.timestamp(),
            args.by.unwrap_or(Granularity::Hour),
        ));
    }
    if let Some(p) = args.period {
        let (by, default_by) = match p {
            CurrentPeriod::Day => (Granularity::Day, Granularity::Hour),
            CurrentPeriod::Month => (Granularity::Month, Granularity::Day),
        };
        return Ok((by.start_of(now, tz), now, args.by.unwrap_or(default_by)));
    }
    let to = match &args.to {
        Some(s) => parse_when(s, tz).with_context(|| format!("--to {s:?}"))?,
        None => now,
    };
    let from = match &args.from {
        Some(s) => parse_when(s, tz).with_context(|| format!("--from {s:?}"))?,
        None => to - 24.hours(),
    };
    anyhow::ensure!(from < to, "--from must be before --to");
    Ok((from, to, args.by.unwrap_or(Granularity::Hour)))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let tz = match &args.tz {
        Some(name) => TimeZone::get(name).with_context(|| format!("--tz {name:?}"))?,
        None => TimeZone::system(),
    };
    let now = Timestamp::now();
    let (from, to, by) = range(&args, &tz, now)?;
    let instance = match args.instance.as_str() {
        "all" => None,
        id => Some(InstanceId::new(id).with_context(|| format!("--instance {id:?}"))?),
    };
    anyhow::ensure!(
        instance.is_some() || args.interface.is_none(),
        "--interface needs one --instance, not all"
    );
    // The config gives each instance's quota rule; without one the charts have no quota
    // panel (said once, unless the default config is simply absent).
    let config = match Config::load(&args.config.config) {
        Ok(l) => Some(l.config.with_drop_ins().0),
        Err(e) => {
            if args.config.config.exists() || args.rule.is_some() {
                eprintln!("warning: {e}; charts show no quota rule");
            }
            None
        }
    };
    if let (Some(name), Some(cfg)) = (&args.rule, &config) {
        anyhow::ensure!(
            cfg.rules.iter().any(|r| r.name.as_str() == name),
            "--rule {name:?}: no such rule in {}",
            args.config.config.display()
        );
    }
    let conn = open_read_only(&ledger_path(args.data_dir.clone(), &args.config)?)?;
    let spec = Spec {
        instance,
        interface: args.interface.clone(),
        by,
        from,
        to,
        tz: tz.clone(),
        directions: args.direction,
    };
    let mut report = export::build(&conn, &spec, config.as_ref(), args.rule.as_deref(), now)?;
    // The names the running agent knows now, over those the events were written with.
    if let Some(cfg) = &config {
        let names = current_names(&cfg.agent.state_dir.join("state.json"));
        for s in &mut report.series {
            if let Some(n) = names.get(&s.instance) {
                s.name = Some(n.clone());
            }
        }
    }
    let theme = Theme::new(args.dark);
    let many = spec.instance.is_none();
    match args.format {
        Format::Png | Format::Svg if many => {
            let dir = args.out.as_ref().context(
                "--instance all with png or svg writes one file per instance: give --out DIR",
            )?;
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let ext = args.format.ext();
            let mut figures = vec![("summary".to_owned(), Figure::Summary)];
            figures.extend(
                report
                    .series
                    .iter()
                    .map(|s| (s.instance.clone(), Figure::Instance(s))),
            );
            for (name, figure) in &figures {
                let bytes = figure_bytes(&report, figure, args.format, &theme, &tz)?;
                let path = dir.join(format!("{name}.{ext}"));
                write_atomic(&path, 0o644, |f| f.write_all(&bytes))
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            eprintln!("wrote {} files into {}", figures.len(), dir.display());
        }
        format => {
            let bytes = match format {
                Format::Json => {
                    let mut b = serde_json::to_vec_pretty(&report)?;
                    b.push(b'\n');
                    b
                }
                Format::Csv => export::csv(&report)?,
                Format::Html => export::html::render(&report, args.dark, &tz)?.into_bytes(),
                Format::Png | Format::Svg => {
                    let series = report.series.first().context("nothing to draw")?;
                    figure_bytes(&report, &Figure::Instance(series), format, &theme, &tz)?
                }
            };
            match &args.out {
                Some(path) => write_atomic(path, 0o644, |f| f.write_all(&bytes))
                    .with_context(|| format!("writing {}", path.display()))?,
                None => {
                    let mut out = std::io::stdout().lock();
                    anyhow::ensure!(
                        format != Format::Png || !out.is_terminal(),
                        "not writing a PNG to a terminal: give --out FILE or redirect"
                    );
                    out.write_all(&bytes)?;
                    out.flush()?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn figure_bytes(
    report: &Report,
    figure: &Figure<'_>,
    format: Format,
    theme: &Theme,
    tz: &TimeZone,
) -> anyhow::Result<Vec<u8>> {
    Ok(match format {
        Format::Png => chart::png(report, figure, theme, tz)?,
        _ => chart::svg(report, figure, theme, tz)?.into_bytes(),
    })
}

/// Each instance's name in the agent's state file (empty when no agent wrote one).
fn current_names(path: &std::path::Path) -> std::collections::HashMap<String, String> {
    crate::state::read(path)
        .ok()
        .flatten()
        .map(|snap| {
            snap.interfaces
                .into_iter()
                .filter_map(|r| Some((r.instance.to_string(), r.instance_name?)))
                .collect()
        })
        .unwrap_or_default()
}
