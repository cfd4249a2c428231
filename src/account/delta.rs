//! Counter deltas between two samples of one interface.
//!
//! The kernel's byte counters are cumulative u64s that restart from zero when an
//! interface is re-created (a VM restart makes a new tap with a new ifindex) or the host
//! reboots. A naive `new - old` then wraps to ~2^64 — the "8 EiB spike" of tools that
//! forget this. The rule here: if the ifindex changed or a counter went backwards, the
//! interface was reset, and everything it counted since the reset is the new value.
//! Counters read in an earlier boot of the host (the ledger's, after a reboot) are reset
//! by definition, whatever their values.
//! Genuine 64-bit wraps do not happen in practice (2^64 bytes at 100 Gbit/s is 46 years),
//! so a backwards counter is always read as a reset.

use serde::{Deserialize, Serialize};

/// Cumulative counters of one interface at one sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub ifindex: u32,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Packets, for packet rates (the ledger counts bytes only and leaves these 0).
    #[serde(default)]
    pub rx_packets: u64,
    #[serde(default)]
    pub tx_packets: u64,
}

/// Bytes and packets moved between two samples, and whether the counters were reset in
/// between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delta {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub reset: bool,
}

/// Which boot of the host the previous counters were read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boot {
    /// This one: the counters can be compared.
    This,
    /// An earlier one: the kernel started every counter again at zero since.
    Earlier,
}

/// The bytes counted since `prev` (or since the interface's reset, when there was one).
/// The ledger and the policy both take their deltas from here, so they agree on what a
/// reset is.
pub fn counter_delta(prev: Counters, prev_boot: Boot, cur: Counters) -> Delta {
    let reset = prev_boot == Boot::Earlier
        || prev.ifindex != cur.ifindex
        || cur.rx_bytes < prev.rx_bytes
        || cur.tx_bytes < prev.tx_bytes
        || cur.rx_packets < prev.rx_packets
        || cur.tx_packets < prev.tx_packets;
    if reset {
        Delta {
            rx_bytes: cur.rx_bytes,
            tx_bytes: cur.tx_bytes,
            rx_packets: cur.rx_packets,
            tx_packets: cur.tx_packets,
            reset,
        }
    } else {
        Delta {
            rx_bytes: cur.rx_bytes - prev.rx_bytes,
            tx_bytes: cur.tx_bytes - prev.tx_bytes,
            rx_packets: cur.rx_packets - prev.rx_packets,
            tx_packets: cur.tx_packets - prev.tx_packets,
            reset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(ifindex: u32, rx: u64, tx: u64) -> Counters {
        Counters {
            ifindex,
            rx_bytes: rx,
            tx_bytes: tx,
            rx_packets: 0,
            tx_packets: 0,
        }
    }

    #[test]
    fn packets_follow_the_same_reset_rule() {
        let p = |ifindex, rx_packets, tx_packets| Counters {
            rx_packets,
            tx_packets,
            ..c(ifindex, 1_000, 1_000)
        };
        // (previous, current, expected rx packets, expected tx packets, reset?)
        for (prev, cur, rx, tx, reset) in [
            (p(5, 10, 20), p(5, 15, 26), 5, 6, false),
            // packets went backwards while bytes did not: a reset all the same
            (p(5, 10, 20), p(5, 3, 26), 3, 26, true),
            (p(5, 10, 20), p(6, 12, 26), 12, 26, true),
        ] {
            let d = counter_delta(prev, Boot::This, cur);
            assert_eq!((d.rx_packets, d.tx_packets, d.reset), (rx, tx, reset));
        }
    }

    #[test]
    fn deltas_table() {
        use Boot::{Earlier, This};
        // (previous, its boot, current, expected rx, expected tx, reset?)
        let table = [
            (c(5, 100, 200), This, c(5, 150, 260), 50, 60, false),
            (c(5, 100, 200), This, c(5, 100, 200), 0, 0, false),
            // interface re-created: new ifindex, counters restarted
            (
                c(5, 1_000_000, 2_000_000),
                This,
                c(9, 300, 400),
                300,
                400,
                true,
            ),
            // same ifindex but counters went backwards (driver reset, reboot)
            (
                c(5, 1_000_000, 2_000_000),
                This,
                c(5, 10, 3_000_000),
                10,
                3_000_000,
                true,
            ),
            // ifindex reused after re-creation with counters already past the old ones
            (c(5, 10, 10), This, c(6, 50, 50), 50, 50, true),
            // near the top of u64: still a plain subtraction, never a wrap
            (
                c(1, u64::MAX - 10, 0),
                This,
                c(1, u64::MAX, 5),
                10,
                5,
                false,
            ),
            // host rebooted: same ifindex, counters past the old ones, still all new
            (c(5, 100, 200), Earlier, c(5, 150, 260), 150, 260, true),
            (c(5, 100, 200), Earlier, c(5, 0, 0), 0, 0, true),
        ];
        for (prev, boot, cur, rx, tx, reset) in table {
            let d = counter_delta(prev, boot, cur);
            assert_eq!(
                (d.rx_bytes, d.tx_bytes, d.reset),
                (rx, tx, reset),
                "{prev:?} ({boot:?}) -> {cur:?}"
            );
        }
    }
}
