//! The ledger: every watched interface's traffic, exact and durable, in SQLite.
//!
//! Each tick commits, in one transaction, the bytes counted since the previous tick *and*
//! the counters they were computed from. A kill -9 at any point therefore leaves either
//! both or neither: on restart the agent resumes from the committed counters, and nothing
//! is lost or counted twice.
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
//! How it stays cheap at 10,000 interfaces: the counters and each interface's open
//! 5-minute and hourly buckets are one packed row ([`packed`]); a bucket becomes a table
//! row when it closes, a share of the closed ones per tick. Readers use
//! [`bucket_rows`], which adds what is still packed.
//!
//! Counters are u64 and SQLite integers i64: they are stored bit for bit (`as i64`) and
//! read back the same way; bucket sums stay far below 2^63.

mod buckets;
mod checkpoint;
mod days;
mod journal;
pub mod packed;
pub mod packed_quotas;
mod schema;
pub mod spool;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};
use serde_json::{Value, json};

use super::{Boot, Counters, counter_delta};
use crate::account::quota_counts::{QuotaChanges, QuotaRows, Spent};
use crate::config::LedgerConfig;
use crate::model::event::LogKind;
use crate::model::ids::{FastMap, IfName, InstanceId};
use crate::sys::crash::{self, CrashPoint};
pub use buckets::{
    BucketFilter, BucketRow, InstanceIntervals, Pruned, bucket_rows, instance_intervals, prune,
};
pub use days::PackedDay;
pub use journal::read_events;
use packed::{Entry, Open, Row, State, Table};

