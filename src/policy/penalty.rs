//! The staged penalty machine for one interface. Pure: it is told the time and the
//! measured upload rate, and never reads a clock or touches the system.
//!
//! The rules (see DESIGN.md and the tests below, which follow them line by line):
//! 1. In stage k < N, stage k+1's condition is `upload ≥ stage[k+1].usage × base`, or
//!    `upload packets/s ≥ stage[k+1].pps` where the stage sets one.
//!    Its timer starts at the beginning of the first interval in which it held (the
//!    previous sample's time) and is cleared by any interval in which it did not.
//!    When `now − since ≥ stage[k+1].trigger`, the interface moves to stage k+1 with
//!    limit `stage[k+1].rate × base` until `now + stage[k+1].duration`.
//! 2. The timer for stage k+1 only runs while in stage k; it starts fresh on entry.
//! 3. Escalation is checked before expiry; at expiry the interface returns to stage 0.
//! 4. An unknown rate (a sampling gap) clears the timer; a running penalty keeps its
//!    wall-clock expiry.
//!
//! Timers use the monotonic clock (they measure sustained use); expiry uses the wall
//! clock, because it must survive a restart and is shown to people.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::Tick;
use crate::config::StageConfig;
use crate::model::units::{PacketRate, Rate};

/// What the machine remembers about one interface.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PenaltyState {
    /// 0 = unrestricted (base rate); 1..=N = penalty stages.
    pub stage: usize,
    /// When the running penalty ends (wall clock); `None` in stage 0.
    pub until: Option<Timestamp>,
    /// When the running penalty began (wall clock), for people.
    pub since: Option<Timestamp>,
    /// Monotonic start of the sustained-use condition for the next stage. Not persisted:
    /// a restart is a sampling gap, which clears it anyway.
    #[serde(skip)]
    pub timer: Option<Duration>,
}

/// What the machine measured in one interval.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    /// Average upload over the interval.
    pub upload: Rate,
    /// Upload packets per second over the interval, where known.
    pub upload_pps: Option<PacketRate>,
    /// Monotonic time of the interval's start (the previous sample).
    pub interval_start: Duration,
}

/// A change of stage, for logs, events and `simulate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageChange {
    pub from: usize,
    pub to: usize,
    pub cause: ChangeCause,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeCause {
    /// Sustained use reached the next stage's trigger.
    Escalated,
    /// The penalty's duration ran out.
    Expired,
    /// An operator ended it early (`POST /v1/interfaces/{name}/release`).
    Released,
}

/// The configured stages, applied to one interface's state at a time.
#[derive(Debug, Clone, Copy)]
pub struct PenaltyMachine<'a> {
    stages: &'a [StageConfig],
}

impl<'a> PenaltyMachine<'a> {
    pub fn new(stages: &'a [StageConfig]) -> Self {
        PenaltyMachine { stages }
    }

    /// The upload limit stage `stage` imposes on an instance sold `base`; `None` in stage 0.
    pub fn stage_rate(&self, stage: usize, base: Rate) -> Option<Rate> {
        let s = self.stages.get(stage.checked_sub(1)?)?;
        // A stage of a small base rate may scale under what a backend can hold: held
        // at the floor, so the limit reported is the limit enforced.
        Some(base.scaled(s.rate).max(Rate::MIN_LIMIT))
    }

    /// The packet-rate limit stage `stage` sets; `None` in stage 0 or when it sets none.
    pub fn stage_packet_rate(&self, stage: usize) -> Option<PacketRate> {
        self.stages.get(stage.checked_sub(1)?)?.packet_rate
    }

    /// Advance one tick. `measured` is `None` when this tick's rate is unknown (gap).
    pub fn step(
        &self,
        st: &mut PenaltyState,
        measured: Option<Measured>,
        now: Tick,
        base: Rate,
    ) -> Option<StageChange> {
        let mut change = None;
        // Rule 1, 2, 4: the condition timer for the next stage.
        match (measured, self.stages.get(st.stage)) {
            (Some(m), Some(next)) => {
                let flooding = next
                    .pps
                    .is_some_and(|p| m.upload_pps.is_some_and(|x| x >= p));
                if m.upload >= base.scaled(next.usage) || flooding {
                    let since = *st.timer.get_or_insert(m.interval_start);
                    if now.mono.saturating_sub(since) >= next.trigger {
                        let from = st.stage;
                        self.enter(st, from + 1, now.wall);
                        change = Some(StageChange {
                            from,
                            to: from + 1,
                            cause: ChangeCause::Escalated,
                        });
                    }
                } else {
                    st.timer = None;
                }
            }
            _ => st.timer = None,
        }
        // Rule 3: expiry after escalation.
        if change.is_none()
            && let Some(expired) = self.expire(st, now.wall)
        {
            change = Some(expired);
        }
        change
    }

