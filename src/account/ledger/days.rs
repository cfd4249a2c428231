//! Closed UTC days of `usage_5m` packed into one row per interface and day.
//!
//! A month's percentile for every instance reads every 5-minute interval of the month;
//! as one row per interval and interface that is millions of rows, and handing each to
//! Rust costs more than ranking them. A day long closed no longer changes, so it is kept
//! as one value (see [`crate::model::day_curve`]) and a month becomes about 31 rows per
//! interface.
//!
//! Packing moves a day's rows into its pack in one transaction: every reader sees a
//! bucket either loose or packed, never both. A row can still arrive for a packed day
//! (a bucket that waited in the packed state past the day's close): rows are additive,
//! so readers sum a day's pack and its loose rows, and the next pass folds them in.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{LedgerError, sql};
use crate::model::day_curve::{self, DAY_SECS, day_of};
use crate::model::percentile::Interval;

/// The packed days: `curve` is [`day_curve::encode`]'s. Keyed interface first: one
/// instance's month is a range of the key, and every instance's is the whole table
/// (which holds only the retention).
pub const TABLE: &str = "
CREATE TABLE IF NOT EXISTS usage_5m_days (
    id INTEGER NOT NULL,
    day INTEGER NOT NULL,
    curve BLOB NOT NULL,
    PRIMARY KEY (id, day)
) WITHOUT ROWID;
";

/// Interfaces packed per call: one call holds the write lock for a bounded time, so a
/// tick waits little behind it.
pub const CHUNK: i64 = 256;

/// What one [`pack_next`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedDay {
    /// The day's start, seconds.
    pub day: i64,
    pub interfaces: usize,
    /// Rows folded into packs (and deleted from `usage_5m`).
    pub rows: usize,
}

/// Pack up to [`CHUNK`] interfaces' rows of the oldest day that ends at or before
/// `settled` (seconds) and still has rows in `usage_5m`; `None` when there is none.
pub fn pack_next(conn: &mut Connection, settled: i64) -> Result<Option<PackedDay>, LedgerError> {
    let what = "packing a day of 5-minute usage";
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql(what))?;
    let oldest: Option<i64> = tx
        .query_row("SELECT MIN(bucket) FROM usage_5m", [], |r| r.get(0))
        .map_err(sql(what))?;
    let Some(day) = oldest.map(day_of) else {
        return Ok(None);
    };
    let end = day + DAY_SECS;
    if end > settled {
        return Ok(None);
    }
    let lo: i64 = tx
        .query_row(
            "SELECT MIN(id) FROM usage_5m WHERE bucket >= ?1 AND bucket < ?2",
            params![day, end],
            |r| r.get(0),
        )
        .map_err(sql(what))?;
    // The chunk is [lo, hi], both included: `hi` = i64::MAX when fewer ids are left, so
    // even an id of i64::MAX is in a chunk.
    let hi: i64 = tx
        .query_row(
            "SELECT id FROM interfaces WHERE id >= ?1 ORDER BY id LIMIT 1 OFFSET ?2",
            params![lo, CHUNK - 1],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql(what))?
        .unwrap_or(i64::MAX);
    let mut curves: BTreeMap<i64, Vec<(i64, Interval)>> = BTreeMap::new();
    let mut rows = 0;
    {
        let mut stmt = tx
            .prepare_cached(
                "SELECT id, bucket, rx, tx, estimated FROM usage_5m
                 WHERE bucket >= ?1 AND bucket < ?2 AND id >= ?3 AND id <= ?4
                 ORDER BY id, bucket",
            )
            .map_err(sql(what))?;
        let mut found = stmt.query(params![day, end, lo, hi]).map_err(sql(what))?;
        while let Some(r) = found.next().map_err(sql(what))? {
            let int = |k| r.get::<_, i64>(k).map_err(sql(what));
            let iv = Interval {
                upload: int(2)? as u64,
                download: int(3)? as u64,
                estimated: int(4)? != 0,
            };
            curves.entry(int(0)?).or_default().push((int(1)?, iv));
            rows += 1;
        }
    }
    for (id, loose) in &mut curves {
        let packed: Option<Vec<u8>> = tx
            .query_row(
                "SELECT curve FROM usage_5m_days WHERE id = ?1 AND day = ?2",
                params![id, day],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql(what))?;
        let curve = match packed {
            Some(bytes) => day_curve::merge(
                day_curve::decode(day, &bytes).map_err(unreadable)?,
                std::mem::take(loose),
            ),
            None => std::mem::take(loose),
        };
        tx.execute(
            "INSERT INTO usage_5m_days (id, day, curve) VALUES (?1, ?2, ?3)
             ON CONFLICT (id, day) DO UPDATE SET curve = excluded.curve",
            params![id, day, day_curve::encode(day, &curve).map_err(unreadable)?],
        )
        .map_err(sql(what))?;
    }
    tx.execute(
        "DELETE FROM usage_5m WHERE bucket >= ?1 AND bucket < ?2 AND id >= ?3 AND id <= ?4",
        params![day, end, lo, hi],
    )
    .map_err(sql(what))?;
    tx.commit().map_err(sql(what))?;
    Ok(Some(PackedDay {
        day,
        interfaces: curves.len(),
        rows,
    }))
}

