//! The policy: a pure function of (previous state, samples, clock, config) that decides
//! each interface's stage and limit. It never reads a clock, a file or the network, so
//! the daemon, `sluice simulate` and the tests all drive the very same code.

mod penalty;
pub mod quota;
mod verdict;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

pub use penalty::{ChangeCause, Measured, PenaltyMachine, PenaltyState, StageChange};
pub use verdict::{Burst, Limit, PacketLimit, Reason, Verdict};

use crate::account::{Boot, Counters, counter_delta};
use crate::config::{ActionKind, Claims, Config, InterfacePattern};
use crate::model::ids::{FastMap, IfName, InstanceId};
use crate::model::units::{PacketRate, Rate};
use crate::sample::Sample;
use quota::Quotas;

/// The moment a tick happens: monotonic time for intervals, wall time for expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// Since an arbitrary origin fixed for the life of the process.
    pub mono: Duration,
    pub wall: Timestamp,
}

impl Tick {
    /// A tick of a simulated clock where monotonic and wall time are both `secs` since the
    /// Unix epoch (what `simulate` and the tests use).
    pub fn simulated(secs: f64) -> Tick {
        Tick {
            mono: Duration::from_secs_f64(secs.max(0.0)),
            wall: Timestamp::from_duration(SignedDuration::from_secs_f64(secs))
                .unwrap_or(Timestamp::UNIX_EPOCH),
        }
    }
}

/// What the policy knows about one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceState {
    pub instance: InstanceId,
    /// Seen in the latest tick's samples.
    pub present: bool,
    /// Seen in the tick before (to log a disappearance once).
    was_present: bool,
    pub ifindex: Option<u32>,
    /// Average upload/download over the latest interval; `None` when unknown (gap).
    pub upload: Option<Rate>,
    pub download: Option<Rate>,
    /// Packets per second over the same interval.
    pub upload_pps: Option<PacketRate>,
    pub download_pps: Option<PacketRate>,
    pub penalty: PenaltyState,
    last: Option<(Counters, Duration)>,
}

impl InterfaceState {
    fn new(instance: InstanceId) -> Self {
        InterfaceState {
            instance,
            present: false,
            was_present: false,
            ifindex: None,
            upload: None,
            download: None,
            upload_pps: None,
            download_pps: None,
            penalty: PenaltyState::default(),
            last: None,
        }
    }
}

/// Something worth a log line (and a line of `simulate` output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub interface: IfName,
    pub instance: InstanceId,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// A stage change; `upload_limit` is the limit after it.
    Stage {
        change: StageChange,
        upload_limit: Option<Rate>,
        usage: Option<Rate>,
        until: Option<Timestamp>,
    },
    /// The interface is back while its penalty still runs: the penalty is re-applied.
    Returned { stage: usize },
    /// The interface vanished with a penalty running; its state is kept.
    VanishedKeepingPenalty { stage: usize },
    /// The interface's counters were reset (re-created or host reboot).
    CountersReset,
}

/// Per-interface state of the whole host.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    interfaces: BTreeMap<IfName, InterfaceState>,
    /// Which instance each interface name belongs to (`None`: no pattern matches), so the
    /// regexes run once per name rather than once per name per tick.
    matches: FastMap<IfName, Option<InstanceId>>,
    /// The patterns and claims `matches` was computed with; another set (a reload, a
    /// new inventory) clears it.
    matched_with: Option<(Arc<[InterfacePattern]>, Arc<Claims>)>,
    /// Whether the last tick changed anything a snapshot shows (rates, stages, presence).
    changed: bool,
    /// Period quota usage per (rule, instance).
    quotas: Quotas,
}

impl Policy {
    pub fn new() -> Self {
        Self::default()
    }

    /// Put back a penalty read from the state file after a restart. The interface counts
    /// as absent until the sampler sees it; its first sample is a gap (rule 5).
    pub fn restore(&mut self, name: IfName, instance: InstanceId, penalty: PenaltyState) {
        let mut st = InterfaceState::new(instance);
        st.penalty = PenaltyState {
            timer: None,
            ..penalty
        };
        self.interfaces.insert(name, st);
    }

