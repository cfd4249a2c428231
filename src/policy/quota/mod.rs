//! Period quotas: each rule's usage per instance in its current period, the thresholds
//! and exceeds it crosses, and the reset at the period's end.
//!
//! Pure: bytes come in as [`Spent`] (what the ledger counted over an interval), time as
//! the caller's timestamps. Everything here is edge-triggered — a threshold or an exceed
//! is reported once per period, a restore once at the reset — and the whole state is a
//! set of [`QuotaUsage`] rows the ledger persists in the same transaction as the bytes,
//! so a restart neither forgets an exceed nor repeats its action.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;

use crate::account::quota_counts::{QuotaChanges, QuotaUsage, Spent};
use crate::config::{ActionKind, Config, RuleConfig};
use crate::model::calendar::{Period, period_containing};
use crate::model::ids::{InstanceId, RuleName};
use crate::model::units::{Bytes, PacketRate, Rate};

/// What a quota did.
#[derive(Debug, Clone, PartialEq)]
pub enum QuotaState {
    /// Usage reached this share of the limit.
    Threshold(f64),
    /// Usage went past the limit: the rule's action starts.
    Exceeded,
    /// The period ended (or the rule stopped covering the instance): the action ends.
    Restored,
}

impl QuotaState {
    pub fn as_str(&self) -> &'static str {
        match self {
            QuotaState::Threshold(_) => "threshold",
            QuotaState::Exceeded => "exceeded",
            QuotaState::Restored => "restored",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct QuotaEvent {
    pub at: Timestamp,
    pub rule: RuleName,
    pub instance: InstanceId,
    pub state: QuotaState,
    pub action: ActionKind,
    /// Usage counted in the rule's direction and the limit, in the period concerned.
    pub used: Bytes,
    /// The part of `used` other hosts counted (a store quota of a migrated instance).
    pub elsewhere: u64,
    pub limit: Bytes,
    pub period: Period,
}

/// The strictest exceeded rule of an instance, merged: what the verdict applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InForce {
    /// The strictest action and the rule that has it (first in config order on a tie).
    pub action: ActionKind,
    pub rule: RuleName,
    /// The lowest `rate_limit` rate of each direction among the exceeded rules.
    pub upload: Option<(Rate, RuleName)>,
    pub download: Option<(Rate, RuleName)>,
    /// The lowest `rate_limit` packet rate among them.
    pub packets: Option<(PacketRate, RuleName)>,
}

/// Every (rule, instance) count of the host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Quotas {
    usage: BTreeMap<(RuleName, InstanceId), QuotaUsage>,
    /// Rows changed or removed since the last [`Quotas::take_changes`].
    changed: BTreeSet<(RuleName, InstanceId)>,
    /// The rules' generation the counts were last judged against as a whole: only new
    /// rules (a limit raised, a top-up, the fleet's count) can move a count without bytes.
    judged: Option<u64>,
}

impl Quotas {
    /// Rebuild from persisted rows.
    pub fn from_rows(rows: impl IntoIterator<Item = ((RuleName, InstanceId), QuotaUsage)>) -> Self {
        Quotas {
            usage: rows.into_iter().collect(),
            changed: BTreeSet::new(),
            judged: None,
        }
    }

    pub fn get(&self, rule: &RuleName, instance: &InstanceId) -> Option<&QuotaUsage> {
        self.usage.get(&(rule.clone(), instance.clone()))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&(RuleName, InstanceId), &QuotaUsage)> {
        self.usage.iter()
    }

    /// Count `spent` and roll over every period that ended by `at`.
    ///
    /// Bytes whose interval straddles a period end are split by time between the two
    /// periods (the ledger's gap spreading does the same), so a tick that lands after a
    /// boundary still charges the old period with its share.
    pub fn step(&mut self, cfg: &Config, spent: &[Spent], at: Timestamp) -> Vec<QuotaEvent> {
        let mut events = Vec::new();
        self.forget_uncovered(cfg, at, &mut events);
        let rules = Some(cfg.rules.generation());
        if self.judged != rules {
            self.rejudge(cfg, at, &mut events);
            self.judged = rules;
        }
        for s in spent {
            let tags = cfg.tags(&s.instance);
            for rule in cfg.rules.covering(&s.instance, tags) {
                self.charge(rule, s, &mut events);
            }
        }
        self.roll(cfg, at, &mut events);
        events
    }

