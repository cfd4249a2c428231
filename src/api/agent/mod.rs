//! The agent's HTTP API (axum, 127.0.0.1:9477 by default): what `sluice list` and
//! `sluice status` show, the event log, Prometheus metrics, and an operator's release of
//! a penalty.
//!
//! The HTTP side never touches the agent's state: each request is a question ([`Ask`])
//! sent to the tick loop, which answers between ticks from its live state (so an answer
//! is never older than the last tick and costs nothing when nobody asks), and the reply
//! is encoded on the HTTP side (a slow client never holds the loop). Only `/healthz`
//! answers from shared atomics, so it stays quick while a tick runs; and `/v1/events`
//! reads the ledger on its own read-only connection.
//!
//! On loopback (the default) reads need no token; beyond it they need a viewer or admin
//! token (see [`crate::api::access`]). Changes always need an admin token made with
//! `sluice token create` — the store's token model.

pub mod metrics;
mod pages;
mod routes;
pub mod tokens;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info};

use crate::api::access::{self, Access};
use crate::config::{ActionKind, Direction, RuleConfig};
use crate::model::calendar::PeriodKind;
use crate::model::ids::{IfName, InstanceId};
use crate::state::{InterfaceRecord, QuotaRecord, Snapshot};
use metrics::{AgentMetrics, Scrape};
use tokens::AgentTokens;

/// Questions waiting for the tick loop; beyond this, callers get a 503.
const ASK_QUEUE: usize = 64;
/// A question the loop has not answered by then gets a 503 (a tick stuck on a
/// hung ovs-vsctl, say).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// A question for the tick loop, with where to send the answer.
pub enum Ask {
    /// What `sluice list --json` prints.
    Interfaces(oneshot::Sender<Snapshot>),
    Instance(InstanceId, oneshot::Sender<Option<InstanceView>>),
    Rules(oneshot::Sender<Vec<RuleView>>),
    Metrics(oneshot::Sender<Scrape>),
    /// The config in force (with drop-ins and store rules), for charts' quota panels.
    Config(oneshot::Sender<crate::config::Config>),
    Status(oneshot::Sender<StatusView>),
    /// End the interface's penalty now.
    Release(
        IfName,
        oneshot::Sender<Result<InterfaceRecord, ReleaseRefused>>,
    ),
    /// Start (rule, instance)'s count for the current period over (`None`: no count).
    ResetQuota(
        crate::model::ids::RuleName,
        InstanceId,
        oneshot::Sender<Option<QuotaRecord>>,
    ),
}

/// Why a release was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseRefused {
    #[error("interface {0} is not watched by this agent")]
    Unknown(IfName),
    #[error("interface {0} has no penalty to release (stage 0)")]
    NotPenalised(IfName),
}

/// One instance: its interfaces and its quota counts of the current periods.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceView {
    pub instance: InstanceId,
    pub base_rate_bps: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_rate_bps: Option<u64>,
    pub interfaces: Vec<InterfaceRecord>,
    pub quotas: Vec<QuotaRecord>,
}

/// A quota rule in force (from the config or handed out by the quota store).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleView {
    pub name: String,
    pub source: RuleSource,
    pub enabled: bool,
    pub period: PeriodKind,
    pub timezone: String,
    pub direction: Direction,
    pub limit_bytes: u64,
    pub action: ActionKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_rate_bps: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_rate_bps: Option<u64>,
    pub notify_at: Vec<f64>,
    pub instances: Vec<String>,
    pub tags: Vec<String>,
    pub exclude: Vec<String>,
}

/// Where a rule came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleSource {
    /// The config file or an instance drop-in.
    Config,
    /// A traffic quota the quota store set (`store:…` rules).
    Store,
}

impl RuleView {
    pub fn of(r: &RuleConfig) -> RuleView {
        RuleView {
            name: r.name.to_string(),
            source: if r.name.as_str().starts_with("store:") {
                RuleSource::Store
            } else {
                RuleSource::Config
            },
            enabled: r.enabled,
            period: r.period,
            timezone: r.timezone.iana_name().unwrap_or("UTC").to_owned(),
            direction: r.direction,
            limit_bytes: r.limit.get(),
            action: r.action,
            upload_rate_bps: r.upload_rate.map(|x| x.bits_per_sec()),
            download_rate_bps: r.download_rate.map(|x| x.bits_per_sec()),
            notify_at: r.notify_at.iter().map(|f| f.get()).collect(),
            instances: r.instances.iter().map(ToString::to_string).collect(),
            tags: r.tags.iter().map(ToString::to_string).collect(),
            exclude: r.exclude.iter().map(ToString::to_string).collect(),
        }
    }
}

/// The store link as the agent sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStatus {
    /// "embedded" or the remote URL.
    pub target: String,
    pub spool_bytes: u64,
    /// The last report the store took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_report: Option<Timestamp>,
    /// Since when reports fail, and the latest reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the store last answered the quota lookup (its quotas and the rest of the
    /// fleet's counts), and since when it does not: the last answer is kept meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quotas_fetched: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quotas_failing_since: Option<Timestamp>,
}

/// What `sluice status` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusView {
    pub pid: u32,
    pub version: String,
    pub backend: String,
    pub interval_secs: u64,
    pub started_at: Timestamp,
    pub interfaces: usize,
    pub instances: usize,
    pub penalised: usize,
    pub rules: usize,
    pub quotas_exceeded: usize,
    pub enforce_failed: usize,
    pub links_down: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_tick: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_tick_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreStatus>,
    /// The hypervisor sources of `inventory.sources` (none with only `names`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inventory: Vec<SourceView>,
    #[serde(default)]
    pub ledger: LedgerStatus,
}

