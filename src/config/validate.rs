//! Raw config → typed [`Config`], collecting every problem with its field path.

use std::path::{Path, PathBuf};
use std::time::Duration;

use regex::Regex;

use super::raw::{RawAgent, RawConfig, RawLedger, RawLog, RawPenalty, RawStage, RawStore};
use super::rules::{ActionKind, check_hooks, check_instances, check_rules, check_webhooks};
use super::{
    AgentConfig, BackendKind, BurstSpec, Config, DEFAULT_COMMAND_TIMEOUT, DEFAULT_DATA_DIR,
    DEFAULT_INSTANCES_DIR, DEFAULT_INTERVAL, DEFAULT_LOG_DIR, DEFAULT_QUOTA_REFRESH,
    DEFAULT_SPOOL_MAX, DEFAULT_STATE_DIR, DEFAULT_STORE_LISTEN, InterfacePattern, LedgerConfig,
    Loaded, LogConfig, LogFormat, OvsClientKind, PenaltyConfig, Problem, STORE_FILE, StageConfig,
    StoreConfig, StoreTarget, TokenSource,
};
use crate::model::ids::Label;
use crate::model::units::{Bytes, Fraction, PacketRate, Rate, parse_duration};

/// Collects problems; each `check_*` returns the value when it is valid.
#[derive(Default)]
pub(super) struct Checker {
    pub(super) errors: Vec<Problem>,
    pub(super) warnings: Vec<Problem>,
}

impl Checker {
    pub(super) fn error(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(Problem::new(path, message.into()));
    }
    pub(super) fn warn(&mut self, path: &str, message: impl Into<String>) {
        self.warnings.push(Problem::new(path, message.into()));
    }

    pub(super) fn duration(
        &mut self,
        path: &str,
        value: Option<&str>,
        default: Duration,
        min: Duration,
    ) -> Duration {
        let Some(s) = value else { return default };
        match parse_duration(s) {
            Ok(d) if d > MAX_DURATION => {
                self.error(path, format!("must be at most 100 years, got {s:?}"));
                default
            }
            Ok(d) if d < min => {
                self.error(
                    path,
                    format!(
                        "must be at least {}, got {s:?}",
                        humantime::format_duration(min)
                    ),
                );
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.error(path, e.to_string());
                default
            }
        }
    }

    pub(super) fn rate(&mut self, path: &str, value: &str) -> Option<Rate> {
        value
            .parse::<Rate>()
            .map_err(|e| e.to_string())
            .and_then(Rate::as_limit)
            .map_err(|e| self.error(path, e))
            .ok()
    }

    pub(super) fn packet_rate(&mut self, path: &str, value: &str) -> Option<PacketRate> {
        value
            .parse::<PacketRate>()
            .map_err(|e| e.to_string())
            .and_then(PacketRate::as_limit)
            .map_err(|e| self.error(path, e))
            .ok()
    }

    fn fraction(&mut self, path: &str, value: Option<f64>) -> Option<Fraction> {
        let Some(v) = value else {
            self.error(path, "is required (a fraction of the base rate in (0, 1])");
            return None;
        };
        let f = Fraction::new(v);
        if f.is_none() {
            self.error(path, format!("must be in (0, 1], got {v}"));
        }
        f
    }
}

/// Validate a raw config completely; `Err` holds every problem found.
pub(super) fn validate(raw: RawConfig) -> Result<Loaded, Vec<Problem>> {
    let mut c = Checker::default();
    let data_dir = raw
        .agent
        .as_ref()
        .and_then(|a| a.data_dir.clone())
        .unwrap_or_else(|| DEFAULT_DATA_DIR.into());
    let agent = check_agent(&mut c, raw.agent.unwrap_or_default());
    let log = check_log(&mut c, raw.log.unwrap_or_default());
    let ledger = check_ledger(&mut c, raw.ledger.unwrap_or_default());
    let penalty = check_penalty(&mut c, raw.penalty);
    let instances = check_instances(&mut c, "", raw.instances.unwrap_or_default());
    let rules = check_rules(&mut c, raw.rule.unwrap_or_default());
    let hooks = check_hooks(&mut c, raw.hooks.unwrap_or_default());
    let webhooks = check_webhooks(&mut c, raw.webhook.unwrap_or_default());
    let store = raw.store.map(|s| check_store(&mut c, s, &data_dir));
    let mut inventory =
        super::inventory::check_inventory(&mut c, raw.inventory.unwrap_or_default());
    if let Some(a) = &agent {
        inventory.ovs.vsctl.clone_from(&a.ovs_vsctl);
        inventory.ovs.db.clone_from(&a.ovsdb);
        inventory.ovs.timeout = a.command_timeout;
    }
    if rules
        .iter()
        .any(|r| r.enabled && r.action == ActionKind::Shutdown)
        && hooks.shutdown.is_none()
    {
        c.error(
            "hooks.shutdown",
            "is required by a rule with action \"shutdown\": the command that stops an instance, e.g. [\"virsh\", \"shutdown\", \"{instance}\"]",
        );
    }
    if hooks.shutdown == Some(super::ShutdownHook::Hypervisor)
        && !inventory.sources.iter().any(|s| {
            matches!(
                s,
                super::SourceKind::Proxmox | super::SourceKind::Libvirt | super::SourceKind::Incus
            )
        })
    {
        c.error(
            "hooks.shutdown",
            "\"hypervisor\" stops an instance through the inventory source that found it: add \"libvirt\", \"proxmox\" or \"incus\" to inventory.sources",
        );
    }
    if !c.errors.is_empty() {
        return Err(c.errors);
    }
    let (Some(agent), Some(penalty)) = (agent, penalty) else {
        return Err(vec![Problem::new("", "invalid configuration".into())]);
    };
    if agent.backend == BackendKind::Ovs && agent.ovs_client == OvsClientKind::Vsctl {
        let limited = penalty.download_rate.is_some()
            || instances.values().any(|i| i.download_rate.is_some());
        if limited {
            c.warn(
                "penalty.download_rate",
                "with agent.ovs_client = \"vsctl\" the ovs backend limits upload only (ingress policing); download limits are decided and shown but reported enforce_failed — use the native client (the default), which shapes download with a linux-htb QoS on the port",
            );
        }
    }
    let packets =
        penalty.packet_rate.is_some() || instances.values().any(|i| i.packet_rate.is_some());
    let polices_packets =
        agent.backend == BackendKind::Ovs && agent.ovs_client == OvsClientKind::Native;
    if packets && agent.backend != BackendKind::None && !polices_packets {
        c.warn(
            "penalty.packet_rate",
            "packet-rate limits are enforced by the ovs backend with its native client only; with this backend they are decided and shown but reported enforce_failed",
        );
    }
    Ok(Loaded {
        config: Config {
            agent,
            log,
            ledger,
            penalty,
            instances,
            rules: super::Rules::new(rules),
            hooks,
            webhooks,
            store,
            inventory,
            claims: Default::default(),
        },
        warnings: c.warnings,
    })
}

