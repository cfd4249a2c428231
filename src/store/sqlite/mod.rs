//! The quota store on SQLite: the embedded default (`/var/lib/sluice/quota.db`).
//!
//! Every check-and-reserve is one `BEGIN IMMEDIATE` transaction: SQLite takes the write
//! lock before reading the standings, so two requests cannot both read "1 of 2 used" and
//! both reserve the last one. `synchronous = FULL`: a reservation the caller was told
//! about survives a power cut.

use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;
use rusqlite::Connection;

use super::model::{
    Deltas, Limit, Membership, ReservationId, Resource, Scope, Standing, StoreError, check,
};
use crate::model::ids::{InstanceId, Label};
use crate::model::token::{Role, Token, TokenId, TokenInfo};

pub(crate) fn db(what: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |e| StoreError::Database {
        what,
        reason: e.to_string(),
    }
}

/// Open (creating if needed) and migrate a store database, with the store's pragmas.
pub fn open_connection(path: &Path) -> Result<Connection, StoreError> {
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
    schema::migrate(&conn)?;
    Ok(conn)
}

/// Run `f` in a `BEGIN IMMEDIATE` transaction: committed if it returns `Ok`, rolled
/// back otherwise. Immediate: the write lock is taken before anything is read.
pub fn in_tx<R>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<R, StoreError>,
) -> Result<R, StoreError> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(db("begin"))?;
    match f(conn) {
        Ok(r) => match conn.execute_batch("COMMIT") {
            Ok(()) => Ok(r),
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(db("commit")(e))
            }
        },
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// The store on one SQLite connection, each call its own transaction: what the CLI and
/// the engine tests use. The HTTP service runs the same operations through
/// [`writer::Writer`], which commits many requests at once.
pub struct SqliteStore {
    conn: Connection,
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        Ok(SqliteStore {
            conn: open_connection(path)?,
        })
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    fn tx<R>(&self, f: impl FnOnce(&Connection) -> Result<R, StoreError>) -> Result<R, StoreError> {
        in_tx(&self.conn, f)
    }

    /// Set (`Some`) or remove (`None`) the limit of `resource` at `scope`.
    pub fn set_limit(
        &self,
        scope: &Scope,
        resource: &Resource,
        limit: Option<Limit>,
    ) -> Result<(), StoreError> {
        self.tx(|c| ops::set_limit(c, scope, resource, limit))
    }

    /// Put an instance in a project and/or class (creating its record).
    pub fn set_membership(&self, instance: &InstanceId, m: &Membership) -> Result<(), StoreError> {
        self.tx(|c| ops::set_membership(c, instance, m))
    }

    /// Give a project a quota class.
    pub fn set_project_class(
        &self,
        project: &Label,
        class: Option<&Label>,
    ) -> Result<(), StoreError> {
        self.tx(|c| ops::set_project_class(c, project, class))
    }

    /// Each resource's limit (resolved), use and reservations for `instance`: every
    /// resource that has a limit anywhere in its chain or any use.
    pub fn standings(&self, instance: &InstanceId) -> Result<Vec<Standing>, StoreError> {
        ops::standings(&self.conn, instance, Timestamp::now())
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
        let expires = expiry(now, expires_in)?;
        let id = ReservationId::random()?;
        self.tx(|c| ops::reserve(c, instance, deltas, id.as_str(), expires, now))?;
        Ok(id)
    }

    /// Turn a reservation into use.
    pub fn commit(&mut self, id: &ReservationId) -> Result<(), StoreError> {
        self.tx(|c| ops::commit(c, id.as_str()))
    }

    /// Drop a reservation unused.
    pub fn rollback(&mut self, id: &ReservationId) -> Result<(), StoreError> {
        self.tx(|c| ops::rollback(c, id.as_str()))
    }

    /// Drop reservations that lapsed before `now`; how many.
    pub fn expire(&self, now: Timestamp) -> Result<usize, StoreError> {
        self.tx(|c| ops::expire(c, now))
    }

    /// The panel's real count replaces ours (the cure for drift).
    pub fn usage_set(
        &self,
        instance: &InstanceId,
        resource: &Resource,
        in_use: u64,
    ) -> Result<(), StoreError> {
        self.tx(|c| ops::usage_set(c, instance, resource, in_use))
    }

    /// Every instance's use of `resource` back to zero; how many were reset.
    pub fn usage_reset(&self, resource: &Resource) -> Result<usize, StoreError> {
        self.tx(|c| ops::usage_reset(c, resource, None))
    }

    /// Forget an instance: its use, reservations, limits and membership.
    pub fn destroy_instance(&mut self, instance: &InstanceId) -> Result<(), StoreError> {
        self.tx(|c| ops::destroy_instance(c, instance))
    }

    /// Forget a project: its limits and class; its instances leave it (they keep their
    /// own use and fall back to their class and the default).
    pub fn destroy_project(&mut self, project: &Label) -> Result<(), StoreError> {
        self.tx(|c| ops::destroy_project(c, project))
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

    /// A new token for `role`: stored hashed, returned whole this once.
    pub fn token_create(&self, role: &Role) -> Result<Token, StoreError> {
        let token = Token::generate()?;
        self.tx(|c| ops::token_insert(c, &token.id, &token.digest(), role, Timestamp::now()))?;
        Ok(token)
    }

    pub fn token_list(&self) -> Result<Vec<TokenInfo>, StoreError> {
        ops::token_list(&self.conn)
    }

    pub fn token_revoke(&self, id: &TokenId) -> Result<(), StoreError> {
        self.tx(|c| ops::token_revoke(c, id, Timestamp::now()))
    }

    /// Copy the whole database to `dest` while it stays in use (SQLite's online backup).
    pub fn backup_to(&self, dest: &Path) -> Result<(), StoreError> {
        backup::to_file(&self.conn, dest)
    }
}

/// When a reservation made at `now` for `expires_in` lapses, in Unix milliseconds.
pub fn expiry(now: Timestamp, expires_in: Duration) -> Result<i64, StoreError> {
    i64::try_from(expires_in.as_millis())
        .ok()
        .and_then(|ms| now.as_millisecond().checked_add(ms))
        .ok_or_else(|| StoreError::Invalid {
            field: "expires_in".into(),
            reason: "too long".into(),
        })
}

pub mod backup;
pub mod ops;
mod schema;
pub mod writer;

#[cfg(test)]
mod tests;
