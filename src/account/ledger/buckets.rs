//! Reading and pruning buckets: the table rows plus the ones still in the packed state
//! (open, or closed and waiting for their share of a tick — see [`super::packed`]).
//! Both are the ledger; every reader goes through here so neither is ever missed.

use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;
use rusqlite::{Connection, TransactionBehavior, params};

use super::packed::{self, Row, State, Table};
use super::{LedgerError, days, sql};
use crate::model::day_curve;
use crate::model::ids::InstanceId;
use crate::model::percentile::{Interval, interval_starts};

/// One bucket of one interface (several rows may name the same bucket: sum them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketRow {
    pub instance: String,
    pub interface: String,
    /// Bucket start, seconds since the epoch.
    pub bucket: i64,
    pub rx: u64,
    pub tx: u64,
    pub estimated: bool,
}

/// Which buckets to read.
#[derive(Debug, Clone, Copy)]
pub struct BucketFilter<'a> {
    pub table: Table,
    /// Buckets starting in [from, to), seconds.
    pub from: i64,
    pub to: i64,
    pub instance: Option<&'a str>,
    pub interface: Option<&'a str>,
}

impl BucketFilter<'_> {
    /// Every bucket of `table`.
    pub fn all(table: Table) -> BucketFilter<'static> {
        BucketFilter {
            table,
            from: i64::MIN,
            to: i64::MAX,
            instance: None,
            interface: None,
        }
    }

    fn wants(&self, row: &Row, names: &HashMap<i64, (String, String)>) -> bool {
        let Some((interface, instance)) = names.get(&row.id) else {
            return false;
        };
        row.table == self.table
            && (self.from..self.to).contains(&row.bucket)
            && self.instance.is_none_or(|i| i == instance)
            && self.interface.is_none_or(|i| i == interface)
    }
}

/// (interface, instance) of every `interfaces.id`.
fn names(conn: &Connection) -> Result<HashMap<i64, (String, String)>, LedgerError> {
    let mut stmt = conn
        .prepare_cached("SELECT id, interface, instance FROM interfaces")
        .map_err(sql("reading interfaces"))?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
        .map_err(sql("reading interfaces"))?;
    rows.collect::<Result<_, _>>()
        .map_err(sql("reading interfaces"))
}

/// The buckets `filter` selects, table rows first, then the unwritten ones.
pub fn bucket_rows(
    conn: &Connection,
    filter: &BucketFilter<'_>,
) -> Result<Vec<BucketRow>, LedgerError> {
    // One snapshot for the rows, the packs and the packed state: packing, or a tick,
    // committing between two of the reads would move a bucket from one to another, seen
    // twice or not at all. (`prune` calls this inside its own transaction.)
    let _snapshot = if conn.is_autocommit() {
        Some(conn.unchecked_transaction().map_err(sql("reading usage"))?)
    } else {
        None
    };
    let text = format!(
        "SELECT i.instance, i.interface, u.bucket, u.rx, u.tx, u.estimated
         FROM {} u JOIN interfaces i ON i.id = u.id
         WHERE u.bucket >= ?1 AND u.bucket < ?2
           AND (?3 IS NULL OR i.instance = ?3) AND (?4 IS NULL OR i.interface = ?4)",
        filter.table.name()
    );
    let mut stmt = conn.prepare(&text).map_err(sql("reading usage"))?;
    let rows = stmt
        .query_map(
            params![filter.from, filter.to, filter.instance, filter.interface],
            |r| {
                Ok(BucketRow {
                    instance: r.get(0)?,
                    interface: r.get(1)?,
                    bucket: r.get(2)?,
                    rx: r.get::<_, i64>(3)? as u64,
                    tx: r.get::<_, i64>(4)? as u64,
                    estimated: r.get::<_, i64>(5)? != 0,
                })
            },
        )
        .map_err(sql("reading usage"))?;
    let mut out: Vec<BucketRow> = rows
        .collect::<Result<_, _>>()
        .map_err(sql("reading usage"))?;
    let names = names(conn)?;
    if filter.table == Table::FiveMinutes {
        let named = |id: i64| {
            names.get(&id).filter(|(interface, instance)| {
                filter.instance.is_none_or(|i| i == instance)
                    && filter.interface.is_none_or(|i| i == interface)
            })
        };
        days::read(
            conn,
            (filter.from, filter.to),
            None,
            |id| named(id).is_some(),
            |id, bucket, iv| {
                if let Some((interface, instance)) = named(id) {
                    out.push(BucketRow {
                        instance: instance.clone(),
                        interface: interface.clone(),
                        bucket,
                        rx: iv.upload,
                        tx: iv.download,
                        estimated: iv.estimated,
                    });
                }
            },
        )?;
    }
    if let Some(state) = packed::read(conn)? {
        for row in state.unwritten().filter(|r| filter.wants(r, &names)) {
            let (interface, instance) = &names[&row.id];
            out.push(BucketRow {
                instance: instance.clone(),
                interface: interface.clone(),
                bucket: row.bucket,
                rx: row.rx,
                tx: row.tx,
                estimated: row.estimated,
            });
        }
    }
    Ok(out)
}

