//! Open vSwitch backend: upload limits as `Interface.ingress_policing_rate` (kbit/s) and
//! `ingress_policing_burst` (kbit), packet-rate limits as `ingress_policing_kpkts_rate`
//! and `_burst` (OVS 2.16+; refused, naming why, where the schema lacks them); download
//! limits as a `linux-htb` QoS with one queue on
//! the interface's port ([`change`] says how).
//!
//! Per tick: a read of what OVSDB holds, and — only when something differs — one write
//! carrying every change, then a read-back. Whatever OVSDB holds that differs from the
//! verdict (say, set by hand) is set back: reconciling, not fire-and-forget. Two clients
//! do the reads and writes:
//! - `native` (the default): a session of its own on the database socket
//!   ([`crate::sys::ovsdb`]). The read is the session's replica, in memory; the write is
//!   one `transact`, and the replica already shows its result when the reply comes. No
//!   process is started in steady state;
//! - `vsctl`: `ovs-vsctl list Interface`, and one `ovs-vsctl --no-wait` carrying every
//!   change as `-- set interface …` clauses (separate calls cost a process each). It
//!   reads and writes policing only: download limits need the native client.
//!
//! Finally the kernel is asked whether it holds what OVSDB says ([`KernelProbe`]), since
//! OVS accepts values the kernel cannot enforce: only for an interface whose limits (or
//! netdev) changed since the kernel last showed them, since nothing but vswitchd puts
//! them there and it follows the database. And only once vswitchd has applied the write:
//! the native client's transaction bumps `Open_vSwitch.next_cfg`, and vswitchd sets
//! `cur_cfg` to it when it has reconfigured; until then the interface is `pending`
//! without asking the kernel, and a vswitchd that never catches up (stopped, hung) is
//! named after the command timeout. (The `vsctl` client, which writes `--no-wait`, keeps
//! an interface pending for one tick after a write instead.)

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

mod change;
mod kernel;
pub(crate) mod rows;

pub use change::PortLimits;
pub use kernel::KernelProbe;
pub use rows::{InterfaceRow, InterfaceRows, PortQos};

use super::{Enforcement, Wanted};
use crate::config::{DEFAULT_OVSDB, OvsClientKind};
use crate::model::ids::IfName;
use crate::sample::Sample;
use crate::sample::ovsdb::{is_userspace, samples_of};
use crate::sys::command::run;
use crate::sys::ovsdb::{Endpoint, Session, Watch};
use change::{Change, Plan, Police, QosChange, plan, set_clauses, transact_ops};

#[derive(Debug, Clone)]
pub struct OvsConfig {
    pub ovs_vsctl: PathBuf,
    pub db: Option<String>,
    pub timeout: Duration,
    pub client: OvsClientKind,
}

/// The native client: its session (started at the first read, on the runtime that
/// reads) and the rows last made from its replica, by the replica's generation.
#[derive(Default)]
struct Native {
    session: Option<Session>,
    rows: Option<(u64, Arc<InterfaceRows>)>,
}

/// The tables and columns the native session monitors; never `Interface.statistics`,
/// which vswitchd rewrites every few seconds.
const MONITORED: [(&str, &[&str]); 5] = [
    (
        "Interface",
        &[
            "name",
            "ingress_policing_rate",
            "ingress_policing_burst",
            "ingress_policing_kpkts_rate",
            "ingress_policing_kpkts_burst",
            "external_ids",
            "type",
        ],
    ),
    ("Port", &["name", "interfaces", "qos"]),
    ("QoS", &["type", "other_config", "queues", "external_ids"]),
    ("Queue", &["other_config", "external_ids"]),
    ("Open_vSwitch", &["next_cfg", "cur_cfg"]),
];

