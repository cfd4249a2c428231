//! `sluice agent`: the tokio loop that ties the edges to the pure policy.
//!
//! Each tick: one netlink stats dump → policy (pure) → one batched backend reconcile with
//! read-back → snapshot written atomically when it changed. Ticks fall on wall-clock
//! multiples of the interval, so hosts across a fleet sample at the same moments and the
//! work done in a tick never makes the schedule drift; a tick that overruns skips the
//! boundaries it missed instead of running twice. Signals are handled between ticks, so
//! SIGTERM always lets the current tick finish.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use std::sync::Arc;

use crate::account::ledger::{EventRow, boot_id};
use crate::account::{Ledger, LedgerError};
use crate::api::access::Access;
use crate::api::agent::metrics::AgentMetrics;
use crate::api::agent::tokens::TOKENS_FILE;
use crate::api::agent::{self as api, Ask, Liveness, ServeOptions};
use crate::config::{ActionKind, LEDGER_FILE};
use crate::config::{BackendKind, Config, DropInStamp, Known, ShutdownHook, drop_in_stamp};
use crate::enforce::hooks::{self, Hook, HookCall};
use crate::enforce::tc::Scope;
use crate::enforce::{
    Backend, Enforcement, KernelProbe, LinkState, LinkSwitch, OvsBackend, OvsConfig, Switched,
    TcBackend, Wanted,
};
use crate::engine::{self, Charged, TickInput};
use crate::inventory::Inventory;
use crate::model::event::LogKind;
use crate::model::ids::{FastMap, IfName, InstanceId};
use crate::policy::quota::{QuotaEvent, QuotaState, Quotas};
use crate::policy::{ChangeCause, Event, EventKind, Policy, Tick, Verdict};
use crate::report::webhook::Webhooks;
use crate::sample::LinkSampler;
use crate::sample::Sample;
use crate::state::{self, AgentView, Header, LOCK_FILE, Loaded, STATE_FILE, ShaperDrops};
use crate::sys::AgentLock;
use crate::sys::crash::{self, CrashPoint};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot use the directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Lock(#[from] crate::sys::LockError),
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error(transparent)]
    Sample(#[from] crate::sample::SampleError),
    #[error("cannot open a netlink socket for the OVS backend's kernel check: {0}")]
    KernelProbe(std::io::Error),
    #[error("cannot open a netlink socket for the tc backend: {0}")]
    Tc(std::io::Error),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("cannot open a netlink socket for link control: {0}")]
    Links(std::io::Error),
    #[error("quota store: {0}")]
    Store(String),
}

mod answers;
mod inventory_link;
pub mod logging;
mod notify;
mod store_link;
mod store_quotas;
pub mod store_rules;

/// Hook results waiting for the next tick's commit; beyond this many they are only logged.
const EVENT_QUEUE: usize = 1024;
/// A webhook's first retry; doubled each time.
const WEBHOOK_FIRST_RETRY: Duration = Duration::from_secs(2);

/// Whether to redo work whose inputs look unchanged (the state file, the drop-ins).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Redo {
    /// Only when something changed.
    IfChanged,
    /// In any case (first tick, reload, shutdown, new store rules).
    Always,
}

/// The running agent.
pub struct Agent {
    config_path: PathBuf,
    /// The config file as loaded; `config` is it with the instance drop-ins merged in.
    file_config: Config,
    config: Config,
    drop_ins: DropInStamp,
    policy: Policy,
    backend: Backend,
    sampler: LinkSampler,
    /// The latest status of every present interface, in name order.
    enforcement: Vec<(IfName, Enforcement)>,
    /// The tc shapers' drops and overlimits of the latest tick (empty for other backends).
    shapers: FastMap<IfName, ShaperDrops>,
    origin: Instant,
    state_path: PathBuf,
    /// The state file must be rewritten even if the policy saw no change (first tick,
    /// reload, a failed write).
    state_dirty: bool,
    /// `None` while it cannot be opened (retried every tick; counters stay in the kernel,
    /// so nothing is lost, only delayed).
    ledger: Option<Ledger>,
    ledger_expired_at: Option<Timestamp>,
    /// When to look for a closed day of 5-minute buckets to pack next: the next tick
    /// while there is a backlog, else a few minutes on.
    ledger_pack_at: Option<Timestamp>,
    /// Whether the ledger takes our commits (shown in status and metrics).
    ledger_health: crate::api::agent::LedgerStatus,
    links: LinkSwitch,
    /// Interfaces whose link sluice holds down (a `disconnect` rule), to raise at reset.
    downed: BTreeSet<IfName>,
    /// Events to commit with the next tick (enforcement failures, link changes, hooks).
    pending: Vec<EventRow>,
    /// Quota events an operator's reset made, for the next tick to act on (lift a
    /// disconnect, run on_reset) with the ones its own commit fires.
    reset_fired: Vec<QuotaEvent>,
    hook_events: (mpsc::Sender<EventRow>, mpsc::Receiver<EventRow>),
    webhooks: Webhooks,
    /// `[store]`: the spool's reporter (and the embedded store).
    store: Option<store_link::StoreLink>,
    /// The hypervisor sources' thread (`None`: only `names` in `inventory.sources`).
    inventory: Option<inventory_link::InventoryLink>,
    /// What they said last; merged beneath the config file's instances.
    found: Inventory,
    /// The latest tick's samples and verdicts (present interfaces, name order), kept
    /// for the API's answers.
    samples: Vec<Sample>,
    verdicts: Vec<(IfName, Verdict)>,
    /// The API's questions (`None`: `agent.listen = ""`, or the port could not be bound).
    asks: Option<mpsc::Receiver<Ask>>,
    liveness: Arc<Liveness>,
    metrics: AgentMetrics,
    started_at: Timestamp,
    _lock: AgentLock,
}

