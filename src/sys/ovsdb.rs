//! A small OVSDB client (RFC 7047, with ovsdb-server's `monitor_cond`) on a unix or TCP
//! socket: a session that keeps a replica of the monitored columns and writes with
//! `transact`, so that a tick reads memory instead of forking `ovs-vsctl`.
//!
//! Why its own module: no maintained crate both monitors and transacts. What it does:
//! - `get_schema` first, so that columns an older server lacks are left out of the
//!   monitor (and the caller can tell), and so that `modify` diffs of sets and maps can
//!   be applied (`update2` sends a map's changed keys, not the whole map);
//! - `monitor_cond` without conditions on the caller's tables and columns, never the
//!   `statistics` column vswitchd rewrites every few seconds;
//! - answers the server's `echo`, and sends its own when the line is quiet: a server
//!   that stops answering is found, not trusted;
//! - reads and writes independently: ovsdb-server stops reading a session whose send
//!   backlog is not empty, so a client that only writes while a large update is on its
//!   way deadlocks;
//! - reconnects with backoff, and replaces the whole replica from the new monitor's
//!   initial rows (a full resync: nothing of the old session is trusted).
//!
//! The server sends a client's own changes as `update2` before the `transact` reply, so
//! when [`Session::transact`] returns the replica already shows what the server holds.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

/// Where the server listens: `unix:PATH` or `tcp:HOST:PORT`, as OVS spells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp(String),
}

impl std::str::FromStr for Endpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Endpoint, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            let path = PathBuf::from(path);
            if !path.is_absolute() {
                return Err(format!("{s:?}: a unix socket needs an absolute path"));
            }
            return Ok(Endpoint::Unix(path));
        }
        if let Some(addr) = s.strip_prefix("tcp:") {
            if !addr.contains(':') {
                return Err(format!("{s:?}: tcp needs HOST:PORT"));
            }
            return Ok(Endpoint::Tcp(addr.to_owned()));
        }
        Err(format!(
            "{s:?}: only unix:PATH and tcp:HOST:PORT are supported (no ssl:)"
        ))
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum OvsdbError {
    /// No monitored session at the moment (never connected, or lost and not yet back).
    #[error("no OVSDB session: {0}")]
    Down(String),
    #[error("OVSDB did not answer {what} within {secs:.1}s")]
    Timeout { what: &'static str, secs: f64 },
    /// The server answered with an error.
    #[error("OVSDB refused {what}: {error}{}", details.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Refused {
        what: &'static str,
        error: String,
        details: Option<String>,
    },
    /// What the server sent is not what RFC 7047 says.
    #[error("OVSDB sent {0}")]
    Protocol(String),
}

/// What one session monitors: the database and, per table, the columns wanted.
#[derive(Debug, Clone)]
pub struct Watch {
    pub database: String,
    pub tables: Vec<(String, Vec<String>)>,
    /// Send an `echo` after this long without a word from the server; give up on the
    /// connection after as long again without an answer.
    pub probe: Duration,
}

/// How a column's values change in `update2`'s `modify`: replaced, or by difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColumnKind {
    Atomic,
    Set,
    Map,
}

/// The columns of the monitored tables, as the server's schema has them.
#[derive(Debug, Clone, Default)]
struct Schema {
    columns: HashMap<String, HashMap<String, ColumnKind>>,
}

impl Schema {
    fn parse(v: &Value, database: &str) -> Result<Schema, OvsdbError> {
        let bad = |what: &str| OvsdbError::Protocol(format!("a schema {what}"));
        if v.get("name").and_then(Value::as_str) != Some(database) {
            return Err(bad(&format!("not of database {database}")));
        }
        let tables = v
            .get("tables")
            .and_then(Value::as_object)
            .ok_or_else(|| bad("without tables"))?;
        let mut columns = HashMap::new();
        for (table, t) in tables {
            let cols = t
                .get("columns")
                .and_then(Value::as_object)
                .ok_or_else(|| bad(&format!("table {table} without columns")))?;
            let kinds = cols
                .iter()
                .map(|(c, def)| (c.clone(), column_kind(def.get("type"))))
                .collect();
            columns.insert(table.clone(), kinds);
        }
        Ok(Schema { columns })
    }
}

