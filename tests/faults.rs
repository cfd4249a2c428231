//! Kill -9 at random moments: an agent counting real traffic both ways, spooling it for
//! a quota store, with a quota rule whose action is a hook, is killed again and again
//! (at uniformly random moments after its start, and at the crash points inside a
//! tick's commit), then run to the end. The figures, printed and asserted:
//!
//! - bytes lost or counted twice, ledger against the kernel's counters, each direction: 0;
//! - bytes the store is missing or has twice, against the ledger: 0;
//! - hook runs per exceed: at most 1 (the README's promise: at most once, never twice).
//!
//! The test command runs 20 kills; `scripts/faults` runs 200
//! (`SLUICE_FAULT_KILLS=200`). Each run prints its seed; `SLUICE_FAULT_SEED` repeats one.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use jiff::Timestamp;

use support::http::request;
use support::store::{StoreProc, create_token};
use support::{AgentProc, Netns, eventually, run_in, veth};

/// A small deterministic generator (xorshift64*): the kill moments, from a printed seed.
struct Moments(u64);

impl Moments {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in [lo, hi) milliseconds.
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo))
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// UDP from `ns` to `dst` at about `bps` until `stop`: returns datagrams sent.
fn stream(ns: String, dst: std::net::Ipv4Addr, bps: u64, stop: Arc<AtomicBool>) -> u64 {
    run_in(&ns, move || {
        let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        let buf = [0x5au8; 900];
        let gap = Duration::from_secs_f64((900.0 + 42.0) * 8.0 / bps as f64);
        let (start, mut sent) = (Instant::now(), 0u32);
        // Bounded whatever happens: ten minutes at most.
        while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(600) {
            if let Some(wait) = (start + gap * sent).checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if sock.send_to(&buf, (dst, 9)).is_ok() {
                sent += 1;
            }
        }
        u64::from(sent)
    })
}

/// A script at `path` with `body`, executable.
fn executable(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn write_config(dir: &Path, store: &str, token: &str, hook: &Path) -> std::path::PathBuf {
    let config = dir.join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[agent]
interval = "1s"
interfaces = ['^tap(?P<instance>[0-9]+)i[0-9]+$']
backend = "tc"
enforce_base = false
state_dir = "{run}"
data_dir = "{run}/lib"
listen = ""
[log]
dir = ""
[penalty]
base_rate = "1000mbit"
[[rule]]
name = "cap"
period = "month"
timezone = "UTC"
limit = "1MB"
action = "shutdown"
[hooks]
shutdown = ["{hook}", "{{instance}}"]
timeout = "10s"
[store]
url = "{store}"
token = "{token}"
host = "hv-k"
"#,
            run = dir.join("run").display(),
            hook = hook.display(),
        ),
    )
    .unwrap();
    config
}

