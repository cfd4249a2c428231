//! The agent's view of one interface as `state.json` records it, built straight from the
//! policy, the verdicts and the enforcement results — one record at a time, so a
//! 10,000-interface snapshot is streamed to disk without a second copy in memory.

use super::{InterfaceRecord, QuotaRecord, ShaperDrops};
use crate::config::Config;
use crate::enforce::Enforcement;
use crate::model::ids::{FastMap, IfName};
use crate::model::units::{PacketRate, Rate};
use crate::policy::{Burst, PenaltyMachine, Policy, Reason, Verdict};

/// What the agent knows this tick, from which records are made.
pub struct AgentView<'a> {
    pub config: &'a Config,
    pub policy: &'a Policy,
    /// Present interfaces only, in name order (as [`Policy::verdicts`] gives them).
    pub verdicts: &'a [(IfName, Verdict)],
    /// Same interfaces, same order.
    pub enforcement: &'a [(IfName, Enforcement)],
    /// Shaper drops by interface (tc backend; empty otherwise).
    pub shapers: &'a FastMap<IfName, ShaperDrops>,
}

impl AgentView<'_> {
    /// The quota counts of the current periods, for the snapshot.
    pub fn quotas(&self) -> Vec<QuotaRecord> {
        self.policy
            .quotas()
            .iter()
            .filter_map(|((rule, instance), u)| {
                let cfg = self.config.rules.get(rule)?;
                Some(QuotaRecord {
                    rule: rule.clone(),
                    instance: instance.clone(),
                    period_start: u.period.start,
                    period_end: u.period.end,
                    used_bytes: cfg
                        .direction
                        .of(u.upload, u.download)
                        .saturating_add(cfg.elsewhere_in(u.period.start)),
                    elsewhere_bytes: cfg.elsewhere_in(u.period.start),
                    limit_bytes: cfg.limit.get(),
                    action: cfg.action,
                    exceeded: u.exceeded,
                    judged: cfg.judged.is_some(),
                })
            })
            .collect()
    }

    /// One record per interface the policy knows, in name order. The three sources are
    /// all sorted by name, so they are walked together rather than looked up.
    pub fn records(&self) -> impl Iterator<Item = InterfaceRecord> + '_ {
        let machine = PenaltyMachine::new(&self.config.penalty.stages);
        let mut verdicts = self.verdicts.iter().peekable();
        let mut enforcement = self.enforcement.iter().peekable();
        self.policy.interfaces().map(move |(name, st)| {
            let verdict = verdicts.next_if(|(n, _)| n == name).map(|(_, v)| v);
            let status = enforcement.next_if(|(n, _)| n == name).map(|(_, e)| e);
            // Absent interfaces hold a penalty but no limit; show the limit they will get.
            let limit = match verdict {
                Some(v) => v.upload.map(|l| (l.rate, l.burst)),
                None => machine
                    .stage_rate(st.penalty.stage, self.config.base_rate(&st.instance))
                    .map(|r| (r, Burst::for_rate(r, self.config.penalty.burst))),
            };
            InterfaceRecord {
                interface: name.clone(),
                instance: st.instance.clone(),
                instance_name: self.config.name_of(&st.instance).map(str::to_owned),
                present: st.present,
                stage: st.penalty.stage,
                since: st.penalty.since,
                until: st.penalty.until,
                reason: verdict.map_or(
                    Reason::Penalty {
                        stage: st.penalty.stage,
                    },
                    |v| v.reason.clone(),
                ),
                upload_limit_kbps: limit.map(|l| l.0.kbps()),
                burst_kb: limit.map(|l| l.1.kb()),
                download_limit_kbps: verdict.and_then(|v| v.download).map(|l| l.rate.kbps()),
                userspace: st.ifindex.is_some_and(crate::sample::ovsdb::is_userspace),
                packet_limit_pps: verdict.and_then(|v| v.packets).map(|p| p.rate.per_sec()),
                upload_bps: st.upload.map(Rate::bits_per_sec),
                download_bps: st.download.map(Rate::bits_per_sec),
                upload_pps: st.upload_pps.map(PacketRate::per_sec),
                download_pps: st.download_pps.map(PacketRate::per_sec),
                enforcement: status.cloned(),
                shaper: self.shapers.get(name).copied(),
                rule: verdict
                    .and_then(|v| v.rule.as_ref())
                    .map(|(action, rule)| format!("{action} by {rule}")),
                disconnected: verdict.is_some_and(|v| v.disconnect),
            }
        })
    }
}
