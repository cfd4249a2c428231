//! The agent's link to the quota store (`[store]`): the embedded store and its API when
//! no `store.url` is set, and the reporter task that sends the spool either way.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tracing::{error, info, warn};

use tokio::sync::watch;

use super::AgentError;
use super::store_quotas::{self, QuotaShared};
use crate::account::ledger::spool::Spooled;
use crate::api::access::Access;
use crate::api::store::{self as http, ApiOptions};
use crate::config::{AgentConfig, LEDGER_FILE, StoreConfig, StoreTarget, TokenSource};
use crate::daemon::store_rules::StoreQuotaSet;
use crate::engine::SpoolPlan;
use crate::model::ids::InstanceId;
use crate::model::ids::Label;
use crate::report::reporter::{Reporter, Sink, SpoolShared, client};
use crate::store::service::{Settings, Store};
use crate::store::sqlite::backup::lock_path;
use crate::sys::AgentLock;

pub struct StoreLink {
    shared: Arc<SpoolShared>,
    quotas: Arc<QuotaShared>,
    /// The quota version the agent's config was last built with.
    applied_quotas: u64,
    instances: watch::Sender<Vec<InstanceId>>,
    max_bytes: u64,
    /// The spool is full and ticks are being dropped (warned once per episode).
    full: bool,
    /// Held while the embedded store serves its database (`sluice store restore` refuses).
    _lock: Option<AgentLock>,
    /// "embedded" or the remote URL, for `sluice status`.
    target: String,
}

fn store_err(e: impl std::fmt::Display) -> AgentError {
    AgentError::Store(e.to_string())
}

/// This host's name, for reports when `store.host` is not set.
fn host_name() -> Result<Label, AgentError> {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_err(|e| store_err(format!("cannot read the host name ({e}); set store.host")))?;
    Label::new(raw.trim()).map_err(|e| {
        store_err(format!(
            "the host name is not usable in reports ({e}); set store.host"
        ))
    })
}