/// The longest duration any field takes: every one is added to clocks and timestamps,
/// which a longer one would overflow (an agent that panics at start is a crash loop).
const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

/// The longest tick interval: a day (a tick rarer than that measures nothing useful).
const MAX_INTERVAL: Duration = Duration::from_secs(86_400);

fn check_agent(c: &mut Checker, a: RawAgent) -> Option<AgentConfig> {
    let mut interval = c.duration(
        "agent.interval",
        a.interval.as_deref(),
        DEFAULT_INTERVAL,
        Duration::from_secs(1),
    );
    if interval > MAX_INTERVAL {
        c.error(
            "agent.interval",
            format!(
                "must be at most 1day, got {:?}",
                a.interval.as_deref().unwrap_or_default()
            ),
        );
        interval = DEFAULT_INTERVAL;
    }
    let command_timeout = c.duration(
        "agent.command_timeout",
        a.command_timeout.as_deref(),
        DEFAULT_COMMAND_TIMEOUT,
        Duration::from_millis(100),
    );
    let mut interfaces = Vec::new();
    match a.interfaces {
        None => c.error(
            "agent.interfaces",
            "is required: at least one regex, e.g. '^kvm(?P<instance>[0-9]+)\\..*$'",
        ),
        Some(list) if list.is_empty() => c.error("agent.interfaces", "needs at least one regex"),
        Some(list) => {
            for (i, pattern) in list.iter().enumerate() {
                match Regex::new(pattern) {
                    Ok(re) => interfaces.push(InterfacePattern::new(re)),
                    Err(e) => c.error(
                        &format!("agent.interfaces[{}]", i + 1),
                        format!("invalid regex: {e}"),
                    ),
                }
            }
        }
    }
    let backend = match a.backend.as_deref() {
        None | Some("ovs") => BackendKind::Ovs,
        Some("tc") => BackendKind::Tc,
        Some("none") => BackendKind::None,
        Some(other) => {
            c.error(
                "agent.backend",
                format!("must be \"ovs\", \"tc\" or \"none\", got {other:?}"),
            );
            BackendKind::None
        }
    };
    if a.ovsdb.as_deref().is_some_and(|s| s.trim().is_empty()) {
        c.error(
            "agent.ovsdb",
            "must not be empty (leave it out for ovs-vsctl's default)",
        );
    }
    if a.ovs_vsctl.as_deref().is_some_and(|s| s.trim().is_empty()) {
        c.error("agent.ovs_vsctl", "must not be empty");
    }
    let ovs_client = match a.ovs_client.as_deref() {
        None | Some("native") => OvsClientKind::Native,
        Some("vsctl") => OvsClientKind::Vsctl,
        Some(other) => {
            c.error(
                "agent.ovs_client",
                format!("must be \"native\" or \"vsctl\", got {other:?}"),
            );
            OvsClientKind::Native
        }
    };
    if backend == BackendKind::Ovs
        && ovs_client == OvsClientKind::Native
        && let Some(db) = a.ovsdb.as_deref().filter(|s| !s.trim().is_empty())
        && let Err(e) = db.parse::<crate::sys::ovsdb::Endpoint>()
    {
        c.error("agent.ovsdb", e);
    }
    if a.state_dir.as_deref().is_some_and(|s| !s.starts_with('/')) {
        c.error("agent.state_dir", "must be an absolute path");
    }
    if a.instances_dir
        .as_deref()
        .is_some_and(|s| !s.starts_with('/'))
    {
        c.error("agent.instances_dir", "must be an absolute path");
    }
    if a.data_dir.as_deref().is_some_and(|s| !s.starts_with('/')) {
        c.error("agent.data_dir", "must be an absolute path");
    }
    let listen = match a.listen.as_deref().unwrap_or(super::DEFAULT_AGENT_LISTEN) {
        "" => None,
        addr => match addr.parse() {
            Ok(a) => Some(a),
            Err(e) => {
                c.error(
                    "agent.listen",
                    format!("{addr:?}: {e} (an IP:port, or \"\" to not serve the API)"),
                );
                None
            }
        },
    };
    let mut allowed_hosts = Vec::new();
    for (i, name) in a.allowed_hosts.unwrap_or_default().into_iter().enumerate() {
        match dns_name(&name) {
            Ok(n) => allowed_hosts.push(n),
            Err(why) => c.error(&format!("agent.allowed_hosts[{}]", i + 1), why),
        }
    }
    Some(AgentConfig {
        listen,
        allowed_hosts,
        metrics_public: a.metrics_public.unwrap_or(false),
        interval,
        interfaces: interfaces.into(),
        backend,
        state_dir: PathBuf::from(a.state_dir.unwrap_or_else(|| DEFAULT_STATE_DIR.into())),
        data_dir: PathBuf::from(a.data_dir.unwrap_or_else(|| DEFAULT_DATA_DIR.into())),
        ovs_vsctl: PathBuf::from(a.ovs_vsctl.unwrap_or_else(|| "ovs-vsctl".into())),
        ovsdb: a.ovsdb,
        ovs_client,
        command_timeout,
        enforce_base: a.enforce_base.unwrap_or(true),
        instances_dir: PathBuf::from(
            a.instances_dir
                .unwrap_or_else(|| DEFAULT_INSTANCES_DIR.into()),
        ),
    })
}

