//! Open vSwitch backend: upload limits as `Interface.ingress_policing_rate` (kbit/s) and
//! `ingress_policing_burst` (kbit).
//!
//! Per tick: a read of every Interface row's policing, and — only when something differs
//! — one write carrying every change, then a read-back. Whatever OVSDB holds that differs
//! from the verdict (say, set by hand) is set back: reconciling, not fire-and-forget.
//! Two clients do the reads and writes:
//! - `native` (the default): a session of its own on the database socket
//!   ([`crate::sys::ovsdb`]). The read is the session's replica, in memory; the write is
//!   one `transact`, and the replica already shows its result when the reply comes. No
//!   process is started in steady state;
//! - `vsctl`: `ovs-vsctl list Interface`, and one `ovs-vsctl --no-wait` carrying every
//!   change as `-- set interface …` clauses (separate calls cost a process each).
//!
//! Finally the kernel is asked whether a policer really sits on the interface's ingress
//! ([`PolicerProbe`]), since OVS accepts values the kernel cannot enforce: only for an
//! interface whose policing (or netdev) changed since the kernel last showed it, since
//! nothing but vswitchd puts that policer there and it follows the database.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{debug, warn};

use super::policer::PolicerProbe;
use super::{Enforcement, Wanted};
use crate::config::{DEFAULT_OVSDB, OvsClientKind};
use crate::model::ids::IfName;
use crate::sys::command::run;
use crate::sys::ovsdb::{Endpoint, Session, Watch, map_pairs};

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
                    tables: vec![(
                        "Interface".into(),
                        COLUMNS.iter().map(|c| (*c).to_owned()).collect(),
                    )],
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

/// The Interface columns the backend reads; never `statistics`, which vswitchd rewrites
/// every few seconds.
const COLUMNS: [&str; 4] = [
    "name",
    "ingress_policing_rate",
    "ingress_policing_burst",
    "external_ids",
];

/// (ingress_policing_rate kbit/s, ingress_policing_burst kbit); (0, 0) = no policing.
pub type Policing = (u64, u64);

pub struct OvsBackend {
    config: OvsConfig,
    probe: Option<PolicerProbe>,
    native: Native,
    /// Interfaces written in the previous tick: a missing kernel policer is "pending" for
    /// one tick after a write (ovs-vswitchd applies it asynchronously) and a failure after.
    written_last_tick: HashSet<IfName>,
    /// The policing the kernel last showed on each interface (by name and netdev): not
    /// asked again while the database holds the same.
    verified: HashMap<(IfName, u32), Policing>,
}

