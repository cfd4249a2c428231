//! Metered traffic in the store: the quotas a panel sets ("101: 1 TB a month, then 10
//! Mbit") and the periods the agents' reports are added to.
//!
//! A traffic quota is keyed by (resource, period) and resolves through the same chain as
//! counted limits: instance > project > class > default. The store keeps usage in hourly
//! buckets aligned to the store's time zone, so a day or a month is an exact sum of
//! hours however late a report arrives.

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Deserializer, Serialize};

use crate::model::calendar::{PeriodKind, period_containing};
use crate::model::percentile::Direction;
use crate::model::units::{Bytes, Rate};

/// Which counter a traffic quota counts. Upload is what the instance sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TrafficResource {
    Upload,
    Download,
    Total,
}

impl TrafficResource {
    pub const ALL: [TrafficResource; 3] = [
        TrafficResource::Upload,
        TrafficResource::Download,
        TrafficResource::Total,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TrafficResource::Upload => "traffic_upload",
            TrafficResource::Download => "traffic_download",
            TrafficResource::Total => "traffic_total",
        }
    }

    /// The bytes this resource counts out of an (upload, download) pair.
    pub fn of(self, upload: u64, download: u64) -> u64 {
        match self {
            TrafficResource::Upload => upload,
            TrafficResource::Download => download,
            TrafficResource::Total => upload.saturating_add(download),
        }
    }
}

impl FromStr for TrafficResource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        TrafficResource::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("{s:?} is not a traffic resource (traffic_upload, traffic_download, traffic_total)")
            })
    }
}

impl fmt::Display for TrafficResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A store period. Months start on the 1st, in the store's time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StorePeriod {
    Hour,
    Day,
    Month,
}

impl StorePeriod {
    pub fn as_str(self) -> &'static str {
        match self {
            StorePeriod::Hour => "hour",
            StorePeriod::Day => "day",
            StorePeriod::Month => "month",
        }
    }

    pub fn kind(self) -> PeriodKind {
        match self {
            StorePeriod::Hour => PeriodKind::Hour,
            StorePeriod::Day => PeriodKind::Day,
            StorePeriod::Month => PeriodKind::Month(1),
        }
    }

    /// [start, end) of the period holding `at`, in `tz`.
    pub fn containing(self, at: Timestamp, tz: &TimeZone) -> Option<(Timestamp, Timestamp)> {
        period_containing(self.kind(), at, tz)
            .ok()
            .map(|p| (p.start, p.end))
    }
}

impl FromStr for StorePeriod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "hour" => Ok(StorePeriod::Hour),
            "day" => Ok(StorePeriod::Day),
            "month" => Ok(StorePeriod::Month),
            _ => Err(format!("{s:?} is not a period (hour, day, month)")),
        }
    }
}

impl fmt::Display for StorePeriod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the agent does once the quota is used up, as the panel names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExceed {
    Warn,
    /// Rate-limit to these rates (`None`: that direction is left alone; at least one set).
    Limit {
        upload: Option<Rate>,
        download: Option<Rate>,
    },
    Disconnect,
    Stop,
}

impl OnExceed {
    pub fn name(self) -> &'static str {
        match self {
            OnExceed::Warn => "warn",
            OnExceed::Limit { .. } => "limit",
            OnExceed::Disconnect => "disconnect",
            OnExceed::Stop => "stop",
        }
    }
}

impl OnExceed {
    /// The rate-limit rates (none for the other actions).
    pub fn rates(self) -> (Option<Rate>, Option<Rate>) {
        match self {
            OnExceed::Limit { upload, download } => (upload, download),
            _ => (None, None),
        }
    }
}

/// What a traffic quota bounds: a volume of bytes, or the period's 95th percentile of
/// 5-minute rates (a committed rate, billed as transit is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// At most `limit` bytes of `resource` in the period.
    Volume {
        resource: TrafficResource,
        limit: Bytes,
    },
    /// The 95th percentile of the period's 5-minute rates in `direction` at most
    /// `commit`; what it passes the commit by is the overage, in bit/s. Only the store
    /// sees every host's share of an interval, so only the store can judge it.
    Rate95th { direction: Direction, commit: Rate },
}