impl Native {
    /// The session, started (and its first replica awaited, up to the command timeout)
    /// at the first use; an error while it is down.
    async fn session(&mut self, config: &OvsConfig) -> Result<&Session, String> {
        let session = match &mut self.session {
            Some(s) => s,
            slot @ None => {
                let db = config.db.as_deref().unwrap_or(DEFAULT_OVSDB);
                let endpoint: Endpoint = db.parse()?;
                let watch = Watch {
                    database: "Open_vSwitch".into(),
                    tables: MONITORED
                        .iter()
                        .map(|(t, cols)| {
                            (
                                (*t).to_owned(),
                                cols.iter().map(|c| (*c).to_owned()).collect(),
                            )
                        })
                        .collect(),
                    probe: Duration::from_secs(5),
                };
                let session = slot.insert(Session::start(endpoint, watch));
                session.wait_live(config.timeout).await;
                session
            }
        };
        let r = session.replica();
        if !r.live {
            let why = r.down_reason.clone().unwrap_or_default();
            return Err(format!("no OVSDB session: {why}"));
        }
        drop(r);
        Ok(session)
    }
}

pub struct OvsBackend {
    config: OvsConfig,
    probe: Option<KernelProbe>,
    native: Native,
    /// Interfaces written and not yet settled: pending until vswitchd has applied the
    /// write (or, with the vsctl client, for one tick after it).
    awaiting: HashMap<IfName, Awaiting>,
    /// The limits the kernel last showed on each interface (by name and netdev): not
    /// asked again while the database holds the same.
    verified: HashMap<(IfName, u32), PortLimits>,
}

impl OvsBackend {
    /// `probe` is the kernel check; `None` skips it (only for hosts where it cannot run).
    pub fn new(config: OvsConfig, probe: Option<KernelProbe>) -> Self {
        OvsBackend {
            config,
            probe,
            native: Native::default(),
            awaiting: HashMap::new(),
            verified: HashMap::new(),
        }
    }

