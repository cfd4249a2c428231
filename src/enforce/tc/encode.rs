//! HTB options in the kernel's binary layouts, which netlink-packet-route does not model.
//!
//! Everything here mirrors `include/uapi/linux/pkt_sched.h`: `struct tc_ratespec` (12
//! bytes), `struct tc_htb_glob` (20), `struct tc_htb_opt` (44), native-endian, plus the
//! 64-bit rate attributes the kernel wants once a rate no longer fits a `u32` of bytes per
//! second (above ~34 Gbit). Time in these structs is in *psched ticks* of 64 ns
//! (`PSCHED_SHIFT` = 6, what `/proc/net/psched` has said since Linux 2.6.31).
//!
//! How a limit becomes an HTB class, and why:
//! - `rate` = `ceil` = the limit in bytes per second. HTB counts `skb->len`, which on a
//!   tap's egress and on an ifb fed by mirred includes the Ethernet header: the limit is a
//!   layer-2 rate, the same thing the byte counters count.
//! - `buffer` = `cbuffer` = the time to send max(10 ms of the rate, 2 full frames) at the
//!   rate. A shaper queues rather than drops, so its bucket only has to cover the gaps in
//!   which the qdisc watchdog fires late; 10 ms reached ≈ 100 % of 20 Mbit..1 Gbit with
//!   TCP on the build machine, and the two-frame floor keeps 1 Mbit from starving on
//!   packets larger than its bucket. Over a measurement of T seconds the bucket can add at
//!   most `burst / (rate × T)`: 0.1 % of a 10 s run at 1 Gbit.
//! - `quantum` = rate / 10 (HTB's default r2q) clamped to [one frame, 200 000], the range
//!   outside which the kernel warns; with one class it only has to be ≥ one frame.
//! - the class's queue is a `pfifo` of 50 ms of the rate in full frames, at least 20 and
//!   at most 1000 packets. The default (the device's txqueuelen, 1000) is 12 s of queue at
//!   1 Mbit: TCP's RTT balloons, losses end in timeouts and the link idles (96 % of 1 Mbit
//!   measured, 98 % with the short queue), and the instance's latency is ruined.
//! - linklayer = Ethernet, so the kernel computes transmit times itself and no rate table
//!   (`TCA_HTB_RTAB`) is needed.

use crate::model::units::Rate;

pub const TCA_HTB_PARMS: u16 = 1;
pub const TCA_HTB_INIT: u16 = 2;
pub const TCA_HTB_RATE64: u16 = 6;
pub const TCA_HTB_CEIL64: u16 = 7;

/// `TC_HTB_PROTOVER`.
const HTB_VERSION: u32 = 3;
/// HTB's default rate-to-quantum divisor.
const RATE2QUANTUM: u32 = 10;
/// `TC_LINKLAYER_ETHERNET`.
const LINKLAYER_ETHERNET: u8 = 1;
/// One psched tick, in nanoseconds.
const NS_PER_TICK: u64 = 64;
/// The largest Ethernet frame without FCS (1500 + 14).
pub const FRAME: u64 = 1514;
const QUANTUM_MAX: u64 = 200_000;
/// The leaf queue holds this much time at the rate ...
const QUEUE_NS: u64 = 50_000_000;
/// ... within these bounds (packets).
const QUEUE_MIN: u64 = 20;
const QUEUE_MAX: u64 = 1000;

pub const RATESPEC_LEN: usize = 12;
pub const HTB_GLOB_LEN: usize = 20;
pub const HTB_OPT_LEN: usize = 44;

/// An HTB class's shaping, as the kernel stores it (bytes per second, ticks, bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HtbClass {
    pub rate: u64,
    pub ceil: u64,
    pub buffer: u32,
    pub cbuffer: u32,
    pub quantum: u32,
    /// Packets the class's `pfifo` leaf holds (not part of the class itself).
    pub queue: u32,
}

impl HtbClass {
    /// The class sluice installs for a limit of `rate` (see the module docs for why).
    pub fn for_rate(rate: Rate) -> Self {
        let bytes = rate_bytes(rate);
        let burst = burst_bytes(bytes);
        let buffer = xmit_ticks(burst, bytes);
        let quantum = (bytes / u64::from(RATE2QUANTUM)).clamp(FRAME, QUANTUM_MAX) as u32;
        let queue_bytes = u128::from(bytes) * u128::from(QUEUE_NS) / 1_000_000_000;
        let queue = (queue_bytes / u128::from(FRAME))
            .clamp(u128::from(QUEUE_MIN), u128::from(QUEUE_MAX)) as u32;
        HtbClass {
            rate: bytes,
            ceil: bytes,
            buffer,
            cbuffer: buffer,
            quantum,
            queue,
        }
    }

