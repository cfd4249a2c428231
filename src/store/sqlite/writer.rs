//! Group commit: one thread owns the store's connection and runs every request that is
//! waiting in one `BEGIN IMMEDIATE` transaction, each inside its own savepoint.
//!
//! With `synchronous = FULL` each commit costs an fsync (~120 µs here, milliseconds on a
//! busy disk); committing the requests that queued up during the previous fsync together
//! is what lets reservations outrun the disk while each one still sees all the others
//! (they run one after another inside the transaction, so check-and-reserve stays
//! race-free). A request's answer is sent only after the commit that holds it succeeded;
//! a request that fails rolls back to its savepoint without disturbing its neighbours.

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::db;
use crate::store::model::{StoreError, cause};

/// How many requests one transaction takes at most.
const MAX_BATCH: usize = 512;
/// Requests queued beyond this wait for room (backpressure on the HTTP handlers).
const QUEUE: usize = 4096;

trait Work: Send {
    /// Run inside the open transaction; whether it succeeded.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answer, once the transaction's fate is known.
    fn finish(self: Box<Self>, committed: Result<(), StoreError>);
}

struct Task<F, R> {
    f: Option<F>,
    result: Option<Result<R, StoreError>>,
    reply: oneshot::Sender<Result<R, StoreError>>,
}

impl<F, R> Work for Task<F, R>
where
    F: FnOnce(&Connection) -> Result<R, StoreError> + Send,
    R: Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(f) = self.f.take() else {
            return false;
        };
        let r = f(conn);
        let ok = r.is_ok();
        self.result = Some(r);
        ok
    }

    fn finish(self: Box<Self>, committed: Result<(), StoreError>) {
        let answer = match (self.result, committed) {
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(r)), Ok(())) => Ok(r),
            (_, Err(e)) => Err(e),
            (None, Ok(())) => Err(StoreError::Database {
                what: "running a request",
                source: cause("the request was not run"),
            }),
        };
        let _ = self.reply.send(answer);
    }
}

/// A handle on the writer thread; cheap to clone. The thread ends when the last handle
/// is dropped.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Box<dyn Work>>,
}

impl Writer {
    /// Hand `conn` to a new writer thread.
    pub fn start(conn: Connection) -> Result<Writer, StoreError> {
        let (tx, rx) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("sluice-store-writer".into())
            .spawn(move || serve(conn, rx))
            .map_err(|e| StoreError::Database {
                what: "starting the writer thread",
                source: cause(e),
            })?;
        Ok(Writer { jobs: tx })
    }

    /// Run `f` in the next transaction; its result once that transaction committed.
    pub async fn run<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let task: Box<dyn Work> = Box::new(Task {
            f: Some(f),
            result: None,
            reply,
        });
        let gone = || StoreError::Database {
            what: "running a request",
            source: cause("the writer thread has stopped"),
        };
        self.jobs.send(task).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

fn serve(conn: Connection, mut rx: mpsc::Receiver<Box<dyn Work>>) {
    let mut batch: Vec<Box<dyn Work>> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let outcome = run_batch(&conn, &mut batch);
        for w in batch.drain(..) {
            w.finish(outcome.clone());
        }
    }
}

/// One transaction for the whole batch: each request in a savepoint. The statements are
/// prepared once and cached: parsing them per request cost more than the requests.
fn run_batch(conn: &Connection, batch: &mut [Box<dyn Work>]) -> Result<(), StoreError> {
    let step = |sql: &str| -> Result<(), StoreError> {
        conn.prepare_cached(sql)
            .and_then(|mut s| s.execute([]))
            .map(drop)
            .map_err(db("transaction"))
    };
    step("BEGIN IMMEDIATE")?;
    let result = (|| {
        for w in batch.iter_mut() {
            step("SAVEPOINT request")?;
            if !w.run(conn) {
                step("ROLLBACK TO request")?;
            }
            step("RELEASE request")?;
        }
        step("COMMIT")
    })();
    if result.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    result
}
