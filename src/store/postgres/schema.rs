//! The PostgreSQL schema and its versioned migrations (`sluice_schema.version`).
//!
//! Several store processes may start at once against one cluster: migrating takes a
//! transaction-scoped advisory lock first, so exactly one applies each step.

use deadpool_postgres::Object;

use super::pg;
use crate::store::model::{StoreError, cause};

/// `MIGRATIONS[i]` takes the schema from version i to i + 1.
const MIGRATIONS: [&str; 11] = [
    "
CREATE TABLE limits (
    scope_kind TEXT NOT NULL,
    scope TEXT NOT NULL,
    resource TEXT NOT NULL,
    hard_limit BIGINT NOT NULL,
    PRIMARY KEY (scope_kind, scope, resource)
);
CREATE TABLE projects (id TEXT PRIMARY KEY, class TEXT);
CREATE TABLE instances (id TEXT PRIMARY KEY, project TEXT, class TEXT);
CREATE TABLE usages (
    instance TEXT NOT NULL,
    resource TEXT NOT NULL,
    in_use BIGINT NOT NULL,
    PRIMARY KEY (instance, resource)
);
CREATE TABLE reservations (
    id TEXT NOT NULL,
    instance TEXT NOT NULL,
    resource TEXT NOT NULL,
    delta BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    PRIMARY KEY (id, resource)
);
CREATE INDEX reservations_instance ON reservations (instance, resource);
CREATE INDEX reservations_expiry ON reservations (expires_ms);
CREATE TABLE traffic_quotas (
    scope_kind TEXT NOT NULL,
    scope TEXT NOT NULL,
    resource TEXT NOT NULL,
    period TEXT NOT NULL,
    limit_bytes BIGINT NOT NULL,
    on_exceed TEXT NOT NULL,
    upload_rate BIGINT,
    download_rate BIGINT,
    PRIMARY KEY (scope_kind, scope, resource, period)
);
CREATE TABLE traffic_hours (
    instance TEXT NOT NULL,
    hour_ms BIGINT NOT NULL,
    upload BIGINT NOT NULL,
    download BIGINT NOT NULL,
    PRIMARY KEY (instance, hour_ms)
);
CREATE TABLE applied_reports (
    agent TEXT NOT NULL,
    seq BIGINT NOT NULL,
    applied_ms BIGINT NOT NULL,
    PRIMARY KEY (agent, seq)
);
CREATE INDEX applied_reports_age ON applied_reports (applied_ms);
CREATE TABLE agents (
    id TEXT PRIMARY KEY,
    last_report_ms BIGINT NOT NULL,
    last_seq BIGINT NOT NULL
);
CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    digest BYTEA NOT NULL,
    role TEXT NOT NULL,
    host TEXT,
    created_ms BIGINT NOT NULL,
    revoked_ms BIGINT
);
",
    // 2: what the store checks agents' reports against: each (agent, instance)'s
    // latest sample time (keyed instance first: a report reads every host's marks of
    // its instances), and how many samples overlapped another host's for the same
    // instance (a live migration does that).
    "
CREATE TABLE report_marks (
    agent TEXT NOT NULL,
    instance TEXT NOT NULL,
    last_at_ms BIGINT NOT NULL,
    PRIMARY KEY (instance, agent)
);
CREATE TABLE report_counters (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
",
    // 3: each host's share of an instance's hourly traffic, so an agent can be told
    // what the rest of the fleet counted (a live-migrated instance's quota goes on
    // where it left off). Hours reported before this migration have no share here.
    "
CREATE TABLE traffic_by_agent (
    instance TEXT NOT NULL,
    hour_ms BIGINT NOT NULL,
    agent TEXT NOT NULL,
    upload BIGINT NOT NULL,
    download BIGINT NOT NULL,
    PRIMARY KEY (instance, hour_ms, agent)
);
",
    // 4: a monthly traffic quota's billing day (its months start on it).
    "
ALTER TABLE traffic_quotas ADD COLUMN reset_day BIGINT NOT NULL DEFAULT 1;
",
    // 5: traffic bought on top of a quota for one period (they end with it).
    "
CREATE TABLE traffic_topups (
    id TEXT PRIMARY KEY,
    instance TEXT NOT NULL,
    resource TEXT NOT NULL,
    period TEXT NOT NULL,
    start_ms BIGINT NOT NULL,
    end_ms BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE INDEX traffic_topups_instance ON traffic_topups (instance, end_ms);
",
    // 6: a project's pooled traffic quota (on the sum of its instances), and the
    // project's members found by project.
    "
ALTER TABLE traffic_quotas ADD COLUMN pool BIGINT NOT NULL DEFAULT 0;
CREATE INDEX instances_project ON instances (project);
",
    // 7: each instance's traffic in UTC-aligned 5-minute intervals, every host's summed
    // (a migrated instance has one curve): what its percentiles are read from.
    "
CREATE TABLE traffic_5m (
    instance TEXT NOT NULL,
    bucket_ms BIGINT NOT NULL,
    upload BIGINT NOT NULL,
    download BIGINT NOT NULL,
    PRIMARY KEY (instance, bucket_ms)
);
",
    // 8: each instance's closed billing months, written once, chained by hash.
    "
CREATE TABLE statements (
    instance TEXT NOT NULL,
    start_ms BIGINT NOT NULL,
    start TEXT NOT NULL,
    body TEXT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (instance, start_ms)
);
",
    // 9: a 5-minute interval whose bytes an agent spread over its outage.
    "
ALTER TABLE traffic_5m ADD COLUMN estimated BIGINT NOT NULL DEFAULT 0;
",
    // 10: a committed-rate (95th percentile) quota's direction and commit in bit/s.
    "
ALTER TABLE traffic_quotas ADD COLUMN direction TEXT;
ALTER TABLE traffic_quotas ADD COLUMN commit_bps BIGINT;
",
    // 11: closed UTC days of 5-minute traffic, one packed value per instance and day
    // (model::day_curve): a month's percentiles read 31 rows per instance, not 8,928.
    "
CREATE TABLE traffic_days (
    instance TEXT NOT NULL,
    day_ms BIGINT NOT NULL,
    curve BYTEA NOT NULL,
    PRIMARY KEY (instance, day_ms)
);
",
];

pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// An arbitrary constant: the advisory lock key of sluice's migrations.
const LOCK_KEY: i64 = 0x51_1ce0;

pub async fn migrate(client: &mut Object) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(pg("migrating"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(pg("migrating"))?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS sluice_schema (version BIGINT NOT NULL)")
        .await
        .map_err(pg("migrating"))?;
    let version: i64 = tx
        .query_opt("SELECT version FROM sluice_schema", &[])
        .await
        .map_err(pg("migrating"))?
        .map_or(0, |r| r.get(0));
    if version > VERSION {
        return Err(StoreError::Database {
            what: "opening",
            source: cause(format!(
                "schema version {version} is newer than this sluice knows ({VERSION})"
            )),
        });
    }
    for step in MIGRATIONS.iter().skip(version.max(0) as usize) {
        tx.batch_execute(step).await.map_err(pg("migrating"))?;
    }
    if version < VERSION {
        tx.execute("DELETE FROM sluice_schema", &[])
            .await
            .map_err(pg("migrating"))?;
        tx.execute(
            "INSERT INTO sluice_schema (version) VALUES ($1)",
            &[&VERSION],
        )
        .await
        .map_err(pg("migrating"))?;
    }
    tx.commit().await.map_err(pg("migrating"))
}
