//! The report spool: each tick's per-instance deltas, written in the same transaction as
//! the ledger's own bytes, waiting to be sent to the quota store.
//!
//! Being inside the ledger's transaction is what makes "the store's totals equal the
//! ledger's" hold across crashes: a tick is in both or in neither. Rows are numbered by
//! an AUTOINCREMENT key seeded from the creation time (milliseconds × 1000), so a
//! re-created ledger never reuses a sequence number the store has already recorded.
//! The reporter reads the rows from its own read-only connection (reads do not disturb
//! the agent's `data_version`); the agent deletes what the store acknowledged during its
//! next commit.

use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};

use super::{LedgerError, sql};

pub(super) const TABLE: &str = "
CREATE TABLE IF NOT EXISTS spool (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    payload BLOB NOT NULL,
    estimated BLOB
);";

/// Schema 5: which of a row's samples are estimated (the payload's encoding has no room
/// for a new field: postcard is positional, and rows of the older agent are still read).
pub(super) fn add_estimated(conn: &Connection) -> Result<(), LedgerError> {
    let has: bool = conn
        .query_row(
            "SELECT COUNT(*) FROM pragma_table_info('spool') WHERE name = 'estimated'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n > 0)
        .map_err(sql("reading the spool's columns"))?;
    if !has {
        conn.execute_batch("ALTER TABLE spool ADD COLUMN estimated BLOB")
            .map_err(sql("migrating the spool"))?;
    }
    Ok(())
}

/// Start the numbering at `now_ms` × 1000 if the spool has never numbered anything.
pub(super) fn seed(conn: &Connection, now_ms: i64) -> Result<(), LedgerError> {
    conn.execute(
        "INSERT INTO sqlite_sequence (name, seq)
         SELECT 'spool', ?1 WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'spool')",
        params![now_ms.saturating_mul(1000)],
    )
    .map_err(sql("seeding the spool"))?;
    Ok(())
}

/// One instance's bytes in one tick, as spooled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolSample {
    /// The end of the tick, Unix milliseconds.
    pub at_ms: i64,
    pub instance: String,
    pub upload: u64,
    pub download: u64,
}

/// What a tick asks the ledger to spool with its commit.
#[derive(Debug, Clone, Default)]
pub struct SpoolWrite {
    pub samples: Vec<SpoolSample>,
    /// Indices into `samples` of those whose bytes were spread over an agent outage
    /// (one sample per 5-minute interval of the gap): the store leaves them out of
    /// percentiles as the ledger does.
    pub estimated: Vec<u32>,
    /// Rows up to this sequence number were acknowledged by the store: delete them.
    pub acked_through: u64,
    /// Refuse to grow the spool beyond this many bytes of payload.
    pub max_bytes: u64,
}

/// What happened to a tick's spool write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spooled {
    /// The spool was full: this tick's samples were not kept for the store.
    pub dropped: bool,
    /// Payload bytes waiting after this commit.
    pub bytes: u64,
}

pub(super) fn total_bytes(conn: &Connection) -> Result<u64, LedgerError> {
    conn.query_row(
        "SELECT COALESCE(SUM(length(payload)), 0) FROM spool",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n.max(0) as u64)
    .map_err(sql("measuring the spool"))
}

/// Delete acknowledged rows and append this tick's; the spool's bytes after.
pub(super) fn write(conn: &Connection, w: &SpoolWrite, bytes: u64) -> Result<Spooled, LedgerError> {
    let mut bytes = bytes;
    if w.acked_through > 0 {
        let mut del = conn
            .prepare_cached("DELETE FROM spool WHERE seq <= ?1 RETURNING length(payload)")
            .map_err(sql("trimming the spool"))?;
        let freed: Vec<i64> = del
            .query_map(
                params![i64::try_from(w.acked_through).unwrap_or(i64::MAX)],
                |r| r.get(0),
            )
            .and_then(|rows| rows.collect())
            .map_err(sql("trimming the spool"))?;
        bytes = bytes.saturating_sub(freed.iter().map(|n| n.max(&0).unsigned_abs()).sum());
    }
    if w.samples.is_empty() {
        return Ok(Spooled {
            dropped: false,
            bytes,
        });
    }
    // Rows of at most ROW_SAMPLES samples: the store takes a report of whole rows, and a
    // tick after an outage can hold many samples per instance.
    let mut rows = Vec::new();
    for (k, chunk) in w.samples.chunks(ROW_SAMPLES).enumerate() {
        let base = (k * ROW_SAMPLES) as u32;
        let marks: Vec<u32> = w
            .estimated
            .iter()
            .filter(|&&i| i >= base && i - base < chunk.len() as u32)
            .map(|i| i - base)
            .collect();
        let marks = if marks.is_empty() {
            None
        } else {
            Some(encode(&marks)?)
        };
        rows.push((encode(chunk)?, marks));
    }
    let size: u64 = rows.iter().map(|(p, _)| p.len() as u64).sum();
    if bytes.saturating_add(size) > w.max_bytes {
        return Ok(Spooled {
            dropped: true,
            bytes,
        });
    }
    let mut insert = conn
        .prepare_cached("INSERT INTO spool (payload, estimated) VALUES (?1, ?2)")
        .map_err(sql("spooling"))?;
    for (payload, marks) in &rows {
        insert
            .execute(params![payload, marks])
            .map_err(sql("spooling"))?;
    }
    Ok(Spooled {
        dropped: false,
        bytes: bytes + size,
    })
}

fn encode<T: Serialize + ?Sized>(what: &T) -> Result<Vec<u8>, LedgerError> {
    postcard::to_stdvec(what).map_err(|e| LedgerError::Sql {
        what: "encoding the spool",
        source: e.into(),
    })
}

/// The most samples one spool row holds (about 0.5 MB as the report's JSON).
pub const ROW_SAMPLES: usize = 4096;

/// One spool row as the reporter reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolRow {
    pub seq: u64,
    pub samples: Vec<SpoolSample>,
    /// Indices into `samples` of the estimated ones.
    pub estimated: Vec<u32>,
}

/// Up to `limit` rows after `after`, oldest first (the reporter's read).
pub fn pending(conn: &Connection, after: u64, limit: usize) -> Result<Vec<SpoolRow>, LedgerError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT seq, payload, estimated FROM spool WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )
        .map_err(sql("reading the spool"))?;
    type Raw = (i64, Vec<u8>, Option<Vec<u8>>);
    let rows: Vec<Raw> = stmt
        .query_map(
            params![
                i64::try_from(after).unwrap_or(i64::MAX),
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .and_then(|rows| rows.collect())
        .map_err(sql("reading the spool"))?;
    rows.into_iter()
        .map(|(seq, payload, estimated)| {
            let bad = |e: postcard::Error| LedgerError::Sql {
                what: "decoding the spool",
                source: format!("row {seq}: {e}").into(),
            };
            let samples = postcard::from_bytes(&payload).map_err(bad)?;
            let estimated = match estimated {
                Some(b) => postcard::from_bytes(&b).map_err(bad)?,
                None => Vec::new(),
            };
            Ok(SpoolRow {
                seq: seq.max(0) as u64,
                samples,
                estimated,
            })
        })
        .collect()
}
