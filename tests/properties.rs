//! Properties that must hold for every input, not only the tables' cases: checked on
//! inputs proptest generates (and shrinks to the smallest failing one when one fails).
//!
//! - bytes spread over buckets add up to what was counted, in the buckets the time
//!   covered;
//! - a counter delta never exceeds what the counter holds (no 2^64 spike), and deltas
//!   along a growing counter add up to its growth;
//! - consecutive quota periods tile time, in any IANA zone, 2000–2100, any reset day;
//! - the ledger's packed state and a packed day read back as written;
//! - a ledger ticked at random moments with resets and gaps, and packed at random
//!   moments, holds every byte once in its 5-minute and its hourly buckets.

use std::time::Duration;

use jiff::civil::Weekday;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;

use sluice::account::ledger::packed::{Entry, Open, Row, State, Table};
use sluice::account::ledger::{BucketFilter, Ledger, Observation, bucket_rows, spread};
use sluice::account::{Boot, Counters, counter_delta};
use sluice::model::calendar::{PeriodKind, period_containing};
use sluice::model::day_curve;
use sluice::model::ids::{IfName, InstanceId};
use sluice::model::percentile::Interval;

const FIVE_MIN_MS: i64 = 300_000;
const HOUR_MS: i64 = 3_600_000;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn spread_bytes_add_up_in_the_buckets_the_time_covered(
        bytes in any::<u64>(),
        from in -10_000_000_000i64..10_000_000_000_000,
        // Up to ten days: an agent outage.
        gap in 0i64..864_000_000,
        len in prop_oneof![Just(FIVE_MIN_MS), Just(HOUR_MS)],
    ) {
        let to = from + gap;
        let pieces: Vec<(i64, u64)> = spread(bytes, from, to, len).collect();
        let total: u128 = pieces.iter().map(|p| u128::from(p.1)).sum();
        prop_assert_eq!(total, u128::from(bytes));
        let len_s = len / 1000;
        // (from, to]: the first bucket holds from's next instant, the last holds `to`.
        let first = if gap == 0 { to - 1 } else { from };
        let want_first = first.div_euclid(len) * len / 1000;
        let want_last = (to - 1).div_euclid(len) * len / 1000;
        prop_assert_eq!(pieces.first().map(|p| p.0), Some(want_first));
        prop_assert_eq!(pieces.last().map(|p| p.0), Some(want_last));
        for w in pieces.windows(2) {
            prop_assert_eq!(w[1].0 - w[0].0, len_s, "consecutive buckets");
        }
    }

    #[test]
    fn a_delta_never_exceeds_the_counter_and_growth_adds_up(
        start in (any::<u32>(), 0u64..u64::MAX / 2, 0u64..u64::MAX / 2),
        steps in prop::collection::vec((0u64..1u64 << 40, 0u64..1u64 << 40), 1..20),
        later in (any::<u32>(), any::<u64>(), any::<u64>()),
        earlier_boot in any::<bool>(),
    ) {
        let counters = |ifindex, rx, tx| Counters {
            ifindex,
            rx_bytes: rx,
            tx_bytes: tx,
            rx_packets: 0,
            tx_packets: 0,
        };
        let first = counters(start.0, start.1, start.2);
        let (mut prev, mut rx, mut tx) = (first, 0u64, 0u64);
        for (up, down) in steps {
            let cur = counters(start.0, prev.rx_bytes + up, prev.tx_bytes + down);
            let d = counter_delta(prev, Boot::This, cur);
            prop_assert!(!d.reset);
            rx += d.rx_bytes;
            tx += d.tx_bytes;
            prev = cur;
        }
        prop_assert_eq!((rx, tx), (prev.rx_bytes - first.rx_bytes, prev.tx_bytes - first.tx_bytes));
        // Any next sample at all: the delta is at most what the counter holds, and a
        // counter that went back, another ifindex or another boot is a reset.
        let boot = if earlier_boot { Boot::Earlier } else { Boot::This };
        let next = counters(later.0, later.1, later.2);
        let d = counter_delta(prev, boot, next);
        prop_assert!(d.rx_bytes <= next.rx_bytes && d.tx_bytes <= next.tx_bytes);
        let went_back = next.rx_bytes < prev.rx_bytes || next.tx_bytes < prev.tx_bytes;
        prop_assert_eq!(d.reset, earlier_boot || later.0 != start.0 || went_back);
    }

    #[test]
    fn consecutive_periods_tile_time_in_every_zone(
        zone in 0usize..10_000,
        at in 946_684_800i64..4_102_444_800, // 2000-01-01 .. 2100-01-01
        kind in prop_oneof![
            Just(PeriodKind::Hour),
            Just(PeriodKind::Day),
            (0i8..7).prop_map(|d| PeriodKind::Week(Weekday::from_monday_zero_offset(d).unwrap())),
            (1u8..=31).prop_map(PeriodKind::Month),
        ],
    ) {
        let zones = zone_names();
        let name = &zones[zone % zones.len()];
        let tz = TimeZone::get(name).unwrap();
        let at = Timestamp::from_second(at).unwrap();
        let p = period_containing(kind, at, &tz).unwrap();
        prop_assert!(p.start <= at && at < p.end, "{name} {kind} {at}: {p:?}");
        let next = period_containing(kind, p.end, &tz).unwrap();
        prop_assert_eq!(next.start, p.end, "{} {} {}: the next one starts where it ends", name, kind, at);
        let before = period_containing(kind, p.start - SignedDuration::from_nanos(1), &tz).unwrap();
        prop_assert_eq!(before.end, p.start, "{} {} {}: the previous one ends where it starts", name, kind, at);
        let hours = (p.end - p.start).as_secs() as f64 / 3600.0;
        let (lo, hi) = match kind {
            PeriodKind::Hour => (1.0, 1.0),
            // Days lose or gain up to a few hours at a change of offset (or a whole day
            // where a zone crossed the date line).
            PeriodKind::Day => (0.0, 48.0),
            PeriodKind::Week(_) => (6.0 * 24.0, 8.0 * 24.0),
            PeriodKind::Month(_) => (27.0 * 24.0, 32.0 * 24.0),
        };
        prop_assert!(lo <= hours && hours <= hi, "{name} {kind} {at}: {hours} h");
    }

    #[test]
    fn the_packed_state_reads_back_as_written(
        boot_id in "[a-f0-9-]{0,36}",
        at_ms in any::<i64>(),
        entries in prop::collection::vec(entry(), 0..50),
        pending in prop::collection::vec(row(), 0..50),
    ) {
        let state = State { boot_id, at_ms, entries, pending };
        let bytes = state.encode().unwrap();
        prop_assert_eq!(State::decode(&bytes).unwrap(), state);
    }

    #[test]
    fn a_packed_day_reads_back_and_merging_adds_up(
        day in (0i64..100_000).prop_map(|d| d * 86_400),
        a in day_slots(),
        b in day_slots(),
    ) {
        let curve = |slots: &[(i64, Interval)]| -> Vec<(i64, Interval)> {
            slots.iter().map(|(k, iv)| (day + k * 300, *iv)).collect()
        };
        let (a, b) = (curve(&a), curve(&b));
        let bytes = day_curve::encode(day, &a).unwrap();
        prop_assert_eq!(&day_curve::decode(day, &bytes).unwrap(), &a);
        let merged = day_curve::merge(a.clone(), b.clone());
        let sum = |c: &[(i64, Interval)]| -> (u128, u128) {
            c.iter().fold((0, 0), |(u, d), (_, i)| (u + u128::from(i.upload), d + u128::from(i.download)))
        };
        let (sa, sb, sm) = (sum(&a), sum(&b), sum(&merged));
        prop_assert_eq!(sm, (sa.0 + sb.0, sa.1 + sb.1));
        prop_assert!(merged.windows(2).all(|w| w[0].0 < w[1].0), "one entry per interval, in order");
    }
}

