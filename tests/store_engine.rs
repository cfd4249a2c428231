//! The same engine suite on both backends: SQLite (a temp file) and PostgreSQL (a
//! throwaway server on loopback). Each case takes a fresh store.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use sluice::model::ids::{InstanceId, Label};
use sluice::store::model::{Deltas, Scope, StoreError};
use sluice::store::report::{Batch, Report, Sample};
use sluice::store::service::{Settings, Store};
use sluice::store::spec::{KnownResources, WireSpec};
use support::postgres::Postgres;

fn inst(s: &str) -> InstanceId {
    InstanceId::new(s).unwrap()
}
fn label(s: &str) -> Label {
    Label::new(s).unwrap()
}
fn deltas(pairs: &[(&str, i64)]) -> Deltas {
    pairs.iter().map(|(r, d)| (label(r), *d)).collect()
}
const HOUR: Duration = Duration::from_secs(3600);

async fn put(store: &Store, scope: Scope, json: &str) {
    let w: WireSpec = serde_json::from_str(json).unwrap();
    let spec = w.validate(&KnownResources::new(&[])).unwrap();
    store.put_scope(scope, spec).await.unwrap();
}

/// (limit, from, in_use, reserved) of `resource` for `instance`.
async fn standing(store: &Store, i: &str, r: &str) -> (i64, String, i64, i64) {
    let q = store.instance_quota(inst(i)).await.unwrap();
    q.limits
        .get(r)
        .map(|v| (v.limit.to_i64(), v.from.clone(), v.in_use, v.reserved))
        .unwrap_or((-1, "none".into(), 0, 0))
}