/// A DNS name as `Host` carries it, lower-cased: letters, digits and `-` in dot-separated
/// labels of 1 to 63 characters, no port.
pub fn dns_name(name: &str) -> Result<String, String> {
    let n = name.trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if n.is_empty() || n.len() > 253 || !n.split('.').all(label_ok) {
        return Err(format!(
            "{name:?} is not a DNS name (letters, digits, '-' and dots; no port, no scheme)"
        ));
    }
    Ok(n)
}

fn check_store(c: &mut Checker, s: RawStore, data_dir: &str) -> StoreConfig {
    let host = s.host.as_deref().and_then(|h| match Label::new(h) {
        Ok(l) => Some(l),
        Err(e) => {
            c.error("store.host", e.to_string());
            None
        }
    });
    let spool_max = match s.spool_max.as_deref().map(str::parse::<Bytes>) {
        None => DEFAULT_SPOOL_MAX,
        Some(Ok(b)) if b.get() >= 64 << 10 => b,
        Some(Ok(_)) => {
            c.error("store.spool_max", "must be at least 64KiB");
            DEFAULT_SPOOL_MAX
        }
        Some(Err(e)) => {
            c.error("store.spool_max", e.to_string());
            DEFAULT_SPOOL_MAX
        }
    };
    let quota_refresh = c.duration(
        "store.quota_refresh",
        s.quota_refresh.as_deref(),
        DEFAULT_QUOTA_REFRESH,
        Duration::from_secs(1),
    );
    let target = if let Some(url) = s.url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            c.error(
                "store.url",
                format!("must start with http:// or https://, got {url:?}"),
            );
        }
        for (set, key) in [
            (s.database.is_some(), "store.database"),
            (s.listen.is_some(), "store.listen"),
            (s.timezone.is_some(), "store.timezone"),
        ] {
            if set {
                c.error(
                    key,
                    "belongs to the embedded store; a store.url points elsewhere",
                );
            }
        }
        let token = match (s.token, s.token_file) {
            (Some(_), Some(_)) => {
                c.error("store.token", "set token or token_file, not both");
                TokenSource::Inline(String::new())
            }
            (Some(t), None) => {
                if crate::model::token::Token::parse(&t).is_none() {
                    c.error("store.token", "is not a sluice token (sluice_<id>_<secret>, from `sluice store token create`)");
                }
                TokenSource::Inline(t)
            }
            (None, Some(f)) if f.starts_with('/') => TokenSource::File(PathBuf::from(f)),
            (None, Some(_)) => {
                c.error("store.token_file", "must be an absolute path");
                TokenSource::Inline(String::new())
            }
            (None, None) => {
                c.error("store.token_file", "is required with store.url (or store.token): an agent token from `sluice store token create --role agent --host HOST`");
                TokenSource::Inline(String::new())
            }
        };
        StoreTarget::Remote {
            url: url.trim_end_matches('/').to_owned(),
            token,
        }
    } else {
        for (set, key) in [
            (s.token.is_some(), "store.token"),
            (s.token_file.is_some(), "store.token_file"),
        ] {
            if set {
                c.error(
                    key,
                    "goes with store.url; the embedded store needs no token",
                );
            }
        }
        let database = match s.database {
            Some(d) if !d.starts_with('/') => {
                c.error("store.database", "must be an absolute path");
                PathBuf::from(d)
            }
            Some(d) => PathBuf::from(d),
            None => Path::new(data_dir).join(STORE_FILE),
        };
        let listen = match s.listen.as_deref().unwrap_or(DEFAULT_STORE_LISTEN) {
            "" => None,
            a => match a.parse() {
                Ok(addr) => Some(addr),
                Err(e) => {
                    c.error(
                        "store.listen",
                        format!("{a:?}: {e} (an IP:port, or \"\" to not serve the API)"),
                    );
                    None
                }
            },
        };
        let timezone = match s.timezone.as_deref() {
            None => jiff::tz::TimeZone::UTC,
            Some(z) => jiff::tz::TimeZone::get(z).unwrap_or_else(|e| {
                c.error("store.timezone", format!("{z:?}: {e}"));
                jiff::tz::TimeZone::UTC
            }),
        };
        StoreTarget::Embedded {
            database,
            listen,
            timezone,
        }
    };
    StoreConfig {
        target,
        host,
        spool_max,
        quota_refresh,
    }
}

fn check_ledger(c: &mut Checker, l: RawLedger) -> LedgerConfig {
    let d = LedgerConfig::default();
    let day = Duration::from_secs(86_400);
    let keep_5m = c.duration(
        "ledger.keep_5m",
        l.keep_5m.as_deref(),
        d.keep_5m,
        Duration::from_secs(3600),
    );
    let keep_hourly = c.duration(
        "ledger.keep_hourly",
        l.keep_hourly.as_deref(),
        d.keep_hourly,
        day,
    );
    let keep_events = c.duration(
        "ledger.keep_events",
        l.keep_events.as_deref(),
        d.keep_events,
        day,
    );
    LedgerConfig {
        keep_5m,
        keep_hourly,
        keep_events,
    }
}