#[test]
fn kill_9_at_random_moments_loses_nothing_and_counts_nothing_twice() {
    support::require_root();
    let kills = env_u64("SLUICE_FAULT_KILLS").unwrap_or(20);
    let seed = env_u64("SLUICE_FAULT_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1
    });
    println!("kill -9: {kills} kills, SLUICE_FAULT_SEED={seed}");
    let mut moments = Moments(seed);

    let host = Netns::new("fh");
    let inst = Netns::new("fi");
    let link = veth(&host, "tap701i0", &inst, "eth0", 97);
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("quota.db");
    let token = create_token(&db, &["--role", "agent", "--host", "hv-k"]);
    let admin = create_token(&db, &["--role", "admin"]);
    let store = StoreProc::start_in(Some(&host.name), &db, &[]);
    let hook = tmp.path().join("hook.sh");
    executable(
        &hook,
        "#!/bin/sh\necho \"$1\" >> \"$(dirname \"$0\")/hook.log\"\n",
    );
    let config = write_config(tmp.path(), &store.base, &token, &hook);

    // Life 0 takes the baseline while nothing has crossed the link (what crossed before
    // the first sight belongs to no period), then dies like the others.
    assert_eq!(host.sysfs_counter("tap701i0", "rx_bytes"), 0);
    let first = AgentProc::start(&host, &config, tmp.path().join("agent-first.log"));
    let state = tmp.path().join("run/state.json");
    eventually(
        Duration::from_secs(15),
        "the first sight of the tap",
        || {
            let snap = sluice::state::read(&state).ok().flatten()?;
            snap.interfaces
                .iter()
                .any(|r| r.interface.as_str() == "tap701i0")
                .then_some(())
        },
    );
    assert_eq!(host.sysfs_counter("tap701i0", "rx_bytes"), 0);
    first.signal(libc::SIGKILL);
    drop(first);

    // Both directions at once, ~2 Mbit/s each, until the kills are over.
    let stop = Arc::new(AtomicBool::new(false));
    let up = {
        let (ns, dst, stop) = (inst.name.clone(), link.a_ip, stop.clone());
        std::thread::spawn(move || stream(ns, dst, 2_000_000, stop))
    };
    let down = {
        let (ns, dst, stop) = (host.name.clone(), link.b_ip, stop.clone());
        std::thread::spawn(move || stream(ns, dst, 2_000_000, stop))
    };

    // The crash points inside a tick, in turn with random moments: (point, hit).
    let points = ["ledger-before-commit", "before-rename", "before-hook"];
    let mut at_points = 0;
    for k in 0..kills {
        let log = tmp.path().join(format!("agent{k}.log"));
        if k % 4 == 3 {
            // Dies by itself at its `hit`th pass through the point (a tick's commit, the
            // state file's rename, or the exceed's hook if it comes in that life).
            let point = points[(k / 4) as usize % points.len()];
            let hit = 1 + moments.next() % 3;
            let spec = format!("{point}@{hit}");
            let mut agent =
                AgentProc::start_with_env(&host, &config, log, &[("SLUICE_CRASH_AT", &spec)]);
            let deadline = Instant::now() + Duration::from_secs(8);
            while Instant::now() < deadline && agent.child.try_wait().unwrap().is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
            if agent.child.try_wait().unwrap().is_some() {
                at_points += 1;
            } else {
                agent.signal(libc::SIGKILL);
            }
            drop(agent);
        } else {
            let agent = AgentProc::start(&host, &config, log);
            std::thread::sleep(moments.millis(0, 2500));
            agent.signal(libc::SIGKILL);
            drop(agent);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (sent_up, sent_down) = (up.join().unwrap(), down.join().unwrap());
    assert!(
        sent_up > 1000 && sent_down > 1000,
        "{sent_up} / {sent_down} sent"
    );

    // The last life runs to the end: the ledger must reach the kernel's counters exactly
    // and stay there, and the store the ledger's.
    let agent = AgentProc::start(&host, &config, tmp.path().join("agent-last.log"));
    let kernel = (
        host.sysfs_counter("tap701i0", "rx_bytes"),
        host.sysfs_counter("tap701i0", "tx_bytes"),
    );
    let ledger = || support::ledger_totals(&config, "--interface", "tap701i0");
    let caught_up = eventually(
        Duration::from_secs(20),
        "the ledger to reach the kernel",
        || {
            let l = ledger();
            (l.0 >= kernel.0 && l.1 >= kernel.1).then_some(l)
        },
    );
    std::thread::sleep(Duration::from_millis(2500));
    let settled = ledger();
    let store_usage = || {
        let (code, body) = request(
            &host,
            store.port(),
            "GET",
            "/v1/instances/701/usage?period=month",
            Some(&admin),
        );
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        (
            v["upload"].as_u64().unwrap_or(0),
            v["download"].as_u64().unwrap_or(0),
        )
    };
    let in_store = eventually(Duration::from_secs(30), "the store to catch up", || {
        let s = store_usage();
        (s == settled).then_some(s)
    });
    let hook_runs = std::fs::read_to_string(tmp.path().join("hook.log"))
        .unwrap_or_default()
        .lines()
        .count();
    let events = support::events(&config);
    let exceeds = events
        .iter()
        .filter(|e| e["event"] == "rule" && e["rule"] == "cap" && e["state"] == "exceeded")
        .count();
    // Each run of the hook is logged as a `hook` event after it ends (one killed while
    // its hook ran has none): never more than the hook's own count.
    let hook_events = events.iter().filter(|e| e["event"] == "hook").count();
    let diff = |a: u64, b: u64| a as i128 - b as i128;
    println!(
        "kills survived: {kills} ({at_points} at crash points inside a tick)\n\
         ledger - kernel: upload {:+} B, download {:+} B (of {} / {} B)\n\
         store - ledger:  upload {:+} B, download {:+} B\n\
         exceeds: {exceeds}, hook runs: {hook_runs} ({hook_events} logged)",
        diff(settled.0, kernel.0),
        diff(settled.1, kernel.1),
        kernel.0,
        kernel.1,
        diff(in_store.0, settled.0),
        diff(in_store.1, settled.1),
    );
    assert_eq!(caught_up, settled, "nothing counted after it caught up");
    assert_eq!(
        settled, kernel,
        "the ledger holds the kernel's bytes exactly"
    );
    assert_eq!(
        in_store, settled,
        "the store holds the ledger's bytes exactly"
    );
    assert_eq!(exceeds, 1, "one exceed in the month");
    assert!(hook_runs <= 1, "at most once: {hook_runs} runs");
    assert!(
        hook_events <= hook_runs,
        "{hook_events} hook events, {hook_runs} runs"
    );
    assert_eq!(agent.stop(), Some(0));
}

/// A tmpfs mounted over `dir`, unmounted (lazily, by path) on drop.
struct Tmpfs {
    dir: std::path::PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        support::sh(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                dir.to_str().unwrap(),
            ],
        );
        Tmpfs {
            dir: dir.to_owned(),
        }
    }
    /// Fill what is left with one file: the next block anyone asks for is ENOSPC.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.dir.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
        // Whatever a partial write left: byte by byte to the last one.
        while f.write(&[0]).is_ok_and(|n| n == 1) {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
    }
}