    /// Judge every count again against its rule as it is now, not only those with new
    /// bytes (run when the rules were replaced): a count other hosts moved (a pool's member elsewhere sent more) crosses
    /// its thresholds and limit here; an exceed no longer over the limit — a top-up
    /// bought, a limit raised, the fleet's count corrected — lifts as a period's end
    /// would: a `restored` event (links raised, `on_reset` run). The period's thresholds
    /// stay announced.
    fn rejudge(&mut self, cfg: &Config, at: Timestamp, events: &mut Vec<QuotaEvent>) {
        // A rule the store judged exceeded holds for its instances even before this
        // host counted a byte of theirs in the period (one migrated here idle).
        for rule in cfg.rules.iter() {
            let Some(verdict) = rule.judged.filter(|v| v.exceeded) else {
                continue;
            };
            let Ok(period) = period_containing(rule.period, at, &rule.timezone) else {
                continue;
            };
            if period.start != verdict.period_start {
                continue;
            }
            for instance in &rule.instances {
                self.usage
                    .entry((rule.name.clone(), instance.clone()))
                    .or_insert_with(|| QuotaUsage::fresh(period));
            }
        }
        for ((name, instance), u) in self.usage.iter_mut() {
            if at >= u.period.end {
                continue;
            }
            let Some(rule) = cfg.rules.get(name) else {
                continue;
            };
            if !u.exceeded {
                let before = (u.notified, u.exceeded);
                crossings(rule, instance, u, at, events);
                if (u.notified, u.exceeded) != before {
                    self.changed.insert((name.clone(), instance.clone()));
                }
                continue;
            }
            let elsewhere = rule.elsewhere_in(u.period.start);
            let used = rule
                .direction
                .of(u.upload, u.download)
                .saturating_add(elsewhere);
            if rule.is_over(used, u.period.start) {
                continue;
            }
            events.push(QuotaEvent {
                at,
                rule: name.clone(),
                instance: instance.clone(),
                state: QuotaState::Restored,
                action: rule.action,
                used: Bytes::new(used),
                elsewhere,
                limit: rule.limit,
                period: u.period,
            });
            u.exceeded = false;
            self.changed.insert((name.clone(), instance.clone()));
        }
    }

    /// The earliest period end after `now` among the periods being counted: the daemon
    /// ticks there so no period ever shares a sample with the next.
    pub fn next_boundary(&self, now: Timestamp) -> Option<Timestamp> {
        self.usage
            .values()
            .map(|u| u.period.end)
            .filter(|e| *e > now)
            .min()
    }

    /// The merged effect of the rules `instance` exceeded (`None`: none, or only ones no
    /// longer in the config).
    pub fn in_force(&self, cfg: &Config, instance: &InstanceId) -> Option<InForce> {
        let mut out: Option<InForce> = None;
        for rule in cfg.rules.covering(instance, cfg.tags(instance)) {
            let Some(u) = self.usage.get(&(rule.name.clone(), instance.clone())) else {
                continue;
            };
            if !u.exceeded {
                continue;
            }
            let f = out.get_or_insert_with(|| InForce {
                action: rule.action,
                rule: rule.name.clone(),
                upload: None,
                download: None,
                packets: None,
            });
            if rule.action > f.action {
                f.action = rule.action;
                f.rule = rule.name.clone();
            }
            if rule.action == ActionKind::RateLimit {
                lowest(&mut f.upload, rule.upload_rate, &rule.name);
                lowest(&mut f.download, rule.download_rate, &rule.name);
                lowest(&mut f.packets, rule.packet_rate, &rule.name);
            }
        }
        out
    }

    /// An operator's reset of one count: the current period starts over from zero (its
    /// thresholds may fire again). When the count was exceeded, the returned `Restored`
    /// event lifts the action, as a period's end would. `None`: nothing is counted for
    /// (rule, instance) — unknown, or not covered.
    pub fn reset(
        &mut self,
        cfg: &Config,
        rule: &RuleName,
        instance: &InstanceId,
        at: Timestamp,
    ) -> Option<Option<QuotaEvent>> {
        let key = (rule.clone(), instance.clone());
        let u = self.usage.get_mut(&key)?;
        let before = u.clone();
        *u = QuotaUsage::fresh(before.period);
        self.changed.insert(key);
        let cfg_rule = cfg.rules.get(rule)?;
        Some(before.exceeded.then(|| QuotaEvent {
            at,
            rule: rule.clone(),
            instance: instance.clone(),
            state: QuotaState::Restored,
            action: cfg_rule.action,
            used: Bytes::new(0),
            elsewhere: 0,
            limit: cfg_rule.limit,
            period: before.period,
        }))
    }

    /// The changes since the last call, for the ledger to persist.
    pub fn take_changes(&mut self) -> QuotaChanges {
        std::mem::take(&mut self.changed)
            .into_iter()
            .map(|key| {
                let row = self.usage.get(&key).cloned();
                (key, row)
            })
            .collect()
    }

    fn charge(&mut self, rule: &RuleConfig, s: &Spent, events: &mut Vec<QuotaEvent>) {
        let key = (rule.name.clone(), s.instance.clone());
        let (mut up, mut down, mut from) = (s.upload, s.download, s.from.min(s.to));
        loop {
            let u = match self.usage.get_mut(&key) {
                Some(u) => u,
                None => {
                    let Ok(period) = period_containing(rule.period, from, &rule.timezone) else {
                        return;
                    };
                    self.usage
                        .entry(key.clone())
                        .or_insert(QuotaUsage::fresh(period))
                }
            };
            self.changed.insert(key.clone());
            // The part of (from, to] that falls in this period.
            let (now_up, now_down) = if s.to <= u.period.end {
                (up, down)
            } else {
                let total = s.to.duration_since(from).as_millis().max(1);
                let inside = u
                    .period
                    .end
                    .duration_since(from)
                    .as_millis()
                    .clamp(0, total);
                let share = |b: u64| (u128::from(b) * inside as u128 / total as u128) as u64;
                (share(up), share(down))
            };
            u.upload = u.upload.saturating_add(now_up);
            u.download = u.download.saturating_add(now_down);
            up -= now_up;
            down -= now_down;
            crossings(rule, &s.instance, u, s.to.min(u.period.end), events);
            if s.to <= u.period.end {
                return;
            }
            // The rest belongs to the next period(s).
            from = u.period.end;
            let Ok(next) = period_containing(rule.period, from, &rule.timezone) else {
                return;
            };
            restore_into(rule, &s.instance, u, next, from, events);
        }
    }

