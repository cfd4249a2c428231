//! One tick's accounting, shared by the agent and `simulate`: count the watched
//! interfaces' traffic in the ledger and charge it to the quota rules, in one commit.

use jiff::Timestamp;

use super::ledger::{EventRow, Journal, Ledger, LedgerError, Observation, Recorded};
use crate::config::Config;
use crate::events::quota_row;
use crate::policy::Policy;
use crate::policy::quota::QuotaEvent;
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
        }
    })?;
    policy.set_quotas(quotas);
    Ok(Charged {
        recorded,
        fired,
        events: committed,
    })
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
