//! How sluice spells numbers for people: `list`, `usage`, the dashboard and the exports
//! print the same rate, size and duration the same way. SI units, as the quotas and
//! network cards are sold.

/// "1.23 GB", "512 B" (SI, like the quotas).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [(&str, f64); 5] = [
        ("PB", 1e15),
        ("TB", 1e12),
        ("GB", 1e9),
        ("MB", 1e6),
        ("kB", 1e3),
    ];
    let x = n as f64;
    for (unit, size) in UNITS {
        if x >= size {
            return format!("{:.2} {unit}", x / size);
        }
    }
    format!("{n} B")
}

/// "950.0 Mbit/s", "1.20 Gbit/s", "12.0 kbit/s".
pub fn human_rate(bps: u64) -> String {
    let b = bps as f64;
    if b >= 1e9 {
        format!("{:.2} Gbit/s", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} Mbit/s", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kbit/s", b / 1e3)
    } else {
        format!("{bps} bit/s")
    }
}

/// "25m 10s", "1h 02m", "3d 4h".
pub fn human_secs(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86400, (s % 86400) / 3600),
    }
}

/// "830pps", "12.5kpps", "1.49mpps" (spelt as the config spells packet rates).
pub fn human_pps(pps: u64) -> String {
    match pps {
        0..1_000 => format!("{pps}pps"),
        1_000..1_000_000 => {
            format!("{:.3}", pps as f64 / 1e3)
                .trim_end_matches('0')
                .trim_end_matches('.')
                .to_owned()
                + "kpps"
        }
        _ => {
            format!("{:.3}", pps as f64 / 1e6)
                .trim_end_matches('0')
                .trim_end_matches('.')
                .to_owned()
                + "mpps"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_rates_read_like_the_config_spells_them() {
        for (pps, shown) in [
            (0, "0pps"),
            (830, "830pps"),
            (1_000, "1kpps"),
            (12_500, "12.5kpps"),
            (999_999, "999.999kpps"),
            (1_490_000, "1.49mpps"),
        ] {
            assert_eq!(human_pps(pps), shown);
        }
    }

    #[test]
    fn human_units() {
        assert_eq!(human_rate(950_000_000), "950.0 Mbit/s");
        assert_eq!(human_rate(1_200_000_000), "1.20 Gbit/s");
        assert_eq!(human_rate(12_000), "12.0 kbit/s");
        assert_eq!(human_rate(7), "7 bit/s");
        assert_eq!(human_secs(59), "59s");
        assert_eq!(human_secs(1510), "25m 10s");
        assert_eq!(human_secs(3720), "1h 02m");
        assert_eq!(human_secs(3 * 86400 + 4 * 3600), "3d 4h");
    }
}
