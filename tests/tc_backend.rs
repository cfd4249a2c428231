//! The tc backend against the real kernel: a veth pair between a "host" and an
//! "instance" namespace, limits installed over netlink and checked with the `tc` and `ip`
//! tools as independent witnesses, drift repaired, foreign state left alone, and
//! everything removed on release.

mod support;

use std::time::Duration;

use sluice::enforce::tc::{Scope, ifb_name};
use sluice::enforce::{Enforcement, TcBackend, Wanted};
use sluice::model::ids::{IfName, InstanceId};
use sluice::model::units::Rate;
use sluice::policy::{Burst, Limit, Reason, Verdict};
use support::{Netns, send_udp, veth};

fn limit(rate: &str) -> Limit {
    let rate: Rate = rate.parse().unwrap();
    Limit {
        rate,
        burst: Burst::for_rate(rate, None),
    }
}

fn verdict(ifindex: u32, up: Option<&str>, down: Option<&str>) -> Verdict {
    Verdict {
        instance: InstanceId::new("101").unwrap(),
        ifindex,
        stage: 0,
        upload: up.map(limit),
        download: down.map(limit),
        reason: Reason::Base,
        packets: None,
        download_reason: Reason::Base,
        rule: None,
        disconnect: false,
        until: None,
    }
}

/// Reconcile `(name, verdict)` pairs inside the namespace with a backend kept across calls.
fn reconcile(backend: &mut TcBackend, list: &[(IfName, Verdict)]) -> Vec<Enforcement> {
    reconcile_claimed(backend, list, false)
}

/// As `reconcile`, the interfaces claimed by a hypervisor source (`hypervisor`) or not.
fn reconcile_claimed(
    backend: &mut TcBackend,
    list: &[(IfName, Verdict)],
    hypervisor: bool,
) -> Vec<Enforcement> {
    let wanted: Vec<Wanted<'_>> = list
        .iter()
        .map(|(n, v)| Wanted {
            interface: n,
            verdict: v,
            hypervisor,
        })
        .collect();
    backend.reconcile(&wanted)
}

/// A Proxmox tap with `rate=1` (1 MiB/s): sluice takes it over at that rate instead of
/// failing on the foreign root, puts its own back when PVE re-applies its commands (a
/// hotplug, a VM start) and counts each replacement once, and real traffic is then held
/// to the rate by sluice's shaper.
#[test]
fn a_proxmox_shaped_tap_is_taken_over_at_its_rate_and_repaired_without_flapping() {
    let police = support::kernel_can_police();
    let host = Netns::new("tpv");
    let inst = Netns::new("tpi");
    let link = veth(&host, "tap777i0", &inst, "eth0", 67);
    let tap_index = host.ifindex(&link.a);
    let ifb = ifb_name(tap_index);
    let tap = IfName::new(&link.a).unwrap();
    support::pve_tap_rate_limit(&host, "tap777i0", 1, police);
    // rate=1 is 1 MiB/s: 8,388,608 bit/s, both directions (what the inventory makes it).
    let plan = "8388608bit";
    let want = [(tap.clone(), verdict(tap_index, Some(plan), Some(plan)))];
    let mut backend = host.run(|| TcBackend::open().unwrap());

    // Not claimed by a hypervisor source: the ownership rule refuses, as before.
    let refused = reconcile_claimed(&mut backend, &want, false);
    assert!(
        matches!(&refused[0], Enforcement::EnforceFailed { reason } if reason.contains("root qdisc htb 1:")),
        "{refused:?}"
    );
    assert_eq!(backend.hypervisor_replacements(), 0);

    // Claimed: replaced, at the same rate.
    assert_eq!(
        reconcile_claimed(&mut backend, &want, true),
        [Enforcement::Applied]
    );
    assert!(has_sluice_root(&host, "tap777i0", "8388Kbit"), "download");
    assert!(has_sluice_root(&host, &ifb, "8388Kbit"), "upload");
    let filters = tc(&host, &["filter", "show", "dev", "tap777i0", "ingress"]);
    assert!(
        !filters.contains("pref 50 "),
        "PVE's filter is gone: {filters}"
    );
    assert!(
        filters.contains(&format!("Egress Redirect to device {ifb}")),
        "{filters}"
    );
    assert_eq!(backend.hypervisor_replacements(), 1);

    // Steady: nothing to replace, nothing counted.
    assert_eq!(
        reconcile_claimed(&mut backend, &want, true),
        [Enforcement::Applied]
    );
    assert_eq!(backend.hypervisor_replacements(), 1);

    // PVE puts its shaping back (hotplug): the next tick repairs it, once.
    support::pve_tap_rate_limit(&host, "tap777i0", 1, police);
    assert_eq!(
        reconcile_claimed(&mut backend, &want, true),
        [Enforcement::Applied]
    );
    assert!(has_sluice_root(&host, "tap777i0", "8388Kbit"));
    assert_eq!(backend.hypervisor_replacements(), 2);
    assert_eq!(
        reconcile_claimed(&mut backend, &want, true),
        [Enforcement::Applied]
    );
    assert_eq!(backend.hypervisor_replacements(), 2);

    // Real traffic, three times the rate for 8 s: what leaves sluice's upload shaper
    // (the ifb's transmit counter) is the plan's rate.
    let sender_ns = inst.name.clone();
    let to = link.a_ip;
    let sender = std::thread::spawn(move || {
        send_udp(
            &sender_ns,
            to,
            1000,
            30_000,
            25_000_000,
            Duration::from_secs(8),
        )
    });
    std::thread::sleep(Duration::from_secs(1));
    let shaped = support::settled_rate(&host, &ifb, "tx_bytes", Duration::from_secs(2));
    sender.join().unwrap();
    let ratio = shaped / 8_388_608.0;
    assert!(
        (0.90..=1.05).contains(&ratio),
        "upload through sluice's shaper: {shaped:.0} bit/s ({ratio:.3} of the plan)"
    );
}

