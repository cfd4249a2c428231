//! The policy engine over whole ticks: samples in, events and verdicts out.

use std::path::Path;

use super::*;
use crate::config::Config;

const BASE_BPS: u64 = 1_000_000_000;

fn config(extra: &str) -> Config {
    let text = format!(
        "[agent]\ninterval = \"60s\"\ninterfaces = ['^kvm(?P<instance>[0-9]+)\\..*$']\n{extra}\n[penalty]\nbase_rate = \"1000mbit\"\n[instances.\"7\"]\nbase_rate = \"100mbit\"\n"
    );
    Config::parse(Path::new("t.toml"), &text).unwrap().config
}

fn sample(name: &str, ifindex: u32, rx: u64) -> Sample {
    Sample {
        ifindex,
        name: IfName::new(name).unwrap(),
        rx_bytes: rx,
        tx_bytes: rx / 2,
        rx_packets: 0,
        tx_packets: 0,
    }
}

/// Bytes uploaded in `secs` at `pct` % of `base_bps`.
fn bytes_at(pct: u64, base_bps: u64, secs: u64) -> u64 {
    base_bps / 8 / 100 * pct * secs
}

fn stage_changes(events: &[Event]) -> Vec<(usize, usize)> {
    events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::Stage { change, .. } => Some((change.from, change.to)),
            _ => None,
        })
        .collect()
}

fn name(s: &str) -> IfName {
    IfName::new(s).unwrap()
}

#[test]
fn worked_example_through_the_whole_engine() {
    let cfg = config("");
    let mut p = Policy::new();
    let mut log = Vec::new();
    let mut rx = 0;
    for t in (0..=7200).step_by(60) {
        for e in p.tick(
            &cfg,
            &[sample("kvm101.0", 3, rx)],
            Tick::simulated(t as f64),
        ) {
            if let EventKind::Stage {
                change,
                upload_limit,
                ..
            } = e.kind
            {
                log.push((t, change.to, upload_limit.map(|r| r.kbps())));
            }
        }
        rx += bytes_at(95, BASE_BPS, 60);
    }
    assert_eq!(
        log,
        vec![
            (900, 1, Some(900_000)),
            (2700, 2, Some(800_000)),
            (6300, 0, Some(1_000_000)),
            (7200, 1, Some(900_000))
        ]
    );
}

#[test]
fn rates_are_measured_from_counter_deltas() {
    let cfg = config("");
    let mut p = Policy::new();
    p.tick(&cfg, &[sample("kvm101.0", 3, 0)], Tick::simulated(0.0));
    let st = p.get(&name("kvm101.0")).unwrap();
    assert_eq!(
        (st.upload, st.download),
        (None, None),
        "first sample: rate unknown"
    );
    p.tick(
        &cfg,
        &[sample("kvm101.0", 3, 7_500_000)],
        Tick::simulated(60.0),
    );
    let st = p.get(&name("kvm101.0")).unwrap();
    assert_eq!(st.upload.unwrap().bits_per_sec(), 1_000_000);
    assert_eq!(st.download.unwrap().bits_per_sec(), 500_000);
}

#[test]
fn gaps_make_the_rate_unknown_and_clear_timers() {
    // (description, time of the second sample after t=0; rate known?)
    let table = [
        ("one interval", 60.0, true),
        ("exactly two intervals", 120.0, true),
        ("more than two intervals", 121.0, false),
        ("clock went backwards", -1.0, false),
        ("same instant", 0.0, false),
    ];
    for (what, t2, known) in table {
        let cfg = config("");
        let mut p = Policy::new();
        p.tick(
            &cfg,
            &[sample("kvm101.0", 3, 0)],
            Tick {
                mono: std::time::Duration::from_secs(1000),
                wall: Tick::simulated(1000.0).wall,
            },
        );
        let t = 1000.0 + t2;
        p.tick(
            &cfg,
            &[sample("kvm101.0", 3, 1_000_000)],
            Tick::simulated(t),
        );
        assert_eq!(
            p.get(&name("kvm101.0")).unwrap().upload.is_some(),
            known,
            "{what}"
        );
    }
}

#[test]
fn a_gap_restarts_the_sustained_timer() {
    let cfg = config("");
    let mut p = Policy::new();
    let mut rx = 0;
    let mut changes = Vec::new();
    // Busy from t=0, but no sample between 300 and 600 (gap of 300 s > 2 × 60 s).
    for t in (0..=1500).step_by(60).filter(|t| !(300 < *t && *t < 600)) {
        rx = bytes_at(95, BASE_BPS, t);
        for (from, to) in stage_changes(&p.tick(
            &cfg,
            &[sample("kvm101.0", 3, rx)],
            Tick::simulated(t as f64),
        )) {
            changes.push((t, from, to));
        }
    }
    let _ = rx;
    // The tick at 600 has an unknown rate; the timer starts again at 600 (interval 600..660).
    assert_eq!(changes, vec![(1500, 0, 1)]);
}

