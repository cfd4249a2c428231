//! The ledger's tables, and the step from each older version to the current one.

use rusqlite::{Connection, OptionalExtension, params};

use jiff::Timestamp;

use super::packed::{self, Entry, Open, State};
use super::{LedgerError, days, packed_quotas, spool, sql};
use crate::account::quota_counts::{QuotaRows, QuotaUsage};
use crate::model::calendar::Period;
use crate::model::ids::{InstanceId, RuleName};

/// Version of the schema below (`PRAGMA user_version`).
/// 1: buckets and counters, keyed by name. 2: + `quota_usage` and `events`.
/// 3: buckets keyed by (bucket, interface id); counters, open buckets and quota counts
///    packed into `state` (see [`super::packed`], [`super::packed_quotas`]).
/// 4: + `spool`, the deltas waiting for the quota store (see [`super::spool`]).
/// 5: + `spool.estimated`, which spooled samples were spread over an agent outage.
/// 6: + `usage_5m_days`, closed days of `usage_5m` packed (see [`super::days`]).
pub const VERSION: i64 = 6;

const TABLES: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS interfaces (
    id INTEGER PRIMARY KEY,
    interface TEXT NOT NULL,
    instance TEXT NOT NULL,
    UNIQUE (interface, instance)
);
CREATE TABLE IF NOT EXISTS state (
    id INTEGER PRIMARY KEY CHECK (id IN (1, 2)), -- 1: counters, 2: quota counts
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    instance TEXT,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_at ON events (at_ms);
";

/// Bucket tables: keyed time first, so a tick's new rows append at the B-tree's end
/// instead of landing one per page across it.
fn bucket_table(name: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {name} (
            bucket INTEGER NOT NULL,
            id INTEGER NOT NULL,
            rx INTEGER NOT NULL,
            tx INTEGER NOT NULL,
            estimated INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (bucket, id)
        ) WITHOUT ROWID;"
    )
}

/// Bring `conn` (at `version`) to [`VERSION`], in one transaction. `boot_id` is this
/// boot's, to mark which migrated counters were read in it.
pub fn upgrade(conn: &mut Connection, version: i64, boot_id: &str) -> Result<(), LedgerError> {
    let tx = conn.transaction().map_err(sql("begin"))?;
    let by_name = version > 0 && has_table(&tx, "counters")?;
    if by_name {
        for t in ["usage_5m", "usage_hour"] {
            tx.execute_batch(&format!("ALTER TABLE {t} RENAME TO {t}_by_name"))
                .map_err(sql("migrating buckets"))?;
        }
    }
    tx.execute_batch(TABLES).map_err(sql("creating tables"))?;
    tx.execute_batch(spool::TABLE)
        .map_err(sql("creating tables"))?;
    spool::add_estimated(&tx)?;
    spool::seed(&tx, Timestamp::now().as_millisecond())?;
    for t in ["usage_5m", "usage_hour"] {
        tx.execute_batch(&bucket_table(t))
            .map_err(sql("creating tables"))?;
    }
    tx.execute_batch(days::TABLE)
        .map_err(sql("creating tables"))?;
    if by_name {
        from_names(&tx, boot_id)?;
    }
    if version > 0 && has_table(&tx, "quota_usage")? {
        let counts = quota_rows(&tx)?.into_iter().collect();
        packed_quotas::write(&tx, &counts)?;
        tx.execute_batch("DROP TABLE quota_usage")
            .map_err(sql("migrating quota counts"))?;
    }
    tx.pragma_update(None, "user_version", VERSION)
        .map_err(sql("writing the schema version"))?;
    tx.commit().map_err(sql("commit"))
}

fn has_table(conn: &Connection, name: &str) -> Result<bool, LedgerError> {
    conn.query_row(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
        params![name],
        |_| Ok(()),
    )
    .optional()
    .map(|r| r.is_some())
    .map_err(sql("reading the schema"))
}

/// Versions 1 and 2 → 3: buckets re-keyed by interface id, counters into the state row.
fn from_names(tx: &Connection, boot_id: &str) -> Result<(), LedgerError> {
    let step = sql("migrating the ledger to schema 3");
    tx.execute_batch(
        "INSERT OR IGNORE INTO interfaces (interface, instance)
            SELECT interface, instance FROM counters
            UNION SELECT interface, instance FROM usage_5m_by_name
            UNION SELECT interface, instance FROM usage_hour_by_name;",
    )
    .map_err(&step)?;
    for t in ["usage_5m", "usage_hour"] {
        tx.execute_batch(&format!(
            "INSERT INTO {t} (bucket, id, rx, tx, estimated)
                SELECT u.bucket, i.id, u.rx, u.tx, u.estimated FROM {t}_by_name u
                JOIN interfaces i ON i.interface = u.interface AND i.instance = u.instance;
             DROP TABLE {t}_by_name;"
        ))
        .map_err(&step)?;
    }
    let last_tick_ms: Option<i64> = tx
        .query_row(
            "SELECT value FROM meta WHERE key = 'last_tick_ms'",
            [],
            |r| r.get::<_, String>(0),
        )
        .optional()
        .map_err(&step)?
        .and_then(|v| v.parse().ok());
    let mut stmt = tx
        .prepare(
            "SELECT i.id, c.ifindex, c.boot_id, c.rx, c.tx, c.at_ms FROM counters c
             JOIN interfaces i ON i.interface = c.interface AND i.instance = c.instance",
        )
        .map_err(&step)?;
    let entries = stmt
        .query_map([], |r| {
            Ok(Entry {
                id: r.get(0)?,
                ifindex: r.get::<_, i64>(1)? as u32,
                this_boot: r.get::<_, String>(2)? == boot_id,
                rx: r.get::<_, i64>(3)? as u64,
                tx: r.get::<_, i64>(4)? as u64,
                at_ms: r.get(5)?,
                // Version 2 wrote every bucket as it went: nothing is open.
                open: [Open::default(); 2],
            })
        })
        .map_err(&step)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(&step)?;
    drop(stmt);
    let at_ms = last_tick_ms
        .or_else(|| entries.iter().map(|e| e.at_ms).max())
        .unwrap_or(0);
    let state = State {
        boot_id: boot_id.to_owned(),
        at_ms,
        entries,
        pending: Vec::new(),
    };
    packed::write(tx, &state.encode()?)?;
    tx.execute_batch("DROP TABLE counters; DELETE FROM meta WHERE key = 'last_tick_ms';")
        .map_err(&step)
}

/// The quota counts of a version 2 ledger.
fn quota_rows(conn: &Connection) -> Result<QuotaRows, LedgerError> {
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