/// The percentile a `rate_95th` quota bills.
pub const RATE_QUOTA_PERCENTILE: u8 = 95;

/// The resource name of a committed-rate quota.
pub const RATE_95TH: &str = "rate_95th";

impl Measure {
    /// The resource as the panel names it (`traffic_total`, `rate_95th`): with the
    /// period, what makes a quota one of its kind at its level.
    pub fn name(&self) -> &'static str {
        match self {
            Measure::Volume { resource, .. } => resource.as_str(),
            Measure::Rate95th { .. } => RATE_95TH,
        }
    }
}

/// One traffic quota: its [`Measure`] per `period`, then `on_exceed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrafficQuota {
    pub measure: Measure,
    pub period: StorePeriod,
    pub on_exceed: OnExceed,
    /// The billing day a monthly quota's period starts on (1..=31, clamped to the
    /// month's last day; 1 for any other period): a customer's anniversary.
    pub reset_day: u8,
    /// A project's pooled quota: the limit is on the sum of all its instances'
    /// traffic across the fleet, and its action falls on every one of them.
    pub pool: bool,
}

impl TrafficQuota {
    /// The calendar unit the quota counts in (its months start on its billing day).
    pub fn kind(&self) -> PeriodKind {
        match self.period {
            StorePeriod::Month => PeriodKind::Month(self.reset_day),
            p => p.kind(),
        }
    }

    /// [start, end) of the quota's period holding `at`, in `tz`.
    pub fn bounds(&self, at: Timestamp, tz: &TimeZone) -> Option<(Timestamp, Timestamp)> {
        period_containing(self.kind(), at, tz)
            .ok()
            .map(|p| (p.start, p.end))
    }

    /// The resource's name (see [`Measure::name`]).
    pub fn name(&self) -> &'static str {
        self.measure.name()
    }

    /// A volume quota's resource and limit (`None`: a committed rate).
    pub fn volume(&self) -> Option<(TrafficResource, Bytes)> {
        match self.measure {
            Measure::Volume { resource, limit } => Some((resource, limit)),
            Measure::Rate95th { .. } => None,
        }
    }
}

impl TrafficQuota {
    /// From a stored row: names as written, bytes and bits per second as signed
    /// integers; `direction` and `commit` are a committed rate's (NULL for a volume).
    #[allow(clippy::too_many_arguments)]
    pub fn from_stored(
        resource: &str,
        period: &str,
        limit: i64,
        on_exceed: &str,
        (upload_rate, download_rate): (Option<i64>, Option<i64>),
        reset_day: i64,
        pool: i64,
        (direction, commit): (Option<String>, Option<i64>),
    ) -> Result<TrafficQuota, String> {
        let rate = |v: Option<i64>| v.map(|v| Rate::from_bits_per_sec(v.max(0) as u64));
        let on_exceed = match on_exceed {
            "warn" => OnExceed::Warn,
            "disconnect" => OnExceed::Disconnect,
            "stop" => OnExceed::Stop,
            "limit" => OnExceed::Limit {
                upload: rate(upload_rate),
                download: rate(download_rate),
            },
            other => return Err(format!("unknown on_exceed {other:?}")),
        };
        let measure = if resource == RATE_95TH {
            Measure::Rate95th {
                direction: direction
                    .as_deref()
                    .ok_or("a rate_95th quota without a direction")?
                    .parse()?,
                commit: Rate::from_bits_per_sec(
                    commit.ok_or("a rate_95th quota without a commit")?.max(0) as u64,
                ),
            }
        } else {
            Measure::Volume {
                resource: resource.parse()?,
                limit: Bytes::new(limit.max(0) as u64),
            }
        };
        Ok(TrafficQuota {
            measure,
            period: period.parse()?,
            on_exceed,
            reset_day: u8::try_from(reset_day)
                .ok()
                .filter(|d| (1..=31).contains(d))
                .ok_or_else(|| format!("reset_day {reset_day} is not 1 to 31"))?,
            pool: pool != 0,
        })
    }
}