pub const FIVE_MINUTES: i64 = 300;
pub const HOUR: i64 = 3600;
/// An interface not seen for this long is forgotten (its buckets stay): hosts that create
/// and destroy VMs all day must not carry every tap they ever had.
const FORGET_AFTER_MS: i64 = 30 * 86_400_000;
/// SQLite `cache_size` (negative: KiB).
const PAGE_CACHE_KIB: i64 = -256;
/// How often the WAL is checkpointed (see [`checkpoint`]).
const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("ledger: {what}: {source}")]
    Sql {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn sql(what: &'static str) -> impl Fn(rusqlite::Error) -> LedgerError {
    move |e| LedgerError::Sql {
        what,
        source: e.into(),
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
    /// What became of the tick's spool write (`None`: nothing was written).
    pub spooled: Option<spool::Spooled>,
}

/// What else a tick commits with its bytes.
#[derive(Debug, Clone, Default)]
pub struct Journal {
    pub quotas: QuotaChanges,
    pub events: Vec<EventRow>,
    /// This tick's deltas for the quota store (`None`: no store configured).
    pub spool: Option<spool::SpoolWrite>,
}

impl Journal {
    fn is_empty(&self) -> bool {
        self.quotas.is_empty()
            && self.events.is_empty()
            && self.spool.as_ref().is_none_or(|s| s.samples.is_empty())
    }
}

/// One entry of the event log: its time, kind, instance and the JSON object `sluice
/// events --json`, `simulate` and webhooks show.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub at: Timestamp,
    pub kind: LogKind,
    pub instance: Option<InstanceId>,
    pub body: serde_json::Value,
}

impl EventRow {
    /// An event of `kind`: its time and instance, then the fields of `detail` (an object).
    pub fn new(
        at: Timestamp,
        kind: LogKind,
        instance: Option<&InstanceId>,
        detail: Value,
    ) -> EventRow {
        let mut body = json!({
            "time": time_json(at.as_millisecond() as f64 / 1000.0),
            "event": kind.as_str(),
        });
        if let (Value::Object(b), Some(i)) = (&mut body, instance) {
            b.insert("instance".into(), json!(i.as_str()));
        }
        if let (Value::Object(b), Value::Object(d)) = (&mut body, detail) {
            b.extend(d);
        }
        EventRow {
            at,
            kind,
            instance: instance.cloned(),
            body,
        }
    }
}

/// Whole seconds print as integers, as they were written in the trace.
pub fn time_json(t: f64) -> Value {
    if t.fract() == 0.0 && t < 9.0e15 {
        json!(t as u64)
    } else {
        json!(t)
    }
}

/// The committed state, in memory: `state.entries[i]` is the interface `names[i]`.
#[derive(Default)]
struct Memory {
    state: State,
    names: Vec<(IfName, InstanceId)>,
    index: FastMap<IfName, usize>,
    quotas: packed_quotas::QuotaMap,
}

pub struct Ledger {
    conn: Connection,
    boot_id: String,
    mem: Memory,
    /// `PRAGMA data_version` after our last read or write: when another connection
    /// (`sluice prune`) commits, it changes and the memory is read again.
    data_version: i64,
    /// The memory may be ahead of the file (a tick failed half-way): read it again.
    stale: bool,
    /// When the previous tick ran (ms); counters unchanged since an interface's `at_ms`
    /// were still unchanged then.
    last_tick_ms: Option<i64>,
    /// Payload bytes in the spool after our last commit (measured at the first).
    spool_bytes: Option<u64>,
    /// Checkpoints the WAL in the background (none for an in-memory ledger).
    _checkpoint: Option<checkpoint::Checkpointer>,
}

impl Ledger {
    /// Open (creating or upgrading if needed) the ledger at `path`; `boot_id` identifies
    /// this boot of the host (`/proc/sys/kernel/random/boot_id`).
    pub fn open(path: &Path, boot_id: &str) -> Result<Ledger, LedgerError> {
        let open_err = |e: rusqlite::Error| LedgerError::Open {
            path: path.to_owned(),
            source: e.into(),
        };
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| LedgerError::Open {
                path: path.to_owned(),
                source: format!("cannot create {}: {e}", dir.display()).into(),
            })?;
        }
        crate::sys::files::create_private(path).map_err(|e| LedgerError::Open {
            path: path.to_owned(),
            source: e.into(),
        })?;
        let mut conn = Connection::open(path).map_err(open_err)?;
        // WAL: readers (`sluice usage`) never block the agent; FULL: a commit is on disk
        // before the tick goes on, so even a power cut loses at most the tick in flight.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(open_err)?;
        // A small page cache: a tick rewrites the packed rows and appends, it does not
        // re-read much, and the agent's memory target counts every page (default 2 MB).
        conn.pragma_update(None, "cache_size", PAGE_CACHE_KIB)
            .map_err(open_err)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(open_err)?;
        if version > schema::VERSION {
            return Err(LedgerError::Open {
                path: path.to_owned(),
                source: format!(
                    "schema version {version} is newer than this sluice knows ({}); refusing to touch it",
                    schema::VERSION
                ).into(),
            });
        }
        if version < schema::VERSION {
            schema::upgrade(&mut conn, version, boot_id).map_err(|e| LedgerError::Open {
                path: path.to_owned(),
                source: e.into(),
            })?;
        }
        let on_disk = path != Path::new(":memory:");
        let checkpoint = if on_disk {
            conn.pragma_update(None, "wal_autocheckpoint", 0)
                .map_err(open_err)?;
            Some(checkpoint::Checkpointer::start(path, CHECKPOINT_EVERY)?)
        } else {
            None
        };
        let mut ledger = Ledger {
            conn,
            boot_id: boot_id.to_owned(),
            mem: Memory::default(),
            data_version: 0,
            stale: false,
            last_tick_ms: None,
            spool_bytes: None,
            _checkpoint: checkpoint,
        };
        ledger.mem = load(&ledger.conn, boot_id)?;
        ledger.data_version = data_version(&ledger.conn)?;
        ledger.last_tick_ms = Some(ledger.mem.state.at_ms).filter(|&t| t > 0);
        Ok(ledger)
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
        let interval_ms = i64::try_from(interval.as_millis())
            .unwrap_or(i64::MAX / 4)
            .max(1);
        // The write lock first: nobody (`sluice prune`) may change the file between our
        // reading it and writing it back.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("begin"))?;
        let version = data_version(&tx)?;
        if self.stale || version != self.data_version {
            self.mem = load(&tx, &self.boot_id)?;
            self.last_tick_ms = Some(self.mem.state.at_ms).filter(|&t| t > 0);
            self.data_version = version;
            self.stale = false;
        }
        // From here the memory runs ahead of the file until the commit.
        self.stale = true;
        let mut tick = Tick {
            at,
            now_ms,
            max_gap_ms: interval_ms.saturating_mul(2),
            last_tick_ms: self.last_tick_ms,
            out: Recorded::default(),
            spent: Vec::new(),
            direct: Vec::new(),
            dirty: false,
        };
        let mem = &mut self.mem;
        // Room for the interfaces beyond those known, made once: growing by doubling on a
        // 10,000-interface host's first tick held both copies and left a third unused.
        // (Counted without lookups; at worst it also makes room for some that vanished.)
        let more = observations.len().saturating_sub(mem.names.len());
        if more > 0 {
            mem.state.entries.reserve_exact(more);
            mem.names.reserve_exact(more);
            mem.index.reserve(more);
        }
        for o in observations {
            tick.observe(&tx, mem, o)?;
        }
        tick.close_by_time(&mut mem.state);
        tick.forget_unseen(mem);
        let flush = flush_share(&mut mem.state.pending, now_ms, interval_ms);
        let journal = journal(&tick.spent);
        // An idle tick writes nothing (no fsync): the previous tick's time is kept in
        // memory and persisted with the next real write.
        if !tick.dirty && flush.is_empty() && tick.direct.is_empty() && journal.is_empty() {
            drop(tx);
            self.stale = false;
            self.last_tick_ms = Some(now_ms);
            return Ok(tick.out);
        }
        if tick.dirty || !flush.is_empty() {
            mem.state.at_ms = now_ms;
            mem.state.boot_id.clone_from(&self.boot_id);
            packed::write(&tx, &mem.state.encode()?)?;
        }
        packed::add_rows(&tx, &tick.direct)?;
        packed::add_rows(&tx, &flush)?;
        if !journal.quotas.is_empty() {
            for (key, usage) in journal.quotas {
                match usage {
                    Some(u) => mem.quotas.insert(key, u),
                    None => mem.quotas.remove(&key),
                };
            }
            packed_quotas::write(&tx, &mem.quotas)?;
        }
        journal::write_events(&tx, &journal.events)?;
        let spooled = match &journal.spool {
            Some(w) => {
                let bytes = match self.spool_bytes {
                    Some(b) => b,
                    None => spool::total_bytes(&tx)?,
                };
                Some(spool::write(&tx, w, bytes)?)
            }
            None => None,
        };
        crash::point(CrashPoint::LedgerBeforeCommit);
        tx.commit().map_err(sql("commit"))?;
        if let Some(s) = spooled {
            self.spool_bytes = Some(s.bytes);
            tick.out.spooled = Some(s);
        }
        self.stale = false;
        self.last_tick_ms = Some(now_ms);
        Ok(tick.out)
    }

    /// The persisted quota counts (what [`Quotas::from_rows`] takes). Counts whose names
    /// are no longer valid are skipped.
    pub fn quotas(&self) -> Result<QuotaRows, LedgerError> {
        Ok(self
            .mem
            .quotas
            .iter()
            .map(|(k, u)| (k.clone(), u.clone()))
            .collect())
    }

    /// Delete 5-minute buckets (rows and packed days) older than `keep_5m` and hourly
    /// ones older than `keep_hour` (before `now`), and events older than `keep_events`,
    /// in one transaction (one fsync); returns the rows and packs deleted or cut.
    pub fn expire(&mut self, now: Timestamp, keep: LedgerConfig) -> Result<usize, LedgerError> {
        let cut = |keep: Duration| {
            now.as_second() - i64::try_from(keep.as_secs()).unwrap_or(i64::MAX / 2)
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("expiring buckets"))?;
        let mut gone = 0;
        for (table, keep) in [
            (Table::FiveMinutes, keep.keep_5m),
            (Table::Hour, keep.keep_hourly),
        ] {
            gone += tx
                .execute(
                    &format!("DELETE FROM {} WHERE bucket < ?1", table.name()),
                    params![cut(keep)],
                )
                .map_err(sql("expiring buckets"))?;
        }
        gone += days::cut_before(&tx, cut(keep.keep_5m), None)?;
        // The event log too: its rows are few, but a host runs for years.
        gone += tx
            .execute(
                "DELETE FROM events WHERE at_ms < ?1",
                params![cut(keep.keep_events).saturating_mul(1000)],
            )
            .map_err(sql("expiring events"))?;
        tx.commit().map_err(sql("expiring buckets"))?;
        // Our own writes never change our `data_version`: only other connections' do.
        Ok(gone)
    }

    /// Pack the next chunk of the oldest closed day of 5-minute rows (see [`days`]), once
    /// the day is an hour past its end (most of its buckets written by then). A bucket
    /// still waiting in the packed state is read beside the pack and folded in later, so
    /// it holds nothing back: an interface gone for weeks keeps its open bucket there.
    /// `None` when nothing is due; call again while it packs something.
    pub fn pack_day(&mut self, now: Timestamp) -> Result<Option<PackedDay>, LedgerError> {
        days::pack_next(&mut self.conn, now.as_second() - HOUR)
    }

    /// [`prune`] through this ledger.
    pub fn prune(
        &mut self,
        before: Timestamp,
        instance: Option<&InstanceId>,
        dry_run: bool,
    ) -> Result<Pruned, LedgerError> {
        // The packed state may change: read it again before the next tick.
        self.stale = true;
        prune(&mut self.conn, before, instance, dry_run)
    }

    /// The connection, for queries ([`bucket_rows`], [`super::usage`]).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

