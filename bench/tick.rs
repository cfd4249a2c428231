//! Benchmarks for the agent spine, each printed as a ratio against a baseline measured in
//! the same run. Needs root (it builds network namespaces and a private ovsdb-server).
//!
//!   cargo bench --bench tick            # everything
//!   cargo bench --bench tick -- quick   # 1,000 interfaces only, 100 OVS calls
//!   cargo bench --bench tick -- rss     # only the memory measurement, 10,000 interfaces
//!   cargo bench --bench tick -- ticks   # only the tick measurements (for profiling)
//!
//! 1. One agent tick (netlink stats dump + policy + state write) at 1,000 and 10,000
//!    interfaces, against (a) the bare RTM_GETSTATS dump, (b) reading /proc/net/dev,
//!    (c) `ovs-vsctl --format=json list Interface` at 1,000 OVS ports.
//! 2. 1,000 policing changes in one batched ovs-vsctl call against 1,000 separate calls.
//! 3. Peak RSS of `sluice agent` watching 10,000 interfaces.

#[path = "common.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{KillOnDrop, median, release_binary, status_kb};
use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST, NetlinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::stats::{StatsFilterMask, StatsMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use support::{Netns, Ovs};

/// `n` cheap links named kvm{i}.0.
fn add_links(ns: &Netns, n: usize) {
    let names: Vec<String> = (0..n).map(|i| format!("kvm{i}.0")).collect();
    ns.add_cheap_links(&names);
    eprintln!("  created {n} links in {}", ns.name);
}

/// The floor: one RTM_GETSTATS dump on a plain socket, messages counted, nothing parsed.
fn bare_stats_dump(sock: &Socket, buf: &mut Vec<u8>) -> usize {
    let mut req = StatsMessage::default();
    req.header.filter_mask = StatsFilterMask::Link64;
    let mut msg = NetlinkMessage::from(RouteNetlinkMessage::GetStats(req));
    msg.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    msg.finalize();
    let mut out = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut out);
    sock.send(&out, 0).unwrap();
    let mut count = 0;
    loop {
        buf.clear();
        sock.recv(buf, 0).unwrap();
        let mut off = 0;
        while off + 16 <= buf.len() {
            let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
            let kind = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().unwrap());
            if kind == 3 {
                return count; // NLMSG_DONE
            }
            assert_ne!(kind, 2, "netlink error in dump");
            count += 1;
            off += (len + 3) & !3;
        }
    }
}

struct TickTimes {
    bare: Duration,
    proc: Duration,
    sample: Duration,
    policy: Duration,
    tick: Duration,
    idle_tick: Duration,
}

