//! What the policy wants for one interface now, and the burst that goes with a limit.

use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::config::ActionKind;
use crate::config::BurstSpec;
use crate::model::ids::{InstanceId, RuleName};
use crate::model::units::{PacketRate, Rate};

/// A burst size in bits. OVS takes it in kilobits (`ingress_policing_burst`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Burst(u64);

impl Burst {
    pub const fn from_bits(bits: u64) -> Self {
        Burst(bits)
    }
    pub const fn from_kb(kb: u64) -> Self {
        Burst(kb.saturating_mul(1000))
    }
    pub const fn kb(self) -> u64 {
        self.0 / 1000
    }

    /// The burst allowed with a limit of `rate`.
    ///
    /// Default: max(10 % of the rate, 2000 kbit), capped at one second of the rate. The
    /// 10 % keeps TCP from collapsing at high rates (a policer with a tiny bucket drops
    /// whole windows); the 2000 kbit floor covers a few full-size segments at low rates; the
    /// one-second cap stops the floor from letting a slow limit burst for seconds.
    pub fn for_rate(rate: Rate, spec: Option<BurstSpec>) -> Burst {
        let bps = rate.bits_per_sec();
        match spec {
            Some(BurstSpec::Percent(p)) => Burst((bps as f64 * p / 100.0).round() as u64),
            Some(BurstSpec::Absolute(size)) => Burst(size.bits_per_sec()),
            None => Burst((bps / 10).max(2_000_000).min(bps)),
        }
    }
}

/// Why an interface has the limit it has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Reason {
    /// Stage 0 with `enforce_base = true`: the base rate sold.
    Base,
    /// Stage 0 with `enforce_base = false`: no limit.
    Unlimited,
    /// A penalty stage (1..=N).
    Penalty { stage: usize },
    /// An exceeded quota rule (its `rate_limit`, `disconnect` or `shutdown`).
    Rule { rule: RuleName },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Base => f.write_str("base rate"),
            Reason::Unlimited => f.write_str("unlimited"),
            Reason::Penalty { stage } => write!(f, "penalty stage {stage}"),
            Reason::Rule { rule } => write!(f, "rule {rule}"),
        }
    }
}

/// A limit as a backend applies it (the burst is the OVS policer's; tc shapers size their
/// own bucket from the rate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    pub rate: Rate,
    pub burst: Burst,
}

/// An upload packet-rate limit as a backend applies it: OVS polices packets in kpkts/s
/// with a bucket in kpkts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PacketLimit {
    pub rate: PacketRate,
    /// The bucket, in thousands of packets: a tenth of a second of the rate, at least one
    /// (OVS's smallest). A short bucket, since what this limit is for — a flood — has no
    /// bursts worth letting through.
    pub burst_kpkts: u64,
}

impl PacketLimit {
    pub fn for_rate(rate: PacketRate) -> Self {
        PacketLimit {
            rate,
            burst_kpkts: rate.kpps().div_ceil(10).max(1),
        }
    }
}

/// What the policy wants for one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub instance: InstanceId,
    /// Where the interface is now (verdicts exist only for present interfaces).
    pub ifindex: u32,
    pub stage: usize,
    /// Upload (instance → host, host rx) limit; `None` means none.
    pub upload: Option<Limit>,
    /// Download (host → instance, host tx) limit; `None` means none. Not staged: the
    /// penalty is earned and paid on upload.
    pub download: Option<Limit>,
    /// Upload packet-rate limit; `None` means none. Not staged.
    pub packets: Option<PacketLimit>,
    pub reason: Reason,
    /// Why the download limit is what it is (`Base` for the rate sold).
    pub download_reason: Reason,
    /// The strictest exceeded rule's action and name, if any.
    pub rule: Option<(ActionKind, RuleName)>,
    /// The interface's link must be down (an exceeded `disconnect` rule).
    pub disconnect: bool,
    pub until: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Rate {
        s.parse().unwrap()
    }

    #[test]
    fn default_burst_rule() {
        // (rate, expected burst in kbit)
        let table = [
            ("1000mbit", 100_000), // 10 %
            ("900mbit", 90_000),
            ("20mbit", 2_000), // 10 % = 2000 kbit exactly
            ("10mbit", 2_000), // floor
            ("1mbit", 1_000),  // floor capped at one second of the rate
            ("1500kbit", 1_500),
        ];
        for (rate, kb) in table {
            assert_eq!(Burst::for_rate(r(rate), None).kb(), kb, "{rate}");
        }
    }

    #[test]
    fn configured_burst_wins() {
        assert_eq!(
            Burst::for_rate(r("100mbit"), Some(BurstSpec::Percent(25.0))).kb(),
            25_000
        );
        assert_eq!(
            Burst::for_rate(r("100mbit"), Some(BurstSpec::Absolute(r("2000kbit")))).kb(),
            2_000
        );
    }
}