impl OvsBackend {
    /// `probe` is the kernel check; `None` skips it (only for hosts where it cannot run).
    pub fn new(config: OvsConfig, probe: Option<PolicerProbe>) -> Self {
        OvsBackend {
            config,
            probe,
            native: Native::default(),
            written_last_tick: HashSet::new(),
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

    /// Every Interface row's policing, by name, and which rows sluice marked.
    pub async fn read(&mut self) -> Result<Arc<InterfaceRows>, String> {
        match self.config.client {
            OvsClientKind::Native => self.read_native().await,
            OvsClientKind::Vsctl => self.read_vsctl().await.map(Arc::new),
        }
    }

    /// Write `changes` (rows found by the uuids `rows` holds, or by name).
    async fn write(
        &mut self,
        changes: &[(IfName, Policing)],
        rows: &InterfaceRows,
    ) -> Result<(), String> {
        match self.config.client {
            OvsClientKind::Native => {
                let timeout = self.config.timeout;
                let session = self.native.session(&self.config).await?;
                session
                    .transact(transact_ops(changes, &rows.uuids), timeout)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
            OvsClientKind::Vsctl => self.write_vsctl(changes).await,
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
        let fresh = Arc::new(rows_of_replica(r.tables.get("Interface"))?);
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
        parse_list(&out)
    }

    async fn write_vsctl(&self, changes: &[(IfName, Policing)]) -> Result<(), String> {
        let mut args = self.base_args();
        args.extend(set_clauses(changes));
        run(&self.config.ovs_vsctl, &args, self.config.timeout)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Clear the policing of every interface `select` picks among those that hold one
    /// (`sluice release`); returns the interfaces cleared.
    pub async fn release(
        &mut self,
        select: impl Fn(&IfName) -> bool,
    ) -> Result<Vec<IfName>, String> {
        let current = self.read().await?;
        let mut names: Vec<IfName> = current
            .policing
            .iter()
            .filter(|(_, p)| **p != (0, 0))
            .filter_map(|(n, _)| IfName::new(n).ok())
            .filter(|n| select(n))
            .collect();
        names.sort();
        if names.is_empty() {
            return Ok(names);
        }
        let changes: Vec<(IfName, Policing)> = names.iter().map(|n| (n.clone(), (0, 0))).collect();
        self.write(&changes, &current).await?;
        let after = self.read().await?;
        if let Some(n) = names
            .iter()
            .find(|n| after.policing.get(n.as_str()).is_some_and(|p| *p != (0, 0)))
        {
            return Err(format!("{n} still holds policing after the write"));
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
        let (changes, missing) = plan(&current, wanted);
        // The few interfaces already decided (not in OVSDB, or the write failed).
        let mut decided: HashMap<&str, Enforcement> = HashMap::new();
        for name in missing {
            decided.insert(
                name.as_str(),
                Enforcement::failed("not an Open vSwitch interface (no row in OVSDB)"),
            );
        }
        let mut written: HashSet<IfName> = HashSet::new();
        let mut after = current.clone();
        if !changes.is_empty() {
            debug!(changes = changes.len(), "writing OVSDB in one batch");
            let how = match self.config.client {
                OvsClientKind::Native => "transact",
                OvsClientKind::Vsctl => "ovs-vsctl set",
            };
            match self.write(&changes, &current).await {
                Ok(()) => {
                    written = changes.iter().map(|(n, _)| n.clone()).collect();
                    match self.read().await {
                        Ok(c) => after = c,
                        Err(e) => {
                            for (name, _) in &changes {
                                decided.insert(
                                    name.as_str(),
                                    Enforcement::failed(format!("cannot read back OVSDB: {e}")),
                                );
                            }
                        }
                    }
                }
                Err(e) => {
                    warn!(error = %e, "{how} failed");
                    for (name, _) in &changes {
                        decided.insert(
                            name.as_str(),
                            Enforcement::failed(format!("{how} failed: {e}")),
                        );
                    }
                }
            }
        }
        let mut result = Vec::with_capacity(wanted.len());
        let mut verified = HashMap::with_capacity(self.verified.len());
        for w in wanted {
            if let Some(done) = decided.get(w.interface.as_str()) {
                result.push(done.clone());
                continue;
            }
            let want = policing_of(w);
            let held = after.policing.get(w.interface.as_str()).copied();
            let status = if held != Some(want) {
                Enforcement::failed(format!(
                    "OVSDB holds rate={} burst={} after the write, wanted rate={} burst={}",
                    held.map_or(0, |h| h.0),
                    held.map_or(0, |h| h.1),
                    want.0,
                    want.1
                ))
            } else if want.0 == 0 {
                // No limit wanted, and OVSDB says none: nothing for the kernel to hold.
                Enforcement::Applied
            } else {
                let status = self.kernel_status(w, written.contains(w.interface)).await;
                if status == Enforcement::Applied {
                    verified.insert((w.interface.clone(), w.verdict.ifindex), want);
                }
                status
            };
            result.push(status);
        }
        self.written_last_tick = written;
        // Only the interfaces still wanted: one that left is forgotten.
        self.verified = verified;
        result
    }

    async fn kernel_status(&self, w: &Wanted<'_>, written_now: bool) -> Enforcement {
        let Some(probe) = &self.probe else {
            return Enforcement::Applied;
        };
        let key = (w.interface.clone(), w.verdict.ifindex);
        if !written_now && self.verified.get(&key) == Some(&policing_of(w)) {
            return Enforcement::Applied;
        }
        match probe.has_ingress_policer(w.verdict.ifindex).await {
            Ok(true) => Enforcement::Applied,
            Ok(false) if written_now || self.written_last_tick.contains(w.interface) => {
                Enforcement::Pending
            }
            Ok(false) => Enforcement::failed(
                "OVSDB holds the limit but the kernel has no policing filter on the interface's ingress \
                 (kernel lacks the tc police action or the basic/matchall classifier? see ovs-vswitchd.log)",
            ),
            Err(e) => Enforcement::failed(format!("cannot read the interface's tc filters: {e}")),
        }
    }
}

fn policing_of(w: &Wanted<'_>) -> Policing {
    w.verdict
        .upload
        .map_or((0, 0), |l| (l.rate.kbps(), l.burst.kb()))
}

/// The Interface rows as OVSDB holds them.
#[derive(Debug, Default)]
pub struct InterfaceRows {
    pub policing: HashMap<String, Policing>,
    /// Rows carrying `external_ids:sluice`: policing sluice set, which it therefore also
    /// clears when the interface is no longer watched (an operator's own is never touched).
    pub marked: HashSet<String>,
    /// Each row's uuid, by name (native client only).
    pub uuids: HashMap<String, String>,
}

/// The mark sluice leaves in `external_ids` of the rows it limits.
const MARK: &str = "sluice";

/// What to change (wanted rows that differ or lack the mark; marked rows no longer
/// wanted, back to no policing), and which wanted interfaces OVSDB does not know.
fn plan<'a>(
    current: &InterfaceRows,
    wanted: &'a [Wanted<'a>],
) -> (Vec<(IfName, Policing)>, Vec<&'a IfName>) {
    let mut changes = Vec::new();
    let mut missing = Vec::new();
    for w in wanted {
        let want = policing_of(w);
        let name = w.interface.as_str();
        match current.policing.get(name) {
            None => missing.push(w.interface),
            Some(held) if *held != want || (want != (0, 0)) != current.marked.contains(name) => {
                changes.push((w.interface.clone(), want))
            }
            Some(_) => {}
        }
    }
    let wanted_names: HashSet<&str> = wanted.iter().map(|w| w.interface.as_str()).collect();
    let mut left: Vec<IfName> = current
        .marked
        .iter()
        .filter(|n| !wanted_names.contains(n.as_str()))
        .filter_map(|n| IfName::new(n).ok())
        .collect();
    left.sort();
    changes.extend(left.into_iter().map(|n| (n, (0, 0))));
    (changes, missing)
}

/// `--no-wait -- set interface X ingress_policing_rate=R ingress_policing_burst=B
/// external_ids:sluice=limited -- …`; clearing a limit removes the mark.
fn set_clauses(changes: &[(IfName, Policing)]) -> Vec<String> {
    let mut args = vec!["--no-wait".to_owned()];
    for (name, (rate, burst)) in changes {
        args.extend([
            "--".to_owned(),
            "set".to_owned(),
            "interface".to_owned(),
            name.to_string(),
            format!("ingress_policing_rate={rate}"),
            format!("ingress_policing_burst={burst}"),
        ]);
        if (*rate, *burst) == (0, 0) {
            args.extend(
                [
                    "--",
                    "remove",
                    "interface",
                    name.as_str(),
                    "external_ids",
                    MARK,
                ]
                .map(String::from),
            );
        } else {
            args.push(format!("external_ids:{MARK}=limited"));
        }
    }
    args
}

/// The `transact` ops of `changes`: each row's policing, and sluice's mark added to its
/// `external_ids` (or removed with the limit) by a mutation that leaves the other keys
/// alone. Rows are found by their uuid where it is known: ovsdb-server looks a `_uuid`
/// up directly but scans the table for any other column, which made 1,000 changes at
/// 1,000 ports a million comparisons.
fn transact_ops(changes: &[(IfName, Policing)], uuids: &HashMap<String, String>) -> Vec<Value> {
    let mut ops = Vec::with_capacity(changes.len() * 2);
    for (name, (rate, burst)) in changes {
        let at = match uuids.get(name.as_str()) {
            Some(uuid) => json!([["_uuid", "==", ["uuid", uuid]]]),
            None => json!([["name", "==", name.as_str()]]),
        };
        ops.push(json!({
            "op": "update",
            "table": "Interface",
            "where": at,
            "row": {"ingress_policing_rate": rate, "ingress_policing_burst": burst},
        }));
        let mutation = if (*rate, *burst) == (0, 0) {
            json!(["external_ids", "delete", ["set", [MARK]]])
        } else {
            json!(["external_ids", "insert", ["map", [[MARK, "limited"]]]])
        };
        ops.push(json!({
            "op": "mutate",
            "table": "Interface",
            "where": at,
            "mutations": [mutation],
        }));
    }
    ops
}

/// The Interface rows of a native session's replica (a column at its default is absent
/// from it: 0, or an empty map).
fn rows_of_replica(
    table: Option<&HashMap<String, crate::sys::ovsdb::Row>>,
) -> Result<InterfaceRows, String> {
    let mut rows = InterfaceRows::default();
    for (uuid, row) in table.into_iter().flatten() {
        let Some(name) = row.get("name").and_then(Value::as_str) else {
            return Err(format!("OVSDB Interface row {uuid} has no name"));
        };
        let int = |column: &str| match row.get(column) {
            None => Ok(0),
            Some(v) => v
                .as_u64()
                .ok_or_else(|| format!("OVSDB Interface {name}: {column} is not a count: {v}")),
        };
        rows.policing.insert(
            name.to_owned(),
            (
                int("ingress_policing_rate")?,
                int("ingress_policing_burst")?,
            ),
        );
        rows.uuids.insert(name.to_owned(), uuid.clone());
        let ids = map_pairs(row.get("external_ids"))
            .map_err(|e| format!("OVSDB Interface {name}: external_ids: {e}"))?;
        if ids.iter().any(|(k, _)| k.as_str() == Some(MARK)) {
            rows.marked.insert(name.to_owned());
        }
    }
    Ok(rows)
}

#[derive(Deserialize)]
struct ListOutput {
    headings: Vec<String>,
    data: Vec<Vec<serde_json::Value>>,
}

/// Parse `ovs-vsctl --format=json --columns=name,ingress_policing_rate,ingress_policing_burst,external_ids list Interface`
/// (`external_ids` is optional: without it no row is marked).
fn parse_list(text: &str) -> Result<InterfaceRows, String> {
    let out: ListOutput =
        serde_json::from_str(text).map_err(|e| format!("unexpected ovs-vsctl output: {e}"))?;
    let col = |name: &str| {
        out.headings
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| format!("ovs-vsctl output lacks column {name}"))
    };
    let (n, r, b) = (
        col("name")?,
        col("ingress_policing_rate")?,
        col("ingress_policing_burst")?,
    );
    let ids = out.headings.iter().position(|h| h == "external_ids");
    let mut rows = InterfaceRows::default();
    for row in &out.data {
        let name = row.get(n).and_then(|v| v.as_str());
        let rate = row.get(r).and_then(|v| v.as_u64());
        let burst = row.get(b).and_then(|v| v.as_u64());
        match (name, rate, burst) {
            (Some(name), Some(rate), Some(burst)) => {
                rows.policing.insert(name.to_owned(), (rate, burst));
                if ids.and_then(|i| row.get(i)).is_some_and(has_mark) {
                    rows.marked.insert(name.to_owned());
                }
            }
            _ => return Err(format!("unexpected row in ovs-vsctl output: {row:?}")),
        }
    }
    Ok(rows)
}

/// An OVSDB map in JSON (`["map", [["key", "value"], …]]`) holding sluice's key.
fn has_mark(v: &serde_json::Value) -> bool {
    v.get(1)
        .and_then(|pairs| pairs.as_array())
        .is_some_and(|pairs| {
            pairs
                .iter()
                .any(|p| p.get(0).and_then(|k| k.as_str()) == Some(MARK))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ids::InstanceId;
    use crate::model::units::Rate;
    use crate::policy::{Burst, Limit, Reason, Verdict};

    fn verdict(kbps: Option<u64>) -> Verdict {
        Verdict {
            instance: InstanceId::new("1").unwrap(),
            ifindex: 1,
            stage: 0,
            upload: kbps.map(|k| Limit {
                rate: Rate::from_kbps(k),
                burst: Burst::for_rate(Rate::from_kbps(k), None),
            }),
            download: None,
            reason: Reason::Base,
            download_reason: Reason::Unlimited,
            rule: None,
            disconnect: false,
            until: None,
        }
    }

    #[test]
    fn parses_ovs_vsctl_json() {
        let text = r#"{"data":[["kvm1.0",900000,90000],["br0",0,0]],"headings":["name","ingress_policing_rate","ingress_policing_burst"]}"#;
        let m = parse_list(text).unwrap();
        assert_eq!(m.policing["kvm1.0"], (900_000, 90_000));
        assert_eq!(m.policing["br0"], (0, 0));
        assert!(m.marked.is_empty());
        let text = r#"{"data":[["kvm1.0",900000,90000,["map",[["sluice","limited"]]]],["kvm2.0",5,5,["map",[["owner","ops"]]]]],"headings":["name","ingress_policing_rate","ingress_policing_burst","external_ids"]}"#;
        let m = parse_list(text).unwrap();
        assert_eq!(m.marked, HashSet::from(["kvm1.0".to_owned()]));
        assert!(parse_list("nonsense").is_err());
        assert!(parse_list(r#"{"data":[["x","a",0]],"headings":["name","ingress_policing_rate","ingress_policing_burst"]}"#).is_err());
        assert!(
            parse_list(r#"{"data":[],"headings":["name"]}"#)
                .unwrap_err()
                .contains("ingress_policing_rate")
        );
    }

    #[test]
    fn transact_ops_set_policing_and_the_mark_without_touching_other_keys() {
        let n = |s: &str| IfName::new(s).unwrap();
        // tap1's uuid is known (the native replica): found by it; tap2 by name.
        let uuids = HashMap::from([("tap1".to_owned(), "5e6f".to_owned())]);
        let ops = transact_ops(&[(n("tap1"), (1_000, 200)), (n("tap2"), (0, 0))], &uuids);
        assert_eq!(
            serde_json::to_string(&ops).unwrap(),
            concat!(
                r#"[{"op":"update","table":"Interface","where":[["_uuid","==",["uuid","5e6f"]]],"#,
                r#""row":{"ingress_policing_rate":1000,"ingress_policing_burst":200}},"#,
                r#"{"op":"mutate","table":"Interface","where":[["_uuid","==",["uuid","5e6f"]]],"#,
                r#""mutations":[["external_ids","insert",["map",[["sluice","limited"]]]]]},"#,
                r#"{"op":"update","table":"Interface","where":[["name","==","tap2"]],"#,
                r#""row":{"ingress_policing_rate":0,"ingress_policing_burst":0}},"#,
                r#"{"op":"mutate","table":"Interface","where":[["name","==","tap2"]],"#,
                r#""mutations":[["external_ids","delete",["set",["sluice"]]]]}]"#
            )
        );
    }

    #[test]
    fn rows_from_a_replica_with_defaults_left_out() {
        let table: HashMap<String, crate::sys::ovsdb::Row> =
            serde_json::from_value(serde_json::json!({
                "u1": {"name": "tap1", "ingress_policing_rate": 900, "ingress_policing_burst": 90,
                       "external_ids": ["map", [["vm-id", "7"], ["sluice", "limited"]]]},
                "u2": {"name": "br0"}
            }))
            .unwrap();
        let rows = rows_of_replica(Some(&table)).unwrap();
        assert_eq!(rows.policing["tap1"], (900, 90));
        assert_eq!(rows.policing["br0"], (0, 0));
        assert_eq!(rows.marked, HashSet::from(["tap1".to_owned()]));
        assert_eq!(rows.uuids["tap1"], "u1", "writes find the row by its uuid");
        for (bad, says) in [
            (serde_json::json!({"u3": {}}), "row u3 has no name"),
            (
                serde_json::json!({"u3": {"name": "x", "ingress_policing_rate": "fast"}}),
                "x: ingress_policing_rate is not a count",
            ),
            (
                serde_json::json!({"u3": {"name": "x", "external_ids": 1}}),
                "x: external_ids",
            ),
        ] {
            let table = serde_json::from_value(bad).unwrap();
            let e = rows_of_replica(Some(&table)).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn plans_only_what_differs_in_one_batch() {
        let names: Vec<IfName> = ["a", "b", "c", "d"]
            .iter()
            .map(|n| IfName::new(n).unwrap())
            .collect();
        let v = [
            verdict(Some(900_000)),
            verdict(Some(1_000)),
            verdict(None),
            verdict(Some(5_000)),
        ];
        let wanted: Vec<Wanted> = names
            .iter()
            .zip(&v)
            .map(|(interface, verdict)| Wanted {
                interface,
                verdict,
                hypervisor: false,
            })
            .collect();
        let current = InterfaceRows {
            policing: HashMap::from([
                ("a".to_owned(), (900_000, 90_000)), // as wanted
                ("b".to_owned(), (2_000, 2_000)),    // changed by hand
                ("c".to_owned(), (10, 10)),          // limited, should not be
                ("e".to_owned(), (5_000, 2_000)),    // sluice's, no longer watched
                ("f".to_owned(), (7_000, 7_000)),    // an operator's own, not watched
            ]),
            marked: ["a", "b", "c", "e"].map(String::from).into(),
            uuids: HashMap::new(),
        }; // d is not in OVSDB
        let (changes, missing) = plan(&current, &wanted);
        let n = |s: &str| IfName::new(s).unwrap();
        assert_eq!(
            changes,
            vec![(n("b"), (1_000, 1_000)), (n("c"), (0, 0)), (n("e"), (0, 0))]
        );
        assert_eq!(missing, vec![&names[3]]);
        assert_eq!(
            set_clauses(&changes[..2]).join(" "),
            "--no-wait -- set interface b ingress_policing_rate=1000 ingress_policing_burst=1000 \
             external_ids:sluice=limited \
             -- set interface c ingress_policing_rate=0 ingress_policing_burst=0 \
             -- remove interface c external_ids sluice"
        );
        // A limit sluice holds without its mark (set before marks existed) gets one.
        let unmarked = InterfaceRows {
            policing: HashMap::from([("a".to_owned(), (900_000, 90_000))]),
            marked: HashSet::new(),
            uuids: HashMap::new(),
        };
        let (changes, _) = plan(&unmarked, &wanted[..1]);
        assert_eq!(changes, vec![(n("a"), (900_000, 90_000))]);
    }
}
