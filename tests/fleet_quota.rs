//! A store quota follows its instance across the fleet: two "hosts" (network
//! namespaces), each with an agent reporting to one `sluice store` (on a test bridge in
//! the root namespace, where it reaches its PostgreSQL on loopback), on SQLite and on
//! PostgreSQL. Instance 777's tap
//! carries real traffic on host A, then "migrates": the tap goes from A and appears on
//! B, where traffic goes on. B enforces the daily quota against A's bytes plus its own:
//! not before their sum passes the limit, and once when it does. The store's count is
//! the sum of both ledgers, to the byte.

mod support;

use std::path::Path;
use std::time::Duration;

use sluice::state;
use support::store::{Client, StoreProc, create_token};
use support::{AgentProc, Link, Netns, eventually, send_udp, sh, veth};

const LIMIT: u64 = 500_000;
const RULE: &str = "store:day:upload:777";

/// An agent in `host` ticking every second, reporting to `url` as `name`.
fn agent(
    host: &Netns,
    dir: &Path,
    url: &str,
    token: &str,
    name: &str,
) -> (std::path::PathBuf, AgentProc) {
    std::fs::create_dir_all(dir).unwrap();
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
listen = ""
[log]
dir = ""
[penalty]
base_rate = "100mbit"
[store]
url = "{url}"
token = "{token}"
host = "{name}"
quota_refresh = "1s"
"#,
            dir.display()
        ),
    )
    .unwrap();
    let proc = AgentProc::start(host, &config, dir.join("agent.log"));
    (config, proc)
}

fn quota(dir: &Path) -> Option<state::QuotaRecord> {
    let snap = state::read(&dir.join("run/state.json")).ok().flatten()?;
    snap.quotas.into_iter().find(|q| q.rule.as_str() == RULE)
}

fn exceeds(config: &Path) -> Vec<serde_json::Value> {
    support::events(config)
        .into_iter()
        .filter(|e| e["event"] == "rule" && e["rule"] == RULE && e["state"] == "exceeded")
        .collect()
}

fn uploaded(config: &Path, instance: &str) -> u64 {
    support::ledger_totals(config, "--instance", instance).0
}

/// `n` datagrams of 1000 bytes from the instance's side of `link` (its upload).
fn upload(inst: &Netns, link: &Link, n: u64) {
    let sent = send_udp(
        &inst.name,
        link.a_ip,
        1000,
        n,
        4_000_000,
        Duration::from_secs(5),
    );
    assert_eq!(sent, n);
}

/// The ledger's count once it stops moving (every datagram counted).
fn settled(config: &Path, instance: &str) -> u64 {
    let mut last = u64::MAX;
    eventually(Duration::from_secs(15), "the ledger to settle", || {
        std::thread::sleep(Duration::from_millis(1500));
        let now = uploaded(config, instance);
        let same = now == last;
        last = now;
        same.then_some(now)
    })
}

/// A bridge in the root namespace with the store's address, and each host's uplink
/// on it; deleted by name on drop.
struct Fabric {
    bridge: String,
    ports: Vec<String>,
}

const STORE_IP: &str = "10.250.65.1";

impl Fabric {
    fn new() -> Fabric {
        let bridge = format!("flq{}", std::process::id());
        sh("ip", &["link", "add", &bridge, "type", "bridge"]);
        sh(
            "ip",
            &["addr", "add", &format!("{STORE_IP}/24"), "dev", &bridge],
        );
        sh("ip", &["link", "set", &bridge, "up"]);
        Fabric {
            bridge,
            ports: Vec::new(),
        }
    }

    /// `host`'s `up0` on the bridge at 10.250.65.`n`.
    fn attach(&mut self, host: &Netns, n: u8) {
        let port = format!("{}p{n}", self.bridge);
        sh(
            "ip",
            &[
                "link", "add", &port, "type", "veth", "peer", "name", "up0", "netns", &host.name,
            ],
        );
        sh("ip", &["link", "set", &port, "master", &self.bridge, "up"]);
        self.ports.push(port);
        host.ip(&["addr", "add", &format!("10.250.65.{n}/24"), "dev", "up0"]);
        host.ip(&["link", "set", "up0", "up"]);
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        for dev in self.ports.iter().chain([&self.bridge]) {
            let _ = std::process::Command::new("ip")
                .args(["link", "del", dev])
                .status();
        }
    }
}

