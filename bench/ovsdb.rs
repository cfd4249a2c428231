//! The OVS backend's two OVSDB clients side by side, each figure beside a baseline from
//! the same run. Needs root (network namespaces, a private ovsdb-server).
//!
//!   cargo bench --bench ovsdb            # 1,000 and 10,000 ports
//!   cargo bench --bench ovsdb -- quick   # 1,000 ports, fewer rounds
//!   cargo bench --bench ovsdb -- ports=N # N ports only
//!   cargo bench --bench ovsdb -- ports=N rss # the agent's peak RSS only
//!
//! 1. One agent tick with nothing to change (read, plan, state) on backend `ovs` with the
//!    native session, against the same tick on backend `none` and against one
//!    `ovs-vsctl list Interface` (what the `vsctl` client forks every tick).
//!    Targets: ≥ 20× cheaper than the listing; within 2× of the `none` tick.
//! 2. 1,000 limit changes reconciled (written in one `transact`, read back from the
//!    replica) against the same through ovs-vsctl (one batched `set` call and its
//!    listings). Target: ≥ 5× faster.
//! 3. Peak RSS of `sluice agent` at 10,000 OVS ports (every one limited), against the
//!    same agent on backend `none`.
//!
//! The kernel's policer check is left out of both (ticks want no limit in part 1; part 2
//! runs the backend without it): it costs the same whichever client reads OVSDB.

#[path = "common.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{KillOnDrop, median, release_binary, status_kb};
use sluice::config::OvsClientKind;
use sluice::enforce::{Enforcement, OvsBackend, OvsConfig, Wanted};
use sluice::model::ids::{IfName, InstanceId};
use sluice::model::units::Rate;
use sluice::policy::{Burst, Limit, Reason, Verdict};
use support::{Netns, Ovs};

/// `n` ports kvm{i}.0 on bridge br0, as links in the namespace and rows in OVSDB.
fn ports(ns: &Netns, ovs: &Ovs, n: usize) {
    let names: Vec<String> = (0..n).map(|i| format!("kvm{i}.0")).collect();
    ns.add_cheap_links(&names);
    let mut args: Vec<String> = vec!["--no-wait".into(), "add-br".into(), "br0".into()];
    for name in &names {
        args.extend(["--".into(), "add-port".into(), "br0".into(), name.clone()]);
    }
    ovs.vsctl(&args.iter().map(String::as_str).collect::<Vec<_>>());
    eprintln!("  {n} ports in {} and its OVSDB", ns.name);
}

fn config_text(dir: &Path, backend: &str, db: &str, enforce_base: bool) -> String {
    format!(
        "[agent]\ninterval=\"60s\"\ninterfaces=['^kvm(?P<instance>[0-9]+)\\..*$']\nbackend=\"{backend}\"\novsdb=\"{db}\"\nenforce_base={enforce_base}\nstate_dir=\"{0}\"\ndata_dir=\"{0}/lib\"\n[log]\ndir=\"\"\n[penalty]\nbase_rate=\"1gbit\"\n",
        dir.display()
    )
}

/// Median idle tick of an agent on `backend` (nothing to change, no state rewrite).
fn idle_tick(ns: &Netns, backend: &'static str, db: String, n: usize, runs: usize) -> Duration {
    let state = tempfile::tempdir_in("/dev/shm").unwrap();
    let dir = state.path().to_owned();
    ns.run(move || {
        let text = config_text(&dir, backend, &db, false);
        let config = sluice::config::Config::parse(Path::new("bench.toml"), &text)
            .unwrap()
            .config;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut agent = sluice::daemon::Agent::start(Path::new("bench.toml"), config).unwrap();
            agent.tick().await;
            agent.tick().await;
            let mut t = Vec::with_capacity(runs);
            for _ in 0..runs {
                let s = Instant::now();
                agent.tick().await;
                t.push(s.elapsed());
            }
            t.sort();
            let snap = sluice::state::read(&dir.join("state.json"))
                .unwrap()
                .unwrap();
            assert_eq!(snap.interfaces.len(), n, "every port in the state");
            if backend == "ovs" {
                let applied = snap
                    .interfaces
                    .iter()
                    .filter(|r| {
                        r.enforcement
                            .as_ref()
                            .is_some_and(|e| *e == Enforcement::Applied)
                    })
                    .count();
                assert_eq!(applied, n, "every port verified against OVSDB");
            }
            t[runs / 2]
        })
    })
}

fn verdict(ifindex: u32, kbps: u64) -> Verdict {
    let rate = Rate::from_kbps(kbps);
    Verdict {
        instance: InstanceId::new(&ifindex.to_string()).unwrap(),
        ifindex,
        stage: 0,
        upload: Some(Limit {
            rate,
            burst: Burst::for_rate(rate, None),
        }),
        download: None,
        reason: Reason::Base,
        packets: None,
        download_reason: Reason::Unlimited,
        rule: None,
        disconnect: false,
        until: None,
    }
}

