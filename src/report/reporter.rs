//! The agent's side of exactly-once reporting: read the spool (rows the ledger committed
//! with each tick), send them to the quota store in numbered batches, and tell the
//! ledger which ones the store acknowledged so the next commit deletes them.
//!
//! The store records each (agent, seq) with the bytes it adds, so a batch sent again —
//! because an answer was lost, or the agent restarted before its acknowledgement was
//! committed — is recognised and acknowledged without being added twice. While the store
//! is unreachable the reporter backs off (doubling, with jitter, up to a minute) and the
//! spool grows, bounded by `store.spool_max`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use rusqlite::Connection;
use tokio::sync::Notify;
use tracing::{error, info, warn};

use super::backoff::{Backoff, Jitter};
use crate::account::ledger::open_read_only;
use crate::account::ledger::spool::{self, SpoolRow};
use crate::model::ids::{InstanceId, Label};
use crate::store::report::{Batch, Ingested, Report, Sample};
use crate::store::service::Store;

/// How many spool rows (ticks) one report carries at most.
const ROWS_PER_REPORT: usize = 32;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const LONGEST_BACKOFF: Duration = Duration::from_secs(60);
/// With nothing to send, look again this often even without a wake-up.
const IDLE_POLL: Duration = Duration::from_secs(10);
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// What the agent and its reporter share.
#[derive(Default)]
pub struct SpoolShared {
    /// Spool rows up to here are acknowledged by the store.
    pub acked: AtomicU64,
    /// Payload bytes in the spool after the last commit.
    pub bytes: AtomicU64,
    /// Rung after each commit that spooled something.
    pub wake: Notify,
    /// How the latest sends went, for `sluice status`.
    pub contact: std::sync::Mutex<Contact>,
}

/// The reporter's latest dealings with the store.
#[derive(Debug, Clone, Default)]
pub struct Contact {
    pub last_report: Option<Timestamp>,
    /// Since when sends fail, and why the latest did.
    pub failing: Option<(Timestamp, String)>,
}

impl SpoolShared {
    fn record(&self, outcome: Result<(), String>) {
        if let Ok(mut c) = self.contact.lock() {
            let now = Timestamp::now();
            match outcome {
                Ok(()) => {
                    c.last_report = Some(now);
                    c.failing = None;
                }
                Err(why) => {
                    let since = c.failing.as_ref().map_or(now, |(t, _)| *t);
                    c.failing = Some((since, why));
                }
            }
        }
    }
}

/// Where reports go.
pub enum Sink {
    Remote {
        client: reqwest::Client,
        url: String,
        token: String,
    },
    /// The store inside this agent.
    Local(Store),
}

/// Why a send failed, and how to wait before the next try.
#[derive(Debug)]
enum SendError {
    /// Worth retrying after the usual backoff.
    Transient(String),
    /// The store told us when to come back.
    RetryAfter(Duration, String),
    /// Retrying will not help until someone acts (a bad token, a rejected body); retried
    /// at the longest backoff.
    Refused(String),
    /// The report is too big for the store's body limit: send fewer rows.
    TooLarge,
}

impl Sink {
    async fn send(&self, report: &Report) -> Result<Ingested, SendError> {
        match self {
            Sink::Local(store) => store
                .ingest(report.clone())
                .await
                .map_err(|e| SendError::Transient(e.to_string())),
            Sink::Remote { client, url, token } => {
                let body = serde_json::to_vec(report)
                    .map_err(|e| SendError::Refused(format!("encoding the report: {e}")))?;
                let resp = client
                    .post(format!("{url}/v1/reports"))
                    .bearer_auth(token)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| SendError::Transient(e.without_url().to_string()))?;
                let status = resp.status().as_u16();
                let retry_after = retry_after(
                    resp.headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok()),
                );
                let bytes = resp
                    .bytes()
                    .await
                    .map_err(|e| SendError::Transient(e.without_url().to_string()))?;
                let text = || {
                    String::from_utf8_lossy(&bytes)
                        .chars()
                        .take(300)
                        .collect::<String>()
                };
                match status {
                    200 => serde_json::from_slice(&bytes).map_err(|e| {
                        SendError::Transient(format!("unreadable answer ({e}): {}", text()))
                    }),
                    413 => Err(SendError::TooLarge),
                    429 => Err(SendError::RetryAfter(retry_after, text())),
                    400..=499 => Err(SendError::Refused(format!("HTTP {status}: {}", text()))),
                    _ => Err(SendError::Transient(format!("HTTP {status}: {}", text()))),
                }
            }
        }
    }
}