    /// Whether the kernel holds what was asked. Compared on rate, ceil and buffers: the
    /// quantum the kernel reports may have been clamped by it.
    pub fn holds(&self, wanted: &HtbClass) -> bool {
        self.rate == wanted.rate
            && self.ceil == wanted.ceil
            && self.buffer == wanted.buffer
            && self.cbuffer == wanted.cbuffer
    }

    /// The configured rate, back in bits per second.
    pub fn rate_bits(&self) -> u64 {
        self.rate.saturating_mul(8)
    }

    /// The nested `TCA_OPTIONS` attributes of an `RTM_NEWTCLASS`: (kind, value) pairs.
    pub fn options(&self) -> Vec<(u16, Vec<u8>)> {
        let mut opt = Vec::with_capacity(HTB_OPT_LEN);
        opt.extend_from_slice(&ratespec(self.rate));
        opt.extend_from_slice(&ratespec(self.ceil));
        for v in [
            self.buffer,
            self.cbuffer,
            self.quantum,
            0, /* level */
            0, /* prio */
        ] {
            opt.extend_from_slice(&v.to_ne_bytes());
        }
        let mut out = vec![(TCA_HTB_PARMS, opt)];
        if self.rate > u64::from(u32::MAX) {
            out.push((TCA_HTB_RATE64, self.rate.to_ne_bytes().to_vec()));
        }
        if self.ceil > u64::from(u32::MAX) {
            out.push((TCA_HTB_CEIL64, self.ceil.to_ne_bytes().to_vec()));
        }
        out
    }

    /// Read a class back from the (kind, value) pairs of its `TCA_OPTIONS`.
    pub fn parse<'a>(options: impl IntoIterator<Item = (u16, &'a [u8])>) -> Option<Self> {
        let mut parms = None;
        let (mut rate64, mut ceil64) = (None, None);
        for (kind, value) in options {
            match kind {
                TCA_HTB_PARMS => parms = Some(value),
                TCA_HTB_RATE64 => rate64 = u64_ne(value),
                TCA_HTB_CEIL64 => ceil64 = u64_ne(value),
                _ => {}
            }
        }
        let p = parms?;
        if p.len() < HTB_OPT_LEN {
            return None;
        }
        let rate32 = u32_ne(&p[8..12])?;
        let ceil32 = u32_ne(&p[20..24])?;
        Some(HtbClass {
            rate: rate64.unwrap_or(u64::from(rate32)),
            ceil: ceil64.unwrap_or(u64::from(ceil32)),
            buffer: u32_ne(&p[24..28])?,
            cbuffer: u32_ne(&p[28..32])?,
            quantum: u32_ne(&p[32..36])?,
            queue: 0,
        })
    }
}

/// `struct tc_fifo_qopt`: the whole `TCA_OPTIONS` of a pfifo (not nested).
pub fn fifo_opt(limit: u32) -> Vec<u8> {
    limit.to_ne_bytes().to_vec()
}

/// A pfifo's limit from its `TCA_OPTIONS` value.
pub fn fifo_limit(options: &[u8]) -> Option<u32> {
    u32_ne(options)
}

/// `TCA_HTB_INIT` of an HTB qdisc whose unclassified traffic goes to minor `default_class`.
pub fn htb_init(default_class: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(HTB_GLOB_LEN);
    for v in [HTB_VERSION, RATE2QUANTUM, u32::from(default_class), 0, 0] {
        out.extend_from_slice(&v.to_ne_bytes());
    }
    out
}

/// A limit in whole bytes per second (at least 1: HTB rejects a zero rate).
pub fn rate_bytes(rate: Rate) -> u64 {
    (rate.bits_per_sec() / 8).max(1)
}

fn burst_bytes(rate_bytes: u64) -> u64 {
    (rate_bytes / 100).max(2 * FRAME)
}

/// Time to send `bytes` at `rate` bytes/s, in psched ticks (saturating at `u32::MAX`).
fn xmit_ticks(bytes: u64, rate: u64) -> u32 {
    let ns = u128::from(bytes) * 1_000_000_000 / u128::from(rate.max(1));
    u32::try_from(ns / u128::from(NS_PER_TICK)).unwrap_or(u32::MAX)
}

/// `struct tc_ratespec`: cell_log, linklayer, overhead, cell_align, mpu, rate (u32 B/s,
/// saturated; the exact value then goes in the 64-bit attribute).
fn ratespec(rate: u64) -> [u8; RATESPEC_LEN] {
    let mut out = [0u8; RATESPEC_LEN];
    out[1] = LINKLAYER_ETHERNET;
    let r = u32::try_from(rate).unwrap_or(u32::MAX);
    out[8..12].copy_from_slice(&r.to_ne_bytes());
    out
}

fn u32_ne(b: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(..4)?.try_into().ok()?))
}