/// The quotas in force from the rows set along an instance's chain, as (level, quota):
/// per (resource, period) the most specific level wins; each with that level's name.
pub fn resolve(
    rows: impl IntoIterator<Item = (String, TrafficQuota)>,
) -> Vec<(TrafficQuota, &'static str)> {
    let rank = |k: &str| match k {
        "instance" => (0, "instance"),
        "project" => (1, "project"),
        "class" => (2, "class"),
        _ => (3, "default"),
    };
    // Keyed in the resources' own order (upload, download, total, then a committed
    // rate), the order panels have always been shown.
    let order = |q: &TrafficQuota| match q.measure {
        Measure::Volume { resource, .. } => TrafficResource::ALL
            .iter()
            .position(|r| *r == resource)
            .unwrap_or(0),
        Measure::Rate95th { .. } => TrafficResource::ALL.len(),
    };
    let mut best: std::collections::BTreeMap<
        (usize, StorePeriod),
        (u8, TrafficQuota, &'static str),
    > = std::collections::BTreeMap::new();
    let mut pools = Vec::new();
    for (kind, q) in rows {
        // A pool limits the project's sum, not each instance: it stands beside the
        // instance's own quota of the same resource and period.
        if q.pool {
            pools.push((q, "pool"));
            continue;
        }
        let (r, from) = rank(&kind);
        let e = best
            .entry((order(&q), q.period))
            .or_insert((u8::MAX, q, from));
        if r < e.0 {
            *e = (r, q, from);
        }
    }
    best.into_values()
        .map(|(_, q, f)| (q, f))
        .chain(pools)
        .collect()
}

/// A traffic quota on the wire:
/// `{"resource":"traffic_total","period":"month","limit":"1TB","on_exceed":"limit","rate":"10Mbit"}`,
/// or a committed rate:
/// `{"resource":"rate_95th","period":"month","commit":"100mbit","direction":"max","on_exceed":"warn"}`.
/// `limit` is bytes (a number, or a string with a unit), `commit` bit/s (a number, or a
/// rate with a unit); `rate` (both directions) or `upload_rate`/`download_rate` go with
/// `on_exceed: limit` only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireTrafficQuota {
    pub resource: String,
    pub period: String,
    #[serde(default, deserialize_with = "some_bytes_or_string")]
    pub limit: Option<u64>,
    /// A `rate_95th` quota's committed rate.
    #[serde(default, deserialize_with = "some_bits_or_rate")]
    pub commit: Option<u64>,
    /// A `rate_95th` quota's direction: upload, download, max or aggregate.
    #[serde(default)]
    pub direction: Option<String>,
    pub on_exceed: String,
    #[serde(default)]
    pub rate: Option<String>,
    #[serde(default)]
    pub upload_rate: Option<String>,
    #[serde(default)]
    pub download_rate: Option<String>,
    /// A monthly quota's billing day (1..=31; default 1).
    #[serde(default)]
    pub reset_day: Option<i64>,
    /// A project's quota on the sum of its instances' traffic (default false).
    #[serde(default)]
    pub pool: Option<bool>,
}

fn some_bytes_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    bytes_or_string(d).map(Some)
}

/// Bits per second: a number, or a rate with its unit (`"100mbit"`).
fn some_bits_or_rate<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        N(u64),
        S(String),
    }
    match Either::deserialize(d)? {
        Either::N(n) => Ok(Some(n)),
        Either::S(s) => s
            .parse::<Rate>()
            .map(|r| Some(r.bits_per_sec()))
            .map_err(serde::de::Error::custom),
    }
}

fn bytes_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        N(u64),
        S(String),
    }
    match Either::deserialize(d)? {
        Either::N(n) => Ok(n),
        Either::S(s) => s
            .parse::<Bytes>()
            .map(Bytes::get)
            .map_err(serde::de::Error::custom),
    }
}