    fn base_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(db) = &self.config.db {
            args.push(format!("--db={db}"));
        }
        args.push(format!(
            "--timeout={}",
            self.config.timeout.as_secs().max(1)
        ));
        args
    }

    /// Every Interface row's policing and port QoS, by name.
    pub async fn read(&mut self) -> Result<Arc<InterfaceRows>, String> {
        match self.config.client {
            OvsClientKind::Native => self.read_native().await,
            OvsClientKind::Vsctl => self.read_vsctl().await.map(Arc::new),
        }
    }

    /// Write `plan` (rows found by the uuids `rows` holds, or by name). Native: also ask
    /// vswitchd to say when it has applied it, and return the configuration number it
    /// will then show in `cur_cfg`.
    async fn write(
        &mut self,
        plan: &Plan<'_>,
        rows: &InterfaceRows,
    ) -> Result<Option<i64>, String> {
        match self.config.client {
            OvsClientKind::Native => {
                let timeout = self.config.timeout;
                let session = self.native.session(&self.config).await?;
                let mut ops = transact_ops(plan, rows);
                ops.extend(change::cfg_ops());
                let results = session
                    .transact(ops, timeout)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(results.last().and_then(change::next_cfg_of))
            }
            OvsClientKind::Vsctl => self.write_vsctl(&plan.changes).await.map(|()| None),
        }
    }

    async fn read_native(&mut self) -> Result<Arc<InterfaceRows>, String> {
        self.native.session(&self.config).await?;
        let Native { session, rows } = &mut self.native;
        let Some(session) = session else {
            return Err("no OVSDB session".into());
        };
        let r = session.replica();
        if let Some((generation, rows)) = rows
            && *generation == r.generation
        {
            return Ok(rows.clone());
        }
        let fresh = Arc::new(rows::of_replica(&r.tables, &r.columns)?);
        *rows = Some((r.generation, fresh.clone()));
        Ok(fresh)
    }

    async fn read_vsctl(&self) -> Result<InterfaceRows, String> {
        let mut args = self.base_args();
        args.extend(
            [
                "--format=json",
                "--columns=name,ingress_policing_rate,ingress_policing_burst,external_ids",
                "list",
                "Interface",
            ]
            .map(String::from),
        );
        let out = run(&self.config.ovs_vsctl, &args, self.config.timeout)
            .await
            .map_err(|e| e.to_string())?;
        rows::of_vsctl_list(&out)
    }

    async fn write_vsctl(&self, changes: &[Change]) -> Result<(), String> {
        let mut args = self.base_args();
        args.extend(set_clauses(changes));
        run(&self.config.ovs_vsctl, &args, self.config.timeout)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Samples of the interfaces with no kernel netdev (DPDK, vhost-user), from the
    /// `statistics` vswitchd writes for them: one `select` by uuid of just those rows,
    /// and none at all on a host without them (the monitor never carries `statistics`,
    /// which vswitchd rewrites for every port every few seconds). The vsctl client
    /// reports none.
    pub async fn userspace_samples(&mut self) -> Result<Vec<Sample>, String> {
        if self.config.client != OvsClientKind::Native {
            return Ok(Vec::new());
        }
        let rows = self.read().await?;
        if rows.userspace.is_empty() {
            return Ok(Vec::new());
        }
        let ops: Vec<serde_json::Value> = rows
            .userspace
            .iter()
            .map(|uuid| {
                serde_json::json!({
                    "op": "select",
                    "table": "Interface",
                    "where": [["_uuid", "==", ["uuid", uuid]]],
                    "columns": ["_uuid", "name", "statistics"],
                })
            })
            .collect();
        let timeout = self.config.timeout;
        let session = self.native.session(&self.config).await?;
        let results = session
            .transact(ops, timeout)
            .await
            .map_err(|e| e.to_string())?;
        let selected: Vec<serde_json::Value> = results
            .iter()
            .filter_map(|r| r.get("rows")?.as_array())
            .flatten()
            .cloned()
            .collect();
        samples_of(&selected)
    }

    /// Clear the policing and remove the QoS sluice set on every interface `select`
    /// picks (`sluice release`); returns the interfaces released.
    pub async fn release(
        &mut self,
        select: impl Fn(&IfName) -> bool,
    ) -> Result<Vec<IfName>, String> {
        let current = self.read().await?;
        let packets_supported = current.packets_unsupported.is_none();
        let mut changes: Vec<Change> = current
            .rows
            .iter()
            .filter_map(|(n, row)| {
                let name = IfName::new(n).ok().filter(|n| select(n))?;
                let police = (row.policing != (0, 0) || row.packets != (0, 0) || row.marked)
                    .then_some(Police::none(packets_supported));
                let qos = match &row.qos {
                    PortQos::Ours {
                        port, qos, queue, ..
                    } => Some(QosChange::Remove {
                        port: port.clone(),
                        qos: qos.clone(),
                        queue: queue.clone(),
                    }),
                    _ => None,
                };
                (police.is_some() || qos.is_some()).then_some(Change { name, police, qos })
            })
            .collect();
        changes.sort_by(|a, b| a.name.cmp(&b.name));
        let names: Vec<IfName> = changes.iter().map(|c| c.name.clone()).collect();
        if names.is_empty() {
            return Ok(names);
        }
        let plan = Plan {
            changes,
            ..Plan::default()
        };
        self.write(&plan, &current).await?;
        let after = self.read().await?;
        for n in &names {
            match after.rows.get(n.as_str()) {
                Some(r) if r.policing != (0, 0) || r.packets != (0, 0) => {
                    return Err(format!("{n} still holds policing after the write"));
                }
                Some(r) if matches!(r.qos, PortQos::Ours { .. }) => {
                    return Err(format!("{n} still holds sluice's QoS after the write"));
                }
                _ => {}
            }
        }
        Ok(names)
    }

    /// One status per interface, in the order of `wanted`.
    pub async fn reconcile(&mut self, wanted: &[Wanted<'_>]) -> Vec<Enforcement> {
        let current = match self.read().await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "cannot read OVSDB; no interface can be verified this tick");
                let failed = Enforcement::failed(format!("cannot read OVSDB: {e}"));
                return vec![failed; wanted.len()];
            }
        };
        let plan = plan(&current, wanted);
        // The interfaces already decided (not in OVSDB, download refused, write failed).
        let mut decided: HashMap<&str, Enforcement> = HashMap::new();
        for name in &plan.missing {
            decided.insert(
                name.as_str(),
                Enforcement::failed("not an Open vSwitch interface (no row in OVSDB)"),
            );
        }
        for (name, why) in &plan.refused {
            decided.insert(name.as_str(), Enforcement::failed(why.clone()));
        }
        let mut after = current.clone();
        let now = Instant::now();
        if !plan.is_empty() {
            debug!(changes = plan.changes.len(), "writing OVSDB in one batch");
            let how = match self.config.client {
                OvsClientKind::Native => "transact",
                OvsClientKind::Vsctl => "ovs-vsctl set",
            };
            match self.write(&plan, &current).await {
                Ok(cfg) => {
                    for c in &plan.changes {
                        self.awaiting.insert(
                            c.name.clone(),
                            Awaiting {
                                cfg,
                                since: now,
                                ticks: 0,
                            },
                        );
                    }
                    match self.read().await {
                        Ok(c) => after = c,
                        Err(e) => {
                            for c in &plan.changes {
                                decided.entry(c.name.as_str()).or_insert_with(|| {
                                    Enforcement::failed(format!("cannot read back OVSDB: {e}"))
                                });
                            }
                        }
                    }
                }
                Err(e) => {
                    warn!(error = %e, "{how} failed");
                    for c in &plan.changes {
                        decided.insert(
                            c.name.as_str(),
                            Enforcement::failed(format!("{how} failed: {e}")),
                        );
                    }
                }
            }
        }
        let mut result = Vec::with_capacity(wanted.len());
        let mut verified = HashMap::with_capacity(self.verified.len());
        let mut awaiting = HashMap::new();
        for w in wanted {
            if let Some(done) = decided.get(w.interface.as_str()) {
                result.push(done.clone());
                continue;
            }
            let want = PortLimits::of(w);
            let row = after.rows.get(w.interface.as_str());
            let status = if let Some(why) =
                database_mismatch(row, want, after.packets_unsupported.is_none())
            {
                Enforcement::failed(why)
            } else if want == PortLimits::NONE {
                // No limit wanted, and OVSDB says none: nothing for the kernel to hold.
                Enforcement::Applied
            } else {
                let waiting = self.awaiting.get(w.interface).copied();
                let gate = gate(waiting, after.cur_cfg, now, self.config.timeout);
                let status = self.kernel_status(w, want, gate).await;
                match &status {
                    Enforcement::Applied => {
                        verified.insert((w.interface.clone(), w.verdict.ifindex), want);
                    }
                    Enforcement::Pending => {
                        if let Some(mut a) = waiting {
                            a.ticks = a.ticks.saturating_add(1);
                            awaiting.insert(w.interface.clone(), a);
                        }
                    }
                    _ => {}
                }
                status
            };
            result.push(status);
        }
        // Only the interfaces still wanted and still waiting: one that left, or settled, is
        // forgotten.
        self.awaiting = awaiting;
        self.verified = verified;
        result
    }

    async fn kernel_status(&self, w: &Wanted<'_>, want: PortLimits, gate: Gate) -> Enforcement {
        let Some(probe) = &self.probe else {
            return Enforcement::Applied;
        };
        let ifindex = w.verdict.ifindex;
        let pending_if_lacking = match gate {
            Gate::Settled => {
                if self.verified.get(&(w.interface.clone(), ifindex)) == Some(&want) {
                    return Enforcement::Applied;
                }
                false
            }
            Gate::Applied => false,
            Gate::Waiting => return Enforcement::Pending,
            Gate::Stalled(why) => return Enforcement::failed(why),
            Gate::Grace => true,
        };
        if is_userspace(ifindex) {
            // A DPDK or vhost-user port: vswitchd polices and shapes it itself, with no
            // kernel state to read. cur_cfg reaching the write is the proof there is.
            return Enforcement::Applied;
        }
        let mut lacking = Vec::new();
        if want.policing != (0, 0) || want.packets != (0, 0) {
            match probe.has_ingress_policer(ifindex).await {
                Ok(true) => {}
                Ok(false) => lacking.push(
                    "the kernel has no policing filter on the interface's ingress \
                     (kernel lacks the tc police action or the basic/matchall classifier?)"
                        .to_owned(),
                ),
                Err(e) => {
                    return Enforcement::failed(format!(
                        "cannot read the interface's tc filters: {e}"
                    ));
                }
            }
        }
        if let Some(rate) = want.download {
            match probe.queue0_ceiling(ifindex).await {
                // HTB holds whole bytes per second.
                Ok(Some(ceil)) if ceil == rate / 8 * 8 => {}
                Ok(held) => lacking.push(format!(
                    "the kernel's HTB class 1:1 on the interface holds {} where OVSDB holds a \
                     download limit of {rate} bit/s",
                    held.map_or("no ceiling".to_owned(), |c| format!(
                        "a ceiling of {c} bit/s"
                    ))
                )),
                Err(e) => {
                    return Enforcement::failed(format!(
                        "cannot read the interface's tc classes: {e}"
                    ));
                }
            }
        }
        if lacking.is_empty() {
            Enforcement::Applied
        } else if pending_if_lacking {
            Enforcement::Pending
        } else {
            Enforcement::failed(format!(
                "OVSDB holds the limit but {} (see ovs-vswitchd.log)",
                lacking.join("; and ")
            ))
        }
    }
}