impl Agent {
    /// Take the lock, restore state, open netlink. Must run inside a tokio runtime.
    pub fn start(config_path: &Path, config: Config) -> Result<Agent, AgentError> {
        let dir = &config.agent.state_dir;
        for d in [dir, &config.agent.data_dir] {
            std::fs::create_dir_all(d)
                .and_then(|()| crate::sys::files::refuse_shared_dir(d))
                .map_err(|e| AgentError::StateDir {
                    path: d.clone(),
                    source: e,
                })?;
        }
        crash::check_env();
        let lock = AgentLock::acquire(&dir.join(LOCK_FILE))?;
        let state_path = dir.join(STATE_FILE);
        let mut policy = Policy::new();
        match state::load_or_move_aside(&state_path, Timestamp::now())? {
            Loaded::Missing => {
                info!(path = %state_path.display(), "no previous state; starting fresh")
            }
            Loaded::MovedAside { reason, moved_to } => warn!(
                path = %state_path.display(),
                moved_to = %moved_to.display(),
                "state file is corrupt ({reason}); moved aside, starting fresh"
            ),
            Loaded::Found(snap) => {
                let mut kept = 0;
                for r in snap.interfaces.into_iter().filter(|r| r.stage > 0) {
                    if r.stage > config.penalty.stages.len() {
                        warn!(interface = %r.interface, stage = r.stage, "saved stage no longer exists in the config; dropped");
                        continue;
                    }
                    let penalty = crate::policy::PenaltyState {
                        stage: r.stage,
                        since: r.since,
                        until: r.until,
                        timer: None,
                    };
                    policy.restore(r.interface, r.instance, penalty);
                    kept += 1;
                }
                info!(
                    penalties = kept,
                    "restored state from {}",
                    state_path.display()
                );
            }
        }
        let backend = build_backend(&config)?;
        let config_webhooks = config.webhooks.clone();
        let store = config
            .store
            .as_ref()
            .map(|s| store_link::StoreLink::start(s, &config.agent))
            .transpose()?;
        let (asks, liveness, metrics) = start_api(&config);
        let (inventory, found) = inventory_link::InventoryLink::for_config(&config.inventory);
        let mut agent = Agent {
            config_path: config_path.to_owned(),
            file_config: config.clone(),
            config,
            drop_ins: Vec::new(),
            policy,
            backend,
            sampler: LinkSampler::open()?,
            enforcement: Vec::new(),
            shapers: FastMap::default(),
            origin: Instant::now(),
            state_path,
            state_dirty: true,
            ledger: None,
            ledger_expired_at: None,
            ledger_pack_at: None,
            ledger_health: Default::default(),
            links: LinkSwitch::open().map_err(AgentError::Links)?,
            downed: BTreeSet::new(),
            pending: Vec::new(),
            reset_fired: Vec::new(),
            hook_events: mpsc::channel(EVENT_QUEUE),
            webhooks: Webhooks::start(&config_webhooks, WEBHOOK_FIRST_RETRY),
            store,
            inventory,
            found,
            samples: Vec::new(),
            verdicts: Vec::new(),
            asks,
            liveness,
            metrics,
            started_at: Timestamp::now(),
            _lock: lock,
        };
        agent.refresh_drop_ins(Redo::Always);
        Ok(agent)
    }

    /// Merge the instance drop-ins again when the directory's files changed (checked
    /// every tick: a control panel's write is seen within one), or `Always`.
    fn refresh_drop_ins(&mut self, redo: Redo) {
        let stamp = drop_in_stamp(&self.file_config.agent.instances_dir);
        if redo == Redo::IfChanged && stamp == self.drop_ins {
            return;
        }
        let (merged, errors) = self.found.apply(self.file_config.clone()).with_drop_ins();
        for e in &errors {
            error!("instance drop-in skipped: {e}");
        }
        if redo == Redo::IfChanged || !stamp.is_empty() {
            info!(
                dir = %self.file_config.agent.instances_dir.display(),
                files = stamp.len(),
                skipped = errors.len(),
                instances = merged.instances.len(),
                "instance drop-ins read"
            );
        }
        self.config = self.with_store_rules(merged);
        self.drop_ins = stamp;
        self.state_dirty = true;
    }

