//! The configuration file: its schema, its defaults, and loading it from TOML or JSON.
//!
//! Loading happens in two steps. The file is first read into a *raw* shape that mirrors
//! the text (strings for rates and durations, unknown keys collected instead of fatal);
//! then [`validate`] turns that into a typed [`Config`], collecting *every* problem with
//! its field path so `sluice check` can show them all at once. The defaults live here, in
//! code; `config/sluice.example.toml` only documents them.

mod inventory;
mod raw;
mod rule_index;
mod rules;
mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;

use crate::model::ids::{IfName, InstanceId, Label, Tag};
use crate::model::units::{Bytes, Fraction, PacketRate, Rate};

pub use inventory::{
    Claim, Claims, IncusSource, InventoryConfig, Known, LibvirtSource, OvsSource, ProxmoxSource,
    SourceKind, Stop,
};
pub use rule_index::Rules;
pub use rules::{
    ActionKind, Direction, Elsewhere, HooksConfig, RuleConfig, ShutdownHook, StoreVerdict,
    WebhookConfig,
};
pub use validate::dns_name;
use validate::validate;

/// Where the agent looks for its config when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/sluice/sluice.toml";
pub const DEFAULT_STATE_DIR: &str = "/run/sluice";
pub const DEFAULT_LOG_DIR: &str = "/var/log/sluice";
pub const DEFAULT_DATA_DIR: &str = "/var/lib/sluice";
/// The agent's API on loopback: off it, every read needs a token.
pub const DEFAULT_AGENT_LISTEN: &str = "127.0.0.1:9477";
/// Drop-in `[instances."ID"]` files a control panel writes (`*.toml`).
pub const DEFAULT_INSTANCES_DIR: &str = "/etc/sluice/instances.d";
/// The ledger's file name inside `agent.data_dir`.
pub const LEDGER_FILE: &str = "ledger.db";
/// The embedded quota store's file name inside `agent.data_dir`.
pub const STORE_FILE: &str = "quota.db";
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// A validated configuration. Every field holds a value that passed its checks.
#[derive(Debug, Clone)]
pub struct Config {
    pub agent: AgentConfig,
    pub log: LogConfig,
    pub ledger: LedgerConfig,
    pub penalty: PenaltyConfig,
    /// From the config file, then the drop-ins of `agent.instances_dir` (see
    /// [`Config::with_drop_ins`]).
    pub instances: BTreeMap<InstanceId, InstanceConfig>,
    /// Period quota rules, in config order (then those a quota store hands out).
    pub rules: Rules,
    pub hooks: HooksConfig,
    pub webhooks: Vec<WebhookConfig>,
    /// `[store]`: report traffic to a quota store (`None`: no store, no reports).
    pub store: Option<StoreConfig>,
    pub inventory: InventoryConfig,
    /// What the inventory's sources found (empty until they have been read, and with
    /// only `names`); see [`Config::instance_of`].
    pub claims: Arc<Claims>,
}

/// `[store]`: where this agent's traffic reports go.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub target: StoreTarget,
    /// This agent's name in reports (an agent token is tied to it); `None`: the host name.
    pub host: Option<Label>,
    /// The spool's limit: beyond it, ticks are not kept for the store (and a warning says so).
    pub spool_max: Bytes,
    /// How often the traffic quotas of the instances this agent sees are fetched.
    pub quota_refresh: std::time::Duration,
}

#[derive(Debug, Clone)]
pub enum StoreTarget {
    /// A `sluice store` elsewhere (a fleet's).
    Remote { url: String, token: TokenSource },
    /// The store runs inside the agent on a SQLite file, serving its API on `listen`.
    Embedded {
        database: PathBuf,
        listen: Option<std::net::SocketAddr>,
        timezone: jiff::tz::TimeZone,
    },
}

/// Where the agent's store token comes from (a file keeps it out of the config).
#[derive(Debug, Clone)]
pub enum TokenSource {
    Inline(String),
    File(PathBuf),
}

