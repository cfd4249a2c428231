//! `[[rule]]` (period quotas), `[hooks]` and instance tags: their typed form and checks.
//!
//! A rule says "at most `limit` bytes per `period` in `direction`, then `action`". Which
//! instances it covers is decided by ids, tags and exclusions; [`RuleConfig::covers`] is
//! the one place that reads them, so the daemon, `simulate` and `list` agree.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use jiff::civil::Weekday;
use jiff::tz::TimeZone;

use super::InstanceConfig;
use super::raw::{
    RawHooks, RawInstance, RawResetDay, RawRule, RawRuleRate, RawShutdown, RawWebhook,
};
use super::validate::Checker;
use serde::{Deserialize, Serialize};

use crate::model::calendar::PeriodKind;
use crate::model::event::LogKind;
use crate::model::ids::{InstanceId, Label, RuleName, Tag};
use crate::model::units::{Bytes, Fraction, PacketRate, Rate};

/// Which counter a rule counts. Upload is what the host receives on the tap (rx).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Upload,
    Download,
    Both,
}

impl Direction {
    /// The bytes this direction counts out of an (upload, download) pair.
    pub fn of(self, upload: u64, download: u64) -> u64 {
        match self {
            Direction::Upload => upload,
            Direction::Download => download,
            Direction::Both => upload.saturating_add(download),
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Upload => "upload",
            Direction::Download => "download",
            Direction::Both => "both",
        })
    }
}

/// What happens once a rule's limit is exceeded, in increasing strictness (the derived
/// order is the "strictest wins" order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    Warn,
    RateLimit,
    Disconnect,
    Shutdown,
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ActionKind::Warn => "warn",
            ActionKind::RateLimit => "rate_limit",
            ActionKind::Disconnect => "disconnect",
            ActionKind::Shutdown => "shutdown",
        })
    }
}

#[derive(Debug, Clone)]
pub struct RuleConfig {
    pub name: RuleName,
    pub enabled: bool,
    pub period: PeriodKind,
    pub timezone: TimeZone,
    pub direction: Direction,
    pub limit: Bytes,
    pub action: ActionKind,
    /// For `rate_limit`: the limits while exceeded (`None`: that direction is left alone).
    pub upload_rate: Option<Rate>,
    pub download_rate: Option<Rate>,
    /// For `rate_limit`: the upload packet-rate limit while exceeded.
    pub packet_rate: Option<PacketRate>,
    /// Shares of the limit that send a `threshold` event, ascending.
    pub notify_at: Vec<Fraction>,
    pub instances: BTreeSet<InstanceId>,
    pub tags: BTreeSet<Tag>,
    pub exclude: BTreeSet<InstanceId>,
    /// A quota store's rule: what the other hosts of the fleet counted of it (never set
    /// by the config file).
    pub elsewhere: Option<Elsewhere>,
    /// A quota store's committed-rate rule: the store's verdict replaces this host's
    /// count (never set by the config file).
    pub judged: Option<StoreVerdict>,
}

/// The store's verdict on a rule it judges itself (a 95th percentile over every host's
/// share of each interval, which no agent holds): whether the period starting at
/// `period_start` is over its commit so far. In any other period the rule is not
/// exceeded until the store says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreVerdict {
    pub period_start: jiff::Timestamp,
    pub exceeded: bool,
}

/// Bytes (in the rule's direction) that other hosts counted of a rule's instance in the
/// period starting at `period_start`: this host's count adds to it in that period only,
/// so a live-migrated instance's quota goes on where it left off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elsewhere {
    pub period_start: jiff::Timestamp,
    pub bytes: u64,
}

impl RuleConfig {
    /// What the other hosts counted in the period starting at `start` (0 for any other
    /// period: a new period starts from nothing until the store says otherwise).
    pub fn elsewhere_in(&self, start: jiff::Timestamp) -> u64 {
        self.elsewhere
            .filter(|e| e.period_start == start)
            .map_or(0, |e| e.bytes)
    }

