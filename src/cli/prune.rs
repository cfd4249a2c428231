//! `sluice prune --before DATE [--instance ID] [--dry-run]`: delete old ledger buckets by
//! hand (retention also runs by itself, daily). Says what it deletes before it does.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use jiff::tz::TimeZone;

use super::ConfigArg;
use super::usage::{ledger_path, parse_when};
use crate::account::ledger::{open_existing, prune};
use crate::model::human::human_bytes;
use crate::model::ids::InstanceId;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Delete buckets that start before this date (2026-01-01: local midnight), local time
    /// or RFC 3339 instant
    #[arg(long, value_name = "WHEN")]
    pub before: String,
    /// Only this instance's buckets
    #[arg(long, value_name = "ID", value_parser = |s: &str| InstanceId::new(s))]
    pub instance: Option<InstanceId>,
    /// Say what would be deleted, delete nothing
    #[arg(long)]
    pub dry_run: bool,
    /// The ledger's directory instead of the config's agent.data_dir
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub config: ConfigArg,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let before = parse_when(&args.before, &TimeZone::system())
        .with_context(|| format!("--before {:?}", args.before))?;
    let instance = args.instance;
    let path = ledger_path(args.data_dir, &args.config)?;
    let mut conn = open_existing(&path)?;
    let p = prune(&mut conn, before, instance.as_ref(), args.dry_run)?;
    let who = instance.map_or_else(|| "all instances".to_owned(), |i| format!("instance {i}"));
    println!(
        "{} {} hourly and {} 5-minute bucket(s) of {who} before {before}: upload {}, download {}",
        if args.dry_run {
            "would delete"
        } else {
            "deleted"
        },
        p.rows_hourly,
        p.rows_5m,
        human_bytes(p.upload_bytes),
        human_bytes(p.download_bytes),
    );
    Ok(ExitCode::SUCCESS)
}