    /// The period quotas (what the ledger persists and `list` shows).
    pub fn quotas(&self) -> &Quotas {
        &self.quotas
    }

    /// Replace the quotas: with the persisted ones at start, or with a copy that was
    /// advanced and committed to the ledger (see [`Quotas::step`]).
    pub fn set_quotas(&mut self, quotas: Quotas) {
        if quotas != self.quotas {
            self.changed = true;
        }
        self.quotas = quotas;
    }

    /// An operator's reset of one quota count (see [`Quotas::reset`]); persisted by the
    /// next charge, like any change of the counts.
    pub fn reset_quota(
        &mut self,
        cfg: &Config,
        rule: &crate::model::ids::RuleName,
        instance: &InstanceId,
        at: jiff::Timestamp,
    ) -> Option<Option<quota::QuotaEvent>> {
        let out = self.quotas.reset(cfg, rule, instance, at)?;
        self.changed = true;
        Some(out)
    }

    pub fn interfaces(&self) -> impl Iterator<Item = (&IfName, &InterfaceState)> {
        self.interfaces.iter()
    }

    /// Whether the last tick changed anything `sluice list` shows: lets the daemon skip
    /// rewriting an identical state file without comparing it record by record.
    pub fn changed(&self) -> bool {
        self.changed
    }

    pub fn get(&self, name: &IfName) -> Option<&InterfaceState> {
        self.interfaces.get(name)
    }

    /// End an interface's running penalty now (an operator's release): back to stage 0,
    /// its escalation timer cleared so sustained use must build up again from scratch.
    /// `None` when the interface is unknown or not penalised.
    pub fn release(&mut self, cfg: &Config, name: &IfName) -> Option<Event> {
        let machine = PenaltyMachine::new(&cfg.penalty.stages);
        let st = self.interfaces.get_mut(name)?;
        if st.penalty.stage == 0 {
            return None;
        }
        let from = st.penalty.stage;
        st.penalty = PenaltyState::default();
        self.changed = true;
        let st = &self.interfaces[name];
        Some(stage_event(
            cfg,
            &machine,
            &self.quotas,
            name,
            st,
            StageChange {
                from,
                to: 0,
                cause: ChangeCause::Released,
            },
            None,
        ))
    }