    /// `config` plus a rule per traffic quota the store gave the instances seen here.
    fn with_store_rules(&self, mut config: Config) -> Config {
        let Some(link) = &self.store else {
            return config;
        };
        let set = link.quotas();
        let (rules, problems) = set.rules(config.hooks.shutdown.is_some());
        for p in &problems {
            warn!("store quota: {p}");
        }
        if !rules.is_empty() {
            info!(rules = rules.len(), "quota rules from the store");
        }
        config.rules = config.rules.extended(rules);
        config
    }

    /// Tick until SIGTERM/SIGINT; reload on SIGHUP.
    pub async fn run(mut self) -> Result<(), AgentError> {
        let mut term = signal(SignalKind::terminate()).map_err(AgentError::Signals)?;
        let mut int = signal(SignalKind::interrupt()).map_err(AgentError::Signals)?;
        let mut hup = signal(SignalKind::hangup()).map_err(AgentError::Signals)?;
        info!(
            config = %self.config_path.display(),
            backend = %self.backend.kind(),
            interval = %humantime::format_duration(self.config.agent.interval),
            "sluice agent started"
        );
        let mut notifier = notify::Notifier::new();
        self.notified_tick(&mut notifier).await;
        // Petting between ticks happens in this same loop: a tick that hangs stops it.
        let pet_every = notifier.pet_every().unwrap_or(Duration::from_secs(3600));
        let mut pet = tokio::time::interval(pet_every);
        pet.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut asks = self.asks.take();
        let mut deadline = self.next_deadline();
        loop {
            // `biased`: a due tick goes first, however many questions wait. The deadline
            // is kept across answers, not recomputed from the clock after each: an
            // answer that ends past a boundary would otherwise aim at the next one and
            // skip this tick (a flood of API reads did). Between ticks it may only come
            // earlier (a reload or a reset can bring a period end closer).
            tokio::select! {
                biased;
                _ = tokio::time::sleep_until(deadline) => {
                    self.notified_tick(&mut notifier).await;
                    deadline = self.next_deadline();
                    continue;
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = pet.tick() => notifier.pet(),
                _ = hup.recv() => self.reload(),
                Some(ask) = next_ask(&mut asks) => self.answer(ask).await,
            }
            deadline = deadline.min(self.next_deadline());
        }
        notifier.stopping();
        let mut verdicts = std::mem::take(&mut self.verdicts);
        self.policy.verdicts_into(&self.config, &mut verdicts);
        self.verdicts = verdicts;
        self.write_state(Redo::Always);
        info!("sluice agent stopped; limits left in place");
        Ok(())
    }

    /// When the next tick is due: the next interval boundary or period end.
    fn next_deadline(&self) -> tokio::time::Instant {
        let now = Timestamp::now();
        let wait = next_wait(
            self.config.agent.interval,
            now,
            self.policy.quotas().next_boundary(now),
        );
        tokio::time::Instant::now() + wait
    }

    fn reload(&mut self) {
        match Config::load(&self.config_path) {
            Err(e) => error!("reload failed, keeping the running config: {e}"),
            Ok(loaded) => {
                for w in &loaded.warnings {
                    warn!("config: {w}");
                }
                let new = loaded.config;
                let backend_changed = new.agent.backend != self.config.agent.backend
                    || new.agent.ovs_vsctl != self.config.agent.ovs_vsctl
                    || new.agent.ovsdb != self.config.agent.ovsdb
                    || new.agent.command_timeout != self.config.agent.command_timeout;
                if backend_changed {
                    match build_backend(&new) {
                        Ok(b) => {
                            // Shapers of a backend no longer in use would stay forever.
                            if let Backend::Tc(old) = &mut self.backend
                                && new.agent.backend != BackendKind::Tc
                            {
                                match old.release(&Scope::All) {
                                    Ok(o) => info!(
                                        changes = o.changes,
                                        "backend is no longer tc: removed the tc shapers"
                                    ),
                                    Err(e) => warn!("cannot remove the tc shapers: {e}"),
                                }
                            }
                            self.backend = b;
                        }
                        Err(e) => {
                            error!("reload failed, keeping the running config: {e}");
                            return;
                        }
                    }
                }
                if new.agent.state_dir != self.config.agent.state_dir {
                    warn!("agent.state_dir changes only take effect on restart");
                }
                if !self.webhooks.configs().eq(new.webhooks.iter()) {
                    self.webhooks = Webhooks::start(&new.webhooks, WEBHOOK_FIRST_RETRY);
                }
                let same_sources = self
                    .inventory
                    .as_ref()
                    .is_some_and(|l| *l.config() == new.inventory);
                if !same_sources {
                    // The old sources' thread stops before the new one reads.
                    self.inventory = None;
                    (self.inventory, self.found) =
                        inventory_link::InventoryLink::for_config(&new.inventory);
                }
                self.file_config = new;
                self.refresh_drop_ins(Redo::Always);
                info!(config = %self.config_path.display(), "configuration reloaded");
            }
        }
    }

    /// A tick, then its one-line status to systemd.
    async fn notified_tick(&mut self, notifier: &mut notify::Notifier) {
        let started = Instant::now();
        self.tick().await;
        let took = started.elapsed();
        self.liveness.ticked(Timestamp::now(), took);
        self.metrics.tick_seconds.observe(took.as_secs_f64());
        notifier.ticked(|| self.status_line(took));
    }

    /// `STATUS=`: what `systemctl status sluice` shows.
    fn status_line(&self, took: Duration) -> String {
        let penalised = self
            .enforcement
            .iter()
            .filter(|(name, _)| self.policy.get(name).is_some_and(|st| st.penalty.stage > 0))
            .count();
        let exceeded = self
            .policy
            .quotas()
            .iter()
            .filter(|(_, u)| u.exceeded)
            .count();
        let failed = self
            .enforcement
            .iter()
            .filter(|(_, e)| matches!(e, Enforcement::EnforceFailed { .. }))
            .count();
        format!(
            "{} interfaces, {penalised} penalised, {exceeded} quotas exceeded, {failed} enforce failures; last tick {:.1} ms",
            self.enforcement.len(),
            took.as_secs_f64() * 1e3
        )
    }

    /// Make the next tick rewrite the state file even if nothing changed (the benchmark
    /// uses it to measure a tick that writes, on interfaces that carry no traffic).
    pub fn invalidate_state(&mut self) {
        self.state_dirty = true;
    }

    /// One tick: sample, decide, enforce, record.
    pub async fn tick(&mut self) {
        crash::point(CrashPoint::HangTick);
        let mut samples = match self.sampler.sample() {
            Ok(s) => s,
            Err(e) => {
                error!("sampling failed, skipping this tick: {e}");
                return;
            }
        };
        match self.backend.userspace_samples().await {
            Ok(extra) if !extra.is_empty() => {
                // A name the kernel also has is the kernel's (an OVS row can share it).
                let kernel: std::collections::HashSet<IfName> =
                    samples.iter().map(|s| s.name.clone()).collect();
                samples.extend(extra.into_iter().filter(|s| !kernel.contains(&s.name)));
            }
            Ok(_) => {}
            Err(e) => {
                warn!(error = %e, "cannot read OVSDB statistics of DPDK/vhost-user ports; they are not counted this tick")
            }
        }
        let now = Tick {
            mono: self.origin.elapsed(),
            wall: Timestamp::now(),
        };
        let store_changed = self
            .store
            .as_mut()
            .and_then(store_link::StoreLink::quotas_changed)
            .is_some();
        let found = self
            .inventory
            .as_mut()
            .and_then(inventory_link::InventoryLink::changed);
        let inventory_changed = found.is_some();
        if let Some(found) = found {
            self.found = found;
        }
        self.refresh_drop_ins(if store_changed || inventory_changed {
            Redo::Always
        } else {
            Redo::IfChanged
        });
        while let Ok(e) = self.hook_events.1.try_recv() {
            self.pending.push(e);
        }
        self.open_ledger();
        let mut verdicts = std::mem::take(&mut self.verdicts);
        let ticked = engine::tick(
            &mut self.policy,
            self.ledger.as_mut(),
            &self.config,
            TickInput {
                samples: &samples,
                now,
                spool: self.store.as_ref().map(store_link::StoreLink::plan),
            },
            &mut self.pending,
            &mut verdicts,
        );
        for event in &ticked.events {
            log_event(event);
        }
        let mut fired = std::mem::take(&mut self.reset_fired);
        if let Some(charged) = ticked.charged {
            fired.extend(self.committed(charged, now.wall));
        }
        if let Some(link) = &self.store {
            let mut seen: Vec<InstanceId> =
                verdicts.iter().map(|(_, v)| v.instance.clone()).collect();
            seen.sort_unstable();
            seen.dedup();
            link.saw(seen);
        }
        self.act(&fired, &verdicts);
        let wanted: Vec<Wanted> = verdicts
            .iter()
            .map(|(interface, verdict)| Wanted {
                interface,
                verdict,
                // Only hypervisor sources make claims (`names` is the regex).
                hypervisor: self.config.claims.interfaces.contains_key(interface),
            })
            .collect();
        let statuses = self.backend.reconcile(&wanted).await;
        let enforcement: Vec<(IfName, Enforcement)> = verdicts
            .iter()
            .map(|(name, _)| name.clone())
            .zip(statuses)
            .collect();
        if enforcement != self.enforcement {
            self.state_dirty = true;
            // Same order as the verdicts: a new failure's instance is at its index.
            for i in log_enforcement_changes(&self.enforcement, &enforcement) {
                if let ((name, Enforcement::EnforceFailed { reason }), (_, v)) =
                    (&enforcement[i], &verdicts[i])
                {
                    self.metrics.enforce_failures.inc();
                    self.pending.push(EventRow::new(
                        now.wall,
                        LogKind::EnforceFailed,
                        Some(&v.instance),
                        serde_json::json!({"interface": name.as_str(), "reason": reason}),
                    ));
                }
            }
        }
        self.enforcement = enforcement;
        // Sent bytes move every tick; only new drops are worth a state write.
        let shapers: FastMap<IfName, ShaperDrops> = self
            .backend
            .shaper_counters()
            .map(|m| {
                m.iter()
                    .map(|(n, c)| (n.clone(), ShaperDrops::of(c)))
                    .collect()
            })
            .unwrap_or_default();
        if shapers != self.shapers {
            self.state_dirty = true;
        }
        self.shapers = shapers;
        self.verdicts = verdicts;
        self.write_state(Redo::IfChanged);
        self.samples = samples;
    }

    /// Open the ledger if it is not open yet (a failure is logged and retried next tick:
    /// the kernel keeps counting, so nothing is lost, only delayed).
    fn open_ledger(&mut self) {
        if self.ledger.is_some() {
            return;
        }
        let path = self.config.agent.data_dir.join(LEDGER_FILE);
        let boot = boot_id().unwrap_or_else(|e| {
            warn!("cannot read the boot id ({e}); reboots are seen only as counters going back");
            "unknown".to_owned()
        });
        match Ledger::open(&path, &boot).and_then(|l| Ok((l.quotas()?, l))) {
            Ok((quotas, l)) => {
                let exceeded = quotas.iter().filter(|(_, u)| u.exceeded).count();
                info!(path = %path.display(), quotas = quotas.len(), exceeded, "ledger open");
                self.policy.set_quotas(Quotas::from_rows(quotas));
                self.ledger = Some(l);
            }
            Err(e) => {
                error!("{e}; traffic is counted once it opens (retried every tick)");
                self.ledger_failed(&e);
            }
        }
    }

    /// A ledger open or commit failed: counted, and remembered until one succeeds.
    fn ledger_failed(&mut self, e: &LedgerError) {
        let h = &mut self.ledger_health;
        h.failures += 1;
        h.failing_since.get_or_insert_with(Timestamp::now);
        h.last_error = Some(e.to_string());
    }

    /// After the tick's ledger commit: tell the store link and the webhooks what was
    /// committed, expire old buckets once a day; returns the quota events to act on.
    fn committed(
        &mut self,
        charged: Result<Charged, LedgerError>,
        wall: Timestamp,
    ) -> Vec<QuotaEvent> {
        let fired = match charged {
            Ok(c) => {
                if let Some(since) = self.ledger_health.failing_since.take() {
                    self.ledger_health.last_error = None;
                    info!(
                        %since,
                        failures = self.ledger_health.failures,
                        "ledger: commits succeed again; the traffic since the last one is counted in this one"
                    );
                }
                let r = c.recorded;
                if let Some(link) = self.store.as_mut() {
                    link.committed(r.spooled);
                }
                self.webhooks.send(&c.events);
                if r.resets > 0 || r.estimated > 0 {
                    info!(
                        resets = r.resets,
                        estimated = r.estimated,
                        "ledger: counters reset or a gap spread over its buckets"
                    );
                }
                c.fired
            }
            Err(e) => {
                error!("{e}; this tick's traffic is counted at the next commit");
                self.ledger_failed(&e);
                Vec::new()
            }
        };
        let day = jiff::SignedDuration::from_hours(24);
        if let Some(ledger) = self.ledger.as_mut()
            && self
                .ledger_expired_at
                .is_none_or(|t| wall.duration_since(t) >= day)
        {
            let keep = self.config.ledger;
            match ledger.expire(wall, keep) {
                Ok(n) if n > 0 => info!(rows = n, "ledger: expired old buckets"),
                Ok(_) => {}
                Err(e) => warn!("{e}"),
            }
            self.ledger_expired_at = Some(wall);
        }
        if let Some(ledger) = self.ledger.as_mut()
            && self.ledger_pack_at.is_none_or(|t| wall >= t)
        {
            let later = wall.checked_add(jiff::SignedDuration::from_mins(5)).ok();
            self.ledger_pack_at = match ledger.pack_day(wall) {
                Ok(Some(p)) => {
                    debug!(
                        day = %jiff::Timestamp::from_second(p.day).unwrap_or_default(),
                        interfaces = p.interfaces,
                        rows = p.rows,
                        "ledger: packed a closed day of 5-minute buckets"
                    );
                    None
                }
                Ok(None) => later,
                Err(e) => {
                    warn!("{e}");
                    later
                }
            };
        }
        fired
    }

    /// Carry out what the quotas decided: log each event, run hooks, hold links down
    /// (re-downing re-created ones) and raise the ones sluice downed once they are free.
    fn act(&mut self, fired: &[QuotaEvent], verdicts: &[(IfName, Verdict)]) {
        let first_interface = |instance: &InstanceId| {
            verdicts
                .iter()
                .find(|(_, v)| v.instance == *instance)
                .map_or_else(String::new, |(n, _)| n.to_string())
        };
        let mut raise: BTreeSet<&InstanceId> = BTreeSet::new();
        // Observe only: nothing is carried out; what would have been is logged and
        // recorded as `skipped` events.
        let observe = self.backend.kind() == BackendKind::None;
        let mut skipped: Vec<EventRow> = Vec::new();
        for e in fired {
            log_quota_event(e);
            let call = |hook| HookCall {
                hook,
                instance: e.instance.clone(),
                interface: first_interface(&e.instance),
                rule: e.rule.to_string(),
                action: e.action.to_string(),
                name: self.config.name_of(&e.instance).map(str::to_owned),
            };
            let timeout = self.config.hooks.timeout;
            let hook = match e.state {
                QuotaState::Exceeded if e.action == ActionKind::Shutdown => {
                    match &self.config.hooks.shutdown {
                        Some(ShutdownHook::Argv(argv)) => Some((Run::Argv(argv), Hook::Shutdown)),
                        Some(ShutdownHook::Hypervisor) => {
                            match self.config.claims.instances.get(&e.instance) {
                                Some(Known {
                                    stop: Some(stop), ..
                                }) => Some((Run::Stop(stop), Hook::Shutdown)),
                                known => {
                                    let by =
                                        known.map_or("no inventory source", |k| k.source.as_str());
                                    error!(instance = %e.instance, rule = %e.rule, "cannot shut the instance down through its hypervisor: it was found by {by}, which cannot stop it");
                                    None
                                }
                            }
                        }
                        None => None,
                    }
                }
                QuotaState::Restored => {
                    if e.action == ActionKind::Disconnect {
                        raise.insert(&e.instance);
                    }
                    self.config
                        .hooks
                        .on_reset
                        .as_ref()
                        .map(|argv| (Run::Argv(argv), Hook::OnReset))
                }
                _ => None,
            };
            let Some((run, which)) = hook else { continue };
            let c = call(which);
            if observe {
                info!(hook = which.as_str(), instance = %c.instance, rule = %c.rule, "observe only (backend none): the hook is not run");
                skipped.push(EventRow::new(
                    Timestamp::now(),
                    LogKind::Skipped,
                    Some(&c.instance),
                    serde_json::json!({"action": format!("{}_hook", which.as_str()), "rule": c.rule, "interface": c.interface}),
                ));
                continue;
            }
            if which == Hook::Shutdown {
                // The exceed is committed; the hook is not started. A crash here loses
                // the hook's run (at most once, never twice).
                crash::point(CrashPoint::BeforeHook);
            }
            match run {
                Run::Argv(argv) => hooks::spawn(argv, c, timeout, self.hook_events.0.clone()),
                Run::Stop(stop) => hooks::spawn_stop(stop, c, timeout, self.hook_events.0.clone()),
            }
        }
        // Down: every interface under a disconnect rule, every tick. Up: those sluice
        // downed that no rule holds any more, and those of instances restored just now
        // (after a restart sluice no longer knows which links it downed).
        let mut want: Vec<(u32, LinkState, &IfName, &InstanceId)> = Vec::new();
        for (name, v) in verdicts {
            if v.disconnect {
                want.push((v.ifindex, LinkState::Down, name, &v.instance));
            } else if self.downed.contains(name) || raise.contains(&v.instance) {
                want.push((v.ifindex, LinkState::Up, name, &v.instance));
            }
        }
        if observe {
            for (_, state, name, instance) in want {
                let up = state == LinkState::Up;
                // Once per change, as a real switch would be logged.
                if up != self.downed.contains(name) {
                    continue;
                }
                info!(interface = %name, "observe only (backend none): the link is not set {}", state.as_str());
                skipped.push(EventRow::new(
                    Timestamp::now(),
                    LogKind::Skipped,
                    Some(instance),
                    serde_json::json!({"action": if up { "link_up" } else { "link_down" }, "interface": name.as_str()}),
                ));
                if up {
                    self.downed.remove(name);
                } else {
                    self.downed.insert(name.clone());
                }
            }
            self.pending.append(&mut skipped);
            return;
        }
        self.pending.append(&mut skipped);
        if want.is_empty() {
            return;
        }
        let asks: Vec<(u32, LinkState)> = want.iter().map(|(i, s, _, _)| (*i, *s)).collect();
        let results = self.links.set(&asks);
        let wall = Timestamp::now();
        for ((_, state, name, instance), result) in want.into_iter().zip(results) {
            let up = state == LinkState::Up;
            match result {
                Switched::Failed(e) => {
                    warn!(interface = %name, "cannot set the link {}: {e}", state.as_str());
                    continue;
                }
                Switched::Changed => {
                    if up {
                        info!(interface = %name, "link up: no disconnect rule holds it any more");
                    } else {
                        warn!(interface = %name, "link down: disconnected by a quota rule");
                    }
                    self.pending.push(EventRow::new(
                        wall,
                        if up {
                            LogKind::LinkUp
                        } else {
                            LogKind::LinkDown
                        },
                        Some(instance),
                        serde_json::json!({"interface": name.as_str()}),
                    ));
                }
                Switched::Unchanged => {}
            }
            if up {
                self.downed.remove(name);
            } else {
                self.downed.insert(name.clone());
            }
        }
    }

    /// The latest tick as the state file and the API show it.
    fn view(&self) -> AgentView<'_> {
        AgentView {
            config: &self.config,
            policy: &self.policy,
            verdicts: &self.verdicts,
            enforcement: &self.enforcement,
            shapers: &self.shapers,
        }
    }