pub const DEFAULT_STORE_LISTEN: &str = "127.0.0.1:9478";
pub const DEFAULT_SPOOL_MAX: Bytes = Bytes::new(64 << 20);
pub const DEFAULT_QUOTA_REFRESH: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub interval: Duration,
    /// Shared so the policy can tell, by pointer, whether the patterns it cached matches
    /// for are still the ones in force (a reload makes a new `Arc`).
    pub interfaces: Arc<[InterfacePattern]>,
    pub backend: BackendKind,
    pub state_dir: PathBuf,
    /// Durable data: the ledger (and, later, the spool and the embedded store).
    pub data_dir: PathBuf,
    pub ovs_vsctl: PathBuf,
    /// Where OVSDB listens (`unix:PATH` or `tcp:HOST:PORT`); `None`: its usual socket
    /// (the native session's [`DEFAULT_OVSDB`], ovs-vsctl's own default).
    pub ovsdb: Option<String>,
    /// How the ovs backend talks to OVSDB.
    pub ovs_client: OvsClientKind,
    /// Timeout for each external command (ovs-vsctl).
    pub command_timeout: Duration,
    /// Stage 0 holds the base rate as a limit (true) or means "no limit" (false).
    pub enforce_base: bool,
    /// Drop-in instance files (tags and overrides written by a control panel).
    pub instances_dir: PathBuf,
    /// The agent's HTTP API and `/metrics` (`None`: not served).
    pub listen: Option<std::net::SocketAddr>,
    /// Names the APIs answer to in `Host` besides IP literals and `localhost` (lower
    /// case): what a browser or a scraper reaches this host by.
    pub allowed_hosts: Vec<String>,
    /// `/metrics` needs no token even where the API listens beyond loopback.
    pub metrics_public: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Ovs,
    Tc,
    None,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::Ovs => "ovs",
            BackendKind::Tc => "tc",
            BackendKind::None => "none",
        })
    }
}

/// How the ovs backend talks to OVSDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OvsClientKind {
    /// Its own session on the database socket: a replica read from memory each tick,
    /// writes in one `transact` (no process started in steady state).
    Native,
    /// `ovs-vsctl` per read and per write (the fallback).
    Vsctl,
}

/// The OVSDB socket of Debian's and Red Hat's packages.
pub const DEFAULT_OVSDB: &str = "unix:/run/openvswitch/db.sock";

/// How long the ledger keeps its buckets and its event log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerConfig {
    pub keep_5m: Duration,
    pub keep_hourly: Duration,
    pub keep_events: Duration,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            keep_5m: Duration::from_secs(35 * 86_400),
            keep_hourly: Duration::from_secs(400 * 86_400),
            keep_events: Duration::from_secs(400 * 86_400),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Directory of the daily-rotated log file; `None` logs to stderr only.
    pub dir: Option<PathBuf>,
    pub format: LogFormat,
    /// A tracing filter directive, e.g. "info" or "sluice=debug".
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct PenaltyConfig {
    pub base_rate: Rate,
    /// The download (host → instance) limit sold; `None`: download is not limited.
    /// Penalties are earned and paid on upload only, so this does not change with stages.
    pub download_rate: Option<Rate>,
    /// The upload packet-rate limit sold; `None`: packets are not limited. Not staged.
    pub packet_rate: Option<PacketRate>,
    pub burst: Option<BurstSpec>,
    /// Penalty stages 1..=N, in order; `stages[0]` is stage 1.
    pub stages: Vec<StageConfig>,
}

/// How large a burst the upload limit allows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BurstSpec {
    /// A share of the limit's rate ("10%").
    Percent(f64),
    /// A fixed size expressed as a rate, the way OVS spells bursts ("2000kbit").
    Absolute(Rate),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StageConfig {
    /// Upload at or above `usage × base` ...
    pub usage: Fraction,
    /// ... sustained for `trigger` ...
    pub trigger: Duration,
    /// ... limits upload to `rate × base` ...
    pub rate: Fraction,
    /// ... for `duration`.
    pub duration: Duration,
    /// Also entered when upload packets reach `pps` per second for `trigger` (a flood
    /// of small packets that its bytes would never show); `None`: bytes only.
    pub pps: Option<PacketRate>,
    /// The packet-rate limit while in the stage (the lower of it and the instance's own
    /// wins); `None`: the instance's own.
    pub packet_rate: Option<PacketRate>,
}