/// Whether the ledger takes the ticks' commits. While it does not (a full or read-only
/// disk), the agent goes on enforcing and the kernel keeps counting: the first commit
/// that succeeds again counts everything since the last one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LedgerStatus {
    /// Since when every open or commit has failed (`None`: the last one succeeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Failed opens and commits since the agent started.
    #[serde(default)]
    pub failures: u64,
}

/// How one inventory source is doing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceView {
    pub source: String,
    /// Its latest read succeeded.
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The last successful read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_at: Option<Timestamp>,
    /// Instances in the reading in use (a failing source keeps its last one).
    pub instances: usize,
    /// Records it had to leave out (the log names each file and line).
    pub problems: usize,
    pub failures: u64,
}

/// What the tick loop and the HTTP side share without asking: enough for `/healthz`.
#[derive(Debug)]
pub struct Liveness {
    /// Unix ms of the last finished tick (0: none yet).
    last_tick_ms: AtomicI64,
    /// Its duration in µs.
    last_took_us: AtomicU64,
    interval: Duration,
}

impl Liveness {
    pub fn new(interval: Duration) -> Liveness {
        Liveness {
            last_tick_ms: AtomicI64::new(0),
            last_took_us: AtomicU64::new(0),
            interval,
        }
    }

    pub fn ticked(&self, at: Timestamp, took: Duration) {
        self.last_took_us.store(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.last_tick_ms
            .store(at.as_millisecond(), Ordering::Release);
    }

    pub fn last_tick(&self) -> Option<(Timestamp, Duration)> {
        let ms = self.last_tick_ms.load(Ordering::Acquire);
        let at = (ms > 0).then(|| Timestamp::from_millisecond(ms).ok())??;
        Some((
            at,
            Duration::from_micros(self.last_took_us.load(Ordering::Relaxed)),
        ))
    }

    /// A tick is overdue after three intervals (plus slack for a slow one).
    fn overdue(&self, now: Timestamp) -> bool {
        let Some((at, _)) = self.last_tick() else {
            return true;
        };
        let slack = self.interval * 3 + Duration::from_secs(10);
        now.duration_since(at).unsigned_abs() > slack && now > at
    }
}

/// The HTTP side's handles.
#[derive(Clone)]
pub struct ApiState {
    asks: mpsc::Sender<Ask>,
    liveness: Arc<Liveness>,
    metrics: AgentMetrics,
    tokens: Arc<AgentTokens>,
    access: Access,
    ledger: PathBuf,
    /// The read-only ledger connection `/v1/events` reuses (opened on first use).
    events_conn: Arc<Mutex<Option<rusqlite::Connection>>>,
    /// This host's name, for the dashboard's title.
    host: Arc<str>,
}

/// What the agent keeps to answer and to serve: the receiving end of the questions.
pub struct ApiLink {
    pub asks: mpsc::Receiver<Ask>,
    pub liveness: Arc<Liveness>,
    pub metrics: AgentMetrics,
}

/// Everything the server needs besides the questions' channel.
pub struct ServeOptions {
    pub tokens_file: PathBuf,
    pub ledger: PathBuf,
    pub interval: Duration,
    /// Who may reach the API: the `Host` names it answers to, whether reads need a token.
    pub access: Access,
}

/// Build the router and the agent's side of it (tests serve the router themselves).
pub fn link(options: ServeOptions) -> (axum::Router, ApiLink) {
    let (tx, rx) = mpsc::channel(ASK_QUEUE);
    let liveness = Arc::new(Liveness::new(options.interval));
    let metrics = AgentMetrics::default();
    let state = ApiState {
        asks: tx,
        liveness: liveness.clone(),
        metrics: metrics.clone(),
        tokens: Arc::new(AgentTokens::new(options.tokens_file)),
        access: options.access.clone(),
        ledger: options.ledger,
        events_conn: Arc::new(Mutex::new(None)),
        host: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map_or_else(|_| "this host".into(), |h| h.trim().into()),
    };
    (
        routes::routes()
            .with_state(state)
            .layer(axum::middleware::from_fn_with_state(
                options.access,
                access::check_host,
            ))
            // Browsers ask for gzip: a 1,000-instance dashboard is ~8x smaller on the wire.
            .layer(tower_http::compression::CompressionLayer::new()),
        ApiLink {
            asks: rx,
            liveness,
            metrics,
        },
    )
}

/// Bind `addr` and serve `router` in the background. A port that cannot be bound is
/// logged, not fatal: the agent's job is to measure and limit, the API only shows it.
///
/// The server has a thread and a runtime of its own, apart from the tick loop's: a tick
/// stuck in a blocking call (an fsync on a dying disk, say) must not also silence
/// `/healthz`, whose 503 is how a probe learns of it. Questions about the agent's state
/// still go to the tick loop over a channel and wait for it.
pub fn spawn(addr: SocketAddr, router: axum::Router) -> Result<SocketAddr, std::io::Error> {
    let std_listener = std::net::TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    let bound = std_listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("sluice-api".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match TcpListener::from_std(std_listener) {
                    Ok(l) => l,
                    Err(e) => return error!("agent API on {bound}: {e}"),
                };
                if let Err(e) = axum::serve(listener, router).await {
                    error!("agent API stopped: {e}");
                }
            });
        })?;
    info!(addr = %bound, "agent API listening");
    Ok(bound)
}
