//! The shapes the store answers with, the same whichever database is behind it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::model::{Limit, Membership};
use super::traffic::ShownTrafficQuota;
use crate::model::percentile::Percentiles;

/// One counted resource of one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceView {
    pub limit: Limit,
    /// instance, project, class, default, or none (unlimited).
    pub from: String,
    pub in_use: i64,
    pub reserved: i64,
    /// The settable range's floor: a limit below in_use + reserved would leave the
    /// instance over quota at once (anything from here up, or -1, is fine).
    pub settable_min: i64,
}

/// `GET /v1/instances/{id}/quota`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceQuota {
    pub instance: String,
    #[serde(flatten)]
    pub membership: Membership,
    pub limits: BTreeMap<String, ResourceView>,
    pub traffic: Vec<ShownTrafficQuota>,
}

/// What is set at one level (a class, a project, the default, an instance's overrides).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeView {
    pub name: String,
    /// A project's quota class.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub class: Option<String>,
    pub limits: BTreeMap<String, Limit>,
    pub traffic: Vec<ShownTrafficQuota>,
}

impl ScopeView {
    /// What is set at `scope` (read by a backend), or `None` when nothing is set and the
    /// scope is not `known` otherwise (a project row, an instance's membership).
    pub fn assemble(
        scope: &super::model::Scope,
        class: Option<String>,
        known: bool,
        limits: BTreeMap<String, Limit>,
        traffic: &[super::traffic::TrafficQuota],
    ) -> Option<ScopeView> {
        let (kind, name) = scope.key();
        if !known && limits.is_empty() && traffic.is_empty() {
            return None;
        }
        Some(ScopeView {
            name: name.to_owned(),
            class,
            limits,
            traffic: traffic
                .iter()
                .map(|q| ShownTrafficQuota::of(q, kind))
                .collect(),
        })
    }
}

/// `GET /v1/instances/{id}/usage?period=…`: the period holding `at` (default now).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficUsage {
    pub instance: String,
    pub period: String,
    pub start: String,
    pub end: String,
    pub upload: u64,
    pub download: u64,
    pub total: u64,
    /// This period's traffic quotas with how much of each is used.
    pub quotas: Vec<QuotaUse>,
    /// With `percentile=N`: the period's Nth percentile of 5-minute rates so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentiles: Option<PercentileUse>,
}

/// A period's percentiles as the API answers them: bit/s as plain numbers (`null` when
/// no interval was ranked), and how many intervals they stand on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PercentileUse {
    pub percentile: u8,
    /// Intervals ranked, idle ones (zero) included.
    pub samples: u64,
    /// Intervals left out: the agent was down and their bytes were spread over the gap.
    pub estimated: u64,
    pub upload_bps: Option<u64>,
    pub download_bps: Option<u64>,
    /// The larger of upload and download per interval.
    pub max_bps: Option<u64>,
    /// Upload plus download per interval.
    pub aggregate_bps: Option<u64>,
}

impl PercentileUse {
    /// Nothing to rank: no interval of the period was recorded.
    pub fn none(p: crate::model::percentile::Percentile) -> PercentileUse {
        PercentileUse {
            percentile: p.get(),
            samples: 0,
            estimated: 0,
            upload_bps: None,
            download_bps: None,
            max_bps: None,
            aggregate_bps: None,
        }
    }
}

