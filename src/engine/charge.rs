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

/// The most 5-minute pieces one instance's bytes are spooled as: a day. A longer outage
/// goes as one estimated sample (its intervals then read idle in the store), so a day
/// away on a big host cannot grow one tick's spool without bound.
pub const MAX_PIECES: i64 = 288;

/// What a tick spools for the quota store, for each instance that moved bytes: its bytes
/// placed as the ledger places them, by overlap with the UTC 5-minute intervals, one
/// sample per interval, each at the last instant the tick had in it (so the store, which
/// files a sample under the interval holding its time, files it where the ledger did).
/// A span the agent was down for is marked estimated (the returned indices): the store
/// leaves those intervals out of percentiles, as the ledger does.
pub fn spool_samples(spent: &[Spent]) -> (Vec<SpoolSample>, Vec<u32>) {
    let len = INTERVAL_SECS * 1000;
    let mut samples = Vec::new();
    let mut estimated = Vec::new();
    for s in spent.iter().filter(|s| s.upload > 0 || s.download > 0) {
        let (from, to) = (s.from.as_millisecond(), s.to.as_millisecond());
        let mut push = |at_ms, upload, download| {
            if s.estimated {
                estimated.push(u32::try_from(samples.len()).unwrap_or(u32::MAX));
            }
            samples.push(SpoolSample {
                at_ms,
                instance: s.instance.as_str().to_owned(),
                upload,
                download,
            });
        };
        let pieces = (to - 1).div_euclid(len) - from.div_euclid(len) + 1;
        if to <= from || pieces > MAX_PIECES {
            push(to, s.upload, s.download);
            continue;
        }
        let split = spread(s.upload, from, to, len).zip(spread(s.download, from, to, len));
        for ((bucket, up), (_, down)) in split {
            if up == 0 && down == 0 {
                continue;
            }
            let at = bucket.saturating_mul(1000).saturating_add(len - 1).min(to);
            push(at, up, down);
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
    fn bytes_are_spooled_where_the_ledger_places_them() {
        let at = |s: &SpoolSample| (s.at_ms, s.upload, s.download);
        // A tick inside one interval: one sample at its end. Idle: nothing.
        let (s, e) = spool_samples(&[spent(600, 660, 1000, false), spent(600, 660, 0, false)]);
        assert_eq!(
            s.iter().map(at).collect::<Vec<_>>(),
            vec![(660_000, 1000, 100)]
        );
        assert!(e.is_empty());
        // A tick ending on a boundary stays in the interval it ends (as in the ledger):
        // its time is the instant before.
        let (s, _) = spool_samples(&[spent(840, 900, 1000, false)]);
        assert_eq!(
            s.iter().map(at).collect::<Vec<_>>(),
            vec![(899_999, 1000, 100)]
        );
        // Straddling a boundary: split by overlap.
        let (s, _) = spool_samples(&[spent(870, 930, 1000, false)]);
        assert_eq!(
            s.iter().map(at).collect::<Vec<_>>(),
            vec![(899_999, 500, 50), (930_000, 500, 50)]
        );
        // 12.5 minutes down from 00:10:00: (600, 1350] spreads over 600-900, 900-1200 and
        // 1200-1500 (2 : 2 : 0.5 of it), all marked estimated.
        let (s, e) = spool_samples(&[spent(600, 1350, 1000, true)]);
        assert_eq!(
            s.iter().map(at).collect::<Vec<_>>(),
            vec![
                (899_999, 400, 40),
                (1_199_999, 400, 40),
                (1_350_000, 200, 20)
            ]
        );
        assert_eq!(e, vec![0, 1, 2]);
        // Mixed: the indices point at the estimated ones only; no byte is lost.
        let (s, e) = spool_samples(&[spent(0, 60, 5, false), spent(0, 900, 900, true)]);
        assert_eq!((s.len(), e), (4, vec![1, 2, 3]));
        assert_eq!(s.iter().map(|s| s.upload).sum::<u64>(), 905);
        // Longer than a day away: one estimated sample at the end.
        let (s, e) = spool_samples(&[spent(0, 2 * 86_400, 7, true)]);
        assert_eq!(
            (s.iter().map(at).collect::<Vec<_>>(), e),
            (vec![(172_800_000, 7, 0)], vec![0])
        );
    }
}