    /// Advance the whole host by one tick. `samples` is one dump of every interface
    /// (those no pattern matches are ignored).
    pub fn tick(&mut self, cfg: &Config, samples: &[Sample], now: Tick) -> Vec<Event> {
        let machine = PenaltyMachine::new(&cfg.penalty.stages);
        let max_gap = cfg.agent.interval * 2;
        let mut events = Vec::new();
        let mut changed = false;
        for st in self.interfaces.values_mut() {
            st.was_present = std::mem::replace(&mut st.present, false);
        }
        if !self.matched_with.as_ref().is_some_and(|(p, c)| {
            Arc::ptr_eq(p, &cfg.agent.interfaces) && Arc::ptr_eq(c, &cfg.claims)
        }) {
            self.matches.clear();
            self.matched_with = Some((cfg.agent.interfaces.clone(), cfg.claims.clone()));
        }
        // Forget names long gone (tap churn over months), keeping the map near the host's size.
        if self.matches.len() > 2 * samples.len() + 64 {
            let live: std::collections::HashSet<&IfName> =
                samples.iter().map(|s| &s.name).collect();
            self.matches.retain(|name, _| live.contains(name));
        }

        for sample in samples {
            let instance = self
                .matches
                .entry(sample.name.clone())
                .or_insert_with(|| cfg.instance_of(&sample.name));
            let Some(instance) = instance else { continue };
            let st = match self.interfaces.get_mut(&sample.name) {
                Some(st) => st,
                None => self
                    .interfaces
                    .entry(sample.name.clone())
                    .or_insert_with(|| InterfaceState::new(instance.clone())),
            };
            if st.instance != *instance {
                st.instance = instance.clone();
            }
            let cur = Counters {
                ifindex: sample.ifindex,
                rx_bytes: sample.rx_bytes,
                tx_bytes: sample.tx_bytes,
                rx_packets: sample.rx_packets,
                tx_packets: sample.tx_packets,
            };
            let mut measured = None;
            let before = (st.upload.take(), st.download.take());
            let packets_before = (st.upload_pps.take(), st.download_pps.take());
            if let Some((prev, at)) = st.last {
                // In memory only, so always this boot's.
                let delta = counter_delta(prev, Boot::This, cur);
                if delta.reset {
                    events.push(event(&sample.name, &st.instance, EventKind::CountersReset));
                }
                // Rule 5: a gap (too long, or the clock went backwards) makes the rate unknown.
                let elapsed = now
                    .mono
                    .checked_sub(at)
                    .filter(|e| !e.is_zero() && *e <= max_gap);
                if let Some(elapsed) = elapsed {
                    st.upload = Rate::from_bytes_over(delta.rx_bytes, elapsed);
                    st.download = Rate::from_bytes_over(delta.tx_bytes, elapsed);
                    st.upload_pps = PacketRate::from_packets_over(delta.rx_packets, elapsed);
                    st.download_pps = PacketRate::from_packets_over(delta.tx_packets, elapsed);
                    measured = st.upload.map(|upload| Measured {
                        upload,
                        upload_pps: st.upload_pps,
                        interval_start: at,
                    });
                }
            } else if st.penalty.stage > 0 {
                events.push(event(
                    &sample.name,
                    &st.instance,
                    EventKind::Returned {
                        stage: st.penalty.stage,
                    },
                ));
            }
            st.last = Some((cur, now.mono));
            st.ifindex = Some(sample.ifindex);
            st.present = true;
            changed |= !st.was_present
                || before != (st.upload, st.download)
                || packets_before != (st.upload_pps, st.download_pps);
            let base = cfg.base_rate(&st.instance);
            if let Some(change) = machine.step(&mut st.penalty, measured, now, base) {
                changed = true;
                events.push(stage_event(
                    cfg,
                    &machine,
                    &self.quotas,
                    &sample.name,
                    st,
                    change,
                    measured,
                ));
            }
        }

        // Interfaces not in this dump: keep running penalties (expiring them on time),
        // forget the rest.
        let mut gone = Vec::new();
        for (name, st) in self.interfaces.iter_mut().filter(|(_, s)| !s.present) {
            changed |= st.was_present;
            st.last = None;
            st.upload = None;
            st.download = None;
            if let Some(change) = machine.expire(&mut st.penalty, now.wall) {
                changed = true;
                events.push(stage_event(
                    cfg,
                    &machine,
                    &self.quotas,
                    name,
                    st,
                    change,
                    None,
                ));
            }
            if st.penalty.stage == 0 {
                gone.push(name.clone());
            } else if st.was_present {
                events.push(event(
                    name,
                    &st.instance,
                    EventKind::VanishedKeepingPenalty {
                        stage: st.penalty.stage,
                    },
                ));
            }
        }
        changed |= !gone.is_empty();
        for name in gone {
            self.interfaces.remove(&name);
        }
        self.changed = changed;
        events
    }

    /// What every present interface should be limited to now, in name order (the order
    /// of [`Policy::interfaces`], so callers can walk both together without lookups).
    pub fn verdicts(&self, cfg: &Config) -> Vec<(IfName, Verdict)> {
        let mut out = Vec::new();
        self.verdicts_into(cfg, &mut out);
        out
    }

    /// [`Policy::verdicts`] into `out`'s allocation (cleared first). The agent passes last
    /// tick's vector: at 10,000 interfaces a verdict vector is ~2 MB, and building a new
    /// one by doubling beside the old one held three of them at the peak.
    pub fn verdicts_into(&self, cfg: &Config, out: &mut Vec<(IfName, Verdict)>) {
        let machine = PenaltyMachine::new(&cfg.penalty.stages);
        out.clear();
        out.reserve_exact(self.interfaces.len());
        out.extend(
            self.interfaces
                .iter()
                .filter(|(_, s)| s.present)
                .map(|(name, st)| (name.clone(), verdict_for(cfg, &machine, &self.quotas, st))),
        );
    }