#[test]
fn a_full_data_directory_loses_nothing_and_the_ledger_catches_up() {
    support::require_root();
    let host = Netns::new("fr");
    let inst = Netns::new("fs");
    let link = veth(&host, "tap702i0", &inst, "eth0", 98);
    let tmp = tempfile::tempdir().unwrap();
    let data = Tmpfs::mount(&tmp.path().join("lib"), "16m");
    let config = tmp.path().join("sluice.toml");
    const PORT: u16 = 9486;
    std::fs::write(
        &config,
        format!(
            r#"
[agent]
interval = "1s"
interfaces = ['^tap(?P<instance>[0-9]+)i[0-9]+$']
backend = "tc"
state_dir = "{run}"
data_dir = "{lib}"
listen = "127.0.0.1:{PORT}"
[log]
dir = ""
[penalty]
base_rate = "100mbit"
"#,
            run = tmp.path().join("run").display(),
            lib = data.dir.display(),
        ),
    )
    .unwrap();
    let agent = AgentProc::start(&host, &config, tmp.path().join("agent.log"));
    support::http::wait_healthy(&host, PORT, Duration::from_secs(15));
    let kernel = || {
        (
            host.sysfs_counter("tap702i0", "rx_bytes"),
            host.sysfs_counter("tap702i0", "tx_bytes"),
        )
    };
    let ledger = || support::ledger_totals(&config, "--interface", "tap702i0");
    let both_ways = |n: u64| {
        let (a, b) = (inst.name.clone(), host.name.clone());
        let (to_host, to_inst) = (link.a_ip, link.b_ip);
        let up = std::thread::spawn(move || {
            support::send_udp(&a, to_host, 1000, n, 8_000_000, Duration::from_secs(5))
        });
        let down = support::send_udp(&b, to_inst, 1000, n, 8_000_000, Duration::from_secs(5));
        assert_eq!((up.join().unwrap(), down), (n, n));
    };
    both_ways(500);
    eventually(Duration::from_secs(10), "the ledger to count it", || {
        (ledger() == kernel()).then_some(())
    });
    let committed = ledger();

    // The data directory fills up under the running agent: its commits fail once the
    // WAL needs a block (a checkpoint that cannot grow the database keeps it growing).
    let filler = data.fill();
    both_ways(1500);
    let status = || support::http::get_json(&host, PORT, "/v1/status");
    let failing = eventually(
        Duration::from_secs(10),
        "the ledger reported failing",
        || {
            let s = status();
            s["ledger"]["failing_since"].is_string().then_some(s)
        },
    );
    assert!(failing["ledger"]["last_error"].is_string(), "{failing}");
    // Ticks go on (enforcement with them) while nothing can be written.
    let tick = |s: &serde_json::Value| s["last_tick"].as_str().unwrap().to_owned();
    let before = tick(&failing);
    let later = eventually(Duration::from_secs(5), "another tick", || {
        let s = status();
        (tick(&s) != before).then_some(s)
    });
    assert!(later["ledger"]["failing_since"].is_string(), "{later}");
    let (code, metrics) = support::http::request(&host, PORT, "GET", "/metrics", None);
    assert_eq!(code, 200);
    assert!(
        metrics.lines().any(|l| l == "sluice_ledger_failing 1"),
        "{metrics}"
    );
    assert!(
        agent
            .log()
            .contains("this tick's traffic is counted at the next commit"),
        "{}",
        agent.log()
    );
    let while_ro = kernel();
    assert!(
        while_ro.0 > committed.0 + 1_400_000,
        "{while_ro:?} vs {committed:?}"
    );

    // Space again: the next commit counts everything since the last one, exactly.
    std::fs::remove_file(&filler).unwrap();
    let started = Instant::now();
    eventually(Duration::from_secs(15), "the ledger to catch up", || {
        (ledger() == kernel()).then_some(())
    });
    let caught_up = started.elapsed();
    let s = eventually(Duration::from_secs(5), "failing cleared", || {
        let s = status();
        s["ledger"]["failing_since"].is_null().then_some(s)
    });
    let failures = s["ledger"]["failures"].as_u64().unwrap();
    assert!(failures >= 2, "{s}");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(ledger(), kernel(), "nothing counted twice after");
    println!(
        "full data directory: {failures} failed commits, ledger - kernel 0 B / 0 B, caught up {:.1} s after space returned",
        caught_up.as_secs_f64()
    );
    assert_eq!(agent.stop(), Some(0));
}