async fn resolution(store: &Store) {
    put(store, Scope::Default, r#"{"limits":{"ipv4":1}}"#).await;
    put(
        store,
        Scope::Class(label("basic")),
        r#"{"limits":{"ipv4":2,"proxies":0}}"#,
    )
    .await;
    put(
        store,
        Scope::Project(label("acme")),
        r#"{"class":"basic","limits":{"ipv4":3}}"#,
    )
    .await;
    put(store, Scope::Instance(inst("101")), r#"{"project":"acme"}"#).await;
    put(store, Scope::Instance(inst("102")), r#"{"class":"basic"}"#).await;
    put(
        store,
        Scope::Instance(inst("104")),
        r#"{"limits":{"ipv4":-1}}"#,
    )
    .await;
    // (instance, limit, level)
    let table = [
        ("101", 3, "project"),
        ("102", 2, "class"),
        ("103", 1, "default"),
        ("104", -1, "instance"),
    ];
    for (i, limit, from) in table {
        let (l, f, _, _) = standing(store, i, "ipv4").await;
        assert_eq!((l, f.as_str()), (limit, from), "instance {i}");
    }
    // The project's class applies where the project sets nothing; 0 allows none.
    assert_eq!(standing(store, "101", "proxies").await.0, 0);
    let err = store
        .limit_check(inst("101"), deltas(&[("proxies", 1)]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::OverQuota(ref o) if o.limit == 0),
        "{err}"
    );
    store
        .limit_check(inst("104"), deltas(&[("ipv4", 1_000_000)]))
        .await
        .unwrap();
}

async fn reservations(store: &Store) {
    put(store, Scope::Default, r#"{"limits":{"ipv4":2}}"#).await;
    let one = || deltas(&[("ipv4", 1)]);
    let (a, _) = store.reserve(inst("1"), one(), HOUR).await.unwrap();
    let (b, _) = store.reserve(inst("1"), one(), HOUR).await.unwrap();
    assert_eq!(standing(store, "1", "ipv4").await.3, 2);
    let err = store.reserve(inst("1"), one(), HOUR).await.unwrap_err();
    assert!(matches!(err, StoreError::OverQuota(_)), "{err}");
    store.commit(a.clone()).await.unwrap();
    store.rollback(b.clone()).await.unwrap();
    let (_, _, in_use, reserved) = standing(store, "1", "ipv4").await;
    assert_eq!((in_use, reserved), (1, 0));
    assert!(matches!(
        store.commit(a).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.rollback(b).await,
        Err(StoreError::NotFound { .. })
    ));
    let (c, _) = store
        .reserve(inst("1"), one(), Duration::from_millis(1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(
        standing(store, "1", "ipv4").await.3,
        0,
        "lapsed: not counted"
    );
    assert_eq!(store.expire(Timestamp::now()).await.unwrap().0, 1);
    assert!(matches!(
        store.commit(c).await,
        Err(StoreError::NotFound { .. })
    ));
    let (give, _) = store
        .reserve(inst("1"), deltas(&[("ipv4", -5)]), HOUR)
        .await
        .unwrap();
    store.commit(give).await.unwrap();
    assert_eq!(standing(store, "1", "ipv4").await.2, 0, "never below zero");
}

async fn recount_reset_destroy(store: &Store) {
    let counts: BTreeMap<Label, u64> = [(label("ipv4"), 7)].into_iter().collect();
    store.usage_set(inst("1"), counts.clone()).await.unwrap();
    store.usage_set(inst("2"), counts).await.unwrap();
    assert_eq!(standing(store, "1", "ipv4").await.2, 7);
    assert_eq!(
        store
            .usage_reset(label("ipv4"), Some(inst("2")))
            .await
            .unwrap(),
        1
    );
    assert_eq!(standing(store, "2", "ipv4").await.2, 0);
    assert_eq!(standing(store, "1", "ipv4").await.2, 7);
    put(
        store,
        Scope::Instance(inst("1")),
        r#"{"limits":{"ipv4":9}}"#,
    )
    .await;
    store.destroy_instance(inst("1")).await.unwrap();
    assert_eq!(
        standing(store, "1", "ipv4").await,
        (-1, "none".into(), 0, 0)
    );
    // A deleted project's instances fall back to their class.
    put(store, Scope::Class(label("c")), r#"{"limits":{"ipv4":6}}"#).await;
    put(
        store,
        Scope::Project(label("p")),
        r#"{"limits":{"ipv4":5}}"#,
    )
    .await;
    put(
        store,
        Scope::Instance(inst("3")),
        r#"{"project":"p","class":"c"}"#,
    )
    .await;
    assert_eq!(standing(store, "3", "ipv4").await.0, 5);
    store
        .delete_scope(Scope::Project(label("p")))
        .await
        .unwrap();
    assert_eq!(standing(store, "3", "ipv4").await.0, 6);
    assert!(matches!(
        store.delete_scope(Scope::Project(label("p"))).await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn reports_once(store: &Store) {
    let at = Timestamp::now() - jiff::SignedDuration::from_mins(10);
    // A tick a second: batch n's sample ends n seconds after `at`.
    let batch = |seq: u64, up| Batch {
        seq,
        samples: vec![Sample {
            at: at + jiff::SignedDuration::from_secs(seq as i64),
            instance: inst("9"),
            upload: up,
            download: 1,
            estimated: false,
        }],
    };
    let report = |batches| Report {
        agent: label("hv1"),
        batches,
    };
    let r = store
        .ingest(report(vec![batch(1, 10), batch(2, 20)]))
        .await
        .unwrap();
    assert_eq!((r.applied, r.duplicates), (vec![1, 2], vec![]));
    let r = store
        .ingest(report(vec![batch(2, 20), batch(3, 30), batch(3, 30)]))
        .await
        .unwrap();
    assert_eq!((r.applied, r.duplicates), (vec![3], vec![2, 3]));
    let u = store
        .traffic_usage(inst("9"), sluice::store::traffic::StorePeriod::Day, at)
        .await
        .unwrap();
    assert_eq!((u.upload, u.download), (60, 3));
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.agents[0].last_seq, stats.applied_reports), (3, 3));
}

/// A migrated instance: each host asking for its quotas is told what the others
/// reported in each quota's current period, in the quota's resource, and never its own
/// reports; a panel's lookup carries no such count; a reset clears every host's share.
async fn other_hosts_counts(store: &Store) {
    use sluice::store::traffic::StorePeriod;
    put(
        store,
        Scope::Instance(inst("777")),
        r#"{"traffic":[
            {"resource":"traffic_total","period":"day","limit":"1MB","on_exceed":"warn"},
            {"resource":"traffic_upload","period":"month","limit":"5MB","on_exceed":"warn"}]}"#,
    )
    .await;
    let now = Timestamp::now();
    let report = |host: &str, seq: u64, at: Timestamp, up: u64, down: u64| Report {
        agent: label(host),
        batches: vec![Batch {
            seq,
            samples: vec![Sample {
                at,
                instance: inst("777"),
                upload: up,
                download: down,
                estimated: false,
            }],
        }],
    };
    // Host A first, then the instance moves to B; A's bytes of an earlier day count
    // for the month only.
    let tz = &store.settings().timezone;
    let today = StorePeriod::Day.containing(now, tz).unwrap().0;
    let earlier = today - jiff::SignedDuration::from_hours(30);
    let same_month = StorePeriod::Month.containing(earlier, tz).unwrap().0
        == StorePeriod::Month.containing(now, tz).unwrap().0;
    store
        .ingest(report("hv-a", 1, earlier, 7_000, 0))
        .await
        .unwrap();
    let a_at = now - jiff::SignedDuration::from_secs(1);
    store
        .ingest(report("hv-a", 2, a_at, 300_000, 100_000))
        .await
        .unwrap();
    store
        .ingest(report("hv-b", 1, now, 50_000, 20_000))
        .await
        .unwrap();

    let of = |quotas: &std::collections::BTreeMap<
        String,
        Vec<sluice::store::traffic::ShownTrafficQuota>,
    >| {
        let mut v: Vec<(String, Option<u64>)> = quotas["777"]
            .iter()
            .map(|q| (q.period.clone(), q.elsewhere.as_ref().map(|e| e.bytes)))
            .collect();
        v.sort();
        v
    };
    let month_a = if same_month { 7_000 + 300_000 } else { 300_000 };
    let b = store
        .traffic_quotas_for(label("hv-b"), vec![inst("777")])
        .await
        .unwrap();
    // B is told A's: the day's total (up + down) and the month's upload.
    assert_eq!(
        of(&b),
        vec![
            ("day".into(), Some(400_000)),
            ("month".into(), Some(month_a))
        ]
    );
    let day = b["777"].iter().find(|q| q.period == "day").unwrap();
    assert_eq!(day.elsewhere.as_ref().unwrap().period_start, today);
    let a = store
        .traffic_quotas_for(label("hv-a"), vec![inst("777")])
        .await
        .unwrap();
    assert_eq!(
        of(&a),
        vec![("day".into(), Some(70_000)), ("month".into(), Some(50_000))]
    );
    // A host that never reported it is told everyone's.
    let c = store
        .traffic_quotas_for(label("hv-c"), vec![inst("777")])
        .await
        .unwrap();
    assert_eq!(
        of(&c),
        vec![
            ("day".into(), Some(470_000)),
            ("month".into(), Some(month_a + 50_000))
        ]
    );
    let panel = store.traffic_quotas(vec![inst("777")]).await.unwrap();
    assert_eq!(
        of(&panel),
        vec![("day".into(), None), ("month".into(), None)]
    );
    // The store's own total is the sum of both hosts' shares.
    let u = store
        .traffic_usage(inst("777"), StorePeriod::Day, now)
        .await
        .unwrap();
    assert_eq!((u.upload, u.download), (350_000, 120_000));
}

/// Usage per quota: its own period (a billing day's), the limit, what was used and the
/// overage past it; a quota of another billing day is judged over its own period.
async fn billing_days_and_overage(store: &Store) {
    use sluice::store::traffic::StorePeriod;
    put(
        store,
        Scope::Instance(inst("31")),
        r#"{"traffic":[
            {"resource":"traffic_total","period":"month","limit":1000,"on_exceed":"warn","reset_day":31},
            {"resource":"traffic_upload","period":"day","limit":10000,"on_exceed":"warn"}]}"#,
    )
    .await;
    let now = Timestamp::now();
    store
        .ingest(Report {
            agent: label("hv1"),
            batches: vec![Batch {
                seq: 1,
                samples: vec![Sample {
                    at: now,
                    instance: inst("31"),
                    upload: 3000,
                    download: 500,
                    estimated: false,
                }],
            }],
        })
        .await
        .unwrap();
    let month = store
        .traffic_usage(inst("31"), StorePeriod::Month, now)
        .await
        .unwrap();
    let q = &month.quotas[0];
    assert_eq!(
        (q.limit, q.used, q.overage, q.exceeded, q.reset_day),
        (1000, 3500, 2500, true, Some(31))
    );
    // The period the billing day makes, worked out here: the last "31st" (clamped to
    // a month's last day) at or before now, in the store's zone (UTC here).
    let start_of = |y: i16, m: i8| {
        let d = jiff::civil::date(y, m, 1);
        d.with().day(31.min(d.days_in_month())).build().unwrap()
    };
    let today = now.to_zoned_datetime(jiff::tz::TimeZone::UTC).date();
    let mut start = start_of(today.year(), today.month());
    if start > today {
        let prev = today.first_of_month() - jiff::Span::new().days(1);
        start = start_of(prev.year(), prev.month());
    }
    let next = start.first_of_month() + jiff::Span::new().months(1);
    let end = start_of(next.year(), next.month());
    let midnight = |d: jiff::civil::Date| {
        d.to_zoned_datetime(jiff::tz::TimeZone::UTC)
            .unwrap()
            .timestamp()
            .to_string()
    };
    assert_eq!(
        (q.start.clone(), q.end.clone()),
        (midnight(start), midnight(end))
    );
    let day = store
        .traffic_usage(inst("31"), StorePeriod::Day, now)
        .await
        .unwrap();
    let q = &day.quotas[0];
    assert_eq!(
        (q.limit, q.used, q.overage, q.exceeded),
        (10000, 3000, 0, false)
    );
    // In February 2027 the 31st is the 28th.
    let feb = store
        .traffic_usage(
            inst("31"),
            StorePeriod::Month,
            "2027-02-15T12:00:00Z".parse().unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        (
            feb.quotas[0].start.as_str(),
            feb.quotas[0].end.as_str(),
            feb.quotas[0].used
        ),
        ("2027-01-31T00:00:00Z", "2027-02-28T00:00:00Z", 0)
    );
}

/// A project's pool: a limit on the sum of its instances. Each host is told the whole
/// project's count but its own reports of the instance it asks for; the project's usage
/// and each member's show the pool's use; only a project's quota may be a pool.
async fn pools(store: &Store) {
    use sluice::store::traffic::StorePeriod;
    put(
        store,
        Scope::Project(label("shop")),
        r#"{"traffic":[{"resource":"traffic_total","period":"day","limit":1000,"on_exceed":"warn","pool":true}]}"#,
    )
    .await;
    for i in ["p1", "p2"] {
        put(store, Scope::Instance(inst(i)), r#"{"project":"shop"}"#).await;
    }
    let w: WireSpec = serde_json::from_str(
        r#"{"traffic":[{"resource":"traffic_total","period":"day","limit":1000,"on_exceed":"warn","pool":true}]}"#,
    )
    .unwrap();
    let spec = w.validate(&KnownResources::new(&[])).unwrap();
    match store.put_scope(Scope::Instance(inst("p3")), spec).await {
        Err(StoreError::Invalid { field, .. }) => assert_eq!(field, "traffic[0].pool"),
        other => panic!("an instance's pool: {other:?}"),
    }
    let now = Timestamp::now();
    let report = |host: &str, i: &str, up: u64| Report {
        agent: label(host),
        batches: vec![Batch {
            seq: 1,
            samples: vec![Sample {
                at: now,
                instance: inst(i),
                upload: up,
                download: 0,
                estimated: false,
            }],
        }],
    };
    store.ingest(report("hv-a", "p1", 300)).await.unwrap();
    store.ingest(report("hv-b", "p2", 500)).await.unwrap();
    let told = |host: &'static str, i: &'static str| async move {
        let q = store
            .traffic_quotas_for(label(host), vec![inst(i)])
            .await
            .unwrap();
        let pool = q[i].iter().find(|q| q.pool).unwrap().clone();
        (pool.from.clone(), pool.elsewhere.unwrap().bytes)
    };
    // (asking host, instance) → the pool's count but this host's own reports of it
    assert_eq!(told("hv-a", "p1").await, ("pool".into(), 500));
    assert_eq!(told("hv-b", "p2").await, ("pool".into(), 300));
    assert_eq!(told("hv-c", "p1").await, ("pool".into(), 800));
    let project = store
        .project_usage(label("shop"), StorePeriod::Day, now)
        .await
        .unwrap();
    assert_eq!(
        (
            project.upload,
            project.quotas[0].used,
            project.quotas[0].overage
        ),
        (800, 800, 0)
    );
    store
        .ingest(Report {
            batches: vec![Batch {
                seq: 2,
                samples: vec![Sample {
                    at: now,
                    instance: inst("p2"),
                    upload: 400,
                    download: 0,
                    estimated: false,
                }],
            }],
            ..report("hv-b", "p2", 0)
        })
        .await
        .unwrap();
    let member = store
        .traffic_usage(inst("p1"), StorePeriod::Day, now)
        .await
        .unwrap();
    let q = &member.quotas[0];
    assert_eq!(
        (q.used, q.overage, q.exceeded),
        (1200, 200, true),
        "p1 shares p2's overage"
    );
}

/// The fleet view: agents as last heard, the period's biggest talkers first with their
/// quotas' use; another period's traffic is not counted.
async fn fleet(store: &Store) {
    use sluice::store::traffic::StorePeriod;
    let at = Timestamp::now();
    let utc = jiff::tz::TimeZone::UTC;
    let month_start = StorePeriod::Month.containing(at, &utc).unwrap().0;
    // The hour before this month began: last month, well inside the report retention.
    let last_month = month_start - jiff::SignedDuration::from_hours(1);
    let sample = |at, i: &str, up| Sample {
        at,
        instance: inst(i),
        upload: up,
        download: 10,
        estimated: false,
    };
    for (agent, seq, samples) in [
        ("hv1", 1, vec![sample(at, "21", 900), sample(at, "22", 50)]),
        (
            "hv2",
            1,
            vec![sample(at, "23", 400), sample(last_month, "22", 5000)],
        ),
    ] {
        store
            .ingest(Report {
                agent: label(agent),
                batches: vec![Batch { seq, samples }],
            })
            .await
            .unwrap();
    }
    put(
        store,
        Scope::Instance(inst("21")),
        r#"{"traffic":[{"resource":"traffic_total","period":"month","limit":1000,"on_exceed":"warn"}]}"#,
    )
    .await;
    let f = store.fleet(StorePeriod::Month, at, 2).await.unwrap();
    let agents: Vec<&str> = f.agents.iter().map(|a| a.agent.as_str()).collect();
    assert_eq!(agents, ["hv1", "hv2"]);
    let top: Vec<(&str, u64)> = f
        .instances
        .iter()
        .map(|u| (u.instance.as_str(), u.total))
        .collect();
    assert_eq!(
        top,
        [("21", 910), ("23", 410)],
        "limited to 2, October not counted"
    );
    let q = &f.instances[0].quotas[0];
    assert_eq!((q.limit, q.used, q.exceeded), (1000, 910, false));
    assert_eq!(f.start, month_start.to_string());
}

/// 16 concurrent clients reserving one at a time on one instance: exactly the limit.
async fn concurrent(store: &Store) {
    put(
        store,
        Scope::Instance(inst("7")),
        r#"{"limits":{"ipv4":20}}"#,
    )
    .await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut granted = 0;
            for k in 0..8 {
                match store.reserve(inst("7"), deltas(&[("ipv4", 1)]), HOUR).await {
                    Ok((id, _)) => {
                        granted += 1;
                        if k % 2 == 0 {
                            store.commit(id).await.unwrap();
                        }
                    }
                    Err(StoreError::OverQuota(_)) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            granted
        }));
    }
    let mut granted = 0;
    for t in tasks {
        granted += t.await.unwrap();
    }
    let (_, _, in_use, reserved) = standing(store, "7", "ipv4").await;
    assert_eq!((in_use + reserved, granted), (20, 20));
}

/// Nothing an agent reports is trusted for having a token: a sample dated ahead of the
/// store's clock or behind the retention, or claiming more than a 400 Gbit/s link
/// carries since the previous one, refuses the whole report (its keys too, so the
/// corrected batch is taken later); sums saturate instead of leaving the integers;
/// two hosts reporting one instance for overlapping times are both counted, and seen.
async fn reports_are_bounded(store: &Store) {
    use sluice::store::traffic::StorePeriod;
    let now = Timestamp::now();
    let secs = jiff::SignedDuration::from_secs;
    let sample = |at: Timestamp, i: &str, up: u64| Sample {
        at,
        instance: inst(i),
        upload: up,
        download: 0,
        estimated: false,
    };
    let report = |agent: &str, seq: u64, samples: Vec<Sample>| Report {
        agent: label(agent),
        batches: vec![Batch { seq, samples }],
    };
    let refused = |r: Result<_, StoreError>| match r {
        Err(StoreError::Invalid { field, reason }) => format!("{field}: {reason}"),
        other => panic!("not refused: {other:?}"),
    };
    let cases: [(&str, Vec<Sample>, &str); 4] = [
        (
            "ten minutes ahead",
            vec![sample(now + secs(600), "31", 1)],
            "batches[0].samples[0]: batch 1 instance 31: at",
        ),
        (
            "before the retention",
            vec![sample(now - secs(41 * 86_400), "31", 1)],
            "older than the report retention",
        ),
        (
            "i64::MAX bytes",
            vec![sample(now, "31", i64::MAX as u64)],
            "more than a link of 400gbit",
        ),
        (
            "a good sample, then a bad one",
            vec![sample(now, "31", 10), sample(now + secs(900), "32", 1)],
            "batches[0].samples[1]: batch 1 instance 32",
        ),
    ];
    for (what, samples, says) in cases {
        let e = refused(store.ingest(report("hv1", 1, samples)).await);
        assert!(e.contains(says), "{what}: {e}");
    }
    let usage = |i: &'static str| async move {
        let u = store
            .traffic_usage(inst(i), StorePeriod::Month, now)
            .await
            .unwrap();
        (u.upload, u.download)
    };
    assert_eq!(usage("31").await, (0, 0), "no part of a refused report");
    assert_eq!(store.stats().await.unwrap().applied_reports, 0);
    // The corrected batch, same key: taken.
    let r = store
        .ingest(report("hv1", 1, vec![sample(now - secs(60), "31", 1000)]))
        .await
        .unwrap();
    assert_eq!(r.applied, [1]);
    // One second later on the agent's clock, just sent: 50 GB fits 400 Gbit/s, 60 does not.
    let e = refused(
        store
            .ingest(report(
                "hv1",
                2,
                vec![sample(now - secs(59), "31", 60_000_000_000)],
            ))
            .await,
    );
    assert!(e.contains("60000000000 bytes in 1000 ms"), "{e}");
    store
        .ingest(report(
            "hv1",
            2,
            vec![sample(now - secs(59), "31", 40_000_000_000)],
        ))
        .await
        .unwrap();
    // Live migration: hv2 reports 31 too, then hv1 once more over the same time.
    store
        .ingest(report("hv2", 1, vec![sample(now - secs(30), "31", 7)]))
        .await
        .unwrap();
    store
        .ingest(report("hv1", 3, vec![sample(now - secs(20), "31", 5)]))
        .await
        .unwrap();
    assert_eq!(usage("31").await, (40_000_001_012, 0), "both hosts counted");
    assert_eq!(store.stats().await.unwrap().overlapping_samples, 1);
    // Use saturates: two commits of i64::MAX on an unlimited resource stay an integer.
    for _ in 0..2 {
        let (id, _) = store
            .reserve(inst("33"), deltas(&[("ipv4", i64::MAX)]), HOUR)
            .await
            .unwrap();
        store.commit(id).await.unwrap();
    }
    assert_eq!(standing(store, "33", "ipv4").await.2, i64::MAX);
}

/// Last month's 5-minute curve, fed through reports with backdated `at`, read back as
/// percentiles and compared with the rank rule computed here, to the bit/s. An instance
/// migrated for a hundred intervals: two hosts' samples in the same 5 minutes are summed.
/// Twenty intervals nobody reported are idle, zeros. A project's percentile is read on
/// its members' summed curve.
async fn percentiles(store: &Store) {
    use sluice::model::percentile::Percentile;
    use sluice::store::traffic::StorePeriod;
    let now = Timestamp::now();
    let tz = &store.settings().timezone;
    let this_month = StorePeriod::Month.containing(now, tz).unwrap().0;
    let (start, end) = StorePeriod::Month
        .containing(this_month - jiff::SignedDuration::from_secs(1), tz)
        .unwrap();
    let n = ((end.as_second() - start.as_second()) / 300) as usize;
    let up = |k: usize| ((k * 7919) % n + 1) as u64 * 1000;
    let down = |k: usize| ((k * 104_729 + 13) % n + 1) as u64 * 700;
    let migrated = 3000..3100;
    let silent = 5000..5020;
    let at = |k: usize| start + jiff::SignedDuration::from_secs(300 * k as i64 + 150);
    let sample = |k: usize, up: u64, down: u64| Sample {
        at: at(k),
        instance: inst("95"),
        upload: up,
        download: down,
        estimated: false,
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for k in (0..n).filter(|k| !silent.contains(k)) {
        if migrated.contains(&k) {
            a.push(sample(k, up(k) / 3, down(k) - down(k) / 4));
            b.push(sample(k, up(k) - up(k) / 3, down(k) / 4));
        } else {
            a.push(sample(k, up(k), down(k)));
        }
    }
    // Three intervals of the silent stretch an agent spread its outage's bytes over:
    // far bigger than any other, but estimated, so left out, not ranked.
    let spread = 5000..5003;
    for k in spread.clone() {
        a.push(Sample {
            estimated: true,
            ..sample(k, 1_000_000_000, 1_000_000_000)
        });
    }
    a.sort_by_key(|s| s.at);
    for (host, samples) in [("hv-a", a), ("hv-b", b)] {
        for (i, chunk) in samples.chunks(2000).enumerate() {
            let report = Report {
                agent: label(host),
                batches: vec![Batch {
                    seq: i as u64 + 1,
                    samples: chunk.to_vec(),
                }],
            };
            store.ingest(report).await.unwrap();
        }
    }
    let reference = |f: &dyn Fn(usize) -> u64| {
        let mut v: Vec<u64> = (0..n)
            .filter(|k| !spread.contains(k))
            .map(|k| if silent.contains(&k) { 0 } else { f(k) })
            .collect();
        v.sort_unstable();
        v[(95 * v.len()).div_ceil(100) - 1] * 8 / 300
    };
    let got = store
        .percentiles(
            vec![inst("95")],
            StorePeriod::Month,
            start,
            now,
            Percentile::P95,
        )
        .await
        .unwrap();
    let f = &got["95"];
    assert_eq!((f.samples, f.estimated), (n as u64 - 3, 3));
    let bps = |r: Option<sluice::model::units::Rate>| r.unwrap().bits_per_sec();
    assert_eq!(bps(f.upload), reference(&up));
    assert_eq!(bps(f.download), reference(&down));
    assert_eq!(bps(f.max), reference(&|k| up(k).max(down(k))));
    assert_eq!(bps(f.aggregate), reference(&|k| up(k) + down(k)));
    // "So far": at the 1000th interval's end only the first thousand rank.
    let so_far = start + jiff::SignedDuration::from_secs(300 * 1000 + 10);
    let got = store
        .percentiles(
            vec![inst("95")],
            StorePeriod::Month,
            start,
            so_far,
            Percentile::P95,
        )
        .await
        .unwrap();
    let mut first: Vec<u64> = (0..1000).map(up).collect();
    first.sort_unstable();
    assert_eq!(got["95"].samples, 1000);
    assert_eq!(bps(got["95"].upload), first[949] * 8 / 300);
    // This month has none of it.
    let got = store
        .percentiles(
            vec![inst("95")],
            StorePeriod::Month,
            now,
            now,
            Percentile::P95,
        )
        .await
        .unwrap();
    assert!(got.is_empty(), "{got:?}");

    // A project's curve: its members' bytes summed per interval.
    for i in ["pa", "pb"] {
        put(store, Scope::Instance(inst(i)), r#"{"project":"tenant"}"#).await;
    }
    let member = |i: &str, k: usize, up: u64| Sample {
        at: at(k),
        instance: inst(i),
        upload: up,
        download: 0,
        estimated: false,
    };
    let report = Report {
        agent: label("hv-c"),
        batches: vec![Batch {
            seq: 1,
            samples: vec![
                member("pa", 0, 3_750_000), // 100 kbit/s
                member("pb", 0, 3_750_000), // + 100 kbit/s in the same interval
                member("pa", 1, 7_500_000), // 200 kbit/s alone
            ],
        }],
    };
    store.ingest(report).await.unwrap();
    let project = store
        .project_percentiles(
            label("tenant"),
            StorePeriod::Month,
            start,
            now,
            Percentile::new(50).unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    // The month's intervals, all idle but two at 200 kbit/s: the median is zero, the
    // peak 200 kbit/s.
    assert_eq!(project.samples, n as u64);
    assert_eq!(bps(project.upload), 0);
    let peak = store
        .project_percentiles(
            label("tenant"),
            StorePeriod::Month,
            start,
            now,
            Percentile::new(100).unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bps(peak.upload), 200_000);
    let each = store
        .percentiles(
            vec![inst("pa"), inst("pb")],
            StorePeriod::Month,
            start,
            now,
            Percentile::new(100).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(bps(each["pb"].upload), 100_000);
    // pb's window is the whole month too.
    assert_eq!(each["pb"].samples, n as u64);
    // Packed into days, the month reads the same.
    let all = || async {
        store
            .percentiles(
                vec![inst("95"), inst("pa"), inst("pb")],
                StorePeriod::Month,
                start,
                now,
                Percentile::P95,
            )
            .await
            .unwrap()
    };
    let loose = all().await;
    // Every day of the month for "95", one day each for pa and pb (the zone is UTC).
    assert_eq!(store.pack_days(now).await.unwrap(), n / 288 + 2);
    assert_eq!(all().await, loose);
    assert_eq!(bps(loose["95"].upload), reference(&up));
}

/// Closed billing months get one statement each, written once, chained by hash: last
/// month's for an instance on calendar months, the month from the 15th for one whose
/// quota bills from the 15th, and nothing for an instance that moved nothing.
async fn statements(store: &Store) {
    use sluice::model::calendar::{PeriodKind, period_containing};
    use sluice::store::statement::{GENESIS, Statement, verify_chain};
    put(
        store,
        Scope::Instance(inst("st1")),
        r#"{"traffic":[{"resource":"traffic_total","period":"month","limit":"10MB","on_exceed":"warn"}]}"#,
    )
    .await;
    put(
        store,
        Scope::Instance(inst("st15")),
        r#"{"traffic":[{"resource":"traffic_upload","period":"month","limit":1000,"on_exceed":"warn","reset_day":15}]}"#,
    )
    .await;
    let now = Timestamp::now();
    let tz = store.settings().timezone.clone();
    let month = |kind, at| period_containing(kind, at, &tz).unwrap();
    let last = month(
        PeriodKind::Month(1),
        month(PeriodKind::Month(1), now).start - jiff::SignedDuration::from_secs(1),
    );
    let last15 = month(
        PeriodKind::Month(15),
        month(PeriodKind::Month(15), now).start - jiff::SignedDuration::from_secs(1),
    );
    let sample = |i: &str, at: Timestamp, up| Sample {
        at,
        instance: inst(i),
        upload: up,
        download: 1_000,
        estimated: false,
    };
    // Within the suite's 40-day report retention, in each instance's last month.
    let late = |p: sluice::model::calendar::Period| p.end - jiff::SignedDuration::from_hours(30);
    let report = Report {
        agent: label("hv1"),
        batches: vec![Batch {
            seq: 1,
            samples: vec![
                sample("st1", late(last), 12_000_000),
                sample("st15", late(last15), 2_500),
                sample("st1", now, 5),
                sample("idle", now, 5),
            ],
        }],
    };
    store.ingest(report).await.unwrap();
    // A statement waits an hour past its month's end for late reports: in the first
    // hour of a month (either kind), close an hour later, still inside the same months.
    let grace = jiff::SignedDuration::from_mins(61);
    let fresh = [PeriodKind::Month(1), PeriodKind::Month(15)]
        .into_iter()
        .any(|k| now < month(k, now).start + grace);
    let close_at = if fresh { now + grace } else { now };
    assert_eq!(store.close_periods(close_at).await.unwrap(), 2);
    assert_eq!(
        store.close_periods(close_at).await.unwrap(),
        0,
        "written once"
    );
    let read = |stored: &sluice::store::statement::StoredStatement| -> Statement {
        serde_json::from_str(&stored.body).unwrap()
    };
    let st1 = store.statements(Some(inst("st1"))).await.unwrap();
    assert_eq!(st1.len(), 1);
    let s = read(&st1[0]);
    assert_eq!(
        (s.start.clone(), s.end.clone(), s.reset_day),
        (last.start.to_string(), last.end.to_string(), 1)
    );
    assert_eq!(
        (s.upload_bytes, s.download_bytes, s.total_bytes),
        (12_000_000, 1_000, 12_001_000)
    );
    // The whole month's intervals, one of them busy (320 kbit/s), in the top 5 %
    // discarded.
    let month_intervals = ((last.end.as_second() - last.start.as_second()) / 300) as u64;
    assert_eq!(
        (s.percentiles.samples, s.percentiles.upload_bps),
        (month_intervals, Some(0)),
        "{:?}",
        s.percentiles
    );
    assert_eq!(
        (s.quotas[0].limit, s.quotas[0].used, s.quotas[0].overage),
        (10_000_000, 12_001_000, 2_001_000)
    );
    assert_eq!(s.prev_hash, GENESIS);
    let st15 = read(&store.statements(Some(inst("st15"))).await.unwrap()[0]);
    assert_eq!(
        (
            st15.start,
            st15.reset_day,
            st15.upload_bytes,
            st15.quotas[0].overage
        ),
        (last15.start.to_string(), 15, 2_500, 1_500)
    );
    assert!(
        store
            .statements(Some(inst("idle")))
            .await
            .unwrap()
            .is_empty()
    );

    // A month later this month closes too, chained to the last.
    let next = month(PeriodKind::Month(1), now).end + jiff::SignedDuration::from_hours(2);
    assert!(store.close_periods(next).await.unwrap() >= 1);
    let chain = store.statements(Some(inst("st1"))).await.unwrap();
    assert_eq!(chain.len(), 2);
    assert_eq!(read(&chain[1]).prev_hash, read(&chain[0]).hash);
    assert_eq!(read(&chain[1]).total_bytes, 1_005);
    let head = verify_chain(&chain).unwrap().unwrap();
    assert_eq!(head.head, read(&chain[1]).hash);
}

/// Committed rates (`rate_95th`): the store judges each on the fleet's curve. Judged
/// mid-day on the intervals so far, an instance at 1..100 kbit/s is over a 90 kbit/s
/// commit (95 kbit/s); over the whole day, its idle intervals bring the figure under
/// (86 kbit/s). A project's pooled commit is judged on its members' summed curve.
async fn committed_rates(store: &Store) {
    use sluice::store::traffic::StorePeriod;
    let tz = store.settings().timezone.clone();
    let (day, _) = StorePeriod::Day
        .containing(Timestamp::now() - jiff::SignedDuration::from_hours(24), &tz)
        .unwrap();
    put(
        store,
        Scope::Instance(inst("cr1")),
        r#"{"traffic":[
            {"resource":"rate_95th","period":"day","commit":"90kbit","direction":"max","on_exceed":"limit","rate":"10mbit"},
            {"resource":"traffic_total","period":"day","limit":"1TB","on_exceed":"warn"}]}"#,
    )
    .await;
    put(
        store,
        Scope::Project(label("crp")),
        r#"{"traffic":[{"resource":"rate_95th","period":"day","commit":100000,"direction":"upload","on_exceed":"warn","pool":true}]}"#,
    )
    .await;
    for i in ["cr2", "cr3"] {
        put(store, Scope::Instance(inst(i)), r#"{"project":"crp"}"#).await;
    }
    // kbit/s of cr1 in interval k: each of 1..=100 once over the first 100 intervals.
    let kbit = |k: usize| ((k * 37) % 100 + 1) as u64;
    let at = |k: usize| day + jiff::SignedDuration::from_secs(300 * k as i64 + 150);
    let mut samples = Vec::new();
    for k in 0..100 {
        let bytes = kbit(k) * 1000 * 300 / 8;
        samples.push(Sample {
            at: at(k),
            instance: inst("cr1"),
            upload: bytes,
            download: bytes / 2,
            estimated: false,
        });
        for i in ["cr2", "cr3"] {
            // 60 kbit/s each, 120 kbit/s together.
            samples.push(Sample {
                at: at(k),
                instance: inst(i),
                upload: 60_000 * 300 / 8,
                download: 0,
                estimated: false,
            });
        }
    }
    store
        .ingest(Report {
            agent: label("hv-r"),
            batches: vec![Batch { seq: 1, samples }],
        })
        .await
        .unwrap();

    // Mid-day, after the 100th interval: the 95th of 1..=100 kbit/s.
    let mid = day + jiff::SignedDuration::from_secs(300 * 100 + 10);
    let got = store
        .traffic_quotas_for_at(label("hv-r"), vec![inst("cr1"), inst("cr2")], mid)
        .await
        .unwrap();
    let rate = got["cr1"]
        .iter()
        .find(|q| q.resource == "rate_95th")
        .unwrap();
    let j = rate.judged.as_ref().unwrap();
    assert_eq!(
        (j.period_start, j.rate_bps, j.exceeded),
        (day, 95_000, true)
    );
    assert_eq!((rate.commit_bps, rate.limit), (Some(90_000), None));
    assert!(rate.elsewhere.is_none());
    let volume = got["cr1"]
        .iter()
        .find(|q| q.resource == "traffic_total")
        .unwrap();
    assert!(volume.judged.is_none() && volume.elsewhere.is_some());
    let pool = got["cr2"].iter().find(|q| q.pool).unwrap();
    let j = pool.judged.as_ref().unwrap();
    assert_eq!((j.rate_bps, j.exceeded), (120_000, true));
    // Early on, nothing is over yet: after the first interval, at 1 kbit/s.
    let early = day + jiff::SignedDuration::from_secs(300 + 10);
    let got = store
        .traffic_quotas_for_at(label("hv-r"), vec![inst("cr1")], early)
        .await
        .unwrap();
    let rate = got["cr1"].iter().find(|q| q.resource == "rate_95th");
    let j = rate.unwrap().judged.clone().unwrap();
    assert_eq!((j.rate_bps, j.exceeded), (1_000, false));

    // The whole day: 188 idle intervals and the 100 busy ones; rank 274 of 288 is the
    // 86th busy value.
    let usage = store
        .traffic_usage(inst("cr1"), StorePeriod::Day, day)
        .await
        .unwrap();
    let q = usage
        .quotas
        .iter()
        .find(|q| q.resource == "rate_95th")
        .unwrap();
    assert_eq!(
        (
            q.limit,
            q.used,
            q.overage,
            q.exceeded,
            q.direction.as_deref()
        ),
        (90_000, 86_000, 0, false, Some("max"))
    );
    let project = store
        .project_usage(label("crp"), StorePeriod::Day, day)
        .await
        .unwrap();
    // The pool's day: 100 intervals at 120 kbit/s of 288; only the top 14 are
    // discarded, so its 95th is 120 kbit/s, 20 kbit/s over.
    let pool = &project.quotas[0];
    assert_eq!(
        (pool.used, pool.overage, pool.exceeded),
        (120_000, 20_000, true)
    );
}

/// Closed days are packed into one value per instance and day; reads are the same
/// before and after, a late report into a packed interval adds to it (before and after
/// the next packing), and a reset cuts the packed day too. The store's clock is the
/// test's: "tomorrow" packs today.
async fn packed_days(store: &Store) {
    use sluice::model::percentile::Percentile;
    use sluice::store::traffic::StorePeriod;
    let now = Timestamp::now();
    let tomorrow = now + jiff::SignedDuration::from_hours(24);
    let peak = Percentile::new(100).unwrap();
    let sample = |seq: u64, upload: u64| Report {
        agent: label("hv-p"),
        batches: vec![Batch {
            seq,
            samples: vec![Sample {
                at: now,
                instance: inst("pk"),
                upload,
                download: 0,
                estimated: false,
            }],
        }],
    };
    store.ingest(sample(1, 1_500_000)).await.unwrap();
    let read = || async {
        store
            .percentiles(vec![inst("pk")], StorePeriod::Day, now, tomorrow, peak)
            .await
            .unwrap()
            .get("pk")
            .map(|p| (p.samples, p.upload.unwrap().bits_per_sec()))
    };
    let day_intervals = {
        let (s, e) = StorePeriod::Day
            .containing(now, &store.settings().timezone)
            .unwrap();
        ((e.as_second() - s.as_second()) / 300) as u64
    };
    assert_eq!(read().await, Some((day_intervals, 40_000)));
    assert_eq!(store.pack_days(now).await.unwrap(), 0, "today is open");
    assert_eq!(store.pack_days(tomorrow).await.unwrap(), 1);
    assert_eq!(store.pack_days(tomorrow).await.unwrap(), 0, "packed once");
    assert_eq!(read().await, Some((day_intervals, 40_000)));
    // A late report into the packed interval: read loose, then packed with it.
    store.ingest(sample(2, 750_000)).await.unwrap();
    assert_eq!(read().await, Some((day_intervals, 60_000)));
    assert_eq!(store.pack_days(tomorrow).await.unwrap(), 1);
    assert_eq!(read().await, Some((day_intervals, 60_000)));
    // A reset of today forgets the packed intervals too.
    store
        .traffic_reset(inst("pk"), StorePeriod::Day)
        .await
        .unwrap();
    assert_eq!(read().await, None);
}

fn suite_settings() -> Settings {
    // Forty days: the fleet case reports into last month, up to 31 days back.
    Settings {
        keep_report_keys: Duration::from_secs(40 * 86_400),
        ..Settings::default()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

macro_rules! suite {
    ($($case:ident),*) => {
        #[test]
        fn every_case_on_sqlite() {
            let rt = runtime();
            $(
                let dir = tempfile::tempdir().unwrap();
                let store = Store::open_sqlite(&dir.path().join("q.db"), suite_settings()).unwrap();
                rt.block_on($case(&store));
            )*
        }

        #[test]
        fn every_case_on_postgres() {
            let pg = Postgres::start();
            let rt = runtime();
            $(
                let url = pg.database();
                let store = rt.block_on(Store::connect_postgres(&url, suite_settings())).unwrap();
                rt.block_on($case(&store));
            )*
        }
    };
}

suite!(
    resolution,
    reservations,
    recount_reset_destroy,
    reports_once,
    fleet,
    concurrent,
    reports_are_bounded,
    other_hosts_counts,
    billing_days_and_overage,
    pools,
    percentiles,
    statements,
    committed_rates,
    packed_days
);
