//! The 95th percentile of a 31-day month of 5-minute intervals, for many instances, each
//! beside a plain SQL `ORDER BY` over the same rows in the same run:
//!
//!   cargo bench --bench percentile            # 1,000 instances (target: under 1 s each)
//!   cargo bench --bench percentile -- quick   # 100 instances, proves it runs
//!
//! 1. From the ledger (`sluice usage --percentile 95 --by month`'s read), against
//!    `SELECT id, rx … ORDER BY id, rx` on the ledger's table.
//! 2. From the store on SQLite and on PostgreSQL (`?percentile=95` for every instance),
//!    against `SELECT instance, upload … ORDER BY instance, upload` on the store's table.
//!
//! Every instance is busy in every interval (8,928 rows each): the worst case. The rows
//! are written straight into the tables; the plain `ORDER BY` reads them as rows, then
//! the ledger and the store pack their closed days (timed and printed, once) and what
//! is timed is the read. PostgreSQL is a throwaway server started for the run (needs root and Debian's
//! postgresql package).

#[path = "../tests/support/postgres.rs"]
#[allow(dead_code)]
mod postgres;

mod common;

use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use rusqlite::{Connection, params};
use sluice::account::ledger::Ledger;
use sluice::account::usage::percentiles;
use sluice::model::calendar::Granularity;
use sluice::model::ids::InstanceId;
use sluice::model::percentile::Percentile;
use sluice::store::service::{Settings, Store};
use sluice::store::traffic::StorePeriod;

/// December 2026: 31 days, 8,928 intervals.
const MONTH_START: i64 = 1_796_083_200; // 2026-12-01T00:00:00Z
const INTERVALS: i64 = 31 * 288;

/// A pseudo-random but fixed number of bytes for (instance, interval).
fn bytes(i: i64, b: i64, salt: i64) -> i64 {
    ((i * 7919 + b * 104_729 + salt) % 100_003 + 1) * 1000
}

fn dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("sluice-percentile-bench")
        .tempdir_in("/var/tmp")
        .unwrap()
}

fn time(runs: usize, f: impl FnMut()) -> Duration {
    common::median(runs, f)
}

fn ledger_case(n: i64) -> (Duration, Duration) {
    let d = dir();
    let path = d.path().join("ledger.db");
    drop(Ledger::open(&path, "bench").unwrap());
    let mut c = Connection::open(&path).unwrap();
    let tx = c.transaction().unwrap();
    {
        let mut iface = tx
            .prepare("INSERT INTO interfaces (id, interface, instance) VALUES (?1, ?2, ?3)")
            .unwrap();
        let mut row = tx
            .prepare("INSERT INTO usage_5m (bucket, id, rx, tx) VALUES (?1, ?2, ?3, ?4)")
            .unwrap();
        for i in 1..=n {
            iface
                .execute(params![i, format!("tap{i}i0"), format!("{i}")])
                .unwrap();
        }
        for b in 0..INTERVALS {
            for i in 1..=n {
                row.execute(params![
                    MONTH_START + 300 * b,
                    i,
                    bytes(i, b, 0),
                    bytes(i, b, 7)
                ])
                .unwrap();
            }
        }
    }
    tx.commit().unwrap();
    let from = Timestamp::from_second(MONTH_START).unwrap();
    let to = Timestamp::from_second(MONTH_START + INTERVALS * 300).unwrap();
    // The baseline reads the rows as they were written, before they are packed.
    let sql = time(3, || {
        let mut stmt = c
            .prepare_cached(
                "SELECT id, rx FROM usage_5m WHERE bucket >= ?1 AND bucket < ?2 ORDER BY id, rx",
            )
            .unwrap();
        let mut rows = stmt
            .query(params![from.as_second(), to.as_second()])
            .unwrap();
        let mut seen = 0i64;
        while let Some(r) = rows.next().unwrap() {
            seen += r.get::<_, i64>(1).unwrap().signum();
        }
        assert_eq!(seen, n * INTERVALS);
    });
    let used = |c: &Connection| -> i64 {
        let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
        let free: i64 = c
            .query_row("PRAGMA freelist_count", [], |r| r.get(0))
            .unwrap();
        let size: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
        (pages - free) * size
    };
    let loose = used(&c);
    let mut ledger = Ledger::open(&path, "bench").unwrap();
    // What the agent does as days close (here the month's 31 at once, as after an
    // upgrade): each closed day packed into one row per interface, a chunk per call.
    let started = std::time::Instant::now();
    let mut calls = 0;
    while ledger
        .pack_day(to + jiff::SignedDuration::from_hours(2))
        .unwrap()
        .is_some()
    {
        calls += 1;
    }
    let took = started.elapsed().as_secs_f64() * 1e3;
    let packed = used(&c);
    println!(
        "    (packing the 31 days once: {took:.1} ms, {:.1} ms a call of at most 256 interfaces;\n     \
         5-minute data {:.0} kB an interface as rows, {:.0} kB packed)",
        took / calls as f64,
        loose as f64 / n as f64 / 1e3,
        packed as f64 / n as f64 / 1e3,
    );
    let conn = ledger.connection();
    let read = |instance: Option<&InstanceId>| {
        let utc = TimeZone::UTC;
        percentiles(
            conn,
            instance,
            Granularity::Month,
            (from, to),
            to,
            &utc,
            Percentile::P95,
        )
        .unwrap()
    };
    let mut answers = 0;
    let ours = time(3, || answers = read(None).len());
    assert_eq!(answers as i64, n, "one row per instance");
    // One instance among them, as its dashboard page asks on every refresh.
    let id = InstanceId::new(&format!("{}", n / 2)).unwrap();
    let one = time(5, || assert_eq!(read(Some(&id)).len(), 1));
    println!(
        "  ledger, one instance of {n} (its page)  {:>9.1} ms",
        one.as_secs_f64() * 1e3
    );
    (ours, sql)
}