/// A column type (RFC 7047 §3.2 `<type>`): a map has a `value`; a set is any other type
/// that can hold more than one element. A column of at most one element (an optional
/// value, `"max": 1`) changes like an atomic one: ovsdb-server's `update2` carries its
/// new value, not a difference — `["set", []]` when it is cleared.
fn column_kind(ty: Option<&Value>) -> ColumnKind {
    let Some(Value::Object(t)) = ty else {
        return ColumnKind::Atomic;
    };
    if t.contains_key("value") {
        return ColumnKind::Map;
    }
    if t.get("max").is_none_or(|v| v.as_u64() == Some(1)) {
        ColumnKind::Atomic
    } else {
        ColumnKind::Set
    }
}

/// One row's monitored columns, as OVSDB's JSON datums (a column at its default may be
/// absent: `update2` leaves those out).
pub type Row = Map<String, Value>;

/// What the session knows of the monitored tables.
#[derive(Debug, Default)]
pub struct Replica {
    /// Bumped by every change, and by every resync.
    pub generation: u64,
    /// Rows by table, then by uuid.
    pub tables: HashMap<String, HashMap<String, Row>>,
    /// The monitored columns the server's schema has, by table (a column the caller
    /// wanted and the server lacks is not in it).
    pub columns: HashMap<String, HashSet<String>>,
    /// Whether the replica is live: monitored on a session that is up.
    pub live: bool,
    /// Why it is not live.
    pub down_reason: Option<String>,
    schema: Schema,
}

impl Replica {
    /// Apply a `monitor_cond` reply or an `update2` notification's table updates.
    fn apply(&mut self, updates: Value) -> Result<(), OvsdbError> {
        let Value::Object(updates) = updates else {
            return Err(OvsdbError::Protocol(
                "table updates that are not an object".into(),
            ));
        };
        for (table, rows) in updates {
            let Value::Object(rows) = rows else {
                return Err(OvsdbError::Protocol(format!(
                    "updates of table {table} that are not an object"
                )));
            };
            let kinds: HashMap<&str, ColumnKind> = self
                .schema
                .columns
                .get(&table)
                .map(|t| t.iter().map(|(c, k)| (c.as_str(), *k)).collect())
                .unwrap_or_default();
            let held = self.tables.entry(table.clone()).or_default();
            for (uuid, change) in rows {
                let bad = |why: &str| OvsdbError::Protocol(format!("row {uuid} of {table}: {why}"));
                let Value::Object(change) = change else {
                    return Err(bad("not an object"));
                };
                let Some((how, row)) = change.into_iter().next() else {
                    return Err(bad("an empty update"));
                };
                match how.as_str() {
                    "initial" | "insert" => {
                        let Value::Object(row) = row else {
                            return Err(bad("a row not an object"));
                        };
                        held.insert(uuid, row);
                    }
                    "delete" => {
                        held.remove(&uuid);
                    }
                    "modify" => {
                        let Value::Object(diff) = row else {
                            return Err(bad("a diff not an object"));
                        };
                        let old = held.entry(uuid.clone()).or_default();
                        for (column, d) in diff {
                            let kind = kinds
                                .get(column.as_str())
                                .copied()
                                .unwrap_or(ColumnKind::Atomic);
                            let new = match kind {
                                ColumnKind::Atomic => d,
                                ColumnKind::Set => set_diff(old.get(&column), &d)?,
                                ColumnKind::Map => map_diff(old.get(&column), &d)?,
                            };
                            old.insert(column, new);
                        }
                    }
                    other => return Err(bad(&format!("an unknown update {other:?}"))),
                }
            }
        }
        self.generation = self.generation.wrapping_add(1);
        Ok(())
    }
}