    /// Return to stage 0 if the running penalty has ended at `wall`. Used by `step` and for
    /// interfaces that are absent this tick.
    pub fn expire(&self, st: &mut PenaltyState, wall: Timestamp) -> Option<StageChange> {
        if st.stage > 0 && st.until.is_none_or(|until| wall >= until) {
            let from = st.stage;
            *st = PenaltyState::default();
            return Some(StageChange {
                from,
                to: 0,
                cause: ChangeCause::Expired,
            });
        }
        None
    }

    fn enter(&self, st: &mut PenaltyState, stage: usize, wall: Timestamp) {
        let duration = self.stages[stage - 1].duration;
        let span = SignedDuration::try_from(duration).unwrap_or(SignedDuration::MAX);
        st.stage = stage;
        st.since = Some(wall);
        st.until = Some(wall.checked_add(span).unwrap_or(Timestamp::MAX));
        st.timer = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StageConfig;
    use crate::model::units::Fraction;

    const BASE: Rate = Rate::from_bits_per_sec(1_000_000_000);

    fn tick(t: u64) -> Tick {
        Tick::simulated(t as f64)
    }

    fn pct(p: u64) -> Rate {
        Rate::from_bits_per_sec(BASE.bits_per_sec() / 100 * p)
    }

    /// Run the machine over samples every `step` seconds from t=0 with the upload given
    /// by `load(t)` for the interval ending at t; returns (t, from, to) of every change.
    fn run(
        stages: &[StageConfig],
        until: u64,
        step: u64,
        load: impl Fn(u64) -> Option<Rate>,
    ) -> Vec<(u64, usize, usize)> {
        let m = PenaltyMachine::new(stages);
        let mut st = PenaltyState::default();
        let mut out = Vec::new();
        let mut t = 0;
        let mut prev: Option<u64> = None;
        while t <= until {
            let measured = prev.and_then(|p| {
                load(t).map(|upload| Measured {
                    upload,
                    upload_pps: None,
                    interval_start: Duration::from_secs(p),
                })
            });
            if let Some(c) = m.step(&mut st, measured, tick(t), BASE) {
                out.push((t, c.from, c.to));
            }
            prev = Some(t);
            t += step;
        }
        out
    }

    #[test]
    fn worked_example_from_the_spec() {
        // Seed defaults, 60 s interval, upload steadily at 95 % of base from t=0.
        let stages = StageConfig::seed_defaults();
        let changes = run(&stages, 7300, 60, |_| Some(pct(95)));
        assert_eq!(
            changes,
            vec![(900, 0, 1), (2700, 1, 2), (6300, 2, 0), (7200, 0, 1)]
        );
    }

    #[test]
    fn stage_limits_are_fractions_of_base() {
        let stages = StageConfig::seed_defaults();
        let m = PenaltyMachine::new(&stages);
        assert_eq!(m.stage_rate(0, BASE), None);
        assert_eq!(m.stage_rate(1, BASE), Some(pct(90)));
        assert_eq!(m.stage_rate(2, BASE), Some(pct(80)));
        assert_eq!(m.stage_rate(3, BASE), None);
        // A stage under what OVS can hold is held at 1 kbit, never at 0 (= no policing).
        let tiny = Rate::from_bits_per_sec(1_200);
        assert_eq!(m.stage_rate(2, tiny), Some(Rate::MIN_LIMIT));
    }

    #[test]
    fn one_quiet_interval_clears_the_timer() {
        let stages = StageConfig::seed_defaults();
        // Busy, except the interval ending at t=600: the timer restarts from 600.
        let changes = run(&stages, 1600, 60, |t| {
            Some(if t == 600 { pct(50) } else { pct(95) })
        });
        assert_eq!(changes, vec![(1500, 0, 1)]);
    }

    #[test]
    fn usage_exactly_at_the_threshold_counts() {
        let stages = StageConfig::seed_defaults();
        assert_eq!(run(&stages, 900, 60, |_| Some(pct(90))), vec![(900, 0, 1)]);
        let just_below = Rate::from_bits_per_sec(pct(90).bits_per_sec() - 1);
        assert_eq!(run(&stages, 900, 60, |_| Some(just_below)), vec![]);
    }

    #[test]
    fn judged_against_base_not_the_current_limit() {
        // In stage 1 (limit 90 %) the instance can only push 90 %: stage 2 needs ≥ 80 % of
        // base, which 90 % is. At 85 % (above 80 %) it still escalates; at 75 % it does not.
        let stages = StageConfig::seed_defaults();
        let c = run(&stages, 2800, 60, |t| {
            Some(if t <= 900 { pct(95) } else { pct(85) })
        });
        assert_eq!(c[..2], [(900, 0, 1), (2700, 1, 2)]);
        let c = run(&stages, 2800, 60, |t| {
            Some(if t <= 900 { pct(95) } else { pct(75) })
        });
        assert_eq!(c, vec![(900, 0, 1), (2700, 1, 0)]);
    }

    #[test]
    fn escalation_is_checked_before_expiry() {
        // Stage 2's trigger equals stage 1's duration: reachable only because escalation
        // wins at t=2700, the same tick stage 1 would expire.
        let stages = StageConfig::seed_defaults();
        assert_eq!(stages[1].trigger, stages[0].duration);
        let c = run(&stages, 2700, 60, |_| Some(pct(95)));
        assert_eq!(c.last(), Some(&(2700, 1, 2)));
    }

    #[test]
    fn a_gap_clears_timers_but_keeps_the_penalty() {
        let stages = StageConfig::seed_defaults();
        // Rate unknown at t=1200 (gap): stage 1 stays until its expiry at 2700, but stage 2's
        // timer restarts from 1200 and would need until 3000, so stage 1 simply expires.
        let c = run(&stages, 3000, 60, |t| {
            if t == 1200 { None } else { Some(pct(95)) }
        });
        assert_eq!(c[..2], [(900, 0, 1), (2700, 1, 0)]);
    }

    #[test]
    fn timer_only_runs_in_the_stage_below() {
        // Three stages; in stage 1, stage 2's timer starts on entry even though use had
        // been high for long before.
        let f = |x| Fraction::new(x).unwrap();
        let s = |usage, trig, rate, dur| StageConfig {
            usage: f(usage),
            trigger: Duration::from_secs(trig),
            rate: f(rate),
            duration: Duration::from_secs(dur),
            pps: None,
            packet_rate: None,
        };
        let stages = vec![
            s(0.9, 60, 0.9, 600),
            s(0.9, 120, 0.5, 600),
            s(0.9, 60, 0.1, 60),
        ];
        let c = run(&stages, 400, 10, |_| Some(pct(95)));
        assert_eq!(
            c,
            vec![
                (60, 0, 1),
                (180, 1, 2),
                (240, 2, 3),
                (300, 3, 0),
                (360, 0, 1)
            ]
        );
    }

    #[test]
    fn a_packet_flood_escalates_where_its_bytes_would_not() {
        // Stage 1 at 90 % of base for 60 s, or at 50 kpps for 60 s; 10 s samples.
        let f = |x| Fraction::new(x).unwrap();
        let stages = [StageConfig {
            usage: f(0.9),
            trigger: Duration::from_secs(60),
            rate: f(0.5),
            duration: Duration::from_secs(600),
            pps: Some(PacketRate::from_per_sec(50_000)),
            packet_rate: Some(PacketRate::from_per_sec(10_000)),
        }];
        let m = PenaltyMachine::new(&stages);
        // (upload % of base, upload pps, tick at which stage 1 is entered)
        for (load, pps, entered) in [
            // 64-byte frames at 60 kpps: 31 Mbit/s, 3 % of base. The pps condition holds.
            (3, Some(60_000), Some(60)),
            // exactly at the threshold counts
            (3, Some(50_000), Some(60)),
            // under it, and bytes low too: never
            (3, Some(49_999), None),
            // packets unknown: bytes alone decide
            (3, None, None),
            (95, None, Some(60)),
        ] {
            let mut st = PenaltyState::default();
            let mut got = None;
            for t in (10..=120).step_by(10) {
                let measured = Measured {
                    upload: pct(load),
                    upload_pps: pps.map(PacketRate::from_per_sec),
                    interval_start: Duration::from_secs(t - 10),
                };
                if let Some(c) = m.step(&mut st, Some(measured), tick(t), BASE)
                    && got.is_none()
                {
                    got = Some((t, c.to));
                }
            }
            assert_eq!(got, entered.map(|t| (t, 1)), "{load}% at {pps:?} pps");
        }
        assert_eq!(
            m.stage_packet_rate(1),
            Some(PacketRate::from_per_sec(10_000))
        );
        assert_eq!(m.stage_packet_rate(0), None);
    }

    #[test]
    fn expiry_with_no_measurement() {
        let stages = StageConfig::seed_defaults();
        let m = PenaltyMachine::new(&stages);
        let mut st = PenaltyState::default();
        let busy = |start| {
            Some(Measured {
                upload: pct(95),
                upload_pps: None,
                interval_start: Duration::from_secs(start),
            })
        };
        m.step(&mut st, busy(0), tick(60), BASE);
        assert_eq!(
            m.step(&mut st, busy(60), tick(900), BASE).map(|c| c.to),
            Some(1)
        );
        assert_eq!(
            st.until,
            Some(tick(900).wall + SignedDuration::from_secs(1800))
        );
        assert_eq!(m.expire(&mut st, tick(2699).wall), None);
        let c = m.expire(&mut st, tick(2700).wall).unwrap();
        assert_eq!((c.from, c.to, c.cause), (1, 0, ChangeCause::Expired));
        assert_eq!(st, PenaltyState::default());
    }
}
