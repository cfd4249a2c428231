//! Exactly-once reporting on the real kernel: an agent measures real traffic and reports
//! it to a real `sluice store` through a proxy that loses some answers and delivers some
//! reports twice; the store is stopped for a while in the middle. In the end the store's
//! totals equal the agent's ledger to the byte.

mod support;

use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use support::store::{Client, StoreProc, create_token, http_client};
use support::{AgentProc, Netns, eventually, send_udp, veth};

/// Forwards to the store (when one is up); answers 502 when it is not.
struct Proxy {
    target: Mutex<Option<String>>,
    http: reqwest::Client,
    requests: AtomicU64,
    applied: AtomicU64,
    /// Reports forwarded a second time (the store saw them twice).
    doubled: AtomicU64,
    /// Reports the store applied but whose answer the agent never got.
    lost: AtomicU64,
    refused: AtomicU64,
}

async fn forward(State(p): State<Arc<Proxy>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 64 << 20).await.unwrap();
    p.requests.fetch_add(1, Ordering::Relaxed);
    let Some(base) = p.target.lock().unwrap().clone() else {
        p.refused.fetch_add(1, Ordering::Relaxed);
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let send = || {
        let mut r = p
            .http
            .request(parts.method.clone(), format!("{base}{}", parts.uri))
            .body(bytes.clone());
        for (k, v) in &parts.headers {
            if k == "authorization" || k == "content-type" {
                r = r.header(k, v);
            }
        }
        r.send()
    };
    let Ok(resp) = send().await else {
        p.refused.fetch_add(1, Ordering::Relaxed);
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = resp.status().as_u16();
    let body = resp.bytes().await.unwrap();
    // Of the reports the store applied: the 1st, 4th, … arrive twice; the 2nd, 5th, …
    // lose their answer (the agent sends them again).
    let n = if status == 200 && parts.uri.path() == "/v1/reports" {
        p.applied.fetch_add(1, Ordering::Relaxed)
    } else {
        u64::MAX
    };
    if n != u64::MAX && n % 3 == 0 {
        let again = send().await.unwrap();
        assert_eq!(again.status().as_u16(), 200);
        p.doubled.fetch_add(1, Ordering::Relaxed);
    }
    if n != u64::MAX && n % 3 == 1 {
        p.lost.fetch_add(1, Ordering::Relaxed);
        return StatusCode::BAD_GATEWAY.into_response();
    }
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap()
}

/// Serve the proxy on a thread inside namespace `ns`; its port.
fn start_proxy(ns: &str, proxy: Arc<Proxy>) -> u16 {
    let path = format!("/var/run/netns/{ns}");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: setns on a valid netns fd; affects only this thread, whose runtime
        // makes every socket of the proxy.
        assert_eq!(
            unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap().port()).unwrap();
            let app = axum::Router::new().fallback(forward).with_state(proxy);
            axum::serve(listener, app).await.unwrap();
        });
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap()
}

/// An agent in `host` ticking every second, its config and data under `dir`, with
/// `store` as its `[store]` section; returned once its first tick made the ledger.
fn start_agent(host: &Netns, dir: &Path, store: &str) -> (std::path::PathBuf, AgentProc) {
    let config = dir.join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[agent]
interval = "1s"
interfaces = ['^tap(?P<instance>[0-9]+)i[0-9]+$']
backend = "none"
state_dir = "{0}/run"
data_dir = "{0}/lib"
[log]
dir = ""
[penalty]
base_rate = "100mbit"
[store]
{store}"#,
            dir.display()
        ),
    )
    .unwrap();
    let agent = AgentProc::start(host, &config, dir.join("agent.log"));
    eventually(Duration::from_secs(10), "the agent's first tick", || {
        dir.join("lib/ledger.db").exists().then_some(())
    });
    (config, agent)
}

