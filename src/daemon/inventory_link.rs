//! The inventory's own thread: it polls the hypervisor sources and publishes what they
//! say, and the tick picks the latest up without waiting. A hypervisor that is slow or
//! hung delays only the next refresh, never a tick.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tracing::error;

use crate::config::InventoryConfig;
use crate::inventory::{self, Inventory, Refresher, SourceStatus};

/// How often each source is asked whether it changed.
const POLL: Duration = Duration::from_secs(1);
/// How long the agent's start waits for the first reading, so its first tick already
/// knows whose interfaces are whose (a source slower than this is picked up later).
const FIRST_READING: Duration = Duration::from_secs(3);

#[derive(Default)]
struct Published {
    /// Bumped at each new inventory.
    version: u64,
    inventory: Option<Inventory>,
    statuses: Vec<SourceStatus>,
    polled: bool,
}

struct Shared {
    published: Mutex<Published>,
    polled: Condvar,
    stop: AtomicBool,
}

pub struct InventoryLink {
    shared: Arc<Shared>,
    applied: u64,
    config: InventoryConfig,
}

impl InventoryLink {
    /// Start polling `config`'s sources; returns after the first poll or
    /// [`FIRST_READING`], whichever comes first.
    pub fn start(config: &InventoryConfig) -> InventoryLink {
        let shared = Arc::new(Shared {
            published: Mutex::new(Published::default()),
            polled: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let mut refresher = Refresher::new(inventory::sources(config), config.refresh);
        let thread_shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("sluice-inventory".into())
            .spawn(move || {
                while !thread_shared.stop.load(Ordering::Relaxed) {
                    let fresh = refresher.poll(Instant::now(), Timestamp::now());
                    let statuses = refresher.statuses();
                    if let Ok(mut p) = thread_shared.published.lock() {
                        if let Some(inv) = fresh {
                            p.version += 1;
                            p.inventory = Some(inv);
                        }
                        p.statuses = statuses;
                        p.polled = true;
                    }
                    thread_shared.polled.notify_all();
                    std::thread::sleep(POLL);
                }
            });
        if let Err(e) = spawned {
            error!("inventory: cannot start its thread, no hypervisor will be read: {e}");
        } else if let Ok(p) = shared.published.lock() {
            let _ = shared
                .polled
                .wait_timeout_while(p, FIRST_READING, |p| !p.polled);
        }
        InventoryLink {
            shared,
            applied: 0,
            config: config.clone(),
        }
    }

    /// The link `config` asks for (`None` with only `names`) and its first reading.
    pub fn for_config(config: &InventoryConfig) -> (Option<InventoryLink>, Inventory) {
        let mut link = config
            .reads_hypervisors()
            .then(|| InventoryLink::start(config));
        let found = link
            .as_mut()
            .and_then(InventoryLink::changed)
            .unwrap_or_default();
        (link, found)
    }

    /// What it was started with (a reload with other settings starts a new link).
    pub fn config(&self) -> &InventoryConfig {
        &self.config
    }

    /// The inventory, when it changed since the last call.
    pub fn changed(&mut self) -> Option<Inventory> {
        let p = self.shared.published.lock().ok()?;
        if p.version == self.applied {
            return None;
        }
        self.applied = p.version;
        p.inventory.clone()
    }

    pub fn statuses(&self) -> Vec<SourceStatus> {
        self.shared
            .published
            .lock()
            .map(|p| p.statuses.clone())
            .unwrap_or_default()
    }
}

impl Drop for InventoryLink {
    fn drop(&mut self) {
        // The thread ends within a poll; nothing it holds needs waiting for.
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;
    use crate::config::{IncusSource, SourceKind};

    /// A hypervisor that accepts and then says nothing: the agent's start waits no
    /// longer than its first-reading bound, and the tick's calls return at once while
    /// the read is still hung.
    #[test]
    fn a_source_slower_than_a_tick_never_holds_one() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("unix.socket");
        let listener = UnixListener::bind(&socket).unwrap();
        // Held open and never answered (the events thread's connection too).
        let held = std::thread::spawn(move || {
            let mut conns = Vec::new();
            for c in listener.incoming().take(2).flatten() {
                conns.push(c);
            }
            std::thread::sleep(Duration::from_secs(30));
            drop(conns);
        });
        let config = InventoryConfig {
            sources: vec![SourceKind::Incus],
            incus: IncusSource { socket },
            ..InventoryConfig::default()
        };
        let start = Instant::now();
        let (mut link, found) = InventoryLink::for_config(&config);
        let started = start.elapsed();
        assert!(
            started >= FIRST_READING && started < FIRST_READING + Duration::from_millis(500),
            "the start waited {started:?}"
        );
        assert!(found.instances.is_empty());
        let link = link.as_mut().unwrap();
        for _ in 0..5 {
            let t = Instant::now();
            assert_eq!(link.changed(), None);
            let statuses = link.statuses();
            assert!(
                t.elapsed() < Duration::from_millis(50),
                "a tick's calls took {:?}",
                t.elapsed()
            );
            // Not read yet: neither up nor failed while the answer is awaited.
            assert_eq!(statuses.len(), 0, "{statuses:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
        drop(held);
    }
}