/// A set datum's elements: `["set", [...]]`, or one atom alone.
pub fn set_elements(v: Option<&Value>) -> Result<Vec<Value>, OvsdbError> {
    match v {
        None => Ok(Vec::new()),
        Some(Value::Array(a)) if a.first().and_then(Value::as_str) == Some("set") => a
            .get(1)
            .and_then(Value::as_array)
            .cloned()
            .ok_or_else(|| OvsdbError::Protocol(format!("a malformed set {v:?}"))),
        Some(atom) => Ok(vec![atom.clone()]),
    }
}

/// A map datum's pairs: `["map", [[k, v], ...]]`.
pub fn map_pairs(v: Option<&Value>) -> Result<Vec<(Value, Value)>, OvsdbError> {
    let Some(v) = v else {
        return Ok(Vec::new());
    };
    let bad = || OvsdbError::Protocol(format!("a malformed map {v}"));
    let pairs = match v {
        Value::Array(a) if a.first().and_then(Value::as_str) == Some("map") => {
            a.get(1).and_then(Value::as_array).ok_or_else(bad)?
        }
        _ => return Err(bad()),
    };
    pairs
        .iter()
        .map(|p| match p.as_array().map(Vec::as_slice) {
            Some([k, v]) => Ok((k.clone(), v.clone())),
            _ => Err(bad()),
        })
        .collect()
}

/// `update2`'s set difference: elements in the diff are added when absent, removed when
/// present.
fn set_diff(old: Option<&Value>, diff: &Value) -> Result<Value, OvsdbError> {
    let mut elems = set_elements(old)?;
    for e in set_elements(Some(diff))? {
        match elems.iter().position(|x| *x == e) {
            Some(at) => {
                elems.remove(at);
            }
            None => elems.push(e),
        }
    }
    Ok(json!(["set", elems]))
}

/// `update2`'s map difference: a key not held is added; a key held with the same value
/// is removed; a key held with another value takes the new one.
fn map_diff(old: Option<&Value>, diff: &Value) -> Result<Value, OvsdbError> {
    let mut pairs = map_pairs(old)?;
    for (k, v) in map_pairs(Some(diff))? {
        match pairs.iter().position(|(x, _)| *x == k) {
            Some(at) if pairs[at].1 == v => {
                pairs.remove(at);
            }
            Some(at) => pairs[at].1 = v,
            None => pairs.push((k, v)),
        }
    }
    let pairs: Vec<Value> = pairs.into_iter().map(|(k, v)| json!([k, v])).collect();
    Ok(json!(["map", pairs]))
}

/// The JSON texts in a byte stream with no framing between them (OVSDB's): each whole
/// value is taken off the front; a partial one waits for more bytes.
///
/// A scan of brackets and strings finds where a message ends, carried across reads, so a
/// large message arriving in many pieces is parsed once, not once per piece.
#[derive(Debug, Default)]
struct Framer {
    buf: Vec<u8>,
    /// How far the scan of the message at the front has got.
    scanned: usize,
    depth: u32,
    in_string: bool,
    escaped: bool,
}

/// The most a single message may take: a monitor's initial rows of a large switch are
/// some megabytes, and garbage without end must not take the host's memory.
const MAX_MESSAGE: usize = 256 << 20;

impl Framer {
    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message, if there is one.
    fn next(&mut self) -> Result<Option<Value>, OvsdbError> {
        let not_json = |why: String| OvsdbError::Protocol(format!("text that is not JSON: {why}"));
        if self.scanned == 0 {
            // Between messages: whitespace is dropped, and a message is an object or an
            // array (JSON-RPC's are objects).
            let ws = self
                .buf
                .iter()
                .take_while(|b| b.is_ascii_whitespace())
                .count();
            self.buf.drain(..ws);
            match self.buf.first() {
                None => return Ok(None),
                Some(b'{' | b'[') => {}
                Some(b) => return Err(not_json(format!("starts with {:?}", char::from(*b)))),
            }
        }
        let mut i = self.scanned;
        while let Some(&b) = self.buf.get(i) {
            i += 1;
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        let v = serde_json::from_slice(&self.buf[..i])
                            .map_err(|e| not_json(e.to_string()))?;
                        self.buf.drain(..i);
                        self.scanned = 0;
                        return Ok(Some(v));
                    }
                }
                _ => {}
            }
        }
        self.scanned = i;
        if self.buf.len() > MAX_MESSAGE {
            return Err(OvsdbError::Protocol(format!(
                "a message over {MAX_MESSAGE} bytes"
            )));
        }
        Ok(None)
    }
}

