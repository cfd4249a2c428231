//! Units an operator writes in the config: [`Rate`] (decimal bits per second, "800mbit"),
//! [`Bytes`] (SI "500GB" and IEC "1TiB"), [`Fraction`] (0 < f ≤ 1) and durations.
//!
//! Rates are decimal on purpose: "1gbit" is what a network card and a customer's contract
//! say, 10^9 bit/s. Byte sizes accept both families because billing uses SI (1 TB = 10^12)
//! while operators think of memory-like sizes in IEC (1 TiB = 2^40); the spelling parsed
//! is the spelling printed.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a unit string was rejected; the message is shown to the operator after the field path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnitError(String);

/// A bandwidth in bits per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Rate(u64);

const RATE_UNITS: [(&str, u64); 5] = [
    ("tbit", 1_000_000_000_000),
    ("gbit", 1_000_000_000),
    ("mbit", 1_000_000),
    ("kbit", 1_000),
    ("bit", 1),
];

impl Rate {
    pub const ZERO: Rate = Rate(0);
    /// The least limit sluice sets: OVS polices in whole kbit/s and reads 0 as "no
    /// policing", so a smaller limit would be reported while the kernel held none.
    pub const MIN_LIMIT: Rate = Rate(1000);

    /// This rate as a limit: `Err` naming the floor when it is under [`Rate::MIN_LIMIT`].
    pub fn as_limit(self) -> Result<Rate, String> {
        if self < Rate::MIN_LIMIT {
            Err(format!(
                "{self} is under the least enforceable limit of 1kbit (OVS polices in whole kbit/s and reads 0 as no limit)"
            ))
        } else {
            Ok(self)
        }
    }

    pub const fn from_bits_per_sec(bps: u64) -> Self {
        Rate(bps)
    }
    pub const fn bits_per_sec(self) -> u64 {
        self.0
    }
    /// Kilobits per second, rounded down: the unit of OVS `ingress_policing_rate`.
    pub const fn kbps(self) -> u64 {
        self.0 / 1000
    }
    pub const fn from_kbps(kbps: u64) -> Self {
        Rate(kbps.saturating_mul(1000))
    }
    /// This rate scaled by a fraction, rounded to the nearest bit per second.
    pub fn scaled(self, f: Fraction) -> Rate {
        Rate((self.0 as f64 * f.get()).round() as u64)
    }
    /// Megabits per second as a float, for display and logs.
    pub fn mbps(self) -> f64 {
        self.0 as f64 / 1e6
    }
    /// The average rate of `bytes` moved in `elapsed`; `None` for a zero interval.
    pub fn from_bytes_over(bytes: u64, elapsed: Duration) -> Option<Rate> {
        let secs = elapsed.as_secs_f64();
        if secs <= 0.0 {
            return None;
        }
        Some(Rate((bytes as f64 * 8.0 / secs).round() as u64))
    }
}

impl FromStr for Rate {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let lower = t.to_ascii_lowercase();
        for (suffix, mult) in RATE_UNITS {
            if let Some(num) = lower.strip_suffix(suffix) {
                let value = parse_number(num.trim(), t)?;
                let bits = value * mult as f64;
                if bits < 1.0 || bits > u64::MAX as f64 {
                    return Err(UnitError(format!("rate {t:?} is out of range")));
                }
                return Ok(Rate(bits.round() as u64));
            }
        }
        Err(UnitError(format!(
            "{t:?} is not a rate: write a number and one of bit, kbit, mbit, gbit, tbit (decimal: 1mbit = 10^6 bit/s)"
        )))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (suffix, mult) in RATE_UNITS {
            if self.0 >= mult && self.0.is_multiple_of(mult) {
                return write!(f, "{}{suffix}", self.0 / mult);
            }
        }
        // Only zero gets here ("bit" divides everything else).
        write!(f, "{}bit", self.0)
    }
}

/// A packet rate in packets per second: what a flood is measured in, where a byte rate
/// says little (a SYN flood of 64-byte frames is 1.5 Mpps in 1 Gbit/s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PacketRate(u64);

const PACKET_RATE_UNITS: [(&str, u64); 3] = [("mpps", 1_000_000), ("kpps", 1_000), ("pps", 1)];

impl PacketRate {
    /// The least packet-rate limit sluice sets: OVS polices packets in whole thousands
    /// per second (`ingress_policing_kpkts_rate`) and reads 0 as no policing.
    pub const MIN_LIMIT: PacketRate = PacketRate(1000);

    pub const fn from_per_sec(pps: u64) -> Self {
        PacketRate(pps)
    }
    pub const fn per_sec(self) -> u64 {
        self.0
    }
    /// The average rate of `packets` over `elapsed`, rounded; `None` for a zero interval.
    pub fn from_packets_over(packets: u64, elapsed: Duration) -> Option<PacketRate> {
        let secs = elapsed.as_secs_f64();
        if secs <= 0.0 {
            return None;
        }
        Some(PacketRate((packets as f64 / secs).round() as u64))
    }

