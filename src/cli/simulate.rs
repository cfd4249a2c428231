//! `sluice simulate`: replay a recorded trace through the agent's own tick
//! ([`crate::engine::tick`]) with a simulated clock, printing one JSON object per event. The operator's way to try a
//! policy on last month's traffic before deploying it.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::account::Ledger;
use crate::config::Config;
use crate::engine::{self, TickInput};
use crate::policy::{EventKind, Policy, Tick};
use crate::report::event::{event_json, quota_json};
use crate::sample::trace::TraceReader;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Config file whose policy to try
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: PathBuf,
    /// Trace CSV: time,interface,rx_bytes,tx_bytes (cumulative counters; time in Unix
    /// seconds, so period boundaries and time zones of rules replay exactly)
    #[arg(long, value_name = "FILE")]
    pub trace: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = match Config::load(&args.config) {
        Ok(l) => l.config,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let file =
        File::open(&args.trace).with_context(|| format!("cannot open {}", args.trace.display()))?;
    let reader =
        TraceReader::new(BufReader::new(file)).with_context(|| args.trace.display().to_string())?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut policy = Policy::new();
    // Rules are charged from the very ledger code the agent uses, kept in memory.
    let mut ledger =
        Ledger::open(std::path::Path::new(":memory:"), "simulate").context("in-memory ledger")?;
    let (mut ticks, mut changes, mut rule_events) = (0u64, 0u64, 0u64);
    // The agent's own tick: the policy's events are committed with the bytes, and the
    // verdicts computed, exactly as `sluice agent` does.
    let (mut pending, mut verdicts) = (Vec::new(), Vec::new());
    let max_gap = config.agent.interval.as_secs_f64() * 2.0;
    let (mut previous, mut gaps) = (None::<f64>, 0u64);
    for tick in reader {
        let tick = tick.with_context(|| args.trace.display().to_string())?;
        ticks += 1;
        // Ticks further apart than 2 × interval are sampling gaps to the policy (rate
        // unknown, timers cleared): a trace sampled coarser than the config's interval
        // would never trigger anything, and the operator should hear why.
        if previous.is_some_and(|p| tick.time - p > max_gap) {
            gaps += 1;
        }
        previous = Some(tick.time);
        let ticked = engine::tick(
            &mut policy,
            Some(&mut ledger),
            &config,
            TickInput {
                samples: &tick.samples,
                now: Tick::simulated(tick.time),
                spool: None,
            },
            &mut pending,
            &mut verdicts,
        );
        for event in &ticked.events {
            if matches!(event.kind, EventKind::Stage { .. }) {
                changes += 1;
            }
            serde_json::to_writer(&mut out, &event_json(tick.time, event))?;
            out.write_all(b"\n")?;
        }
        let fired = match ticked.charged {
            Some(charged) => {
                charged
                    .with_context(|| format!("at time {}", tick.time))?
                    .fired
            }
            None => Vec::new(),
        };
        for e in &fired {
            rule_events += 1;
            serde_json::to_writer(&mut out, &quota_json(e))?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    eprintln!("simulated {ticks} ticks: {changes} stage changes, {rule_events} rule events");
    if gaps > 0 {
        eprintln!(
            "warning: {gaps} of {ticks} ticks came more than 2 × agent.interval ({}s) after the previous one and counted as \
             sampling gaps (rate unknown, timers cleared); is agent.interval the trace's sampling interval?",
            config.agent.interval.as_secs()
        );
    }
    Ok(ExitCode::SUCCESS)
}
