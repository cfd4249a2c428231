use super::*;
use crate::account::ledger::Pruned;

const MIN: i64 = 60_000;

fn name(s: &str) -> IfName {
    IfName::new(s).unwrap()
}

fn inst(s: &str) -> InstanceId {
    InstanceId::new(s).unwrap()
}

fn at(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap()
}

/// Sum of (rx, tx) and whether any bucket is estimated, per table.
fn totals(l: &Ledger, table: &str) -> (i64, i64, bool) {
    l.connection()
        .query_row(
            &format!("SELECT COALESCE(SUM(rx),0), COALESCE(SUM(tx),0), COALESCE(MAX(estimated),0) FROM {table}"),
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? != 0)),
        )
        .unwrap()
}

fn buckets(l: &Ledger, table: &str) -> Vec<(i64, i64, i64)> {
    let mut s = l
        .connection()
        .prepare(&format!(
            "SELECT bucket, rx, tx FROM {table} ORDER BY bucket"
        ))
        .unwrap();
    s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

struct World {
    _dir: tempfile::TempDir,
    path: PathBuf,
    ifname: IfName,
    instance: InstanceId,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lib/ledger.db");
        World {
            _dir: dir,
            path,
            ifname: name("tap101i0"),
            instance: inst("101"),
        }
    }
    fn open(&self, boot: &str) -> Ledger {
        Ledger::open(&self.path, boot).unwrap()
    }
    fn tick(&self, l: &mut Ledger, ms: i64, ifindex: u32, rx: u64, tx: u64) -> Recorded {
        let o = Observation {
            interface: &self.ifname,
            instance: &self.instance,
            ifindex,
            rx_bytes: rx,
            tx_bytes: tx,
        };
        l.record(&[o], at(ms), Duration::from_secs(60)).unwrap()
    }
}

#[test]
fn spread_splits_by_overlap_and_keeps_every_byte() {
    let len = FIVE_MINUTES * 1000;
    // (bytes, from ms, to ms, expected (bucket s, bytes))
    type Case = (u64, i64, i64, Vec<(i64, u64)>);
    let table: [Case; 5] = [
        // A tick inside one bucket; ending exactly on a boundary stays in that bucket.
        (1000, 0, 60_000, vec![(0, 1000)]),
        (1000, 240_000, 300_000, vec![(0, 1000)]),
        // Straddling a boundary: by overlap.
        (1000, 270_000, 330_000, vec![(0, 500), (300, 500)]),
        // A 12.5-minute gap: 2.5 buckets' worth, remainder to the last.
        (1001, 0, 750_000, vec![(0, 400), (300, 400), (600, 201)]),
        // No time passed (clock did not move): all at `to`.
        (7, 600_000, 600_000, vec![(600, 7)]),
    ];
    for (bytes, from, to, want) in table {
        let got = spread(bytes, from, to, len);
        assert_eq!(got, want, "{bytes} over ({from}, {to}]");
        assert_eq!(got.iter().map(|g| g.1).sum::<u64>(), bytes);
    }
}

#[test]
fn first_sight_is_a_baseline_then_deltas_are_exact() {
    let w = World::new();
    let mut l = w.open("boot-a");
    assert_eq!(
        w.tick(&mut l, MIN, 7, 5_000_000, 9_000_000),
        Recorded::default()
    );
    assert_eq!(totals(&l, "usage_5m"), (0, 0, false));
    let r = w.tick(&mut l, 2 * MIN, 7, 5_001_000, 9_000_500);
    assert_eq!((r.rx_bytes, r.tx_bytes, r.resets), (1000, 500, 0));
    for m in 3..=5 {
        w.tick(&mut l, m * MIN, 7, 5_001_000, 9_000_500); // idle: nothing written
    }
    w.tick(&mut l, 6 * MIN, 7, 5_004_000, 9_000_500);
    assert_eq!(totals(&l, "usage_5m"), (4000, 500, false));
    assert_eq!(totals(&l, "usage_hour"), (4000, 500, false));
    // Ticks at 1..6 min: (1,2] in bucket 0; (5,6] in bucket 300.
    assert_eq!(buckets(&l, "usage_5m"), [(0, 1000, 500), (300, 3000, 0)]);
}

#[test]
fn a_restart_resumes_from_the_committed_counters() {
    let w = World::new();
    {
        let mut l = w.open("boot-a");
        w.tick(&mut l, MIN, 7, 100, 100);
        w.tick(&mut l, 2 * MIN, 7, 1100, 100);
    } // dropped: as good as killed after the commit
    let mut l = w.open("boot-a");
    let r = w.tick(&mut l, 3 * MIN, 7, 1600, 100);
    assert_eq!(r.rx_bytes, 500, "only what came after the last commit");
    assert_eq!(totals(&l, "usage_5m"), (1500, 0, false));
}

