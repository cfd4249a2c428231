//! The netlink sampler against the real kernel, inside namespaces made by the test.

mod support;

use std::time::Duration;

use sluice::model::ids::IfName;
use sluice::sample::{LinkSampler, Sample};
use support::{Netns, UDP_FRAME_OVERHEAD, send_udp, veth};

fn sample_in(ns: &Netns) -> Vec<Sample> {
    ns.run(|| LinkSampler::open().unwrap().sample().unwrap())
}

fn find<'a>(samples: &'a [Sample], name: &str) -> &'a Sample {
    samples
        .iter()
        .find(|s| s.name.as_str() == name)
        .unwrap_or_else(|| panic!("{name} not sampled"))
}

#[test]
fn byte_counts_equal_the_kernels_to_the_byte() {
    let host = Netns::new("h");
    let inst = Netns::new("i");
    let link = veth(&host, "kvm101.0", &inst, "eth0", 1);
    let before = find(&sample_in(&host), "kvm101.0").clone();

    // 500 datagrams of 1000 bytes from the instance = its upload = host rx on the tap.
    let sent = send_udp(
        &inst.name,
        link.a_ip,
        1000,
        500,
        50_000_000,
        Duration::from_secs(5),
    );
    assert_eq!(sent, 500);
    let after = find(&sample_in(&host), "kvm101.0").clone();

    let kernel_rx = host.sysfs_counter("kvm101.0", "rx_bytes");
    let kernel_tx = host.sysfs_counter("kvm101.0", "tx_bytes");
    assert_eq!(after.rx_bytes, kernel_rx, "sampler vs kernel rx_bytes");
    assert_eq!(after.tx_bytes, kernel_tx, "sampler vs kernel tx_bytes");
    assert_eq!(
        after.rx_packets,
        host.sysfs_counter("kvm101.0", "rx_packets")
    );
    assert_eq!(
        after.rx_bytes - before.rx_bytes,
        500 * (1000 + UDP_FRAME_OVERHEAD),
        "exactly what was sent"
    );
    assert_eq!(after.rx_packets - before.rx_packets, 500);
    assert_eq!(after.ifindex, host.ifindex("kvm101.0"));
}

#[test]
fn recreated_interface_is_a_counter_reset_not_a_spike() {
    use sluice::config::Config;
    use sluice::policy::{EventKind, Policy, Tick};

    let host = Netns::new("h");
    let inst = Netns::new("i");
    let link = veth(&host, "kvm7.0", &inst, "eth0", 2);
    send_udp(
        &inst.name,
        link.a_ip,
        1400,
        2000,
        200_000_000,
        Duration::from_secs(5),
    );
    let first = sample_in(&host);
    let old = find(&first, "kvm7.0").clone();
    assert!(old.rx_bytes >= 2000 * 1400);

    // The VM restarts: its tap is deleted and created again, counters from zero.
    host.ip(&["link", "del", "kvm7.0"]);
    let link = veth(&host, "kvm7.0", &inst, "eth0", 2);
    send_udp(
        &inst.name,
        link.a_ip,
        100,
        10,
        10_000_000,
        Duration::from_secs(5),
    );
    let second = sample_in(&host);
    let new = find(&second, "kvm7.0").clone();
    assert_ne!(new.ifindex, old.ifindex);
    assert_eq!(new.rx_bytes, 10 * (100 + UDP_FRAME_OVERHEAD));

    let cfg = Config::parse(
        std::path::Path::new("t.toml"),
        "[agent]\ninterval=\"60s\"\ninterfaces=['^kvm(?P<instance>[0-9]+)\\..*$']\n[penalty]\nbase_rate=\"1gbit\"\n",
    )
    .unwrap()
    .config;
    let mut policy = Policy::new();
    policy.tick(&cfg, &first, Tick::simulated(0.0));
    let events = policy.tick(&cfg, &second, Tick::simulated(60.0));
    assert!(events.iter().any(|e| e.kind == EventKind::CountersReset));
    let st = policy.get(&IfName::new("kvm7.0").unwrap()).unwrap();
    // 1420 bytes over 60 s = 189.3 bit/s, not 2^64 bytes.
    assert_eq!(st.upload.unwrap().bits_per_sec(), 189);
}

#[test]
fn a_thousand_interfaces_in_one_dump() {
    let ns = Netns::new("d");
    let names: Vec<String> = (0..1000).map(|i| format!("kvm{i}.0")).collect();
    ns.add_cheap_links(&names);
    let samples = sample_in(&ns);
    let dummies = samples
        .iter()
        .filter(|s| s.name.as_str().starts_with("kvm"))
        .count();
    assert_eq!(dummies, 1000);
    assert!(samples.iter().any(|s| s.name.as_str() == "lo"));
    // Every name is paired with its own ifindex.
    for probe in ["kvm0.0", "kvm499.0", "kvm999.0"] {
        assert_eq!(find(&samples, probe).ifindex, ns.ifindex(probe));
    }
}

#[test]
fn name_cache_follows_renames_and_new_links() {
    let ns = Netns::new("r");
    ns.add_cheap_links(&["kvm1.0".to_owned()]);
    let ip = |args: &[&str]| {
        assert!(
            std::process::Command::new("ip")
                .args(args)
                .status()
                .unwrap()
                .success()
        )
    };
    let (a, b, c, d) = ns.run(move || {
        let mut s = LinkSampler::open().unwrap();
        let a = s.sample().unwrap();
        // A rename keeps the ifindex and the number of links: only the kernel's link
        // notification tells the cache that the old name is gone.
        ip(&["link", "set", "kvm1.0", "name", "kvm2.0"]);
        let b = s.sample().unwrap();
        ip(&["link", "add", "kvm3.0", "type", "ifb"]);
        let c = s.sample().unwrap();
        ip(&["link", "del", "kvm3.0"]);
        let d = s.sample().unwrap();
        (a, b, c, d)
    });
    let names = |v: &[Sample]| v.iter().map(|s| s.name.to_string()).collect::<Vec<_>>();
    assert_eq!(names(&a), ["lo", "kvm1.0"]);
    assert_eq!(names(&b), ["lo", "kvm2.0"]);
    assert_eq!(names(&c), ["lo", "kvm2.0", "kvm3.0"]);
    assert_eq!(names(&d), ["lo", "kvm2.0"]);
}
