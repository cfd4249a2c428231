//! `sluice store backup` / `restore`: SQLite's online backup, page by page, so a running
//! store keeps serving while it is copied. Both write to a temporary file and rename it,
//! so an interrupted copy never leaves a half-written database where a good one was.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;
use rusqlite::backup::Backup;

use super::{db, open_connection, schema};
use crate::store::model::{StoreError, cause};
use crate::sys::{Holder, holder};

/// The lock a process serving `db_path` holds: `<db>.lock`.
pub fn lock_path(db_path: &Path) -> PathBuf {
    let mut s = OsString::from(db_path.as_os_str());
    s.push(".lock");
    PathBuf::from(s)
}

fn io(what: &'static str, path: &Path) -> impl Fn(std::io::Error) -> StoreError {
    let path = path.display().to_string();
    move |e| StoreError::Database {
        what,
        source: cause(format!("{path}: {e}")),
    }
}

fn tmp_of(path: &Path) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(".partial");
    PathBuf::from(s)
}

/// Copy `src` into a fresh file at `dest` (replaced only once the copy is complete).
fn copy(src: &Connection, dest: &Path) -> Result<(), StoreError> {
    let tmp = tmp_of(dest);
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut out = Connection::open(&tmp).map_err(db("opening the copy"))?;
        Backup::new(src, &mut out)
            .and_then(|b| b.run_to_completion(256, Duration::from_millis(5), None))
            .map_err(db("copying"))?;
        // One self-contained file: no WAL beside it.
        out.pragma_update(None, "journal_mode", "DELETE")
            .map_err(db("finishing the copy"))?;
        drop(out);
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io("syncing the copy", &tmp))?;
        std::fs::rename(&tmp, dest).map_err(io("renaming the copy", dest))?;
        if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io("syncing the directory", dir))?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

pub fn to_file(conn: &Connection, dest: &Path) -> Result<(), StoreError> {
    copy(conn, dest)
}

/// Replace the store at `db_path` with the backup `src`. Refused while a store process
/// holds `db_path`'s lock, and when `src` is not a sound sluice store database.
pub fn restore(src: &Path, db_path: &Path) -> Result<(), StoreError> {
    if let Holder::Running(pid) = holder(&lock_path(db_path)) {
        return Err(StoreError::Invalid {
            field: "database".into(),
            reason: format!(
                "a sluice process (pid {pid}) is serving {}; stop it before restoring",
                db_path.display()
            ),
        });
    }
    if !src.is_file() {
        return Err(StoreError::Invalid {
            field: "backup".into(),
            reason: format!("{} is not a file", src.display()),
        });
    }
    let from = Connection::open_with_flags(src, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(db("opening the backup"))?;
    let not_a_store = |reason: String| StoreError::Invalid {
        field: "backup".into(),
        reason: format!("{}: {reason}", src.display()),
    };
    let check: String = from
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| not_a_store(e.to_string()))?;
    if check != "ok" {
        return Err(not_a_store(format!("integrity check failed: {check}")));
    }
    let version: i64 = from
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| not_a_store(e.to_string()))?;
    let has_limits: bool = from
        .query_row(
            "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'limits'",
            [],
            |r| r.get(0),
        )
        .map_err(|e| not_a_store(e.to_string()))?;
    if !(1..=schema::VERSION).contains(&version) || !has_limits {
        return Err(not_a_store(format!(
            "not a sluice store database (schema version {version})"
        )));
    }
    if let Some(dir) = db_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io("creating the data directory", dir))?;
    }
    // The old database's WAL must not be replayed onto the restored file
    // (nothing is serving it: checked above).
    for ext in ["-wal", "-shm"] {
        let mut s = OsString::from(db_path.as_os_str());
        s.push(ext);
        match std::fs::remove_file(PathBuf::from(s)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("removing the old journal", db_path)(e)),
        }
    }
    copy(&from, db_path)?;
    // Opening migrates an older backup and proves the result opens.
    open_connection(db_path).map(drop)
}