/// Median times of reconciling `n` ports to new limits (every one changes each round),
/// and of reconciling them when nothing changed (the backend's share of an idle tick).
fn changes(db: &str, client: OvsClientKind, n: usize, runs: usize) -> (Duration, Duration) {
    let names: Vec<IfName> = (0..n)
        .map(|i| IfName::new(&format!("kvm{i}.0")).unwrap())
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut backend = OvsBackend::new(
            OvsConfig {
                ovs_vsctl: "ovs-vsctl".into(),
                db: Some(db.to_owned()),
                timeout: Duration::from_secs(60),
                client,
            },
            None,
        );
        let mut t = Vec::with_capacity(runs);
        let mut idle = Vec::with_capacity(runs);
        for round in 0..=runs {
            let verdicts: Vec<Verdict> = (0..n)
                .map(|i| verdict(i as u32 + 1, 100_000 + 1_000 * round as u64 + i as u64))
                .collect();
            let wanted: Vec<Wanted> = names
                .iter()
                .zip(&verdicts)
                .map(|(interface, verdict)| Wanted {
                    interface,
                    verdict,
                    hypervisor: false,
                })
                .collect();
            let s = Instant::now();
            let result = backend.reconcile(&wanted).await;
            let took = s.elapsed();
            assert!(
                result.iter().all(|e| *e == Enforcement::Applied),
                "every change read back: {:?}",
                result.iter().find(|e| **e != Enforcement::Applied)
            );
            if round > 0 {
                t.push(took); // round 0 also connects the session
            }
            let s = Instant::now();
            let again = backend.reconcile(&wanted).await;
            idle.push(s.elapsed());
            assert_eq!(again, result, "nothing changed");
        }
        t.sort();
        idle.sort();
        (t[runs / 2], idle[runs / 2])
    })
}

/// Peak RSS (kB) of `sluice agent` on `backend` at `n` ports after ten 1 s ticks.
fn peak_rss_kb(ns: &Netns, db: &str, backend: &str, n: usize) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("sluice.toml");
    let text = config_text(dir.path(), backend, db, true).replace("\"60s\"", "\"1s\"");
    std::fs::write(&cfg, text).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(release_binary())
        .args(["agent", "--config"])
        .arg(&cfg)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    std::thread::sleep(Duration::from_secs(10));
    assert!(child.0.try_wait().unwrap().is_none(), "agent exited early");
    let snap = sluice::state::read(&dir.path().join("state.json"))
        .unwrap()
        .expect("agent wrote its state");
    assert_eq!(snap.interfaces.len(), n);
    let hwm = status_kb(child.0.id(), "VmHWM:");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    let _ = child.0.wait();
    hwm
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "the benchmark needs root");
    let quick = std::env::args().any(|a| a == "quick");
    let only: Option<usize> = std::env::args().find_map(|a| a.strip_prefix("ports=")?.parse().ok());
    let sizes: Vec<usize> = match only {
        Some(n) => vec![n],
        None if quick => vec![1_000],
        None => vec![1_000, 10_000],
    };
    let runs = if quick { 5 } else { 21 };
    // `rss`: the agent's peak RSS only (the timings at 10,000 ports take minutes).
    let rss_only = std::env::args().any(|a| a == "rss");
    for &n in &sizes {
        let ns = Netns::new(&format!("od{n}"));
        let ovs = Ovs::start_db(&ns.name);
        ports(&ns, &ovs, n);
        println!("## {n} OVS ports");
        if rss_only {
            print_rss(&ns, &ovs.db, n);
            continue;
        }
        let list = median(if quick { 3 } else { 7 }, || {
            let out = ovs.vsctl(&[
                "--format=json",
                "--columns=name,ingress_policing_rate,ingress_policing_burst,external_ids",
                "list",
                "Interface",
            ]);
            assert!(out.len() > n * 10);
        });
        let none = idle_tick(&ns, "none", ovs.db.clone(), n, runs);
        let native = idle_tick(&ns, "ovs", ovs.db.clone(), n, runs);
        println!(
            "idle tick, native OVSDB {}  backend none {}  ovs-vsctl list Interface {}",
            ms(native),
            ms(none),
            ms(list)
        );
        println!(
            "  listing / native tick = {:.1}x   native tick / none tick = {:.2}x (target <= 2x)",
            list.as_secs_f64() / native.as_secs_f64(),
            native.as_secs_f64() / none.as_secs_f64()
        );
        let r = if quick { 3 } else { 7 };
        let (native_changes, native_idle) = changes(&ovs.db, OvsClientKind::Native, n, r);
        let (vsctl_changes, vsctl_idle) = changes(&ovs.db, OvsClientKind::Vsctl, n, r);
        println!(
            "the backend's idle reconcile (read, plan, no write): native {}  vsctl {}  listing / native = {:.1}x (target >= 20x)",
            ms(native_idle),
            ms(vsctl_idle),
            list.as_secs_f64() / native_idle.as_secs_f64()
        );
        if n == 1_000 {
            let (native, vsctl) = (native_changes, vsctl_changes);
            println!(
                "1,000 limit changes reconciled: one transact {}  ovs-vsctl (batched set + listings) {}  = {:.1}x (target >= 5x)",
                ms(native),
                ms(vsctl),
                vsctl.as_secs_f64() / native.as_secs_f64()
            );
        }
        if n == *sizes.last().unwrap() {
            print_rss(&ns, &ovs.db, n);
        }
    }
}

fn print_rss(ns: &Netns, db: &str, n: usize) {
    let ovs_kb = peak_rss_kb(ns, db, "ovs", n);
    let none_kb = peak_rss_kb(ns, db, "none", n);
    println!(
        "peak RSS of sluice agent at {n} ports, every one limited: {:.1} MB on native OVSDB  vs {:.1} MB on backend none = {:.2}x",
        ovs_kb as f64 / 1024.0,
        none_kb as f64 / 1024.0,
        ovs_kb as f64 / none_kb as f64
    );
}