/// A write not yet known to be settled in the kernel.
#[derive(Debug, Clone, Copy)]
struct Awaiting {
    /// The `next_cfg` the write set (native client); vswitchd has applied it once
    /// `cur_cfg` reaches it.
    cfg: Option<i64>,
    since: Instant,
    /// Ticks it has been pending.
    ticks: u32,
}

/// Whether the kernel can be asked about an interface yet, and what its answer means.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Gate {
    /// Nothing written since the kernel was last asked: a cached answer stands.
    Settled,
    /// vswitchd has applied the write: the kernel's answer is final.
    Applied,
    /// vswitchd has not applied it yet: pending, the kernel is not asked.
    Waiting,
    /// vswitchd has not applied it within the timeout.
    Stalled(String),
    /// The vsctl client's write, one tick old or less: a lacking kernel means pending.
    Grace,
}

fn gate(awaiting: Option<Awaiting>, cur_cfg: Option<i64>, now: Instant, timeout: Duration) -> Gate {
    let Some(a) = awaiting else {
        return Gate::Settled;
    };
    match a.cfg {
        Some(cfg) if cur_cfg.is_some_and(|cur| cur >= cfg) => Gate::Applied,
        Some(_) if now.duration_since(a.since) < timeout => Gate::Waiting,
        Some(cfg) => Gate::Stalled(format!(
            "ovs-vswitchd has not applied the change within {}s (Open_vSwitch cur_cfg {} < \
             next_cfg {cfg}): is it running?",
            timeout.as_secs_f64(),
            cur_cfg.map_or_else(|| "unset".to_owned(), |c| c.to_string())
        )),
        None if a.ticks <= 1 => Gate::Grace,
        None => Gate::Applied,
    }
}