fn data_version(conn: &Connection) -> Result<i64, LedgerError> {
    conn.pragma_query_value(None, "data_version", |r| r.get(0))
        .map_err(sql("reading the data version"))
}

/// The committed state and the names of its interfaces.
fn load(conn: &Connection, boot_id: &str) -> Result<Memory, LedgerError> {
    let quotas = packed_quotas::read(conn)?.into_iter().collect();
    let Some(mut state) = packed::read(conn)? else {
        return Ok(Memory {
            state: State {
                boot_id: boot_id.to_owned(),
                ..State::default()
            },
            quotas,
            ..Memory::default()
        });
    };
    if state.boot_id != boot_id {
        // Everything was read in another boot of the host.
        for e in &mut state.entries {
            e.this_boot = false;
        }
    }
    let mut stmt = conn
        .prepare("SELECT id, interface, instance FROM interfaces")
        .map_err(sql("reading interfaces"))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .map_err(sql("reading interfaces"))?;
    let mut by_id = HashMap::new();
    for row in rows {
        let (id, interface, instance) = row.map_err(sql("reading interfaces"))?;
        // A name that is no longer valid cannot be sampled again; its entry is dropped.
        if let (Ok(i), Ok(n)) = (IfName::new(&interface), InstanceId::new(&instance)) {
            by_id.insert(id, (i, n));
        }
    }
    let mut mem = Memory {
        quotas,
        ..Memory::default()
    };
    let entries = std::mem::take(&mut state.entries);
    for e in entries {
        if let Some(names) = by_id.get(&e.id)
            && !mem.index.contains_key(&names.0)
        {
            mem.index.insert(names.0.clone(), mem.names.len());
            mem.names.push(names.clone());
            state.entries.push(e);
        }
    }
    mem.state = state;
    Ok(mem)
}