#[test]
fn counter_reset_is_not_a_spike() {
    let cfg = config("");
    let mut p = Policy::new();
    p.tick(
        &cfg,
        &[sample("kvm101.0", 3, 10_000_000_000)],
        Tick::simulated(0.0),
    );
    // VM restarted: new ifindex, counters from zero; 750 kB in the interval = 100 kbit/s.
    let events = p.tick(
        &cfg,
        &[sample("kvm101.0", 9, 750_000)],
        Tick::simulated(60.0),
    );
    assert!(events.iter().any(|e| e.kind == EventKind::CountersReset));
    assert_eq!(
        p.get(&name("kvm101.0"))
            .unwrap()
            .upload
            .unwrap()
            .bits_per_sec(),
        100_000
    );
}

#[test]
fn vanished_interfaces_keep_running_penalties_only() {
    let cfg = config("");
    let mut p = Policy::new();
    let mut t = 0;
    while t <= 900 {
        p.tick(
            &cfg,
            &[
                sample("kvm101.0", 3, bytes_at(95, BASE_BPS, t)),
                sample("kvm102.0", 4, 0),
            ],
            Tick::simulated(t as f64),
        );
        t += 60;
    }
    assert_eq!(p.get(&name("kvm101.0")).unwrap().penalty.stage, 1);
    // Both vanish: 101 has a penalty (kept, not enforced), 102 has none (dropped).
    let events = p.tick(&cfg, &[], Tick::simulated(960.0));
    assert!(
        events
            .iter()
            .any(|e| e.kind == EventKind::VanishedKeepingPenalty { stage: 1 })
    );
    assert!(p.get(&name("kvm102.0")).is_none());
    assert!(p.get(&name("kvm101.0")).is_some());
    assert!(
        p.verdicts(&cfg).is_empty(),
        "absent interfaces get no verdict"
    );
    // The VM restarts with a new tap: the penalty is re-applied.
    let events = p.tick(&cfg, &[sample("kvm101.0", 12, 0)], Tick::simulated(1020.0));
    assert!(
        events
            .iter()
            .any(|e| e.kind == EventKind::Returned { stage: 1 })
    );
    let v = p.verdict(&cfg, &name("kvm101.0")).unwrap();
    assert_eq!((v.stage, v.upload.unwrap().rate.kbps()), (1, 900_000));
    // Gone again past the expiry at 2700: expired and dropped.
    let events = p.tick(&cfg, &[], Tick::simulated(2700.0));
    assert_eq!(stage_changes(&events), vec![(1, 0)]);
    assert!(p.get(&name("kvm101.0")).is_none());
}

#[test]
fn packet_rates_are_measured_and_limits_decided() {
    let text = "[agent]\ninterval = \"60s\"\ninterfaces = ['^kvm(?P<instance>[0-9]+)\\..*$']\n\
                [penalty]\nbase_rate = \"1000mbit\"\npacket_rate = \"100kpps\"\n\
                [instances.\"7\"]\npacket_rate = \"25kpps\"\n";
    let cfg = Config::parse(Path::new("t.toml"), text).unwrap().config;
    let with_packets = |name: &str, rx: u64, tx: u64| Sample {
        rx_packets: rx,
        tx_packets: tx,
        ..sample(name, 3, 0)
    };
    let mut p = Policy::new();
    p.tick(
        &cfg,
        &[with_packets("kvm7.0", 1_000, 0)],
        Tick::simulated(0.0),
    );
    let st = p.get(&name("kvm7.0")).unwrap();
    assert_eq!((st.upload_pps, st.download_pps), (None, None));
    // 60 s later: 1,500,000 more packets received (25,000/s), 60,000 sent (1,000/s).
    p.tick(
        &cfg,
        &[with_packets("kvm7.0", 1_501_000, 60_000)],
        Tick::simulated(60.0),
    );
    let st = p.get(&name("kvm7.0")).unwrap();
    assert_eq!(st.upload_pps.map(PacketRate::per_sec), Some(25_000));
    assert_eq!(st.download_pps.map(PacketRate::per_sec), Some(1_000));
    // The instance's own limit, else the penalty's; a tenth of a second's bucket.
    let v = p.verdict(&cfg, &name("kvm7.0")).unwrap();
    let limit = v.packets.unwrap();
    assert_eq!((limit.rate.per_sec(), limit.burst_kpkts), (25_000, 3));
    p.tick(
        &cfg,
        &[with_packets("kvm8.0", 0, 0)],
        Tick::simulated(120.0),
    );
    let v = p.verdict(&cfg, &name("kvm8.0")).unwrap();
    assert_eq!(v.packets.map(|l| l.rate.per_sec()), Some(100_000));
}