fn tc(ns: &Netns, args: &[&str]) -> String {
    ns.exec("tc", args)
}

fn has_sluice_root(ns: &Netns, dev: &str, rate: &str) -> bool {
    let q = tc(ns, &["qdisc", "show", "dev", dev, "root"]);
    let c = tc(ns, &["class", "show", "dev", dev]);
    let ok = q.contains("qdisc htb 51ce: root")
        && c.contains(&format!(
            "class htb 51ce:1 root leaf 51cf: prio 0 rate {rate} ceil {rate}"
        ));
    if !ok {
        eprintln!("{dev}:\n{q}{c}");
    }
    ok
}

/// The whole lifecycle runs in one backend, on a thread inside the host namespace.
#[test]
fn installs_verifies_repairs_and_releases() {
    let host = Netns::new("tch");
    let inst = Netns::new("tci");
    let link = veth(&host, "tap101i0", &inst, "eth0", 61);
    let tap_index = host.ifindex(&link.a);
    let ifb = ifb_name(tap_index);
    let tap = IfName::new(&link.a).unwrap();

    // A netlink socket stays in the namespace it was opened in, whichever thread uses it.
    let mut backend = host.run(|| TcBackend::open().unwrap());
    let status = reconcile(
        &mut backend,
        &[(tap, verdict(tap_index, Some("10mbit"), Some("20mbit")))],
    );
    assert_eq!(status, [Enforcement::Applied]);
    assert!(
        has_sluice_root(&host, "tap101i0", "20Mbit"),
        "download shaper"
    );
    // The class's queue: 50 ms of 20 Mbit in full frames.
    let leaf = tc(&host, &["qdisc", "show", "dev", "tap101i0"]);
    assert!(
        leaf.contains("qdisc pfifo 51cf: parent 51ce:1 limit 82p"),
        "{leaf}"
    );
    assert!(
        has_sluice_root(&host, &ifb, "10Mbit"),
        "upload shaper on the ifb"
    );
    let link_info = host.ip(&["-d", "link", "show", &ifb]);
    assert!(link_info.contains("ifb"), "{link_info}");
    assert!(
        link_info.contains("alias sluice: upload shaper of tap101i0"),
        "{link_info}"
    );
    assert!(
        link_info.contains("state UNKNOWN") || link_info.contains(",UP"),
        "{link_info}"
    );
    let filters = tc(&host, &["filter", "show", "dev", "tap101i0", "ingress"]);
    assert!(filters.contains("pref 20942 u32"), "{filters}");
    assert!(
        filters.contains(&format!("Egress Redirect to device {ifb}")),
        "{filters}"
    );

    // Traffic goes through both shapers: their counters move.
    let sent = send_udp(
        &inst.name,
        link.a_ip,
        1000,
        200,
        5_000_000,
        Duration::from_secs(5),
    );
    assert!(sent > 150);
    let tap = IfName::new(&link.a).unwrap();
    let s = reconcile(
        &mut backend,
        &[(
            tap.clone(),
            verdict(tap_index, Some("10mbit"), Some("20mbit")),
        )],
    );
    assert_eq!(s, [Enforcement::Applied]);
    let counters = backend.counters().get(&tap).copied().unwrap();
    let up = counters.upload.expect("upload counters");
    assert!(
        up.sent_packets >= sent,
        "ifb shaper sent {} packets of {sent}",
        up.sent_packets
    );
    assert!(counters.download.is_some());

    // Drift: someone deletes the root qdisc, the ingress qdisc and the ifb itself.
    tc(&host, &["qdisc", "del", "dev", "tap101i0", "root"]);
    tc(&host, &["qdisc", "del", "dev", "tap101i0", "ingress"]);
    host.ip(&["link", "del", &ifb]);
    let tap = IfName::new(&link.a).unwrap();
    let status = reconcile(
        &mut backend,
        &[(tap, verdict(tap_index, Some("10mbit"), Some("20mbit")))],
    );
    assert_eq!(status, [Enforcement::Applied]);
    assert!(
        has_sluice_root(&host, "tap101i0", "20Mbit"),
        "repaired download"
    );
    assert!(has_sluice_root(&host, &ifb, "10Mbit"), "repaired upload");
    let filters = tc(&host, &["filter", "show", "dev", "tap101i0", "ingress"]);
    assert!(
        filters.contains(&format!("Egress Redirect to device {ifb}")),
        "{filters}"
    );

    // A new rate changes the classes in place.
    let tap = IfName::new(&link.a).unwrap();
    let status = reconcile(
        &mut backend,
        &[(tap, verdict(tap_index, Some("5mbit"), Some("20mbit")))],
    );
    assert_eq!(status, [Enforcement::Applied]);
    assert!(has_sluice_root(&host, &ifb, "5Mbit"));

    // No limits: exactly what sluice installed goes, the kernel's default comes back.
    let tap = IfName::new(&link.a).unwrap();
    let status = reconcile(&mut backend, &[(tap, verdict(tap_index, None, None))]);
    assert_eq!(status, [Enforcement::Applied]);
    let qdiscs = tc(&host, &["qdisc", "show", "dev", "tap101i0"]);
    assert!(
        !qdiscs.contains("51ce:") && !qdiscs.contains("ingress"),
        "{qdiscs}"
    );
    let links = host.ip(&["-o", "link", "show"]);
    assert!(!links.contains(&ifb), "{links}");
}