proptest! {
    // Each case opens a ledger on disk and ticks it up to 60 times.
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn a_ledger_ticked_and_packed_at_random_holds_every_byte_once(
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(&dir.path().join("ledger.db"), "boot").unwrap();
        let (ifname, instance) = (IfName::new("tap1i0").unwrap(), InstanceId::new("1").unwrap());
        // 2027-01-01T00:00:00Z, minus a bit: days close during the run.
        let mut now_ms = 1_798_761_600_000i64 - 7 * HOUR_MS;
        let (mut ifindex, mut rx, mut tx) = (1u32, 0u64, 0u64);
        let (mut want_rx, mut want_tx) = (0u64, 0u64);
        let mut seen = false;
        for op in ops {
            match op {
                Op::Tick { after_ms, up, down, reset } => {
                    now_ms += after_ms;
                    if reset {
                        ifindex += 1;
                        (rx, tx) = (up, down);
                    } else {
                        rx += up;
                        tx += down;
                    }
                    // The first sight is a baseline; after it, a reset counts the new
                    // value and anything else the growth.
                    if seen {
                        want_rx += up;
                        want_tx += down;
                    }
                    seen = true;
                    let o = Observation { interface: &ifname, instance: &instance, ifindex, rx_bytes: rx, tx_bytes: tx };
                    let at = Timestamp::from_millisecond(now_ms).unwrap();
                    ledger.record(&[o], at, Duration::from_secs(60)).unwrap();
                }
                Op::Pack => {
                    let at = Timestamp::from_millisecond(now_ms).unwrap();
                    while ledger.pack_day(at).unwrap().is_some() {}
                }
            }
            for table in [Table::FiveMinutes, Table::Hour] {
                let rows = bucket_rows(ledger.connection(), &BucketFilter::all(table)).unwrap();
                let got: (u64, u64) = rows.iter().fold((0, 0), |(r, t), b| (r + b.rx, t + b.tx));
                prop_assert_eq!(got, (want_rx, want_tx), "{:?}", table);
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Tick {
        after_ms: i64,
        up: u64,
        down: u64,
        reset: bool,
    },
    Pack,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (
            // From a second to two days: ticks, boundaries, outages.
            prop_oneof![1_000i64..120_000, 120_000i64..2 * HOUR_MS, 2 * HOUR_MS..48 * HOUR_MS],
            0u64..1 << 32,
            0u64..1 << 32,
            prop::bool::weighted(0.1),
        )
            .prop_map(|(after_ms, up, down, reset)| Op::Tick { after_ms, up, down, reset }),
        1 => Just(Op::Pack),
    ]
}

fn open() -> impl Strategy<Value = Open> {
    prop_oneof![
        Just(Open::default()),
        (any::<i64>(), 1u64.., any::<u64>(), any::<bool>()).prop_map(
            |(start, rx, tx, estimated)| Open {
                start,
                rx,
                tx,
                estimated
            }
        ),
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        any::<i64>(),
        any::<u32>(),
        any::<bool>(),
        any::<u64>(),
        any::<u64>(),
        any::<i64>(),
        open(),
        open(),
    )
        .prop_map(|(id, ifindex, this_boot, rx, tx, at_ms, a, b)| Entry {
            id,
            ifindex,
            this_boot,
            rx,
            tx,
            at_ms,
            open: [a, b],
        })
}

fn row() -> impl Strategy<Value = Row> {
    (
        prop_oneof![Just(Table::FiveMinutes), Just(Table::Hour)],
        any::<i64>(),
        any::<i64>(),
        any::<u64>(),
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(|(table, id, bucket, rx, tx, estimated)| Row {
            table,
            id,
            bucket,
            rx,
            tx,
            estimated,
        })
}

/// Distinct slots of a day (0..288), in order, each with an interval's bytes (halved so
/// two merged stay within u64).
fn day_slots() -> impl Strategy<Value = Vec<(i64, Interval)>> {
    prop::collection::btree_map(
        0i64..288,
        (0..u64::MAX / 2, 0..u64::MAX / 2, any::<bool>()),
        0..288,
    )
    .prop_map(|m| {
        m.into_iter()
            .map(|(k, (upload, download, estimated))| {
                (
                    k,
                    Interval {
                        upload,
                        download,
                        estimated,
                    },
                )
            })
            .collect()
    })
}

/// Every zone of the system's tz database, read once.
fn zone_names() -> &'static [String] {
    static NAMES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| {
        let mut v: Vec<String> = jiff::tz::db().available().map(|n| n.to_string()).collect();
        v.sort();
        assert!(v.len() > 300, "the tz database has {} zones", v.len());
        v
    })
}