    /// Write the snapshot if anything in it changed this tick, or `Always`.
    fn write_state(&mut self, redo: Redo) {
        if !(redo == Redo::Always || self.state_dirty || self.policy.changed()) {
            return;
        }
        let view = self.view();
        let backend = self.backend.kind().to_string();
        let quotas = view.quotas();
        let header = Header {
            written_at: Timestamp::now(),
            pid: std::process::id(),
            backend: &backend,
            interval_secs: self.config.agent.interval.as_secs(),
            quotas: &quotas,
        };
        let written = state::write_streamed(&self.state_path, &header, view.records());
        match written {
            Ok(()) => self.state_dirty = false,
            Err(e) => {
                self.state_dirty = true;
                error!("cannot write state: {e}");
            }
        }
    }
}

/// Serve the API on `agent.listen` (if set); a port that cannot be bound is logged, not
/// fatal — the agent's job is to measure and limit, the API only shows it.
/// What a hook runs: the operator's argv, or the stop a hypervisor source gave.
enum Run<'a> {
    Argv(&'a [String]),
    Stop(&'a crate::config::Stop),
}

fn start_api(config: &Config) -> (Option<mpsc::Receiver<Ask>>, Arc<Liveness>, AgentMetrics) {
    let data = &config.agent.data_dir;
    let (router, link) = api::link(ServeOptions {
        tokens_file: data.join(TOKENS_FILE),
        ledger: data.join(LEDGER_FILE),
        interval: config.agent.interval,
        access: Access::new(
            config
                .agent
                .listen
                .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
            &config.agent.allowed_hosts,
            config.agent.metrics_public,
        ),
    });
    let asks = match config.agent.listen {
        None => None,
        Some(addr) => match api::spawn(addr, router) {
            Ok(_) => Some(link.asks),
            Err(e) => {
                error!("agent.listen {addr}: {e}; the agent runs without its HTTP API and metrics");
                None
            }
        },
    };
    (asks, link.liveness, link.metrics)
}

/// The next API question, or never when there is no API.
async fn next_ask(asks: &mut Option<mpsc::Receiver<Ask>>) -> Option<Ask> {
    match asks {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn build_backend(config: &Config) -> Result<Backend, AgentError> {
    Ok(match config.agent.backend {
        BackendKind::None => Backend::None,
        BackendKind::Tc => Backend::Tc(TcBackend::open().map_err(AgentError::Tc)?),
        BackendKind::Ovs => Backend::Ovs(OvsBackend::new(
            OvsConfig {
                ovs_vsctl: config.agent.ovs_vsctl.clone(),
                db: config.agent.ovsdb.clone(),
                timeout: config.agent.command_timeout,
                client: config.agent.ovs_client,
            },
            Some(KernelProbe::open().map_err(AgentError::KernelProbe)?),
        )),
    })
}

/// Time from `now` to the next wall-clock multiple of `interval` (never zero).
pub fn until_next_boundary(interval: Duration, now: Timestamp) -> Duration {
    let period = interval.as_nanos().max(1);
    let since_epoch = u128::try_from(now.as_nanosecond()).unwrap_or(0);
    let into = since_epoch % period;
    Duration::from_nanos(u64::try_from(period - into).unwrap_or(u64::MAX))
}

/// Time to the next tick: the next wall-clock multiple of the interval, or a quota
/// period's end if that comes first — a reset gets a tick of its own, so no sample
/// straddles it and the restore happens on time.
pub fn next_wait(interval: Duration, now: Timestamp, period_end: Option<Timestamp>) -> Duration {
    let regular = until_next_boundary(interval, now);
    match period_end.filter(|end| *end > now) {
        Some(end) => Duration::try_from(end.duration_since(now))
            .map_or(regular, |to_end| regular.min(to_end)),
        None => regular,
    }
}

/// One line per interface whose enforcement status changed (both lists in name order).
/// Returns the indices in `after` of interfaces that newly became `enforce_failed`.
fn log_enforcement_changes(
    before: &[(IfName, Enforcement)],
    after: &[(IfName, Enforcement)],
) -> Vec<usize> {
    let mut failed = Vec::new();
    for (i, (name, status)) in after.iter().enumerate() {
        let old = before
            .binary_search_by(|(n, _)| n.cmp(name))
            .ok()
            .map(|i| &before[i].1);
        if old == Some(status) {
            continue;
        }
        match status {
            Enforcement::EnforceFailed { reason } => {
                warn!(interface = %name, "enforce_failed: {reason}");
                failed.push(i);
            }
            Enforcement::Applied if old.is_some() => {
                info!(interface = %name, "enforcement verified")
            }
            _ => {}
        }
    }
    failed
}

fn log_quota_event(e: &QuotaEvent) {
    let (rule, inst) = (e.rule.as_str(), e.instance.as_str());
    let (used, limit) = (e.used.get(), e.limit.get());
    match e.state {
        QuotaState::Threshold(f) => info!(
            rule,
            instance = inst,
            used,
            limit,
            "quota: {:.0}% of the limit used",
            f * 100.0
        ),
        QuotaState::Exceeded => warn!(
            rule,
            instance = inst,
            used,
            limit,
            action = %e.action,
            until = %e.period.end,
            "quota exceeded: {} until the period ends",
            e.action
        ),
        QuotaState::Restored => info!(
            rule,
            instance = inst,
            action = %e.action,
            "quota period reset: {} lifted",
            e.action
        ),
    }
}

fn log_event(e: &Event) {
    let (iface, inst) = (e.interface.as_str(), e.instance.as_str());
    match &e.kind {
        EventKind::Stage {
            change,
            upload_limit,
            usage,
            until,
        } => {
            let limit = upload_limit.map_or_else(|| "none".to_owned(), |r| r.to_string());
            let usage =
                usage.map_or_else(|| "unknown".to_owned(), |r| format!("{:.1}mbit", r.mbps()));
            let until = until.map_or_else(|| "-".to_owned(), |t| t.to_string());
            let cause = match change.cause {
                ChangeCause::Escalated => "sustained upload",
                ChangeCause::Expired => "penalty expired",
                ChangeCause::Released => "released by an operator",
            };
            info!(
                interface = iface,
                instance = inst,
                from = change.from,
                to = change.to,
                upload_limit = %limit,
                usage = %usage,
                until = %until,
                "stage {} -> {} ({cause})",
                change.from,
                change.to
            );
        }
        EventKind::Returned { stage } => {
            info!(
                interface = iface,
                instance = inst,
                stage,
                "interface is back; re-applying its running penalty"
            )
        }
        EventKind::VanishedKeepingPenalty { stage } => {
            info!(
                interface = iface,
                instance = inst,
                stage,
                "interface vanished; keeping its running penalty"
            )
        }
        EventKind::CountersReset => info!(
            interface = iface,
            instance = inst,
            "counters reset (interface re-created or host rebooted)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_period_end_between_ticks_gets_its_own_tick() {
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        let minute = Duration::from_secs(60);
        // (now, period end, wait)
        let table = [
            // A +05:30 day ends at :30 UTC, on a minute tick: the same wait either way.
            ("2026-11-23T18:29:10Z", Some("2026-11-23T18:30:00Z"), 50_000),
            ("2026-11-23T18:28:00Z", Some("2026-11-23T18:30:00Z"), 60_000),
            // The end after the next tick changes nothing.
            ("2026-11-23T18:00:10Z", Some("2026-11-23T18:30:00Z"), 50_000),
            // An end already past is ignored (the tick rolls it).
            ("2026-11-23T18:30:10Z", Some("2026-11-23T18:30:00Z"), 50_000),
            ("2026-11-23T18:30:10Z", None, 50_000),
        ];
        for (now, end, ms) in table {
            assert_eq!(
                next_wait(minute, at(now), end.map(at)).as_millis(),
                ms,
                "{now}"
            );
        }
        // With a 7-minute interval, 18:28 waits for 18:30 (the end), not 18:33.
        let seven = Duration::from_secs(420);
        assert_eq!(
            next_wait(
                seven,
                at("2026-11-23T18:28:00Z"),
                Some(at("2026-11-23T18:30:00Z"))
            )
            .as_secs(),
            120
        );
    }

    #[test]
    fn ticks_fall_on_wall_clock_multiples() {
        let at = |s: i64, ms: i64| Timestamp::from_millisecond(s * 1000 + ms).unwrap();
        let table = [
            (60, at(1_700_000_000, 0), 40_000), // 1_700_000_000 % 60 = 20 → 40 s to go
            (60, at(1_700_000_030, 500), 9_500), // 50.5 s into the minute
            (60, at(1_700_000_040, 0), 60_000), // exactly on a boundary: the next one
            (1, at(5, 250), 750),
        ];
        for (interval, now, ms) in table {
            assert_eq!(
                until_next_boundary(Duration::from_secs(interval), now).as_millis(),
                ms,
                "{now}"
            );
        }
    }
}