#[test]
fn a_blackholed_store_and_webhook_and_a_hook_that_never_exits_hold_no_tick_back() {
    support::require_root();
    let host = Netns::new("fb");
    let inst = Netns::new("fc");
    let link = veth(&host, "tap703i0", &inst, "eth0", 99);
    let tmp = tempfile::tempdir().unwrap();
    // A listener nobody accepts from: connections complete and then hear nothing, ever.
    let blackhole = host.run(|| std::net::TcpListener::bind("127.0.0.1:9491").unwrap());
    let token = create_token(
        &tmp.path().join("unused.db"),
        &["--role", "agent", "--host", "hv-b"],
    );
    // The hook records its pid (to be killed by it at the end), then never exits.
    let hook = tmp.path().join("hook.sh");
    let hook_pid = tmp.path().join("hook.pid");
    executable(
        &hook,
        &format!(
            "#!/bin/sh\necho $$ > {}\nexec sleep 600\n",
            hook_pid.display()
        ),
    );
    const PORT: u16 = 9487;
    let config = tmp.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[agent]
interval = "1s"
interfaces = ['^tap(?P<instance>[0-9]+)i[0-9]+$']
backend = "tc"
enforce_base = false
state_dir = "{run}"
data_dir = "{run}/lib"
listen = "127.0.0.1:{PORT}"
[log]
dir = ""
[penalty]
base_rate = "1000mbit"
[[rule]]
name = "cap"
period = "month"
timezone = "UTC"
limit = "1MB"
action = "shutdown"
[hooks]
shutdown = ["{hook}"]
timeout = "120s"
[[webhook]]
url = "http://127.0.0.1:9491/events"
timeout = "60s"
[store]
url = "http://127.0.0.1:9491"
token = "{token}"
host = "hv-b"
quota_refresh = "1s"
"#,
            run = tmp.path().join("run").display(),
            hook = hook.display(),
        ),
    )
    .unwrap();
    let agent = AgentProc::start(&host, &config, tmp.path().join("agent.log"));
    support::http::wait_healthy(&host, PORT, Duration::from_secs(15));
    let sent = support::send_udp(
        &inst.name,
        link.a_ip,
        1000,
        2000,
        8_000_000,
        Duration::from_secs(5),
    );
    assert_eq!(sent, 2000);
    eventually(Duration::from_secs(10), "the hook started", || {
        std::fs::read_to_string(&hook_pid)
            .ok()?
            .trim()
            .parse::<i32>()
            .ok()
    });

    // Twelve seconds of ticks with all three hanging: the gap between ticks, seen from
    // outside every 100 ms.
    let status = || support::http::get_json(&host, PORT, "/v1/status");
    let (mut ticks, mut worst_took) = (Vec::<Timestamp>::new(), 0.0f64);
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until {
        let s = status();
        let at: Timestamp = s["last_tick"].as_str().unwrap().parse().unwrap();
        if ticks.last() != Some(&at) {
            ticks.push(at);
            worst_took = worst_took.max(s["last_tick_ms"].as_f64().unwrap());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let worst_gap = ticks
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).as_secs_f64() * 1e3)
        .fold(0.0f64, f64::max);
    let s = status();
    println!(
        "blackholed store and webhook, hook never exiting: {} ticks in 12 s, worst gap between ticks {worst_gap:.0} ms (interval 1000 ms), longest tick {worst_took:.1} ms; store: {}",
        ticks.len(),
        s["store"]
    );
    // Still hanging, all of them: the hook has not ended, nothing reached the store.
    let pid: i32 = std::fs::read_to_string(&hook_pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the hook still runs"
    );
    assert!(s["store"]["last_report"].is_null(), "{s}");
    assert!(ticks.len() >= 10, "{} ticks", ticks.len());
    assert!(worst_gap <= 1500.0, "worst gap {worst_gap} ms");
    assert!(worst_took < 500.0, "longest tick {worst_took} ms");
    // SAFETY: kill(2) on the hook's own pid, which it wrote.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    drop(blackhole);
    assert_eq!(agent.stop(), Some(0));
}
