use std::collections::HashMap;

use serde_json::json;

use super::change::{Change, Police, PortLimits, QosChange, plan, set_clauses, transact_ops};
use super::rows::{self, InterfaceRow, InterfaceRows, PortQos};
use super::{Wanted, database_mismatch};
use crate::model::ids::{IfName, InstanceId};
use crate::model::units::Rate;
use crate::policy::{Burst, Limit, Reason, Verdict};

fn n(s: &str) -> IfName {
    IfName::new(s).unwrap()
}

fn limit(kbps: u64) -> Limit {
    Limit {
        rate: Rate::from_kbps(kbps),
        burst: Burst::for_rate(Rate::from_kbps(kbps), None),
    }
}

fn verdict(up_kbps: Option<u64>, down_kbps: Option<u64>) -> Verdict {
    Verdict {
        instance: InstanceId::new("1").unwrap(),
        ifindex: 1,
        stage: 0,
        upload: up_kbps.map(limit),
        download: down_kbps.map(limit),
        reason: Reason::Base,
        packets: None,
        download_reason: Reason::Unlimited,
        rule: None,
        disconnect: false,
        until: None,
    }
}

fn row(policing: (u64, u64), marked: bool, qos: PortQos) -> InterfaceRow {
    InterfaceRow {
        uuid: None,
        policing,
        packets: (0, 0),
        marked,
        qos,
    }
}

fn free(port: &str) -> PortQos {
    PortQos::Free { port: port.into() }
}

fn ours(port: &str, rate: Option<u64>) -> PortQos {
    PortQos::Ours {
        port: port.into(),
        qos: format!("qos-{port}"),
        queue: Some(format!("queue-{port}")),
        max_rate: rate,
    }
}