#[test]
fn a_packet_flood_earns_a_stage_and_its_packet_limit() {
    let text = "[agent]\ninterval = \"60s\"\ninterfaces = ['^kvm(?P<instance>[0-9]+)\\..*$']\n\
                [penalty]\nbase_rate = \"1000mbit\"\npacket_rate = \"25kpps\"\n\
                [[penalty.stage]]\nusage = 0.9\ntrigger = \"2m\"\nrate = 0.5\nduration = \"1h\"\n\
                pps = \"50kpps\"\npacket_rate = \"10kpps\"\n";
    let cfg = Config::parse(Path::new("t.toml"), text).unwrap().config;
    let mut p = Policy::new();
    // 60,000 packets/s of 64 bytes: 3.8 % of the base in bytes, a flood in packets.
    let mut stages = Vec::new();
    for minute in 0..=3u64 {
        let packets = minute * 60 * 60_000;
        let s = Sample {
            rx_packets: packets,
            ..sample("kvm9.0", 4, packets * 64)
        };
        let events = p.tick(&cfg, &[s], Tick::simulated(minute as f64 * 60.0));
        stages.extend(stage_changes(&events));
    }
    assert_eq!(
        stages,
        vec![(0, 1)],
        "entered once, after the 2 min trigger"
    );
    let v = p.verdict(&cfg, &name("kvm9.0")).unwrap();
    assert_eq!(v.stage, 1);
    assert_eq!(v.upload.unwrap().rate.to_string(), "500mbit");
    assert_eq!(
        v.packets.map(|l| l.rate.per_sec()),
        Some(10_000),
        "the stage's packet limit, lower than the instance's 25 kpps"
    );
}

#[test]
fn verdicts_follow_stage_base_override_and_enforce_base() {
    let cfg = config("");
    let mut p = Policy::new();
    p.tick(
        &cfg,
        &[
            sample("kvm7.0", 1, 0),
            sample("kvm8.0", 2, 0),
            sample("eth0", 3, 0),
        ],
        Tick::simulated(0.0),
    );
    let v = p.verdicts(&cfg);
    let names: Vec<&str> = v.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["kvm7.0", "kvm8.0"],
        "eth0 matches no pattern; name order"
    );
    assert_eq!(v[0].1.upload.unwrap().rate.to_string(), "100mbit");
    assert_eq!(v[0].1.reason, Reason::Base);
    assert_eq!(v[0].1.ifindex, 1);
    assert_eq!(v[1].1.upload.unwrap().rate.to_string(), "1gbit");
    assert_eq!(v[1].1.upload.unwrap().burst.kb(), 100_000);

    let cfg = config("enforce_base = false");
    let mut p = Policy::new();
    p.tick(&cfg, &[sample("kvm8.0", 2, 0)], Tick::simulated(0.0));
    let v = p.verdict(&cfg, &name("kvm8.0")).unwrap();
    assert_eq!((v.upload, v.reason), (None, Reason::Unlimited));
}

#[test]
fn per_instance_base_rate_sets_the_thresholds() {
    // Instance 7 is sold 100mbit: 95 mbit is 95 % of its base → penalised.
    let cfg = config("");
    let mut p = Policy::new();
    let mut last = Vec::new();
    for t in (0..=900).step_by(60) {
        last = p.tick(
            &cfg,
            &[sample("kvm7.0", 1, bytes_at(95, 100_000_000, t))],
            Tick::simulated(t as f64),
        );
    }
    assert_eq!(stage_changes(&last), vec![(0, 1)]);
    assert_eq!(
        p.verdict(&cfg, &name("kvm7.0"))
            .unwrap()
            .upload
            .unwrap()
            .rate
            .to_string(),
        "90mbit"
    );
}

