//! The quota store on SQLite: the embedded default (`/var/lib/sluice/quota.db`).
//!
//! Every check-and-reserve is one `BEGIN IMMEDIATE` transaction: SQLite takes the write
//! lock before reading the standings, so two requests cannot both read "1 of 2 used" and
//! both reserve the last one. `synchronous = FULL`: a reservation the caller was told
//! about survives a power cut.

use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::model::{
    Deltas, Limit, LimitChain, Membership, Resource, Scope, Standing, StoreError, check,
};
use crate::names::{InstanceId, Label};

const SCHEMA_VERSION: i64 = 1;
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS limits (
    scope_kind TEXT NOT NULL,
    scope TEXT NOT NULL,
    resource TEXT NOT NULL,
    hard_limit INTEGER NOT NULL,
    PRIMARY KEY (scope_kind, scope, resource)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS projects (id TEXT PRIMARY KEY, class TEXT);
CREATE TABLE IF NOT EXISTS instances (id TEXT PRIMARY KEY, project TEXT, class TEXT);
CREATE TABLE IF NOT EXISTS usages (
    instance TEXT NOT NULL,
    resource TEXT NOT NULL,
    in_use INTEGER NOT NULL,
    PRIMARY KEY (instance, resource)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reservations (
    id TEXT NOT NULL,
    instance TEXT NOT NULL,
    resource TEXT NOT NULL,
    delta INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    PRIMARY KEY (id, resource)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS reservations_instance ON reservations (instance, resource);
CREATE INDEX IF NOT EXISTS reservations_expiry ON reservations (expires_ms);
";

fn db(what: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |e| StoreError::Database {
        what,
        reason: e.to_string(),
    }
}

/// A reservation's id: random, unguessable, 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReservationId(String);

impl ReservationId {
    fn random() -> Result<ReservationId, StoreError> {
        let mut bytes = [0u8; 16];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
            .map_err(|e| StoreError::Database {
                what: "making a reservation id",
                reason: e.to_string(),
            })?;
        Ok(ReservationId(hex::encode(bytes)))
    }

    pub fn parse(s: &str) -> Result<ReservationId, StoreError> {
        if s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(ReservationId(s.to_ascii_lowercase()))
        } else {
            Err(StoreError::Invalid {
                field: "reservation".into(),
                reason: format!("{s:?} is not a reservation id (32 hex digits)"),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub struct SqliteStore {
    conn: Connection,
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Database {
                what: "creating the data directory",
                reason: format!("{}: {e}", dir.display()),
            })?;
        }
        let conn = Connection::open(path).map_err(db("opening"))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .and_then(|()| conn.pragma_update(None, "synchronous", "FULL"))
            .and_then(|()| conn.busy_timeout(Duration::from_secs(10)))
            .map_err(db("opening"))?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(db("reading the schema version"))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Database {
                what: "opening",
                reason: format!(
                    "schema version {version} is newer than this sluice knows ({SCHEMA_VERSION})"
                ),
            });
        }
        conn.execute_batch(SCHEMA).map_err(db("creating tables"))?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(db("writing the schema version"))?;
        Ok(SqliteStore { conn })
    }

    /// Set (`Some`) or remove (`None`) the limit of `resource` at `scope`.
    pub fn set_limit(
        &self,
        scope: &Scope,
        resource: &Resource,
        limit: Option<Limit>,
    ) -> Result<(), StoreError> {
        let (kind, name) = scope.key();
        match limit {
            Some(l) => self.conn.execute(
                "INSERT INTO limits (scope_kind, scope, resource, hard_limit) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (scope_kind, scope, resource) DO UPDATE SET hard_limit = excluded.hard_limit",
                params![kind, name, resource.as_str(), l.to_i64()],
            ),
            None => self.conn.execute(
                "DELETE FROM limits WHERE scope_kind = ?1 AND scope = ?2 AND resource = ?3",
                params![kind, name, resource.as_str()],
            ),
        }
        .map_err(db("writing a limit"))?;
        Ok(())
    }

    /// Put an instance in a project and/or class (creating its record).
    pub fn set_membership(&self, instance: &InstanceId, m: &Membership) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO instances (id, project, class) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET project = excluded.project, class = excluded.class",
                params![
                    instance.as_str(),
                    m.project.as_ref().map(Label::as_str),
                    m.class.as_ref().map(Label::as_str)
                ],
            )
            .map_err(db("writing an instance"))?;
        Ok(())
    }

    /// Give a project a quota class.
    pub fn set_project_class(
        &self,
        project: &Label,
        class: Option<&Label>,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO projects (id, class) VALUES (?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET class = excluded.class",
                params![project.as_str(), class.map(Label::as_str)],
            )
            .map_err(db("writing a project"))?;
        Ok(())
    }

    /// Each resource's limit (resolved), use and reservations for `instance`: every
    /// resource that has a limit anywhere in its chain or any use.
    pub fn standings(&self, instance: &InstanceId) -> Result<Vec<Standing>, StoreError> {
        standings(&self.conn, instance, Timestamp::now())
    }

    /// Would `deltas` fit? Nothing is reserved.
    pub fn limit_check(&self, instance: &InstanceId, deltas: &Deltas) -> Result<(), StoreError> {
        check(&self.standings(instance)?, deltas).map_err(StoreError::OverQuota)
    }

    /// Check and reserve `deltas` in one transaction; the reservation lapses after
    /// `expires_in` unless committed or rolled back first.
    pub fn reserve(
        &mut self,
        instance: &InstanceId,
        deltas: &Deltas,
        expires_in: Duration,
    ) -> Result<ReservationId, StoreError> {
        let now = Timestamp::now();
        let expires = now.as_millisecond()
            + i64::try_from(expires_in.as_millis()).map_err(|_| StoreError::Invalid {
                field: "expires_in".into(),
                reason: "too long".into(),
            })?;
        let id = ReservationId::random()?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db("begin"))?;
        check(&standings(&tx, instance, now)?, deltas).map_err(StoreError::OverQuota)?;
        {
            let mut put = tx
                .prepare_cached(
                    "INSERT INTO reservations (id, instance, resource, delta, expires_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(db("writing a reservation"))?;
            for (resource, delta) in deltas {
                put.execute(params![
                    id.as_str(),
                    instance.as_str(),
                    resource.as_str(),
                    delta,
                    expires
                ])
                .map_err(db("writing a reservation"))?;
            }
        }
        tx.commit().map_err(db("commit"))?;
        Ok(id)
    }

    /// Turn a reservation into use.
    pub fn commit(&mut self, id: &ReservationId) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db("begin"))?;
        let rows = take_reservation(&tx, id)?;
        for (instance, resource, delta) in rows {
            tx.execute(
                "INSERT INTO usages (instance, resource, in_use) VALUES (?1, ?2, MAX(?3, 0))
                 ON CONFLICT (instance, resource) DO UPDATE SET in_use = MAX(in_use + ?3, 0)",
                params![instance, resource, delta],
            )
            .map_err(db("writing usage"))?;
        }
        tx.commit().map_err(db("commit"))
    }

    /// Drop a reservation unused.
    pub fn rollback(&mut self, id: &ReservationId) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db("begin"))?;
        take_reservation(&tx, id)?;
        tx.commit().map_err(db("commit"))
    }

    /// Drop reservations that lapsed before `now`; how many.
    pub fn expire(&self, now: Timestamp) -> Result<usize, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("DELETE FROM reservations WHERE expires_ms <= ?1 RETURNING id")
            .map_err(db("expiring reservations"))?;
        let ids: std::collections::HashSet<String> = stmt
            .query_map(params![now.as_millisecond()], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(db("expiring reservations"))?;
        Ok(ids.len())
    }

    /// The panel's real count replaces ours (the cure for drift).
    pub fn usage_set(
        &self,
        instance: &InstanceId,
        resource: &Resource,
        in_use: u64,
    ) -> Result<(), StoreError> {
        let n = i64::try_from(in_use).map_err(|_| StoreError::Invalid {
            field: "in_use".into(),
            reason: "too large".into(),
        })?;
        self.conn
            .execute(
                "INSERT INTO usages (instance, resource, in_use) VALUES (?1, ?2, ?3)
                 ON CONFLICT (instance, resource) DO UPDATE SET in_use = excluded.in_use",
                params![instance.as_str(), resource.as_str(), n],
            )
            .map_err(db("writing usage"))?;
        Ok(())
    }

    /// Every instance's use of `resource` back to zero; how many were reset.
    pub fn usage_reset(&self, resource: &Resource) -> Result<usize, StoreError> {
        self.conn
            .execute(
                "UPDATE usages SET in_use = 0 WHERE resource = ?1 AND in_use <> 0",
                params![resource.as_str()],
            )
            .map_err(db("resetting usage"))
    }

    /// Forget an instance: its use, reservations, limits and membership.
    pub fn destroy_instance(&mut self, instance: &InstanceId) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(db("begin"))?;
        let id = instance.as_str();
        for text in [
            "DELETE FROM usages WHERE instance = ?1",
            "DELETE FROM reservations WHERE instance = ?1",
            "DELETE FROM limits WHERE scope_kind = 'instance' AND scope = ?1",
            "DELETE FROM instances WHERE id = ?1",
        ] {
            tx.execute(text, params![id])
                .map_err(db("destroying an instance"))?;
        }
        tx.commit().map_err(db("commit"))
    }

    /// Forget a project: its limits and class; its instances leave it (they keep their
    /// own use and fall back to their class and the default).
    pub fn destroy_project(&mut self, project: &Label) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(db("begin"))?;
        let id = project.as_str();
        tx.execute(
            "DELETE FROM limits WHERE scope_kind = 'project' AND scope = ?1",
            params![id],
        )
        .and_then(|_| tx.execute("DELETE FROM projects WHERE id = ?1", params![id]))
        .and_then(|_| {
            tx.execute(
                "UPDATE instances SET project = NULL WHERE project = ?1",
                params![id],
            )
        })
        .map_err(db("destroying a project"))?;
        tx.commit().map_err(db("commit"))
    }

    /// The lowest limit `instance` may be given for `resource` without being over it
    /// at once: what it uses plus what it has reserved. (Any higher value, or -1, fits.)
    pub fn settable_min(
        &self,
        instance: &InstanceId,
        resource: &Resource,
    ) -> Result<i64, StoreError> {
        Ok(self
            .standings(instance)?
            .into_iter()
            .find(|s| &s.resource == resource)
            .map_or(0, |s| s.in_use.max(0) + s.reserved.max(0)))
    }
}