#[test]
fn resets_count_the_new_value_never_a_wrap() {
    // (what happened, boot id of the second tick, ifindex, rx, expected rx counted)
    let table = [
        ("counters went on", "boot-a", 7, 3000, 2000),
        ("interface re-created", "boot-a", 9, 300, 300),
        ("counter went backwards", "boot-a", 7, 10, 10),
        (
            "host rebooted, counters already past the old ones",
            "boot-b",
            7,
            5000,
            5000,
        ),
    ];
    for (what, boot, ifindex, rx, want) in table {
        let w = World::new();
        let mut l = w.open("boot-a");
        w.tick(&mut l, MIN, 7, 1000, 0);
        let mut l = if boot == "boot-a" { l } else { w.open(boot) };
        let r = w.tick(&mut l, 2 * MIN, ifindex, rx, 0);
        assert_eq!(r.rx_bytes, want, "{what}");
        assert_eq!(r.resets, usize::from(want == rx), "{what}");
        assert_eq!(totals(&l, "usage_5m").0, want as i64, "{what}");
    }
}

#[test]
fn downtime_is_spread_over_the_gap_and_flagged_estimated() {
    let w = World::new();
    let mut l = w.open("boot-a");
    w.tick(&mut l, 0, 7, 0, 0);
    // The agent was down from 0 to 15 minutes: 3 buckets, 900 bytes.
    let r = w.tick(&mut l, 15 * MIN, 7, 900, 0);
    assert_eq!((r.rx_bytes, r.estimated), (900, 1));
    assert_eq!(
        buckets(&l, "usage_5m"),
        [(0, 300, 0), (300, 300, 0), (600, 300, 0)]
    );
    assert!(totals(&l, "usage_5m").2, "flagged estimated");
    // An idle interface that wakes up after a normal tick is not a gap.
    let w = World::new();
    let mut l = w.open("boot-a");
    w.tick(&mut l, 0, 7, 0, 0);
    for m in 1..=20 {
        w.tick(&mut l, m * MIN, 7, 0, 0);
    }
    let r = w.tick(&mut l, 21 * MIN, 7, 60, 0);
    assert_eq!(r.estimated, 0);
    assert_eq!(buckets(&l, "usage_5m"), [(1200, 60, 0)]);
}

#[test]
fn expiry_drops_old_buckets_only() {
    let w = World::new();
    let mut l = w.open("boot-a");
    w.tick(&mut l, 0, 7, 0, 0);
    w.tick(&mut l, MIN, 7, 100, 0);
    let day = 86_400_000;
    w.tick(&mut l, 3 * day, 7, 100, 0);
    w.tick(&mut l, 3 * day + MIN, 7, 200, 0);
    let gone = l
        .expire(
            at(3 * day + 2 * MIN),
            Duration::from_secs(2 * 86_400),
            Duration::from_secs(400 * 86_400),
        )
        .unwrap();
    assert_eq!(gone, 1, "the 5-minute bucket of day 0");
    assert_eq!(totals(&l, "usage_5m").0, 100);
    assert_eq!(totals(&l, "usage_hour").0, 200);
}

#[test]
fn a_newer_schema_is_refused() {
    let w = World::new();
    drop(w.open("boot-a"));
    let c = Connection::open(&w.path).unwrap();
    c.pragma_update(None, "user_version", 99).unwrap();
    drop(c);
    let err = Ledger::open(&w.path, "boot-a").err().unwrap().to_string();
    assert!(err.contains("schema version 99 is newer"), "{err}");
}

#[test]
fn prune_counts_first_and_deletes_only_what_it_said() {
    let w = World::new();
    let mut l = w.open("boot-a");
    w.tick(&mut l, 0, 7, 0, 0);
    w.tick(&mut l, MIN, 7, 100, 10);
    let hour = 3_600_000;
    for m in 0..=2 {
        w.tick(&mut l, 2 * hour + m * MIN, 7, 100, 10);
    }
    w.tick(&mut l, 2 * hour + 3 * MIN, 7, 300, 10);
    let other = inst("102");
    let cut = at(hour);
    let dry = l.prune(cut, None, true).unwrap();
    assert_eq!(
        dry,
        Pruned {
            rows_5m: 1,
            rows_hourly: 1,
            upload_bytes: 100,
            download_bytes: 10
        }
    );
    assert_eq!(totals(&l, "usage_hour").0, 300, "a dry run deletes nothing");
    assert_eq!(
        l.prune(cut, Some(&other), false).unwrap(),
        Pruned::default(),
        "another instance"
    );
    assert_eq!(l.prune(cut, Some(&w.instance), false).unwrap(), dry);
    assert_eq!(totals(&l, "usage_hour").0, 200);
    assert_eq!(totals(&l, "usage_5m").0, 200);
}
