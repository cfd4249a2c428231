//! A quota store's traffic quotas as quota rules: one rule per (instance, resource,
//! period), named `store:<period>:<resource>:<instance>` so a limit the panel changes
//! mid-period keeps its count (the name, the count's key, stays the same).

use std::collections::{BTreeMap, BTreeSet};

use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{ActionKind, Direction, Elsewhere, RuleConfig, StoreVerdict};
use crate::model::ids::{InstanceId, RuleName};
use crate::model::units::Bytes;
use crate::store::traffic::{Measure, OnExceed, ShownTrafficQuota, TrafficResource};

/// What an agent fetched from its store (and caches on disk for when the store is away).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreQuotaSet {
    /// The store's zone: its days and months are the rules' periods.
    pub timezone: String,
    /// Instance id → its traffic quotas in force.
    pub quotas: BTreeMap<String, Vec<ShownTrafficQuota>>,
}

/// `store:<period>:<resource>:<instance>`; a project's pool counted for one of its
/// instances is `store:<period>:<resource>-pool:<instance>`; a committed rate's
/// resource is `rate95`.
fn rule_name(
    period: &str,
    measure: Measure,
    pool: bool,
    instance: &InstanceId,
) -> Option<RuleName> {
    let short = match measure {
        Measure::Volume { resource, .. } => match resource {
            TrafficResource::Upload => "upload",
            TrafficResource::Download => "download",
            TrafficResource::Total => "total",
        },
        Measure::Rate95th { .. } => "rate95",
    };
    let kind = if pool { "-pool" } else { "" };
    let plain = format!("store:{period}:{short}{kind}:{instance}");
    RuleName::new(&plain).ok().or_else(|| {
        // Long ids: a stable digest keeps the name within 64 bytes.
        let digest = hex::encode(&Sha256::digest(instance.as_str().as_bytes())[..8]);
        RuleName::new(&format!("store:{period}:{short}{kind}:{digest}")).ok()
    })
}

