//! Quota store benchmarks, each beside a baseline measured in the same run:
//!
//!   cargo bench --bench store            # full
//!   cargo bench --bench store -- quick   # a few seconds, proves it runs
//!
//! 1. reserve + commit pairs per second on SQLite (target ≥ 10,000/s), against the floor
//!    of durable SQLite: one single-row write transaction with `synchronous = FULL`, one
//!    after another (what one fsync per commit allows). Measured three ways: one caller
//!    through `SqliteStore` (two transactions per pair), 64 concurrent callers through the
//!    service (group commit), and 16 HTTP clients on loopback through the real API.
//! 2. Report ingest: interface samples per second through the service, batches of one
//!    tick of 1,000 instances, against the same floor.
//! 3. An agent's quota lookup for 1,000 instances with the rest of the fleet's counts
//!    (target on PostgreSQL: under 50 ms), against the lookup without them (what a
//!    panel asks), in the same run.
//!
//! The databases live under /var/tmp (disk, as /var/lib is in production); PostgreSQL is
//! a throwaway server started for the run (needs root and Debian's postgresql package),
//! with its default `synchronous_commit = on`.

#[path = "../tests/support/postgres.rs"]
#[allow(dead_code)]
mod postgres;

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use rusqlite::{Connection, params};
use sluice::api::store::{self as http, ApiOptions};
use sluice::model::ids::{InstanceId, Label};
use sluice::store::SqliteStore;
use sluice::store::model::{Deltas, Limit, Scope};
use sluice::store::report::{Batch, Report, Sample};
use sluice::store::service::{Settings, Store};

fn dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("sluice-store-bench")
        .tempdir_in("/var/tmp")
        .unwrap()
}