fn u64_ne(b: &[u8]) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(..8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Rate {
        s.parse().unwrap()
    }

    #[test]
    fn class_for_rate_follows_the_documented_formula() {
        // (rate, bytes/s, burst bytes, buffer ticks, quantum, queue packets)
        let table = [
            // 1 Mbit: 10 ms = 1250 B < two frames → 3028 B = 24.224 ms = 378500 ticks;
            // 50 ms = 6250 B = 4 frames → the 20-packet floor.
            ("1mbit", 125_000, 3028, 378_500, 12_500, 20),
            // 10 Mbit: 10 ms = 12500 B → 10 ms = 156250 ticks; 50 ms = 41 frames.
            ("10mbit", 1_250_000, 12_500, 156_250, 125_000, 41),
            ("100mbit", 12_500_000, 125_000, 156_250, 200_000, 412),
            // 50 ms of 1 Gbit is 4128 frames: capped at 1000.
            ("1gbit", 125_000_000, 1_250_000, 156_250, 200_000, 1000),
            // Tiny rates: the quantum never drops below one frame.
            ("8kbit", 1000, 3028, 47_312_500, 1514, 20),
        ];
        for (rate, bytes, burst, ticks, quantum, queue) in table {
            let c = HtbClass::for_rate(r(rate));
            assert_eq!(c.rate, bytes, "{rate} rate");
            assert_eq!(c.ceil, bytes, "{rate} ceil");
            assert_eq!(burst_bytes(bytes), burst, "{rate} burst");
            assert_eq!(c.buffer, ticks, "{rate} buffer");
            assert_eq!(c.cbuffer, ticks, "{rate} cbuffer");
            assert_eq!(c.quantum, quantum, "{rate} quantum");
            assert_eq!(c.queue, queue, "{rate} queue");
        }
    }

    #[test]
    fn htb_opt_has_the_kernel_layout() {
        let c = HtbClass::for_rate(r("10mbit"));
        let opts = c.options();
        assert_eq!(opts.len(), 1, "no 64-bit attributes below 2^32 B/s");
        let (kind, p) = &opts[0];
        assert_eq!(*kind, TCA_HTB_PARMS);
        assert_eq!(p.len(), HTB_OPT_LEN);
        // tc_ratespec rate: cell_log 0, linklayer 1 (ethernet), overhead 0, cell_align 0,
        // mpu 0, then the rate.
        assert_eq!(&p[0..8], &[0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&p[8..12], &1_250_000u32.to_ne_bytes());
        // ceil
        assert_eq!(&p[12..20], &[0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&p[20..24], &1_250_000u32.to_ne_bytes());
        assert_eq!(&p[24..28], &156_250u32.to_ne_bytes()); // buffer
        assert_eq!(&p[28..32], &156_250u32.to_ne_bytes()); // cbuffer
        assert_eq!(&p[32..36], &125_000u32.to_ne_bytes()); // quantum
        assert_eq!(&p[36..44], &[0u8; 8]); // level, prio
        let back = HtbClass::parse(opts.iter().map(|(k, v)| (*k, v.as_slice()))).unwrap();
        assert!(back.holds(&c));
        assert_eq!(back.quantum, c.quantum);
    }

    #[test]
    fn fifo_opt_is_one_native_u32() {
        assert_eq!(fifo_opt(41), 41u32.to_ne_bytes());
        assert_eq!(fifo_limit(&fifo_opt(41)), Some(41));
        assert_eq!(fifo_limit(&[1, 2]), None);
    }

    #[test]
    fn rates_above_u32_bytes_use_the_64_bit_attributes() {
        // 40 Gbit = 5e9 B/s > u32::MAX.
        let c = HtbClass::for_rate(r("40gbit"));
        let opts = c.options();
        let kinds: Vec<u16> = opts.iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds, [TCA_HTB_PARMS, TCA_HTB_RATE64, TCA_HTB_CEIL64]);
        assert_eq!(&opts[0].1[8..12], &u32::MAX.to_ne_bytes(), "saturated u32");
        assert_eq!(opts[1].1, 5_000_000_000u64.to_ne_bytes());
        let back = HtbClass::parse(opts.iter().map(|(k, v)| (*k, v.as_slice()))).unwrap();
        assert_eq!(back.rate, 5_000_000_000);
        assert_eq!(back.rate_bits(), 40_000_000_000);
    }

    #[test]
    fn htb_glob_has_the_kernel_layout() {
        let g = htb_init(1);
        assert_eq!(g.len(), HTB_GLOB_LEN);
        let words: Vec<u32> = g
            .chunks(4)
            .map(|c| u32::from_ne_bytes(c.try_into().unwrap()))
            .collect();
        // version 3, rate2quantum 10, defcls 1, debug 0, direct_pkts 0
        assert_eq!(words, [3, 10, 1, 0, 0]);
    }

    #[test]
    fn truncated_parms_are_not_a_class() {
        assert_eq!(HtbClass::parse([(TCA_HTB_PARMS, &[0u8; 20][..])]), None);
        assert_eq!(HtbClass::parse([]), None);
    }
}