/// The two cases share the fabric's names and addresses: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Two hosts on the fabric, a store on `db` reachable from both, and an admin's and
/// each host's tokens.
struct TwoHosts {
    a: Netns,
    b: Netns,
    _fabric: Fabric,
    store: StoreProc,
    admin: String,
    tokens: [String; 2],
    url: String,
    tmp: tempfile::TempDir,
}

impl TwoHosts {
    fn new(db: &str) -> TwoHosts {
        let (a, b) = (Netns::new("fa"), Netns::new("fb"));
        let mut fabric = Fabric::new();
        fabric.attach(&a, 2);
        fabric.attach(&b, 3);
        let db_path = Path::new(db);
        let admin = create_token(db_path, &["--role", "admin"]);
        let tokens =
            ["hv-a", "hv-b"].map(|h| create_token(db_path, &["--role", "agent", "--host", h]));
        let store = StoreProc::start_listen(
            None,
            db_path,
            &format!("{STORE_IP}:0"),
            &["--rate-limit", "0"],
        );
        let url = format!("http://{STORE_IP}:{}", store.port());
        TwoHosts {
            a,
            b,
            _fabric: fabric,
            store,
            admin,
            tokens,
            url,
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    /// An admin's call to the store.
    fn call(&self, method: &str, path: &str, body: Option<&str>) -> support::store::Answer {
        Client::new(&self.store.base).call(method, path, Some(&self.admin), body)
    }

    /// The agents of A and B: (config, process, dir) each.
    fn agents(&self) -> [(std::path::PathBuf, AgentProc, std::path::PathBuf); 2] {
        let start = |ns: &Netns, n: usize, name: &str| {
            let dir = self.tmp.path().join(name);
            let (config, proc) = agent(ns, &dir, &self.url, &self.tokens[n], &format!("hv-{name}"));
            (config, proc, dir)
        };
        [start(&self.a, 0, "a"), start(&self.b, 1, "b")]
    }
}

fn migrate_on(db: &str) {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut hosts = TwoHosts::new(db);
    let (a, b) = (&hosts.a, &hosts.b);
    let put = hosts.call(
        "PUT",
        "/v1/instances/777/quota",
        Some(&format!(
            r#"{{"traffic":[{{"resource":"traffic_upload","period":"day","limit":"{LIMIT}","on_exceed":"warn"}}]}}"#
        )),
    );
    assert_eq!(put.status, 200, "{:?}", put.body);

    // Host A carries the instance first.
    let inst_a = Netns::new("fi");
    let tap_a = veth(a, "tap777i0", &inst_a, "eth0", 63);
    let [(config_a, agent_a, dir_a), (config_b, agent_b, dir_b)] = hosts.agents();
    eventually(
        Duration::from_secs(20),
        "A to fetch the store's quota",
        || {
            agent_a
                .log()
                .contains("quota rules from the store rules=1")
                .then_some(())
        },
    );
    upload(&inst_a, &tap_a, 300);
    let here_a = settled(&config_a, "777");
    assert!(here_a > 300_000 && here_a < LIMIT, "A counted {here_a}");
    let on_a = quota(&dir_a).unwrap();
    assert_eq!(
        (on_a.used_bytes, on_a.limit_bytes, on_a.elsewhere_bytes),
        (here_a, LIMIT, 0)
    );

    // The store has A's bytes; then the instance moves to B.
    let usage = |store: &StoreProc, admin: &str| {
        Client::new(&store.base)
            .call(
                "GET",
                "/v1/instances/777/usage?period=day",
                Some(admin),
                None,
            )
            .body["upload"]
            .as_u64()
            .unwrap_or(0)
    };
    eventually(Duration::from_secs(20), "A's report in the store", || {
        (usage(&hosts.store, &hosts.admin) == here_a).then_some(())
    });
    a.ip(&["link", "del", "tap777i0"]);
    let inst_b = Netns::new("fj");
    let tap_b = veth(b, "tap777i0", &inst_b, "eth0", 64);
    // B asks as soon as the instance appears.
    eventually(
        Duration::from_secs(20),
        "B to fetch the store's quota",
        || {
            agent_b
                .log()
                .contains("quota rules from the store rules=1")
                .then_some(())
        },
    );
    // Under the limit together: nothing fires, however many refreshes pass.
    upload(&inst_b, &tap_b, 150);
    let here_b = settled(&config_b, "777");
    assert!(here_a + here_b < LIMIT, "{here_a} + {here_b}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        exceeds(&config_b),
        Vec::<serde_json::Value>::new(),
        "not before the sum passes"
    );
    // A's count is B's "elsewhere".
    let q = quota(&dir_b).unwrap();
    assert_eq!(
        (q.used_bytes, q.elsewhere_bytes),
        (here_a + here_b, here_a),
        "{}",
        agent_b.log()
    );

    // Over it together (B alone is far from it): B fires once, naming A's part.
    upload(&inst_b, &tap_b, 50);
    let total_b = settled(&config_b, "777");
    assert!(
        here_a + total_b > LIMIT && total_b < LIMIT,
        "{here_a} + {total_b}"
    );
    let fired = eventually(Duration::from_secs(10), "the exceed on B", || {
        let e = exceeds(&config_b);
        (!e.is_empty()).then_some(e)
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(exceeds(&config_b).len(), 1, "once");
    assert_eq!(fired[0]["elsewhere_bytes"], here_a);
    let used = fired[0]["used_bytes"].as_u64().unwrap();
    assert!(used > LIMIT && used <= here_a + total_b, "{}", fired[0]);
    assert!(exceeds(&config_a).is_empty(), "A never passed it alone");

    // The store goes away and B restarts meanwhile: the last fleet count (cached on
    // disk) still holds, and the exceed with it.
    let dir_b2 = dir_b.clone();
    let mut agent_b = Some(agent_b);
    hosts.store.away_for(|| {
        assert_eq!(agent_b.take().unwrap().stop(), Some(0));
        let (_, restarted) = agent(b, &dir_b2, &hosts.url, &hosts.tokens[1], "hv-b");
        let q = eventually(
            Duration::from_secs(20),
            "B's count after its restart",
            || quota(&dir_b2).filter(|_| restarted.log().contains("store quotas from the cache")),
        );
        assert_eq!(
            (q.elsewhere_bytes, q.used_bytes, q.exceeded),
            (here_a, here_a + total_b, true),
            "{}",
            restarted.log()
        );
        agent_b = Some(restarted);
    });
    let agent_b = agent_b.unwrap();

    // A top-up for today puts the instance back under its limit: B lifts the exceed
    // within a quota refresh, through the period end's path (a restored event).
    let topup = Client::new(&hosts.store.base).call(
        "POST",
        "/v1/instances/777/traffic/topups",
        Some(&hosts.admin),
        Some(r#"{"resource":"traffic_upload","bytes":"100KB","period":"day"}"#),
    );
    assert_eq!(topup.status, 201, "{:?}", topup.body);
    let restored = eventually(
        Duration::from_secs(10),
        "the top-up to lift it on B",
        || {
            support::events(&config_b)
                .into_iter()
                .find(|e| e["event"] == "rule" && e["rule"] == RULE && e["state"] == "restored")
        },
    );
    assert_eq!(restored["limit_bytes"], LIMIT + 100_000, "{restored}");
    assert_eq!(quota(&dir_b).map(|q| q.exceeded), Some(false));

    // The store's count is both ledgers', to the byte.
    eventually(Duration::from_secs(20), "B's reports in the store", || {
        (usage(&hosts.store, &hosts.admin) == here_a + total_b).then_some(())
    });
    assert_eq!(uploaded(&config_a, "777"), here_a);
    assert_eq!(agent_a.stop(), Some(0));
    assert_eq!(agent_b.stop(), Some(0));
}

/// Two instances of one project, one on each host, share a pooled daily quota: neither
/// host fires while the project's sum is under it (though each sees the other's
/// bytes), and both fire once the sum passes it — on the host whose instance did not
/// move a byte since, too.
#[test]
fn a_projects_pool_trips_on_both_hosts_together() {
    support::require_root();
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("quota.db");
    let hosts = TwoHosts::new(db.to_str().unwrap());
    let pool = r#"{"traffic":[{"resource":"traffic_upload","period":"day","limit":"400000","on_exceed":"warn","pool":true}]}"#;
    assert_eq!(
        hosts.call("PUT", "/v1/projects/shop", Some(pool)).status,
        200
    );
    for i in ["801", "802"] {
        let put = hosts.call(
            "PUT",
            &format!("/v1/instances/{i}/quota"),
            Some(r#"{"project":"shop"}"#),
        );
        assert_eq!(put.status, 200, "{:?}", put.body);
    }
    let (inst_a, inst_b) = (Netns::new("pa"), Netns::new("pb"));
    let tap_a = veth(&hosts.a, "tap801i0", &inst_a, "eth0", 66);
    let tap_b = veth(&hosts.b, "tap802i0", &inst_b, "eth0", 67);
    let [(config_a, agent_a, dir_a), (config_b, agent_b, dir_b)] = hosts.agents();
    let pooled = |dir: &Path, i: &str| {
        let rule = format!("store:day:upload-pool:{i}");
        let snap = state::read(&dir.join("run/state.json")).ok().flatten()?;
        snap.quotas.into_iter().find(|q| q.rule.as_str() == rule)
    };
    let fired = |config: &Path, i: &str| {
        let rule = format!("store:day:upload-pool:{i}");
        support::events(config)
            .into_iter()
            .filter(|e| {
                e["event"] == "rule" && e["rule"] == rule.as_str() && e["state"] == "exceeded"
            })
            .count()
    };
    for agent in [&agent_a, &agent_b] {
        eventually(Duration::from_secs(20), "the pool's rule", || {
            agent
                .log()
                .contains("quota rules from the store rules=1")
                .then_some(())
        });
    }
    upload(&inst_a, &tap_a, 150);
    upload(&inst_b, &tap_b, 150);
    let (here_a, here_b) = (settled(&config_a, "801"), settled(&config_b, "802"));
    let usage = || {
        hosts
            .call("GET", "/v1/projects/shop/usage?period=day", None)
            .body["quotas"][0]["used"]
            .as_u64()
            .unwrap_or(0)
    };
    eventually(
        Duration::from_secs(20),
        "both hosts' reports in the store",
        || (usage() == here_a + here_b).then_some(()),
    );
    // Each host counts the project's sum: its own ledger and the other's report.
    let want = here_a + here_b;
    eventually(
        Duration::from_secs(10),
        "each host to count the pool's sum",
        || {
            let a = pooled(&dir_a, "801")?;
            let b = pooled(&dir_b, "802")?;
            (a.used_bytes == want && b.used_bytes == want).then_some(())
        },
    );
    assert!(want < 400_000, "{want}");
    assert_eq!((fired(&config_a, "801"), fired(&config_b, "802")), (0, 0));
    // More from A alone: the project passes its pool, and B fires as well.
    upload(&inst_a, &tap_a, 100);
    let more_a = settled(&config_a, "801");
    assert!(more_a + here_b > 400_000, "{more_a} + {here_b}");
    eventually(Duration::from_secs(15), "both hosts to fire", || {
        (fired(&config_a, "801") == 1 && fired(&config_b, "802") == 1).then_some(())
    });
    eventually(Duration::from_secs(10), "the store's pool use", || {
        let p = hosts
            .call("GET", "/v1/projects/shop/usage?period=day", None)
            .body;
        (p["quotas"][0]["used"] == more_a + here_b).then_some(())
    });
    let p = hosts
        .call("GET", "/v1/projects/shop/usage?period=day", None)
        .body;
    assert_eq!(p["quotas"][0]["overage"], more_a + here_b - 400_000);
    assert_eq!(agent_a.stop(), Some(0));
    assert_eq!(agent_b.stop(), Some(0));
}

/// A committed rate is judged by the store on every host's curve and obeyed by the
/// agent that runs the instance: today's intervals so far, reported by another host at
/// 40 kbit/s, put instance 901 over its 10 kbit/s commit; the agent on A, which has not
/// counted a byte of it, fires the rule; raising the commit lifts it.
#[test]
fn a_committed_rate_the_store_judges_is_obeyed_by_the_agent() {
    support::require_root();
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("quota.db");
    let hosts = TwoHosts::new(db.to_str().unwrap());
    let old = create_token(&db, &["--role", "agent", "--host", "hv-old"]);
    let quota = |commit: &str| {
        format!(
            r#"{{"traffic":[{{"resource":"rate_95th","period":"day","commit":"{commit}","direction":"upload","on_exceed":"warn"}}]}}"#
        )
    };
    let put = hosts.call("PUT", "/v1/instances/901/quota", Some(&quota("10kbit")));
    assert_eq!(put.status, 200, "{:?}", put.body);
    // Every interval of today that is over, at 40 kbit/s (1.5 MB each): in the first
    // five minutes of a day there is none yet, so wait for the first to end.
    let day_start = |now: jiff::Timestamp| now.as_second() - now.as_second().rem_euclid(86_400);
    let mut now = jiff::Timestamp::now();
    if now.as_second() - day_start(now) < 310 {
        std::thread::sleep(Duration::from_secs(
            (310 - (now.as_second() - day_start(now))) as u64,
        ));
        now = jiff::Timestamp::now();
    }
    let start = day_start(now);
    let over = (now.as_second() - start) / 300;
    let samples: Vec<String> = (0..over)
        .map(|k| {
            let at = jiff::Timestamp::from_second(start + k * 300 + 150).unwrap();
            format!(r#"{{"at":"{at}","instance":"901","upload":1500000,"download":0}}"#)
        })
        .collect();
    let report = format!(
        r#"{{"agent":"hv-old","batches":[{{"seq":1,"samples":[{}]}}]}}"#,
        samples.join(",")
    );
    let sent =
        Client::new(&hosts.store.base).call("POST", "/v1/reports", Some(&old), Some(&report));
    assert_eq!(sent.status, 200, "{:?}", sent.body);
    let usage = hosts.call("GET", "/v1/instances/901/usage?period=day", None);
    let q = &usage.body["quotas"][0];
    assert_eq!(
        (&q["resource"], &q["limit"], &q["direction"]),
        (
            &serde_json::json!("rate_95th"),
            &serde_json::json!(10_000),
            &serde_json::json!("upload")
        )
    );

    // The instance now runs on A: its tap is there, idle.
    let inst = Netns::new("pr");
    let _tap = veth(&hosts.a, "tap901i0", &inst, "eth0", 68);
    let [(config_a, agent_a, dir_a), (_, agent_b, _)] = hosts.agents();
    let rule = "store:day:rate95:901";
    let fired = |state: &str| {
        // The ledger (and its events) appears with the agent's first write.
        if !dir_a.join("lib/ledger.db").exists() {
            return 0;
        }
        support::events(&config_a)
            .into_iter()
            .filter(|e| e["event"] == "rule" && e["rule"] == rule && e["state"] == state)
            .count()
    };
    eventually(
        Duration::from_secs(20),
        "A to fire the store's verdict",
        || (fired("exceeded") == 1).then_some(()),
    );
    let record = state::read(&dir_a.join("run/state.json"))
        .unwrap()
        .unwrap()
        .quotas
        .into_iter()
        .find(|q| q.rule.as_str() == rule)
        .unwrap();
    assert!(record.judged && record.exceeded, "{record:?}");
    assert_eq!(record.limit_bytes, 0);
    // A commit of a gigabit: the store's next answer lifts it.
    let put = hosts.call("PUT", "/v1/instances/901/quota", Some(&quota("1gbit")));
    assert_eq!(put.status, 200, "{:?}", put.body);
    eventually(Duration::from_secs(20), "A to lift it", || {
        (fired("restored") == 1).then_some(())
    });
    assert_eq!(fired("exceeded"), 1, "fired once");
    assert_eq!(agent_a.stop(), Some(0));
    assert_eq!(agent_b.stop(), Some(0));
}

#[test]
fn a_migrated_instance_is_held_to_its_fleet_count_on_sqlite() {
    support::require_root();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("quota.db");
    migrate_on(db.to_str().unwrap());
}

#[test]
fn a_migrated_instance_is_held_to_its_fleet_count_on_postgres() {
    support::require_root();
    let pg = support::postgres::Postgres::start();
    migrate_on(&pg.database());
}