fn tick_bench(n: usize, runs: usize) -> TickTimes {
    let ns = Netns::new(&format!("t{n}"));
    add_links(&ns, n);
    // Production keeps state in /run, a tmpfs; /dev/shm is the tmpfs every machine has.
    let state = tempfile::tempdir_in("/dev/shm").unwrap();
    let state_dir = state.path().to_owned();
    let times = ns.run(move || {
        let mut sock = Socket::new(NETLINK_ROUTE).unwrap();
        sock.bind(&SocketAddr::new(0, 0)).unwrap();
        sock.set_rx_buf_sz(4 << 20).unwrap();
        let mut buf = Vec::with_capacity(1 << 20);
        assert!(bare_stats_dump(&sock, &mut buf) >= n);
        let cfg_text = format!(
            "[agent]\ninterval=\"60s\"\ninterfaces=['^kvm(?P<instance>[0-9]+)\\..*$']\nbackend=\"none\"\nstate_dir=\"{0}\"\ndata_dir=\"{0}/lib\"\n[log]\ndir=\"\"\n[penalty]\nbase_rate=\"1gbit\"\n",
            state_dir.display()
        );
        let config = sluice::config::Config::parse(Path::new("bench.toml"), &cfg_text).unwrap().config;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let mut sampler = sluice::sample::LinkSampler::open().unwrap();
            let samples = sampler.sample().unwrap();
            let mut policy = sluice::policy::Policy::new();
            let mut agent = sluice::daemon::Agent::start(Path::new("bench.toml"), config.clone()).unwrap();
            agent.tick().await;
            // Every measurement once per round, so all of them see the same machine state
            // (the bare dump's own time drifts by 2-3x between runs at 10,000 links).
            let mut m: [Vec<Duration>; 6] = Default::default();
            for round in 0..runs {
                let time = |f: &mut dyn FnMut()| {
                    let s = Instant::now();
                    f();
                    s.elapsed()
                };
                m[0].push(time(&mut || {
                    bare_stats_dump(&sock, &mut buf);
                }));
                m[1].push(time(&mut || {
                    let text = std::fs::read_to_string("/proc/thread-self/net/dev").unwrap();
                    assert!(text.lines().count() > n);
                }));
                m[2].push(time(&mut || {
                    sampler.sample().unwrap();
                }));
                m[3].push(time(&mut || {
                    policy.tick(&config, &samples, sluice::policy::Tick::simulated(60.0 * round as f64));
                    assert_eq!(policy.verdicts(&config).len(), n);
                }));
                // A tick that rewrites state.json (as every tick does on a host with traffic)...
                agent.invalidate_state();
                let s = Instant::now();
                agent.tick().await;
                m[4].push(s.elapsed());
                // ...and one where nothing changed, so nothing is written.
                let s = Instant::now();
                agent.tick().await;
                m[5].push(s.elapsed());
            }
            let [bare, proc, sample, policy, tick, idle_tick] = m.map(|mut v| {
                v.sort();
                v[v.len() / 2]
            });
            TickTimes {
                bare,
                proc,
                sample,
                policy,
                tick,
                idle_tick,
            }
        })
    });
    let snap = sluice::state::read(&state.path().join("state.json"))
        .unwrap()
        .unwrap();
    assert_eq!(snap.interfaces.len(), n, "every interface in the state");
    times
}

