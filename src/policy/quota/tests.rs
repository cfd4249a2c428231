//! Period quotas as the spec reads: thresholds and exceeds once a period, restore at the
//! reset, boundary splitting, matching, strictest-wins merging with the penalty machine.

use std::path::Path;

use super::*;
use crate::config::{ActionKind, Config};
use crate::policy::{Policy, Reason, Tick};
use crate::sample::Sample;

fn config(rules: &str) -> Config {
    let text = format!(
        "[agent]\ninterval = \"60s\"\ninterfaces = ['^kvm(?P<instance>[0-9]+)\\..*$']\n\
         [penalty]\nbase_rate = \"100mbit\"\n\
         [instances.\"101\"]\ntags = [\"gold\"]\n\
         [instances.\"102\"]\ntags = [\"bronze\"]\n\
         [hooks]\nshutdown = [\"true\", \"{{instance}}\"]\n{rules}"
    );
    Config::parse(Path::new("t.toml"), &text).unwrap().config
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn id(s: &str) -> InstanceId {
    InstanceId::new(s).unwrap()
}

fn spent(instance: &str, up: u64, down: u64, from: &str, to: &str) -> Spent {
    Spent {
        instance: id(instance),
        upload: up,
        download: down,
        from: ts(from),
        to: ts(to),
        estimated: false,
    }
}

fn states(events: &[QuotaEvent]) -> Vec<(String, String, String)> {
    events
        .iter()
        .map(|e| {
            let state = match e.state {
                QuotaState::Threshold(f) => format!("threshold {f}"),
                ref s => s.as_str().to_owned(),
            };
            (e.rule.to_string(), e.instance.to_string(), state)
        })
        .collect()
}

fn ev(rule: &str, instance: &str, state: &str) -> (String, String, String) {
    (rule.into(), instance.into(), state.into())
}

const DAILY: &str = r#"
[[rule]]
name = "daily"
period = "day"
timezone = "UTC"
direction = "both"
limit = "1000B"
notify_at = [0.5, 0.9]
action = "rate_limit"
rate = "1mbit"
"#;

#[test]
fn thresholds_and_exceed_fire_once_and_the_reset_restores() {
    let cfg = config(DAILY);
    let mut q = Quotas::default();
    // (tick: spent, at) → events
    type Step = (Vec<Spent>, &'static str, Vec<(String, String, String)>);
    let steps: Vec<Step> = vec![
        (
            vec![spent(
                "101",
                300,
                100,
                "2026-11-23T10:00:00Z",
                "2026-11-23T10:01:00Z",
            )],
            "2026-11-23T10:01:00Z",
            vec![],
        ),
        (
            vec![spent(
                "101",
                100,
                0,
                "2026-11-23T10:01:00Z",
                "2026-11-23T10:02:00Z",
            )],
            "2026-11-23T10:02:00Z",
            vec![ev("daily", "101", "threshold 0.5")],
        ),
        // 0.9 and the exceed in one tick: both, in order.
        (
            vec![spent(
                "101",
                600,
                0,
                "2026-11-23T10:02:00Z",
                "2026-11-23T10:03:00Z",
            )],
            "2026-11-23T10:03:00Z",
            vec![
                ev("daily", "101", "threshold 0.9"),
                ev("daily", "101", "exceeded"),
            ],
        ),
        // More traffic in the same period: nothing new.
        (
            vec![spent(
                "101",
                5000,
                0,
                "2026-11-23T10:03:00Z",
                "2026-11-23T10:04:00Z",
            )],
            "2026-11-23T10:04:00Z",
            vec![],
        ),
        // An idle tick exactly on the boundary restores.
        (
            vec![],
            "2026-11-24T00:00:00Z",
            vec![ev("daily", "101", "restored")],
        ),
        (vec![], "2026-11-24T00:01:00Z", vec![]),
    ];
    for (i, (s, at, want)) in steps.into_iter().enumerate() {
        assert_eq!(states(&q.step(&cfg, &s, ts(at))), want, "step {i}");
    }
    let u = q.get(&RuleName::new("daily").unwrap(), &id("101")).unwrap();
    assert_eq!(
        (u.upload, u.download, u.exceeded, u.notified),
        (0, 0, false, 0)
    );
    assert_eq!(u.period.start, ts("2026-11-24T00:00:00Z"));
}

#[test]
fn bytes_straddling_a_boundary_are_split_by_time() {
    let cfg = config(DAILY);
    let mut q = Quotas::default();
    q.step(
        &cfg,
        &[spent(
            "101",
            10,
            0,
            "2026-11-23T23:58:00Z",
            "2026-11-23T23:59:00Z",
        )],
        ts("2026-11-23T23:59:00Z"),
    );
    // 1200 bytes over 23:59:00..00:01:00: half before midnight (10 + 600 = 610, past
    // half of 1000 but not over it), half after (600: half of the new day's 1000 too).
    let events = q.step(
        &cfg,
        &[spent(
            "101",
            1200,
            0,
            "2026-11-23T23:59:00Z",
            "2026-11-24T00:01:00Z",
        )],
        ts("2026-11-24T00:01:00Z"),
    );
    assert_eq!(
        states(&events),
        vec![
            ev("daily", "101", "threshold 0.5"),
            ev("daily", "101", "threshold 0.5")
        ]
    );
    assert_eq!(events[0].used, Bytes::new(610));
    assert_eq!(events[0].period.end, ts("2026-11-24T00:00:00Z"));
    assert_eq!(events[1].used, Bytes::new(600));
    assert_eq!(events[1].period.start, ts("2026-11-24T00:00:00Z"));
    let u = q.get(&RuleName::new("daily").unwrap(), &id("101")).unwrap();
    assert_eq!(u.period.start, ts("2026-11-24T00:00:00Z"));
    assert_eq!(u.upload, 600);
}

#[test]
fn an_exceed_in_the_old_period_is_restored_when_the_split_crosses_it() {
    let cfg = config(DAILY);
    let mut q = Quotas::default();
    let events = q.step(
        &cfg,
        &[spent(
            "101",
            4000,
            0,
            "2026-11-23T23:59:00Z",
            "2026-11-24T00:01:00Z",
        )],
        ts("2026-11-24T00:01:00Z"),
    );
    assert_eq!(
        states(&events),
        vec![
            ev("daily", "101", "threshold 0.5"),
            ev("daily", "101", "threshold 0.9"),
            ev("daily", "101", "exceeded"),
            ev("daily", "101", "restored"),
            ev("daily", "101", "threshold 0.5"),
            ev("daily", "101", "threshold 0.9"),
            ev("daily", "101", "exceeded"),
        ]
    );
}

#[test]
fn matching_exclude_wins_and_empty_lists_match_all() {
    let cfg = config(
        r#"
[[rule]]
name = "all"
period = "month"
limit = "1TB"
[[rule]]
name = "just-104"
period = "month"
limit = "1TB"
instances = ["104"]
[[rule]]
name = "gold"
period = "month"
limit = "1TB"
tags = ["gold"]
[[rule]]
name = "ids"
period = "month"
limit = "1TB"
instances = ["103"]
tags = ["bronze"]
[[rule]]
name = "all-but-101"
period = "month"
limit = "1TB"
exclude = ["101"]
[[rule]]
name = "excluded-by-id-despite-tag"
period = "month"
limit = "1TB"
tags = ["gold"]
exclude = ["101"]
[[rule]]
name = "off"
period = "month"
limit = "1TB"
enabled = false
"#,
    );
    // (instance, rules covering it)
    let table = [
        ("101", vec!["all", "gold"]),
        ("102", vec!["all", "ids", "all-but-101"]),
        ("103", vec!["all", "ids", "all-but-101"]),
        ("104", vec!["all", "just-104", "all-but-101"]),
    ];
    for (inst, want) in table {
        let i = id(inst);
        let got: Vec<&str> = cfg
            .rules
            .iter()
            .filter(|r| r.covers(&i, cfg.tags(&i)))
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(got, want, "{inst}");
        // The index answers the same, in the same order.
        let indexed: Vec<&str> = cfg
            .rules
            .covering(&i, cfg.tags(&i))
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(indexed, want, "{inst} through the index");
    }
}

const STRICT: &str = r#"
[[rule]]
name = "warn"
period = "day"
limit = "10B"
action = "warn"
[[rule]]
name = "slow"
period = "day"
limit = "10B"
action = "rate_limit"
rate = "20mbit"
[[rule]]
name = "slower-up"
period = "day"
limit = "10B"
action = "rate_limit"
rate = { upload = "5mbit", packets = "20kpps" }
[[rule]]
name = "flood"
period = "day"
limit = "10B"
action = "rate_limit"
rate = { packets = "8kpps" }
[[rule]]
name = "cut"
period = "day"
limit = "1000B"
action = "disconnect"
[[rule]]
name = "off"
period = "day"
limit = "5000B"
action = "shutdown"
"#;

#[test]
fn the_strictest_exceeded_rule_wins() {
    let cfg = config(STRICT);
    let mut q = Quotas::default();
    let at = "2026-11-23T10:01:00Z";
    let from = "2026-11-23T10:00:00Z";
    // (bytes so far, strictest action, its rule, upload rate, download rate)
    let table = [
        (
            11,
            ActionKind::RateLimit,
            "slow",
            Some(("5mbit", "slower-up")),
            Some(("20mbit", "slow")),
        ),
        (
            1001,
            ActionKind::Disconnect,
            "cut",
            Some(("5mbit", "slower-up")),
            Some(("20mbit", "slow")),
        ),
        (
            5001,
            ActionKind::Shutdown,
            "off",
            Some(("5mbit", "slower-up")),
            Some(("20mbit", "slow")),
        ),
    ];
    let mut total = 0;
    for (bytes, action, rule, up, down) in table {
        q.step(&cfg, &[spent("101", bytes - total, 0, from, at)], ts(at));
        total = bytes;
        let f = q.in_force(&cfg, &id("101")).unwrap();
        let rate = |x: Option<(&str, &str)>| {
            x.map(|(r, n)| (r.parse::<Rate>().unwrap(), RuleName::new(n).unwrap()))
        };
        assert_eq!(
            (f.action, f.rule.as_str(), f.upload, f.download),
            (action, rule, rate(up), rate(down)),
            "{bytes}"
        );
        // The lowest packet rate among the exceeded rate_limit rules.
        assert_eq!(
            f.packets,
            Some((
                crate::model::units::PacketRate::from_per_sec(8_000),
                RuleName::new("flood").unwrap()
            ))
        );
    }
    assert!(q.in_force(&cfg, &id("102")).is_none());
}

#[test]
fn a_rule_leaving_the_config_restores_its_instances() {
    let mut q = Quotas::default();
    let cfg = config(DAILY);
    q.step(
        &cfg,
        &[spent(
            "101",
            2000,
            0,
            "2026-11-23T10:00:00Z",
            "2026-11-23T10:01:00Z",
        )],
        ts("2026-11-23T10:01:00Z"),
    );
    q.take_changes();
    let without = config("");
    let events = q.step(&without, &[], ts("2026-11-23T10:02:00Z"));
    assert_eq!(states(&events), vec![ev("daily", "101", "restored")]);
    assert!(q.iter().next().is_none());
    let changes = q.take_changes();
    assert_eq!(changes.len(), 1);
    assert!(changes[0].1.is_none(), "the row is deleted from the ledger");
}

#[test]
fn next_boundary_is_the_earliest_period_end() {
    let cfg = config(
        r#"
[[rule]]
name = "hourly"
period = "hour"
timezone = "Asia/Kolkata"
limit = "1GB"
[[rule]]
name = "daily"
period = "day"
timezone = "UTC"
limit = "1GB"
"#,
    );
    let mut q = Quotas::default();
    q.step(
        &cfg,
        &[spent(
            "101",
            1,
            0,
            "2026-11-23T10:00:00Z",
            "2026-11-23T10:01:00Z",
        )],
        ts("2026-11-23T10:01:00Z"),
    );
    assert_eq!(
        q.next_boundary(ts("2026-11-23T10:01:00Z")),
        Some(ts("2026-11-23T10:30:00Z"))
    );
}

fn sample(name: &str, ifindex: u32, rx: u64) -> Sample {
    Sample {
        ifindex,
        name: IfName::new(name).unwrap(),
        rx_bytes: rx,
        tx_bytes: 0,
        rx_packets: 0,
        tx_packets: 0,
    }
}

use crate::model::ids::IfName;

#[test]
fn verdicts_merge_rules_with_the_penalty_machine() {
    let cfg = config(STRICT);
    let mut policy = Policy::new();
    policy.tick(
        &cfg,
        &[sample("kvm101.0", 1, 0), sample("kvm102.0", 2, 0)],
        Tick::simulated(1_763_892_000.0),
    );
    let v = policy.verdicts(&cfg);
    assert_eq!(v[0].1.reason, Reason::Base);
    assert_eq!(v[0].1.upload.unwrap().rate, "100mbit".parse().unwrap());

    let mut q = policy.quotas().clone();
    q.step(
        &cfg,
        &[spent(
            "101",
            1001,
            0,
            "2026-11-23T10:00:00Z",
            "2026-11-23T10:01:00Z",
        )],
        ts("2026-11-23T10:01:00Z"),
    );
    policy.set_quotas(q);
    let v = policy.verdicts(&cfg);
    let (name, v101) = &v[0];
    assert_eq!(name.as_str(), "kvm101.0");
    // The rule's 5 mbit is below the 100 mbit base: the rule wins and says so.
    assert_eq!(v101.upload.unwrap().rate, "5mbit".parse().unwrap());
    assert_eq!(
        v101.reason,
        Reason::Rule {
            rule: RuleName::new("slower-up").unwrap()
        }
    );
    assert_eq!(v101.download.unwrap().rate, "20mbit".parse().unwrap());
    assert_eq!(
        v101.download_reason,
        Reason::Rule {
            rule: RuleName::new("slow").unwrap()
        }
    );
    assert!(v101.disconnect);
    assert_eq!(
        v101.rule,
        Some((ActionKind::Disconnect, RuleName::new("cut").unwrap()))
    );
    // The other instance is untouched.
    assert_eq!(
        (v[1].1.reason.clone(), v[1].1.disconnect),
        (Reason::Base, false)
    );
}

#[test]
fn a_lower_penalty_limit_beats_a_rule_rate() {
    let cfg = config(
        r#"
[[rule]]
name = "slow"
period = "day"
limit = "10B"
action = "rate_limit"
rate = "200mbit"
"#,
    );
    let mut policy = Policy::new();
    policy.tick(
        &cfg,
        &[sample("kvm101.0", 1, 0)],
        Tick::simulated(1_763_892_000.0),
    );
    let mut q = Quotas::default();
    q.step(
        &cfg,
        &[spent(
            "101",
            11,
            0,
            "2026-11-23T10:00:00Z",
            "2026-11-23T10:01:00Z",
        )],
        ts("2026-11-23T10:01:00Z"),
    );
    policy.set_quotas(q);
    let v = policy
        .verdict(&cfg, &IfName::new("kvm101.0").unwrap())
        .unwrap();
    assert_eq!(
        (v.upload.unwrap().rate, v.reason),
        ("100mbit".parse().unwrap(), Reason::Base)
    );
    assert_eq!(
        v.rule,
        Some((ActionKind::RateLimit, RuleName::new("slow").unwrap()))
    );
}

#[test]
fn an_operator_reset_starts_the_period_over_and_lifts_an_exceed() {
    let cfg = config(DAILY);
    let mut q = Quotas::default();
    let daily = RuleName::new("daily").unwrap();
    let at = ts("2026-11-23T12:00:00Z");
    assert!(
        q.reset(&cfg, &daily, &id("101"), at).is_none(),
        "nothing counted yet"
    );
    q.step(
        &cfg,
        &[spent(
            "101",
            10,
            0,
            "2026-11-23T11:00:00Z",
            "2026-11-23T11:01:00Z",
        )],
        at,
    );
    q.step(
        &cfg,
        &[spent(
            "102",
            5_000_000_000,
            0,
            "2026-11-23T11:00:00Z",
            "2026-11-23T11:01:00Z",
        )],
        at,
    );
    q.take_changes();
    assert_eq!(
        q.reset(&cfg, &daily, &id("101"), at),
        Some(None),
        "not exceeded: no event"
    );
    let lifted = q.reset(&cfg, &daily, &id("102"), at).unwrap().unwrap();
    assert_eq!((lifted.state.as_str(), lifted.used.get()), ("restored", 0));
    let u = q.get(&daily, &id("102")).unwrap();
    assert_eq!(
        (u.upload, u.download, u.exceeded, u.notified),
        (0, 0, false, 0)
    );
    assert_eq!(
        u.period.start,
        ts("2026-11-23T00:00:00Z"),
        "same period, from zero"
    );
    assert_eq!(q.take_changes().len(), 2, "both resets are persisted");
    assert!(q.in_force(&cfg, &id("102")).is_none());
}

/// A store quota of an instance that moved here: what other hosts counted in the period
/// adds to this host's count, only in the period it was counted for, and events say
/// which part was whose.
#[test]
fn bytes_counted_elsewhere_add_to_this_hosts_count_in_their_period_only() {
    let mut cfg = config(
        r#"
[[rule]]
name = "fleet"
period = "day"
timezone = "UTC"
direction = "both"
limit = "1000B"
action = "warn"
instances = ["101"]
"#,
    );
    let set = |cfg: &mut Config, start: &str, bytes: u64| {
        let rule = cfg
            .rules
            .get(&RuleName::new("fleet").unwrap())
            .unwrap()
            .clone();
        let mut rules: Vec<crate::config::RuleConfig> = vec![crate::config::RuleConfig {
            elsewhere: Some(crate::config::Elsewhere {
                period_start: ts(start),
                bytes,
            }),
            ..rule
        }];
        cfg.rules = crate::config::Rules::new(std::mem::take(&mut rules));
    };
    // 900 B were counted on the other host today.
    set(&mut cfg, "2026-03-02T00:00:00Z", 900);
    let mut q = Quotas::default();
    // (spent here, at) → events, with (used, elsewhere) of the exceed
    let e = q.step(
        &cfg,
        &[spent(
            "101",
            60,
            0,
            "2026-03-02T10:00:00Z",
            "2026-03-02T10:01:00Z",
        )],
        ts("2026-03-02T10:01:00Z"),
    );
    assert_eq!(states(&e), vec![], "960 of 1000: not yet");
    let e = q.step(
        &cfg,
        &[spent(
            "101",
            0,
            41,
            "2026-03-02T10:01:00Z",
            "2026-03-02T10:02:00Z",
        )],
        ts("2026-03-02T10:02:00Z"),
    );
    assert_eq!(states(&e), vec![ev("fleet", "101", "exceeded")]);
    assert_eq!((e[0].used.get(), e[0].elsewhere), (1001, 900));
    // The next day starts from nothing: yesterday's elsewhere is not today's.
    let e = q.step(
        &cfg,
        &[spent(
            "101",
            500,
            0,
            "2026-03-03T00:00:00Z",
            "2026-03-03T00:01:00Z",
        )],
        ts("2026-03-03T00:01:00Z"),
    );
    assert_eq!(states(&e), vec![ev("fleet", "101", "restored")]);
    let e = q.step(
        &cfg,
        &[spent(
            "101",
            499,
            0,
            "2026-03-03T00:01:00Z",
            "2026-03-03T00:02:00Z",
        )],
        ts("2026-03-03T00:02:00Z"),
    );
    assert_eq!(states(&e), vec![], "999 here, nothing elsewhere today");
    // The store's next answer for today: 2 B elsewhere puts it over.
    set(&mut cfg, "2026-03-03T00:00:00Z", 2);
    let e = q.step(
        &cfg,
        &[spent(
            "101",
            0,
            0,
            "2026-03-03T00:02:00Z",
            "2026-03-03T00:03:00Z",
        )],
        ts("2026-03-03T00:03:00Z"),
    );
    assert_eq!(states(&e), vec![ev("fleet", "101", "exceeded")]);
    assert_eq!((e[0].used.get(), e[0].elsewhere), (1001, 2));
}

/// A top-up (the store's limit raised mid-period) lifts an exceed at once, as a
/// period's end would; the next bytes over the new limit exceed it again.
#[test]
fn a_raised_limit_lifts_the_exceed_until_the_new_limit_is_passed() {
    let mut cfg = config(DAILY);
    let mut q = Quotas::default();
    let e = q.step(
        &cfg,
        &[spent(
            "101",
            1200,
            0,
            "2026-03-02T10:00:00Z",
            "2026-03-02T10:01:00Z",
        )],
        ts("2026-03-02T10:01:00Z"),
    );
    assert!(
        states(&e).contains(&ev("daily", "101", "exceeded")),
        "{e:?}"
    );
    let name = RuleName::new("daily").unwrap();
    let raised = crate::config::RuleConfig {
        limit: Bytes::new(1000 + 500),
        ..cfg.rules.get(&name).unwrap().clone()
    };
    cfg.rules = crate::config::Rules::new(vec![raised]);
    // (spent, at) → events
    let steps = [
        (
            0,
            "2026-03-02T10:02:00Z",
            vec![ev("daily", "101", "restored")],
        ),
        (200, "2026-03-02T10:03:00Z", vec![]),
        (
            200,
            "2026-03-02T10:04:00Z",
            vec![ev("daily", "101", "exceeded")],
        ),
    ];
    let mut from = "2026-03-02T10:01:00Z";
    for (bytes, at, want) in steps {
        let e = q.step(&cfg, &[spent("101", bytes, 0, from, at)], ts(at));
        assert_eq!(states(&e), want, "at {at}");
        from = at;
    }
    let u = q.get(&name, &id("101")).unwrap();
    assert!(u.exceeded);
    assert_eq!(u.upload, 1600);
}

/// A pool's member on this host sends nothing, but the rest of the project passes the
/// limit: the count is judged again every tick, and exceeds without a byte of its own.
#[test]
fn a_count_moved_only_elsewhere_exceeds_without_local_bytes() {
    let mut cfg = config(DAILY);
    let name = RuleName::new("daily").unwrap();
    let mut q = Quotas::default();
    let e = q.step(
        &cfg,
        &[spent(
            "101",
            100,
            0,
            "2026-03-02T10:00:00Z",
            "2026-03-02T10:01:00Z",
        )],
        ts("2026-03-02T10:01:00Z"),
    );
    assert_eq!(states(&e), vec![]);
    let moved = crate::config::RuleConfig {
        elsewhere: Some(crate::config::Elsewhere {
            period_start: ts("2026-03-02T00:00:00Z"),
            bytes: 950,
        }),
        ..cfg.rules.get(&name).unwrap().clone()
    };
    cfg.rules = crate::config::Rules::new(vec![moved]);
    let e = q.step(&cfg, &[], ts("2026-03-02T10:02:00Z"));
    assert_eq!(
        states(&e),
        vec![
            ev("daily", "101", "threshold 0.5"),
            ev("daily", "101", "threshold 0.9"),
            ev("daily", "101", "exceeded")
        ]
    );
    assert_eq!((e[2].used.get(), e[2].elsewhere), (1050, 950));
    assert_eq!(
        q.step(&cfg, &[], ts("2026-03-02T10:03:00Z")),
        vec![],
        "once"
    );
}

/// A committed rate is the store's verdict, not this host's count: an instance that
/// moved here idle is exceeded the moment the store says so, bytes never exceed it
/// (nor cross its shares), the store's "no longer over" lifts it, and a verdict on
/// another period does not hold in this one.
#[test]
fn a_rule_the_store_judges_follows_its_verdict_not_the_bytes() {
    let mut cfg = config(DAILY);
    let name = RuleName::new("daily").unwrap();
    let base = cfg.rules.get(&name).unwrap().clone();
    let judged = |period_start: &str, exceeded: bool| crate::config::RuleConfig {
        instances: std::collections::BTreeSet::from([id("101")]),
        judged: Some(crate::config::StoreVerdict {
            period_start: ts(period_start),
            exceeded,
        }),
        ..base.clone()
    };
    let mut q = Quotas::default();
    // (verdict: period start, exceeded; bytes this tick; at) → events
    type Step = (
        (&'static str, bool),
        u64,
        &'static str,
        Vec<(String, String, String)>,
    );
    let steps: Vec<Step> = vec![
        // Far over the 1000 B limit, but the store says not over: nothing.
        (
            ("2026-03-02T00:00:00Z", false),
            50_000,
            "2026-03-02T10:01:00Z",
            vec![],
        ),
        // A verdict about yesterday does not hold today.
        (
            ("2026-03-01T00:00:00Z", true),
            0,
            "2026-03-02T10:02:00Z",
            vec![],
        ),
        // Today's verdict: exceeded without a byte this tick.
        (
            ("2026-03-02T00:00:00Z", true),
            0,
            "2026-03-02T10:03:00Z",
            vec![ev("daily", "101", "exceeded")],
        ),
        // The store's next answer: back under the commit, lifted.
        (
            ("2026-03-02T00:00:00Z", false),
            0,
            "2026-03-02T10:04:00Z",
            vec![ev("daily", "101", "restored")],
        ),
    ];
    for (i, ((start, over), bytes, at, want)) in steps.into_iter().enumerate() {
        cfg.rules = crate::config::Rules::new(vec![judged(start, over)]);
        let t = ts(at);
        let from = t - jiff::SignedDuration::from_secs(60);
        let spent = (bytes > 0).then(|| Spent {
            instance: id("101"),
            upload: bytes,
            download: 0,
            from,
            to: t,
            estimated: false,
        });
        let e = q.step(&cfg, spent.as_slice(), t);
        assert_eq!(states(&e), want, "step {i}");
    }
    // A judged exceed keeps its action while the verdict stands.
    cfg.rules = crate::config::Rules::new(vec![judged("2026-03-02T00:00:00Z", true)]);
    let e = q.step(&cfg, &[], ts("2026-03-02T10:05:00Z"));
    assert_eq!(states(&e), vec![ev("daily", "101", "exceeded")]);
    assert_eq!(
        q.in_force(&cfg, &id("101")).map(|f| f.action),
        Some(ActionKind::RateLimit)
    );
}