/// Why OVSDB, read back, does not hold `want` for a row (`None`: it does). Packet
/// policing is compared only where the schema has it (a wanted one was refused already).
fn database_mismatch(
    row: Option<&InterfaceRow>,
    want: PortLimits,
    packets_supported: bool,
) -> Option<String> {
    let held = row.map_or((0, 0), |r| r.policing);
    if held != want.policing {
        return Some(format!(
            "OVSDB holds rate={} burst={} after the write, wanted rate={} burst={}",
            held.0, held.1, want.policing.0, want.policing.1
        ));
    }
    let held = row.map_or((0, 0), |r| r.packets);
    if packets_supported && held != want.packets {
        return Some(format!(
            "OVSDB holds kpkts_rate={} kpkts_burst={} after the write, wanted kpkts_rate={} kpkts_burst={}",
            held.0, held.1, want.packets.0, want.packets.1
        ));
    }
    let qos = row.map(|r| r.qos.held_rate()).unwrap_or_default();
    match (want.download, qos) {
        (Some(w), Some(h)) if w == h => None,
        (None, None) => None,
        (Some(w), _) => Some(format!(
            "OVSDB holds no QoS of sluice's at {w} bit/s on the port after the write"
        )),
        (None, Some(h)) => Some(format!(
            "OVSDB still holds sluice's QoS at {h} bit/s on the port after the write"
        )),
    }
}

#[cfg(test)]
mod tests;