    /// The verdict for one present interface.
    pub fn verdict(&self, cfg: &Config, name: &IfName) -> Option<Verdict> {
        let st = self.interfaces.get(name).filter(|s| s.present)?;
        Some(verdict_for(
            cfg,
            &PenaltyMachine::new(&cfg.penalty.stages),
            &self.quotas,
            st,
        ))
    }
}

/// The penalty machine's limit merged with the exceeded quota rules: the lower rate wins
/// in each direction, and the reason names whichever won.
fn verdict_for(
    cfg: &Config,
    machine: &PenaltyMachine<'_>,
    quotas: &Quotas,
    st: &InterfaceState,
) -> Verdict {
    let base = cfg.base_rate(&st.instance);
    let stage = st.penalty.stage;
    let holds_base = cfg.holds_base(&st.instance);
    let (mut upload, mut reason) = match machine.stage_rate(stage, base) {
        Some(r) => (Some(r), Reason::Penalty { stage }),
        None if holds_base => (Some(base), Reason::Base),
        None => (None, Reason::Unlimited),
    };
    let (mut download, mut download_reason) =
        match cfg.download_rate(&st.instance).filter(|_| holds_base) {
            Some(r) => (Some(r), Reason::Base),
            None => (None, Reason::Unlimited),
        };
    let in_force = quotas.in_force(cfg, &st.instance);
    if let Some(f) = &in_force {
        let tighter = |cur: Option<Rate>, rule: Option<&(Rate, crate::model::ids::RuleName)>| {
            rule.filter(|(r, _)| cur.is_none_or(|c| *r < c)).cloned()
        };
        if let Some((r, rule)) = tighter(upload, f.upload.as_ref()) {
            upload = Some(r);
            reason = Reason::Rule { rule };
        }
        if let Some((r, rule)) = tighter(download, f.download.as_ref()) {
            download = Some(r);
            download_reason = Reason::Rule { rule };
        }
    }
    let limit = |rate: Rate| Limit {
        rate,
        burst: Burst::for_rate(rate, cfg.penalty.burst),
    };
    Verdict {
        instance: st.instance.clone(),
        ifindex: st.ifindex.unwrap_or(0),
        stage,
        upload: upload.map(limit),
        download: download.map(limit),
        // The lowest of the stage's packet limit, the instance's own and an exceeded
        // rule's.
        packets: [
            machine.stage_packet_rate(stage),
            cfg.packet_rate(&st.instance).filter(|_| holds_base),
            in_force
                .as_ref()
                .and_then(|f| f.packets.as_ref())
                .map(|p| p.0),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(PacketLimit::for_rate),
        reason,
        download_reason,
        disconnect: in_force
            .as_ref()
            .is_some_and(|f| f.action == ActionKind::Disconnect),
        rule: in_force.map(|f| (f.action, f.rule)),
        until: st.penalty.until,
    }
}

fn event(name: &IfName, instance: &InstanceId, kind: EventKind) -> Event {
    Event {
        interface: name.clone(),
        instance: instance.clone(),
        kind,
    }
}

/// `upload_limit` is what the interface gets after the change: the penalty's limit, or an
/// exceeded rule's lower rate.
fn stage_event(
    cfg: &Config,
    machine: &PenaltyMachine<'_>,
    quotas: &Quotas,
    name: &IfName,
    st: &InterfaceState,
    change: StageChange,
    measured: Option<Measured>,
) -> Event {
    let upload_limit = verdict_for(cfg, machine, quotas, st).upload.map(|l| l.rate);
    event(
        name,
        &st.instance,
        EventKind::Stage {
            change,
            upload_limit,
            usage: measured.map(|m| m.upload),
            until: st.penalty.until,
        },
    )
}

#[cfg(test)]
mod tests;
