//! The quota store's words and its two rules, free of any database.
//!
//! - **Resolution**: an instance's limit for a resource is the first one set among its
//!   own override, its project's, its quota class's (the instance's class, else its
//!   project's), and the store default. None set at all means unlimited.
//! - **Over quota**: a request is refused when it asks for more (delta > 0) and
//!   `in_use + reserved + delta > limit`. Giving back (delta ≤ 0) is never refused, so
//!   an instance already over a lowered limit can still shrink.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::ids::{InstanceId, Label, NameError};

/// A counted resource's name: `ipv4`, `ipv6`, `port_mappings`, `proxies`, or one the
/// store config declares.
pub type Resource = Label;

/// The counted resources every store knows.
pub const BUILTIN_RESOURCES: [&str; 4] = ["ipv4", "ipv6", "port_mappings", "proxies"];

/// A hard limit: at most `Max(n)` (0: none allowed), or unlimited (-1 on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Unlimited,
    Max(u64),
}

impl Limit {
    /// From the wire and database form: -1 unlimited, ≥ 0 a maximum.
    pub fn from_i64(v: i64) -> Result<Limit, String> {
        match v {
            -1 => Ok(Limit::Unlimited),
            n if n >= 0 => Ok(Limit::Max(n as u64)),
            n => Err(format!("must be -1 (unlimited) or at least 0, got {n}")),
        }
    }

    pub fn to_i64(self) -> i64 {
        match self {
            Limit::Unlimited => -1,
            Limit::Max(n) => i64::try_from(n).unwrap_or(i64::MAX),
        }
    }

    /// Whether `in_use + reserved + delta` stays within this limit.
    pub fn admits(self, in_use: i64, reserved: i64, delta: i64) -> bool {
        match self {
            Limit::Unlimited => true,
            _ if delta <= 0 => true,
            Limit::Max(n) => {
                i128::from(in_use) + i128::from(reserved) + i128::from(delta) <= i128::from(n)
            }
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Unlimited => f.write_str("unlimited"),
            Limit::Max(n) => write!(f, "{n}"),
        }
    }
}

impl Serialize for Limit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(self.to_i64())
    }
}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Limit::from_i64(i64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Where a limit is set, from the most to the least specific.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Instance(InstanceId),
    Project(Label),
    Class(Label),
    Default,
}

impl Scope {
    /// (kind, name) as stored.
    pub fn key(&self) -> (&'static str, &str) {
        match self {
            Scope::Instance(i) => ("instance", i.as_str()),
            Scope::Project(p) => ("project", p.as_str()),
            Scope::Class(c) => ("class", c.as_str()),
            Scope::Default => ("default", ""),
        }
    }
}

/// Which project and class an instance belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub project: Option<Label>,
    pub class: Option<Label>,
}

/// The limits set at each level for one resource, as read for one instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitChain {
    pub instance: Option<Limit>,
    pub project: Option<Limit>,
    /// The instance's own class, else its project's.
    pub class: Option<Limit>,
    pub default: Option<Limit>,
}

impl LimitChain {
    /// The limit in force and the level it came from.
    pub fn resolve(&self) -> (Limit, &'static str) {
        [
            (self.instance, "instance"),
            (self.project, "project"),
            (self.class, "class"),
            (self.default, "default"),
        ]
        .into_iter()
        .find_map(|(l, from)| l.map(|l| (l, from)))
        .unwrap_or((Limit::Unlimited, "none"))
    }
}

/// Requested changes per resource (positive: more; negative: give back).
pub type Deltas = BTreeMap<Resource, i64>;

/// Why a request was refused: the first resource it would push over its limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OverQuota {
    pub resource: Resource,
    pub limit: i64,
    pub in_use: i64,
    pub reserved: i64,
    pub requested: i64,
}

impl fmt::Display for OverQuota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} in use + {} reserved + {} requested exceeds the limit of {}",
            self.resource, self.in_use, self.reserved, self.requested, self.limit
        )
    }
}

