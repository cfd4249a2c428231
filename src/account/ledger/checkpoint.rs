//! WAL checkpoints off the tick.
//!
//! SQLite's automatic checkpoint runs inside whichever commit pushes the WAL past 1,000
//! pages: every few ticks one commit also copied the WAL into the database and fsynced
//! it, 8–10 ms on top of a 5 ms tick at 10,000 interfaces. A thread with its own
//! connection runs a PASSIVE checkpoint (never blocks the writer, never waits for it)
//! every few seconds instead, so a tick's commit costs the same every tick.

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use super::{LedgerError, sql};

pub struct Checkpointer {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    pub fn start(path: &Path, every: Duration) -> Result<Checkpointer, LedgerError> {
        let conn = Connection::open(path).map_err(sql("opening the checkpoint connection"))?;
        conn.busy_timeout(Duration::from_secs(5))
            .and_then(|()| conn.pragma_update(None, "cache_size", -64))
            .map_err(sql("opening the checkpoint connection"))?;
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sluice-checkpoint".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                    if let Err(e) = done {
                        tracing::warn!(error = %e, "ledger: WAL checkpoint failed (retried)");
                    }
                }
            })
            .map_err(|e| LedgerError::Sql {
                what: "starting the checkpoint thread",
                source: e.into(),
            })?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