/// Durable single-row transactions per second, one after another.
fn floor(n: usize) -> f64 {
    let d = dir();
    let c = Connection::open(d.path().join("floor.db")).unwrap();
    c.pragma_update(None, "journal_mode", "WAL").unwrap();
    c.pragma_update(None, "synchronous", "FULL").unwrap();
    c.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v INTEGER)")
        .unwrap();
    let start = Instant::now();
    for i in 0..n {
        c.execute(
            "INSERT OR REPLACE INTO t VALUES (?1 % 100, ?1)",
            params![i as i64],
        )
        .unwrap();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn one() -> Deltas {
    [(Label::new("ipv4").unwrap(), 1)].into_iter().collect()
}

/// Pairs per second, one caller, each call its own transaction.
fn sequential(n: usize) -> f64 {
    let d = dir();
    let mut s = SqliteStore::open(&d.path().join("q.db")).unwrap();
    s.set_limit(
        &Scope::Default,
        &Label::new("ipv4").unwrap(),
        Some(Limit::Unlimited),
    )
    .unwrap();
    let (i, deltas) = (InstanceId::new("1").unwrap(), one());
    let start = Instant::now();
    for _ in 0..n {
        let id = s.reserve(&i, &deltas, Duration::from_secs(60)).unwrap();
        s.commit(&id).unwrap();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Pairs per second with `callers` concurrent tasks on `store`.
fn grouped(rt: &tokio::runtime::Runtime, store: &Store, n: usize, callers: usize) -> f64 {
    rt.block_on(async {
        let start = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..callers {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let i = InstanceId::new(&format!("{}", c % 100)).unwrap();
                for _ in 0..n / callers {
                    let (id, _) = store
                        .reserve(i.clone(), one(), Duration::from_secs(60))
                        .await
                        .unwrap();
                    store.commit(id).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        (n / callers * callers) as f64 / start.elapsed().as_secs_f64()
    })
}

/// Pairs per second from `clients` HTTP clients on loopback.
fn over_http(rt: &tokio::runtime::Runtime, n: usize, clients: usize) -> f64 {
    let d = dir();
    let path = d.path().join("q.db");
    let token = SqliteStore::open(&path)
        .unwrap()
        .token_create(&sluice::model::token::Role::Admin)
        .unwrap()
        .reveal();
    let store = Store::open_sqlite(&path, Settings::default()).unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        // Sixteen clients on one address: neither limit is what is measured.
        let options = ApiOptions {
            rate_limit: 0,
            address_rate_limit: 0,
            ..ApiOptions::default()
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(http::serve(listener, store, options, async {
            let _ = stopped.await;
        }));
        let http = reqwest::Client::new();
        let token = Arc::new(token);
        let start = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..clients {
            let (http, token, base) = (http.clone(), token.clone(), base.clone());
            tasks.push(tokio::spawn(async move {
                let body = format!(r#"{{"instance":"{c}","deltas":{{"ipv4":1}}}}"#);
                for _ in 0..n / clients {
                    let bytes = http
                        .post(format!("{base}/v1/reservations"))
                        .bearer_auth(&*token)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await
                        .unwrap()
                        .bytes()
                        .await
                        .unwrap();
                    let r: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                    let id = r["id"].as_str().unwrap();
                    let s = http
                        .post(format!("{base}/v1/reservations/{id}/commit"))
                        .bearer_auth(&*token)
                        .send()
                        .await
                        .unwrap()
                        .status();
                    assert_eq!(s.as_u16(), 204);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let rate = (n / clients * clients) as f64 / start.elapsed().as_secs_f64();
        let _ = stop.send(());
        server.await.unwrap().unwrap();
        rate
    })
}

/// Interface samples per second: `ticks` batches of `instances` samples, 4 concurrent
/// reporters (agents).
fn ingest(rt: &tokio::runtime::Runtime, store: &Store, ticks: usize, instances: usize) -> f64 {
    // Minutes ending now: the store refuses samples from the future or past its retention.
    let t0 = Timestamp::now() - jiff::SignedDuration::from_secs(60 * (ticks / 4 + 1) as i64);
    rt.block_on(async {
        let start = Instant::now();
        let mut tasks = Vec::new();
        for agent in 0..4 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for tick in 0..ticks / 4 {
                    let at = t0 + jiff::SignedDuration::from_secs(60 * tick as i64);
                    let samples = (0..instances)
                        .map(|i| Sample {
                            at,
                            instance: InstanceId::new(&format!("{agent}-{i}")).unwrap(),
                            upload: 1000 + i as u64,
                            download: 2000,
                            estimated: false,
                        })
                        .collect();
                    let report = Report {
                        agent: Label::new(&format!("hv{agent}")).unwrap(),
                        batches: vec![Batch {
                            seq: tick as u64 + 1,
                            samples,
                        }],
                    };
                    let done = store.ingest(report).await.unwrap();
                    assert_eq!(done.applied.len(), 1);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        (ticks / 4 * 4 * instances) as f64 / start.elapsed().as_secs_f64()
    })
}

/// Median ms of an agent's lookup (with the other hosts' counts) of the 1,000 instances
/// `ingest` filled, and of the same lookup without them.
fn lookups(rt: &tokio::runtime::Runtime, store: &Store, runs: usize) -> (f64, f64) {
    rt.block_on(async {
        let w: sluice::store::spec::WireSpec = serde_json::from_str(
            r#"{"traffic":[{"resource":"traffic_total","period":"month","limit":"1TB","on_exceed":"warn"},
                           {"resource":"traffic_upload","period":"day","limit":"100GB","on_exceed":"warn"}]}"#,
        )
        .unwrap();
        let spec = w
            .validate(&sluice::store::spec::KnownResources::new(&[]))
            .unwrap();
        store.put_scope(Scope::Default, spec).await.unwrap();
        let ids: Vec<InstanceId> = (0..1_000)
            .map(|i| InstanceId::new(&format!("0-{i}")).unwrap())
            .collect();
        let agent = Label::new("hv1").unwrap();
        let mut plain = Vec::new();
        let mut fleet = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            let q = store.traffic_quotas(ids.clone()).await.unwrap();
            plain.push(t.elapsed().as_secs_f64() * 1e3);
            assert_eq!(q.len(), 1_000);
            let t = Instant::now();
            let q = store.traffic_quotas_for(agent.clone(), ids.clone()).await.unwrap();
            fleet.push(t.elapsed().as_secs_f64() * 1e3);
            // hv0 reported these; hv1 asks: all of it is elsewhere.
            assert!(q["0-1"].iter().all(|q| q.elsewhere.as_ref().is_some_and(|e| e.bytes > 0)));
        }
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        (median(fleet), median(plain))
    })
}

fn sqlite_store() -> (tempfile::TempDir, Store) {
    let d = dir();
    let store = Store::open_sqlite(&d.path().join("q.db"), Settings::default()).unwrap();
    (d, store)
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let scale = if quick { 1 } else { 10 };
    let rt = runtime();
    let pg = postgres::Postgres::start();
    let pg_store = |rt: &tokio::runtime::Runtime| {
        rt.block_on(Store::connect_postgres(&pg.database(), Settings::default()))
            .unwrap()
    };
    let base = floor(500 * scale);
    println!("baseline: durable single-row SQLite transactions, one at a time: {base:>9.0}/s");
    println!();
    println!("reserve + commit pairs per second (target on SQLite: ≥ 10,000/s)");
    let seq = sequential(300 * scale);
    println!(
        "  SQLite, one caller, a transaction per call   {seq:>9.0}/s  ({:.2}× baseline)",
        seq / base
    );
    let (_d, s) = sqlite_store();
    let grp = grouped(&rt, &s, 2_000 * scale, 64);
    println!(
        "  SQLite, 64 callers, group commit              {grp:>9.0}/s  ({:.2}× baseline)",
        grp / base
    );
    let web = over_http(&rt, 1_000 * scale, 16);
    println!(
        "  SQLite, 16 HTTP clients on loopback           {web:>9.0}/s  ({:.2}× baseline)",
        web / base
    );
    let p = pg_store(&rt);
    let pgr = grouped(&rt, &p, 2_000 * scale, 64);
    println!(
        "  PostgreSQL, 64 callers on 100 instances       {pgr:>9.0}/s  ({:.2}× baseline)",
        pgr / base
    );
    println!();
    println!("report ingest, interface-samples per second (target on PostgreSQL: ≥ 100,000/s)");
    let (_d, s) = sqlite_store();
    let rows = ingest(&rt, &s, 8 * scale, 1_000);
    println!(
        "  SQLite      {rows:>9.0}/s  ({:.1}× baseline rows)",
        rows / base
    );
    let p = pg_store(&rt);
    let rows = ingest(&rt, &p, 8 * scale, 1_000);
    println!(
        "  PostgreSQL  {rows:>9.0}/s  ({:.1}× baseline rows)",
        rows / base
    );
    println!();
    println!(
        "an agent's quota lookup of 1,000 instances with the fleet's counts (target on PostgreSQL: < 50 ms)"
    );
    let runs = if quick { 3 } else { 11 };
    for (name, store) in [("SQLite    ", &s), ("PostgreSQL", &p)] {
        let (fleet, plain) = lookups(&rt, store, runs);
        println!(
            "  {name}  {fleet:>8.1} ms  ({:.2}× the lookup without them: {plain:.1} ms)",
            fleet / plain
        );
    }
}
