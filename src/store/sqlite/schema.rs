//! The store's SQLite schema and its versioned migrations.
//!
//! `MIGRATIONS[i]` takes a database from `user_version` i to i + 1; opening applies the
//! missing ones in one transaction, so a store is never left half-migrated.

use rusqlite::Connection;

use super::db;
use crate::store::model::{StoreError, cause};

const MIGRATIONS: [&str; 12] = [
    // 1: counted resources.
    "
CREATE TABLE limits (
    scope_kind TEXT NOT NULL,
    scope TEXT NOT NULL,
    resource TEXT NOT NULL,
    hard_limit INTEGER NOT NULL,
    PRIMARY KEY (scope_kind, scope, resource)
) WITHOUT ROWID;
CREATE TABLE projects (id TEXT PRIMARY KEY, class TEXT);
CREATE TABLE instances (id TEXT PRIMARY KEY, project TEXT, class TEXT);
CREATE TABLE usages (
    instance TEXT NOT NULL,
    resource TEXT NOT NULL,
    in_use INTEGER NOT NULL,
    PRIMARY KEY (instance, resource)
) WITHOUT ROWID;
CREATE TABLE reservations (
    id TEXT NOT NULL,
    instance TEXT NOT NULL,
    resource TEXT NOT NULL,
    delta INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    PRIMARY KEY (id, resource)
) WITHOUT ROWID;
CREATE INDEX reservations_instance ON reservations (instance, resource);
CREATE INDEX reservations_expiry ON reservations (expires_ms);
",
    // 2: traffic quotas and usage, agent reports, tokens.
    "
CREATE TABLE traffic_quotas (
    scope_kind TEXT NOT NULL,
    scope TEXT NOT NULL,
    resource TEXT NOT NULL,
    period TEXT NOT NULL,
    limit_bytes INTEGER NOT NULL,
    on_exceed TEXT NOT NULL,
    upload_rate INTEGER,
    download_rate INTEGER,
    PRIMARY KEY (scope_kind, scope, resource, period)
) WITHOUT ROWID;
CREATE TABLE traffic_hours (
    instance TEXT NOT NULL,
    hour_ms INTEGER NOT NULL,
    upload INTEGER NOT NULL,
    download INTEGER NOT NULL,
    PRIMARY KEY (instance, hour_ms)
) WITHOUT ROWID;
CREATE TABLE applied_reports (
    agent TEXT NOT NULL,
    seq INTEGER NOT NULL,
    applied_ms INTEGER NOT NULL,
    PRIMARY KEY (agent, seq)
) WITHOUT ROWID;
CREATE INDEX applied_reports_age ON applied_reports (applied_ms);
CREATE TABLE agents (
    id TEXT PRIMARY KEY,
    last_report_ms INTEGER NOT NULL,
    last_seq INTEGER NOT NULL
);
CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    digest BLOB NOT NULL,
    role TEXT NOT NULL,
    host TEXT,
    created_ms INTEGER NOT NULL,
    revoked_ms INTEGER
);
",
    // 3: what the store checks agents' reports against: each (agent, instance)'s
    // latest sample time (keyed instance first: a report reads every host's marks of
    // its instances), and how many samples overlapped another host's for the same
    // instance (a live migration does that).
    "
CREATE TABLE report_marks (
    agent TEXT NOT NULL,
    instance TEXT NOT NULL,
    last_at_ms INTEGER NOT NULL,
    PRIMARY KEY (instance, agent)
) WITHOUT ROWID;
CREATE TABLE report_counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
",
    // 4: each host's share of an instance's hourly traffic, so an agent can be told
    // what the rest of the fleet counted (a live-migrated instance's quota goes on
    // where it left off). Hours reported before this migration have no share here.
    "
CREATE TABLE traffic_by_agent (
    instance TEXT NOT NULL,
    hour_ms INTEGER NOT NULL,
    agent TEXT NOT NULL,
    upload INTEGER NOT NULL,
    download INTEGER NOT NULL,
    PRIMARY KEY (instance, hour_ms, agent)
) WITHOUT ROWID;
",
    // 5: a monthly traffic quota's billing day (its months start on it).
    "
ALTER TABLE traffic_quotas ADD COLUMN reset_day INTEGER NOT NULL DEFAULT 1;
",
    // 6: traffic bought on top of a quota for one period (they end with it).
    "
CREATE TABLE traffic_topups (
    id TEXT PRIMARY KEY,
    instance TEXT NOT NULL,
    resource TEXT NOT NULL,
    period TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE INDEX traffic_topups_instance ON traffic_topups (instance, end_ms);
",
    // 7: a project's pooled traffic quota (on the sum of its instances), and the
    // project's members found by project.
    "
ALTER TABLE traffic_quotas ADD COLUMN pool INTEGER NOT NULL DEFAULT 0;
CREATE INDEX instances_project ON instances (project);
",
    // 8: each instance's traffic in UTC-aligned 5-minute intervals, every host's summed
    // (a migrated instance has one curve): what its percentiles are read from.
    "
CREATE TABLE traffic_5m (
    instance TEXT NOT NULL,
    bucket_ms INTEGER NOT NULL,
    upload INTEGER NOT NULL,
    download INTEGER NOT NULL,
    PRIMARY KEY (instance, bucket_ms)
) WITHOUT ROWID;
",
    // 9: each instance's closed billing months, written once, chained by hash.
    "
CREATE TABLE statements (
    instance TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    start TEXT NOT NULL,
    body TEXT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (instance, start_ms)
);
",
    // 10: a 5-minute interval whose bytes an agent spread over its outage.
    "
ALTER TABLE traffic_5m ADD COLUMN estimated INTEGER NOT NULL DEFAULT 0;
",
    // 11: a committed-rate (95th percentile) quota's direction and commit in bit/s.
    "
ALTER TABLE traffic_quotas ADD COLUMN direction TEXT;
ALTER TABLE traffic_quotas ADD COLUMN commit_bps INTEGER;
",
    // 12: closed UTC days of 5-minute traffic, one packed value per instance and day
    // (model::day_curve): a month's percentiles read 31 rows per instance, not 8,928.
    "
CREATE TABLE traffic_days (
    instance TEXT NOT NULL,
    day_ms INTEGER NOT NULL,
    curve BLOB NOT NULL,
    PRIMARY KEY (instance, day_ms)
) WITHOUT ROWID;
",
];

pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// Bring `conn`'s schema to [`VERSION`]; refuse a newer one.
pub fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(db("reading the schema version"))?;
    if version > VERSION {
        return Err(StoreError::Database {
            what: "opening",
            source: cause(format!(
                "schema version {version} is newer than this sluice knows ({VERSION})"
            )),
        });
    }
    if version == VERSION {
        return Ok(());
    }
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(db("migrating"))?;
    let run = || -> Result<(), rusqlite::Error> {
        // Another process may have migrated while we waited for the lock.
        let now: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for step in MIGRATIONS.iter().skip(now.max(0) as usize) {
            conn.execute_batch(step)?;
        }
        conn.pragma_update(None, "user_version", VERSION)
    };
    match run() {
        Ok(()) => conn.execute_batch("COMMIT").map_err(db("migrating")),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(db("migrating")(e))
        }
    }
}