impl WireTrafficQuota {
    /// Check every field; the error names the field (relative to this quota).
    pub fn validate(&self) -> Result<TrafficQuota, (&'static str, String)> {
        let period = self.period.parse().map_err(|e| ("period", e))?;
        let measure = self.measure(period)?;
        let rate = |field: &'static str, v: &Option<String>| {
            v.as_deref()
                .map(|s| {
                    s.parse::<Rate>()
                        .map_err(|e| e.to_string())
                        .and_then(Rate::as_limit)
                        .map_err(|e| (field, e))
                })
                .transpose()
        };
        let both = rate("rate", &self.rate)?;
        let upload = rate("upload_rate", &self.upload_rate)?.or(both);
        let download = rate("download_rate", &self.download_rate)?.or(both);
        let on_exceed = match self.on_exceed.as_str() {
            "warn" => OnExceed::Warn,
            "disconnect" => OnExceed::Disconnect,
            "stop" => OnExceed::Stop,
            "limit" => {
                if upload.is_none() && download.is_none() {
                    return Err((
                        "rate",
                        "on_exceed \"limit\" needs rate, upload_rate or download_rate".into(),
                    ));
                }
                OnExceed::Limit { upload, download }
            }
            other => {
                return Err((
                    "on_exceed",
                    format!("{other:?} is not one of warn, limit, disconnect, stop"),
                ));
            }
        };
        if !matches!(on_exceed, OnExceed::Limit { .. }) && upload.or(download).is_some() {
            return Err((
                "rate",
                format!(
                    "a rate goes with on_exceed \"limit\" only, not {:?}",
                    self.on_exceed
                ),
            ));
        }
        let reset_day = match (self.reset_day, period) {
            (None, _) => 1,
            (Some(d), StorePeriod::Month) => u8::try_from(d)
                .ok()
                .filter(|d| (1..=31).contains(d))
                .ok_or((
                    "reset_day",
                    format!(
                        "{d} is not a day of the month (1 to 31; 31 means each month's last day)"
                    ),
                ))?,
            (Some(_), p) => {
                return Err((
                    "reset_day",
                    format!(
                        "a billing day goes with period \"month\" only, not {:?}",
                        p.as_str()
                    ),
                ));
            }
        };
        Ok(TrafficQuota {
            measure,
            period,
            on_exceed,
            reset_day,
            pool: self.pool.unwrap_or(false),
        })
    }

    /// A volume's `limit`, or a committed rate's `commit` and `direction`: each kind
    /// refuses the other's fields, so a quota never carries a bound it does not use.
    fn measure(&self, period: StorePeriod) -> Result<Measure, (&'static str, String)> {
        if self.resource != RATE_95TH {
            let resource = self.resource.parse().map_err(|e: String| {
                (
                    "resource",
                    format!("{}, or {RATE_95TH}", e.trim_end_matches(')')) + ")",
                )
            })?;
            for (field, set) in [
                ("commit", self.commit.is_some()),
                ("direction", self.direction.is_some()),
            ] {
                if set {
                    return Err((
                        field,
                        format!(
                            "goes with resource {RATE_95TH:?} only, not {:?}",
                            self.resource
                        ),
                    ));
                }
            }
            return match self.limit {
                None => Err(("limit", "is required (bytes per period)".into())),
                Some(0) => Err(("limit", "must be more than 0 bytes".into())),
                Some(n) => Ok(Measure::Volume {
                    resource,
                    limit: Bytes::new(n),
                }),
            };
        }
        if self.limit.is_some() {
            return Err((
                "limit",
                format!("a {RATE_95TH} quota has a commit (bit/s), not a limit in bytes"),
            ));
        }
        if period == StorePeriod::Hour {
            return Err((
                "period",
                "a 95th percentile is taken over a day or a month, not an hour (12 intervals)"
                    .into(),
            ));
        }
        let commit = match self.commit {
            None => return Err(("commit", "is required (the committed rate)".into())),
            Some(0) => return Err(("commit", "must be more than 0 bit/s".into())),
            Some(n) => Rate::from_bits_per_sec(n),
        };
        let direction = self
            .direction
            .as_deref()
            .ok_or((
                "direction",
                "is required (upload, download, max, aggregate)".to_owned(),
            ))?
            .parse()
            .map_err(|e| ("direction", e))?;
        Ok(Measure::Rate95th { direction, commit })
    }
}

