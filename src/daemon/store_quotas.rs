//! The store's traffic quotas reaching the agent: every `store.quota_refresh` (and when
//! the set of instances it sees changes) the agent asks its store for the quotas of those
//! instances, keeps them in memory for the tick loop, and caches them on disk so a
//! restart while the store is away still enforces them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::daemon::store_rules::StoreQuotaSet;
use crate::model::ids::{InstanceId, Label};
use crate::report::reporter::Sink;
use crate::sys::write_atomic;

/// The quota cache's file name inside `agent.data_dir`.
pub const CACHE_FILE: &str = "store-quotas.json";

/// What the agent and the fetcher share.
pub struct QuotaShared {
    current: Mutex<Arc<StoreQuotaSet>>,
    /// Bumped at every change of `current`.
    version: AtomicU64,
    /// (last answer, failing since), for `sluice status`.
    contact: Mutex<(Option<Timestamp>, Option<Timestamp>)>,
}

impl QuotaShared {
    /// Start from the disk cache (version 1 when there is one, so it is applied).
    pub fn from_cache(path: &std::path::Path) -> QuotaShared {
        let cached = std::fs::read(path).ok().and_then(|b| {
            match serde_json::from_slice::<StoreQuotaSet>(&b) {
                Ok(set) => Some(set),
                Err(e) => {
                    warn!(path = %path.display(), "store quota cache unreadable ({e}); ignored");
                    None
                }
            }
        });
        let version = u64::from(cached.is_some());
        if let Some(set) = &cached {
            info!(
                instances = set.quotas.len(),
                "store quotas from the cache, until the store answers"
            );
        }
        QuotaShared {
            current: Mutex::new(Arc::new(cached.unwrap_or_default())),
            version: AtomicU64::new(version),
            contact: Mutex::new((None, None)),
        }
    }

    /// When the store last answered a lookup.
    pub fn fetched(&self) -> Option<Timestamp> {
        self.contact.lock().ok().and_then(|c| c.0)
    }

    /// Since when lookups fail (the last answer is in use meanwhile).
    pub fn failing_since(&self) -> Option<Timestamp> {
        self.contact.lock().ok().and_then(|c| c.1)
    }

    fn answered(&self, ok: bool) {
        if let Ok(mut c) = self.contact.lock() {
            let now = Timestamp::now();
            if ok {
                *c = (Some(now), None);
            } else if c.1.is_none() {
                c.1 = Some(now);
            }
        }
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub fn current(&self) -> Arc<StoreQuotaSet> {
        match self.current.lock() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn replace(&self, set: StoreQuotaSet) -> bool {
        let mut g = match self.current.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if **g == set {
            return false;
        }
        *g = Arc::new(set);
        self.version.fetch_add(1, Ordering::AcqRel);
        true
    }
}

/// Ask the store for the quotas of `ids`, as `host` (each with what the other hosts
/// counted in its period; the embedded store has no other host).
async fn fetch(sink: &Sink, host: &Label, ids: &[InstanceId]) -> Result<StoreQuotaSet, String> {
    match sink {
        Sink::Local(store) => {
            let quotas = store
                .traffic_quotas_for(host.clone(), ids.to_vec())
                .await
                .map_err(|e| e.to_string())?;
            Ok(StoreQuotaSet {
                timezone: store
                    .settings()
                    .timezone
                    .iana_name()
                    .unwrap_or("UTC")
                    .to_owned(),
                quotas,
            })
        }
        Sink::Remote { .. } => {
            // In parts the store takes; the answers join into one set.
            let mut all = StoreQuotaSet::default();
            for part in ids.chunks(crate::store::MAX_LOOKUP_IDS) {
                let got = fetch_part(sink, part).await?;
                all.timezone = got.timezone;
                all.quotas.extend(got.quotas);
            }
            Ok(all)
        }
    }
}

/// One `POST /v1/quotas/lookup` to a remote store.
async fn fetch_part(sink: &Sink, ids: &[InstanceId]) -> Result<StoreQuotaSet, String> {
    match sink {
        Sink::Local(_) => Err("not a remote store".into()),
        Sink::Remote { client, url, token } => {
            let body = serde_json::json!({ "instances": ids.iter().map(InstanceId::as_str).collect::<Vec<_>>() });
            let resp = client
                .post(format!("{url}/v1/quotas/lookup"))
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
            if status != 200 {
                return Err(format!(
                    "HTTP {status}: {}",
                    String::from_utf8_lossy(&bytes)
                        .chars()
                        .take(300)
                        .collect::<String>()
                ));
            }
            serde_json::from_slice(&bytes).map_err(|e| format!("unreadable answer: {e}"))
        }
    }
}

/// Fetch until the agent stops: every `every`, and whenever the instances change.
pub async fn run(
    sink: Arc<Sink>,
    host: Label,
    shared: Arc<QuotaShared>,
    mut instances: watch::Receiver<Vec<InstanceId>>,
    every: Duration,
    cache: PathBuf,
) {
    let mut failing = false;
    loop {
        let ids = instances.borrow_and_update().clone();
        if !ids.is_empty() {
            match fetch(&sink, &host, &ids).await {
                Ok(set) => {
                    shared.answered(true);
                    if failing {
                        info!("store quotas: the store answers again");
                        failing = false;
                    }
                    let count: usize = set.quotas.values().map(Vec::len).sum();
                    let write = serde_json::to_vec(&set);
                    if shared.replace(set) {
                        info!(
                            quotas = count,
                            instances = ids.len(),
                            "store quotas changed"
                        );
                        let written = write.map_err(std::io::Error::other).and_then(|bytes| {
                            write_atomic(&cache, 0o600, |f| std::io::Write::write_all(f, &bytes))
                        });
                        if let Err(e) = written {
                            warn!(path = %cache.display(), "cannot cache the store quotas: {e}");
                        }
                    }
                }
                Err(e) => {
                    shared.answered(false);
                    if !failing {
                        warn!("cannot fetch the store quotas ({e}); keeping the last ones");
                        failing = true;
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            changed = instances.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}
