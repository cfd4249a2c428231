//! The ledger: every watched interface's traffic, exact and durable, in SQLite.
//!
//! Each tick commits, in one transaction, the bytes counted since the previous tick into
//! 5-minute and hourly buckets *and* the counters they were computed from. A kill -9 at
//! any point therefore leaves either both or neither: on restart the agent resumes from
//! the committed counters, and nothing is lost or counted twice.
//!
//! Rules (see [`super::counter_delta`] for the reset rule itself):
//! - First sight of an interface records its counters only: what it counted before sluice
//!   saw it belongs to no known period.
//! - A reset — ifindex changed (interface re-created), boot id changed (host rebooted),
//!   or a counter went backwards — counts the new value, never a wrap to 2^64.
//! - Bytes are placed in the buckets the time they were counted in overlaps, split by
//!   overlap (integer shares, the remainder to the last bucket). After a gap longer than
//!   two intervals (the agent was down) the delta is spread evenly over the gap and its
//!   buckets are flagged `estimated`: downtime is not a loss, but its timing is a guess.
//!
//! Counters are u64 and SQLite integers i64: they are stored bit for bit (`as i64`) and
//! read back the same way; bucket sums stay far below 2^63.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::{Counters, counter_delta};
use crate::names::{IfName, InstanceId, RuleName};
use crate::policy::period::Period;
use crate::policy::quota::{QuotaChanges, QuotaRows, QuotaUsage, Spent};

/// Version of the schema below (`PRAGMA user_version`).
/// 2 added `quota_usage` and `events` (created on open; a version-1 file just gains them).
const SCHEMA_VERSION: i64 = 2;
pub const FIVE_MINUTES: i64 = 300;
pub const HOUR: i64 = 3600;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters (
    interface TEXT PRIMARY KEY,
    instance TEXT NOT NULL,
    ifindex INTEGER NOT NULL,
    boot_id TEXT NOT NULL,
    rx INTEGER NOT NULL,
    tx INTEGER NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS usage_5m (
    instance TEXT NOT NULL,
    interface TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    rx INTEGER NOT NULL,
    tx INTEGER NOT NULL,
    estimated INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (instance, interface, bucket)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS usage_hour (
    instance TEXT NOT NULL,
    interface TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    rx INTEGER NOT NULL,
    tx INTEGER NOT NULL,
    estimated INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (instance, interface, bucket)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS quota_usage (
    rule TEXT NOT NULL,
    instance TEXT NOT NULL,
    period_start_ms INTEGER NOT NULL,
    period_end_ms INTEGER NOT NULL,
    upload INTEGER NOT NULL,
    download INTEGER NOT NULL,
    notified INTEGER NOT NULL,
    exceeded INTEGER NOT NULL,
    PRIMARY KEY (rule, instance)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    instance TEXT,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_at ON events (at_ms);
";

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("ledger: {what}: {reason}")]
    Sql { what: &'static str, reason: String },
}

fn sql(what: &'static str) -> impl Fn(rusqlite::Error) -> LedgerError {
    move |e| LedgerError::Sql {
        what,
        reason: e.to_string(),
    }
}

/// One interface's counters as sampled this tick.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    pub interface: &'a IfName,
    pub instance: &'a InstanceId,
    pub ifindex: u32,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// What one tick added.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recorded {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Interfaces whose counters were reset since the previous tick.
    pub resets: usize,
    /// Interfaces whose delta was spread over a gap (flagged estimated).
    pub estimated: usize,
}

/// One observation and, unless it is a first sight, its delta:
/// (rx, tx, counted since ms, estimated).
struct Counted<'a> {
    obs: Observation<'a>,
    delta: Option<(u64, u64, i64, bool)>,
}

/// What else a tick commits with its bytes.
#[derive(Debug, Clone, Default)]
pub struct Journal {
    pub quotas: QuotaChanges,
    pub events: Vec<EventRow>,
}

impl Journal {
    fn is_empty(&self) -> bool {
        self.quotas.is_empty() && self.events.is_empty()
    }
}

/// One entry of the event log: its time, kind ("stage", "rule", "hook", …), instance and
/// the JSON object `sluice events --json`, `simulate` and webhooks show.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub at: Timestamp,
    pub kind: String,
    pub instance: Option<InstanceId>,
    pub body: serde_json::Value,
}

#[derive(Debug, Clone)]
struct Last {
    ifindex: u32,
    boot_id: String,
    rx: u64,
    tx: u64,
    /// When these counters were read (ms since the epoch).
    at_ms: i64,
}

