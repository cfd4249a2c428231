//! What a panel sends to set limits (`PUT /v1/instances/{id}/quota`, `/v1/classes/{name}`,
//! `/v1/projects/{id}`, `/v1/defaults`), checked into typed form with every error naming
//! its field (`limits.ipv4`, `traffic[1].period`).

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::model::{BUILTIN_RESOURCES, Limit, StoreError};
use super::traffic::{TrafficQuota, TrafficResource, WireTrafficQuota};
use crate::model::ids::Label;

/// The counted resources a store accepts: the built-in ones plus those its config declares.
#[derive(Debug, Clone)]
pub struct KnownResources(BTreeSet<String>);

impl KnownResources {
    pub fn new(declared: &[Label]) -> KnownResources {
        KnownResources(
            BUILTIN_RESOURCES
                .iter()
                .map(|s| (*s).to_owned())
                .chain(declared.iter().map(|l| l.as_str().to_owned()))
                .collect(),
        )
    }

    /// `name` as a counted resource, or why not (for the error naming `field`).
    pub fn counted(&self, field: &str, name: &str) -> Result<Label, StoreError> {
        let invalid = |reason: String| StoreError::Invalid {
            field: field.to_owned(),
            reason,
        };
        if name.parse::<TrafficResource>().is_ok() {
            return Err(invalid(format!(
                "{name} is metered traffic: set it under \"traffic\" with a period"
            )));
        }
        if !self.0.contains(name) {
            let known: Vec<&str> = self.0.iter().map(String::as_str).collect();
            return Err(invalid(format!(
                "unknown resource {name:?} (known: {}; others must be declared in the store config)",
                known.join(", ")
            )));
        }
        Label::new(name).map_err(|e| invalid(e.to_string()))
    }
}

/// The body of a PUT that sets what one level allows.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireSpec {
    /// Instances only: the project it belongs to.
    #[serde(default)]
    pub project: Option<String>,
    /// Instances and projects: the quota class.
    #[serde(default)]
    pub class: Option<String>,
    #[serde(default)]
    pub limits: BTreeMap<String, Limit>,
    #[serde(default)]
    pub traffic: Vec<WireTrafficQuota>,
}

/// A checked [`WireSpec`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spec {
    pub project: Option<Label>,
    pub class: Option<Label>,
    pub limits: BTreeMap<Label, Limit>,
    pub traffic: Vec<TrafficQuota>,
}

fn label(field: &str, v: &Option<String>) -> Result<Option<Label>, StoreError> {
    v.as_deref()
        .map(|s| {
            Label::new(s).map_err(|e| StoreError::Invalid {
                field: field.to_owned(),
                reason: e.to_string(),
            })
        })
        .transpose()
}

impl WireSpec {
    pub fn validate(&self, known: &KnownResources) -> Result<Spec, StoreError> {
        let mut limits = BTreeMap::new();
        for (name, limit) in &self.limits {
            limits.insert(known.counted(&format!("limits.{name}"), name)?, *limit);
        }
        let mut traffic: Vec<TrafficQuota> = Vec::new();
        for (i, q) in self.traffic.iter().enumerate() {
            let q = q
                .validate()
                .map_err(|(field, reason)| StoreError::Invalid {
                    field: format!("traffic[{i}].{field}"),
                    reason,
                })?;
            if traffic
                .iter()
                .any(|t| (t.name(), t.period) == (q.name(), q.period))
            {
                return Err(StoreError::Invalid {
                    field: format!("traffic[{i}]"),
                    reason: format!("a second {} quota per {}", q.name(), q.period),
                });
            }
            traffic.push(q);
        }
        Ok(Spec {
            project: label("project", &self.project)?,
            class: label("class", &self.class)?,
            limits,
            traffic,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> KnownResources {
        KnownResources::new(&[Label::new("gpus").unwrap()])
    }

    #[test]
    fn a_spec_checks_each_field_by_name() {
        let ok: WireSpec = serde_json::from_str(
            r#"{"class":"basic","limits":{"ipv4":2,"gpus":-1},
                "traffic":[{"resource":"traffic_total","period":"month","limit":"1TB","on_exceed":"stop"}]}"#,
        )
        .unwrap();
        let spec = ok.validate(&known()).unwrap();
        assert_eq!(spec.limits.len(), 2);
        assert_eq!(spec.class.unwrap().as_str(), "basic");

        // (body, field named in the error)
        let table = [
            (r#"{"limits":{"ipv5":1}}"#, "limits.ipv5"),
            (r#"{"limits":{"traffic_total":1}}"#, "limits.traffic_total"),
            (r#"{"class":"has space"}"#, "class"),
            (
                r#"{"traffic":[{"resource":"traffic_total","period":"day","limit":1,"on_exceed":"warn"},
                               {"resource":"traffic_total","period":"day","limit":2,"on_exceed":"warn"}]}"#,
                "traffic[1]",
            ),
            (
                r#"{"traffic":[{"resource":"traffic_total","period":"fortnight","limit":1,"on_exceed":"warn"}]}"#,
                "traffic[0].period",
            ),
        ];
        for (body, field) in table {
            let w: WireSpec = serde_json::from_str(body).unwrap();
            match w.validate(&known()) {
                Err(StoreError::Invalid { field: f, .. }) => assert_eq!(f, field, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }
}