    /// Whether `used` bytes in the period starting at `start` are over the rule: past
    /// the limit, or for a rule the store judges, what the store said of that period.
    pub fn is_over(&self, used: u64, start: jiff::Timestamp) -> bool {
        match self.judged {
            Some(v) => v.exceeded && v.period_start == start,
            None => used > self.limit.get(),
        }
    }

    /// Whether this rule counts `instance` (carrying `tags`): exclusion wins, then an
    /// empty id list and an empty tag list match everything; otherwise either matches.
    pub fn covers(&self, instance: &InstanceId, tags: &BTreeSet<Tag>) -> bool {
        if !self.enabled || self.exclude.contains(instance) {
            return false;
        }
        if self.instances.is_empty() && self.tags.is_empty() {
            return true;
        }
        self.instances.contains(instance) || self.tags.iter().any(|t| tags.contains(t))
    }
}

/// External commands run on actions: argv templates with `{instance}` / `{interface}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HooksConfig {
    pub shutdown: Option<ShutdownHook>,
    pub on_reset: Option<Vec<String>>,
    pub timeout: Duration,
}

/// How a `shutdown` rule stops an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShutdownHook {
    /// The operator's command (`{instance}` and the other placeholders filled in).
    Argv(Vec<String>),
    /// Through the inventory source that found the instance (libvirt, Proxmox): a
    /// clean shutdown, forced after `hooks.timeout`.
    Hypervisor,
}

pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(60);

impl Default for HooksConfig {
    fn default() -> Self {
        HooksConfig {
            shutdown: None,
            on_reset: None,
            timeout: DEFAULT_HOOK_TIMEOUT,
        }
    }
}

pub(super) fn check_hooks(c: &mut Checker, h: RawHooks) -> HooksConfig {
    let argv = |c: &mut Checker, key: &str, v: Option<Vec<String>>| {
        let v = v?;
        if v.first().is_none_or(|p| p.trim().is_empty()) {
            c.error(
                &format!("hooks.{key}"),
                "must be a non-empty argv list whose first item is the program, e.g. [\"virsh\", \"shutdown\", \"{instance}\"]",
            );
            return None;
        }
        Some(v)
    };
    let shutdown = match h.shutdown {
        None => None,
        Some(RawShutdown::Word(w)) if w == "hypervisor" => Some(ShutdownHook::Hypervisor),
        Some(RawShutdown::Word(w)) => {
            c.error(
                "hooks.shutdown",
                format!("must be \"hypervisor\" or an argv list such as [\"virsh\", \"shutdown\", \"{{instance}}\"], got {w:?}"),
            );
            None
        }
        Some(RawShutdown::Argv(v)) => argv(c, "shutdown", Some(v)).map(ShutdownHook::Argv),
    };
    let on_reset = argv(c, "on_reset", h.on_reset);
    let timeout = c.duration(
        "hooks.timeout",
        h.timeout.as_deref(),
        DEFAULT_HOOK_TIMEOUT,
        Duration::from_secs(1),
    );
    HooksConfig {
        shutdown,
        on_reset,
        timeout,
    }
}

/// Where events are POSTed as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    pub url: reqwest::Url,
    /// Key of the `X-Sluice-Signature: sha256=<hex HMAC-SHA256 of the body>` header.
    pub secret: Option<String>,
    /// Per attempt.
    pub timeout: Duration,
    /// Event kinds to send; empty: all.
    pub events: BTreeSet<LogKind>,
}