impl StageConfig {
    /// The seed policy: stage 1 = 0.9 / 15m / 0.9 / 30m, stage 2 = 0.8 / 30m / 0.8 / 1h.
    pub fn seed_defaults() -> Vec<StageConfig> {
        let f = |x| Fraction::new(x).unwrap_or_else(|| unreachable!("constant in (0,1]"));
        vec![
            StageConfig {
                usage: f(0.9),
                trigger: Duration::from_secs(15 * 60),
                rate: f(0.9),
                duration: Duration::from_secs(30 * 60),
                pps: None,
                packet_rate: None,
            },
            StageConfig {
                usage: f(0.8),
                trigger: Duration::from_secs(30 * 60),
                rate: f(0.8),
                duration: Duration::from_secs(60 * 60),
                pps: None,
                packet_rate: None,
            },
        ]
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceConfig {
    pub base_rate: Option<Rate>,
    pub download_rate: Option<Rate>,
    pub packet_rate: Option<PacketRate>,
    pub tags: BTreeSet<Tag>,
}

/// One `agent.interfaces` regex. A named group `instance` extracts the instance id.
#[derive(Debug, Clone)]
pub struct InterfacePattern {
    regex: Regex,
    has_instance_group: bool,
}

impl InterfacePattern {
    pub fn new(regex: Regex) -> Self {
        let has_instance_group = regex.capture_names().flatten().any(|n| n == "instance");
        InterfacePattern {
            regex,
            has_instance_group,
        }
    }
    pub fn as_str(&self) -> &str {
        self.regex.as_str()
    }
    /// The instance this interface belongs to, if the pattern matches it.
    fn instance_of(&self, name: &IfName) -> Option<InstanceId> {
        let caps = self.regex.captures(name.as_str())?;
        if self.has_instance_group {
            InstanceId::new(caps.name("instance")?.as_str()).ok()
        } else {
            InstanceId::new(name.as_str()).ok()
        }
    }
}

impl Config {
    /// The instance owning `name`; `None` when the interface is not ours to watch.
    pub fn instance_of(&self, name: &IfName) -> Option<InstanceId> {
        self.claim_of(name).map(|c| c.instance)
    }

    /// Who owns `name`: the first of `inventory.sources` that claims it (`names`: the
    /// first `agent.interfaces` pattern that matches). An interface a source ignores is
    /// nobody's, whatever its name.
    pub fn claim_of(&self, name: &IfName) -> Option<Claim> {
        if self.claims.ignored.contains(name) {
            return None;
        }
        let claimed = self.claims.interfaces.get(name);
        self.inventory
            .sources
            .iter()
            .find_map(|&source| match source {
                SourceKind::Names => self
                    .agent
                    .interfaces
                    .iter()
                    .find_map(|p| p.instance_of(name))
                    .map(|instance| Claim { instance, source }),
                _ => claimed.filter(|c| c.source == source).cloned(),
            })
    }

    /// Whether stage 0 holds the base rate as a limit: `agent.enforce_base`, or the
    /// hypervisor shapes the instance itself (sluice replaces that shaping with its own
    /// at the same rate, so lifting it would leave the instance unlimited).
    pub fn holds_base(&self, instance: &InstanceId) -> bool {
        self.agent.enforce_base
            || self
                .claims
                .instances
                .get(instance)
                .is_some_and(|k| k.shaped)
    }

    /// The hypervisor's name for `instance`, when a source told it.
    pub fn name_of(&self, instance: &InstanceId) -> Option<&str> {
        self.claims.instances.get(instance)?.name.as_deref()
    }

    /// The base rate sold to `instance`: its override, else the default.
    pub fn base_rate(&self, instance: &InstanceId) -> Rate {
        self.instances
            .get(instance)
            .and_then(|i| i.base_rate)
            .unwrap_or(self.penalty.base_rate)
    }

    /// The download limit sold to `instance`: its override, else the default, else none.
    /// The instance's upload packet-rate limit: its own, else `penalty.packet_rate`.
    pub fn packet_rate(&self, instance: &InstanceId) -> Option<PacketRate> {
        self.instances
            .get(instance)
            .and_then(|i| i.packet_rate)
            .or(self.penalty.packet_rate)
    }

    pub fn download_rate(&self, instance: &InstanceId) -> Option<Rate> {
        self.instances
            .get(instance)
            .and_then(|i| i.download_rate)
            .or(self.penalty.download_rate)
    }

    /// Read, parse and validate a config file (`.json` by extension, TOML otherwise).
    pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            problems: vec![Problem::new("", format!("cannot read: {e}"))],
        })?;
        let mut loaded = Self::parse(path, &text)?;
        // A secret in a file every user can read is no secret.
        let secrets = loaded.config.secret_fields();
        let world_readable = std::fs::metadata(path)
            .map(|m| std::os::unix::fs::MetadataExt::mode(&m) & 0o004 != 0)
            .unwrap_or(false);
        if world_readable && !secrets.is_empty() {
            loaded.warnings.push(Problem::new(
                &secrets.join(", "),
                format!(
                    "{} is readable by every user and holds this secret; chmod 640 it (or use store.token_file)",
                    path.display()
                ),
            ));
        }
        Ok(loaded)
    }

    /// The fields of this config that hold a secret written in it.
    pub fn secret_fields(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(StoreConfig {
            target:
                StoreTarget::Remote {
                    token: TokenSource::Inline(_),
                    ..
                },
            ..
        }) = &self.store
        {
            out.push("store.token".to_owned());
        }
        for (i, w) in self.webhooks.iter().enumerate() {
            if w.secret.is_some() {
                out.push(format!("webhook[{}].secret", i + 1));
            }
        }
        out
    }

    /// Parse and validate config text; `path` names the file in errors and picks the format.
    pub fn parse(path: &Path, text: &str) -> Result<Loaded, ConfigError> {
        let is_json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        let fail = |problems| ConfigError {
            file: path.to_owned(),
            problems,
        };
        let (raw, unknown) = raw::parse(text, is_json).map_err(|p| fail(vec![p]))?;
        let mut problems: Vec<Problem> = unknown
            .into_iter()
            .map(|key| Problem::new(&key, "unknown key (misspelt?)".to_owned()))
            .collect();
        match validate(raw) {
            Ok(loaded) if problems.is_empty() => Ok(loaded),
            Ok(_) => Err(fail(problems)),
            Err(mut more) => {
                problems.append(&mut more);
                Err(fail(problems))
            }
        }
    }
}