/// One resource's standing for one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Standing {
    pub resource: Resource,
    pub limit: Limit,
    /// Which level the limit came from: instance, project, class, default or none.
    pub limit_from: &'static str,
    pub in_use: i64,
    pub reserved: i64,
}

/// Standings from what a backend read: the limits set anywhere in the instance's chain
/// as (level, resource, wire value) and its use as (resource, in_use, reserved). Both
/// backends read the same rows in their own dialect and build the answer here.
pub fn standings_from(
    limits: impl IntoIterator<Item = (String, String, i64)>,
    uses: impl IntoIterator<Item = (String, i64, i64)>,
) -> Result<Vec<Standing>, StoreError> {
    let mut chains: BTreeMap<String, LimitChain> = BTreeMap::new();
    for (kind, resource, v) in limits {
        let limit = Limit::from_i64(v).map_err(|reason| StoreError::Database {
            what: "reading limits",
            source: cause(reason),
        })?;
        let c = chains.entry(resource).or_default();
        match kind.as_str() {
            "instance" => c.instance = Some(limit),
            "project" => c.project = Some(limit),
            "class" => c.class = Some(limit),
            _ => c.default = Some(limit),
        }
    }
    let mut use_of: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for (resource, in_use, reserved) in uses {
        let e = use_of.entry(resource).or_default();
        e.0 += in_use;
        e.1 += reserved;
    }
    let names: std::collections::BTreeSet<&String> = chains.keys().chain(use_of.keys()).collect();
    Ok(names
        .into_iter()
        .filter_map(|name| {
            let resource = Label::new(name).ok()?;
            let (limit, from) = chains.get(name).copied().unwrap_or_default().resolve();
            let (in_use, reserved) = use_of.get(name).copied().unwrap_or_default();
            Some(Standing {
                resource,
                limit,
                limit_from: from,
                in_use,
                reserved,
            })
        })
        .collect())
}

/// Check every delta against its standing; the first refusal, in resource order.
pub fn check(standings: &[Standing], deltas: &Deltas) -> Result<(), OverQuota> {
    for (resource, &delta) in deltas {
        let s = standings.iter().find(|s| &s.resource == resource);
        let (limit, in_use, reserved) = s.map_or((Limit::Unlimited, 0, 0), |s| {
            (s.limit, s.in_use, s.reserved)
        });
        if !limit.admits(in_use, reserved, delta) {
            return Err(OverQuota {
                resource: resource.clone(),
                limit: limit.to_i64(),
                in_use,
                reserved,
                requested: delta,
            });
        }
    }
    Ok(())
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("over quota: {0}")]
    OverQuota(OverQuota),
    #[error("{what} {name:?} not found")]
    NotFound { what: &'static str, name: String },
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("quota store database: {what}: {source}")]
    Database {
        what: &'static str,
        #[source]
        source: Cause,
    },
}

/// What a database error came from, shared so that `StoreError` stays `Clone` (one
/// error answers every request a group commit carried).
pub type Cause = std::sync::Arc<dyn std::error::Error + Send + Sync>;

