//! One tick's accounting, shared by the agent and `simulate`: count the watched
//! interfaces' traffic in the ledger and charge it to the quota rules, in one commit.

use jiff::Timestamp;

use crate::account::ledger::spool::{SpoolSample, SpoolWrite};
use crate::account::ledger::{
    EventRow, Journal, Ledger, LedgerError, Observation, Recorded, spread,
};
use crate::account::quota_counts::Spent;
use crate::config::Config;
use crate::model::percentile::INTERVAL_SECS;
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
            spool: spool.map(|plan| {
                let (samples, estimated) = spool_samples(spent);
                SpoolWrite {
                    samples,
                    estimated,
                    acked_through: plan.acked_through,
                    max_bytes: plan.max_bytes,
                }
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

/// What a tick spools for the quota store: one sample per instance that moved bytes,
/// at the tick's end. A span the agent was down for is spooled as the ledger placed it:
/// one sample per 5-minute interval of the gap, each at its interval's end, flagged
/// estimated (their indices) — not one sample whose bytes would land in the interval
/// the agent came back in.
pub fn spool_samples(spent: &[Spent]) -> (Vec<SpoolSample>, Vec<u32>) {
    let len = INTERVAL_SECS * 1000;
    let mut samples = Vec::new();
    let mut estimated = Vec::new();
    for s in spent.iter().filter(|s| s.upload > 0 || s.download > 0) {
        let (from, to) = (s.from.as_millisecond(), s.to.as_millisecond());
        let sample = |at_ms, upload, download| SpoolSample {
            at_ms,
            instance: s.instance.as_str().to_owned(),
            upload,
            download,
        };
        if !s.estimated {
            samples.push(sample(to, s.upload, s.download));
            continue;
        }
        let pieces = spread(s.upload, from, to, len).zip(spread(s.download, from, to, len));
        for ((bucket, up), (_, down)) in pieces {
            if up == 0 && down == 0 {
                continue;
            }
            let at = bucket.saturating_mul(1000).saturating_add(len - 1).min(to);
            estimated.push(u32::try_from(samples.len()).unwrap_or(u32::MAX));
            samples.push(sample(at, up, down));
        }
    }
    (samples, estimated)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ids::InstanceId;

    fn spent(from_s: i64, to_s: i64, upload: u64, estimated: bool) -> Spent {
        Spent {
            instance: InstanceId::new("101").unwrap(),
            upload,
            download: upload / 10,
            from: Timestamp::from_second(from_s).unwrap(),
            to: Timestamp::from_second(to_s).unwrap(),
            estimated,
        }
    }

    #[test]
    fn an_outage_is_spooled_one_estimated_sample_per_interval() {
        // A tick: one sample at its end. Idle: nothing.
        let (s, e) = spool_samples(&[spent(600, 660, 1000, false), spent(600, 660, 0, false)]);
        assert_eq!(s.len(), 1);
        assert_eq!(
            (s[0].at_ms, s[0].upload, s[0].download),
            (660_000, 1000, 100)
        );
        assert!(e.is_empty());
        // 12.5 minutes down from 00:10:00: (600, 1350] spreads over 600-900, 900-1200 and
        // 1200-1500 (2 : 2 : 0.5 of it), each sample inside its interval.
        let (s, e) = spool_samples(&[spent(600, 1350, 1000, true)]);
        let got: Vec<(i64, u64, u64)> = s.iter().map(|s| (s.at_ms, s.upload, s.download)).collect();
        assert_eq!(
            got,
            vec![
                (899_999, 400, 40),
                (1_199_999, 400, 40),
                (1_350_000, 200, 20)
            ]
        );
        assert_eq!(e, vec![0, 1, 2]);
        // Mixed: the indices point at the estimated ones only.
        let (s, e) = spool_samples(&[spent(0, 60, 5, false), spent(0, 900, 900, true)]);
        assert_eq!((s.len(), e), (4, vec![1, 2, 3]));
        assert_eq!(s.iter().map(|s| s.upload).sum::<u64>(), 905, "bytes kept");
    }
}