/// The most one top-up may add: far beyond any sale (a petabyte), so a typo of a few
/// zeros is refused rather than granted.
pub const MAX_TOPUP: u64 = 1_000_000_000_000_000;

/// `POST /v1/instances/{id}/traffic/topups`:
/// `{"resource":"traffic_total","bytes":"100GB"}` (`period` defaults to `month`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireTopup {
    pub resource: String,
    #[serde(deserialize_with = "bytes_or_string")]
    pub bytes: u64,
    #[serde(default)]
    pub period: Option<String>,
}

impl WireTopup {
    pub fn validate(
        &self,
    ) -> Result<(TrafficResource, StorePeriod, Bytes), (&'static str, String)> {
        let resource = self.resource.parse().map_err(|e| ("resource", e))?;
        let period = self
            .period
            .as_deref()
            .unwrap_or("month")
            .parse()
            .map_err(|e| ("period", e))?;
        match self.bytes {
            0 => Err(("bytes", "must be more than 0 bytes".into())),
            b if b > MAX_TOPUP => Err((
                "bytes",
                format!("{b} bytes is more than one top-up may add ({MAX_TOPUP}, a petabyte)"),
            )),
            b => Ok((resource, period, Bytes::new(b))),
        }
    }
}

/// Traffic bought on top of a quota for one of its periods: it adds to that period's
/// limit and ends with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topup {
    pub id: String,
    pub resource: String,
    pub period: String,
    pub bytes: u64,
    /// The quota's period it is for.
    pub start: Timestamp,
    pub end: Timestamp,
    pub created: Timestamp,
}

/// A traffic quota as the API shows it, with the level it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShownTrafficQuota {
    pub resource: String,
    pub period: String,
    /// A volume quota's bytes (absent for a committed rate).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub limit: Option<u64>,
    /// A `rate_95th` quota's committed rate, in bit/s.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub commit_bps: Option<u64>,
    /// A `rate_95th` quota's direction.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub direction: Option<String>,
    pub on_exceed: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub upload_rate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub download_rate: Option<String>,
    /// instance, project, class or default.
    pub from: String,
    /// A monthly quota's billing day (absent: the 1st, or not a monthly quota).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reset_day: Option<u8>,
    /// Of `limit`, what top-ups for the current period added (absent: none).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub topups: Option<u64>,
    /// A project's pooled quota (its count is the project's, across the fleet).
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub pool: bool,
    /// In an agent's lookup: what the other hosts reported of the instance in the
    /// quota's current period (absent in any other answer).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub elsewhere: Option<Elsewhere>,
    /// In an agent's lookup, for a committed rate: the store's verdict on the period so
    /// far (the agent cannot rank the fleet's curve itself).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub judged: Option<Judged>,
}

/// The store's verdict on a committed-rate quota's current period so far, for the
/// agent that asked: the percentile over every host's share of each interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Judged {
    pub period_start: jiff::Timestamp,
    /// The percentile so far in the quota's direction, in bit/s.
    pub rate_bps: u64,
    /// Whether it is above the commit.
    pub exceeded: bool,
}

/// The rest of the fleet's count of one quota, for the agent that asked: bytes in the
/// quota's resource that other hosts reported for the period starting at `period_start`.
/// The agent adds its own ledger's count to it, so a live-migrated instance's quota goes
/// on where it left off and nothing is counted twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Elsewhere {
    pub bytes: u64,
    pub period_start: jiff::Timestamp,
}