pub(super) fn check_webhooks(c: &mut Checker, list: Vec<RawWebhook>) -> Vec<WebhookConfig> {
    let mut out = Vec::new();
    for (i, w) in list.into_iter().enumerate() {
        let path = format!("webhook[{}]", i + 1);
        let url = match w.url.as_deref() {
            None => {
                c.error(
                    &format!("{path}.url"),
                    "is required: an http:// or https:// URL",
                );
                None
            }
            Some(u) => match reqwest::Url::parse(u) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => Some(url),
                Ok(url) => {
                    c.error(
                        &format!("{path}.url"),
                        format!("must be http or https, got {:?}", url.scheme()),
                    );
                    None
                }
                Err(e) => {
                    c.error(&format!("{path}.url"), format!("{u:?} is not a URL: {e}"));
                    None
                }
            },
        };
        if w.secret.as_deref().is_some_and(str::is_empty) {
            c.error(
                &format!("{path}.secret"),
                "must not be empty (leave it out to send unsigned)",
            );
        }
        let timeout = c.duration(
            &format!("{path}.timeout"),
            w.timeout.as_deref(),
            Duration::from_secs(10),
            Duration::from_millis(100),
        );
        let mut events = BTreeSet::new();
        for (k, e) in w.events.unwrap_or_default().into_iter().enumerate() {
            match e.parse::<LogKind>() {
                Ok(kind) => {
                    events.insert(kind);
                }
                Err(why) => c.error(&format!("{path}.events[{}]", k + 1), why),
            }
        }
        if let Some(url) = url {
            out.push(WebhookConfig {
                url,
                secret: w.secret,
                timeout,
                events,
            });
        }
    }
    out
}

/// `[instances."ID"]` tables (from the config or a drop-in), `prefix` naming their file.
pub(super) fn check_instances(
    c: &mut Checker,
    prefix: &str,
    raw: BTreeMap<String, RawInstance>,
) -> BTreeMap<InstanceId, InstanceConfig> {
    let mut out = BTreeMap::new();
    for (key, inst) in raw {
        let path = format!("{prefix}instances.{key:?}");
        let id = InstanceId::new(&key)
            .map_err(|e| c.error(&path, e.to_string()))
            .ok();
        let base_rate = inst
            .base_rate
            .as_deref()
            .and_then(|r| c.rate(&format!("{path}.base_rate"), r));
        let download_rate = inst
            .download_rate
            .as_deref()
            .and_then(|r| c.rate(&format!("{path}.download_rate"), r));
        let packet_rate = inst
            .packet_rate
            .as_deref()
            .and_then(|r| c.packet_rate(&format!("{path}.packet_rate"), r));
        let tags = labels(c, &format!("{path}.tags"), inst.tags);
        if let Some(id) = id {
            out.insert(
                id,
                InstanceConfig {
                    base_rate,
                    download_rate,
                    packet_rate,
                    tags,
                },
            );
        }
    }
    out
}

fn labels(c: &mut Checker, path: &str, list: Option<Vec<String>>) -> BTreeSet<Label> {
    let mut out = BTreeSet::new();
    for (i, s) in list.unwrap_or_default().iter().enumerate() {
        match Label::new(s) {
            Ok(l) => {
                out.insert(l);
            }
            Err(e) => c.error(&format!("{path}[{}]", i + 1), e.to_string()),
        }
    }
    out
}

fn ids(c: &mut Checker, path: &str, list: Option<Vec<String>>) -> BTreeSet<InstanceId> {
    let mut out = BTreeSet::new();
    for (i, s) in list.unwrap_or_default().iter().enumerate() {
        match InstanceId::new(s) {
            Ok(id) => {
                out.insert(id);
            }
            Err(e) => c.error(&format!("{path}[{}]", i + 1), e.to_string()),
        }
    }
    out
}

pub(super) fn check_rules(c: &mut Checker, rules: Vec<RawRule>) -> Vec<RuleConfig> {
    let mut out: Vec<RuleConfig> = Vec::new();
    for (i, r) in rules.into_iter().enumerate() {
        let path = format!("rule[{}]", i + 1);
        if let Some(rule) = check_rule(c, &path, r) {
            if out.iter().any(|o| o.name == rule.name) {
                c.error(
                    &format!("{path}.name"),
                    format!("{:?} is used by another rule; names must be unique (usage is stored under them)", rule.name.as_str()),
                );
                continue;
            }
            out.push(rule);
        }
    }
    out
}