impl From<&Percentiles> for PercentileUse {
    fn from(p: &Percentiles) -> Self {
        let bps = |r: Option<crate::model::units::Rate>| r.map(|r| r.bits_per_sec());
        PercentileUse {
            percentile: p.percentile.get(),
            samples: p.samples,
            estimated: p.estimated,
            upload_bps: bps(p.upload),
            download_bps: bps(p.download),
            max_bps: bps(p.max),
            aggregate_bps: bps(p.aggregate),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaUse {
    pub resource: String,
    /// Bytes; for a committed rate (`rate_95th`), its commit in bit/s.
    pub limit: u64,
    /// Bytes; for a committed rate, the period's 95th percentile so far in bit/s.
    pub used: u64,
    /// Over the limit (0 while under it), in the limit's unit: what a panel bills as
    /// overage.
    pub overage: u64,
    /// A committed rate's direction (absent for a volume).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub direction: Option<String>,
    pub on_exceed: String,
    pub exceeded: bool,
    /// The quota's own period: a monthly quota's starts on its billing day.
    pub start: String,
    pub end: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reset_day: Option<u8>,
    /// Of `limit`, what top-ups for this period added.
    #[serde(default)]
    pub topups: u64,
}

/// An agent as the store last heard from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentView {
    pub agent: String,
    pub last_report: String,
    pub last_seq: u64,
}

/// `GET /v1/fleet`: what the fleet dashboard shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fleet {
    pub period: String,
    pub start: String,
    pub end: String,
    pub agents: Vec<AgentView>,
    /// The biggest talkers of the period, biggest first, with their quotas' use.
    pub instances: Vec<TrafficUsage>,
}

/// `GET /v1/stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub backend: String,
    pub instances: u64,
    pub projects: u64,
    pub classes: u64,
    pub active_reservations: u64,
    pub applied_reports: u64,
    /// Samples whose span another host also reported for the same instance (both are
    /// counted: a live migration moves an instance mid-tick).
    #[serde(default)]
    pub overlapping_samples: u64,
    pub agents: Vec<AgentView>,
}

/// The per-resource view of an instance's standings (both backends answer with it).
pub fn resource_views(standings: Vec<super::model::Standing>) -> BTreeMap<String, ResourceView> {
    standings
        .into_iter()
        .map(|s| {
            (
                s.resource.as_str().to_owned(),
                ResourceView {
                    limit: s.limit,
                    from: s.limit_from.into(),
                    in_use: s.in_use,
                    reserved: s.reserved,
                    settable_min: s.in_use.max(0).saturating_add(s.reserved.max(0)),
                },
            )
        })
        .collect()
}

/// A quota (its limit with the period's top-ups) with its own period's [start, end),
/// what it used in its own unit (bytes of its resource; a committed rate's percentile
/// so far in bit/s), and the top-ups' bytes.
pub type QuotaSpan = (
    super::traffic::TrafficQuota,
    (jiff::Timestamp, jiff::Timestamp),
    u64,
    u64,
);

/// An instance's traffic in one period with the use of each of that period's quotas.
pub fn traffic_usage(
    instance: &str,
    period: super::traffic::StorePeriod,
    (start, end): (jiff::Timestamp, jiff::Timestamp),
    (upload, download): (u64, u64),
    quotas: Vec<QuotaSpan>,
) -> TrafficUsage {
    use super::traffic::Measure;
    TrafficUsage {
        instance: instance.to_owned(),
        period: period.to_string(),
        start: start.to_string(),
        end: end.to_string(),
        upload,
        download,
        total: upload.saturating_add(download),
        quotas: quotas
            .into_iter()
            .filter(|(q, _, _, _)| q.period == period)
            .map(|(q, (qs, qe), used, topups)| {
                let (limit, direction) = match q.measure {
                    Measure::Volume { limit, .. } => (limit.get(), None),
                    Measure::Rate95th { direction, commit } => {
                        (commit.bits_per_sec(), Some(direction.as_str().to_owned()))
                    }
                };
                QuotaUse {
                    resource: q.name().to_owned(),
                    limit,
                    used,
                    overage: used.saturating_sub(limit),
                    direction,
                    on_exceed: q.on_exceed.name().into(),
                    exceeded: used > limit,
                    start: qs.to_string(),
                    end: qe.to_string(),
                    reset_day: (q.reset_day != 1).then_some(q.reset_day),
                    topups,
                }
            })
            .collect(),
        percentiles: None,
    }
}