/// What [`prune`] removed (or would remove).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub rows_5m: usize,
    pub rows_hourly: usize,
    pub upload_bytes: u64,
    pub download_bytes: u64,
}

/// Delete (or, with `dry_run`, count) buckets that start before `before`, of one instance
/// or all: rows of each table, and the bytes of the hourly ones — the totals that will no
/// longer be reported. Buckets still in the packed state go too, in the same transaction;
/// a running agent sees the change and reloads before its next tick writes.
pub fn prune(
    conn: &mut Connection,
    before: Timestamp,
    instance: Option<&InstanceId>,
    dry_run: bool,
) -> Result<Pruned, LedgerError> {
    let cut = before.as_second();
    let who = instance.map(|i| i.as_str());
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql("begin"))?;
    let mut out = Pruned::default();
    for table in Table::ALL {
        let filter = BucketFilter {
            table,
            from: i64::MIN,
            to: cut,
            instance: who,
            interface: None,
        };
        let rows = bucket_rows(&tx, &filter)?;
        match table {
            Table::FiveMinutes => out.rows_5m = rows.len(),
            Table::Hour => {
                out.rows_hourly = rows.len();
                out.upload_bytes = rows.iter().map(|r| r.rx).sum();
                out.download_bytes = rows.iter().map(|r| r.tx).sum();
            }
        }
    }
    if dry_run {
        return Ok(out);
    }
    for table in Table::ALL {
        tx.execute(
            &format!(
                "DELETE FROM {} WHERE bucket < ?1
                 AND (?2 IS NULL OR id IN (SELECT id FROM interfaces WHERE instance = ?2))",
                table.name()
            ),
            params![cut, who],
        )
        .map_err(sql("pruning buckets"))?;
    }
    let names = names(&tx)?;
    let ids: Option<Vec<i64>> = who.map(|w| {
        names
            .iter()
            .filter(|(_, (_, inst))| inst == w)
            .map(|(id, _)| *id)
            .collect()
    });
    days::cut_before(&tx, cut, ids.as_deref())?;
    if let Some(mut state) = packed::read(&tx)? {
        let doomed = |id: i64, bucket: i64| {
            bucket < cut
                && names
                    .get(&id)
                    .is_some_and(|(_, inst)| who.is_none_or(|w| w == inst))
        };
        let before_len = state.pending.len();
        state.pending.retain(|r| !doomed(r.id, r.bucket));
        let mut changed = state.pending.len() != before_len;
        for e in &mut state.entries {
            for table in Table::ALL {
                let (id, o) = (e.id, e.open_mut(table));
                if !o.is_empty() && doomed(id, o.start) {
                    *o = packed::Open::default();
                    changed = true;
                }
            }
        }
        if changed {
            packed::write(&tx, &State::encode(&state)?)?;
        }
    }
    tx.commit().map_err(sql("commit"))?;
    Ok(out)
}

/// One instance's 5-minute intervals, oldest first: (interval start in seconds, bytes).
pub type InstanceIntervals = Vec<(i64, Interval)>;