    /// Thousands of packets per second, rounded down: OVS's unit.
    pub const fn kpps(self) -> u64 {
        self.0 / 1000
    }

    /// This rate as a limit: `Err` naming the floor when it is under
    /// [`PacketRate::MIN_LIMIT`].
    pub fn as_limit(self) -> Result<PacketRate, String> {
        if self < PacketRate::MIN_LIMIT {
            Err(format!(
                "{self} is under the least enforceable packet rate of 1kpps (OVS polices in whole kpps and reads 0 as no limit)"
            ))
        } else {
            Ok(self)
        }
    }
}

impl FromStr for PacketRate {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let lower = t.to_ascii_lowercase();
        for (suffix, mult) in PACKET_RATE_UNITS {
            if let Some(num) = lower.strip_suffix(suffix) {
                let value = parse_number(num.trim(), t)?;
                let pps = value * mult as f64;
                if pps < 1.0 || pps > u64::MAX as f64 {
                    return Err(UnitError(format!("packet rate {t:?} is out of range")));
                }
                return Ok(PacketRate(pps.round() as u64));
            }
        }
        Err(UnitError(format!(
            "{t:?} is not a packet rate: write a number and one of pps, kpps, mpps (1kpps = 1000 packets/s)"
        )))
    }
}

impl fmt::Display for PacketRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (suffix, mult) in PACKET_RATE_UNITS {
            if self.0 >= mult && self.0.is_multiple_of(mult) {
                return write!(f, "{}{suffix}", self.0 / mult);
            }
        }
        write!(f, "{}pps", self.0)
    }
}

/// An amount of data in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Bytes(u64);

const BYTE_UNITS: [(&str, u64); 11] = [
    ("pib", 1 << 50),
    ("tib", 1 << 40),
    ("gib", 1 << 30),
    ("mib", 1 << 20),
    ("kib", 1 << 10),
    ("pb", 1_000_000_000_000_000),
    ("tb", 1_000_000_000_000),
    ("gb", 1_000_000_000),
    ("mb", 1_000_000),
    ("kb", 1_000),
    ("b", 1),
];

impl Bytes {
    pub const fn new(n: u64) -> Self {
        Bytes(n)
    }
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl FromStr for Bytes {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let lower = t.to_ascii_lowercase();
        for (suffix, mult) in BYTE_UNITS {
            if let Some(num) = lower.strip_suffix(suffix) {
                // "5b" must not be read as "5" + "b" of "kb": suffixes are ordered longest first,
                // so reaching "b" means no longer unit matched.
                let value = parse_number(num.trim(), t)?;
                let bytes = value * mult as f64;
                if !(0.0..=u64::MAX as f64).contains(&bytes) {
                    return Err(UnitError(format!("size {t:?} is out of range")));
                }
                return Ok(Bytes(bytes.round() as u64));
            }
        }
        match t.parse::<u64>() {
            Ok(n) => Ok(Bytes(n)),
            Err(_) => Err(UnitError(format!(
                "{t:?} is not a size: write a number and one of B, KB, MB, GB, TB, PB (10^3) or KiB, MiB, GiB, TiB, PiB (2^10)"
            ))),
        }
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOW: [(&str, u64); 11] = [
            ("PiB", 1 << 50),
            ("PB", 1_000_000_000_000_000),
            ("TiB", 1 << 40),
            ("TB", 1_000_000_000_000),
            ("GiB", 1 << 30),
            ("GB", 1_000_000_000),
            ("MiB", 1 << 20),
            ("MB", 1_000_000),
            ("KiB", 1 << 10),
            ("KB", 1_000),
            ("B", 1),
        ];
        for (suffix, mult) in SHOW {
            if self.0 >= mult && self.0.is_multiple_of(mult) {
                return write!(f, "{}{suffix}", self.0 / mult);
            }
        }
        write!(f, "{}B", self.0)
    }
}

/// A fraction in (0, 1], e.g. "upload at 90 % of base" or "limit to 80 % of base".
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Fraction(f64);

impl Fraction {
    /// `None` unless 0 < f ≤ 1 (and not NaN).
    pub fn new(f: f64) -> Option<Self> {
        (f > 0.0 && f <= 1.0).then_some(Fraction(f))
    }
    pub const fn get(self) -> f64 {
        self.0
    }
}

fn parse_number(num: &str, whole: &str) -> Result<f64, UnitError> {
    let value: f64 = num
        .parse()
        .map_err(|_| UnitError(format!("{whole:?}: {num:?} is not a number")))?;
    if !value.is_finite() || value < 0.0 {
        return Err(UnitError(format!(
            "{whole:?}: must be a non-negative number"
        )));
    }
    Ok(value)
}