/// A request the caller makes through the session.
struct Transact {
    ops: Vec<Value>,
    /// When the caller stops waiting: a server still silent then is given up on.
    deadline: Instant,
    reply: oneshot::Sender<Result<Vec<Value>, OvsdbError>>,
}

/// A live OVSDB session: its replica and the way to write. Dropping it ends the session.
pub struct Session {
    replica: Arc<Mutex<Replica>>,
    changed: watch::Receiver<u64>,
    requests: mpsc::Sender<Transact>,
    task: tokio::task::JoinHandle<()>,
    database: String,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Session {
    /// Start the session's task on the current tokio runtime; it connects (and
    /// reconnects) on its own. Use [`Session::wait_live`] to wait for the first replica.
    pub fn start(endpoint: Endpoint, watch: Watch) -> Session {
        let replica = Arc::new(Mutex::new(Replica {
            down_reason: Some("not connected yet".into()),
            ..Replica::default()
        }));
        let (changed_tx, changed) = watch::channel(0);
        let (requests, rx) = mpsc::channel(16);
        let database = watch.database.clone();
        let task = tokio::spawn(run(endpoint, watch, replica.clone(), changed_tx, rx));
        Session {
            replica,
            changed,
            requests,
            task,
            database,
        }
    }

    /// The replica (held briefly: the session's task waits on it to apply updates).
    pub fn replica(&self) -> MutexGuard<'_, Replica> {
        lock(&self.replica)
    }

    /// Wait until the replica is live, up to `timeout`; whether it is.
    pub async fn wait_live(&self, timeout: Duration) -> bool {
        let mut changed = self.changed.clone();
        let deadline = Instant::now() + timeout;
        loop {
            if self.replica().live {
                return true;
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => continue,
                _ => return self.replica().live,
            }
        }
    }

    /// Run `ops` in one transaction on the session's database; the results of each op.
    /// An op's own error (a failed `where`, a constraint) comes back as `Refused`.
    pub async fn transact(
        &self,
        ops: Vec<Value>,
        timeout: Duration,
    ) -> Result<Vec<Value>, OvsdbError> {
        let (reply, rx) = oneshot::channel();
        let mut params = vec![Value::String(self.database.clone())];
        params.extend(ops);
        let secs = timeout.as_secs_f64();
        let timed_out = OvsdbError::Timeout {
            what: "a transact",
            secs,
        };
        let sent = tokio::time::timeout(
            timeout,
            self.requests.send(Transact {
                ops: params,
                deadline: Instant::now() + timeout,
                reply,
            }),
        )
        .await;
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(OvsdbError::Down("the session has ended".into())),
            Err(_) => return Err(timed_out),
        }
        let results = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r?,
            Ok(Err(_)) => {
                // The task has already said why in the replica.
                let why = self.replica().down_reason.clone();
                return Err(OvsdbError::Down(
                    why.unwrap_or_else(|| "the connection was lost".into()),
                ));
            }
            Err(_) => return Err(timed_out),
        };
        // RFC 7047 §4.1.3: one result per op, an op's error in its own object, and one
        // more for a transaction that failed after its ops (a constraint).
        for r in &results {
            if let Some(error) = r.get("error").and_then(Value::as_str) {
                return Err(OvsdbError::Refused {
                    what: "a transact",
                    error: error.to_owned(),
                    details: r.get("details").and_then(Value::as_str).map(String::from),
                });
            }
        }
        Ok(results)
    }
}