/// How long a store's `Retry-After` (delay-seconds) asks to wait, at most the longest
/// backoff: a store, or whatever answers in its place, cannot stall the reporter for
/// good (`Retry-After: 100000000000` once did, and would overflow a timer besides).
/// Missing or unreadable: one second.
fn retry_after(header: Option<&str>) -> Duration {
    header
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(FIRST_BACKOFF, Duration::from_secs)
        .min(LONGEST_BACKOFF)
}

/// Sends the spool to the store until the agent stops.
pub struct Reporter {
    pub ledger: PathBuf,
    pub host: Label,
    pub sink: Arc<Sink>,
    pub shared: Arc<SpoolShared>,
}

fn samples(rows: &[SpoolRow]) -> Vec<Batch> {
    rows.iter()
        .map(|row| {
            let mut estimated = vec![false; row.samples.len()];
            for &i in &row.estimated {
                if let Some(e) = usize::try_from(i).ok().and_then(|i| estimated.get_mut(i)) {
                    *e = true;
                }
            }
            Batch {
                seq: row.seq,
                samples: row
                    .samples
                    .iter()
                    .zip(estimated)
                    .filter_map(|(s, estimated)| {
                        Some(Sample {
                            at: Timestamp::from_millisecond(s.at_ms).ok()?,
                            instance: InstanceId::new(&s.instance).ok()?,
                            upload: s.upload,
                            download: s.download,
                            estimated,
                        })
                    })
                    .collect(),
            }
        })
        .collect()
}