fn store_rows(n: i64) -> impl Iterator<Item = (String, i64, i64, i64)> {
    (0..INTERVALS).flat_map(move |b| {
        (1..=n).map(move |i| {
            (
                format!("{i}"),
                (MONTH_START + 300 * b) * 1000,
                bytes(i, b, 0),
                bytes(i, b, 7),
            )
        })
    })
}

fn ids(n: i64) -> Vec<InstanceId> {
    (1..=n)
        .map(|i| InstanceId::new(&format!("{i}")).unwrap())
        .collect()
}

fn store_figure(rt: &tokio::runtime::Runtime, store: &Store, n: i64) -> Duration {
    let at = Timestamp::from_second(MONTH_START + 86_400).unwrap();
    let end = Timestamp::from_second(MONTH_START + INTERVALS * 300).unwrap();
    // What the serving store does once a day (here once for the month's 31 days, as
    // after an upgrade): its closed days packed into one value per instance and day.
    let started = std::time::Instant::now();
    let packed = rt
        .block_on(store.pack_days(end + jiff::SignedDuration::from_hours(24)))
        .unwrap();
    assert_eq!(packed as i64, n * 31, "one value per instance and day");
    println!(
        "    (packing the 31 days once: {:.1} ms, {:.1} ms a day)",
        started.elapsed().as_secs_f64() * 1e3,
        started.elapsed().as_secs_f64() * 1e3 / 31.0
    );
    let mut answers = 0;
    let t = time(3, || {
        let all = rt
            .block_on(store.percentiles(ids(n), StorePeriod::Month, at, end, Percentile::P95))
            .unwrap();
        answers = all.len();
    });
    assert_eq!(answers as i64, n, "one answer per instance");
    t
}

const STORE_SQL: &str = "SELECT instance, upload FROM traffic_5m
     WHERE bucket_ms >= $1 AND bucket_ms < $2 ORDER BY instance, upload";

fn sqlite_case(rt: &tokio::runtime::Runtime, n: i64) -> (Duration, Duration) {
    let d = dir();
    let path = d.path().join("q.db");
    drop(Store::open_sqlite(&path, Settings::default()).unwrap());
    let mut c = Connection::open(&path).unwrap();
    let tx = c.transaction().unwrap();
    {
        let mut row = tx
            .prepare(
                "INSERT INTO traffic_5m (instance, bucket_ms, upload, download)
                 VALUES (?1, ?2, ?3, ?4)",
            )
            .unwrap();
        for (i, b, u, dn) in store_rows(n) {
            row.execute(params![i, b, u, dn]).unwrap();
        }
    }
    tx.commit().unwrap();
    let range = (MONTH_START * 1000, (MONTH_START + INTERVALS * 300) * 1000);
    let sql = time(3, || {
        let mut stmt = c.prepare_cached(&STORE_SQL.replace('$', "?")).unwrap();
        let mut rows = stmt.query(params![range.0, range.1]).unwrap();
        let mut seen = 0i64;
        while let Some(r) = rows.next().unwrap() {
            seen += r.get::<_, i64>(1).unwrap().signum();
        }
        assert_eq!(seen, n * INTERVALS);
    });
    let store = Store::open_sqlite(&path, Settings::default()).unwrap();
    (store_figure(rt, &store, n), sql)
}

fn postgres_case(rt: &tokio::runtime::Runtime, url: &str, n: i64) -> (Duration, Duration) {
    let store = rt
        .block_on(Store::connect_postgres(url, Settings::default()))
        .unwrap();
    let (client, conn) = rt
        .block_on(tokio_postgres::connect(url, tokio_postgres::NoTls))
        .unwrap();
    rt.spawn(conn);
    // Generated in the server: the same numbers as `bytes`.
    rt.block_on(client.execute(
        "INSERT INTO traffic_5m (instance, bucket_ms, upload, download)
         SELECT i::TEXT, ($1::BIGINT + 300 * b) * 1000,
                ((i * 7919 + b * 104729) % 100003 + 1) * 1000,
                ((i * 7919 + b * 104729 + 7) % 100003 + 1) * 1000
         FROM generate_series(1, $2::BIGINT) i, generate_series(0, $3::BIGINT - 1) b",
        &[&MONTH_START, &n, &INTERVALS],
    ))
    .unwrap();
    rt.block_on(client.batch_execute("VACUUM ANALYZE traffic_5m"))
        .unwrap();
    let range = (MONTH_START * 1000, (MONTH_START + INTERVALS * 300) * 1000);
    let sql = time(3, || {
        let rows = rt
            .block_on(client.query(STORE_SQL, &[&range.0, &range.1]))
            .unwrap();
        assert_eq!(rows.len() as i64, n * INTERVALS);
    });
    (store_figure(rt, &store, n), sql)
}

fn line(what: &str, (ours, sql): (Duration, Duration)) {
    println!(
        "  {what:<34} {:>9.1} ms   plain ORDER BY {:>9.1} ms   ({:.2}× the ORDER BY)",
        ours.as_secs_f64() * 1e3,
        sql.as_secs_f64() * 1e3,
        ours.as_secs_f64() / sql.as_secs_f64()
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let n: i64 = if quick { 100 } else { 1000 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "95th percentile of a 31-day month ({INTERVALS} 5-minute intervals) for {n} instances, every interval busy (target: under 1 s at 1,000)"
    );
    line("ledger", ledger_case(n));
    line("store, SQLite", sqlite_case(&rt, n));
    let pg = postgres::Postgres::start();
    line("store, PostgreSQL", postgres_case(&rt, &pg.database(), n));
}
