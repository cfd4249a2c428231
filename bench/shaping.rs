//! Benchmarks of the tc backend, printed beside baselines measured in the same run. Needs
//! root, iperf3 and the `tc`/`ip` tools (it builds its own network namespaces).
//!
//!   cargo bench --bench shaping            # everything
//!   cargo bench --bench shaping -- quick   # 10 Mbit only, 100 interfaces
//!   cargo bench --bench shaping -- apply   # only part 2, three rounds
//!   cargo bench --bench shaping -- rates=1,10   # only part 1, at these rates (Mbit)
//!
//! 1. Accuracy: limits of 1, 10, 100 and 1000 Mbit installed by sluice on a veth between
//!    a "host" and an "instance" namespace; TCP (iperf3, 6 s measured after 2 s of slow
//!    start) in both directions and a UDP flood at twice the limit. The achieved layer-2
//!    rate is the receiver's goodput scaled by frame/payload size, printed as a percentage
//!    of the limit beside iperf3's goodput. Target: 97–102 % for TCP at every rate.
//! 2. Applying upload and download limits to 500 interfaces from scratch in one
//!    reconcile, against `ip -batch` (the ifbs) + `tc -batch` doing the same operations;
//!    and the idle reconcile (everything already in place) that every tick pays.

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sluice::enforce::tc::Scope;
use sluice::enforce::{Enforcement, TcBackend, Wanted};
use sluice::model::ids::{IfName, InstanceId};
use sluice::model::units::Rate;
use sluice::policy::{Burst, Limit, Reason, Verdict};
use support::{Iperf3Server, Netns, TCP_FRAME, TCP_MSS, iperf3_goodput, sh, veth};

/// UDP payload that fills a 1500-byte frame (+ UDP 8, IPv4 20, Ethernet 14 = 1500).
const UDP_PAYLOAD: f64 = 1458.0;
const UDP_FRAME: f64 = 1500.0;

fn verdict(ifindex: u32, rate: Rate) -> Verdict {
    let limit = Limit {
        rate,
        burst: Burst::for_rate(rate, None),
    };
    Verdict {
        instance: InstanceId::new("1").unwrap(),
        ifindex,
        stage: 0,
        upload: Some(limit),
        download: Some(limit),
        reason: Reason::Base,
        packets: None,
        download_reason: Reason::Base,
        rule: None,
        disconnect: false,
        until: None,
    }
}

