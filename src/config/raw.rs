//! The config file as written: strings for units, every key optional, unknown keys
//! collected (not fatal) so they are reported together with the other problems.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::Problem;

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawConfig {
    pub agent: Option<RawAgent>,
    pub log: Option<RawLog>,
    pub ledger: Option<RawLedger>,
    pub penalty: Option<RawPenalty>,
    pub instances: Option<BTreeMap<String, RawInstance>>,
    pub rule: Option<Vec<RawRule>>,
    pub hooks: Option<RawHooks>,
    pub webhook: Option<Vec<RawWebhook>>,
    pub store: Option<RawStore>,
    pub inventory: Option<RawInventory>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawInventory {
    pub sources: Option<Vec<String>>,
    pub refresh: Option<String>,
    pub proxmox: Option<RawProxmox>,
    pub libvirt: Option<RawLibvirt>,
    pub incus: Option<RawIncus>,
    pub ovs: Option<RawOvsSource>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawOvsSource {
    pub db_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawProxmox {
    pub config_dir: Option<String>,
    pub include_templates: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawLibvirt {
    pub status_dir: Option<String>,
    pub virsh: Option<String>,
    pub uri: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawIncus {
    pub socket: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawStore {
    pub url: Option<String>,
    pub token: Option<String>,
    pub token_file: Option<String>,
    pub database: Option<String>,
    pub listen: Option<String>,
    pub timezone: Option<String>,
    pub host: Option<String>,
    pub spool_max: Option<String>,
    pub quota_refresh: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawWebhook {
    pub url: Option<String>,
    pub secret: Option<String>,
    pub timeout: Option<String>,
    pub events: Option<Vec<String>>,
}

/// A drop-in file of `agent.instances_dir`: only `[instances."ID"]` tables.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawDropIn {
    pub instances: Option<BTreeMap<String, RawInstance>>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawRule {
    pub name: Option<String>,
    pub enabled: Option<bool>,
    pub period: Option<String>,
    pub reset_day: Option<RawResetDay>,
    pub timezone: Option<String>,
    pub direction: Option<String>,
    pub limit: Option<String>,
    pub action: Option<String>,
    pub rate: Option<RawRuleRate>,
    pub notify_at: Option<Vec<f64>>,
    pub instances: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
    pub exclude: Option<Vec<String>>,
}

/// A month's billing day (1..=31) or a week's first day ("monday").
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawResetDay {
    Day(i64),
    Weekday(String),
}

/// `shutdown = ["virsh", "shutdown", "{instance}"]` or `shutdown = "hypervisor"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawShutdown {
    Argv(Vec<String>),
    Word(String),
}

/// `rate = "10mbit"` (both directions) or `rate = { upload = …, download = …,
/// packets = … }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawRuleRate {
    Both(String),
    PerDirection {
        upload: Option<String>,
        download: Option<String>,
        packets: Option<String>,
    },
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawHooks {
    pub shutdown: Option<RawShutdown>,
    pub on_reset: Option<Vec<String>>,
    pub timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawAgent {
    pub interval: Option<String>,
    pub interfaces: Option<Vec<String>>,
    pub backend: Option<String>,
    pub state_dir: Option<String>,
    pub data_dir: Option<String>,
    pub ovs_vsctl: Option<String>,
    pub ovsdb: Option<String>,
    pub ovs_client: Option<String>,
    pub command_timeout: Option<String>,
    pub enforce_base: Option<bool>,
    pub instances_dir: Option<String>,
    pub listen: Option<String>,
    pub allowed_hosts: Option<Vec<String>>,
    pub metrics_public: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawLedger {
    pub keep_5m: Option<String>,
    pub keep_hourly: Option<String>,
    pub keep_events: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawLog {
    pub dir: Option<String>,
    pub format: Option<String>,
    pub level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawPenalty {
    pub base_rate: Option<String>,
    pub download_rate: Option<String>,
    pub packet_rate: Option<String>,
    pub burst: Option<String>,
    pub stage: Option<Vec<RawStage>>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawStage {
    pub usage: Option<f64>,
    pub trigger: Option<String>,
    pub rate: Option<f64>,
    pub duration: Option<String>,
    pub pps: Option<String>,
    pub packet_rate: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawInstance {
    pub base_rate: Option<String>,
    pub download_rate: Option<String>,
    pub packet_rate: Option<String>,
    pub tags: Option<Vec<String>>,
}

/// Parse `text`; returns the raw config and the paths of keys the schema does not know.
pub(super) fn parse<T: serde::de::DeserializeOwned>(
    text: &str,
    is_json: bool,
) -> Result<(T, Vec<String>), Problem> {
    let mut unknown = Vec::new();
    let mut note = |path: serde_ignored::Path<'_>| unknown.push(dotted(&path.to_string()));
    let raw = if is_json {
        let mut de = serde_json::Deserializer::from_str(text);
        serde_ignored::deserialize(&mut de, &mut note)
            .map_err(|e| Problem::new("", format!("invalid JSON: {e}")))?
    } else {
        let de = toml::Deserializer::parse(text)
            .map_err(|e| Problem::new("", format!("invalid TOML: {}", e.to_string().trim())))?;
        serde_ignored::deserialize(de, &mut note)
            .map_err(|e| Problem::new("", format!("invalid TOML: {}", e.to_string().trim())))?
    };
    Ok((raw, unknown))
}

/// serde_ignored prints sequence indices as `stage.0`; show them as `stage[1]` (1-based,
/// because `penalty.stage[1]` *is* stage 1).
fn dotted(path: &str) -> String {
    let mut out = String::new();
    for part in path.split('.').filter(|p| *p != "?") {
        match part.parse::<usize>() {
            Ok(i) => out.push_str(&format!("[{}]", i + 1)),
            Err(_) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(part);
            }
        }
    }
    out
}