/// The id of (interface, instance), creating it on first sight.
fn interface_id(
    conn: &Connection,
    interface: &IfName,
    instance: &InstanceId,
) -> Result<i64, LedgerError> {
    conn.prepare_cached(
        "INSERT INTO interfaces (interface, instance) VALUES (?1, ?2)
         ON CONFLICT (interface, instance) DO UPDATE SET interface = excluded.interface
         RETURNING id",
    )
    .and_then(|mut s| s.query_row(params![interface.as_str(), instance.as_str()], |r| r.get(0)))
    .map_err(sql("writing interfaces"))
}

/// One tick's work on the memory.
struct Tick {
    at: Timestamp,
    now_ms: i64,
    max_gap_ms: i64,
    last_tick_ms: Option<i64>,
    out: Recorded,
    spent: Vec<Spent>,
    /// Rows to add to their tables in this commit (buckets a gap spread over, or behind
    /// an open one after the clock went back).
    direct: Vec<Row>,
    /// The packed state changed.
    dirty: bool,
}

impl Tick {
    fn observe(
        &mut self,
        conn: &Connection,
        mem: &mut Memory,
        o: &Observation<'_>,
    ) -> Result<(), LedgerError> {
        let Some(&i) = mem.index.get(o.interface) else {
            let id = interface_id(conn, o.interface, o.instance)?;
            mem.index.insert(o.interface.clone(), mem.names.len());
            mem.names.push((o.interface.clone(), o.instance.clone()));
            mem.state.entries.push(Entry {
                id,
                ifindex: o.ifindex,
                this_boot: true,
                rx: o.rx_bytes,
                tx: o.tx_bytes,
                at_ms: self.now_ms,
                open: [Open::default(); 2],
            });
            self.dirty = true;
            return Ok(());
        };
        let e = &mut mem.state.entries[i];
        let moved = mem.names[i].1 != *o.instance;
        let changed = moved
            || !e.this_boot
            || e.ifindex != o.ifindex
            || e.rx != o.rx_bytes
            || e.tx != o.tx_bytes;
        // Unchanged counters were still unchanged at this tick.
        let from = e
            .at_ms
            .max(self.last_tick_ms.unwrap_or(e.at_ms))
            .min(self.now_ms);
        e.at_ms = self.now_ms;
        if !changed {
            return Ok(());
        }
        self.dirty = true;
        if moved {
            // The interface now belongs to another instance: what its buckets hold so far
            // was the old one's.
            let id = e.id;
            for table in Table::ALL {
                let open = e.open_mut(table);
                if !open.is_empty() {
                    mem.state.pending.push(Row::closing(table, id, open));
                    *open = Open::default();
                }
            }
            e.id = interface_id(conn, o.interface, o.instance)?;
            mem.names[i].1 = o.instance.clone();
        }
        let d = counter_delta(
            Counters {
                ifindex: e.ifindex,
                rx_bytes: e.rx,
                tx_bytes: e.tx,
                rx_packets: 0,
                tx_packets: 0,
            },
            if e.this_boot {
                Boot::This
            } else {
                Boot::Earlier
            },
            Counters {
                ifindex: o.ifindex,
                rx_bytes: o.rx_bytes,
                tx_bytes: o.tx_bytes,
                rx_packets: 0,
                tx_packets: 0,
            },
        );
        e.ifindex = o.ifindex;
        e.rx = o.rx_bytes;
        e.tx = o.tx_bytes;
        e.this_boot = true;
        let moved_bytes = d.rx_bytes > 0 || d.tx_bytes > 0;
        let estimated = self.now_ms - from > self.max_gap_ms;
        self.out.rx_bytes += d.rx_bytes;
        self.out.tx_bytes += d.tx_bytes;
        self.out.resets += usize::from(d.reset);
        self.out.estimated += usize::from(estimated && moved_bytes);
        if !moved_bytes {
            return Ok(());
        }
        self.spent.push(Spent {
            instance: o.instance.clone(),
            upload: d.rx_bytes,
            download: d.tx_bytes,
            from: Timestamp::from_millisecond(from).unwrap_or(self.at),
            to: self.at,
            estimated,
        });
        let id = e.id;
        for table in Table::ALL {
            let len = table.len_s() * 1000;
            let rx = spread(d.rx_bytes, from, self.now_ms, len);
            let tx = spread(d.tx_bytes, from, self.now_ms, len);
            let last = rx.len().saturating_sub(1);
            debug_assert_eq!(rx.len(), tx.len());
            for (k, ((bucket, r), (_, t))) in rx.into_iter().zip(tx).enumerate() {
                if r == 0 && t == 0 {
                    continue;
                }
                let row = Row {
                    table,
                    id,
                    bucket,
                    rx: r,
                    tx: t,
                    estimated,
                };
                let open = e.open_mut(table);
                if !open.is_empty() && open.start == bucket {
                    open.rx += r;
                    open.tx += t;
                    open.estimated |= estimated;
                } else if k == last && (open.is_empty() || bucket > open.start) {
                    // The newest bucket opens; the one it follows is closed.
                    if !open.is_empty() {
                        mem.state.pending.push(Row::closing(table, id, open));
                    }
                    *open = Open {
                        start: bucket,
                        rx: r,
                        tx: t,
                        estimated,
                    };
                } else {
                    self.direct.push(row);
                }
            }
        }
        Ok(())
    }