impl StoreQuotaSet {
    /// The rules, and what could not be turned into one (to log).
    pub fn rules(&self, shutdown_hook: bool) -> (Vec<RuleConfig>, Vec<String>) {
        let mut problems = Vec::new();
        if self.quotas.is_empty() {
            // Nothing fetched yet (its zone is not known either): nothing to say.
            return (Vec::new(), problems);
        }
        let timezone = TimeZone::get(&self.timezone).unwrap_or_else(|e| {
            problems.push(format!(
                "the store's time zone {:?} is unknown here ({e}); using UTC",
                self.timezone
            ));
            TimeZone::UTC
        });
        let mut out = Vec::new();
        for (id, quotas) in &self.quotas {
            let Ok(instance) = InstanceId::new(id) else {
                problems.push(format!("instance {id:?} is not a valid id here; skipped"));
                continue;
            };
            for shown in quotas {
                let q = match shown.typed() {
                    Ok(q) => q,
                    Err((field, why)) => {
                        problems.push(format!("instance {id}: quota {field}: {why}; skipped"));
                        continue;
                    }
                };
                let Some(name) = rule_name(&shown.period, q.measure, q.pool, &instance) else {
                    continue;
                };
                // A volume is counted here, on top of the fleet's count; a committed
                // rate is the store's verdict (its bytes are counted to show, in both
                // directions, against no limit).
                let (direction, limit, judged) = match q.measure {
                    Measure::Volume { resource, limit } => (
                        match resource {
                            TrafficResource::Upload => Direction::Upload,
                            TrafficResource::Download => Direction::Download,
                            TrafficResource::Total => Direction::Both,
                        },
                        limit,
                        None,
                    ),
                    Measure::Rate95th { .. } => {
                        let Some(j) = &shown.judged else {
                            problems.push(format!(
                                "instance {id}: the store sent its {} quota without a verdict; skipped",
                                q.name()
                            ));
                            continue;
                        };
                        (
                            Direction::Both,
                            Bytes::new(0),
                            Some(StoreVerdict {
                                period_start: j.period_start,
                                exceeded: j.exceeded,
                            }),
                        )
                    }
                };
                let (action, upload_rate, download_rate) = match q.on_exceed {
                    OnExceed::Warn => (ActionKind::Warn, None, None),
                    OnExceed::Limit { upload, download } => {
                        (ActionKind::RateLimit, upload, download)
                    }
                    OnExceed::Disconnect => (ActionKind::Disconnect, None, None),
                    OnExceed::Stop => {
                        if !shutdown_hook {
                            problems.push(format!(
                                "instance {id}: on_exceed \"stop\" needs hooks.shutdown in this agent's config; the exceed is only logged"
                            ));
                        }
                        (ActionKind::Shutdown, None, None)
                    }
                };
                out.push(RuleConfig {
                    name,
                    enabled: true,
                    period: q.kind(),
                    timezone: timezone.clone(),
                    direction,
                    limit,
                    action,
                    upload_rate,
                    download_rate,
                    // The store's quotas carry byte rates only.
                    packet_rate: None,
                    notify_at: Vec::new(),
                    instances: BTreeSet::from([instance.clone()]),
                    tags: BTreeSet::new(),
                    exclude: BTreeSet::new(),
                    elsewhere: shown.elsewhere.as_ref().map(|e| Elsewhere {
                        period_start: e.period_start,
                        bytes: e.bytes,
                    }),
                    judged,
                });
            }
        }
        (out, problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::calendar::PeriodKind;
    use crate::model::units::{Bytes, Rate};

    fn set(json: &str) -> StoreQuotaSet {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_terabyte_a_month_then_ten_megabit_becomes_one_rule_for_that_instance() {
        let s = set(r#"{"timezone":"Asia/Kolkata","quotas":{"101":[
                {"resource":"traffic_total","period":"month","limit":1000000000000,"on_exceed":"limit",
                 "upload_rate":"10mbit","download_rate":"10mbit","from":"instance"}],
              "102":[{"resource":"traffic_upload","period":"day","limit":5,"on_exceed":"stop","from":"class"}]}}"#);
        let (rules, problems) = s.rules(false);
        assert_eq!(rules.len(), 2);
        let r = &rules[0];
        assert_eq!(r.name.as_str(), "store:month:total:101");
        assert_eq!(
            (r.period, r.direction),
            (PeriodKind::Month(1), Direction::Both)
        );
        assert_eq!(r.limit, Bytes::new(1_000_000_000_000));
        assert_eq!(r.action, ActionKind::RateLimit);
        assert_eq!(r.upload_rate, Some(Rate::from_bits_per_sec(10_000_000)));
        assert_eq!(r.timezone.iana_name(), Some("Asia/Kolkata"));
        assert!(r.covers(&InstanceId::new("101").unwrap(), &BTreeSet::new()));
        assert!(!r.covers(&InstanceId::new("102").unwrap(), &BTreeSet::new()));
        assert_eq!(rules[1].name.as_str(), "store:day:upload:102");
        assert_eq!(rules[1].action, ActionKind::Shutdown);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("needs hooks.shutdown"), "{problems:?}");
        assert!(s.rules(true).1.is_empty());
    }