#[test]
fn parses_ovs_vsctl_json() {
    let text = r#"{"data":[["kvm1.0",900000,90000],["br0",0,0]],"headings":["name","ingress_policing_rate","ingress_policing_burst"]}"#;
    let m = rows::of_vsctl_list(text).unwrap();
    assert_eq!(m.policing("kvm1.0"), Some((900_000, 90_000)));
    assert_eq!(m.policing("br0"), Some((0, 0)));
    assert!(
        m.rows
            .values()
            .all(|r| !r.marked && r.qos == PortQos::Unread)
    );
    let text = r#"{"data":[["kvm1.0",900000,90000,["map",[["sluice","limited"]]]],["kvm2.0",5,5,["map",[["owner","ops"]]]]],"headings":["name","ingress_policing_rate","ingress_policing_burst","external_ids"]}"#;
    let m = rows::of_vsctl_list(text).unwrap();
    assert!(m.rows["kvm1.0"].marked);
    assert!(!m.rows["kvm2.0"].marked);
    assert!(rows::of_vsctl_list("nonsense").is_err());
    assert!(rows::of_vsctl_list(r#"{"data":[["x","a",0]],"headings":["name","ingress_policing_rate","ingress_policing_burst"]}"#).is_err());
    assert!(
        rows::of_vsctl_list(r#"{"data":[],"headings":["name"]}"#)
            .unwrap_err()
            .contains("ingress_policing_rate")
    );
}

/// A replica as update2 leaves it: tap1 limited by sluice both ways, tap2 in a port with
/// an operator's QoS, tap3 in a port without QoS, bond0a/bond0b in one port, br0 in none.
fn replica() -> HashMap<String, HashMap<String, crate::sys::ovsdb::Row>> {
    serde_json::from_value(json!({
        "Interface": {
            "i1": {"name": "tap1", "ingress_policing_rate": 900, "ingress_policing_burst": 90,
                   "external_ids": ["map", [["vm-id", "7"], ["sluice", "limited"]]]},
            "i2": {"name": "tap2"},
            "i3": {"name": "tap3"},
            "i4": {"name": "bond0a"},
            "i5": {"name": "bond0b"},
            "i6": {"name": "br0"}
        },
        "Port": {
            "p1": {"name": "tap1", "interfaces": ["uuid", "i1"], "qos": ["uuid", "s1"]},
            "p2": {"name": "tap2", "interfaces": ["uuid", "i2"], "qos": ["uuid", "s2"]},
            "p3": {"name": "tap3", "interfaces": ["set", [["uuid", "i3"]]], "qos": ["set", []]},
            "p4": {"name": "bond0", "interfaces": ["set", [["uuid", "i4"], ["uuid", "i5"]]]}
        },
        "QoS": {
            "s1": {"type": "linux-htb", "other_config": ["map", [["max-rate", "8000000"]]],
                   "queues": ["map", [[0, ["uuid", "q1"]]]],
                   "external_ids": ["map", [["sluice", "tap1"]]]},
            "s2": {"type": "linux-hfsc", "queues": ["map", [[0, ["uuid", "q2"]]]]},
            "s9": {"type": "linux-htb", "other_config": ["map", [["max-rate", "1000"]]],
                   "queues": ["map", [[0, ["uuid", "q9"]]]],
                   "external_ids": ["map", [["sluice", "gone0"]]]}
        },
        "Queue": {
            "q1": {"other_config": ["map", [["max-rate", "8000000"]]],
                   "external_ids": ["map", [["sluice", "tap1"]]]},
            "q2": {"other_config": ["map", [["max-rate", "1000000"]]]},
            "q8": {"external_ids": ["map", [["sluice", "gone1"]]]},
            "q9": {"other_config": ["map", [["max-rate", "1000"]]],
                   "external_ids": ["map", [["sluice", "gone0"]]]}
        }
    }))
    .unwrap()
}

/// The monitored Interface columns of a schema with packet-rate policing (OVS 2.16+).
fn kpkts_columns() -> HashMap<String, std::collections::HashSet<String>> {
    HashMap::from([(
        "Interface".to_owned(),
        [
            "name",
            "ingress_policing_kpkts_rate",
            "ingress_policing_kpkts_burst",
        ]
        .map(String::from)
        .into(),
    )])
}

#[test]
fn rows_from_a_replica_with_defaults_left_out() {
    let rows = rows::of_replica(&replica(), &kpkts_columns()).unwrap();
    let tap1 = &rows.rows["tap1"];
    assert_eq!(tap1.policing, (900, 90));
    assert!(tap1.marked);
    assert_eq!(
        tap1.uuid.as_deref(),
        Some("i1"),
        "writes find the row by its uuid"
    );
    assert_eq!(
        tap1.qos,
        PortQos::Ours {
            port: "p1".into(),
            qos: "s1".into(),
            queue: Some("q1".into()),
            max_rate: Some(8_000_000)
        }
    );
    let cases = [
        (
            "tap2",
            PortQos::Foreign {
                qos: "s2".into(),
                kind: "linux-hfsc".into(),
            },
        ),
        ("tap3", free("p3")),
        (
            "bond0a",
            PortQos::NoPort {
                why: "its port has more than one interface (a bond)",
            },
        ),
        (
            "br0",
            PortQos::NoPort {
                why: "it is in no port",
            },
        ),
    ];
    for (name, qos) in cases {
        assert_eq!(rows.rows[name].qos, qos, "{name}");
        assert_eq!(rows.rows[name].policing, (0, 0), "{name}");
        assert!(!rows.rows[name].marked, "{name}");
    }
    // s9 lost its port, and goes with its queue q9 in the same transaction; q8 lost its
    // QoS; q2 is an operator's.
    assert_eq!(rows.orphan_qos, vec!["s9".to_owned()]);
    assert_eq!(rows.orphan_queues, vec!["q8".to_owned(), "q9".to_owned()]);
}

#[test]
fn a_qos_whose_queue_disagrees_holds_no_rate() {
    let mut tables = replica();
    tables.get_mut("Queue").unwrap().insert(
        "q1".into(),
        serde_json::from_value(json!({"other_config": ["map", [["max-rate", "5"]]],
                                      "external_ids": ["map", [["sluice", "tap1"]]]}))
        .unwrap(),
    );
    let rows = rows::of_replica(&tables, &kpkts_columns()).unwrap();
    assert_eq!(rows.rows["tap1"].qos.held_rate(), None);
}

#[test]
fn bad_replica_rows_are_named() {
    for (table, bad, says) in [
        ("Interface", json!({"u3": {}}), "row u3 has no name"),
        (
            "Interface",
            json!({"u3": {"name": "x", "ingress_policing_rate": "fast"}}),
            "Interface x: ingress_policing_rate is not a count",
        ),
        (
            "Interface",
            json!({"u3": {"name": "x", "external_ids": 1}}),
            "Interface x: external_ids",
        ),
        (
            "QoS",
            json!({"s3": {"other_config": ["map", [["max-rate", "lots"]]]}}),
            "QoS s3: other_config:max-rate is not a rate in bit/s",
        ),
        (
            "QoS",
            json!({"s3": {"queues": ["map", [[0, "q1"]]]}}),
            "QoS s3: queues: \"q1\" is not a uuid",
        ),
        (
            "Port",
            json!({"p9": {"qos": ["set", [["uuid", "a"], ["uuid", "b"]]]}}),
            "Port p9: qos holds more than one row",
        ),
    ] {
        let mut tables = replica();
        let t = tables.get_mut(table).unwrap();
        for (k, v) in bad.as_object().unwrap() {
            t.insert(k.clone(), serde_json::from_value(v.clone()).unwrap());
        }
        let e = rows::of_replica(&tables, &kpkts_columns()).unwrap_err();
        assert!(e.contains(says), "{e}");
    }
}

#[test]
fn plans_only_what_differs_in_one_batch() {
    let names: Vec<IfName> = ["a", "b", "c", "d", "g", "h", "i", "j"]
        .iter()
        .map(|s| n(s))
        .collect();
    // (upload kbit/s, download kbit/s) each wants.
    let v = [
        verdict(Some(900_000), Some(8_000)), // a: as held
        verdict(Some(1_000), None),          // b: policing changed by hand
        verdict(None, None),                 // c: limited, should not be
        verdict(Some(5_000), None),          // d: not in OVSDB
        verdict(None, Some(4_000)),          // g: download, port free
        verdict(None, Some(4_000)),          // h: download, sluice's QoS at another rate
        verdict(None, Some(4_000)),          // i: an operator's QoS
        verdict(None, None),                 // j: sluice's QoS no longer wanted
    ];
    let wanted: Vec<Wanted> = names
        .iter()
        .zip(&v)
        .map(|(interface, verdict)| Wanted {
            interface,
            verdict,
            hypervisor: false,
        })
        .collect();
    let a_policing = PortLimits::of(&wanted[0]).policing;
    let foreign = PortQos::Foreign {
        qos: "s-i".into(),
        kind: "linux-hfsc".into(),
    };
    let current = InterfaceRows {
        rows: HashMap::from([
            (
                "a".into(),
                row(a_policing, true, ours("pa", Some(8_000_000))),
            ),
            ("b".into(), row((2_000, 2_000), true, free("pb"))),
            ("c".into(), row((10, 10), true, free("pc"))),
            (
                "e".into(),
                row((5_000, 2_000), true, ours("pe", Some(1_000))),
            ), // gone
            ("f".into(), row((7_000, 7_000), false, free("pf"))), // an operator's
            ("g".into(), row((0, 0), false, free("pg"))),
            ("h".into(), row((0, 0), false, ours("ph", Some(1_000)))),
            ("i".into(), row((0, 0), false, foreign)),
            ("j".into(), row((0, 0), false, ours("pj", Some(1_000)))),
        ]),
        orphan_qos: vec!["s9".into()],
        ..InterfaceRows::default()
    };
    let p = plan(&current, &wanted);
    let remove = |port: &str| QosChange::Remove {
        port: port.into(),
        qos: format!("qos-{port}"),
        queue: Some(format!("queue-{port}")),
    };
    let expected = vec![
        Change {
            name: n("b"),
            police: Some(Police {
                bytes: (1_000, 1_000),
                packets: Some((0, 0)),
            }),
            qos: None,
        },
        Change {
            name: n("c"),
            police: Some(Police {
                bytes: (0, 0),
                packets: Some((0, 0)),
            }),
            qos: None,
        },
        Change {
            name: n("g"),
            police: None,
            qos: Some(QosChange::Create {
                port: "pg".into(),
                rate: 4_000_000,
            }),
        },
        Change {
            name: n("h"),
            police: None,
            qos: Some(QosChange::Update {
                qos: "qos-ph".into(),
                queue: Some("queue-ph".into()),
                rate: 4_000_000,
            }),
        },
        Change {
            name: n("j"),
            police: None,
            qos: Some(remove("pj")),
        },
        Change {
            name: n("e"),
            police: Some(Police {
                bytes: (0, 0),
                packets: Some((0, 0)),
            }),
            qos: Some(remove("pe")),
        },
    ];
    assert_eq!(p.changes, expected);
    assert_eq!(p.missing, vec![&names[3]]);
    assert_eq!(p.refused.len(), 1);
    assert_eq!(p.refused[0].0, &names[6]);
    assert!(
        p.refused[0].1.contains("a QoS sluice did not create"),
        "{}",
        p.refused[0].1
    );
    assert_eq!(p.orphan_qos, vec!["s9".to_owned()]);
    assert_eq!(
        set_clauses(&p.changes[..3]).join(" "),
        "--no-wait -- set interface b ingress_policing_rate=1000 ingress_policing_burst=1000 \
         external_ids:sluice=limited \
         -- set interface c ingress_policing_rate=0 ingress_policing_burst=0 \
         -- remove interface c external_ids sluice",
        "ovs-vsctl writes policing only"
    );
    // A limit sluice holds without its mark (set before marks existed) gets one.
    let unmarked = InterfaceRows {
        rows: HashMap::from([(
            "a".into(),
            row(a_policing, false, ours("pa", Some(8_000_000))),
        )]),
        ..InterfaceRows::default()
    };
    let p = plan(&unmarked, &wanted[..1]);
    assert_eq!(p.changes[0].police.map(|p| p.bytes), Some(a_policing));
    assert_eq!(p.changes[0].qos, None);
}

#[test]
fn download_refusals_say_why() {
    let name = n("x");
    let v = verdict(None, Some(1_000));
    let wanted = [Wanted {
        interface: &name,
        verdict: &v,
        hypervisor: false,
    }];
    for (qos, says) in [
        (PortQos::Unread, "need agent.ovs_client = \"native\""),
        (
            PortQos::NoPort {
                why: "it is in no port",
            },
            "cannot shape its download: it is in no port",
        ),
    ] {
        let current = InterfaceRows {
            rows: HashMap::from([("x".into(), row((0, 0), false, qos))]),
            ..InterfaceRows::default()
        };
        let p = plan(&current, &wanted);
        assert!(p.changes.is_empty());
        assert!(p.refused[0].1.contains(says), "{}", p.refused[0].1);
    }
    // Without a download wanted, none of those is in the way.
    let v = verdict(Some(1_000), None);
    let wanted = [Wanted {
        interface: &name,
        verdict: &v,
        hypervisor: false,
    }];
    let current = InterfaceRows {
        rows: HashMap::from([("x".into(), row((0, 0), false, PortQos::Unread))]),
        ..InterfaceRows::default()
    };
    assert!(plan(&current, &wanted).refused.is_empty());
}

#[test]
fn transact_ops_spell_every_change() {
    let rows = InterfaceRows {
        rows: HashMap::from([(
            "tap1".into(),
            InterfaceRow {
                uuid: Some("5e6f".into()),
                ..row((0, 0), false, free("p1"))
            },
        )]),
        ..InterfaceRows::default()
    };
    let p = super::change::Plan {
        changes: vec![
            Change {
                name: n("tap1"),
                police: Some(Police {
                    bytes: (1_000, 200),
                    packets: Some((20, 2)),
                }),
                qos: Some(QosChange::Create {
                    port: "p1".into(),
                    rate: 8_000_000,
                }),
            },
            Change {
                name: n("tap2"),
                police: Some(Police {
                    bytes: (0, 0),
                    packets: None,
                }),
                qos: Some(QosChange::Remove {
                    port: "p2".into(),
                    qos: "s2".into(),
                    queue: Some("q2".into()),
                }),
            },
            Change {
                name: n("tap3"),
                police: None,
                qos: Some(QosChange::Update {
                    qos: "s3".into(),
                    queue: None,
                    rate: 2_000,
                }),
            },
        ],
        orphan_queues: vec!["q9".into()],
        ..Default::default()
    };
    let ops = transact_ops(&p, &rows);
    let expected = json!([
        // tap1's uuid is known: found by it.
        {"op": "update", "table": "Interface", "where": [["_uuid", "==", ["uuid", "5e6f"]]],
         "row": {"ingress_policing_rate": 1000, "ingress_policing_burst": 200,
                 "ingress_policing_kpkts_rate": 20, "ingress_policing_kpkts_burst": 2}},
        {"op": "mutate", "table": "Interface", "where": [["_uuid", "==", ["uuid", "5e6f"]]],
         "mutations": [["external_ids", "insert", ["map", [["sluice", "limited"]]]]]},
        {"op": "insert", "table": "Queue", "uuid-name": "queue0",
         "row": {"other_config": ["map", [["max-rate", "8000000"]]],
                 "external_ids": ["map", [["sluice", "tap1"]]]}},
        {"op": "insert", "table": "QoS", "uuid-name": "qos0",
         "row": {"type": "linux-htb", "other_config": ["map", [["max-rate", "8000000"]]],
                 "queues": ["map", [[0, ["named-uuid", "queue0"]]]],
                 "external_ids": ["map", [["sluice", "tap1"]]]}},
        {"op": "update", "table": "Port", "where": [["_uuid", "==", ["uuid", "p1"]]],
         "row": {"qos": ["named-uuid", "qos0"]}},
        // tap2 by name.
        {"op": "update", "table": "Interface", "where": [["name", "==", "tap2"]],
         "row": {"ingress_policing_rate": 0, "ingress_policing_burst": 0}},
        {"op": "mutate", "table": "Interface", "where": [["name", "==", "tap2"]],
         "mutations": [["external_ids", "delete", ["set", ["sluice"]]]]},
        {"op": "update", "table": "Port", "where": [["_uuid", "==", ["uuid", "p2"]]],
         "row": {"qos": ["set", []]}},
        {"op": "delete", "table": "QoS", "where": [["_uuid", "==", ["uuid", "s2"]]]},
        {"op": "delete", "table": "Queue", "where": [["_uuid", "==", ["uuid", "q2"]]]},
        // tap3's QoS had lost its queue: a new one.
        {"op": "insert", "table": "Queue", "uuid-name": "queue2",
         "row": {"other_config": ["map", [["max-rate", "2000"]]],
                 "external_ids": ["map", [["sluice", "tap3"]]]}},
        {"op": "update", "table": "QoS", "where": [["_uuid", "==", ["uuid", "s3"]]],
         "row": {"type": "linux-htb", "other_config": ["map", [["max-rate", "2000"]]],
                 "queues": ["map", [[0, ["named-uuid", "queue2"]]]],
                 "external_ids": ["map", [["sluice", "tap3"]]]}},
        {"op": "delete", "table": "Queue", "where": [["_uuid", "==", ["uuid", "q9"]]]}
    ]);
    assert_eq!(serde_json::Value::Array(ops), expected);
}

#[test]
fn the_read_back_must_hold_both_directions() {
    let want = |up: Option<u64>, down: Option<u64>| {
        let v = verdict(up, down);
        let name = n("x");
        PortLimits::of(&Wanted {
            interface: &name,
            verdict: &v,
            hypervisor: false,
        })
    };
    let both = want(Some(1_000), Some(2_000));
    let held = |policing, qos| Some(row(policing, true, qos));
    for (row, want, says) in [
        (held(both.policing, ours("p", Some(2_000_000))), both, None),
        (
            held((0, 0), ours("p", Some(2_000_000))),
            both,
            Some("OVSDB holds rate=0 burst=0"),
        ),
        (
            held(both.policing, free("p")),
            both,
            Some("no QoS of sluice's at 2000000 bit/s"),
        ),
        (
            held((0, 0), ours("p", Some(2_000_000))),
            PortLimits::NONE,
            Some("still holds sluice's QoS"),
        ),
        (None, PortLimits::NONE, None),
    ] {
        let got = database_mismatch(row.as_ref(), want, true);
        match says {
            None => assert_eq!(got, None),
            Some(s) => assert!(got.as_deref().is_some_and(|g| g.contains(s)), "{got:?}"),
        }
    }
}

#[test]
fn packet_rates_need_the_kpkts_columns() {
    let name = n("x");
    let mut v = verdict(Some(1_000), None);
    v.packets = Some(crate::policy::PacketLimit::for_rate(
        crate::model::units::PacketRate::from_per_sec(25_000),
    ));
    let wanted = [Wanted {
        interface: &name,
        verdict: &v,
        hypervisor: false,
    }];
    let want = PortLimits::of(&wanted[0]);
    assert_eq!(
        want.packets,
        (25, 3),
        "25 kpps, a tenth of a second's bucket"
    );

    // A schema with the columns: bytes and packets in one write, and marked.
    let mut tables = replica();
    tables.get_mut("Interface").unwrap().insert(
        "ix".into(),
        serde_json::from_value(json!({"name": "x"})).unwrap(),
    );
    let with = rows::of_replica(&tables, &kpkts_columns()).unwrap();
    assert_eq!(with.packets_unsupported, None);
    let p = plan(&with, &wanted);
    assert!(p.refused.is_empty());
    let police = p.changes[0].police.unwrap();
    assert_eq!(police.packets, Some((25, 3)));
    assert!(police.limited());

    // An older OVS: no kpkts columns. Packets refused, naming why; bytes still written,
    // and the packet columns never are.
    let without = rows::of_replica(&tables, &HashMap::new()).unwrap();
    let why = without.packets_unsupported.clone().unwrap();
    assert!(why.contains("OVS 2.16"), "{why}");
    let p = plan(&without, &wanted);
    assert_eq!(p.refused.len(), 1);
    assert!(
        p.refused[0]
            .1
            .starts_with("cannot limit its packet rate: this Open vSwitch has no"),
        "{}",
        p.refused[0].1
    );
    assert_eq!(
        p.changes[0].police,
        Some(Police {
            bytes: want.policing,
            packets: None
        })
    );
    let ops = transact_ops(&p, &without);
    assert!(!serde_json::to_string(&ops).unwrap().contains("kpkts"));

    // The read-back compares packets where the schema has them.
    let mut held = row(want.policing, true, free("p"));
    assert!(
        database_mismatch(Some(&held), want, true)
            .is_some_and(|w| w.contains("kpkts_rate=0 kpkts_burst=0 after the write"))
    );
    assert_eq!(database_mismatch(Some(&held), want, false), None);
    held.packets = (25, 3);
    assert_eq!(database_mismatch(Some(&held), want, true), None);
}

#[test]
fn the_kernel_is_asked_once_vswitchd_has_applied_the_write() {
    use super::{Awaiting, Gate, gate};
    use std::time::{Duration, Instant};
    let t0 = Instant::now();
    let timeout = Duration::from_secs(10);
    let native = |cfg, ticks| {
        Some(Awaiting {
            cfg: Some(cfg),
            since: t0,
            ticks,
        })
    };
    let vsctl = |ticks| {
        Some(Awaiting {
            cfg: None,
            since: t0,
            ticks,
        })
    };
    let at = |secs| t0 + Duration::from_secs(secs);
    // (awaiting, cur_cfg, now, gate)
    for (awaiting, cur, now, want) in [
        (None, Some(3), at(0), Gate::Settled),
        (native(7, 0), Some(6), at(1), Gate::Waiting),
        (native(7, 0), None, at(1), Gate::Waiting),
        (native(7, 0), Some(7), at(1), Gate::Applied),
        (native(7, 3), Some(9), at(4), Gate::Applied),
        (vsctl(0), None, at(0), Gate::Grace),
        (vsctl(1), None, at(1), Gate::Grace),
        (vsctl(2), None, at(2), Gate::Applied),
    ] {
        assert_eq!(
            gate(awaiting, cur, now, timeout),
            want,
            "{awaiting:?} {cur:?}"
        );
    }
    match gate(native(7, 9), Some(6), at(10), timeout) {
        Gate::Stalled(why) => assert!(
            why.contains(
                "has not applied the change within 10s (Open_vSwitch cur_cfg 6 < next_cfg 7)"
            ),
            "{why}"
        ),
        other => panic!("{other:?}"),
    }
    let [bump, select] = super::change::cfg_ops();
    assert_eq!(bump["mutations"], json!([["next_cfg", "+=", 1]]));
    assert_eq!(select["columns"], json!(["next_cfg"]));
    assert_eq!(
        super::change::next_cfg_of(&json!({"rows": [{"next_cfg": 12}]})),
        Some(12)
    );
    assert_eq!(super::change::next_cfg_of(&json!({"rows": []})), None);
    // The replica's cur_cfg; a row at its default (0) leaves the column out.
    let mut tables = replica();
    assert_eq!(
        rows::of_replica(&tables, &kpkts_columns()).unwrap().cur_cfg,
        None
    );
    for (row, cur) in [(json!({"cur_cfg": 5, "next_cfg": 6}), 5), (json!({}), 0)] {
        tables.insert(
            "Open_vSwitch".into(),
            HashMap::from([("o1".to_owned(), serde_json::from_value(row).unwrap())]),
        );
        let rows = rows::of_replica(&tables, &kpkts_columns()).unwrap();
        assert_eq!(rows.cur_cfg, Some(cur));
    }
}
