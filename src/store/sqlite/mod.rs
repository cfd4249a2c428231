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

pub(crate) use self::statements::Sqlite;
use super::backend::Statements;
use super::engine::{self, Settle};
use super::model::{
    Deltas, Limit, Membership, ReservationId, Resource, Scope, Standing, StoreError, cause,
};
use crate::model::ids::{InstanceId, Label};
use crate::model::token::{Role, Token, TokenId, TokenInfo};

/// More than the store has statements.
const STATEMENT_CACHE: usize = 128;

pub(crate) fn db(what: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |e| StoreError::Database {
        what,
        source: cause(e),
    }
}

/// Open (creating if needed) and migrate a store database, with the store's pragmas.
pub fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Database {
            what: "creating the data directory",
            source: cause(format!("{}: {e}", dir.display())),
        })?;
    }
    crate::sys::files::create_private(path).map_err(|e| StoreError::Database {
        what: "creating the database file",
        source: cause(format!("{}: {e}", path.display())),
    })?;
    let conn = Connection::open(path).map_err(db("opening"))?;
    // Room for every statement of the store's, so none is parsed twice.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
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

/// Run one of the engine's operations on `conn`, to its end. The SQLite statements
/// never wait, so the future is done the first time it is polled.
pub(crate) fn drive<R>(
    conn: &Connection,
    op: impl AsyncFnOnce(&mut Sqlite<'_>) -> Result<R, StoreError>,
) -> Result<R, StoreError> {
    futures::executor::block_on(op(&mut Sqlite::new(conn)))
}

/// The store on one SQLite connection, each call its own transaction: a synchronous
/// face on the same engine the async [`super::service::Store`] runs, for the engine
/// tests, the benchmarks and the CLI's backup. The HTTP service goes through
/// [`writer::Writer`] instead, which commits many requests at once.
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

    /// Run `op` in a transaction of its own.
    fn tx<R>(
        &self,
        op: impl AsyncFnOnce(&mut Sqlite<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        in_tx(&self.conn, |c| drive(c, op))
    }

    /// Set (`Some`) or remove (`None`) the limit of `resource` at `scope`.
    pub fn set_limit(
        &self,
        scope: &Scope,
        resource: &Resource,
        limit: Option<Limit>,
    ) -> Result<(), StoreError> {
        self.tx(async |s| engine::set_limit(s, scope, resource, limit).await)
    }

    /// Put an instance in a project and/or class (creating its record).
    pub fn set_membership(&self, instance: &InstanceId, m: &Membership) -> Result<(), StoreError> {
        self.tx(async |s| s.set_membership(instance, m).await)
    }

    /// Give a project a quota class.
    pub fn set_project_class(
        &self,
        project: &Label,
        class: Option<&Label>,
    ) -> Result<(), StoreError> {
        self.tx(async |s| s.set_project_class(project, class).await)
    }

    /// Each resource's limit (resolved), use and reservations for `instance`: every
    /// resource that has a limit anywhere in its chain or any use.
    pub fn standings(&self, instance: &InstanceId) -> Result<Vec<Standing>, StoreError> {
        drive(&self.conn, async |s| {
            engine::standings(s, instance, Timestamp::now()).await
        })
    }

    /// Would `deltas` fit? Nothing is reserved.
    pub fn limit_check(&self, instance: &InstanceId, deltas: &Deltas) -> Result<(), StoreError> {
        drive(&self.conn, async |s| {
            engine::limit_check(s, instance, deltas).await
        })
    }

    /// Check and reserve `deltas` in one transaction; the reservation lapses after
    /// `expires_in` unless committed or rolled back first.
    pub fn reserve(
        &mut self,
        instance: &InstanceId,
        deltas: &Deltas,
        expires_in: Duration,
    ) -> Result<ReservationId, StoreError> {
        let id = ReservationId::random()?;
        self.tx(async |s| engine::reserve(s, instance, deltas, &id, expires_in).await)?;
        Ok(id)
    }

    /// Turn a reservation into use.
    pub fn commit(&mut self, id: &ReservationId) -> Result<(), StoreError> {
        self.tx(async |s| engine::settle(s, id.as_str(), Settle::Commit).await)
    }

    /// Drop a reservation unused.
    pub fn rollback(&mut self, id: &ReservationId) -> Result<(), StoreError> {
        self.tx(async |s| engine::settle(s, id.as_str(), Settle::Rollback).await)
    }

    /// Drop reservations that lapsed before `now`; how many.
    pub fn expire(&self, now: Timestamp) -> Result<usize, StoreError> {
        self.tx(async |s| engine::expire_reservations(s, now).await)
    }

    /// The panel's real count replaces ours (the cure for drift).
    pub fn usage_set(
        &self,
        instance: &InstanceId,
        resource: &Resource,
        in_use: u64,
    ) -> Result<(), StoreError> {
        let counts = [(resource.clone(), in_use)].into();
        self.tx(async |s| engine::usage_set(s, instance, &counts).await)
    }

    /// Every instance's use of `resource` back to zero; how many were reset.
    pub fn usage_reset(&self, resource: &Resource) -> Result<usize, StoreError> {
        self.tx(async |s| engine::usage_reset(s, resource, None).await)
    }

    /// Forget an instance: its use, reservations, limits and membership.
    pub fn destroy_instance(&mut self, instance: &InstanceId) -> Result<(), StoreError> {
        self.tx(async |s| engine::destroy_instance(s, instance).await)
    }

    /// Forget a project: its limits and class; its instances leave it (they keep their
    /// own use and fall back to their class and the default).
    pub fn destroy_project(&mut self, project: &Label) -> Result<(), StoreError> {
        self.tx(async |s| engine::destroy_project(s, project).await)
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
        self.tx(async |s| engine::token_insert(s, &token, role).await)?;
        Ok(token)
    }

    pub fn token_list(&self) -> Result<Vec<TokenInfo>, StoreError> {
        drive(&self.conn, async |s| engine::token_list(s).await)
    }

    pub fn token_revoke(&self, id: &TokenId) -> Result<(), StoreError> {
        self.tx(async |s| engine::token_revoke(s, id).await)
    }

    /// Copy the whole database to `dest` while it stays in use (SQLite's online backup).
    pub fn backup_to(&self, dest: &Path) -> Result<(), StoreError> {
        backup::to_file(&self.conn, dest)
    }
}

pub mod backup;
pub mod readers;
mod schema;
mod statements;
pub mod writer;

#[cfg(test)]
mod tests;