/// The replica, even if a thread panicked holding it (its rows are replaced whole on
/// the next resync, never left half-applied by a panic in between).
fn lock(replica: &Mutex<Replica>) -> MutexGuard<'_, Replica> {
    replica
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The first wait before reconnecting, doubled per failure up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(8);

async fn run(
    endpoint: Endpoint,
    watch: Watch,
    replica: Arc<Mutex<Replica>>,
    changed: watch::Sender<u64>,
    mut requests: mpsc::Receiver<Transact>,
) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let outcome = match connect(&endpoint).await {
            Ok(Stream::Unix(s)) => {
                let (r, w) = s.into_split();
                serve(r, w, &watch, &replica, &changed, &mut requests).await
            }
            Ok(Stream::Tcp(s)) => {
                let (r, w) = s.into_split();
                serve(r, w, &watch, &replica, &changed, &mut requests).await
            }
            Err(e) => Err((format!("cannot connect to {endpoint}: {e}"), false)),
        };
        let (reason, was_live) = match outcome {
            Ok(()) => return, // the session was dropped
            Err(e) => e,
        };
        {
            let mut r = lock(&replica);
            if r.live {
                tracing::warn!(endpoint = %endpoint, error = %reason, "OVSDB session lost; reconnecting");
            }
            r.live = false;
            r.down_reason = Some(reason);
            r.generation = r.generation.wrapping_add(1);
            changed.send_replace(r.generation);
        }
        if was_live {
            backoff = MIN_BACKOFF;
        }
        // Requests made while down fail at once rather than wait out the backoff.
        let until = Instant::now() + backoff;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(until) => break,
                req = requests.recv() => match req {
                    Some(t) => {
                        let why = lock(&replica).down_reason.clone();
                        let _ = t.reply.send(Err(OvsdbError::Down(why.unwrap_or_default())));
                    }
                    None => return,
                },
            }
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

enum Stream {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

async fn connect(endpoint: &Endpoint) -> Result<Stream, String> {
    let attempt = async {
        match endpoint {
            Endpoint::Unix(p) => tokio::net::UnixStream::connect(p).await.map(Stream::Unix),
            Endpoint::Tcp(a) => tokio::net::TcpStream::connect(a).await.map(Stream::Tcp),
        }
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "no connection within {}s",
            CONNECT_TIMEOUT.as_secs()
        )),
    }
}

/// What a reply answers.
enum Pending {
    Schema,
    Monitor,
    Echo,
    Caller(oneshot::Sender<Result<Vec<Value>, OvsdbError>>, Instant),
}

/// The id of sluice's one monitor on a session.
const MONITOR_ID: &str = "sluice";

/// One connection, until it fails (`Err((why, whether it was live))`) or the session is
/// dropped (`Ok`).
async fn serve<R, W>(
    mut reader: R,
    writer: W,
    watch: &Watch,
    replica: &Mutex<Replica>,
    changed: &watch::Sender<u64>,
    requests: &mut mpsc::Receiver<Transact>,
) -> Result<(), (String, bool)>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    // Writes run on their own task so that reading never waits on them.
    let (out, out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let writer = tokio::spawn(write_all(writer, out_rx));
    let result = session_loop(&mut reader, &out, watch, replica, changed, requests).await;
    writer.abort();
    result
}

async fn write_all<W: AsyncWrite + Unpin>(mut w: W, mut rx: mpsc::UnboundedReceiver<Vec<u8>>) {
    while let Some(bytes) = rx.recv().await {
        if w.write_all(&bytes).await.is_err() {
            return;
        }
    }
}