impl ShownTrafficQuota {
    pub fn of(q: &TrafficQuota, from: &str) -> ShownTrafficQuota {
        let (up, down) = q.on_exceed.rates();
        let (limit, commit, direction) = match q.measure {
            Measure::Volume { limit, .. } => (Some(limit.get()), None, None),
            Measure::Rate95th { direction, commit } => (
                None,
                Some(commit.bits_per_sec()),
                Some(direction.as_str().to_owned()),
            ),
        };
        ShownTrafficQuota {
            resource: q.name().to_owned(),
            period: q.period.to_string(),
            limit,
            commit_bps: commit,
            direction,
            on_exceed: q.on_exceed.name().into(),
            upload_rate: up.map(|r| r.to_string()),
            download_rate: down.map(|r| r.to_string()),
            from: from.into(),
            reset_day: (q.reset_day != 1).then_some(q.reset_day),
            topups: None,
            pool: q.pool,
            elsewhere: None,
            judged: None,
        }
    }

    /// Each resolved quota as shown.
    pub fn all(quotas: &[(TrafficQuota, &str)]) -> Vec<ShownTrafficQuota> {
        quotas
            .iter()
            .map(|(q, from)| ShownTrafficQuota::of(q, from))
            .collect()
    }

    /// Back to the typed form (what an agent does with a fetched quota).
    pub fn typed(&self) -> Result<TrafficQuota, (&'static str, String)> {
        WireTrafficQuota {
            resource: self.resource.clone(),
            period: self.period.clone(),
            limit: self.limit,
            commit: self.commit_bps,
            direction: self.direction.clone(),
            on_exceed: self.on_exceed.clone(),
            rate: None,
            upload_rate: self.upload_rate.clone(),
            download_rate: self.download_rate.clone(),
            reset_day: self.reset_day.map(i64::from),
            pool: Some(self.pool),
        }
        .validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(json: &str) -> WireTrafficQuota {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_panel_sets_a_terabyte_a_month_then_ten_megabit_in_one_object() {
        let q = wire(
            r#"{"resource":"traffic_total","period":"month","limit":"1TB","on_exceed":"limit","rate":"10Mbit"}"#,
        )
        .validate()
        .unwrap();
        let ten = Rate::from_bits_per_sec(10_000_000);
        assert_eq!(
            q,
            TrafficQuota {
                measure: Measure::Volume {
                    resource: TrafficResource::Total,
                    limit: Bytes::new(1_000_000_000_000),
                },
                period: StorePeriod::Month,
                on_exceed: OnExceed::Limit {
                    upload: Some(ten),
                    download: Some(ten)
                },
                reset_day: 1,
                pool: false,
            }
        );
        let shown = ShownTrafficQuota::of(&q, "instance");
        assert_eq!(shown.typed().unwrap(), q);
    }

    #[test]
    fn bad_quotas_name_their_field() {
        let table = [
            (
                r#"{"resource":"traffic_up","period":"month","limit":1,"on_exceed":"warn"}"#,
                "resource",
            ),
            (
                r#"{"resource":"traffic_total","period":"week","limit":1,"on_exceed":"warn"}"#,
                "period",
            ),
            (
                r#"{"resource":"traffic_total","period":"day","limit":0,"on_exceed":"warn"}"#,
                "limit",
            ),
            (
                r#"{"resource":"traffic_total","period":"day","limit":5,"on_exceed":"limit"}"#,
                "rate",
            ),
            (
                r#"{"resource":"traffic_total","period":"day","limit":5,"on_exceed":"warn","rate":"1Mbit"}"#,
                "rate",
            ),
            (
                r#"{"resource":"traffic_total","period":"day","limit":5,"on_exceed":"shutdown"}"#,
                "on_exceed",
            ),
            (
                r#"{"resource":"traffic_total","period":"day","limit":5,"on_exceed":"limit","upload_rate":"fast"}"#,
                "upload_rate",
            ),
            (
                r#"{"resource":"traffic_total","period":"month","limit":5,"on_exceed":"warn","reset_day":0}"#,
                "reset_day",
            ),
            (
                r#"{"resource":"traffic_total","period":"month","limit":5,"on_exceed":"warn","reset_day":32}"#,
                "reset_day",
            ),
            (
                r#"{"resource":"traffic_total","period":"month","limit":5,"on_exceed":"warn","reset_day":-3}"#,
                "reset_day",
            ),
            (
                r#"{"resource":"traffic_total","period":"day","limit":5,"on_exceed":"warn","reset_day":15}"#,
                "reset_day",
            ),
        ];
        for (json, field) in table {
            let (got, why) = wire(json).validate().unwrap_err();
            assert_eq!(got, field, "{json}: {why}");
        }
    }

    /// A committed rate reads as the panel writes it, and shows and reads back the same.
    #[test]
    fn a_committed_rate_is_a_commit_and_a_direction() {
        let q = wire(
            r#"{"resource":"rate_95th","period":"month","commit":"100mbit","direction":"aggregate","on_exceed":"limit","rate":"10mbit","reset_day":15}"#,
        )
        .validate()
        .unwrap();
        assert_eq!(
            q.measure,
            Measure::Rate95th {
                direction: Direction::Aggregate,
                commit: Rate::from_bits_per_sec(100_000_000)
            }
        );
        assert_eq!((q.name(), q.volume(), q.reset_day), ("rate_95th", None, 15));
        let shown = ShownTrafficQuota::of(&q, "instance");
        assert_eq!(
            (shown.limit, shown.commit_bps, shown.direction.as_deref()),
            (None, Some(100_000_000), Some("aggregate"))
        );
        assert_eq!(shown.typed().unwrap(), q);
        // A number is bit/s.
        let n = wire(
            r#"{"resource":"rate_95th","period":"day","commit":64000,"direction":"max","on_exceed":"warn"}"#,
        )
        .validate()
        .unwrap();
        assert_eq!(
            n.measure,
            Measure::Rate95th {
                direction: Direction::Max,
                commit: Rate::from_bits_per_sec(64_000)
            }
        );
        // A top-up buys bytes, never a rate.
        let topup: WireTopup =
            serde_json::from_str(r#"{"resource":"rate_95th","bytes":1}"#).unwrap();
        assert_eq!(topup.validate().unwrap_err().0, "resource");
    }

    #[test]
    fn bad_committed_rates_name_their_field() {
        let table = [
            // (quota, the field named, a word of the reason)
            (
                r#"{"resource":"rate_95th","period":"month","direction":"max","on_exceed":"warn"}"#,
                "commit",
                "required",
            ),
            (
                r#"{"resource":"rate_95th","period":"month","commit":0,"direction":"max","on_exceed":"warn"}"#,
                "commit",
                "more than 0",
            ),
            (
                r#"{"resource":"rate_95th","period":"month","commit":"fast","direction":"max","on_exceed":"warn"}"#,
                "",
                "not a rate",
            ),
            (
                r#"{"resource":"rate_95th","period":"month","commit":"1mbit","on_exceed":"warn"}"#,
                "direction",
                "required",
            ),
            (
                r#"{"resource":"rate_95th","period":"month","commit":"1mbit","direction":"in","on_exceed":"warn"}"#,
                "direction",
                "aggregate",
            ),
            (
                r#"{"resource":"rate_95th","period":"month","commit":"1mbit","direction":"max","limit":"1TB","on_exceed":"warn"}"#,
                "limit",
                "commit",
            ),
            (
                r#"{"resource":"rate_95th","period":"hour","commit":"1mbit","direction":"max","on_exceed":"warn"}"#,
                "period",
                "hour",
            ),
            (
                r#"{"resource":"traffic_total","period":"month","limit":5,"commit":"1mbit","on_exceed":"warn"}"#,
                "commit",
                "rate_95th",
            ),
            (
                r#"{"resource":"traffic_total","period":"month","limit":5,"direction":"max","on_exceed":"warn"}"#,
                "direction",
                "rate_95th",
            ),
            (
                r#"{"resource":"traffic_total","period":"month","on_exceed":"warn"}"#,
                "limit",
                "required",
            ),
            (
                r#"{"resource":"rate_96th","period":"month","commit":"1mbit","on_exceed":"warn"}"#,
                "resource",
                "rate_95th",
            ),
        ];
        for (json, field, word) in table {
            // A commit that is no rate fails as the body is read (serde names it).
            let parsed: Result<WireTrafficQuota, _> = serde_json::from_str(json);
            let (got, why) = match parsed {
                Ok(w) => w.validate().unwrap_err(),
                Err(e) => ("", e.to_string()),
            };
            assert_eq!(got, field, "{json}: {why}");
            assert!(why.contains(word), "{json}: {why}");
        }
    }

    /// A billing day's periods in the store's zone: the 31st is each month's last day
    /// (February's 28th), the 15th is the 15th, and a day quota's day across the spring
    /// DST change has 23 hours.
    #[test]
    fn billing_days_and_days_follow_the_store_zone() {
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        let quota = |json: &str| wire(json).validate().unwrap();
        let month = |day: u8| {
            quota(&format!(
                r#"{{"resource":"traffic_total","period":"month","limit":5,"on_exceed":"warn","reset_day":{day}}}"#
            ))
        };
        let day =
            quota(r#"{"resource":"traffic_total","period":"day","limit":5,"on_exceed":"warn"}"#);
        // (quota, at, [start, end) in UTC)
        let cases = [
            (
                month(31),
                "2027-02-15T12:00:00Z",
                "2027-01-30T23:00:00Z",
                "2027-02-27T23:00:00Z",
            ),
            (
                month(31),
                "2027-02-28T12:00:00Z",
                "2027-02-27T23:00:00Z",
                "2027-03-30T22:00:00Z",
            ),
            (
                month(31),
                "2027-04-10T12:00:00Z",
                "2027-03-30T22:00:00Z",
                "2027-04-29T22:00:00Z",
            ),
            (
                month(15),
                "2027-02-14T22:59:59Z",
                "2027-01-14T23:00:00Z",
                "2027-02-14T23:00:00Z",
            ),
            (
                month(15),
                "2027-02-14T23:00:00Z",
                "2027-02-14T23:00:00Z",
                "2027-03-14T23:00:00Z",
            ),
            (
                month(1),
                "2027-03-31T12:00:00Z",
                "2027-02-28T23:00:00Z",
                "2027-03-31T22:00:00Z",
            ),
            (
                day,
                "2027-03-28T12:00:00Z",
                "2027-03-27T23:00:00Z",
                "2027-03-28T22:00:00Z",
            ),
        ];
        for (q, at, start, end) in cases {
            let (s, e) = q.bounds(at.parse().unwrap(), &tz).unwrap();
            assert_eq!(
                (s.to_string(), e.to_string()),
                (start.to_owned(), end.to_owned()),
                "reset_day {} at {at}",
                q.reset_day
            );
        }
        let shown = ShownTrafficQuota::of(&month(31), "project");
        assert_eq!(shown.reset_day, Some(31));
        assert_eq!(shown.typed().unwrap(), month(31));
        assert_eq!(ShownTrafficQuota::of(&month(1), "project").reset_day, None);
    }

    #[test]
    fn periods_are_aligned_to_the_store_zone() {
        let tz = TimeZone::get("Asia/Kolkata").unwrap();
        let at: Timestamp = "2026-03-31T20:00:00Z".parse().unwrap(); // 01:30 on April 1st there
        let (start, end) = StorePeriod::Month.containing(at, &tz).unwrap();
        assert_eq!(start.to_string(), "2026-03-31T18:30:00Z");
        assert_eq!(end.to_string(), "2026-04-30T18:30:00Z");
        let (h, _) = StorePeriod::Hour.containing(at, &tz).unwrap();
        assert_eq!(h.to_string(), "2026-03-31T19:30:00Z");
    }
}