/// Every instance's 5-minute intervals starting in [from, to) (seconds), its interfaces
/// summed per interval: what a percentile is read from. Unlike [`bucket_rows`] it names
/// no interface, so a month of a thousand instances is read without a string per row.
///
/// Closed days come packed, one row per interface and day (see [`super::days`]); the
/// rest as rows. Everything is read in one snapshot: packing moves a day's rows into
/// its pack, and a tick moves buckets from the packed state into rows, so two reads at
/// different moments could see a bucket twice or not at all.
pub fn instance_intervals(
    conn: &Connection,
    (from, to): (i64, i64),
    instance: Option<&str>,
) -> Result<BTreeMap<String, InstanceIntervals>, LedgerError> {
    let snapshot = conn
        .unchecked_transaction()
        .map_err(sql("reading 5-minute usage"))?;
    // interfaces.id → index of its instance in `instances` (ids are small rowids).
    let mut instances: Vec<String> = Vec::new();
    let mut slot: Vec<u32> = Vec::new();
    let mut only_id = None;
    {
        let mut index: HashMap<String, u32> = HashMap::new();
        for (id, (_, inst)) in names(&snapshot)? {
            if instance.is_some_and(|w| w != inst) {
                continue;
            }
            let Ok(id) = usize::try_from(id) else {
                continue;
            };
            let next = instances.len() as u32;
            let i = *index.entry(inst.clone()).or_insert(next);
            if i == next {
                instances.push(inst);
            }
            if slot.len() <= id {
                slot.resize(id + 1, u32::MAX);
            }
            slot[id] = i;
            only_id = Some(id as i64);
        }
    }
    let slots = Slots(&slot);
    let width = instances.len();
    let state = packed::read(&snapshot)?;
    // The packs, each instance's interfaces one after another in time order.
    let mut packs: Vec<InstanceIntervals> = vec![Vec::new(); width];
    let mut interfaces_packed = vec![0u32; width];
    let mut last_id = vec![None; width];
    // One interface asked for: its packs by key, not the whole table.
    let one = match instance {
        Some(_) if slot.iter().filter(|&&i| i != u32::MAX).count() == 1 => only_id,
        _ => None,
    };
    days::read(
        &snapshot,
        (from, to),
        one,
        |id| slots.of(id).is_some(),
        |id, bucket, iv| {
            if let Some(i) = slots.of(id) {
                if last_id[i] != Some(id) {
                    last_id[i] = Some(id);
                    interfaces_packed[i] += 1;
                }
                packs[i].push((bucket, iv));
            }
        },
    )?;
    let mut out = match instance {
        // One instance (a dashboard page, `--instance`): seek its interfaces' rows one
        // interval at a time rather than scan every instance's month.
        Some(_) => seek_intervals(&snapshot, (from, to), &slot, width)?,
        None => read_intervals(&snapshot, (from, to), slots, width)?,
    };
    for ((v, mut packed), n) in out.iter_mut().zip(packs).zip(interfaces_packed) {
        if n > 1 {
            merge_sorted(&mut packed);
        }
        *v = day_curve::merge(packed, std::mem::take(v));
    }
    // Buckets still packed are the newest: they go after the table's, merged where an
    // interval already has a row (a closed bucket not yet written beside written ones).
    if let Some(state) = state {
        let mut late: Vec<Row> = state
            .unwritten()
            .filter(|r| r.table == Table::FiveMinutes && (from..to).contains(&r.bucket))
            .collect();
        late.sort_by_key(|r| (r.bucket, r.id));
        let mut touched = vec![false; out.len()];
        for r in late {
            if let Some(i) = slots.of(r.id) {
                touched[i] = true;
                let iv = Interval {
                    upload: r.rx,
                    download: r.tx,
                    estimated: r.estimated,
                };
                push_interval(&mut out[i], (r.bucket, iv));
            }
        }
        for (v, t) in out.iter_mut().zip(touched) {
            if t {
                merge_sorted(v);
            }
        }
    }
    Ok(instances
        .into_iter()
        .zip(out)
        .filter(|(_, v)| !v.is_empty())
        .collect())
}

/// Which instance (index) an `interfaces.id` belongs to; `None`: not asked for.
#[derive(Clone, Copy)]
struct Slots<'a>(&'a [u32]);