/// Parse a humantime duration ("60s", "15m", "1h 30m"), naming the input on error.
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        UnitError(format!(
            "{s:?} is not a duration ({e}); write e.g. 60s, 15m, 1h"
        ))
    })
}

/// Print a duration the way the config spells it ("15m", "1h 30m").
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

macro_rules! string_serde {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
string_serde!(Rate);
string_serde!(PacketRate);
string_serde!(Bytes);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_rates_parse_and_print() {
        for (text, pps, shown) in [
            ("10kpps", Some(10_000), "10kpps"),
            ("1.5mpps", Some(1_500_000), "1500kpps"),
            ("500 pps", Some(500), "500pps"),
            ("2Mpps", Some(2_000_000), "2mpps"),
            ("10kbit", None, ""),
            ("kpps", None, ""),
            ("0pps", None, ""),
        ] {
            let got = text.parse::<PacketRate>().ok();
            assert_eq!(got.map(PacketRate::per_sec), pps, "{text}");
            if let Some(r) = got {
                assert_eq!(r.to_string(), shown);
            }
        }
        assert_eq!(PacketRate::from_per_sec(12_345).kpps(), 12);
        let e = PacketRate::from_per_sec(999).as_limit().unwrap_err();
        assert!(e.contains("1kpps"), "{e}");
    }

    #[test]
    fn rates_parse_decimal_units() {
        let table = [
            ("800mbit", 800_000_000),
            ("1gbit", 1_000_000_000),
            ("1Gbit", 1_000_000_000),
            ("2000kbit", 2_000_000),
            ("1.5mbit", 1_500_000),
            ("100 mbit", 100_000_000),
            ("64bit", 64),
            ("10tbit", 10_000_000_000_000),
        ];
        for (input, bps) in table {
            assert_eq!(
                input.parse::<Rate>().unwrap().bits_per_sec(),
                bps,
                "{input}"
            );
        }
    }

    #[test]
    fn rates_reject_garbage() {
        for bad in [
            "", "mbit", "10", "10mb", "-5mbit", "abcmbit", "0bit", "nanmbit", "1e40gbit",
        ] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn rates_print_in_the_spelling_they_parse() {
        for s in ["800mbit", "1gbit", "2500kbit", "1500kbit", "64bit", "3tbit"] {
            let r: Rate = s.parse().unwrap();
            assert_eq!(r.to_string(), s);
            assert_eq!(r.to_string().parse::<Rate>().unwrap(), r);
        }
        // Printed in the largest whole unit: "2000kbit" and "1000mbit" are "2mbit" and "1gbit".
        assert_eq!("2000kbit".parse::<Rate>().unwrap().to_string(), "2mbit");
        assert_eq!("1000mbit".parse::<Rate>().unwrap().to_string(), "1gbit");
        let odd = Rate::from_bits_per_sec(1_234_567);
        assert_eq!(odd.to_string(), "1234567bit");
        assert_eq!(odd.to_string().parse::<Rate>().unwrap(), odd);
    }

    #[test]
    fn bytes_parse_si_and_iec() {
        let table = [
            ("1TB", 1_000_000_000_000u64),
            ("1TiB", 1 << 40),
            ("500GB", 500_000_000_000),
            ("1.5KiB", 1536),
            ("10 MB", 10_000_000),
            ("7b", 7),
            ("42", 42),
            ("2PiB", 2 << 50),
        ];
        for (input, n) in table {
            assert_eq!(input.parse::<Bytes>().unwrap().get(), n, "{input}");
        }
        for bad in ["", "TB", "1XB", "-1GB", "one GB"] {
            assert!(bad.parse::<Bytes>().is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn bytes_print_round_trip() {
        for s in ["1TB", "1TiB", "500GB", "3KiB", "7B"] {
            let b: Bytes = s.parse().unwrap();
            assert_eq!(b.to_string(), s);
        }
    }

    #[test]
    fn fractions_are_in_zero_one() {
        assert!(Fraction::new(0.0).is_none());
        assert!(Fraction::new(-0.1).is_none());
        assert!(Fraction::new(1.5).is_none());
        assert!(Fraction::new(f64::NAN).is_none());
        assert_eq!(Fraction::new(1.0).unwrap().get(), 1.0);
        let base: Rate = "1000mbit".parse().unwrap();
        assert_eq!(
            base.scaled(Fraction::new(0.9).unwrap()).to_string(),
            "900mbit"
        );
    }

    #[test]
    fn rate_from_bytes_over_interval() {
        let r = Rate::from_bytes_over(7_500_000, Duration::from_secs(60)).unwrap();
        assert_eq!(r.bits_per_sec(), 1_000_000);
        assert!(Rate::from_bytes_over(1, Duration::ZERO).is_none());
    }

    #[test]
    fn durations_parse_and_print() {
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("soon").is_err());
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h 30m");
    }
}