impl Reporter {
    /// Read up to `limit` rows after `after` on a blocking thread (the connection goes
    /// there and back).
    async fn read(
        &self,
        conn: Option<Connection>,
        after: u64,
        limit: usize,
    ) -> (Option<Connection>, Result<Vec<SpoolRow>, String>) {
        let path = self.ledger.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let conn = match conn {
                Some(c) => c,
                None => match open_read_only(&path) {
                    Ok(c) => c,
                    Err(e) => return (None, Err(e.to_string())),
                },
            };
            let rows = spool::pending(&conn, after, limit).map_err(|e| e.to_string());
            (Some(conn), rows)
        })
        .await;
        joined.unwrap_or_else(|e| (None, Err(format!("spool reader stopped: {e}"))))
    }

    pub async fn run(self) {
        let mut conn = None;
        let mut backoff = Backoff::new(FIRST_BACKOFF, LONGEST_BACKOFF, Jitter::Equal);
        let mut limit = ROWS_PER_REPORT;
        let mut failing_since: Option<Timestamp> = None;
        loop {
            let after = self.shared.acked.load(Ordering::Acquire);
            let (c, rows) = self.read(conn.take(), after, limit).await;
            conn = c;
            let rows = match rows {
                Ok(r) => r,
                Err(e) => {
                    // The ledger may not exist yet (first tick) or be briefly busy.
                    warn!("store reporter: cannot read the spool: {e}");
                    tokio::time::sleep(IDLE_POLL).await;
                    continue;
                }
            };
            let Some(last) = rows.last().map(|r| r.seq) else {
                let _ = tokio::time::timeout(IDLE_POLL, self.shared.wake.notified()).await;
                continue;
            };
            let report = Report {
                agent: self.host.clone(),
                batches: samples(&rows),
            };
            match self.sink.send(&report).await {
                Ok(done) => {
                    self.shared.acked.fetch_max(last, Ordering::AcqRel);
                    self.shared.record(Ok(()));
                    backoff.reset();
                    limit = ROWS_PER_REPORT;
                    if let Some(since) = failing_since.take() {
                        info!(
                            down_since = %since,
                            "quota store reachable again; sending the spool"
                        );
                    }
                    if !done.duplicates.is_empty() {
                        info!(
                            batches = done.duplicates.len(),
                            "quota store already had some batches (a retry); not counted twice"
                        );
                    }
                }
                Err(SendError::TooLarge) if limit > 1 => {
                    limit /= 2;
                    warn!(
                        rows = limit,
                        "quota store: report too large for its body limit; sending fewer ticks per report"
                    );
                }
                Err(e) => {
                    let wait = match &e {
                        SendError::RetryAfter(d, _) => *d,
                        SendError::Refused(_) | SendError::TooLarge => backoff.longest(),
                        SendError::Transient(_) => backoff.step(),
                    };
                    let spooled = self.shared.bytes.load(Ordering::Relaxed);
                    self.shared.record(Err(match &e {
                        SendError::Transient(w)
                        | SendError::RetryAfter(_, w)
                        | SendError::Refused(w) => w.clone(),
                        SendError::TooLarge => "a single tick's report is too large".into(),
                    }));
                    if failing_since.is_none() {
                        failing_since = Some(Timestamp::now());
                    }
                    match e {
                        SendError::Refused(why) => error!(
                            spool_bytes = spooled,
                            "quota store refused a report ({why}); retrying in {wait:?}"
                        ),
                        SendError::TooLarge => error!(
                            "quota store refuses even one tick's report as too large; raise its --body-limit"
                        ),
                        SendError::RetryAfter(_, _) | SendError::Transient(_) => warn!(
                            spool_bytes = spooled,
                            "quota store unreachable ({}); retrying in {wait:?}",
                            match &e {
                                SendError::Transient(w) | SendError::RetryAfter(_, w) => w.as_str(),
                                _ => "",
                            }
                        ),
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// The reporting HTTP client (see [`super::http_client`]).
pub fn client() -> Result<reqwest::Client, String> {
    super::http_client(SEND_TIMEOUT).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spooled_rows_become_batches_with_their_estimated_samples_marked() {
        use crate::account::ledger::spool::SpoolSample;
        let sample = |at_ms, instance: &str| SpoolSample {
            at_ms,
            instance: instance.into(),
            upload: 10,
            download: 1,
        };
        let rows = [
            SpoolRow {
                seq: 7,
                samples: vec![
                    sample(60_000, "101"),
                    sample(299_999, "102"),
                    sample(360_000, "102"),
                ],
                estimated: vec![1],
            },
            // A name that is not an instance id is dropped, not sent.
            SpoolRow {
                seq: 8,
                samples: vec![sample(420_000, "bad id!")],
                estimated: vec![],
            },
        ];
        let batches = samples(&rows);
        assert_eq!(batches.len(), 2);
        let marks: Vec<(u64, String, bool)> = batches[0]
            .samples
            .iter()
            .map(|s| (s.upload, s.instance.to_string(), s.estimated))
            .collect();
        assert_eq!(
            marks,
            vec![
                (10, "101".into(), false),
                (10, "102".into(), true),
                (10, "102".into(), false)
            ]
        );
        assert_eq!((batches[1].seq, batches[1].samples.len()), (8, 0));
    }

    #[test]
    fn retry_after_is_obeyed_up_to_the_longest_backoff() {
        let table = [
            (None, 1),
            (Some("7"), 7),
            (Some(" 60 "), 60),
            (Some("61"), 60),
            (Some("100000000000"), 60),
            (Some("18446744073709551615"), 60),
            (Some("Wed, 21 Oct 2015 07:28:00 GMT"), 1),
            (Some("-5"), 1),
        ];
        for (header, secs) in table {
            assert_eq!(retry_after(header), Duration::from_secs(secs), "{header:?}");
        }
    }
}