pub struct Ledger {
    conn: Connection,
    boot_id: String,
    last: HashMap<IfName, Last>,
    /// When the previous tick was committed (ms); counters unchanged since an interface's
    /// `at_ms` were still unchanged then.
    last_tick_ms: Option<i64>,
}

impl Ledger {
    /// Open (creating if needed) the ledger at `path`; `boot_id` identifies this boot of
    /// the host (`/proc/sys/kernel/random/boot_id`).
    pub fn open(path: &Path, boot_id: &str) -> Result<Ledger, LedgerError> {
        let open_err = |e: rusqlite::Error| LedgerError::Open {
            path: path.to_owned(),
            reason: e.to_string(),
        };
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| LedgerError::Open {
                path: path.to_owned(),
                reason: format!("cannot create {}: {e}", dir.display()),
            })?;
        }
        let conn = Connection::open(path).map_err(open_err)?;
        // WAL: readers (`sluice usage`) never block the agent; FULL: a commit is on disk
        // before the tick goes on, so even a power cut loses at most the tick in flight.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(open_err)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(open_err)?;
        if version > SCHEMA_VERSION {
            return Err(LedgerError::Open {
                path: path.to_owned(),
                reason: format!(
                    "schema version {version} is newer than this sluice knows ({SCHEMA_VERSION}); refusing to touch it"
                ),
            });
        }
        conn.execute_batch(SCHEMA).map_err(open_err)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(open_err)?;
        let mut ledger = Ledger {
            conn,
            boot_id: boot_id.to_owned(),
            last: HashMap::new(),
            last_tick_ms: None,
        };
        ledger.load()?;
        Ok(ledger)
    }

    fn load(&mut self) -> Result<(), LedgerError> {
        let mut stmt = self
            .conn
            .prepare("SELECT interface, ifindex, boot_id, rx, tx, at_ms FROM counters")
            .map_err(sql("reading counters"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    Last {
                        ifindex: r.get::<_, i64>(1)? as u32,
                        boot_id: r.get(2)?,
                        rx: r.get::<_, i64>(3)? as u64,
                        tx: r.get::<_, i64>(4)? as u64,
                        at_ms: r.get(5)?,
                    },
                ))
            })
            .map_err(sql("reading counters"))?;
        for row in rows {
            let (name, last) = row.map_err(sql("reading counters"))?;
            // A name that is no longer valid cannot be sampled again; skip it.
            if let Ok(name) = IfName::new(&name) {
                self.last.insert(name, last);
            }
        }
        drop(stmt);
        self.last_tick_ms = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'last_tick_ms'",
                [],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map_err(sql("reading meta"))?
            .and_then(|v| v.parse().ok());
        Ok(())
    }

    /// Count one tick's observations taken at `at`, in one transaction.
    pub fn record(
        &mut self,
        observations: &[Observation<'_>],
        at: Timestamp,
        interval: Duration,
    ) -> Result<Recorded, LedgerError> {
        self.record_with(observations, at, interval, |_| Journal::default())
    }

    /// [`Ledger::record`], and `journal` — given what this tick counted — says what else
    /// belongs in the same transaction (quota counts, events): a crash keeps all or none.
    pub fn record_with(
        &mut self,
        observations: &[Observation<'_>],
        at: Timestamp,
        interval: Duration,
        journal: impl FnOnce(&[Spent]) -> Journal,
    ) -> Result<Recorded, LedgerError> {
        let now_ms = at.as_millisecond();
        let max_gap_ms = i64::try_from(interval.as_millis().saturating_mul(2)).unwrap_or(i64::MAX);
        let mut out = Recorded::default();
        // Deltas first, in memory; nothing is remembered until the commit succeeds.
        let mut counted: Vec<Counted<'_>> = Vec::new();
        let mut spent: Vec<Spent> = Vec::new();
        for o in observations {
            let Some(prev) = self.last.get(o.interface) else {
                counted.push(Counted {
                    obs: *o,
                    delta: None,
                });
                continue;
            };
            let changed = prev.ifindex != o.ifindex
                || prev.rx != o.rx_bytes
                || prev.tx != o.tx_bytes
                || prev.boot_id != self.boot_id;
            if !changed {
                continue;
            }
            let mut d = counter_delta(
                Counters {
                    ifindex: prev.ifindex,
                    rx_bytes: prev.rx,
                    tx_bytes: prev.tx,
                },
                Counters {
                    ifindex: o.ifindex,
                    rx_bytes: o.rx_bytes,
                    tx_bytes: o.tx_bytes,
                },
            );
            if prev.boot_id != self.boot_id && !d.reset {
                // Rebooted: everything the counters hold was counted since the boot.
                d.rx_bytes = o.rx_bytes;
                d.tx_bytes = o.tx_bytes;
                d.reset = true;
            }
            // Unchanged counters were still unchanged at the previous tick.
            let from = prev
                .at_ms
                .max(self.last_tick_ms.unwrap_or(prev.at_ms))
                .min(now_ms);
            let estimated = now_ms - from > max_gap_ms;
            if d.rx_bytes > 0 || d.tx_bytes > 0 {
                spent.push(Spent {
                    instance: o.instance.clone(),
                    upload: d.rx_bytes,
                    download: d.tx_bytes,
                    from: Timestamp::from_millisecond(from).unwrap_or(at),
                    to: at,
                });
            }
            out.rx_bytes += d.rx_bytes;
            out.tx_bytes += d.tx_bytes;
            out.resets += usize::from(d.reset);
            out.estimated += usize::from(estimated && (d.rx_bytes > 0 || d.tx_bytes > 0));
            counted.push(Counted {
                obs: *o,
                delta: Some((d.rx_bytes, d.tx_bytes, from, estimated)),
            });
        }
        let journal = journal(&spent);
        // An idle tick writes nothing (no fsync): the previous tick's time is kept in
        // memory and persisted with the next real write.
        if counted.is_empty() && journal.is_empty() {
            self.last_tick_ms = Some(now_ms);
            return Ok(out);
        }
        let tx = self.conn.transaction().map_err(sql("begin"))?;
        {
            let mut add5 = tx
                .prepare_cached(&upsert("usage_5m"))
                .map_err(sql("preparing bucket write"))?;
            let mut add_hour = tx
                .prepare_cached(&upsert("usage_hour"))
                .map_err(sql("preparing bucket write"))?;
            let mut put = tx
                .prepare_cached(PUT_COUNTERS)
                .map_err(sql("preparing counter write"))?;
            for c in &counted {
                let o = &c.obs;
                if let Some((rx, tx_bytes, from, estimated)) = c.delta {
                    for (table, len) in [(&mut add5, FIVE_MINUTES), (&mut add_hour, HOUR)] {
                        let rxs = spread(rx, from, now_ms, len * 1000);
                        let txs = spread(tx_bytes, from, now_ms, len * 1000);
                        for ((bucket, r), (_, t)) in rxs.into_iter().zip(txs) {
                            if r == 0 && t == 0 {
                                continue;
                            }
                            table
                                .execute(params![
                                    o.instance.as_str(),
                                    o.interface.as_str(),
                                    bucket,
                                    r as i64,
                                    t as i64,
                                    estimated
                                ])
                                .map_err(sql("writing buckets"))?;
                        }
                    }
                }
                // The counters the next tick's delta starts from.
                put.execute(params![
                    o.interface.as_str(),
                    o.instance.as_str(),
                    o.ifindex,
                    &self.boot_id,
                    o.rx_bytes as i64,
                    o.tx_bytes as i64,
                    now_ms
                ])
                .map_err(sql("writing counters"))?;
            }
            write_journal(&tx, &journal)?;
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('last_tick_ms', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![now_ms.to_string()],
            )
            .map_err(sql("writing meta"))?;
        }
        tx.commit().map_err(sql("commit"))?;
        // Only what is on disk is remembered.
        for c in counted {
            self.last.insert(
                c.obs.interface.clone(),
                Last {
                    ifindex: c.obs.ifindex,
                    boot_id: self.boot_id.clone(),
                    rx: c.obs.rx_bytes,
                    tx: c.obs.tx_bytes,
                    at_ms: now_ms,
                },
            );
        }
        self.last_tick_ms = Some(now_ms);
        Ok(out)
    }

    /// The persisted quota counts (what [`Quotas::from_rows`] takes). Rows whose names
    /// are no longer valid are skipped.
    pub fn quotas(&self) -> Result<QuotaRows, LedgerError> {
        read_quotas(&self.conn)
    }

    /// Delete 5-minute buckets older than `keep_5m` and hourly ones older than
    /// `keep_hour` (before `now`); returns the rows deleted.
    pub fn expire(
        &mut self,
        now: Timestamp,
        keep_5m: Duration,
        keep_hour: Duration,
    ) -> Result<usize, LedgerError> {
        let cut = |keep: Duration| {
            now.as_second() - i64::try_from(keep.as_secs()).unwrap_or(i64::MAX / 2)
        };
        let a = self
            .conn
            .execute(
                "DELETE FROM usage_5m WHERE bucket < ?1",
                params![cut(keep_5m)],
            )
            .map_err(sql("expiring 5-minute buckets"))?;
        let b = self
            .conn
            .execute(
                "DELETE FROM usage_hour WHERE bucket < ?1",
                params![cut(keep_hour)],
            )
            .map_err(sql("expiring hourly buckets"))?;
        Ok(a + b)
    }

    /// Delete (or, with `dry_run`, count) buckets that start before `before`, of one
    /// instance or all: (5-minute rows, hourly rows, upload bytes, download bytes) of the
    /// hourly buckets — the totals that will no longer be reported.
    pub fn prune(
        &mut self,
        before: Timestamp,
        instance: Option<&InstanceId>,
        dry_run: bool,
    ) -> Result<Pruned, LedgerError> {
        prune(&mut self.conn, before, instance, dry_run)
    }

    /// The connection, for queries ([`super::usage`]).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

/// What [`Ledger::prune`] removed (or would remove).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub rows_5m: usize,
    pub rows_hourly: usize,
    pub upload_bytes: u64,
    pub download_bytes: u64,
}

/// [`Ledger::prune`] on any connection (the CLI opens the file without loading counters).
pub fn prune(
    conn: &mut Connection,
    before: Timestamp,
    instance: Option<&InstanceId>,
    dry_run: bool,
) -> Result<Pruned, LedgerError> {
    let cut = before.as_second();
    let who = instance.map(|i| i.as_str());
    let tx = conn.transaction().map_err(sql("begin"))?;
    let count = |table: &str| -> Result<(usize, u64, u64), LedgerError> {
        tx.query_row(
            &format!(
                "SELECT COUNT(*), COALESCE(SUM(rx),0), COALESCE(SUM(tx),0) FROM {table}
                 WHERE bucket < ?1 AND (?2 IS NULL OR instance = ?2)"
            ),
            params![cut, who],
            |r| {
                Ok((
                    r.get::<_, i64>(0)? as usize,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, i64>(2)? as u64,
                ))
            },
        )
        .map_err(sql("counting buckets"))
    };
    let (rows_5m, _, _) = count("usage_5m")?;
    let (rows_hourly, up, down) = count("usage_hour")?;
    if !dry_run {
        for table in ["usage_5m", "usage_hour"] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE bucket < ?1 AND (?2 IS NULL OR instance = ?2)"),
                params![cut, who],
            )
            .map_err(sql("pruning buckets"))?;
        }
    }
    tx.commit().map_err(sql("commit"))?;
    Ok(Pruned {
        rows_5m,
        rows_hourly,
        upload_bytes: up,
        download_bytes: down,
    })
}