#[test]
fn foreign_shaping_is_refused_and_left_alone() {
    let host = Netns::new("tcf");
    let inst = Netns::new("tcg");
    let link = veth(&host, "tap102i0", &inst, "eth0", 62);
    let tap_index = host.ifindex(&link.a);
    // Someone else's root qdisc, and an ingress filter of theirs on a second tap.
    tc(
        &host,
        &[
            "qdisc", "add", "dev", "tap102i0", "root", "handle", "1:", "tbf", "rate", "1mbit",
            "burst", "10k", "latency", "50ms",
        ],
    );
    let other = veth(&host, "tap103i0", &inst, "eth1", 63);
    let other_index = host.ifindex(&other.a);
    tc(&host, &["qdisc", "add", "dev", "tap103i0", "ingress"]);
    tc(
        &host,
        &[
            "filter", "add", "dev", "tap103i0", "parent", "ffff:", "prio", "5", "protocol", "ip",
            "u32", "match", "u32", "0", "0", "flowid", "1:1",
        ],
    );
    // And an ifb with sluice's name that sluice did not create.
    let fake_ifb = ifb_name(other_index);
    host.ip(&["link", "add", &fake_ifb, "type", "ifb"]);

    let a = IfName::new("tap102i0").unwrap();
    let b = IfName::new("tap103i0").unwrap();
    let status = host.run(move || {
        let mut backend = TcBackend::open().unwrap();
        reconcile(
            &mut backend,
            &[
                (a, verdict(tap_index, None, Some("20mbit"))),
                (b, verdict(other_index, Some("10mbit"), None)),
            ],
        )
    });
    match &status[0] {
        Enforcement::EnforceFailed { reason } => {
            assert!(reason.contains("root qdisc tbf 1:"), "{reason}")
        }
        other => panic!("tap102i0: {other:?}"),
    }
    match &status[1] {
        Enforcement::EnforceFailed { reason } => {
            assert!(reason.contains("without sluice's alias"), "{reason}")
        }
        other => panic!("tap103i0: {other:?}"),
    }
    // Nothing of theirs was touched.
    let q = tc(&host, &["qdisc", "show", "dev", "tap102i0"]);
    assert!(q.contains("qdisc tbf 1: root"), "{q}");
    let f = tc(&host, &["filter", "show", "dev", "tap103i0", "ingress"]);
    assert!(f.contains("pref 5 u32") && !f.contains("pref 20942"), "{f}");
    assert!(host.ip(&["-o", "link", "show"]).contains(&fake_ifb));

    // Without the fake ifb, the foreign filter on the ingress is what refuses.
    host.ip(&["link", "del", &fake_ifb]);
    let b = IfName::new("tap103i0").unwrap();
    let status = host.run(move || {
        let mut backend = TcBackend::open().unwrap();
        let s = reconcile(
            &mut backend,
            &[(b, verdict(other_index, Some("10mbit"), None))],
        );
        // The ifb it created for the attempt is released with the limit.
        let released = backend.release(&Scope::All).unwrap();
        (s, released.failed.len())
    });
    match &status.0[0] {
        Enforcement::EnforceFailed { reason } => {
            assert!(
                reason.contains("holds filters that sluice did not install"),
                "{reason}"
            )
        }
        other => panic!("tap103i0: {other:?}"),
    }
    assert_eq!(status.1, 0);
    let f = tc(&host, &["filter", "show", "dev", "tap103i0", "ingress"]);
    assert!(f.contains("pref 5 u32"), "{f}");
    assert!(!host.ip(&["-o", "link", "show"]).contains(&fake_ifb));
}