fn check_rule(c: &mut Checker, path: &str, r: RawRule) -> Option<RuleConfig> {
    let at = |key: &str| format!("{path}.{key}");
    let name = match r.name.as_deref() {
        None => {
            c.error(
                &at("name"),
                "is required (events and the ledger refer to rules by name)",
            );
            None
        }
        Some(n) => Label::new(n)
            .map_err(|e| c.error(&at("name"), e.to_string()))
            .ok(),
    };
    let period = match (r.period.as_deref(), r.reset_day) {
        (None, _) => {
            c.error(
                &at("period"),
                "is required: \"hour\", \"day\", \"week\" or \"month\"",
            );
            None
        }
        (Some("hour"), None) => Some(PeriodKind::Hour),
        (Some("day"), None) => Some(PeriodKind::Day),
        (Some("hour" | "day"), Some(_)) => {
            c.error(
                &at("reset_day"),
                "only applies to period \"week\" or \"month\"",
            );
            None
        }
        (Some("week"), None) => Some(PeriodKind::Week(Weekday::Monday)),
        (Some("week"), Some(RawResetDay::Weekday(d))) => {
            match weekday(&d) {
                Some(w) => Some(PeriodKind::Week(w)),
                None => {
                    c.error(&at("reset_day"), format!("must be a weekday (\"monday\" … \"sunday\") for a weekly period, got {d:?}"));
                    None
                }
            }
        }
        (Some("month"), None) => Some(PeriodKind::Month(1)),
        (Some("month"), Some(RawResetDay::Day(d))) if (1..=31).contains(&d) => {
            Some(PeriodKind::Month(d as u8))
        }
        (Some("week"), Some(RawResetDay::Day(d))) => {
            c.error(
                &at("reset_day"),
                format!("must be a weekday (\"monday\" … \"sunday\") for a weekly period, got {d}"),
            );
            None
        }
        (Some("month"), Some(d)) => {
            let got = match d {
                RawResetDay::Day(n) => n.to_string(),
                RawResetDay::Weekday(w) => format!("{w:?}"),
            };
            c.error(&at("reset_day"), format!("must be a day of the month, 1 to 31 (clamped to the month's last day), got {got}"));
            None
        }
        (Some(other), _) => {
            c.error(
                &at("period"),
                format!("must be \"hour\", \"day\", \"week\" or \"month\", got {other:?}"),
            );
            None
        }
    };
    let timezone = match r.timezone.as_deref() {
        None => Some(TimeZone::system()),
        Some(n) => TimeZone::get(n)
            .map_err(|e| {
                c.error(
                    &at("timezone"),
                    format!("unknown IANA time zone {n:?}: {e}"),
                )
            })
            .ok(),
    };
    let direction = match r.direction.as_deref() {
        None | Some("both") => Some(Direction::Both),
        Some("upload") => Some(Direction::Upload),
        Some("download") => Some(Direction::Download),
        Some(other) => {
            c.error(
                &at("direction"),
                format!("must be \"upload\", \"download\" or \"both\", got {other:?}"),
            );
            None
        }
    };
    let limit = match r.limit.as_deref() {
        None => {
            c.error(
                &at("limit"),
                "is required: a size such as \"1TB\" (10^12 bytes) or \"500GiB\" (2^30)",
            );
            None
        }
        Some(s) => match s.parse::<Bytes>() {
            Ok(b) if b.get() == 0 => {
                c.error(&at("limit"), "must be more than 0 bytes");
                None
            }
            Ok(b) => Some(b),
            Err(e) => {
                c.error(&at("limit"), e.to_string());
                None
            }
        },
    };
    let action = match r.action.as_deref() {
        None | Some("warn") => Some(ActionKind::Warn),
        Some("rate_limit") => Some(ActionKind::RateLimit),
        Some("disconnect") => Some(ActionKind::Disconnect),
        Some("shutdown") => Some(ActionKind::Shutdown),
        Some(other) => {
            c.error(&at("action"), format!("must be \"warn\", \"rate_limit\", \"disconnect\" or \"shutdown\", got {other:?}"));
            None
        }
    };
    let (upload_rate, download_rate, packet_rate) = match r.rate {
        None => (None, None, None),
        Some(RawRuleRate::Both(s)) => {
            let rate = c.rate(&at("rate"), &s);
            (rate, rate, None)
        }
        Some(RawRuleRate::PerDirection {
            upload,
            download,
            packets,
        }) => (
            upload.and_then(|s| c.rate(&at("rate.upload"), &s)),
            download.and_then(|s| c.rate(&at("rate.download"), &s)),
            packets.and_then(|s| c.packet_rate(&at("rate.packets"), &s)),
        ),
    };
    let any_rate = upload_rate.is_some() || download_rate.is_some() || packet_rate.is_some();
    match action {
        Some(ActionKind::RateLimit) if !any_rate => {
            c.error(&at("rate"), "is required with action \"rate_limit\": \"10mbit\" or { upload = \"10mbit\", download = \"20mbit\", packets = \"10kpps\" }");
        }
        Some(a) if a != ActionKind::RateLimit && any_rate => {
            c.warn(
                &at("rate"),
                format!("is only used by action \"rate_limit\"; ignored with {a:?}"),
            );
        }
        _ => {}
    }
    let mut notify_at = Vec::new();
    for (k, f) in r.notify_at.unwrap_or_default().into_iter().enumerate() {
        match Fraction::new(f) {
            Some(f) if f.get() < 1.0 => notify_at.push(f),
            _ => c.error(
                &format!("{path}.notify_at[{}]", k + 1),
                format!("must be a share of the limit in (0, 1), got {f}"),
            ),
        }
    }
    notify_at.sort_by(|a, b| a.get().total_cmp(&b.get()));
    notify_at.dedup();
    let instances = ids(c, &at("instances"), r.instances);
    let tags = labels(c, &at("tags"), r.tags);
    let exclude = ids(c, &at("exclude"), r.exclude);
    Some(RuleConfig {
        name: name?,
        enabled: r.enabled.unwrap_or(true),
        period: period?,
        timezone: timezone?,
        direction: direction?,
        limit: limit?,
        action: action?,
        upload_rate,
        download_rate,
        packet_rate,
        notify_at,
        instances,
        tags,
        exclude,
        elsewhere: None,
        judged: None,
    })
}