fn check_log(c: &mut Checker, l: RawLog) -> LogConfig {
    let format = match l.format.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            c.error(
                "log.format",
                format!("must be \"text\" or \"json\", got {other:?}"),
            );
            LogFormat::Text
        }
    };
    let level = l.level.unwrap_or_else(|| "info".into());
    if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
        c.error(
            "log.level",
            format!("{level:?} is not a log filter (try \"info\" or \"sluice=debug\")"),
        );
    }
    let dir = match l.dir.as_deref() {
        None => Some(PathBuf::from(DEFAULT_LOG_DIR)),
        Some("") => None,
        Some(d) if d.starts_with('/') => Some(PathBuf::from(d)),
        Some(_) => {
            c.error(
                "log.dir",
                "must be an absolute path, or \"\" for stderr only",
            );
            None
        }
    };
    LogConfig { dir, format, level }
}

fn check_penalty(c: &mut Checker, p: Option<RawPenalty>) -> Option<PenaltyConfig> {
    let Some(p) = p else {
        c.error(
            "penalty",
            "is required: at least penalty.base_rate (the bandwidth sold, e.g. \"1000mbit\")",
        );
        return None;
    };
    let base_rate = match p.base_rate.as_deref() {
        None => {
            c.error(
                "penalty.base_rate",
                "is required (the bandwidth sold, e.g. \"1000mbit\")",
            );
            None
        }
        Some(s) => c.rate("penalty.base_rate", s),
    };
    let download_rate = p
        .download_rate
        .as_deref()
        .and_then(|s| c.rate("penalty.download_rate", s));
    let packet_rate = p
        .packet_rate
        .as_deref()
        .and_then(|s| c.packet_rate("penalty.packet_rate", s));
    let burst = p.burst.as_deref().and_then(|s| check_burst(c, s));
    let stages = match p.stage {
        None => StageConfig::seed_defaults(),
        Some(list) if list.is_empty() => {
            c.error(
                "penalty.stage",
                "needs at least one stage (leave it out for the seed defaults)",
            );
            Vec::new()
        }
        Some(list) => check_stages(c, list),
    };
    Some(PenaltyConfig {
        base_rate: base_rate?,
        download_rate,
        packet_rate,
        burst,
        stages,
    })
}

fn check_burst(c: &mut Checker, s: &str) -> Option<BurstSpec> {
    let t = s.trim();
    if let Some(pct) = t.strip_suffix('%') {
        match pct.trim().parse::<f64>() {
            Ok(v) if v > 0.0 && v <= 100.0 => Some(BurstSpec::Percent(v)),
            _ => {
                c.error(
                    "penalty.burst",
                    format!("a percentage must be in (0%, 100%], got {s:?}"),
                );
                None
            }
        }
    } else {
        c.rate("penalty.burst", t)
            .map(BurstSpec::Absolute)
            .or_else(|| {
                // c.rate already reported; add the hint about percentages.
                if let Some(last) = c.errors.last_mut() {
                    last.message
                        .push_str(" (or a share of the rate, e.g. \"10%\")");
                }
                None
            })
    }
}