async fn session_loop<R: AsyncRead + Unpin>(
    reader: &mut R,
    out: &mpsc::UnboundedSender<Vec<u8>>,
    watch: &Watch,
    replica: &Mutex<Replica>,
    changed: &watch::Sender<u64>,
    requests: &mut mpsc::Receiver<Transact>,
) -> Result<(), (String, bool)> {
    let mut live = false;
    let fail = |why: String, live: bool| Err((why, live));
    let mut pending: HashMap<u64, Pending> = HashMap::new();
    let mut next_id: u64 = 0;
    let mut send =
        |pending: &mut HashMap<u64, Pending>, method: &str, params: Value, p: Pending| {
            next_id += 1;
            pending.insert(next_id, p);
            let msg = json!({"method": method, "params": params, "id": next_id});
            out.send(msg.to_string().into_bytes()).is_ok()
        };
    if !send(
        &mut pending,
        "get_schema",
        json!([watch.database]),
        Pending::Schema,
    ) {
        return fail("the writer ended".into(), false);
    }
    let mut framer = Framer::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut last_heard = Instant::now();
    let mut echo_out = false;
    let mut probe = tokio::time::interval(watch.probe.max(Duration::from_millis(100)));
    probe.tick().await;
    loop {
        tokio::select! {
            n = reader.read(&mut buf) => {
                let n = match n {
                    Ok(0) => return fail("the server closed the connection".into(), live),
                    Ok(n) => n,
                    Err(e) => return fail(format!("reading: {e}"), live),
                };
                last_heard = Instant::now();
                echo_out = false;
                framer.push(&buf[..n]);
                loop {
                    let msg = match framer.next() {
                        Ok(Some(m)) => m,
                        Ok(None) => break,
                        Err(e) => return fail(e.to_string(), live),
                    };
                    match handle(msg, &mut pending, replica, watch) {
                        Ok(Handled::Nothing) => {}
                        Ok(Handled::Reply(r)) => {
                            if out.send(r.to_string().into_bytes()).is_err() {
                                return fail("the writer ended".into(), live);
                            }
                        }
                        Ok(Handled::Schema(columns)) => {
                            let params = json!([watch.database, MONITOR_ID, columns]);
                            if !send(&mut pending, "monitor_cond", params, Pending::Monitor) {
                                return fail("the writer ended".into(), live);
                            }
                        }
                        Ok(Handled::Changed { now_live }) => {
                            live |= now_live;
                            let r = lock(replica);
                            changed.send_replace(r.generation);
                        }
                        Err(e) => return fail(e.to_string(), live),
                    }
                }
            }
            req = requests.recv() => {
                let Some(t) = req else { return Ok(()) };
                if !send(&mut pending, "transact", Value::Array(t.ops), Pending::Caller(t.reply, t.deadline)) {
                    return fail("the writer ended".into(), live);
                }
            }
            _ = probe.tick() => {
                // A transaction the server is still working on keeps it silent (it
                // is single-threaded: a large one takes seconds on a large switch),
                // so silence counts against it only once a caller's deadline passed.
                let now = Instant::now();
                let waiting = pending.values().any(|p| matches!(p, Pending::Caller(_, d) if *d > now));
                let late = pending
                    .values()
                    .any(|p| matches!(p, Pending::Caller(_, d) if *d <= now && last_heard < *d));
                if late {
                    return fail("a transact went unanswered past its deadline".into(), live);
                }
                if waiting || last_heard.elapsed() < watch.probe {
                    continue;
                }
                if echo_out {
                    return fail(
                        format!("no answer within {:.1}s", 2.0 * watch.probe.as_secs_f64()),
                        live,
                    );
                }
                echo_out = true;
                if !send(&mut pending, "echo", json!([]), Pending::Echo) {
                    return fail("the writer ended".into(), live);
                }
            }
        }
    }
}

enum Handled {
    Nothing,
    /// An answer to send back (to the server's `echo`).
    Reply(Value),
    /// The schema is known: monitor these columns.
    Schema(Value),
    /// The replica changed; `now_live` when this was the monitor's initial reply.
    Changed {
        now_live: bool,
    },
}