#[test]
fn release_removes_only_the_named_interfaces() {
    let host = Netns::new("tcr");
    let inst = Netns::new("tcs");
    let one = veth(&host, "tap104i0", &inst, "eth0", 64);
    let two = veth(&host, "tap105i0", &inst, "eth1", 65);
    let (i1, i2) = (host.ifindex(&one.a), host.ifindex(&two.a));
    let (n1, n2) = (IfName::new(&one.a).unwrap(), IfName::new(&two.a).unwrap());
    let status = host.run(move || {
        let mut backend = TcBackend::open().unwrap();
        let s = reconcile(
            &mut backend,
            &[
                (n1, verdict(i1, Some("10mbit"), Some("10mbit"))),
                (n2, verdict(i2, Some("10mbit"), Some("10mbit"))),
            ],
        );
        // A fresh backend (as `sluice release` is) finds them by their marks.
        let mut fresh = TcBackend::open().unwrap();
        let out = fresh
            .release(&Scope::Only([i1].into_iter().collect()))
            .unwrap();
        (s, out.failed.len(), out.changes)
    });
    assert_eq!(status.0, [Enforcement::Applied, Enforcement::Applied]);
    assert_eq!(status.1, 0);
    assert_eq!(status.2, 3, "root, ingress and ifb of tap104i0");
    assert!(!tc(&host, &["qdisc", "show", "dev", "tap104i0"]).contains("51ce:"));
    assert!(!host.ip(&["-o", "link", "show"]).contains(&ifb_name(i1)));
    assert!(has_sluice_root(&host, "tap105i0", "10Mbit"));
    assert!(has_sluice_root(&host, &ifb_name(i2), "10Mbit"));
}
