//! The quota store over real HTTP: a `sluice store` process on loopback, its tokens made
//! with the CLI, its database read directly at the end.

mod support;

use std::sync::Arc;

use serde_json::json;
use sluice::model::ids::InstanceId;
use sluice::store::SqliteStore;
use support::store::{Client, StoreProc, call_async, create_token};

fn standing(db: &std::path::Path, instance: &str, resource: &str) -> (i64, i64) {
    let s = SqliteStore::open(db).unwrap();
    s.standings(&InstanceId::new(instance).unwrap())
        .unwrap()
        .into_iter()
        .find(|s| s.resource.as_str() == resource)
        .map(|s| (s.in_use, s.reserved))
        .unwrap_or((0, 0))
}

#[test]
fn tokens_roles_and_bad_bodies_are_refused_as_http_means_them() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("quota.db");
    let admin = create_token(&db, &["--role", "admin"]);
    let agent = create_token(&db, &["--role", "agent", "--host", "hv1"]);
    let revoked = create_token(&db, &["--role", "admin"]);
    let revoked_id = revoked.split('_').nth(1).unwrap().to_owned();
    let out = std::process::Command::new(support::sluice_bin())
        .args(["store", "token", "revoke", &revoked_id, "--database"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(out.status.success());
    let list = String::from_utf8(support::sluice_stdout(&[
        "store".as_ref(),
        "token".as_ref(),
        "list".as_ref(),
        "--database".as_ref(),
        db.as_os_str(),
    ]))
    .unwrap();
    assert_eq!(list.lines().count(), 4, "{list}");
    assert!(!list.contains(&admin[16..]), "a secret was listed: {list}");

    let store = StoreProc::start(&db, &["--body-limit", "4096"]);
    let c = Client::new(&store.base);
    let wrong = format!("sluice_{}_{}", &admin[7..15], "0".repeat(64));
    let quota = Some(r#"{"limits":{"ipv4":2}}"#);
    // (token, expected status, expected error code)
    let table = [
        (None, 401, "unauthorized"),
        (Some("not-a-token"), 401, "unauthorized"),
        (Some(wrong.as_str()), 401, "unauthorized"),
        (Some(revoked.as_str()), 401, "unauthorized"),
        (Some(agent.as_str()), 403, "forbidden"),
    ];
    for (token, status, code) in table {
        let a = c.call("PUT", "/v1/instances/101/quota", token, quota);
        assert_eq!(a.status, status, "{token:?}: {:?}", a.body);
        assert_eq!(a.body["error"]["code"], code, "{token:?}");
    }
    assert_eq!(c.call("GET", "/v1/stats", Some(&agent), None).status, 403);
    assert_eq!(
        c.call("PUT", "/v1/instances/101/quota", Some(&admin), quota)
            .status,
        200
    );
    // Agents read quotas; they may report only for their own host.
    let q = c.call("GET", "/v1/instances/101/quota", Some(&agent), None);
    assert_eq!(q.body["limits"]["ipv4"]["limit"], 2, "{:?}", q.body);
    let report = |host: &str| {
        json!({"agent": host, "batches": [{"seq": 1, "samples": [
            {"at": "2026-11-24T10:00:00Z", "instance": "101", "upload": 1, "download": 2}]}]})
        .to_string()
    };
    let a = c.call("POST", "/v1/reports", Some(&agent), Some(&report("hv2")));
    assert_eq!(
        (a.status, a.body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let a = c.call("POST", "/v1/reports", Some(&agent), Some(&report("hv1")));
    assert_eq!(a.status, 200, "{:?}", a.body);

    // Malformed bodies: 400 with the field; too big: 413.
    let table = [
        (
            r#"{"instance":"101","deltas":{"ipv4":"one"}}"#,
            "deltas.ipv4",
        ),
        (r#"{"instance":"10 1","deltas":{"ipv4":1}}"#, "instance"),
        (r#"{"instance":"101","deltas":{"ipv9":1}}"#, "deltas.ipv9"),
        (
            r#"{"instance":"101","deltas":{"ipv4":1},"expires_in":"soon"}"#,
            "expires_in",
        ),
        (r#"{"instance":"101"}"#, "body"),
        (r#"{"instance":"101","deltas":{"ipv4":1}"#, "body"),
    ];
    for (body, field) in table {
        let a = c.call("POST", "/v1/reservations", Some(&admin), Some(body));
        assert_eq!(a.status, 400, "{body}: {:?}", a.body);
        assert_eq!(a.body["error"]["field"], field, "{body}: {:?}", a.body);
    }
    let big = format!(r#"{{"instances":["{}"]}}"#, "1".repeat(5000));
    let a = c.call("POST", "/v1/quotas/lookup", Some(&admin), Some(&big));
    assert_eq!(
        (a.status, a.body["error"]["code"].as_str()),
        (413, Some("body_too_large"))
    );
    let a = c.call(
        "PUT",
        "/v1/instances/101/quota",
        Some(&admin),
        Some(r#"{"traffic":[{"resource":"traffic_total","period":"month","limit":"1TB","on_exceed":"limit"}]}"#),
    );
    assert_eq!(a.body["error"]["field"], "traffic[0].rate", "{:?}", a.body);
    // A rate no backend can hold (OVS reads under 1 kbit as 0, no policing) is refused.
    let a = c.call(
        "PUT",
        "/v1/instances/101/quota",
        Some(&admin),
        Some(r#"{"traffic":[{"resource":"traffic_total","period":"month","limit":"1TB","on_exceed":"limit","rate":"500bit"}]}"#),
    );
    assert_eq!(a.status, 400, "{:?}", a.body);
    assert_eq!(a.body["error"]["field"], "traffic[0].rate", "{:?}", a.body);
    assert!(
        a.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("500bit is under the least enforceable limit of 1kbit")),
        "{:?}",
        a.body
    );
    // Over quota: 409 with the numbers.
    let a = c.call(
        "POST",
        "/v1/reservations",
        Some(&admin),
        Some(r#"{"instance":"101","deltas":{"ipv4":3}}"#),
    );
    assert_eq!(a.status, 409);
    assert_eq!(
        a.body["error"],
        json!({"code": "over_quota", "message": "ipv4: 0 in use + 0 reserved + 3 requested exceeds the limit of 2",
               "resource": "ipv4", "limit": 2, "in_use": 0, "reserved": 0, "requested": 3})
    );
    // healthz needs no token; metrics count what happened.
    let h = c.call("GET", "/healthz", None, None);
    assert_eq!(
        (h.status, h.body["database"].as_str()),
        (200, Some("reachable"))
    );
    assert_eq!(store.stop(), Some(0));
}

#[test]
fn each_token_is_rate_limited_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("quota.db");
    let a = create_token(&db, &["--role", "admin"]);
    let b = create_token(&db, &["--role", "admin"]);
    let store = StoreProc::start(&db, &["--rate-limit", "5"]);
    let c = Client::new(&store.base);
    // The burst is 5 and one token comes back every 200 ms: ask until refused, and
    // judge the count of answers by the time they actually took, not by a hoped speed.
    let started = std::time::Instant::now();
    let mut ok = 0;
    let limited = loop {
        let r = c.call("GET", "/v1/stats", Some(&a), None);
        if r.status != 200 {
            break r;
        }
        ok += 1;
        assert!(ok < 200, "never rate limited");
    };
    let refills = (started.elapsed().as_secs_f64() * 5.0).ceil() as usize;
    assert!(
        (5..=5 + refills).contains(&ok),
        "{ok} answered before the first 429, with a burst of 5 and {refills} refills"
    );
    assert_eq!(limited.status, 429);
    // Another token is not held back by the first one's burst.
    assert_eq!(c.call("GET", "/v1/stats", Some(&b), None).status, 200);
}

/// 16 clients hammer `reserve` on one instance through a real `sluice store` on
/// `database` (a SQLite file or a PostgreSQL URL); `in_db` reads (in_use + reserved)
/// from the database at the end.
fn sixteen_http_clients(database: &std::path::Path, in_db: impl FnOnce() -> i64) {
    let db = database;
    let admin = create_token(db, &["--role", "admin"]);
    let store = StoreProc::start(db, &["--rate-limit", "0"]);
    let c = Client::new(&store.base);
    let a = c.call(
        "PUT",
        "/v1/instances/7/quota",
        Some(&admin),
        Some(r#"{"limits":{"ipv4":25}}"#),
    );
    assert_eq!(a.status, 200);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (granted, refused, rolled_back) = rt.block_on(async {
        let http = support::store::http_client();
        let admin = Arc::new(admin.clone());
        let mut tasks = Vec::new();
        for client in 0..16 {
            let (http, admin, base) = (http.clone(), admin.clone(), store.base.clone());
            tasks.push(tokio::spawn(async move {
                let (mut granted, mut refused, mut rolled_back) = (0, 0, 0);
                for k in 0..12 {
                    let body = r#"{"instance":"7","deltas":{"ipv4":1}}"#.to_owned();
                    let a = call_async(
                        &http,
                        &base,
                        "POST",
                        "/v1/reservations",
                        Some(&admin),
                        Some(body),
                    )
                    .await;
                    match a.status {
                        201 => {
                            granted += 1;
                            // Half are committed, a few rolled back (which frees room).
                            let id = a.body["id"].as_str().unwrap().to_owned();
                            let verb = if (client + k) % 2 == 0 {
                                "commit"
                            } else if k == 0 {
                                "rollback"
                            } else {
                                continue;
                            };
                            let r = call_async(
                                &http,
                                &base,
                                "POST",
                                &format!("/v1/reservations/{id}/{verb}"),
                                Some(&admin),
                                None,
                            )
                            .await;
                            assert_eq!(r.status, 204, "{verb}: {:?}", r.body);
                            if verb == "rollback" {
                                rolled_back += 1;
                            }
                        }
                        409 => refused += 1,
                        s => panic!("unexpected {s}: {:?}", a.body),
                    }
                }
                (granted, refused, rolled_back)
            }));
        }
        let mut sum = (0, 0, 0);
        for t in tasks {
            let (g, r, b) = t.await.unwrap();
            sum = (sum.0 + g, sum.1 + r, sum.2 + b);
        }
        sum
    });
    assert_eq!(store.stop(), Some(0));
    assert_eq!(in_db(), 25, "exactly the limit in the database");
    assert_eq!(
        granted - rolled_back,
        25,
        "granted less rolled back = what the database holds"
    );
    assert_eq!(
        granted + refused,
        16 * 12,
        "every request answered 201 or 409"
    );
    assert!(
        rolled_back > 0 && refused > 0,
        "{rolled_back} rolled back, {refused} refused"
    );
}

#[test]
fn sixteen_http_clients_reserving_at_once_never_exceed_the_limit_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("quota.db");
    sixteen_http_clients(&db, || {
        let (in_use, reserved) = standing(&db, "7", "ipv4");
        in_use + reserved
    });
}

#[test]
fn sixteen_http_clients_reserving_at_once_never_exceed_the_limit_on_postgres() {
    let pg = support::postgres::Postgres::start();
    let url = pg.database();
    sixteen_http_clients(std::path::Path::new(&url), || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let store = sluice::store::service::Store::connect_postgres(&url, Default::default())
                .await
                .unwrap();
            let q = store
                .instance_quota(InstanceId::new("7").unwrap())
                .await
                .unwrap();
            q.limits["ipv4"].in_use + q.limits["ipv4"].reserved
        })
    });
}

#[test]
fn a_panel_sets_plans_projects_and_overrides_and_reads_usage_by_period() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("quota.db");
    let admin = create_token(&db, &["--role", "admin"]);
    // Its reports fall on fixed dates around a civil month end: a long retention keeps
    // them inside what the store accepts.
    let store = StoreProc::start(
        &db,
        &["--timezone", "Asia/Kolkata", "--report-retention", "36500d"],
    );
    let c = Client::new(&store.base);
    let put = |path: &str, body: serde_json::Value| {
        let a = c.call("PUT", path, Some(&admin), Some(&body.to_string()));
        assert_eq!(a.status, 200, "{path}: {:?}", a.body);
        a.body
    };
    put("/v1/defaults", json!({"limits": {"ipv4": 1}}));
    put(
        "/v1/classes/basic",
        json!({"limits": {"ipv4": 2, "proxies": 0},
               "traffic": [{"resource": "traffic_total", "period": "month", "limit": "1TB", "on_exceed": "stop"}]}),
    );
    put(
        "/v1/projects/acme",
        json!({"class": "basic", "limits": {"ipv4": 3}}),
    );
    let q = put(
        "/v1/instances/101/quota",
        json!({"project": "acme",
               "traffic": [{"resource": "traffic_upload", "period": "day", "limit": 1000, "on_exceed": "limit", "upload_rate": "1Mbit"}]}),
    );
    // Resolution: project's ipv4, class's proxies and monthly traffic, own daily upload.
    assert_eq!(
        q["limits"]["ipv4"],
        json!({"limit": 3, "from": "project", "in_use": 0, "reserved": 0, "settable_min": 0})
    );
    assert_eq!(q["limits"]["proxies"]["from"], "class");
    let traffic: Vec<(String, String)> = q["traffic"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["resource"].as_str().unwrap().into(),
                t["from"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        traffic,
        [
            ("traffic_upload".into(), "instance".into()),
            ("traffic_total".into(), "class".into())
        ]
    );
    let classes = c.call("GET", "/v1/classes", Some(&admin), None);
    assert_eq!(classes.body["classes"][0]["name"], "basic");
    // Recount replaces the count; reset zeroes it.
    let a = c.call(
        "PUT",
        "/v1/instances/101/usage",
        Some(&admin),
        Some(r#"{"ipv4":2}"#),
    );
    assert_eq!(a.body["limits"]["ipv4"]["in_use"], 2);
    // Reports: 01:00 on Nov 1st in Kolkata is still October in UTC; the store's zone counts.
    let report = json!({"agent": "hv1", "batches": [
        {"seq": 1, "samples": [{"at": "2026-10-31T19:45:00Z", "instance": "101", "upload": 700, "download": 5}]},
        {"seq": 2, "samples": [{"at": "2026-11-01T10:00:00Z", "instance": "101", "upload": 400, "download": 0}]}]});
    let a = c.call(
        "POST",
        "/v1/reports",
        Some(&admin),
        Some(&report.to_string()),
    );
    assert_eq!(a.body["applied"], json!([1, 2]));
    // The same batches again (a retry after a lost answer): acknowledged, not added.
    let a = c.call(
        "POST",
        "/v1/reports",
        Some(&admin),
        Some(&report.to_string()),
    );
    assert_eq!(
        (a.body["applied"].clone(), a.body["duplicates"].clone()),
        (json!([]), json!([1, 2]))
    );
    let u = c.call(
        "GET",
        "/v1/instances/101/usage?period=month&at=2026-11-15T00:00:00Z",
        Some(&admin),
        None,
    );
    assert_eq!(
        (u.body["upload"].clone(), u.body["download"].clone()),
        (json!(1100), json!(5)),
        "{:?}",
        u.body
    );
    assert_eq!(u.body["start"], "2026-10-31T18:30:00Z");
    let day = c.call(
        "GET",
        "/v1/instances/101/usage?period=day&at=2026-11-01T12:00:00Z",
        Some(&admin),
        None,
    );
    assert_eq!(
        day.body["quotas"],
        json!([{"resource": "traffic_upload", "limit": 1000, "used": 1100, "overage": 100,
                "on_exceed": "limit", "exceeded": true, "topups": 0,
                "start": "2026-10-31T18:30:00Z", "end": "2026-11-01T18:30:00Z"}])
    );
    // Percentiles of that day's 5-minute rates: the Kolkata day's 288 intervals, two of
    // them with bytes, the rest idle.
    let p = c.call(
        "GET",
        "/v1/instances/101/usage?period=day&at=2026-11-01T12:00:00Z&percentile=100",
        Some(&admin),
        None,
    );
    assert_eq!(
        p.body["percentiles"],
        json!({"percentile": 100, "samples": 288, "estimated": 0, "upload_bps": 18,
               "download_bps": 0, "max_bps": 18, "aggregate_bps": 18}),
        "{:?}",
        p.body
    );
    for bad in ["0", "95.5", "x"] {
        let r = c.call(
            "GET",
            &format!("/v1/instances/101/usage?period=day&percentile={bad}"),
            Some(&admin),
            None,
        );
        assert_eq!(
            (r.status, r.body["error"]["field"].clone()),
            (400, json!("percentile")),
            "{bad}: {:?}",
            r.body
        );
    }
    // Top-ups: bad ones are refused naming the field; a good one adds to the current
    // period's limit (today's here, not that November day's) and is listed.
    let topup = |body: &str| {
        c.call(
            "POST",
            "/v1/instances/101/traffic/topups",
            Some(&admin),
            Some(body),
        )
    };
    let table = [
        (
            r#"{"resource":"traffic_upload","bytes":-5,"period":"day"}"#,
            "bytes",
        ),
        (
            r#"{"resource":"traffic_upload","bytes":0,"period":"day"}"#,
            "bytes",
        ),
        (
            r#"{"resource":"traffic_upload","bytes":"5EB","period":"day"}"#,
            "bytes",
        ),
        (
            r#"{"resource":"traffic_up","bytes":"1GB","period":"day"}"#,
            "resource",
        ),
        (
            r#"{"resource":"traffic_upload","bytes":"1GB","period":"week"}"#,
            "period",
        ),
        (
            r#"{"resource":"traffic_download","bytes":"1GB","period":"day"}"#,
            "resource",
        ),
        (
            r#"{"resource":"traffic_upload","bytes":"1GB","period":"day","extra":1}"#,
            "extra",
        ),
    ];
    for (body, field) in table {
        let a = topup(body);
        assert_eq!(a.status, 400, "{body}: {:?}", a.body);
        assert!(
            a.body["error"]["field"]
                .as_str()
                .unwrap_or_default()
                .contains(field),
            "{body}: {:?}",
            a.body
        );
    }
    let a = topup(r#"{"resource":"traffic_upload","bytes":"2KB","period":"day"}"#);
    assert_eq!(a.status, 201, "{:?}", a.body);
    assert_eq!(
        (a.body["bytes"].clone(), a.body["period"].clone()),
        (json!(2000), json!("day"))
    );
    let listed = c.call(
        "GET",
        "/v1/instances/101/traffic/topups",
        Some(&admin),
        None,
    );
    assert_eq!(listed.body["topups"][0]["id"], a.body["id"]);
    let today = c.call(
        "GET",
        "/v1/instances/101/usage?period=day",
        Some(&admin),
        None,
    );
    assert_eq!(
        (
            today.body["quotas"][0]["limit"].clone(),
            today.body["quotas"][0]["topups"].clone()
        ),
        (json!(3000), json!(2000)),
        "{:?}",
        today.body
    );
    let then = c.call(
        "GET",
        "/v1/instances/101/usage?period=day&at=2026-11-01T12:00:00Z",
        Some(&admin),
        None,
    );
    assert_eq!(
        then.body["quotas"][0]["limit"], 1000,
        "another day's limit is untouched"
    );
    let bad = c.call(
        "GET",
        "/v1/instances/101/usage?period=week",
        Some(&admin),
        None,
    );
    assert_eq!(bad.body["error"]["field"], "period");
    let stats = c.call("GET", "/v1/stats", Some(&admin), None);
    assert_eq!(stats.body["agents"][0]["last_seq"], 2);
    assert_eq!(stats.body["applied_reports"], 2);
    // DELETE the overrides: back to the project's chain, membership gone.
    assert_eq!(
        c.call("DELETE", "/v1/instances/101/quota", Some(&admin), None)
            .status,
        204
    );
    let q = c.call("GET", "/v1/instances/101/quota", Some(&admin), None);
    assert_eq!(q.body["limits"]["ipv4"]["from"], "default");
    assert_eq!(
        c.call("DELETE", "/v1/classes/nope", Some(&admin), None)
            .status,
        404
    );
    assert_eq!(store.stop(), Some(0));
}

#[test]
fn backup_while_serving_and_restore_only_when_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("quota.db");
    let backup = dir.path().join("backup.db");
    let admin = create_token(&db, &["--role", "admin"]);
    let store = StoreProc::start(&db, &[]);
    let c = Client::new(&store.base);
    c.call(
        "PUT",
        "/v1/instances/5/usage",
        Some(&admin),
        Some(r#"{"ipv4":4}"#),
    );
    let run = |args: &[&std::ffi::OsStr]| {
        std::process::Command::new(support::sluice_bin())
            .arg("store")
            .args(args)
            .arg("--database")
            .arg(&db)
            .output()
            .unwrap()
    };
    let out = run(&["backup".as_ref(), backup.as_os_str()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.call(
        "PUT",
        "/v1/instances/5/usage",
        Some(&admin),
        Some(r#"{"ipv4":9}"#),
    );
    let out = run(&["restore".as_ref(), backup.as_os_str()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is serving") && err.contains("stop it before restoring"),
        "{err}"
    );
    assert_eq!(
        standing(&db, "5", "ipv4").0,
        9,
        "a refused restore changes nothing"
    );
    assert_eq!(store.stop(), Some(0));
    let out = run(&["restore".as_ref(), backup.as_os_str()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        standing(&db, "5", "ipv4").0,
        4,
        "the backup's count is back"
    );
    // Not a store database: refused, the store untouched.
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, b"not sqlite at all, just bytes").unwrap();
    let out = run(&["restore".as_ref(), junk.as_os_str()]);
    assert!(!out.status.success());
    assert_eq!(standing(&db, "5", "ipv4").0, 4);
}

#[test]
fn the_fleet_page_shows_agents_top_talkers_and_quotas_near_their_limit() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("quota.db");
    let admin = create_token(&db, &["--role", "admin"]);
    let hv1 = create_token(&db, &["--role", "agent", "--host", "hv1"]);
    let hv2 = create_token(&db, &["--role", "agent", "--host", "hv2"]);
    let store = StoreProc::start(&db, &[]);
    let c = Client::new(&store.base);
    let now = jiff::Timestamp::now().to_string();
    let report = |host: &str, samples: serde_json::Value| {
        json!({"agent": host, "batches": [{"seq": 1, "samples": samples}]}).to_string()
    };
    let a = c.call(
        "POST",
        "/v1/reports",
        Some(&hv1),
        Some(&report(
            "hv1",
            json!([{"at": now, "instance": "301", "upload": 900_000, "download": 0},
                   {"at": now, "instance": "302", "upload": 5_000, "download": 0}]),
        )),
    );
    assert_eq!(a.status, 200, "{:?}", a.body);
    let a = c.call(
        "POST",
        "/v1/reports",
        Some(&hv2),
        Some(&report(
            "hv2",
            json!([{"at": now, "instance": "303", "upload": 70_000, "download": 0}]),
        )),
    );
    assert_eq!(a.status, 200);
    let quota = r#"{"traffic":[{"resource":"traffic_total","period":"month","limit":1000000,"on_exceed":"warn"}]}"#;
    assert_eq!(
        c.call("PUT", "/v1/instances/301/quota", Some(&admin), Some(quota))
            .status,
        200
    );

    let (status, page) = c.text("/");
    assert_eq!(status, 200);
    for agent in ["hv1", "hv2"] {
        assert!(
            page.contains(&format!("<tr data-agent=\"{agent}\">")),
            "{agent}"
        );
    }
    let order: Vec<usize> = ["301", "303", "302"]
        .iter()
        .map(|i| page.rfind(&format!("<tr data-instance=\"{i}\">")).unwrap())
        .collect();
    assert!(
        order[0] < order[1] && order[1] < order[2],
        "biggest first: {order:?}"
    );
    let near = &page[page.find("id=\"near\"").unwrap()..page.find("id=\"instances\"").unwrap()];
    assert!(near.contains("data-instance=\"301\"") && !near.contains("data-instance=\"303\""));
    assert!(
        near.contains("data-used=\"900000\" data-limit=\"1000000\""),
        "{near}"
    );
    assert!(page.contains("<script>") && !page.contains("src=\"http"));
    let (status, _) = c.text("/?period=week");
    assert_eq!(status, 400);

    // Ranked by the 95th percentile on request, on yesterday (a whole day: 288
    // intervals, rank 274, the top 14 discarded): 304 moves more (20 intervals of 2 MB,
    // 53.3 kbit/s) but 305's 16 intervals of 2.4 MB are the higher rate (64.0 kbit/s);
    // by volume it is the other way.
    let today = jiff::Timestamp::now()
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .start_of_day()
        .unwrap()
        .timestamp();
    let yesterday = today - jiff::SignedDuration::from_hours(24);
    let at = |k: i64| (yesterday + jiff::SignedDuration::from_secs(300 * k + 150)).to_string();
    let mut samples: Vec<serde_json::Value> = (0..20)
        .map(|k| json!({"at": at(10 * k), "instance": "304", "upload": 2_000_000, "download": 0}))
        .collect();
    samples.extend((0..16).map(
        |k| json!({"at": at(10 * k + 5), "instance": "305", "upload": 2_400_000, "download": 0}),
    ));
    samples.sort_by_key(|s| s["at"].as_str().unwrap().to_owned());
    let a = c.call(
        "POST",
        "/v1/reports",
        Some(&hv2),
        Some(&json!({"agent": "hv2", "batches": [{"seq": 2, "samples": samples}]}).to_string()),
    );
    assert_eq!(a.status, 200, "{:?}", a.body);
    let row = |page: &str, i: &str| page.rfind(&format!("<tr data-instance=\"{i}\">")).unwrap();
    let day = format!(
        "/?period=day&at={}",
        yesterday + jiff::SignedDuration::from_hours(12)
    );
    let (_, by_volume) = c.text(&day);
    assert!(row(&by_volume, "304") < row(&by_volume, "305"), "by volume");
    let (status, by_p95) = c.text(&format!("{day}&rank=p95"));
    assert_eq!(status, 200);
    assert!(row(&by_p95, "305") < row(&by_p95, "304"), "by the 95th");
    for (i, rate) in [("305", "64.0 kbit/s"), ("304", "53.3 kbit/s")] {
        let cell = &by_p95[row(&by_p95, i)..];
        assert!(cell.contains(rate), "{i}: {}", &cell[..400.min(cell.len())]);
    }
    let (status, _) = c.text("/?rank=loudest");
    assert_eq!(status, 400);

    // The panel's reset (what the page's Reset button sends) clears the month.
    let body = r#"{"instance":"301","resource":"traffic_total","period":"month"}"#;
    assert_eq!(
        c.call("POST", "/v1/usage/reset", Some(&hv1), Some(body))
            .status,
        403
    );
    assert_eq!(
        c.call("POST", "/v1/usage/reset", Some(&admin), Some(body))
            .status,
        200
    );
    let (_, page) = c.text("/?fragment=1");
    assert!(
        !page.contains("data-instance=\"301\""),
        "reset: no traffic left this month"
    );
    assert!(!page.contains("<html"));
    drop(store);

    let quiet = StoreProc::start(&db, &["--no-dashboard"]);
    assert_eq!(Client::new(&quiet.base).text("/").0, 404);
}

/// One store per database: a second `sluice store` on it exits 1 naming the holder's pid
/// and the lock, and a `--listen` address already taken exits 1 naming it. Neither
/// touches the database the first store serves.
#[test]
fn a_second_store_and_a_taken_port_exit_1_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("quota.db");
    let admin = create_token(&db, &["--role", "admin"]);
    let store = StoreProc::start(&db, &[]);
    let run = |database: &std::path::Path, listen: &str| {
        let out = std::process::Command::new("timeout")
            .arg("20")
            .arg(support::sluice_bin())
            .arg("store")
            .arg("--database")
            .arg(database)
            .args(["--listen", listen])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&db, "127.0.0.1:0");
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "another sluice process (pid {}) holds {}.lock",
            store.child.id(),
            db.display()
        )),
        "{err}"
    );
    // The first store's address is taken: a store on another database cannot have it.
    let taken = store.base.trim_start_matches("http://").to_owned();
    let (code, err) = run(&dir.path().join("other.db"), &taken);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("--listen {taken}: Address already in use")),
        "{err}"
    );
    // The first one serves on, untouched.
    let c = Client::new(&store.base);
    assert_eq!(c.call("GET", "/v1/stats", Some(&admin), None).status, 200);
    assert_eq!(store.stop(), Some(0));
}

/// An agent's token lets it report, not say anything: a sample dated 2040 or claiming
/// i64::MAX bytes is refused with 400 naming the batch and the sample, nothing of the
/// report counts, and the instance's usage still answers (it used to turn REAL in
/// SQLite and answer 503 from then on).
#[test]
fn an_agents_report_is_checked_before_it_counts() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("quota.db");
    let admin = create_token(&db, &["--role", "admin"]);
    let agent = create_token(&db, &["--role", "agent", "--host", "hv1"]);
    let store = StoreProc::start(&db, &[]);
    let c = Client::new(&store.base);
    let now = jiff::Timestamp::now();
    let post = |at: &str, upload: u64| {
        let body = json!({"agent": "hv1", "batches": [
            {"seq": 1, "samples": [{"at": now.to_string(), "instance": "77", "upload": 5, "download": 5}]},
            {"seq": 2, "samples": [{"at": at, "instance": "78", "upload": upload, "download": 0}]}]});
        c.call("POST", "/v1/reports", Some(&agent), Some(&body.to_string()))
    };
    let cases = [
        ("2040-01-01T00:00:00Z", 1, "ahead of the store's clock"),
        (
            &*now.to_string(),
            i64::MAX as u64,
            "more than a link of 400gbit",
        ),
    ];
    for (at, upload, says) in cases {
        let r = post(at, upload);
        assert_eq!(r.status, 400, "{:?}", r.body);
        assert_eq!(
            r.body["error"]["field"], "batches[1].samples[0]",
            "{:?}",
            r.body
        );
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("batch 2 instance 78") && message.contains(says),
            "{message}"
        );
    }
    for id in ["77", "78"] {
        let u = c.call(
            "GET",
            &format!("/v1/instances/{id}/usage?period=month"),
            Some(&admin),
            None,
        );
        assert_eq!(u.status, 200, "{:?}", u.body);
        assert_eq!(
            (u.body["upload"].as_u64(), u.body["download"].as_u64()),
            (Some(0), Some(0))
        );
    }
    // The corrected report is taken whole.
    let r = post(&now.to_string(), 1000);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["applied"], json!([1, 2]));
    let stats = c.call("GET", "/v1/stats", Some(&admin), None);
    assert_eq!(stats.body["overlapping_samples"], 0, "{:?}", stats.body);
    // Reservations ask for what a counted resource can hold.
    let r = c.call(
        "POST",
        "/v1/reservations",
        Some(&admin),
        Some(r#"{"instance":"77","deltas":{"ipv4":9223372036854775807}}"#),
    );
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert_eq!(r.body["error"]["field"], "deltas.ipv4");
    // A lookup names at most 10,000 instances (more held the one SQLite writer).
    let ids: Vec<String> = (0..10_001).map(|i| i.to_string()).collect();
    let big = json!({ "instances": ids }).to_string();
    let r = c.call("POST", "/v1/quotas/lookup", Some(&agent), Some(&big));
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert_eq!(r.body["error"]["field"], "instances");
    let ok = json!({ "instances": ids[..10_000] }).to_string();
    let r = c.call("POST", "/v1/quotas/lookup", Some(&agent), Some(&ok));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(store.stop(), Some(0));
}

/// What each role may do, as the README's table has it: a panel runs the quota
/// workflow but reports nothing, a viewer only reads, an agent reads quotas and reports
/// for its own host only. (Tokens, backups and restores are CLI-only: no route exists.)
#[test]
fn each_role_may_do_what_it_is_for_and_no_more() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("quota.db");
    let admin = create_token(&db, &["--role", "admin"]);
    let panel = create_token(&db, &["--role", "panel"]);
    let viewer = create_token(&db, &["--role", "viewer"]);
    let agent = create_token(&db, &["--role", "agent", "--host", "hv1"]);
    // Hosts belong to agent tokens only.
    let out = std::process::Command::new(support::sluice_bin())
        .args([
            "store", "token", "create", "--role", "panel", "--host", "hv1",
        ])
        .arg("--database")
        .arg(&db)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("host"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = StoreProc::start(&db, &[]);
    let c = Client::new(&store.base);
    let quota = r#"{"limits":{"ipv4":10}}"#;
    let one = r#"{"instance":"101","deltas":{"ipv4":1}}"#;
    // (method, path, body, [admin, panel, viewer, agent])
    let table: [(&str, &str, Option<&str>, [u16; 4]); 10] = [
        ("GET", "/v1/stats", None, [200, 200, 200, 403]),
        ("GET", "/v1/defaults", None, [200, 200, 200, 403]),
        ("GET", "/v1/classes", None, [200, 200, 200, 403]),
        (
            "PUT",
            "/v1/instances/101/quota",
            Some(quota),
            [200, 200, 403, 403],
        ),
        ("GET", "/v1/instances/101/quota", None, [200, 200, 200, 200]),
        ("GET", "/v1/instances/101/usage", None, [200, 200, 200, 200]),
        ("POST", "/v1/check", Some(one), [200, 200, 403, 403]),
        ("POST", "/v1/reservations", Some(one), [201, 201, 403, 403]),
        (
            "PUT",
            "/v1/instances/101/usage",
            Some(r#"{"ipv4":1}"#),
            [200, 200, 403, 403],
        ),
        (
            "POST",
            "/v1/quotas/lookup",
            Some(r#"{"instances":["101"]}"#),
            [200, 200, 200, 200],
        ),
    ];
    for (method, path, body, statuses) in table {
        let roles = [
            ("admin", &admin),
            ("panel", &panel),
            ("viewer", &viewer),
            ("agent", &agent),
        ];
        for ((role, token), want) in roles.into_iter().zip(statuses) {
            let a = c.call(method, path, Some(token), body);
            assert_eq!(a.status, want, "{method} {path} as {role}: {:?}", a.body);
            if want == 403 {
                assert_eq!(a.body["error"]["code"], "forbidden", "{method} {path}");
            }
        }
    }
    // A panel commits and rolls back the reservations it makes.
    for end in ["commit", "rollback"] {
        let r = c.call("POST", "/v1/reservations", Some(&panel), Some(one));
        let id = r.body["id"].as_str().unwrap().to_owned();
        let path = format!("/v1/reservations/{id}/{end}");
        assert_eq!(c.call("POST", &path, Some(&viewer), None).status, 403);
        assert_eq!(
            c.call("POST", &path, Some(&panel), None).status,
            204,
            "{end}"
        );
    }
    // Reports: an admin for any host, an agent for its own; a panel or viewer not at all.
    let now = jiff::Timestamp::now().to_string();
    for (token, host, seq, want) in [
        (&panel, "hv1", 1, 403),
        (&viewer, "hv1", 1, 403),
        (&agent, "hv2", 1, 403),
        (&agent, "hv1", 1, 200),
        (&admin, "hv3", 1, 200),
    ] {
        let body = json!({"agent": host, "batches": [{"seq": seq, "samples": [
            {"at": now, "instance": "101", "upload": 1, "download": 2}]}]})
        .to_string();
        let a = c.call("POST", "/v1/reports", Some(token), Some(&body));
        assert_eq!(a.status, want, "report for {host}: {:?}", a.body);
    }
    // What was allowed is in the database: two reservations left open (admin's and
    // panel's in the table), one committed by the panel; the usage the PUT set is 1.
    let (in_use, reserved) = standing(&db, "101", "ipv4");
    assert_eq!((in_use, reserved), (2, 2));
    drop(store);
}

/// Guessing tokens costs: a client address over `--address-rate-limit` is refused with
/// 429 before any token is looked at, so a flood of bad tokens never reaches the
/// database, and its Retry-After says when to come back.
#[test]
fn one_address_is_rate_limited_before_its_token_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("quota.db");
    let admin = create_token(&db, &["--role", "admin"]);
    let store = StoreProc::start(&db, &["--address-rate-limit", "5", "--rate-limit", "0"]);
    let c = Client::new(&store.base);
    let wrong = format!("sluice_{}_{}", &admin[7..15], "0".repeat(64));
    let started = std::time::Instant::now();
    let mut unauthorized = 0;
    let limited = loop {
        let a = c.call("GET", "/v1/stats", Some(&wrong), None);
        if a.status != 401 {
            break a;
        }
        unauthorized += 1;
        assert!(unauthorized < 200, "bad tokens were never rate limited");
    };
    let refills = (started.elapsed().as_secs_f64() * 5.0).ceil() as usize;
    assert!(
        (5..=5 + refills).contains(&unauthorized),
        "{unauthorized} 401s before the first 429, with a burst of 5 and {refills} refills"
    );
    assert_eq!(limited.status, 429, "{:?}", limited.body);
    let message = limited.body["error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("this address"), "{message}");
    let wait: u64 = limited.retry_after.as_deref().unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    // The address is held back whatever it presents, a good token too, until it waits.
    assert_eq!(c.call("GET", "/v1/stats", Some(&admin), None).status, 429);
    std::thread::sleep(std::time::Duration::from_secs(wait));
    assert_eq!(c.call("GET", "/v1/stats", Some(&admin), None).status, 200);
}

/// Reads go to a pool of read-only connections: while another process holds the
/// database's write lock, a token-checked read answers at once and a reservation waits
/// its turn, then lands when the lock is released.
#[test]
fn reads_answer_while_the_writer_waits_for_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("quota.db");
    let admin = create_token(&db, &["--role", "admin"]);
    let store = StoreProc::start(&db, &["--rate-limit", "0"]);
    let c = Client::new(&store.base);
    let quota = r#"{"limits":{"ipv4":5}}"#;
    assert_eq!(
        c.call("PUT", "/v1/instances/101/quota", Some(&admin), Some(quota))
            .status,
        200
    );
    let lock = rusqlite::Connection::open(&db).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let (base, token) = (store.base.clone(), admin.clone());
    let reservation = std::thread::spawn(move || {
        let started = std::time::Instant::now();
        let a = Client::new(&base).call(
            "POST",
            "/v1/reservations",
            Some(&token),
            Some(r#"{"instance":"101","deltas":{"ipv4":1}}"#),
        );
        (a, started.elapsed())
    });
    // For a second, every read answers quickly, though the writer is stuck.
    let started = std::time::Instant::now();
    let mut reads = 0;
    while started.elapsed() < std::time::Duration::from_secs(1) {
        let asked = std::time::Instant::now();
        let a = c.call("GET", "/v1/instances/101/quota", Some(&admin), None);
        assert_eq!(a.status, 200, "{:?}", a.body);
        assert_eq!(a.body["limits"]["ipv4"]["limit"], 5);
        assert!(
            asked.elapsed() < std::time::Duration::from_millis(500),
            "a read waited {:?} behind the writer",
            asked.elapsed()
        );
        reads += 1;
    }
    assert!(reads > 5, "{reads} reads");
    assert!(
        !reservation.is_finished(),
        "the reservation did not wait for the lock"
    );
    lock.execute_batch("ROLLBACK").unwrap();
    let (a, took) = reservation.join().unwrap();
    assert_eq!(a.status, 201, "{:?}", a.body);
    assert!(took >= std::time::Duration::from_secs(1), "{took:?}");
    assert_eq!(standing(&db, "101", "ipv4"), (0, 1));
}

/// Bound beyond loopback (`0.0.0.0`), the store's reads need a token: the fleet page
/// answers with its sign-in page, /metrics with 401 unless `--metrics-public`, and a
/// viewer's token (header or the sign-in cookie) opens them. The cookie opens no change,
/// and a `Host` that is not an address or a listed name is refused (DNS rebinding).
#[test]
fn off_loopback_the_fleet_page_and_metrics_need_a_read_token() {
    use support::http::exchange;
    let ns = support::Netns::new("sf");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("quota.db");
    let admin = create_token(&db, &["--role", "admin"]);
    let viewer = create_token(&db, &["--role", "viewer"]);
    let agent = create_token(&db, &["--role", "agent", "--host", "hv1"]);
    let store = StoreProc::start_listen(
        Some(&ns.name),
        &db,
        "0.0.0.0:0",
        &["--allowed-host", "fleet.example.net"],
    );
    let port = store.port();
    let ask = |method: &str, path: &str, headers: &[(&str, &str)], body: &str| {
        exchange(&ns, port, method, path, headers, body)
    };
    let bearer = |t: &str| format!("Bearer {t}");
    let (admin_auth, viewer_auth) = (bearer(&admin), bearer(&viewer));

    let a = ask("GET", "/", &[], "");
    assert_eq!(a.status, 401);
    assert!(
        a.body.contains("action=\"/login\"") && !a.body.contains("data-agent"),
        "{}",
        a.body
    );
    for path in ["/v1/stats", "/metrics", "/?fragment=1"] {
        assert_eq!(ask("GET", path, &[], "").status, 401, "{path}");
        assert_eq!(
            ask("GET", path, &[("Authorization", &viewer_auth)], "").status,
            200,
            "{path} as viewer"
        );
    }
    assert_eq!(ask("GET", "/healthz", &[], "").status, 200);
    // Sign in: a viewer's token becomes an HTTP-only cookie that opens the page.
    let form = |t: &str| format!("token={t}&next=%2F%3Fperiod%3Dday");
    let a = ask(
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &form(&viewer),
    );
    assert_eq!(a.status, 303, "{}", a.body);
    assert_eq!(a.header("location"), Some("/?period=day"));
    let cookie = a.header("set-cookie").unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let jar = cookie.split(';').next().unwrap().to_owned();
    let a = ask("GET", "/?period=day", &[("Cookie", &jar)], "");
    assert_eq!(a.status, 200);
    assert!(a.body.contains("id=\"instances\""), "{}", a.body);
    // An agent's token signs no one in; the cookie of an admin changes nothing.
    let a = ask(
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &form(&agent),
    );
    assert_eq!((a.status, a.header("set-cookie")), (401, None));
    let admin_jar = format!("sluice_token={admin}");
    let reset = r#"{"instance":"301","resource":"traffic_total","period":"month"}"#;
    let json = ("Content-Type", "application/json");
    let a = ask(
        "POST",
        "/v1/usage/reset",
        &[json, ("Cookie", &admin_jar)],
        reset,
    );
    assert_eq!(a.status, 401, "{}", a.body);
    let a = ask(
        "POST",
        "/v1/usage/reset",
        &[json, ("Authorization", &admin_auth)],
        reset,
    );
    assert_eq!(a.status, 200, "{}", a.body);
    // Host: addresses, localhost and the listed name; anything else is misdirected.
    for (host, want) in [
        ("fleet.example.net", 200),
        ("localhost:80", 200),
        ("evil.example", 421),
        ("127.0.0.1.evil.example", 421),
    ] {
        let a = ask("GET", "/healthz", &[("Host", host)], "");
        assert_eq!(a.status, want, "Host {host}: {}", a.body);
    }
    assert_eq!(store.stop(), Some(0));

    // --metrics-public: a scraper needs no token; the rest still does.
    let store = StoreProc::start_listen(Some(&ns.name), &db, "0.0.0.0:0", &["--metrics-public"]);
    let port = store.port();
    let a = exchange(&ns, port, "GET", "/metrics", &[], "");
    assert_eq!(a.status, 200);
    assert!(a.body.contains("sluice_store_"), "{}", a.body);
    assert_eq!(exchange(&ns, port, "GET", "/v1/stats", &[], "").status, 401);
    assert_eq!(store.stop(), Some(0));
}

/// A closed month's statement is read over HTTP as stored, `sluice store statements
/// verify` checks its chain and prints the head, and an upload count changed by hand in
/// the database makes it fail naming the statement.
#[test]
fn statements_verify_until_one_is_edited_in_the_database() {
    use jiff::Timestamp;
    use sluice::model::calendar::{PeriodKind, period_containing};
    use sluice::model::ids::Label;
    use sluice::store::report::{Batch, Report, Sample};
    use sluice::store::service::{Settings, Store};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("quota.db");
    let admin = create_token(&db, &["--role", "admin"]);
    let now = Timestamp::now();
    let this_month = period_containing(PeriodKind::Month(1), now, &jiff::tz::TimeZone::UTC)
        .unwrap()
        .start;
    {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let settings = Settings {
            keep_report_keys: std::time::Duration::from_secs(40 * 86_400),
            ..Settings::default()
        };
        let store = Store::open_sqlite(&db, settings).unwrap();
        let report = Report {
            agent: Label::new("hv1").unwrap(),
            batches: vec![Batch {
                seq: 1,
                samples: vec![Sample {
                    at: this_month - jiff::SignedDuration::from_hours(5),
                    instance: InstanceId::new("101").unwrap(),
                    upload: 7_000,
                    download: 3_000,
                    estimated: false,
                }],
            }],
        };
        rt.block_on(store.ingest(report)).unwrap();
        // In the month's first hour the statement still waits for late reports.
        let grace = jiff::SignedDuration::from_mins(61);
        let close_at = if now < this_month + grace {
            now + grace
        } else {
            now
        };
        assert_eq!(rt.block_on(store.close_periods(close_at)).unwrap(), 1);
    }
    let store = StoreProc::start(&db, &[]);
    let c = Client::new(&store.base);
    let got = c.call("GET", "/v1/instances/101/statements", Some(&admin), None);
    assert_eq!(got.status, 200, "{:?}", got.body);
    let st = &got.body["statements"][0];
    assert_eq!(
        (
            st["upload_bytes"].clone(),
            st["total_bytes"].clone(),
            st["prev_hash"].as_str().map(str::len)
        ),
        (json!(7000), json!(10000), Some(64)),
        "{st}"
    );
    let hash = st["hash"].as_str().unwrap().to_owned();
    store.stop();
    let verify = || {
        std::process::Command::new(support::sluice_bin())
            .args(["store", "statements", "verify", "--database"])
            .arg(&db)
            .output()
            .unwrap()
    };
    let out = verify();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&hash) && stdout.contains("1 chains, 1 statements: all verify"),
        "{stdout}"
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    let n = conn
        .execute(
            "UPDATE statements SET body = replace(body, '\"upload_bytes\":7000', '\"upload_bytes\":700')",
            [],
        )
        .unwrap();
    assert_eq!(n, 1);
    drop(conn);
    let out = verify();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("statement 101") && stderr.contains("edited after it was written"),
        "{stderr}"
    );
}