/// Open an existing ledger for maintenance (`sluice prune`) without creating one.
pub fn open_existing(path: &Path) -> Result<Connection, LedgerError> {
    open_file(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
}

/// Open a ledger read-only (while an agent may be writing it).
pub fn open_read_only(path: &Path) -> Result<Connection, LedgerError> {
    open_file(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
}

fn open_file(path: &Path, flags: OpenFlags) -> Result<Connection, LedgerError> {
    let conn = Connection::open_with_flags(path, flags).map_err(|e| LedgerError::Open {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(sql("busy timeout"))?;
    Ok(conn)
}

fn write_journal(tx: &rusqlite::Transaction<'_>, j: &Journal) -> Result<(), LedgerError> {
    let mut put = tx
        .prepare_cached(
            "INSERT INTO quota_usage (rule, instance, period_start_ms, period_end_ms, upload,
             download, notified, exceeded) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (rule, instance) DO UPDATE SET
             period_start_ms = excluded.period_start_ms, period_end_ms = excluded.period_end_ms,
             upload = excluded.upload, download = excluded.download,
             notified = excluded.notified, exceeded = excluded.exceeded",
        )
        .map_err(sql("preparing quota write"))?;
    let mut del = tx
        .prepare_cached("DELETE FROM quota_usage WHERE rule = ?1 AND instance = ?2")
        .map_err(sql("preparing quota write"))?;
    for ((rule, instance), row) in &j.quotas {
        match row {
            Some(u) => put.execute(params![
                rule.as_str(),
                instance.as_str(),
                u.period.start.as_millisecond(),
                u.period.end.as_millisecond(),
                u.upload as i64,
                u.download as i64,
                u.notified as i64,
                u.exceeded
            ]),
            None => del.execute(params![rule.as_str(), instance.as_str()]),
        }
        .map_err(sql("writing quota usage"))?;
    }
    let mut ev = tx
        .prepare_cached("INSERT INTO events (at_ms, kind, instance, body) VALUES (?1, ?2, ?3, ?4)")
        .map_err(sql("preparing event write"))?;
    for e in &j.events {
        ev.execute(params![
            e.at.as_millisecond(),
            e.kind,
            e.instance.as_ref().map(|i| i.as_str()),
            e.body.to_string()
        ])
        .map_err(sql("writing events"))?;
    }
    Ok(())
}

/// The quota counts stored in a ledger.
fn read_quotas(conn: &Connection) -> Result<QuotaRows, LedgerError> {
    let mut stmt = conn
        .prepare(
            "SELECT rule, instance, period_start_ms, period_end_ms, upload, download, notified,
             exceeded FROM quota_usage",
        )
        .map_err(sql("reading quota usage"))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)? as u64,
                r.get::<_, i64>(5)? as u64,
                r.get::<_, i64>(6)?,
                r.get::<_, bool>(7)?,
            ))
        })
        .map_err(sql("reading quota usage"))?;
    let mut out = Vec::new();
    for row in rows {
        let (rule, instance, start, end, upload, download, notified, exceeded) =
            row.map_err(sql("reading quota usage"))?;
        let (Ok(rule), Ok(instance), Ok(start), Ok(end)) = (
            RuleName::new(&rule),
            InstanceId::new(&instance),
            Timestamp::from_millisecond(start),
            Timestamp::from_millisecond(end),
        ) else {
            continue;
        };
        out.push((
            (rule, instance),
            QuotaUsage {
                period: Period { start, end },
                upload,
                download,
                notified: usize::try_from(notified).unwrap_or(0),
                exceeded,
            },
        ));
    }
    Ok(out)
}