/// Remove a reservation's rows, returning them; unknown id: not found.
fn take_reservation(
    conn: &Connection,
    id: &ReservationId,
) -> Result<Vec<(String, String, i64)>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT instance, resource, delta FROM reservations WHERE id = ?1")
        .map_err(db("reading a reservation"))?;
    let rows: Vec<(String, String, i64)> = stmt
        .query_map(params![id.as_str()], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .and_then(|rows| rows.collect())
        .map_err(db("reading a reservation"))?;
    if rows.is_empty() {
        return Err(StoreError::NotFound {
            what: "reservation",
            name: id.as_str().to_owned(),
        });
    }
    conn.execute(
        "DELETE FROM reservations WHERE id = ?1",
        params![id.as_str()],
    )
    .map_err(db("removing a reservation"))?;
    Ok(rows)
}

fn standings(
    conn: &Connection,
    instance: &InstanceId,
    now: Timestamp,
) -> Result<Vec<Standing>, StoreError> {
    let member: Option<(Option<String>, Option<String>)> = conn
        .query_row(
            "SELECT i.project, COALESCE(i.class, p.class) FROM instances i
             LEFT JOIN projects p ON p.id = i.project WHERE i.id = ?1",
            params![instance.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(db("reading an instance"))?;
    let (project, class) = member.unwrap_or_default();
    let mut chains: std::collections::BTreeMap<String, LimitChain> = Default::default();
    {
        let mut stmt = conn
            .prepare_cached(
                "SELECT scope_kind, resource, hard_limit FROM limits
                 WHERE (scope_kind = 'instance' AND scope = ?1)
                    OR (scope_kind = 'project' AND scope = ?2)
                    OR (scope_kind = 'class' AND scope = ?3)
                    OR scope_kind = 'default'",
            )
            .map_err(db("reading limits"))?;
        let rows = stmt
            .query_map(params![instance.as_str(), project, class], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(db("reading limits"))?;
        for row in rows {
            let (kind, resource, v) = row.map_err(db("reading limits"))?;
            let limit = Limit::from_i64(v).map_err(|reason| StoreError::Database {
                what: "reading limits",
                reason,
            })?;
            let c = chains.entry(resource).or_default();
            match kind.as_str() {
                "instance" => c.instance = Some(limit),
                "project" => c.project = Some(limit),
                "class" => c.class = Some(limit),
                _ => c.default = Some(limit),
            }
        }
    }
    let mut use_of: std::collections::BTreeMap<String, (i64, i64)> = Default::default();
    {
        let mut stmt = conn
            .prepare_cached(
                "SELECT resource, in_use, 0 FROM usages WHERE instance = ?1
                 UNION ALL
                 SELECT resource, 0, SUM(MAX(delta, 0)) FROM reservations
                 WHERE instance = ?1 AND expires_ms > ?2 GROUP BY resource",
            )
            .map_err(db("reading usage"))?;
        let rows = stmt
            .query_map(params![instance.as_str(), now.as_millisecond()], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(db("reading usage"))?;
        for row in rows {
            let (resource, in_use, reserved) = row.map_err(db("reading usage"))?;
            let e = use_of.entry(resource).or_default();
            e.0 += in_use;
            e.1 += reserved;
        }
    }
    let names: std::collections::BTreeSet<&String> = chains.keys().chain(use_of.keys()).collect();
    let mut out = Vec::new();
    for name in names {
        let Ok(resource) = Label::new(name) else {
            continue;
        };
        let (limit, from) = chains.get(name).copied().unwrap_or_default().resolve();
        let (in_use, reserved) = use_of.get(name).copied().unwrap_or_default();
        out.push(Standing {
            resource,
            limit,
            limit_from: from,
            in_use,
            reserved,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
