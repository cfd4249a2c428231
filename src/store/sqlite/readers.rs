//! Reads beside the writer: a few threads, each owning a read-only connection, so a
//! token check, a quota read or the fleet ranking never waits in the writer's queue
//! behind reservations, and a slow read (a lookup of many ids, a big fleet) never holds
//! a reservation up.
//!
//! WAL lets these connections read while the writer writes. Each read runs in a
//! transaction of its own, so it sees one committed state throughout. A caller the
//! writer answered has its write committed already, so its next read sees it.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot};

use super::db;
use crate::store::model::{StoreError, cause};

/// Reads queued beyond this wait for room.
const QUEUE: usize = 4096;
/// Room for every read statement of the store's.
const STATEMENT_CACHE: usize = 128;

type Job = Box<dyn FnOnce(&Connection) + Send>;

/// A handle on the reader threads; cheap to clone. The threads end when the last
/// handle is dropped.
#[derive(Clone)]
pub struct Readers {
    jobs: mpsc::Sender<Job>,
}

impl Readers {
    /// `threads` readers of the database at `path`, which the writer has created and
    /// migrated already (a read-only connection can do neither).
    pub fn start(path: &Path, threads: usize) -> Result<Readers, StoreError> {
        let (tx, rx) = mpsc::channel::<Job>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let conn = open_read_only(path)?;
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("sluice-store-read{i}"))
                .spawn(move || serve(&conn, &rx))
                .map_err(|e| StoreError::Database {
                    what: "starting a reader thread",
                    source: cause(e),
                })?;
        }
        Ok(Readers { jobs: tx })
    }

    /// Run `f` in a read transaction of its own on the next free reader.
    pub async fn run<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let _ = reply.send(in_read_tx(conn, f));
        });
        let gone = || StoreError::Database {
            what: "running a read",
            source: cause("the reader threads have stopped"),
        };
        self.jobs.send(job).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

fn open_read_only(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(db("opening a reader"))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.busy_timeout(Duration::from_secs(10))
        .and_then(|()| conn.pragma_update(None, "query_only", true))
        .map_err(db("opening a reader"))?;
    Ok(conn)
}

/// One job at a time per thread; the queue's lock is held only while waiting for a job,
/// so one idle thread waits on the channel and the others on the lock.
fn serve(conn: &Connection, rx: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        let job = {
            let Ok(mut rx) = rx.lock() else { return };
            rx.blocking_recv()
        };
        match job {
            Some(job) => job(conn),
            None => return,
        }
    }
}

fn in_read_tx<R>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<R, StoreError>,
) -> Result<R, StoreError> {
    conn.prepare_cached("BEGIN")
        .and_then(|mut s| s.execute([]))
        .map_err(db("begin a read"))?;
    let out = f(conn);
    // A read has nothing to commit: ending it either way releases its snapshot.
    let _ = conn.execute_batch("ROLLBACK");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readers_see_what_was_committed_and_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quota.db");
        let writer = super::super::open_connection(&path).unwrap();
        writer
            .execute_batch("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (7);")
            .unwrap();
        let readers = Readers::start(&path, 2).unwrap();
        let x: i64 = readers
            .run(|c| {
                c.query_row("SELECT x FROM t", [], |r| r.get(0))
                    .map_err(db("read"))
            })
            .await
            .unwrap();
        assert_eq!(x, 7);
        // A write lock held elsewhere does not hold a read up (WAL).
        writer
            .execute_batch("BEGIN IMMEDIATE; UPDATE t SET x = 8;")
            .unwrap();
        let x: i64 = readers
            .run(|c| {
                c.query_row("SELECT x FROM t", [], |r| r.get(0))
                    .map_err(db("read"))
            })
            .await
            .unwrap();
        assert_eq!(x, 7, "an uncommitted write was seen");
        writer.execute_batch("COMMIT").unwrap();
        let err = readers
            .run(|c| {
                c.execute("UPDATE t SET x = 9", [])
                    .map(drop)
                    .map_err(db("write"))
            })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("write"), "{err}");
        let x: i64 = writer
            .query_row("SELECT x FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(x, 8);
    }
}