fn ovs_benches(ports: usize, separate: usize) -> (Duration, Duration, Duration) {
    let ns = Netns::new("ovs");
    let ovs = Ovs::start_db(&ns.name);
    let mut args: Vec<String> = vec!["--no-wait".into(), "add-br".into(), "br0".into()];
    for i in 0..ports {
        args.extend([
            "--".into(),
            "add-port".into(),
            "br0".into(),
            format!("kvm{i}.0"),
        ]);
    }
    ovs.vsctl(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let list = median(5, || {
        let out = ovs.vsctl(&[
            "--format=json",
            "--columns=name,ingress_policing_rate,ingress_policing_burst",
            "list",
            "Interface",
        ]);
        assert!(out.len() > ports * 10);
    });
    // Batched: every change in one call, as the OVS backend does it.
    let mut batch: Vec<String> = vec!["--no-wait".into()];
    for i in 0..ports {
        batch.extend([
            "--".into(),
            "set".into(),
            "interface".into(),
            format!("kvm{i}.0"),
            format!("ingress_policing_rate={}", 900_000 + i),
            "ingress_policing_burst=90000".into(),
        ]);
    }
    let s = Instant::now();
    ovs.vsctl(&batch.iter().map(String::as_str).collect::<Vec<_>>());
    let batched = s.elapsed();
    let s = Instant::now();
    for i in 0..separate {
        let name = format!("kvm{i}.0");
        let rate = format!("ingress_policing_rate={}", 800_000 + i);
        ovs.vsctl(&[
            "--no-wait",
            "set",
            "interface",
            &name,
            &rate,
            "ingress_policing_burst=80000",
        ]);
    }
    let separate_total = s.elapsed() * (ports as u32) / (separate as u32);
    (list, batched, separate_total)
}

/// (peak RSS, anonymous RSS, file-backed RSS) in kB, from /proc/PID/status.
fn peak_rss_kb(n: usize) -> (u64, u64, u64) {
    let ns = Netns::new("rss");
    add_links(&ns, n);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("sluice.toml");
    std::fs::write(
        &cfg,
        format!(
            "[agent]\ninterval=\"1s\"\ninterfaces=['^kvm(?P<instance>[0-9]+)\\..*$']\nbackend=\"none\"\nstate_dir=\"{0}\"\ndata_dir=\"{0}/lib\"\n[log]\ndir=\"\"\n[penalty]\nbase_rate=\"1gbit\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let bin = release_binary();
    let child = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(&bin)
        .args(["agent", "--config"])
        .arg(&cfg)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    // Let it run ten ticks (1 s interval), then read its high-water mark.
    let state = dir.path().join("state.json");
    std::thread::sleep(Duration::from_secs(10));
    assert!(child.0.try_wait().unwrap().is_none(), "agent exited early");
    let snap = sluice::state::read(&state)
        .unwrap()
        .expect("agent wrote its state");
    assert_eq!(snap.interfaces.len(), n);
    let field = |name: &str| status_kb(child.0.id(), name);
    let hwm = (field("VmHWM:"), field("RssAnon:"), field("RssFile:"));
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
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the benchmark needs root (network namespaces)"
    );
    let quick = std::env::args().any(|a| a == "quick");
    if std::env::args().any(|a| a == "rss") {
        return memory(10_000);
    }
    let sizes: &[usize] = if quick { &[1_000] } else { &[1_000, 10_000] };

    println!("## one tick (median of 21 rounds, every measurement once per round) vs baselines");
    let mut ticks = Vec::new();
    for &n in sizes {
        let t = tick_bench(n, 21);
        println!(
            "{n:>6} interfaces: tick {}  bare RTM_GETSTATS dump {}  /proc/net/dev {}  tick/bare = {:.2}x (target <= 2x)  tick/proc = {:.2}x",
            ms(t.tick),
            ms(t.bare),
            ms(t.proc),
            t.tick.as_secs_f64() / t.bare.as_secs_f64(),
            t.tick.as_secs_f64() / t.proc.as_secs_f64(),
        );
        println!(
            "         parts: sampler {}  policy+verdicts {}  idle tick (nothing changed, no write) {} = {:.2}x bare",
            ms(t.sample),
            ms(t.policy),
            ms(t.idle_tick),
            t.idle_tick.as_secs_f64() / t.bare.as_secs_f64()
        );
        ticks.push((n, t.tick));
    }
    if std::env::args().any(|a| a == "ticks") {
        return;
    }

    let separate = if quick { 100 } else { 1_000 };
    let (list, batched, separate_total) = ovs_benches(1_000, separate);
    let tick_1k = ticks[0].1;
    println!("## OVS, 1,000 ports (ovsdb-server only; --no-wait as the backend uses it)");
    println!(
        "ovs-vsctl list Interface: {}  tick at 1,000 interfaces is {:.1}x cheaper (target >= 20x)",
        ms(list),
        list.as_secs_f64() / tick_1k.as_secs_f64()
    );
    println!(
        "1,000 limit changes: one batched call {}  vs separate calls {}{}  = {:.1}x (target >= 20x)",
        ms(batched),
        ms(separate_total),
        if quick {
            " (extrapolated from 100)"
        } else {
            ""
        },
        separate_total.as_secs_f64() / batched.as_secs_f64()
    );

    memory(if quick { 1_000 } else { 10_000 });
}

fn memory(rss_n: usize) {
    let (peak, anon, file) = peak_rss_kb(rss_n);
    println!("## memory");
    println!(
        "peak RSS of sluice agent at {rss_n} interfaces: {:.1} MB (target <= 20 MB); now {:.1} MB anonymous + {:.1} MB file pages (its executable)",
        peak as f64 / 1024.0,
        anon as f64 / 1024.0,
        file as f64 / 1024.0
    );
}