/// Every packed interval of the interfaces `wanted` accepts, starting in [from, to)
/// (seconds), each interface's in time order: `(id, interval start, bytes)`.
pub fn read(
    conn: &Connection,
    (from, to): (i64, i64),
    only: Option<i64>,
    mut wanted: impl FnMut(i64) -> bool,
    mut each: impl FnMut(i64, i64, Interval),
) -> Result<(), LedgerError> {
    let what = "reading packed 5-minute usage";
    if from >= to {
        return Ok(());
    }
    // Days that start before `from` may still hold intervals after it.
    let first = from.div_euclid(DAY_SECS).saturating_mul(DAY_SECS);
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, day, curve FROM usage_5m_days
             WHERE (?3 IS NULL OR id = ?3) AND day >= ?1 AND day < ?2 ORDER BY id, day",
        )
        .map_err(sql(what))?;
    let mut rows = stmt.query(params![first, to, only]).map_err(sql(what))?;
    while let Some(r) = rows.next().map_err(sql(what))? {
        let id: i64 = r.get(0).map_err(sql(what))?;
        if !wanted(id) {
            continue;
        }
        let day: i64 = r.get(1).map_err(sql(what))?;
        let bytes = r.get_ref(2).and_then(|v| v.as_blob().map_err(Into::into));
        let curve = day_curve::decode(day, bytes.map_err(sql(what))?).map_err(unreadable)?;
        for (start, iv) in curve {
            if (from..to).contains(&start) {
                each(id, start, iv);
            }
        }
    }
    Ok(())
}

/// Drop the packed intervals that start before `cut` (seconds), of the interfaces `ids`
/// names (all when `None`): whole days in one statement each, and the day the cut
/// splits keeps its later part. Returns the packs deleted or cut. The caller holds the
/// transaction, so the loose rows and the packs are cut together.
pub fn cut_before(conn: &Connection, cut: i64, ids: Option<&[i64]>) -> Result<usize, LedgerError> {
    let what = "pruning packed 5-minute usage";
    let split_day = day_of(cut);
    let mut changed = match ids {
        None => conn
            .execute(
                "DELETE FROM usage_5m_days WHERE day < ?1",
                params![split_day],
            )
            .map_err(sql(what))?,
        Some(ids) => {
            let mut n = 0;
            for id in ids {
                n += conn
                    .execute(
                        "DELETE FROM usage_5m_days WHERE id = ?1 AND day < ?2",
                        params![id, split_day],
                    )
                    .map_err(sql(what))?;
            }
            n
        }
    };
    if cut == split_day {
        return Ok(changed);
    }
    let mut split: Vec<(i64, Vec<u8>)> = Vec::new();
    {
        let mut stmt = conn
            .prepare_cached("SELECT id, curve FROM usage_5m_days WHERE day = ?1")
            .map_err(sql(what))?;
        let mut rows = stmt.query(params![split_day]).map_err(sql(what))?;
        while let Some(r) = rows.next().map_err(sql(what))? {
            let id: i64 = r.get(0).map_err(sql(what))?;
            if ids.is_none_or(|ids| ids.contains(&id)) {
                split.push((id, r.get(1).map_err(sql(what))?));
            }
        }
    }
    for (id, bytes) in split {
        let curve = day_curve::decode(split_day, &bytes).map_err(unreadable)?;
        if curve.iter().all(|(t, _)| *t >= cut) {
            continue;
        }
        let kept: Vec<_> = curve.into_iter().filter(|(t, _)| *t >= cut).collect();
        if kept.is_empty() {
            conn.execute(
                "DELETE FROM usage_5m_days WHERE id = ?1 AND day = ?2",
                params![id, split_day],
            )
            .map_err(sql(what))?;
        } else {
            conn.execute(
                "UPDATE usage_5m_days SET curve = ?3 WHERE id = ?1 AND day = ?2",
                params![
                    id,
                    split_day,
                    day_curve::encode(split_day, &kept).map_err(unreadable)?
                ],
            )
            .map_err(sql(what))?;
        }
        changed += 1;
    }
    Ok(changed)
}

fn unreadable(e: day_curve::DayCurveError) -> LedgerError {
    LedgerError::Sql {
        what: "reading packed 5-minute usage",
        source: e.into(),
    }
}