/// `e` as a [`Cause`]: an error keeps its chain, a message becomes one.
pub fn cause(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Cause {
    std::sync::Arc::from(e.into())
}

impl From<NameError> for StoreError {
    fn from(e: NameError) -> Self {
        StoreError::Invalid {
            field: "name".into(),
            reason: e.to_string(),
        }
    }
}

/// Token errors keep the store's shapes: a bad id or role is the caller's (400), a
/// failed random source is the store's own (503).
impl From<crate::model::token::TokenError> for StoreError {
    fn from(e: crate::model::token::TokenError) -> Self {
        use crate::model::token::TokenError;
        match e {
            TokenError::Invalid { field, reason } => StoreError::Invalid {
                field: field.into(),
                reason,
            },
            TokenError::Host(e) => e.into(),
            TokenError::Random(e) => StoreError::Database {
                what: "making a token",
                source: cause(e),
            },
        }
    }
}

/// A reservation's id: random, unguessable, 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReservationId(String);

impl ReservationId {
    pub fn random() -> Result<ReservationId, StoreError> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(|e| StoreError::Database {
            what: "making a reservation id",
            source: cause(e),
        })?;
        Ok(ReservationId(hex::encode(bytes)))
    }

    pub fn parse(s: &str) -> Result<ReservationId, StoreError> {
        if s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(ReservationId(s.to_ascii_lowercase()))
        } else {
            Err(StoreError::Invalid {
                field: "reservation".into(),
                reason: format!("{s:?} is not a reservation id (32 hex digits)"),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(s: &str) -> Resource {
        Label::new(s).unwrap()
    }

    #[test]
    fn resolution_takes_the_most_specific_level_set() {
        let m = |n| Some(Limit::Max(n));
        // (instance, project, class, default) → (limit, from)
        let table = [
            (m(1), m(2), m(3), m(4), (Limit::Max(1), "instance")),
            (None, m(2), m(3), m(4), (Limit::Max(2), "project")),
            (None, None, m(3), m(4), (Limit::Max(3), "class")),
            (None, None, None, m(4), (Limit::Max(4), "default")),
            (None, None, None, None, (Limit::Unlimited, "none")),
            // -1 set on the instance beats a finite project limit.
            (
                Some(Limit::Unlimited),
                m(2),
                None,
                None,
                (Limit::Unlimited, "instance"),
            ),
            // 0 is a limit like any other: nothing allowed.
            (None, m(0), m(9), None, (Limit::Max(0), "project")),
        ];
        for (instance, project, class, default, want) in table {
            let chain = LimitChain {
                instance,
                project,
                class,
                default,
            };
            assert_eq!(chain.resolve(), want, "{chain:?}");
        }
    }

    #[test]
    fn over_quota_is_more_than_the_limit_counting_reservations() {
        // (limit, in_use, reserved, delta, admitted)
        let table = [
            (Limit::Max(2), 1, 0, 1, true),
            (Limit::Max(2), 1, 1, 1, false),
            (Limit::Max(2), 2, 0, 1, false),
            (Limit::Max(0), 0, 0, 1, false),
            (Limit::Max(0), 0, 0, 0, true),
            // Over a lowered limit: giving back is always allowed.
            (Limit::Max(1), 5, 0, -1, true),
            (Limit::Unlimited, i64::MAX, i64::MAX, i64::MAX, true),
            (Limit::Max(u64::MAX), i64::MAX, i64::MAX, 1, true),
        ];
        for (limit, in_use, reserved, delta, want) in table {
            assert_eq!(
                limit.admits(in_use, reserved, delta),
                want,
                "{limit} {in_use}+{reserved}+{delta}"
            );
        }
    }

    #[test]
    fn check_names_the_first_refused_resource() {
        let st = |r: &str, limit, in_use| Standing {
            resource: res(r),
            limit,
            limit_from: "class",
            in_use,
            reserved: 1,
        };
        let standings = [
            st("ipv4", Limit::Max(2), 1),
            st("proxies", Limit::Max(10), 0),
        ];
        let mut d = Deltas::new();
        d.insert(res("proxies"), 3);
        d.insert(res("ipv6"), 100); // no standing: unlimited
        assert!(check(&standings, &d).is_ok());
        d.insert(res("ipv4"), 1);
        let err = check(&standings, &d).unwrap_err();
        assert_eq!(
            err,
            OverQuota {
                resource: res("ipv4"),
                limit: 2,
                in_use: 1,
                reserved: 1,
                requested: 1
            }
        );
        assert_eq!(
            err.to_string(),
            "ipv4: 1 in use + 1 reserved + 1 requested exceeds the limit of 2"
        );
    }

    #[test]
    fn limits_on_the_wire_are_minus_one_or_a_count() {
        assert_eq!(serde_json::to_string(&Limit::Unlimited).unwrap(), "-1");
        assert_eq!(serde_json::from_str::<Limit>("0").unwrap(), Limit::Max(0));
        let err = serde_json::from_str::<Limit>("-2").unwrap_err().to_string();
        assert!(
            err.contains("must be -1 (unlimited) or at least 0, got -2"),
            "{err}"
        );
    }
}