fn check_stages(c: &mut Checker, list: Vec<RawStage>) -> Vec<StageConfig> {
    let mut out: Vec<Option<StageConfig>> = Vec::new();
    for (i, s) in list.iter().enumerate() {
        let path = format!("penalty.stage[{}]", i + 1);
        let usage = c.fraction(&format!("{path}.usage"), s.usage);
        let rate = c.fraction(&format!("{path}.rate"), s.rate);
        let mut positive = |field: &str, v: &Option<String>| -> Option<Duration> {
            let p = format!("{path}.{field}");
            let Some(v) = v else {
                c.error(&p, "is required (a duration, e.g. \"15m\")");
                return None;
            };
            match parse_duration(v) {
                Ok(d) if d.is_zero() => {
                    c.error(&p, "must be longer than zero");
                    None
                }
                Ok(d) if d > MAX_DURATION => {
                    c.error(&p, format!("must be at most 100 years, got {v:?}"));
                    None
                }
                Ok(d) => Some(d),
                Err(e) => {
                    c.error(&p, e.to_string());
                    None
                }
            }
        };
        let trigger = positive("trigger", &s.trigger);
        let duration = positive("duration", &s.duration);
        let pps = s
            .pps
            .as_deref()
            .map(|v| c.packet_rate(&format!("{path}.pps"), v));
        let packet_rate = s
            .packet_rate
            .as_deref()
            .map(|v| c.packet_rate(&format!("{path}.packet_rate"), v));
        // A packet rate given but invalid (already reported) makes the stage invalid.
        let valid = |v: &Option<Option<PacketRate>>| v.is_none_or(|p| p.is_some());
        out.push(match (usage, trigger, rate, duration) {
            (Some(usage), Some(trigger), Some(rate), Some(duration))
                if valid(&pps) && valid(&packet_rate) =>
            {
                Some(StageConfig {
                    usage,
                    trigger,
                    rate,
                    duration,
                    pps: pps.flatten(),
                    packet_rate: packet_rate.flatten(),
                })
            }
            _ => None,
        });
    }
    // Cross-stage checks, only between stages that are valid on their own.
    for i in 1..out.len() {
        let (Some(prev), Some(this)) = (out[i - 1], out[i]) else {
            continue;
        };
        let path = format!("penalty.stage[{}]", i + 1);
        if this.rate >= prev.rate {
            c.error(
                &format!("{path}.rate"),
                format!(
                    "must be lower than stage {}'s rate {} (each stage is stricter), got {}",
                    i,
                    prev.rate.get(),
                    this.rate.get()
                ),
            );
        }
        if this.trigger > prev.duration {
            c.warn(
                &format!("{path}.trigger"),
                format!(
                    "{} is longer than stage {}'s duration {}: stage {} can never be reached",
                    humantime::format_duration(this.trigger),
                    i,
                    humantime::format_duration(prev.duration),
                    i + 1
                ),
            );
        }
    }
    out.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    const MINIMAL: &str = r#"
[agent]
interfaces = ['^kvm(?P<instance>[0-9]+)\..*$']
[penalty]
base_rate = "1000mbit"
"#;

    fn errors(text: &str) -> Vec<String> {
        match Config::parse(Path::new("t.toml"), text) {
            Ok(_) => Vec::new(),
            Err(e) => e.problems.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn minimal_config_gets_the_seed_defaults() {
        let loaded = Config::parse(Path::new("t.toml"), MINIMAL).unwrap();
        let c = loaded.config;
        assert_eq!(c.agent.interval.as_secs(), 60);
        assert_eq!(c.penalty.stages.len(), 2);
        assert_eq!(c.penalty.stages[0].trigger.as_secs(), 900);
        assert_eq!(c.penalty.stages[1].duration.as_secs(), 3600);
        assert!(c.agent.enforce_base);
        assert_eq!(c.agent.backend, super::BackendKind::Ovs);
        assert!(
            loaded.warnings.is_empty(),
            "seed defaults are reachable: {:?}",
            loaded.warnings
        );
    }

    #[test]
    fn every_error_path_is_named() {
        // (config text appended to a valid base, expected substring of one error)
        let table: &[(&str, &str)] = &[
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[store]\nurl=\"ftp://x\"\ntoken_file=\"/t\"",
                "store.url: must start with http:// or https://",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[store]\nurl=\"http://x\"",
                "store.token_file: is required with store.url",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[store]\nurl=\"http://x\"\ntoken=\"secret\"",
                "store.token: is not a sluice token",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[store]\nurl=\"http://x\"\ntoken_file=\"/t\"\nlisten=\"127.0.0.1:1\"",
                "store.listen: belongs to the embedded store",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[store]\ntoken_file=\"/t\"",
                "store.token_file: goes with store.url",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[store]\nlisten=\"localhost\"",
                "store.listen: \"localhost\"",
            ),
            (
                "[agent]\ninterfaces=['x']\nlisten=\"9477\"\n[penalty]\nbase_rate=\"1mbit\"",
                "agent.listen: \"9477\"",
            ),
            (
                "[agent]\ninterfaces=['x']\nallowed_hosts=['hv1.example.net', 'hv1:9477']\n[penalty]\nbase_rate=\"1mbit\"",
                "agent.allowed_hosts[2]: \"hv1:9477\" is not a DNS name",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[store]\nspool_max=\"1KiB\"",
                "store.spool_max: must be at least 64KiB",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[store]\ntimezone=\"Mars/Base\"",
                "store.timezone: \"Mars/Base\"",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[store]\nhost=\"a b\"",
                "store.host:",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[[webhook]]\nsecret=\"x\"",
                "webhook[1].url: is required",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[[webhook]]\nurl=\"ftp://x/\"",
                "webhook[1].url: must be http or https, got \"ftp\"",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[[webhook]]\nurl=\"not a url\"",
                "webhook[1].url: \"not a url\" is not a URL",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[[webhook]]\nurl=\"http://x/\"\nsecret=\"\"",
                "webhook[1].secret: must not be empty",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[[webhook]]\nurl=\"http://x/\"\nevents=[\"rule\", \"nope\"]",
                "webhook[1].events[2]: unknown event kind \"nope\"",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[[rule]]\nperiod=\"day\"\nlimit=\"1GB\"",
                "rule[1].name: is required",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[[rule]]\nname=\"a b\"\nperiod=\"day\"\nlimit=\"1GB\"",
                "rule[1].name: \"a b\" must be 1 to 64 bytes",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[[rule]]\nname=\"m\"\nperiod=\"fortnight\"\nlimit=\"1GB\"",
                "rule[1].period: must be \"hour\", \"day\", \"week\" or \"month\", got \"fortnight\"",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[[rule]]\nname=\"m\"\nperiod=\"month\"\nreset_day=32\nlimit=\"1GB\"",
                "rule[1].reset_day: must be a day of the month, 1 to 31",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[[rule]]\nname=\"m\"\nperiod=\"week\"\nreset_day=\"funday\"\nlimit=\"1GB\"",
                "rule[1].reset_day: must be a weekday",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[[rule]]\nname=\"m\"\nperiod=\"day\"\nreset_day=3\nlimit=\"1GB\"",
                "rule[1].reset_day: only applies to period",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[[rule]]\nname=\"m\"\nperiod=\"day\"\ntimezone=\"Mars/Olympus\"\nlimit=\"1GB\"",
                "rule[1].timezone: unknown IANA time zone \"Mars/Olympus\"",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[[rule]]\nname=\"m\"\nperiod=\"day\"\ndirection=\"sideways\"\nlimit=\"1GB\"",
                "rule[1].direction: must be \"upload\", \"download\" or \"both\"",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[[rule]]\nname=\"m\"\nperiod=\"day\"",
                "rule[1].limit: is required",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[[rule]]\nname=\"m\"\nperiod=\"day\"\nlimit=\"lots\"",
                "rule[1].limit: \"lots\" is not a size",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[[rule]]\nname=\"m\"\nperiod=\"day\"\nlimit=\"1GB\"\naction=\"explode\"",
                "rule[1].action: must be \"warn\", \"rate_limit\"",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[[rule]]\nname=\"m\"\nperiod=\"day\"\nlimit=\"1GB\"\naction=\"rate_limit\"",
                "rule[1].rate: is required with action \"rate_limit\"",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[[rule]]\nname=\"m\"\nperiod=\"day\"\nlimit=\"1GB\"\naction=\"rate_limit\"\nrate={upload=\"fast\"}",
                "rule[1].rate.upload:",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[[rule]]\nname=\"m\"\nperiod=\"day\"\nlimit=\"1GB\"\nnotify_at=[0.5, 1.5]",
                "rule[1].notify_at[2]: must be a share of the limit in (0, 1), got 1.5",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[[rule]]\nname=\"m\"\nperiod=\"day\"\nlimit=\"1GB\"\nexclude=[\"a/b\"]",
                "rule[1].exclude[1]: instance id \"a/b\"",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[[rule]]\nname=\"m\"\nperiod=\"day\"\nlimit=\"1GB\"\n[[rule]]\nname=\"m\"\nperiod=\"day\"\nlimit=\"1GB\"",
                "rule[2].name: \"m\" is used by another rule",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[[rule]]\nname=\"m\"\nperiod=\"day\"\nlimit=\"1GB\"\naction=\"shutdown\"",
                "hooks.shutdown: is required by a rule with action \"shutdown\"",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[hooks]\nshutdown=[]",
                "hooks.shutdown: must be a non-empty argv list",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[hooks]\nshutdown=\"virsh\"",
                "hooks.shutdown: must be \"hypervisor\" or an argv list",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[hooks]\nshutdown=\"hypervisor\"",
                "hooks.shutdown: \"hypervisor\" stops an instance through the inventory source",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[inventory]\nsources=[]",
                "inventory.sources: is empty",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[inventory]\nsources=['names','xen','names']",
                "inventory.sources[2]: unknown source \"xen\" (one of names, proxmox, libvirt, incus, ovs)",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[inventory]\nsources=['names','names']",
                "inventory.sources[2]: names is listed twice",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[inventory]\nrefresh='10ms'\nproxmox.config_dir='etc/pve'",
                "inventory.proxmox.config_dir: must be an absolute path, got \"etc/pve\"",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[inventory]\nlibvirt.uri='qemu:// system'",
                "inventory.libvirt.uri: must be a libvirt URI",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[hooks]\ntimeout=\"0s\"",
                "hooks.timeout: must be at least 1s",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[instances.\"101\"]\ntags=[\"no spaces\"]",
                "instances.\"101\".tags[1]: \"no spaces\" must be 1 to 64 bytes",
            ),
            (
                "[agent]\ninterfaces=['x']\ninstances_dir=\"rel\"\n[penalty]\nbase_rate=\"1mbit\"",
                "agent.instances_dir: must be an absolute path",
            ),
            (
                "[agent]\ninterval = \"500ms\"\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"",
                "agent.interval: must be at least 1s",
            ),
            (
                "[agent]\ninterval = \"soon\"\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"",
                "agent.interval: \"soon\" is not a duration",
            ),
            (
                "[agent]\ninterval=\"500000000000y\"\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"",
                "agent.interval: must be at most 100 years, got \"500000000000y\"",
            ),
            (
                "[agent]\ninterval=\"2days\"\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"",
                "agent.interval: must be at most 1day, got \"2days\"",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[[penalty.stage]]\nusage=0.9\ntrigger=\"1m\"\nrate=0.5\nduration=\"9999999999y\"",
                "penalty.stage[1].duration: must be at most 100 years",
            ),
            (
                "[agent]\ninterfaces=[]\n[penalty]\nbase_rate=\"1mbit\"",
                "agent.interfaces: needs at least one regex",
            ),
            (
                "[agent]\n[penalty]\nbase_rate=\"1mbit\"",
                "agent.interfaces: is required",
            ),
            (
                "[agent]\ninterfaces=['(']\n[penalty]\nbase_rate=\"1mbit\"",
                "agent.interfaces[1]: invalid regex",
            ),
            (
                "[agent]\ninterfaces=['x']\nbackend=\"tc2\"\n[penalty]\nbase_rate=\"1mbit\"",
                "agent.backend: must be \"ovs\", \"tc\" or \"none\", got \"tc2\"",
            ),
            (
                "[agent]\ninterfaces=['x']\nstate_dir=\"run\"\n[penalty]\nbase_rate=\"1mbit\"",
                "agent.state_dir: must be an absolute path",
            ),
            (
                "[agent]\ninterfaces=['x']\novsdb=\"\"\n[penalty]\nbase_rate=\"1mbit\"",
                "agent.ovsdb: must not be empty",
            ),
            (
                "[agent]\ninterfaces=['x']\novs_vsctl=\"\"\n[penalty]\nbase_rate=\"1mbit\"",
                "agent.ovs_vsctl: must not be empty",
            ),
            (
                "[agent]\ninterfaces=['x']\novs_client=\"idl\"\n[penalty]\nbase_rate=\"1mbit\"",
                "agent.ovs_client: must be \"native\" or \"vsctl\", got \"idl\"",
            ),
            (
                "[agent]\ninterfaces=['x']\nbackend=\"ovs\"\novsdb=\"ssl:10.0.0.1:6640\"\n[penalty]\nbase_rate=\"1mbit\"",
                "agent.ovsdb: \"ssl:10.0.0.1:6640\": only unix:PATH and tcp:HOST:PORT are supported (no ssl:)",
            ),
            (
                "[agent]\ninterfaces=['x']\ncommand_timeout=\"1ms\"\n[penalty]\nbase_rate=\"1mbit\"",
                "agent.command_timeout: must be at least 100ms",
            ),
            (
                "[agent]\ninterfaces=['x']\nintervall=\"5s\"\n[penalty]\nbase_rate=\"1mbit\"",
                "agent.intervall: unknown key",
            ),
            ("[agent]\ninterfaces=['x']", "penalty: is required"),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nburst=\"10%\"",
                "penalty.base_rate: is required",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1000mb\"",
                "penalty.base_rate: \"1000mb\" is not a rate",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\nburst=\"150%\"",
                "penalty.burst: a percentage must be in (0%, 100%]",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\nburst=\"lots\"",
                "penalty.burst: \"lots\" is not a rate",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\nstage=[]",
                "penalty.stage: needs at least one stage",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"500bit\"",
                "penalty.base_rate: 500bit is under the least enforceable limit of 1kbit",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[[rule]]\nname=\"r\"\nperiod=\"day\"\nlimit=\"1GB\"\naction=\"rate_limit\"\nrate=\"999bit\"",
                "rule[1].rate: 999bit is under the least enforceable limit of 1kbit",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[[penalty.stage]]\nusage=0.9\ntrigger=\"1m\"\nrate=1.5\nduration=\"1m\"",
                "penalty.stage[1].rate: must be in (0, 1], got 1.5",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[[penalty.stage]]\nusage=0\ntrigger=\"1m\"\nrate=0.5\nduration=\"1m\"",
                "penalty.stage[1].usage: must be in (0, 1], got 0",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[[penalty.stage]]\ntrigger=\"1m\"\nrate=0.5\nduration=\"1m\"",
                "penalty.stage[1].usage: is required",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[[penalty.stage]]\nusage=0.9\ntrigger=\"0s\"\nrate=0.5\nduration=\"1m\"",
                "penalty.stage[1].trigger: must be longer than zero",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[[penalty.stage]]\nusage=0.9\ntrigger=\"1m\"\nrate=0.5",
                "penalty.stage[1].duration: is required",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[[penalty.stage]]\nusage=0.9\ntrigger=\"1m\"\nrate=0.5\nduration=\"1m\"\n[[penalty.stage]]\nusage=0.9\ntrigger=\"1m\"\nrate=0.5\nduration=\"1m\"",
                "penalty.stage[2].rate: must be lower than stage 1's rate 0.5",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[[penalty.stage]]\nusage=0.9\ntrigger=\"1m\"\nrate=0.5\nduration=\"1m\"\nspeed=3",
                "penalty.stage[1].speed: unknown key",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[instances.\"a b\"]\nbase_rate=\"1mbit\"",
                "instances.\"a b\": instance id \"a b\"",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[instances.\"101\"]\nbase_rate=\"fast\"",
                "instances.\"101\".base_rate: \"fast\" is not a rate",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[log]\nformat=\"xml\"",
                "log.format: must be \"text\" or \"json\"",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[log]\ndir=\"logs\"",
                "log.dir: must be an absolute path",
            ),
            (
                "[agent]\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"\n[log]\nlevel=\"[[[\"",
                "log.level:",
            ),
            ("[agent\n", "invalid TOML"),
            (
                "[agent]\ninterval = 5\ninterfaces=['x']\n[penalty]\nbase_rate=\"1mbit\"",
                "invalid TOML",
            ),
        ];
        for (text, want) in table {
            let errs = errors(text);
            assert!(
                errs.iter().any(|e| e.contains(want)),
                "config:\n{text}\nwanted {want:?}, got {errs:?}"
            );
        }
    }

    #[test]
    fn all_errors_are_reported_at_once() {
        let text =
            "[agent]\ninterval=\"0s\"\ninterfaces=['(']\ncolour=1\n[penalty]\nbase_rate=\"x\"\n";
        let errs = errors(text);
        assert_eq!(errs.len(), 4, "{errs:?}");
    }

    #[test]
    fn unreachable_stage_is_a_warning_not_an_error() {
        let text = format!(
            "{MINIMAL}[[penalty.stage]]\nusage=0.9\ntrigger=\"15m\"\nrate=0.9\nduration=\"30m\"\n[[penalty.stage]]\nusage=0.8\ntrigger=\"31m\"\nrate=0.8\nduration=\"1h\"\n"
        );
        let loaded = Config::parse(Path::new("t.toml"), &text).unwrap();
        assert_eq!(loaded.warnings.len(), 1);
        assert!(
            loaded.warnings[0]
                .to_string()
                .starts_with("penalty.stage[2].trigger:"),
            "{}",
            loaded.warnings[0]
        );
        assert!(loaded.warnings[0].message.contains("can never be reached"));
    }

    #[test]
    fn packet_rates_are_checked_and_warned_where_not_enforced() {
        let base = "[agent]\ninterfaces=['^tap(?P<instance>[0-9]+)$']\n";
        for (agent, penalty, instance, want) in [
            ("backend=\"ovs\"", "25kpps", "1mpps", Ok(false)),
            ("backend=\"tc\"", "25kpps", "1mpps", Ok(true)),
            (
                "backend=\"ovs\"\novs_client=\"vsctl\"",
                "25kpps",
                "2kpps",
                Ok(true),
            ),
            ("backend=\"none\"", "25kpps", "2kpps", Ok(false)),
            (
                "backend=\"ovs\"",
                "500pps",
                "2kpps",
                Err(
                    "penalty.packet_rate: 500pps is under the least enforceable packet rate of 1kpps",
                ),
            ),
            (
                "backend=\"ovs\"",
                "25kpps",
                "10kbit",
                Err("instances.\"7\".packet_rate: \"10kbit\" is not a packet rate"),
            ),
        ] {
            let text = format!(
                "{base}{agent}\n[penalty]\nbase_rate=\"10mbit\"\npacket_rate=\"{penalty}\"\n\
                 [instances.\"7\"]\npacket_rate=\"{instance}\"\n"
            );
            match (Config::parse(Path::new("t.toml"), &text), want) {
                (Ok(loaded), Ok(warned)) => {
                    let says: Vec<String> = loaded.warnings.iter().map(|w| w.to_string()).collect();
                    assert_eq!(
                        says.iter().any(|w| w.starts_with("penalty.packet_rate:")),
                        warned,
                        "{agent}: {says:?}"
                    );
                    let id = crate::model::ids::InstanceId::new("7").unwrap();
                    let other = crate::model::ids::InstanceId::new("8").unwrap();
                    assert_eq!(
                        loaded.config.packet_rate(&id),
                        Some(instance.parse().unwrap()),
                        "the instance's own"
                    );
                    assert_eq!(
                        loaded.config.packet_rate(&other),
                        Some(penalty.parse().unwrap()),
                        "else the penalty's"
                    );
                }
                (Err(e), Err(says)) => {
                    let problems: Vec<String> = e.problems.iter().map(|p| p.to_string()).collect();
                    assert!(problems.iter().any(|p| p.starts_with(says)), "{problems:?}");
                }
                (got, want) => panic!("{agent}: got {:?}, want {want:?}", got.map(|l| l.warnings)),
            }
        }
    }

    #[test]
    fn stages_take_a_packet_trigger_and_limit() {
        let stage = |extra: &str| {
            format!(
                "{MINIMAL}[[penalty.stage]]\nusage=0.9\ntrigger=\"1m\"\nrate=0.5\nduration=\"10m\"\n{extra}"
            )
        };
        let c = Config::parse(
            Path::new("t.toml"),
            &stage("pps=\"50kpps\"\npacket_rate=\"10kpps\"\n"),
        )
        .unwrap()
        .config;
        let s = c.penalty.stages[0];
        assert_eq!(s.pps.map(|p| p.per_sec()), Some(50_000));
        assert_eq!(s.packet_rate.map(|p| p.per_sec()), Some(10_000));
        let c = Config::parse(Path::new("t.toml"), &stage(""))
            .unwrap()
            .config;
        assert_eq!(
            (c.penalty.stages[0].pps, c.penalty.stages[0].packet_rate),
            (None, None)
        );
        for (extra, says) in [
            (
                "pps=\"50mbit\"\n",
                "penalty.stage[1].pps: \"50mbit\" is not a packet rate",
            ),
            (
                "packet_rate=\"10pps\"\n",
                "penalty.stage[1].packet_rate: 10pps is under",
            ),
        ] {
            let errs = errors(&stage(extra));
            assert!(errs.iter().any(|e| e.starts_with(says)), "{errs:?}");
        }
    }

    #[test]
    fn ovs_download_limits_warn_only_with_the_vsctl_client() {
        for (client, warned) in [("native", false), ("vsctl", true)] {
            let text = format!(
                "[agent]\ninterfaces=['^tap(?P<instance>[0-9]+)$']\nbackend=\"ovs\"\novs_client=\"{client}\"\n\
                 [penalty]\nbase_rate=\"10mbit\"\ndownload_rate=\"20mbit\"\n"
            );
            let loaded = Config::parse(Path::new("t.toml"), &text).unwrap();
            let says: Vec<String> = loaded.warnings.iter().map(|w| w.to_string()).collect();
            assert_eq!(
                says.iter()
                    .any(|w| w.starts_with("penalty.download_rate:") && w.contains("native client")),
                warned,
                "{client}: {says:?}"
            );
        }
    }

    #[test]
    fn json_has_the_same_schema() {
        let json = r#"{"agent":{"interfaces":["^tap(?P<instance>[0-9]+)i[0-9]+$"],"backend":"none","interval":"5s"},
                       "penalty":{"base_rate":"500mbit","burst":"2000kbit"},
                       "instances":{"101":{"base_rate":"100mbit"}}}"#;
        let c = Config::parse(Path::new("x.json"), json).unwrap().config;
        assert_eq!(c.agent.backend, super::BackendKind::None);
        assert_eq!(
            c.penalty.burst,
            Some(super::BurstSpec::Absolute("2000kbit".parse().unwrap()))
        );
        let bad = r#"{"agent":{"interfaces":["x"],"typo":1},"penalty":{"base_rate":"1mbit"}}"#;
        let err = Config::parse(Path::new("x.json"), bad).unwrap_err();
        assert_eq!(
            err.problems[0].to_string(),
            "agent.typo: unknown key (misspelt?)"
        );
    }

    #[test]
    fn instance_extraction_and_base_rate_override() {
        let text = format!("{MINIMAL}[instances.\"101\"]\nbase_rate = \"500mbit\"\n");
        let c = Config::parse(Path::new("t.toml"), &text).unwrap().config;
        let name = |s| crate::model::ids::IfName::new(s).unwrap();
        let id = c.instance_of(&name("kvm101.0")).unwrap();
        assert_eq!(id.as_str(), "101");
        assert_eq!(c.base_rate(&id).to_string(), "500mbit");
        let other = c.instance_of(&name("kvm7.1")).unwrap();
        assert_eq!(c.base_rate(&other).to_string(), "1gbit");
        assert!(c.instance_of(&name("eth0")).is_none());

        let no_group = "[agent]\ninterfaces=['^veth']\n[penalty]\nbase_rate=\"1mbit\"";
        let c = Config::parse(Path::new("t.toml"), no_group).unwrap().config;
        assert_eq!(c.instance_of(&name("veth12")).unwrap().as_str(), "veth12");
    }

    #[test]
    fn the_example_config_is_valid_and_complete() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sluice.example.toml");
        let loaded = Config::load(&path).unwrap();
        assert!(loaded.warnings.is_empty());
        assert_eq!(
            loaded.config.penalty.stages,
            crate::config::StageConfig::seed_defaults()
        );
    }
}
