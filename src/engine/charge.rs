//! One tick's accounting, shared by the agent and `simulate`: count the watched
//! interfaces' traffic in the ledger and charge it to the quota rules, in one commit.

use jiff::Timestamp;

use crate::account::ledger::spool::{SpoolSample, SpoolWrite};
use crate::account::ledger::{EventRow, Journal, Ledger, LedgerError, Observation, Recorded};
use crate::config::Config;
use crate::policy::Policy;
use crate::policy::quota::QuotaEvent;
use crate::report::event::quota_row;
use crate::sample::Sample;

/// Record `samples` (those of interfaces the policy watches and saw this tick) at `at`,
/// advance the policy's quotas by what was counted, and commit both with `events`. The
/// quotas change only if the commit succeeds: a failed commit leaves the counters where
/// they were, so the next tick counts the same bytes again — once.
pub fn charge(
    ledger: &mut Ledger,
    policy: &mut Policy,
    cfg: &Config,
    samples: &[Sample],
    at: Timestamp,
    mut events: Vec<EventRow>,
    spool: Option<SpoolPlan>,
) -> Result<Charged, LedgerError> {
    let observations: Vec<Observation<'_>> = samples
        .iter()
        .filter_map(|s| {
            let st = policy.get(&s.name).filter(|st| st.present)?;
            Some(Observation {
                interface: &s.name,
                instance: &st.instance,
                ifindex: s.ifindex,
                rx_bytes: s.rx_bytes,
                tx_bytes: s.tx_bytes,
            })
        })
        .collect();
    let mut quotas = policy.quotas().clone();
    let mut fired = Vec::new();
    let mut committed = Vec::new();
    let recorded = ledger.record_with(&observations, at, cfg.agent.interval, |spent| {
        fired = quotas.step(cfg, spent, at);
        events.extend(fired.iter().map(quota_row));
        committed = events.clone();
        Journal {
            quotas: quotas.take_changes(),
            events,
            spool: spool.map(|plan| SpoolWrite {
                samples: spent
                    .iter()
                    .filter(|s| s.upload > 0 || s.download > 0)
                    .map(|s| SpoolSample {
                        at_ms: s.to.as_millisecond(),
                        instance: s.instance.as_str().to_owned(),
                        upload: s.upload,
                        download: s.download,
                    })
                    .collect(),
                acked_through: plan.acked_through,
                max_bytes: plan.max_bytes,
            }),
        }
    })?;
    policy.set_quotas(quotas);
    Ok(Charged {
        recorded,
        fired,
        events: committed,
    })
}

/// Spool this tick's deltas for the quota store: trim what it acknowledged, keep the
/// spool under `max_bytes`.
#[derive(Debug, Clone, Copy)]
pub struct SpoolPlan {
    pub acked_through: u64,
    pub max_bytes: u64,
}

/// What one [`charge`] committed.
#[derive(Debug)]
pub struct Charged {
    pub recorded: Recorded,
    /// The quota events of this tick (to act on).
    pub fired: Vec<QuotaEvent>,
    /// Every event committed with it (to send to webhooks).
    pub events: Vec<EventRow>,
}