/// The quota rules exceeded, from the event log.
fn exceeded_rules(config: &Path) -> Vec<String> {
    support::events(config)
        .iter()
        .filter(|e| e["event"] == "rule" && e["state"] == "exceeded")
        .map(|e| e["rule"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn ledger_totals_of(config: &Path, instance: &str) -> (u64, u64) {
    support::ledger_totals(config, "--instance", instance)
}

fn ledger_totals(config: &Path) -> (u64, u64) {
    ledger_totals_of(config, "501")
}

#[test]
fn the_store_counts_every_byte_once_through_outages_retries_and_duplicates() {
    support::require_root();
    let host = Netns::new("rh");
    let inst = Netns::new("ri");
    let link = veth(&host, "tap501i0", &inst, "eth0", 105);
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("store/quota.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    let admin = create_token(&db, &["--role", "admin"]);
    let agent_token = create_token(&db, &["--role", "agent", "--host", "hv-test"]);
    let store = StoreProc::start_in(Some(&host.name), &db, &["--rate-limit", "0"]);
    let proxy = Arc::new(Proxy {
        target: Mutex::new(Some(store.base.clone())),
        http: http_client(),
        requests: AtomicU64::new(0),
        applied: AtomicU64::new(0),
        doubled: AtomicU64::new(0),
        lost: AtomicU64::new(0),
        refused: AtomicU64::new(0),
    });
    let port = start_proxy(&host.name, proxy.clone());
    // The panel gives instance 501 a daily upload quota: the agent must fetch it from the
    // store and enforce it as a rule.
    let (base, admin2) = (store.base.clone(), admin.clone());
    let put = support::run_in(&host.name, move || {
        Client::new(&base).call(
            "PUT",
            "/v1/instances/501/quota",
            Some(&admin2),
            Some(r#"{"traffic":[{"resource":"traffic_upload","period":"day","limit":"300KB","on_exceed":"warn"}]}"#),
        )
    });
    assert_eq!(put.status, 200, "{:?}", put.body);
    let store_section = format!(
        "url = \"http://127.0.0.1:{port}\"\ntoken = \"{agent_token}\"\nhost = \"hv-test\"\nquota_refresh = \"1s\"\n"
    );
    let (config, agent) = start_agent(&host, tmp.path(), &store_section);
    // Past its first tick the agent's baseline is taken; the link is quiet (static
    // neighbours, no IPv6), so the kernel's counters now are that baseline.
    support::http::wait_healthy(&host, 9477, Duration::from_secs(15));
    eventually(Duration::from_secs(10), "/healthz ok", || {
        (support::http::get_json(&host, 9477, "/healthz")["status"] == "ok").then_some(())
    });
    let counters = || {
        (
            host.sysfs_counter("tap501i0", "rx_bytes"),
            host.sysfs_counter("tap501i0", "tx_bytes"),
        )
    };
    let baseline = counters();
    // Upload (the instance sends) and, smaller, download (the host sends to it).
    let traffic = |bytes_per_packet: usize, packets: u64| {
        let sent = send_udp(
            &inst.name,
            link.a_ip,
            bytes_per_packet,
            packets,
            3_000_000,
            Duration::from_secs(3),
        );
        assert!(sent > packets / 2, "sent {sent}");
        let sent = send_udp(
            &host.name,
            link.b_ip,
            bytes_per_packet / 2,
            packets / 2,
            3_000_000,
            Duration::from_secs(3),
        );
        assert!(sent > packets / 4, "sent {sent}");
    };
    traffic(1000, 600);
    // The store goes away for a while; the agent keeps measuring and spooling.
    proxy.target.lock().unwrap().take();
    assert_eq!(store.stop(), Some(0));
    traffic(700, 900);
    eventually(Duration::from_secs(10), "the agent notices", || {
        agent
            .log()
            .contains("quota store unreachable")
            .then_some(())
    });
    let store = StoreProc::start_in(Some(&host.name), &db, &["--rate-limit", "0"]);
    *proxy.target.lock().unwrap() = Some(store.base.clone());
    traffic(300, 500);

    // The store is in the host namespace: ask it from there.
    let ns = host.name.clone();
    let base = store.base.clone();
    let totals = || {
        let (base, admin) = (base.clone(), admin.clone());
        support::run_in(&ns, move || {
            let c = Client::new(&base);
            let u = c.call(
                "GET",
                "/v1/instances/501/usage?period=month",
                Some(&admin),
                None,
            );
            (
                u.body["upload"].as_u64().unwrap_or(0),
                u.body["download"].as_u64().unwrap_or(0),
            )
        })
    };
    let now = counters();
    let kernel = (now.0 - baseline.0, now.1 - baseline.1);
    assert!(
        kernel.0 > 900_000 && kernel.1 > 200_000,
        "traffic arrived: {kernel:?}"
    );
    // The ledger holds every byte after the agent's baseline, in both directions, to the
    // byte; the store then holds what the ledger holds.
    eventually(
        Duration::from_secs(15),
        "the ledger equals the kernel's counters",
        || (ledger_totals(&config) == kernel).then_some(()),
    );
    eventually(
        Duration::from_secs(30),
        "the store catches up with the ledger",
        || (totals() == kernel).then_some(()),
    );
    // The last report's answer may have been the one the proxy lost: the store already
    // counted it, and the agent says the store is back once its resend is answered.
    eventually(
        Duration::from_secs(30),
        "the agent sees the store again",
        || {
            agent
                .log()
                .contains("quota store reachable again")
                .then_some(())
        },
    );
    assert_eq!(
        totals(),
        ledger_totals(&config),
        "the resend was not added twice"
    );
    // The panel's quota reached the agent as a rule and fired on this host's traffic
    // (300 KB against more than a megabyte uploaded).
    let fired = eventually(
        Duration::from_secs(10),
        "the store quota's rule fires",
        || {
            support::events(&config).into_iter().find(|e| {
                e["event"] == "rule"
                    && e["rule"] == "store:day:upload:501"
                    && e["state"] == "exceeded"
            })
        },
    );
    assert_eq!(fired["limit_bytes"], 300_000, "{fired}");
    assert_eq!(fired["instance"], "501", "{fired}");

    // The fleet page in a real browser: 501's row carries the store's exact counts, and
    // its Reset, clicked with the admin token, starts the instance's month over.
    let driver = support::browser::Chromedriver::start(&host);
    let (url, typed) = (format!("{}/", store.base), admin.clone());
    let (row, note) = driver.session(move |c| async move {
        use fantoccini::Locator;
        use support::browser::{click_and_confirm, enter_token, note_saying};
        c.goto(&url).await.unwrap();
        let row = c
            .find(Locator::Css("#instances tr[data-instance=\"501\"]"))
            .await
            .expect("501 in the fleet's top instances");
        let mut sorted = vec![];
        for cell in row.find_all(Locator::Css("td.n")).await.unwrap() {
            sorted.push(cell.attr("data-sort").await.unwrap().unwrap_or_default());
        }
        enter_token(&c, &typed).await;
        click_and_confirm(&c, "#instances button[data-reset=\"501\"]", "501").await;
        (sorted, note_saying(&c, "Reset:").await)
    });
    drop(driver);
    assert_eq!(
        row,
        [
            kernel.0.to_string(),
            kernel.1.to_string(),
            (kernel.0 + kernel.1).to_string(),
            "0".to_string()
        ],
        "upload, download, total of 501 on the fleet page (and no 95th: not asked to rank by it)"
    );
    assert!(note.contains("Reset: 501"), "{note}");
    assert_eq!(totals(), (0, 0), "the month starts over for 501");
    let log = agent.log();
    assert_eq!(agent.stop(), Some(0), "{log}");
    assert!(log.contains("quota store unreachable"), "{log}");
    assert!(log.contains("quota store reachable again"), "{log}");
    let (doubled, lost, refused) = (
        proxy.doubled.load(Ordering::Relaxed),
        proxy.lost.load(Ordering::Relaxed),
        proxy.refused.load(Ordering::Relaxed),
    );
    assert!(
        doubled > 0 && lost > 0 && refused > 0,
        "doubled {doubled}, lost {lost}, refused {refused}"
    );
}

/// An agent with `[store]` and no url: the store runs inside it, on the data dir, and
/// serves its API; the agent's own traffic lands in it exactly as the ledger has it.
#[test]
fn the_embedded_store_holds_what_the_ledger_holds() {
    support::require_root();
    let host = Netns::new("eh");
    let inst = Netns::new("ei");
    let link = veth(&host, "tap502i0", &inst, "eth0", 106);
    let tmp = tempfile::tempdir().unwrap();
    let (config, agent) = start_agent(
        &host,
        tmp.path(),
        "listen = \"127.0.0.1:19478\"\nhost = \"hv-embedded\"\nquota_refresh = \"1s\"\n",
    );
    // The embedded store's database is the agent's: a token made on it works at once.
    let db = tmp.path().join("lib/quota.db");
    let admin = create_token(&db, &["--role", "admin"]);
    let ns = host.name.clone();
    let admin2 = admin.clone();
    let put = support::run_in(&ns, move || {
        Client::new("http://127.0.0.1:19478").call(
            "PUT",
            "/v1/instances/502/quota",
            Some(&admin2),
            Some(r#"{"traffic":[{"resource":"traffic_total","period":"month","limit":"200KB","on_exceed":"warn"}]}"#),
        )
    });
    assert_eq!(put.status, 200, "{:?}", put.body);
    eventually(
        Duration::from_secs(10),
        "the agent fetched the quota",
        || {
            let cache = std::fs::read_to_string(tmp.path().join("lib/store-quotas.json")).ok()?;
            cache.contains("\"502\"").then_some(())
        },
    );
    let sent = send_udp(
        &inst.name,
        link.a_ip,
        900,
        800,
        3_000_000,
        Duration::from_secs(3),
    );
    assert!(sent > 400);
    let usage = || {
        let admin = admin.clone();
        support::run_in(&ns, move || {
            let c = Client::new("http://127.0.0.1:19478");
            let u = c.call(
                "GET",
                "/v1/instances/502/usage?period=month",
                Some(&admin),
                None,
            );
            (
                u.body["upload"].as_u64().unwrap_or(0),
                u.body["download"].as_u64().unwrap_or(0),
            )
        })
    };
    eventually(
        Duration::from_secs(20),
        "the store holds the ledger's bytes",
        || {
            let ledger = ledger_totals_of(&config, "502");
            (ledger.0 > 700_000 && usage() == ledger).then_some(())
        },
    );
    // Restore is refused while the agent serves the database.
    let out = std::process::Command::new(support::sluice_bin())
        .args(["store", "restore"])
        .arg(tmp.path().join("nothing.db"))
        .arg("--database")
        .arg(&db)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("is serving"), "{err}");
    let log = agent.log();
    assert_eq!(agent.stop(), Some(0), "{log}");
    assert!(log.contains("embedded quota store open"), "{log}");
    assert_eq!(exceeded_rules(&config), ["store:month:total:502"], "{log}");
}
