//! Retry delays for whatever the agent sends out (webhooks, reports to the store): each
//! failure doubles the wait up to a ceiling, one success starts it over.

use std::time::Duration;

/// How much of each delay is random.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// The delay as it is: one receiver's retries, where lockstep does not matter.
    None,
    /// "Equal jitter": half fixed, half random, so a fleet of agents that lost the store
    /// together does not come back in lockstep.
    Equal,
}

/// Doubling delays from `first` up to `longest`.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    longest: Duration,
    next: Duration,
    jitter: Jitter,
}

impl Backoff {
    pub fn new(first: Duration, longest: Duration, jitter: Jitter) -> Backoff {
        Backoff {
            first,
            longest,
            next: first,
            jitter,
        }
    }

    /// After a success: the next failure waits `first` again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// Jump to the ceiling (the other side said no, not "not now").
    pub fn longest(&mut self) -> Duration {
        self.next = self.longest;
        self.step()
    }

    /// The wait before the next attempt.
    pub fn step(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.longest);
        match self.jitter {
            Jitter::None => base,
            Jitter::Equal => {
                let half = base / 2;
                let r = f64::from(getrandom::u32().unwrap_or(u32::MAX / 2)) / f64::from(u32::MAX);
                half + half.mul_f64(r)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn delays_double_to_the_ceiling_and_start_over_after_a_success() {
        let mut b = Backoff::new(S(2), S(60), Jitter::None);
        let waits: Vec<Duration> = (0..7).map(|_| b.step()).collect();
        assert_eq!(waits, [S(2), S(4), S(8), S(16), S(32), S(60), S(60)]);
        b.reset();
        assert_eq!(b.step(), S(2));
        assert_eq!(b.longest(), S(60));
        assert_eq!(b.step(), S(60));
    }

    #[test]
    fn equal_jitter_stays_between_half_and_all_of_each_delay() {
        let mut b = Backoff::new(S(1), S(60), Jitter::Equal);
        // (the un-jittered delay of each step)
        for base in [1, 2, 4, 8, 16, 32, 60, 60] {
            let w = b.step();
            assert!(
                w >= S(base) / 2 && w <= S(base),
                "step of {base}s waited {w:?}"
            );
        }
    }
}