impl Slots<'_> {
    fn of(self, id: i64) -> Option<usize> {
        let i = *self.0.get(usize::try_from(id).ok()?)?;
        (i != u32::MAX).then_some(i as usize)
    }
}

/// The rows of [from, to) of the interfaces `slots` names, looked up by key (bucket,
/// id) interval by interval: a month is ~9,000 seeks per interface, not a scan of every
/// interface's rows.
fn seek_intervals(
    conn: &Connection,
    (from, to): (i64, i64),
    slots: &[u32],
    width: usize,
) -> Result<Vec<InstanceIntervals>, LedgerError> {
    let what = "reading 5-minute usage";
    let mut out: Vec<InstanceIntervals> = vec![Vec::new(); width];
    let first = interval_starts(from, to).start;
    if first >= to {
        return Ok(out);
    }
    let mut stmt = conn
        .prepare_cached(
            "WITH RECURSIVE b(x) AS (SELECT ?1 UNION ALL SELECT x + 300 FROM b WHERE x + 300 < ?2)
             SELECT u.bucket, u.rx, u.tx, u.estimated
             FROM b JOIN usage_5m u ON u.bucket = b.x AND u.id = ?3",
        )
        .map_err(sql(what))?;
    let mut touched = vec![false; width];
    for (id, &i) in slots.iter().enumerate() {
        if i == u32::MAX {
            continue;
        }
        let (i, id) = (i as usize, id as i64);
        let mut rows = stmt.query(params![first, to, id]).map_err(sql(what))?;
        while let Some(r) = rows.next().map_err(sql(what))? {
            let int = |k| {
                r.get_ref(k)
                    .and_then(|v| v.as_i64().map_err(rusqlite::Error::from))
                    .map_err(sql(what))
            };
            let iv = Interval {
                upload: int(1)? as u64,
                download: int(2)? as u64,
                estimated: int(3)? != 0,
            };
            out[i].push((int(0)?, iv));
            touched[i] = true;
        }
    }
    // Several interfaces of one instance: in interval order, their bytes summed.
    for (v, t) in out.iter_mut().zip(touched) {
        if t {
            merge_sorted(v);
        }
    }
    Ok(out)
}

/// The table's rows of [from, to), into one list per instance. The table's key is
/// (bucket, id): rows come bucket by bucket, so each list grows in order and an
/// interval's interfaces arrive together.
fn read_intervals(
    conn: &Connection,
    (from, to): (i64, i64),
    slots: Slots<'_>,
    width: usize,
) -> Result<Vec<InstanceIntervals>, LedgerError> {
    let what = "reading 5-minute usage";
    let mut out: Vec<InstanceIntervals> = vec![Vec::new(); width];
    let mut stmt = conn
        .prepare_cached(
            "SELECT bucket, id, rx, tx, estimated FROM usage_5m
             WHERE bucket >= ?1 AND bucket < ?2 ORDER BY bucket, id",
        )
        .map_err(sql(what))?;
    let mut rows = stmt.query(params![from, to]).map_err(sql(what))?;
    while let Some(r) = rows.next().map_err(sql(what))? {
        let int = |i| {
            r.get_ref(i)
                .and_then(|v| v.as_i64().map_err(rusqlite::Error::from))
                .map_err(sql(what))
        };
        let Some(i) = slots.of(int(1)?) else {
            continue;
        };
        let iv = Interval {
            upload: int(2)? as u64,
            download: int(3)? as u64,
            estimated: int(4)? != 0,
        };
        push_interval(&mut out[i], (int(0)?, iv));
    }
    Ok(out)
}

/// Append an interval, or add it to the last one when it is the same interval.
fn push_interval(v: &mut InstanceIntervals, (bucket, iv): (i64, Interval)) {
    match v.last_mut() {
        Some((b, last)) if *b == bucket => last.add(&iv),
        _ => v.push((bucket, iv)),
    }
}

/// Sort by interval and sum the intervals that appear twice.
fn merge_sorted(v: &mut InstanceIntervals) {
    v.sort_by_key(|(b, _)| *b);
    v.dedup_by(|(b, later), (kept_b, kept)| {
        if b == kept_b {
            kept.add(later);
            true
        } else {
            false
        }
    });
}