#[test]
fn restored_penalty_applies_when_the_interface_shows_up() {
    let cfg = config("");
    let mut p = Policy::new();
    let wall = Tick::simulated(100.0).wall;
    p.restore(
        name("kvm101.0"),
        InstanceId::new("101").unwrap(),
        PenaltyState {
            stage: 2,
            since: Some(wall),
            until: Some(wall + jiff::SignedDuration::from_secs(3600)),
            timer: None,
        },
    );
    p.tick(&cfg, &[sample("kvm101.0", 3, 0)], Tick::simulated(200.0));
    assert_eq!(
        p.verdict(&cfg, &name("kvm101.0"))
            .unwrap()
            .upload
            .unwrap()
            .rate
            .to_string(),
        "800mbit"
    );
    let events = p.tick(&cfg, &[sample("kvm101.0", 3, 0)], Tick::simulated(3700.0));
    assert_eq!(stage_changes(&events), vec![(2, 0)]);
}

#[test]
fn a_new_config_rematches_interfaces() {
    let kvm = config("");
    let tap_text = "[agent]\ninterval=\"60s\"\ninterfaces=['^tap(?P<instance>[0-9]+)i[0-9]+$']\n[penalty]\nbase_rate=\"1gbit\"\n";
    let tap = Config::parse(Path::new("t.toml"), tap_text).unwrap().config;
    let samples = [sample("kvm101.0", 1, 0), sample("tap102i0", 2, 0)];
    let mut p = Policy::new();
    p.tick(&kvm, &samples, Tick::simulated(0.0));
    assert_eq!(
        p.verdicts(&kvm)
            .iter()
            .map(|(n, _)| n)
            .map(|n| n.as_str())
            .collect::<Vec<_>>(),
        ["kvm101.0"]
    );
    // Same samples, reloaded config with other patterns: the cached matches are dropped.
    p.tick(&tap, &samples, Tick::simulated(60.0));
    let v = p.verdicts(&tap);
    assert_eq!(
        v.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["tap102i0"]
    );
    assert_eq!(v[0].1.instance.as_str(), "102");
}

#[test]
fn changed_says_whether_a_snapshot_would_differ() {
    let cfg = config("");
    let mut p = Policy::new();
    // (time, rx counter, changed?)
    let table = [
        (0.0, 0, true),             // new interface
        (60.0, 0, true),            // first rate known (0 bit/s)
        (120.0, 0, false),          // idle, same rate
        (180.0, 7_500_000, true),   // traffic: new rate
        (240.0, 15_000_000, false), // same rate again
    ];
    for (t, rx, want) in table {
        p.tick(&cfg, &[sample("kvm101.0", 3, rx)], Tick::simulated(t));
        assert_eq!(p.changed(), want, "t={t}");
    }
    p.tick(&cfg, &[], Tick::simulated(300.0));
    assert!(p.changed(), "vanished");
    p.tick(&cfg, &[], Tick::simulated(360.0));
    assert!(!p.changed(), "still gone");
}

#[test]
fn an_operator_release_ends_the_penalty_and_escalation_starts_over() {
    let cfg = config("");
    let mut p = Policy::new();
    let mut rx = 0;
    let mut t = 0;
    // Hog until stage 1 (at 900 s, as in the worked example).
    while p
        .get(&name("kvm101.0"))
        .is_none_or(|s| s.penalty.stage == 0)
    {
        p.tick(
            &cfg,
            &[sample("kvm101.0", 3, rx)],
            Tick::simulated(t as f64),
        );
        rx += bytes_at(95, BASE_BPS, 60);
        t += 60;
    }
    assert_eq!(t, 960);
    assert!(p.release(&cfg, &name("kvm102.0")).is_none(), "unknown");
    let e = p.release(&cfg, &name("kvm101.0")).expect("released");
    match e.kind {
        EventKind::Stage {
            change,
            upload_limit,
            ..
        } => {
            assert_eq!((change.from, change.to), (1, 0));
            assert_eq!(change.cause, ChangeCause::Released);
            assert_eq!(upload_limit.map(|r| r.kbps()), Some(1_000_000));
        }
        other => panic!("{other:?}"),
    }
    assert!(p.changed());
    let v = p.verdict(&cfg, &name("kvm101.0")).unwrap();
    assert_eq!((v.stage, v.until), (0, None));
    assert!(
        p.release(&cfg, &name("kvm101.0")).is_none(),
        "not penalised"
    );
    // Still hogging: stage 1 comes back only after a full trigger (900 s) again, counted
    // (as always) from the start of the first interval measured after the release.
    let mut back = None;
    for _ in 0..20 {
        let ev = p.tick(
            &cfg,
            &[sample("kvm101.0", 3, rx)],
            Tick::simulated(t as f64),
        );
        if back.is_none() && stage_changes(&ev) == vec![(0, 1)] {
            back = Some(t);
        }
        rx += bytes_at(95, BASE_BPS, 60);
        t += 60;
    }
    assert_eq!(back, Some(900 + 900));
}