fn weekday(s: &str) -> Option<Weekday> {
    Some(match s.to_ascii_lowercase().as_str() {
        "monday" | "mon" => Weekday::Monday,
        "tuesday" | "tue" => Weekday::Tuesday,
        "wednesday" | "wed" => Weekday::Wednesday,
        "thursday" | "thu" => Weekday::Thursday,
        "friday" | "fri" => Weekday::Friday,
        "saturday" | "sat" => Weekday::Saturday,
        "sunday" | "sun" => Weekday::Sunday,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, drop_in_stamp};
    use crate::model::ids::{InstanceId, Label};

    #[test]
    fn a_rate_limit_rule_may_limit_packets_alone() {
        let rule = |rate: &str| {
            format!(
                "[agent]\ninterfaces = ['x']\n[penalty]\nbase_rate = \"1gbit\"\n\
                 [[rule]]\nname = \"flood\"\nperiod = \"day\"\nlimit = \"1GB\"\n\
                 action = \"rate_limit\"\nrate = {rate}\n"
            )
        };
        let c = Config::parse(Path::new("t.toml"), &rule("{ packets = \"10kpps\" }"))
            .unwrap()
            .config;
        let r = c.rules.iter().next().unwrap();
        assert_eq!(r.packet_rate.map(|p| p.per_sec()), Some(10_000));
        assert_eq!((r.upload_rate, r.download_rate), (None, None));
        for (rate, says) in [
            (
                "{ packets = \"5pps\" }",
                "rate.packets: 5pps is under the least",
            ),
            (
                "{ packets = \"10mbit\" }",
                "rate.packets: \"10mbit\" is not a packet rate",
            ),
        ] {
            let e = Config::parse(Path::new("t.toml"), &rule(rate)).unwrap_err();
            let problems: Vec<String> = e.problems.iter().map(|p| p.to_string()).collect();
            assert!(problems.iter().any(|p| p.contains(says)), "{problems:?}");
        }
    }

    #[test]
    fn drop_ins_merge_in_name_order_and_a_bad_file_is_skipped_whole() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let write = |name: &str, text: &str| std::fs::write(d.join(name), text).unwrap();
        write(
            "a.toml",
            "[instances.\"101\"]\ntags = [\"gold\"]\nbase_rate = \"50mbit\"\n",
        );
        write(
            "b.toml",
            "[instances.\"102\"]\ntags = [\"fine\"]\n[instances.\"103\"]\ntags = [\"bad tag\"]\n",
        );
        write(
            "c.toml",
            "[instances.\"101\"]\ntags = [\"metered\"]\nbase_rate = \"70mbit\"\n",
        );
        write("notes.txt", "not a drop-in");
        let text = format!(
            "[agent]\ninterfaces = ['x']\ninstances_dir = \"{}\"\n[penalty]\nbase_rate = \"1gbit\"\n\
             [instances.\"101\"]\ndownload_rate = \"20mbit\"\ntags = [\"base\"]\n",
            d.display()
        );
        let cfg = Config::parse(Path::new("t.toml"), &text).unwrap().config;
        let (merged, errors) = cfg.with_drop_ins();
        let i101 = &merged.instances[&InstanceId::new("101").unwrap()];
        let tags: Vec<&str> = i101.tags.iter().map(Label::as_str).collect();
        assert_eq!(tags, vec!["base", "gold", "metered"]);
        assert_eq!(
            i101.base_rate,
            Some("70mbit".parse().unwrap()),
            "c.toml is read last"
        );
        assert_eq!(i101.download_rate, Some("20mbit".parse().unwrap()));
        // b.toml has one bad table: none of it applies, and the error names file and field.
        assert!(
            !merged
                .instances
                .contains_key(&InstanceId::new("102").unwrap())
        );
        assert_eq!(errors.len(), 1);
        let e = errors[0].to_string();
        assert!(
            e.contains("b.toml") && e.contains("instances.\"103\".tags[1]"),
            "{e}"
        );
        // The file config itself is untouched.
        assert_eq!(cfg.instances.len(), 1);

        // A rewrite is noticed by the stamp the agent compares each tick.
        let before = drop_in_stamp(d);
        assert_eq!(before.len(), 3);
        write("a.toml", "[instances.\"101\"]\ntags = [\"silver\"]\n");
        assert_ne!(drop_in_stamp(d), before);
    }

    #[test]
    fn a_drop_in_with_other_sections_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("x.toml"),
            "[penalty]\nbase_rate = \"1mbit\"\n",
        )
        .unwrap();
        let text = format!(
            "[agent]\ninterfaces = ['x']\ninstances_dir = \"{}\"\n[penalty]\nbase_rate = \"1gbit\"\n",
            dir.path().display()
        );
        let cfg = Config::parse(Path::new("t.toml"), &text).unwrap().config;
        let (_, errors) = cfg.with_drop_ins();
        let e = errors[0].to_string();
        assert!(
            e.contains("penalty") && e.contains("only [instances"),
            "{e}"
        );
    }
}