    /// The store's billing day and the rest of the fleet's count reach the rule: its
    /// months start on the customer's day, in the store's zone.
    #[test]
    fn a_billing_day_and_the_fleets_count_become_the_rules() {
        let s = set(r#"{"timezone":"Europe/Berlin","quotas":{"7":[
                {"resource":"traffic_total","period":"month","limit":1000,"on_exceed":"warn",
                 "reset_day":31,"from":"project",
                 "elsewhere":{"bytes":600,"period_start":"2027-01-30T23:00:00Z"}}]}}"#);
        let (rules, problems) = s.rules(true);
        assert!(problems.is_empty(), "{problems:?}");
        let r = &rules[0];
        assert_eq!(r.period, PeriodKind::Month(31));
        let feb = crate::model::calendar::period_containing(
            r.period,
            "2027-02-15T00:00:00Z".parse().unwrap(),
            &r.timezone,
        )
        .unwrap();
        assert_eq!(feb.start.to_string(), "2027-01-30T23:00:00Z");
        assert_eq!(r.elsewhere_in(feb.start), 600);
        assert_eq!(r.elsewhere_in(feb.end), 0, "not in the next period");
    }

    /// A project's pool becomes a rule of its own beside the instance's quota of the
    /// same resource and period, with the rest of the project's count elsewhere.
    #[test]
    fn a_pool_is_a_rule_of_its_own_beside_the_instances_quota() {
        let s = set(r#"{"timezone":"UTC","quotas":{"p1":[
                {"resource":"traffic_total","period":"day","limit":5000,"on_exceed":"warn","from":"instance"},
                {"resource":"traffic_total","period":"day","limit":1000,"on_exceed":"disconnect","from":"pool",
                 "pool":true,"elsewhere":{"bytes":500,"period_start":"2027-01-01T00:00:00Z"}}]}}"#);
        let (rules, problems) = s.rules(true);
        assert!(problems.is_empty(), "{problems:?}");
        let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["store:day:total:p1", "store:day:total-pool:p1"]);
        assert_eq!(rules[1].action, ActionKind::Disconnect);
        assert_eq!(
            rules[1].elsewhere_in("2027-01-01T00:00:00Z".parse().unwrap()),
            500
        );
    }

    #[test]
    fn a_long_instance_id_gets_a_stable_short_name() {
        let long = "x".repeat(60);
        let s = set(&format!(
            r#"{{"timezone":"UTC","quotas":{{"{long}":[{{"resource":"traffic_download","period":"hour","limit":9,"on_exceed":"warn","from":"default"}}]}}}}"#
        ));
        let (a, _) = s.rules(true);
        // Pinned: the ledger keys a period's count by this name, so a change across
        // releases would start every such count over. (SHA-256 of the id, first 8
        // bytes in hex, as Python's hashlib gives it.)
        assert_eq!(a[0].name.as_str(), "store:hour:download:42f2d97335669f86");
        assert!(a[0].name.as_str().len() <= 64);
        // A short id is kept as it is.
        let s = set(
            r#"{"timezone":"UTC","quotas":{"101":[{"resource":"traffic_total","period":"month","limit":9,"on_exceed":"warn","from":"default"}]}}"#,
        );
        assert_eq!(s.rules(true).0[0].name.as_str(), "store:month:total:101");
    }

    /// A committed rate becomes a rule the store judges: its verdict rides along, its
    /// name says `rate95`, and one sent without a verdict is skipped and said.
    #[test]
    fn a_committed_rate_becomes_the_stores_verdict() {
        let s = set(r#"{"timezone":"UTC","quotas":{"9":[
                {"resource":"rate_95th","period":"month","commit_bps":100000000,"direction":"max",
                 "on_exceed":"limit","upload_rate":"10mbit","download_rate":"10mbit","from":"instance",
                 "judged":{"period_start":"2027-01-01T00:00:00Z","rate_bps":120000000,"exceeded":true}}],
              "10":[{"resource":"rate_95th","period":"month","commit_bps":1,"direction":"max",
                 "on_exceed":"warn","from":"instance"}]}}"#);
        let (rules, problems) = s.rules(true);
        assert_eq!(rules.len(), 1);
        let r = &rules[0];
        assert_eq!(r.name.as_str(), "store:month:rate95:9");
        assert_eq!(
            r.judged,
            Some(StoreVerdict {
                period_start: "2027-01-01T00:00:00Z".parse().unwrap(),
                exceeded: true
            })
        );
        assert_eq!(r.action, ActionKind::RateLimit);
        assert!(r.is_over(0, "2027-01-01T00:00:00Z".parse().unwrap()));
        assert!(!r.is_over(u64::MAX, "2027-02-01T00:00:00Z".parse().unwrap()));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("without a verdict"), "{problems:?}");
    }
}