    fn roll(&mut self, cfg: &Config, at: Timestamp, events: &mut Vec<QuotaEvent>) {
        for ((name, instance), u) in self.usage.iter_mut() {
            if at < u.period.end {
                continue;
            }
            // Rows without a rule were dropped by `forget_uncovered`.
            let Some(rule) = cfg.rules.get(name) else {
                continue;
            };
            let Ok(next) = period_containing(rule.period, at, &rule.timezone) else {
                continue;
            };
            let end = u.period.end;
            restore_into(rule, instance, u, next, end, events);
            self.changed.insert((name.clone(), instance.clone()));
        }
    }

    /// Drop the rows of rules that are gone or disabled, or no longer cover their
    /// instance; an exceeded one is restored (its action must not outlive the rule).
    fn forget_uncovered(&mut self, cfg: &Config, at: Timestamp, events: &mut Vec<QuotaEvent>) {
        let mut gone = Vec::new();
        for ((name, instance), u) in &self.usage {
            let rule = cfg.rules.get(name);
            let covered = rule.is_some_and(|r| r.covers(instance, cfg.tags(instance)));
            if covered {
                continue;
            }
            if u.exceeded {
                events.push(QuotaEvent {
                    at,
                    rule: name.clone(),
                    instance: instance.clone(),
                    state: QuotaState::Restored,
                    action: rule.map_or(ActionKind::Warn, |r| r.action),
                    used: Bytes::new(rule.map_or(u.upload + u.download, |r| {
                        r.direction
                            .of(u.upload, u.download)
                            .saturating_add(r.elsewhere_in(u.period.start))
                    })),
                    elsewhere: rule.map_or(0, |r| r.elsewhere_in(u.period.start)),
                    limit: rule.map_or(Bytes::new(0), |r| r.limit),
                    period: u.period,
                });
            }
            gone.push((name.clone(), instance.clone()));
        }
        for key in gone {
            self.usage.remove(&key);
            self.changed.insert(key);
        }
    }
}

fn lowest<R: Ord + Copy>(slot: &mut Option<(R, RuleName)>, rate: Option<R>, rule: &RuleName) {
    if let Some(r) = rate
        && slot.as_ref().is_none_or(|(cur, _)| r < *cur)
    {
        *slot = Some((r, rule.clone()));
    }
}

/// Report the thresholds and the exceed that `u`'s usage crossed (each once a period).
fn crossings(
    rule: &RuleConfig,
    instance: &InstanceId,
    u: &mut QuotaUsage,
    at: Timestamp,
    events: &mut Vec<QuotaEvent>,
) {
    // A store quota counts what the rest of the fleet counted too.
    let elsewhere = rule.elsewhere_in(u.period.start);
    let used = rule
        .direction
        .of(u.upload, u.download)
        .saturating_add(elsewhere);
    let limit = rule.limit.get();
    let event = |state| QuotaEvent {
        at,
        rule: rule.name.clone(),
        instance: instance.clone(),
        state,
        action: rule.action,
        used: Bytes::new(used),
        elsewhere,
        limit: rule.limit,
        period: u.period,
    };
    // Shares of a limit mean nothing for a rule the store judges.
    while let Some(f) = rule
        .notify_at
        .get(u.notified)
        .filter(|_| rule.judged.is_none())
    {
        if (used as f64) < f.get() * limit as f64 {
            break;
        }
        events.push(event(QuotaState::Threshold(f.get())));
        u.notified += 1;
    }
    if !u.exceeded && rule.is_over(used, u.period.start) {
        events.push(event(QuotaState::Exceeded));
        u.exceeded = true;
    }
}

/// Start `next` on `u`, reporting the restore of an exceeded period.
fn restore_into(
    rule: &RuleConfig,
    instance: &InstanceId,
    u: &mut QuotaUsage,
    next: Period,
    at: Timestamp,
    events: &mut Vec<QuotaEvent>,
) {
    if u.exceeded {
        events.push(QuotaEvent {
            at,
            rule: rule.name.clone(),
            instance: instance.clone(),
            state: QuotaState::Restored,
            action: rule.action,
            used: Bytes::new(
                rule.direction
                    .of(u.upload, u.download)
                    .saturating_add(rule.elsewhere_in(u.period.start)),
            ),
            elsewhere: rule.elsewhere_in(u.period.start),
            limit: rule.limit,
            period: u.period,
        });
    }
    *u = QuotaUsage::fresh(next);
}

#[cfg(test)]
mod tests;