    /// Buckets whose time is over close even if their interface went quiet.
    fn close_by_time(&mut self, state: &mut State) {
        for table in Table::ALL {
            let len = table.len_s() * 1000;
            let current = (self.now_ms - 1).div_euclid(len) * len / 1000;
            for e in &mut state.entries {
                let id = e.id;
                let open = e.open_mut(table);
                if !open.is_empty() && open.start < current {
                    state.pending.push(Row::closing(table, id, open));
                    *open = Open::default();
                    self.dirty = true;
                }
            }
        }
    }

    /// Interfaces not seen for [`FORGET_AFTER_MS`] (their buckets are closed by then).
    fn forget_unseen(&mut self, mem: &mut Memory) {
        let cut = self.now_ms - FORGET_AFTER_MS;
        let mut i = 0;
        while i < mem.state.entries.len() {
            let e = &mem.state.entries[i];
            if e.at_ms >= cut || e.open.iter().any(|o| !o.is_empty()) {
                i += 1;
                continue;
            }
            mem.state.entries.swap_remove(i);
            let (name, _) = mem.names.swap_remove(i);
            mem.index.remove(&name);
            if let Some((moved, _)) = mem.names.get(i) {
                mem.index.insert(moved.clone(), i);
            }
            self.dirty = true;
        }
    }
}