impl StoreLink {
    /// Open the embedded store (or reach for the remote one) and start reporting.
    /// Must run inside the agent's tokio runtime.
    /// `agent`: where the embedded store's API, if it has one, takes its `Host` names
    /// and its `/metrics` rule from (the agent's own).
    pub fn start(cfg: &StoreConfig, agent: &AgentConfig) -> Result<StoreLink, AgentError> {
        let data_dir = &agent.data_dir;
        let host = match &cfg.host {
            Some(h) => h.clone(),
            None => host_name()?,
        };
        let mut lock = None;
        let target = match &cfg.target {
            StoreTarget::Remote { url, .. } => url.clone(),
            StoreTarget::Embedded { database, .. } => format!("embedded ({})", database.display()),
        };
        let sink = match &cfg.target {
            StoreTarget::Remote { url, token } => {
                let token = match token {
                    TokenSource::Inline(t) => t.clone(),
                    TokenSource::File(path) => std::fs::read_to_string(path)
                        .map_err(|e| {
                            store_err(format!("store.token_file {}: {e}", path.display()))
                        })?
                        .trim()
                        .to_owned(),
                };
                info!(%url, %host, "reporting traffic to the quota store");
                Sink::Remote {
                    client: client().map_err(store_err)?,
                    url: url.clone(),
                    token,
                }
            }
            StoreTarget::Embedded {
                database,
                listen,
                timezone,
            } => {
                if let Some(dir) = database.parent() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| store_err(format!("{}: {e}", dir.display())))?;
                }
                lock = Some(AgentLock::acquire(&lock_path(database))?);
                let settings = Settings {
                    timezone: timezone.clone(),
                    ..Settings::default()
                };
                let store = Store::open_sqlite(database, settings).map_err(store_err)?;
                if let Some(addr) = listen {
                    let listener = std::net::TcpListener::bind(addr)
                        .and_then(|l| l.set_nonblocking(true).map(|()| l))
                        .and_then(tokio::net::TcpListener::from_std)
                        .map_err(|e| store_err(format!("store.listen {addr}: {e}")))?;
                    let api = store.clone();
                    let options = ApiOptions {
                        access: Access::new(*addr, &agent.allowed_hosts, agent.metrics_public),
                        ..ApiOptions::default()
                    };
                    tokio::spawn(async move {
                        if let Err(e) =
                            http::serve(listener, api, options, std::future::pending()).await
                        {
                            error!("embedded quota store API stopped: {e}");
                        }
                    });
                }
                info!(database = %database.display(), %host, "embedded quota store open");
                Sink::Local(store)
            }
        };
        let sink = Arc::new(sink);
        let shared = Arc::new(SpoolShared::default());
        tokio::spawn(
            Reporter {
                ledger: data_dir.join(LEDGER_FILE),
                host: host.clone(),
                sink: sink.clone(),
                shared: shared.clone(),
            }
            .run(),
        );
        let cache = data_dir.join(store_quotas::CACHE_FILE);
        let quotas = Arc::new(QuotaShared::from_cache(&cache));
        let (instances, seen) = watch::channel(Vec::new());
        tokio::spawn(store_quotas::run(
            sink,
            host,
            quotas.clone(),
            seen,
            cfg.quota_refresh,
            cache,
        ));
        Ok(StoreLink {
            shared,
            quotas,
            applied_quotas: 0,
            instances,
            max_bytes: cfg.spool_max.get(),
            full: false,
            _lock: lock,
            target,
        })
    }

    /// Tell the quota fetcher which instances this tick saw (sorted, deduplicated).
    pub fn saw(&self, instances: Vec<InstanceId>) {
        self.instances.send_if_modified(|cur| {
            if *cur == instances {
                false
            } else {
                *cur = instances;
                true
            }
        });
    }

    /// The store's quotas, when they changed since the config was last built with them.
    pub fn quotas_changed(&mut self) -> Option<Arc<StoreQuotaSet>> {
        let v = self.quotas.version();
        (v != self.applied_quotas).then(|| {
            self.applied_quotas = v;
            self.quotas.current()
        })
    }

    /// The store's quotas as they are now.
    pub fn quotas(&self) -> Arc<StoreQuotaSet> {
        self.quotas.current()
    }

    /// What the next commit spools and trims.
    pub fn plan(&self) -> SpoolPlan {
        SpoolPlan {
            acked_through: self.shared.acked.load(Ordering::Acquire),
            max_bytes: self.max_bytes,
        }
    }

    /// Where reports go and how the latest went.
    pub fn status(&self) -> crate::api::agent::StoreStatus {
        let contact = self
            .shared
            .contact
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default();
        crate::api::agent::StoreStatus {
            target: self.target.clone(),
            spool_bytes: self.shared.bytes.load(Ordering::Relaxed),
            last_report: contact.last_report,
            failing_since: contact.failing.as_ref().map(|(t, _)| *t),
            last_error: contact.failing.map(|(_, why)| why),
            quotas_fetched: self.quotas.fetched(),
            quotas_failing_since: self.quotas.failing_since(),
        }
    }

    /// Report bytes waiting in the spool.
    pub fn spool_bytes(&self) -> u64 {
        self.shared.bytes.load(Ordering::Relaxed)
    }

    /// After a commit: wake the reporter, and say so loudly when the spool is full.
    pub fn committed(&mut self, s: Option<Spooled>) {
        let Some(s) = s else {
            return;
        };
        self.shared.bytes.store(s.bytes, Ordering::Relaxed);
        self.shared.wake.notify_one();
        match (s.dropped, self.full) {
            (true, false) => error!(
                spool_bytes = s.bytes,
                spool_max = self.max_bytes,
                "report spool is full: this tick's traffic will not reach the quota store (the ledger still counts it); is the store reachable?"
            ),
            (false, true) => warn!(spool_bytes = s.bytes, "report spool has room again"),
            _ => {}
        }
        self.full = s.dropped;
    }
}
