//! Ledger benchmarks, each beside a baseline measured in the same run:
//!
//!   cargo bench --bench ledger            # 10,000 interfaces
//!   cargo bench --bench ledger -- quick   # 1,000 interfaces, a shorter day
//!
//! 1. Commit cost of one tick (every interface moved traffic, the worst case; and 10 %
//!    active) against the floor of durable storage: writing the same counters as one flat
//!    file and fsyncing it. Target: ≤ 10 ms per tick at 10,000 interfaces.
//! 2. Disk growth per interface per day: a simulated day of 60 s ticks (every interface
//!    active every tick, with retention), database size after a checkpoint.
//!
//! The ledger lives in a directory under /var/tmp (disk, as /var/lib is in production).

use std::io::Write;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use sluice::account::ledger::Journal;
use sluice::account::ledger::spool::{SpoolSample, SpoolWrite};
use sluice::account::quota_counts::QuotaUsage;
use sluice::account::{Ledger, Observation};
use sluice::model::calendar::Period;
use sluice::model::ids::{IfName, InstanceId, RuleName};

fn names(n: usize) -> (Vec<IfName>, Vec<InstanceId>) {
    (
        (0..n)
            .map(|i| IfName::new(&format!("tap{i}i0")).unwrap())
            .collect(),
        (0..n)
            .map(|i| InstanceId::new(&i.to_string()).unwrap())
            .collect(),
    )
}

/// Cumulative counters of every interface; each tick, every `active_every`-th one moves
/// ~1 MB up and 2 MB down, the others stay where they were.
struct Counters(Vec<(u64, u64)>);