/// The pending rows this tick writes: for each table, an even share of what is pending
/// over the ticks left before its next bucket boundary, so the 10,000 rows a boundary
/// closes are written across the following ticks instead of all in one.
fn flush_share(pending: &mut Vec<Row>, now_ms: i64, interval_ms: i64) -> Vec<Row> {
    if pending.is_empty() {
        return Vec::new();
    }
    let mut budget = Table::ALL.map(|table| {
        let len = table.len_s() * 1000;
        let next = now_ms.div_euclid(len) * len + len;
        let ticks_left = ((next - now_ms) / interval_ms).max(1);
        let waiting = pending.iter().filter(|r| r.table == table).count() as i64;
        (waiting + ticks_left - 1) / ticks_left
    });
    let mut out = Vec::new();
    pending.retain(|r| {
        let b = &mut budget[usize::from(r.table == Table::Hour)];
        if *b > 0 {
            *b -= 1;
            out.push(*r);
            false
        } else {
            true
        }
    });
    out
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
        source: e.into(),
    })?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(sql("busy timeout"))?;
    Ok(conn)
}

/// Split `bytes` counted over (from, to] (ms) into buckets of `len` ms by overlap:
/// (bucket start in seconds, bytes). Integer shares; the remainder goes to the last.
/// An iterator, not a Vec: the agent calls it four times per interface per tick.
pub fn spread(bytes: u64, from: i64, to: i64, len: i64) -> Spread {
    let bucket_of = |t: i64| t.div_euclid(len) * len;
    if to <= from {
        // No time passed (the clock did not move): all of it at `to`.
        let b = bucket_of(to);
        return Spread {
            bytes,
            from: to - 1,
            to,
            len,
            next: b,
            last: b,
            given: 0,
        };
    }
    Spread {
        bytes,
        from,
        to,
        len,
        next: bucket_of(from),
        // (from, to]: an instant exactly on a boundary belongs to the bucket it ends.
        last: bucket_of(to - 1),
        given: 0,
    }
}

/// See [`spread`].
#[derive(Debug, Clone)]
pub struct Spread {
    bytes: u64,
    from: i64,
    to: i64,
    len: i64,
    next: i64,
    last: i64,
    given: u64,
}

impl Iterator for Spread {
    type Item = (i64, u64);

    fn next(&mut self) -> Option<(i64, u64)> {
        let b = self.next;
        if b > self.last {
            return None;
        }
        let share = if b == self.last {
            self.bytes - self.given
        } else {
            let overlap = (self.to.min(b + self.len) - self.from.max(b)).max(0) as u64;
            let total = u128::from((self.to - self.from) as u64);
            (u128::from(self.bytes) * u128::from(overlap) / total) as u64
        };
        self.given += share;
        self.next += self.len;
        Some((b / 1000, share))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = if self.next > self.last {
            0
        } else {
            usize::try_from((self.last - self.next) / self.len + 1).unwrap_or(usize::MAX)
        };
        (n, Some(n))
    }
}

impl ExactSizeIterator for Spread {}

/// This boot's id, from the kernel.
pub fn boot_id() -> std::io::Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/random/boot_id")?
        .trim()
        .to_owned())
}

#[cfg(test)]
mod tests;