/// Events at or after `since` (all when `None`), oldest first, at most `limit`.
pub fn read_events(
    conn: &Connection,
    since: Option<Timestamp>,
    limit: usize,
) -> Result<Vec<EventRow>, LedgerError> {
    let mut stmt = conn
        .prepare(
            "SELECT at_ms, kind, instance, body FROM events WHERE at_ms >= ?1
             ORDER BY id DESC LIMIT ?2",
        )
        .map_err(sql("reading events"))?;
    let rows = stmt
        .query_map(
            params![
                since.map_or(i64::MIN, |t| t.as_millisecond()),
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, String>(3)?,
                ))
            },
        )
        .map_err(sql("reading events"))?;
    let mut out = Vec::new();
    for row in rows {
        let (at, kind, instance, body) = row.map_err(sql("reading events"))?;
        out.push(EventRow {
            at: Timestamp::from_millisecond(at).unwrap_or(Timestamp::UNIX_EPOCH),
            kind,
            instance: instance.and_then(|i| InstanceId::new(&i).ok()),
            body: serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
        });
    }
    out.reverse();
    Ok(out)
}

/// Add a delta to a bucket of `table` (usage_5m or usage_hour).
fn upsert(table: &str) -> String {
    format!(
        "INSERT INTO {table} (instance, interface, bucket, rx, tx, estimated)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (instance, interface, bucket) DO UPDATE SET
         rx = rx + excluded.rx, tx = tx + excluded.tx,
         estimated = estimated OR excluded.estimated"
    )
}
const PUT_COUNTERS: &str =
    "INSERT INTO counters (interface, instance, ifindex, boot_id, rx, tx, at_ms)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
    ON CONFLICT (interface) DO UPDATE SET instance = excluded.instance,
    ifindex = excluded.ifindex, boot_id = excluded.boot_id, rx = excluded.rx,
    tx = excluded.tx, at_ms = excluded.at_ms";

/// Split `bytes` counted over (from, to] (ms) into buckets of `len` ms by overlap:
/// (bucket start in seconds, bytes). Integer shares; the remainder goes to the last.
pub fn spread(bytes: u64, from: i64, to: i64, len: i64) -> Vec<(i64, u64)> {
    let bucket_of = |t: i64| t.div_euclid(len) * len;
    if to <= from {
        return vec![(bucket_of(to) / 1000, bytes)];
    }
    let first = bucket_of(from);
    // (from, to]: an instant exactly on a boundary belongs to the bucket it ends.
    let last = bucket_of(to - 1);
    let total = u128::from((to - from) as u64);
    let mut out = Vec::new();
    let mut given = 0u64;
    let mut b = first;
    while b <= last {
        let overlap = (to.min(b + len) - from.max(b)).max(0) as u64;
        let share = if b == last {
            bytes - given
        } else {
            (u128::from(bytes) * u128::from(overlap) / total) as u64
        };
        given += share;
        out.push((b / 1000, share));
        b += len;
    }
    out
}

/// This boot's id, from the kernel.
pub fn boot_id() -> std::io::Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/random/boot_id")?
        .trim()
        .to_owned())
}

#[cfg(test)]
mod tests;