fn udp_goodput(server: &Iperf3Server, client: &Netns, rate_bps: u64) -> f64 {
    let child = Command::new("ip")
        .args(["netns", "exec", &client.name, "iperf3", "-J", "-u", "-c"])
        .arg(server.addr.to_string())
        .args(["-p", &server.port.to_string()])
        .args([
            "-b",
            &(2 * rate_bps).to_string(),
            "-l",
            "1458",
            "-t",
            "5",
            "-O",
            "1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    iperf3_goodput(child, Duration::from_secs(20))
}

fn accuracy(rates_mbit: &[u64]) {
    println!(
        "## shaping accuracy: achieved layer-2 rate as % of the limit (target 97-102 % for TCP)"
    );
    println!(
        "{:>9}  {:>9}  {:>9}  {:>14}  {:>9}  {:>14}",
        "limit", "direction", "TCP L2 %", "TCP goodput", "UDP L2 %", "UDP goodput"
    );
    let host = Netns::new("bh");
    let inst = Netns::new("bi");
    let link = veth(&host, "tap1i0", &inst, "eth0", 91);
    let tap = IfName::new(&link.a).unwrap();
    let ifindex = host.ifindex(&link.a);
    let mut backend = host.run(|| TcBackend::open().unwrap());
    let up = Iperf3Server::start(&host, link.a_ip, 5401);
    let down = Iperf3Server::start(&inst, link.b_ip, 5402);
    for &mbit in rates_mbit {
        let rate = Rate::from_bits_per_sec(mbit * 1_000_000);
        let v = verdict(ifindex, rate);
        let status = backend.reconcile(&[Wanted {
            interface: &tap,
            verdict: &v,
            hypervisor: false,
        }]);
        assert_eq!(status, [Enforcement::Applied]);
        for (direction, server, client) in [("upload", &up, &inst), ("download", &down, &host)] {
            // Slow rates get a longer window: a 64 KB GSO packet is half a second at 1 Mbit.
            let secs = if mbit < 10 { 12 } else { 6 };
            let tcp = iperf3_goodput(server.client(client, secs, 2), Duration::from_secs(30));
            let udp = udp_goodput(server, client, rate.bits_per_sec());
            let limit = rate.bits_per_sec() as f64;
            println!(
                "{:>4} Mbit  {direction:>9}  {:>8.1}%  {:>9.2} Mbit  {:>8.1}%  {:>9.2} Mbit",
                mbit,
                tcp * TCP_FRAME / TCP_MSS / limit * 100.0,
                tcp / 1e6,
                udp * UDP_FRAME / UDP_PAYLOAD / limit * 100.0,
                udp / 1e6,
            );
        }
    }
}

/// `n` veth pairs tapN / peerN in one namespace.
fn add_taps(ns: &Netns, n: usize) -> Vec<(IfName, u32)> {
    let batch: String = (0..n)
        .map(|i| format!("link add tap{i}i0 type veth peer name peer{i}\nlink set tap{i}i0 up\nlink set peer{i} up\n"))
        .collect();
    ns.ip_batch(&batch);
    let out = ns.ip(&["-o", "link", "show"]);
    let mut taps: Vec<(IfName, u32)> = out
        .lines()
        .filter_map(|l| {
            let mut parts = l.split(": ");
            let idx: u32 = parts.next()?.trim().parse().ok()?;
            let name = parts.next()?.split('@').next()?;
            if name.starts_with("tap") {
                Some((IfName::new(name).ok()?, idx))
            } else {
                None
            }
        })
        .collect();
    taps.sort_by_key(|t| t.1);
    assert_eq!(taps.len(), n);
    taps
}

/// The same operations sluice performs, as `ip -batch` + `tc -batch` files.
fn tc_batch_files(ns: &Netns, taps: &[(IfName, u32)], rate: &str) -> (String, String) {
    let mut ip = String::new();
    let mut tc = String::new();
    for (name, idx) in taps {
        let ifb = format!("tbifb{idx}");
        ip.push_str(&format!("link add {ifb} txqueuelen 1000 type ifb\nlink set {ifb} up\nlink set {ifb} alias bench\n"));
        for dev in [name.as_str(), ifb.as_str()] {
            tc.push_str(&format!(
                "qdisc add dev {dev} root handle 51ce: htb default 1\n"
            ));
            tc.push_str(&format!(
                "class add dev {dev} parent 51ce: classid 51ce:1 htb rate {rate} ceil {rate} burst 15k cburst 15k\n"
            ));
            tc.push_str(&format!(
                "qdisc add dev {dev} parent 51ce:1 handle 51cf: pfifo limit 41\n"
            ));
        }
        tc.push_str(&format!("qdisc add dev {name} ingress\n"));
        tc.push_str(&format!(
            "filter add dev {name} parent ffff: prio 20942 protocol all u32 match u32 0 0 action mirred egress redirect dev {ifb}\n"
        ));
    }
    let dir = std::env::temp_dir();
    let ip_path = dir.join(format!("{}-ip.batch", ns.name));
    let tc_path = dir.join(format!("{}-tc.batch", ns.name));
    std::fs::write(&ip_path, ip).unwrap();
    std::fs::write(&tc_path, tc).unwrap();
    (
        ip_path.to_string_lossy().into_owned(),
        tc_path.to_string_lossy().into_owned(),
    )
}

fn undo_tc_batch(ns: &Netns, taps: &[(IfName, u32)]) {
    let mut ip = String::new();
    let mut tc = String::new();
    for (name, idx) in taps {
        ip.push_str(&format!("link del tbifb{idx}\n"));
        tc.push_str(&format!(
            "qdisc del dev {name} root\nqdisc del dev {name} ingress\n"
        ));
    }
    ns.ip_batch(&ip);
    let path = std::env::temp_dir().join(format!("{}-undo.batch", ns.name));
    std::fs::write(&path, tc).unwrap();
    sh(
        "ip",
        &[
            "netns",
            "exec",
            &ns.name,
            "tc",
            "-batch",
            path.to_str().unwrap(),
        ],
    );
}

fn apply_bench(n: usize, rounds: usize) {
    println!(
        "## applying limits to {n} interfaces in one reconcile (median of {rounds} interleaved rounds)"
    );
    let ns = Netns::new("ba");
    let taps = add_taps(&ns, n);
    let mut backend = ns.run(|| TcBackend::open().unwrap());
    let rate = Rate::from_bits_per_sec(10_000_000);
    let verdicts: Vec<Verdict> = taps.iter().map(|(_, idx)| verdict(*idx, rate)).collect();
    let wanted: Vec<Wanted<'_>> = taps
        .iter()
        .zip(&verdicts)
        .map(|((n, _), v)| Wanted {
            interface: n,
            verdict: v,
            hypervisor: false,
        })
        .collect();
    let (ip_file, tc_file) = tc_batch_files(&ns, &taps, "10mbit");
    let (mut ours, mut idle, mut release, mut theirs) = (vec![], vec![], vec![], vec![]);
    for _ in 0..rounds {
        let t = Instant::now();
        let status = backend.reconcile(&wanted);
        ours.push(t.elapsed());
        assert!(
            status.iter().all(|s| *s == Enforcement::Applied),
            "{:?}",
            status.iter().find(|s| **s != Enforcement::Applied)
        );
        let t = Instant::now();
        backend.reconcile(&wanted);
        idle.push(t.elapsed());
        let t = Instant::now();
        let out = backend.release(&Scope::All).unwrap();
        release.push(t.elapsed());
        assert!(out.failed.is_empty());

        let t = Instant::now();
        sh("ip", &["-n", &ns.name, "-batch", &ip_file]);
        sh("ip", &["netns", "exec", &ns.name, "tc", "-batch", &tc_file]);
        theirs.push(t.elapsed());
        undo_tc_batch(&ns, &taps);
    }
    let med = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (o, i, r, t) = (
        med(&mut ours),
        med(&mut idle),
        med(&mut release),
        med(&mut theirs),
    );
    println!(
        "sluice install {:.1} ms (target <= 200 ms)  ip -batch + tc -batch {:.1} ms  sluice/tc = {:.2}x",
        o.as_secs_f64() * 1e3,
        t.as_secs_f64() * 1e3,
        o.as_secs_f64() / t.as_secs_f64()
    );
    println!(
        "idle reconcile (all in place, read back only) {:.1} ms = {:.2}x of tc -batch install;  release all {:.1} ms",
        i.as_secs_f64() * 1e3,
        i.as_secs_f64() / t.as_secs_f64(),
        r.as_secs_f64() * 1e3
    );
}

fn main() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the benchmark needs root (network namespaces)"
    );
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "quick");
    // `-- rates=1,10`: only the accuracy table, at these rates (Mbit).
    if let Some(list) = args.iter().find_map(|a| a.strip_prefix("rates=")) {
        let rates: Vec<u64> = list.split(',').filter_map(|r| r.parse().ok()).collect();
        accuracy(&rates);
        return;
    }
    if args.iter().any(|a| a == "apply") {
        apply_bench(500, 3);
        return;
    }
    if quick {
        apply_bench(100, 3);
        accuracy(&[10]);
    } else {
        apply_bench(500, 7);
        accuracy(&[1, 10, 100, 1000]);
    }
}