/// A config that passed validation, with the warnings it earned.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Problem>,
}

/// One problem in a config: the field path ("penalty.stage[1].rate") and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl Problem {
    pub fn new(path: &str, message: String) -> Self {
        Problem {
            path: path.to_owned(),
            message,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one config file.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "{}: {n} problem{}",
            self.file.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  {}: {p}", self.file.display())?;
        }
        Ok(())
    }
}

/// The drop-in files of an instances directory as last read: name, mtime and size of
/// each `*.toml`, in name order. The daemon compares stamps each tick to notice a control
/// panel's writes without inotify (a rename into the directory or an in-place rewrite
/// both change it).
pub type DropInStamp = Vec<(PathBuf, Option<std::time::SystemTime>, u64)>;

/// The `*.toml` files of `dir`, in name order (a missing directory has none).
pub fn drop_in_stamp(dir: &Path) -> DropInStamp {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: DropInStamp = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "toml"))
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            meta.is_file()
                .then(|| (e.path(), meta.modified().ok(), meta.len()))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

impl Config {
    /// This config with the drop-ins of `agent.instances_dir` merged in, in file-name
    /// order: a drop-in's rates replace the config's, its tags are added. A file with a
    /// problem is skipped as a whole (never half-applied) and reported.
    pub fn with_drop_ins(&self) -> (Config, Vec<ConfigError>) {
        let mut merged = self.clone();
        let mut errors = Vec::new();
        for (path, _, _) in drop_in_stamp(&self.agent.instances_dir) {
            match read_drop_in(&path) {
                Ok(instances) => {
                    for (id, inst) in instances {
                        let slot = merged.instances.entry(id).or_default();
                        slot.base_rate = inst.base_rate.or(slot.base_rate);
                        slot.download_rate = inst.download_rate.or(slot.download_rate);
                        slot.packet_rate = inst.packet_rate.or(slot.packet_rate);
                        slot.tags.extend(inst.tags);
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        (merged, errors)
    }

    /// The tags of `instance` (none when it has no `[instances."ID"]`).
    pub fn tags(&self, instance: &InstanceId) -> &BTreeSet<Tag> {
        static NONE: BTreeSet<Tag> = BTreeSet::new();
        self.instances.get(instance).map_or(&NONE, |i| &i.tags)
    }
}

fn read_drop_in(path: &Path) -> Result<BTreeMap<InstanceId, InstanceConfig>, ConfigError> {
    let fail = |problems| ConfigError {
        file: path.to_owned(),
        problems,
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| fail(vec![Problem::new("", format!("cannot read: {e}"))]))?;
    let (raw, unknown): (raw::RawDropIn, _) =
        raw::parse(&text, false).map_err(|p| fail(vec![p]))?;
    let mut c = validate::Checker::default();
    for key in unknown {
        c.error(
            &key,
            "unknown key (a drop-in holds only [instances.\"ID\"] tables)",
        );
    }
    let instances = rules::check_instances(&mut c, "", raw.instances.unwrap_or_default());
    if c.errors.is_empty() {
        Ok(instances)
    } else {
        Err(fail(c.errors))
    }
}