/// Handle one message. It is taken whole: an update's rows move into the replica rather
/// than being copied (at 10,000 ports the initial answer alone is tens of MB parsed).
fn handle(
    mut msg: Value,
    pending: &mut HashMap<u64, Pending>,
    replica: &Mutex<Replica>,
    watch: &Watch,
) -> Result<Handled, OvsdbError> {
    if let Some(method) = msg.get("method").and_then(Value::as_str) {
        let id = msg.get("id").cloned().unwrap_or(Value::Null);
        return match method {
            "echo" => Ok(Handled::Reply(
                json!({"id": id, "result": msg.get("params").cloned().unwrap_or(json!([])), "error": null}),
            )),
            "update2" => {
                let params = msg.get_mut("params").map(Value::take);
                let Some(Value::Array(mut params)) = params else {
                    return Err(OvsdbError::Protocol(
                        "an update2 without its two params".into(),
                    ));
                };
                if params.len() != 2 {
                    return Err(OvsdbError::Protocol(
                        "an update2 without its two params".into(),
                    ));
                }
                let updates = params.pop().unwrap_or(Value::Null);
                if params[0].as_str() != Some(MONITOR_ID) {
                    return Ok(Handled::Nothing);
                }
                lock(replica).apply(updates)?;
                Ok(Handled::Changed { now_live: false })
            }
            _ if id.is_null() => Ok(Handled::Nothing),
            other => Ok(Handled::Reply(
                json!({"id": id, "result": null, "error": format!("sluice does not serve {other}")}),
            )),
        };
    }
    let Some(id) = msg.get("id").and_then(Value::as_u64) else {
        return Err(OvsdbError::Protocol(format!(
            "a message that is neither request nor reply: {msg}"
        )));
    };
    let Some(p) = pending.remove(&id) else {
        return Ok(Handled::Nothing);
    };
    let result = msg.get_mut("result").map_or(Value::Null, Value::take);
    let error = msg.get("error").filter(|e| !e.is_null());
    let refused = |what: &'static str, e: &Value| OvsdbError::Refused {
        what,
        error: e
            .get("error")
            .and_then(Value::as_str)
            .map_or_else(|| e.to_string(), String::from),
        details: e.get("details").and_then(Value::as_str).map(String::from),
    };
    match p {
        Pending::Echo => Ok(Handled::Nothing),
        Pending::Caller(reply, _) => {
            let answer = match (error, result) {
                (Some(e), _) => Err(refused("a transact", e)),
                (None, Value::Array(results)) => Ok(results),
                (None, other) => Err(OvsdbError::Protocol(format!(
                    "a transact result that is not an array: {other}"
                ))),
            };
            let _ = reply.send(answer);
            Ok(Handled::Nothing)
        }
        Pending::Schema => {
            if let Some(e) = error {
                return Err(refused("get_schema", e));
            }
            let schema = Schema::parse(&result, &watch.database)?;
            let mut requests = Map::new();
            let mut have = HashMap::new();
            for (table, wanted) in &watch.tables {
                let Some(cols) = schema.columns.get(table) else {
                    return Err(OvsdbError::Protocol(format!(
                        "a schema without table {table}"
                    )));
                };
                let present: Vec<&String> =
                    wanted.iter().filter(|c| cols.contains_key(*c)).collect();
                have.insert(
                    table.clone(),
                    present.iter().map(|c| (*c).clone()).collect(),
                );
                requests.insert(table.clone(), json!([{"columns": present}]));
            }
            let mut r = lock(replica);
            r.schema = schema;
            r.columns = have;
            Ok(Handled::Schema(Value::Object(requests)))
        }
        Pending::Monitor => {
            if let Some(e) = error {
                return Err(refused("monitor_cond", e));
            }
            let mut r = lock(replica);
            // A resync: the old session's rows are all replaced.
            r.tables.clear();
            for (table, _) in &watch.tables {
                r.tables.insert(table.clone(), HashMap::new());
            }
            r.apply(result)?;
            r.live = true;
            r.down_reason = None;
            tracing::debug!("OVSDB replica live");
            Ok(Handled::Changed { now_live: true })
        }
    }
}

#[cfg(test)]
mod tests;