impl Counters {
    fn advance(&mut self, active_every: usize) {
        for (i, c) in self.0.iter_mut().enumerate() {
            if i % active_every == 0 {
                c.0 += 1_000_003;
                c.1 += 2_000_011;
            }
        }
    }
    fn observations<'a>(&self, ifs: &'a [IfName], ids: &'a [InstanceId]) -> Vec<Observation<'a>> {
        ifs.iter()
            .zip(ids)
            .zip(&self.0)
            .enumerate()
            .map(|(i, ((interface, instance), c))| Observation {
                interface,
                instance,
                ifindex: i as u32 + 2,
                rx_bytes: c.0,
                tx_bytes: c.1,
            })
            .collect()
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn commit_cost(n: usize, rounds: usize) {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let (ifs, ids) = names(n);
    let mut ledger = Ledger::open(&dir.path().join("ledger.db"), "bench-boot").unwrap();
    let interval = Duration::from_secs(60);
    let t0 = 1_800_000_000_000i64;
    let at = |k: u64| Timestamp::from_millisecond(t0 + k as i64 * 60_000).unwrap();
    let mut c = Counters(vec![(0, 0); n]);
    ledger
        .record(&c.observations(&ifs, &ids), at(1), interval)
        .unwrap();
    let flat = dir.path().join("flat");
    let (mut all, mut tenth, mut floor, mut ruled, mut spooled) =
        (vec![], vec![], vec![], vec![], vec![]);
    let rule = RuleName::new("monthly").unwrap();
    let period = Period {
        start: at(0),
        end: at(60 * 24 * 30),
    };
    let mut k = 2u64;
    for _ in 0..rounds {
        c.advance(1);
        let obs = c.observations(&ifs, &ids);
        let s = Instant::now();
        ledger.record(&obs, at(k), interval).unwrap();
        all.push(s.elapsed());
        k += 1;

        // As the agent commits it: every instance also moved a monthly rule's count.
        c.advance(1);
        let obs = c.observations(&ifs, &ids);
        let s = Instant::now();
        ledger
            .record_with(&obs, at(k), interval, |spent| Journal {
                quotas: spent
                    .iter()
                    .map(|sp| {
                        let usage = QuotaUsage {
                            period,
                            upload: sp.upload * k,
                            download: sp.download * k,
                            notified: 0,
                            exceeded: false,
                        };
                        ((rule.clone(), sp.instance.clone()), Some(usage))
                    })
                    .collect(),
                events: vec![],
                spool: None,
            })
            .unwrap();
        ruled.push(s.elapsed());
        k += 1;

        // With a quota store: every instance's deltas spooled too, and the previous
        // tick's row trimmed (a reporter that keeps up).
        c.advance(1);
        let obs = c.observations(&ifs, &ids);
        let s = Instant::now();
        ledger
            .record_with(&obs, at(k), interval, |spent| Journal {
                quotas: Default::default(),
                events: vec![],
                spool: Some(SpoolWrite {
                    estimated: Vec::new(),
                    samples: spent
                        .iter()
                        .map(|sp| SpoolSample {
                            at_ms: sp.to.as_millisecond(),
                            instance: sp.instance.as_str().to_owned(),
                            upload: sp.upload,
                            download: sp.download,
                        })
                        .collect(),
                    acked_through: u64::MAX >> 1,
                    max_bytes: 64 << 20,
                }),
            })
            .unwrap();
        spooled.push(s.elapsed());
        k += 1;

        c.advance(10);
        let obs = c.observations(&ifs, &ids);
        let s = Instant::now();
        ledger.record(&obs, at(k), interval).unwrap();
        tenth.push(s.elapsed());
        k += 1;

        // Floor: the same counters (name, rx, tx) in one file, written and fsynced.
        let s = Instant::now();
        let mut f = std::fs::File::create(&flat).unwrap();
        let mut buf = Vec::with_capacity(n * 40);
        for o in &obs {
            writeln!(buf, "{} {} {}", o.interface, o.rx_bytes, o.tx_bytes).unwrap();
        }
        f.write_all(&buf).unwrap();
        f.sync_all().unwrap();
        floor.push(s.elapsed());
    }
    let packed: Vec<(i64, i64)> = {
        let mut q = ledger
            .connection()
            .prepare("SELECT id, length(data) FROM state ORDER BY id")
            .unwrap();
        q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let worst = all
        .iter()
        .chain(&tenth)
        .chain(&ruled)
        .chain(&spooled)
        .max()
        .copied()
        .unwrap_or_default();
    let (a, t, f, r) = (median(all), median(tenth), median(floor), median(ruled));
    let sp = median(spooled);
    println!(
        "{n:>6} interfaces: commit, all active {} ({:.1}x the fsync'd flat file {})  10% active {} ({:.1}x)  all active + a rule's counts {} ({:.1}x)  all active + spooled for the store {} ({:.1}x)  worst tick {} ({:.1}x)  target <= 10 ms",
        ms(a),
        a.as_secs_f64() / f.as_secs_f64(),
        ms(f),
        ms(t),
        t.as_secs_f64() / f.as_secs_f64(),
        ms(r),
        r.as_secs_f64() / f.as_secs_f64(),
        ms(sp),
        sp.as_secs_f64() / f.as_secs_f64(),
        ms(worst),
        worst.as_secs_f64() / f.as_secs_f64(),
    );
    for (row, len) in packed {
        let what = if row == 1 { "counters" } else { "quota counts" };
        println!(
            "        packed {what}: {:.0} kB, {:.1} B per interface",
            len as f64 / 1e3,
            len as f64 / n as f64
        );
    }
}

fn growth(n: usize, ticks: u64) {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let path = dir.path().join("ledger.db");
    let (ifs, ids) = names(n);
    let mut ledger = Ledger::open(&path, "bench-boot").unwrap();
    let interval = Duration::from_secs(60);
    let t0 = 1_800_000_000_000i64;
    let mut c = Counters(vec![(0, 0); n]);
    for k in 1..=ticks {
        let at = Timestamp::from_millisecond(t0 + k as i64 * 60_000).unwrap();
        c.advance(1);
        ledger
            .record(&c.observations(&ifs, &ids), at, interval)
            .unwrap();
    }
    ledger
        .connection()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    let size = std::fs::metadata(&path).unwrap().len();
    let rows: i64 = ledger
        .connection()
        .query_row(
            "SELECT (SELECT COUNT(*) FROM usage_5m) + (SELECT COUNT(*) FROM usage_hour)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let per_row = size as f64 / rows as f64;
    let per_day = size as f64 / n as f64 * (1440.0 / ticks as f64);
    // Steady state: 2 days of 5-minute rows (576) and 400 days of hourly rows (9,600).
    let steady = (576.0 + 9600.0) * per_row;
    println!(
        "disk: {n} interfaces x {ticks} ticks of 60 s = {:.2} MB ({rows} rows, {per_row:.0} B/row): {:.1} kB per interface per day; steady state with default retention ~{:.2} MB per interface",
        size as f64 / 1e6,
        per_day / 1e3,
        steady / 1e6,
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    println!("## ledger commit per tick (median of interleaved rounds) vs an fsync'd flat file");
    if quick {
        commit_cost(1_000, 5);
        growth(100, 120);
    } else {
        // 21 rounds of 4 ticks: over an hour of ticks, so boundaries' flushes are in it.
        commit_cost(1_000, 21);
        commit_cost(10_000, 21);
        growth(100, 1440);
    }
}
