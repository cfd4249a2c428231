//! Incus (and LXD, whose REST API it shares): the instances, asked over the daemon's
//! unix socket, and its lifecycle events, so a started instance is known within a poll.
//!
//! From `GET /1.0/instances?recursion=1&all-projects=true`, each running instance:
//! - its name is the instance id in the `default` project, `<project>.<name>` in any
//!   other (instance names are host names: they hold no dot, so the two never collide),
//!   and is kept across a move between cluster members;
//! - each NIC's host-side device is `volatile.<nic>.host_name` (a veth with a random
//!   name for a container, a tap for a VM); NICs without one (macvlan, SR-IOV,
//!   physical) have no host device to count;
//! - `limits.egress` is the NIC's upload limit and `limits.ingress` its download limit
//!   (the instance's view, as Incus documents them), `limits.max` both; Incus shapes
//!   them with tc itself;
//! - `user.sluice.tags` (split on `,`), `user.sluice.base_rate` and
//!   `user.sluice.download_rate` are the operator's tags and plan.
//!
//! `recursion=1` already holds the config with its `volatile.*` keys; `recursion=2`
//! would also make the daemon gather every instance's live state, which costs far more
//! and says nothing more that sluice uses.
//!
//! Changes: a thread holds `/1.0/events?type=lifecycle` (a websocket over the same
//! socket) and counts the `instance-*` events; that count is the source's stamp, so any
//! start, stop, hotplug or rename is read at the next poll. While the event stream is
//! down the stamp is unknown and the source is read every `inventory.refresh`; when it
//! comes back the count moves, so what was missed is read at once.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;
use tracing::{info, warn};

use super::{Instance, Nic, Problem, Reading, Source, SourceError};
use crate::config::{IncusSource, SourceKind, Stop};
use crate::model::ids::{IfName, InstanceId, Tag};
use crate::model::units::Rate;
use crate::sys::unix_http::{self, Response};

/// A list of every instance on a large host stays far below this.
const ANSWER_LIMIT: usize = 64 * 1024 * 1024;
/// One API call's deadline: the daemon answers a list in well under a second.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const INSTANCES: &str = "/1.0/instances?recursion=1&all-projects=true";
const EVENTS: &str = "ws://localhost/1.0/events?type=lifecycle&all-projects=true";
/// How long the event thread blocks in one read before it looks at its stop flag.
const EVENT_READ: Duration = Duration::from_secs(1);
const RECONNECT_MAX: Duration = Duration::from_secs(30);

pub struct IncusApi {
    socket: PathBuf,
    events: Option<Arc<EventCount>>,
}

impl IncusApi {
    pub fn new(config: &IncusSource) -> IncusApi {
        IncusApi {
            socket: config.socket.clone(),
            events: None,
        }
    }
}

impl Drop for IncusApi {
    fn drop(&mut self) {
        if let Some(e) = &self.events {
            // The thread sees it within a read and ends.
            e.stop.store(true, Ordering::Relaxed);
        }
    }
}

impl Source for IncusApi {
    fn kind(&self) -> SourceKind {
        SourceKind::Incus
    }
    fn stamp(&mut self) -> Option<u64> {
        let events = self
            .events
            .get_or_insert_with(|| EventCount::listen(self.socket.clone()));
        events
            .connected
            .load(Ordering::Relaxed)
            .then(|| events.changes.load(Ordering::Relaxed))
    }
    fn read(&mut self) -> Result<Reading, SourceError> {
        let body = call(&self.socket, "GET", INSTANCES, None)?;
        let mut reading = parse_instances(&body)?;
        for i in &mut reading.instances {
            let (project, name) = split_id(i.id.as_str());
            i.stop = Some(Stop::Incus {
                socket: self.socket.clone(),
                project: project.to_owned(),
                name: name.to_owned(),
            });
        }
        Ok(reading)
    }
}

/// The instance's project and name back from its id.
fn split_id(id: &str) -> (&str, &str) {
    id.split_once('.').unwrap_or(("default", id))
}

/// The API's envelope around every answer.
#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    error: String,
    #[serde(default)]
    metadata: serde_json::Value,
    /// An async answer's operation (`/1.0/operations/<uuid>`).
    #[serde(default)]
    operation: String,
}

/// One call, its envelope checked: the `metadata` of a sync or async answer.
fn call(
    socket: &Path,
    method: &str,
    target: &str,
    body: Option<&serde_json::Value>,
) -> Result<Envelope, SourceError> {
    let what = || format!("incus {method} {target}");
    let body = body.map(serde_json::Value::to_string);
    let Response { status, body } = unix_http::request(
        socket,
        method,
        target,
        body.as_deref().map(str::as_bytes),
        CALL_TIMEOUT,
        ANSWER_LIMIT,
    )
    .map_err(|e| SourceError::Answer {
        what: what(),
        message: e.to_string(),
    })?;
    let envelope: Envelope = serde_json::from_slice(&body).map_err(|e| SourceError::Answer {
        what: what(),
        message: format!("HTTP {status}, not the API's JSON: {e}"),
    })?;
    match envelope.kind.as_str() {
        "sync" | "async" if (200..300).contains(&status) => Ok(envelope),
        "error" => Err(SourceError::Answer {
            what: what(),
            message: format!("HTTP {status}: {}", envelope.error),
        }),
        other => Err(SourceError::Answer {
            what: what(),
            message: format!("HTTP {status}, an answer of type {other:?}"),
        }),
    }
}

#[derive(Deserialize)]
struct ApiInstance {
    name: String,
    #[serde(default)]
    project: Option<String>,
    status: String,
    #[serde(default)]
    expanded_config: BTreeMap<String, String>,
    #[serde(default)]
    expanded_devices: BTreeMap<String, BTreeMap<String, String>>,
}

/// `GET /1.0/instances?recursion=1`'s answer. An instance that cannot be read is a
/// problem naming it, and only it is left out; an answer that is not a list of
/// instances at all is an error (the last good reading stays in use).
fn parse_instances(envelope: &Envelope) -> Result<Reading, SourceError> {
    let list = envelope
        .metadata
        .as_array()
        .ok_or_else(|| SourceError::Answer {
            what: format!("incus GET {INSTANCES}"),
            message: "metadata is not a list of instances".into(),
        })?;
    let mut reading = Reading::default();
    for (i, raw) in list.iter().enumerate() {
        let found: ApiInstance = match serde_json::from_value(raw.clone()) {
            Ok(f) => f,
            Err(e) => {
                let name = raw.get("name").and_then(|n| n.as_str()).unwrap_or("?");
                reading.problems.push(Problem::at(
                    Path::new(&format!("/1.0/instances/{name}")),
                    None,
                    format!("instance {} of the list: {e}", i + 1),
                ));
                continue;
            }
        };
        match instance(&found) {
            Ok(Some(inst)) => reading.instances.push(inst),
            Ok(None) => {}
            Err(p) => reading.problems.push(p),
        }
    }
    Ok(reading)
}

/// One listed instance; `None` when it is not running (it has no host devices).
fn instance(found: &ApiInstance) -> Result<Option<Instance>, Problem> {
    let project = found.project.as_deref().unwrap_or("default");
    let place = PathBuf::from(format!("/1.0/instances/{}?project={project}", found.name));
    let at = |m: String| Problem::at(&place, None, m);
    if !matches!(found.status.as_str(), "Running" | "Frozen") {
        return Ok(None);
    }
    let id = if project == "default" {
        found.name.clone()
    } else {
        format!("{project}.{}", found.name)
    };
    if found.name.contains('.') {
        return Err(at(format!("the name {:?} holds a dot", found.name)));
    }
    let id = InstanceId::new(&id).map_err(|e| at(format!("instance id {id:?}: {e}")))?;
    let config = &found.expanded_config;
    let mut tags = BTreeSet::new();
    if let Some(list) = config.get("user.sluice.tags") {
        for t in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            tags.insert(Tag::new(t).map_err(|e| at(format!("user.sluice.tags: {t:?}: {e}")))?);
        }
    }
    let plan_rate = |key: &str| -> Result<Option<Rate>, Problem> {
        config
            .get(key)
            .map(|v| {
                v.parse::<Rate>()
                    .map_err(|e| e.to_string())
                    .and_then(Rate::as_limit)
                    .map_err(|e| at(format!("{key}: {v:?}: {e}")))
            })
            .transpose()
    };
    let plan = (
        plan_rate("user.sluice.base_rate")?,
        plan_rate("user.sluice.download_rate")?,
    );
    let mut interfaces = Vec::new();
    let mut shaped = false;
    for (nic, device) in &found.expanded_devices {
        if device.get("type").map(String::as_str) != Some("nic") {
            continue;
        }
        let key = format!("volatile.{nic}.host_name");
        let Some(host) = config.get(&key) else {
            continue;
        };
        let interface = IfName::new(host).map_err(|e| at(format!("{key}: {host:?}: {e}")))?;
        let limit = |key: &str| -> Result<Option<Rate>, Problem> {
            device
                .get(key)
                .filter(|v| !v.trim().is_empty())
                .map(|v| {
                    parse_bit_rate(v).map_err(|e| at(format!("devices.{nic}.{key}: {v:?}: {e}")))
                })
                .transpose()
        };
        let both = limit("limits.max")?;
        let out = limit("limits.egress")?.or(both);
        let inb = limit("limits.ingress")?.or(both);
        shaped |= out.is_some() || inb.is_some();
        interfaces.push(Nic {
            interface,
            upload: plan.0.or(out),
            download: plan.1.or(plan.0).or(inb),
            port: Default::default(),
        });
    }
    Ok(Some(Instance {
        id,
        source: SourceKind::Incus,
        name: Some(found.name.clone()),
        stop: None,
        shaped,
        tags,
        interfaces,
    }))
}

/// A network limit in Incus's units: a number and a bit suffix, decimal (`kbit`,
/// `Mbit`, … ×1000) or binary (`Kibit`, `Mibit`, … ×1024), case as Incus writes them.
pub fn parse_bit_rate(v: &str) -> Result<Rate, String> {
    const UNITS: [(&str, u64); 13] = [
        ("Kibit", 1 << 10),
        ("Mibit", 1 << 20),
        ("Gibit", 1 << 30),
        ("Tibit", 1 << 40),
        ("Pibit", 1 << 50),
        ("Eibit", 1 << 60),
        ("kbit", 1_000),
        ("Mbit", 1_000_000),
        ("Gbit", 1_000_000_000),
        ("Tbit", 1_000_000_000_000),
        ("Pbit", 1_000_000_000_000_000),
        ("Ebit", 1_000_000_000_000_000_000),
        ("bit", 1),
    ];
    let v = v.trim();
    let (num, mult) = UNITS
        .iter()
        .find_map(|(s, m)| v.strip_suffix(s).map(|n| (n, *m)))
        .unwrap_or((v, 1));
    let n: f64 = num
        .trim()
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n >= 0.0)
        .ok_or("not a number and one of bit, kbit, Mbit, Gbit, Tbit, Kibit, Mibit, Gibit")?;
    let bits = n * mult as f64;
    if bits > u64::MAX as f64 {
        return Err("out of range".into());
    }
    Rate::from_bits_per_sec(bits.round() as u64).as_limit()
}

/// Stop an instance through the API: a clean stop that Incus forces after `timeout`
/// when `force`, else asks only. What the finished operation said, or why not.
pub fn stop(
    socket: &Path,
    project: &str,
    name: &str,
    timeout: Duration,
    force: bool,
) -> Result<String, SourceError> {
    let secs = timeout.as_secs();
    let target = format!("/1.0/instances/{name}/state?project={project}");
    let body = serde_json::json!({"action": "stop", "timeout": secs, "force": force});
    let started = call(socket, "PUT", &target, Some(&body))?;
    if started.operation.is_empty() {
        return Ok("stopped".into());
    }
    // The operation ends when the instance stopped or the stop failed.
    let wait = format!("{}/wait?timeout={}", started.operation, secs + 5);
    let done = call(socket, "GET", &wait, None)?;
    let status = done.metadata.get("status").and_then(|s| s.as_str());
    let err = done.metadata.get("err").and_then(|s| s.as_str());
    match (status, err) {
        (Some("Success"), _) => Ok("stopped".into()),
        (Some(s), Some(e)) if !e.is_empty() => Err(SourceError::Answer {
            what: format!("incus stop {name}"),
            message: format!("{s}: {e}"),
        }),
        (s, _) => Err(SourceError::Answer {
            what: format!("incus stop {name}"),
            message: format!("the operation ended {}", s.unwrap_or("without a status")),
        }),
    }
}

/// The lifecycle event stream's state, shared with its thread.
struct EventCount {
    changes: AtomicU64,
    connected: AtomicBool,
    stop: AtomicBool,
}

impl EventCount {
    fn listen(socket: PathBuf) -> Arc<EventCount> {
        let count = Arc::new(EventCount {
            changes: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let shared = count.clone();
        let spawned = std::thread::Builder::new()
            .name("sluice-incus-events".into())
            .spawn(move || listen(&socket, &shared));
        if let Err(e) = spawned {
            warn!("incus: cannot start the event thread, reading every inventory.refresh: {e}");
        }
        count
    }
}

/// Hold the event stream, reconnecting with backoff, until told to stop.
fn listen(socket: &Path, count: &EventCount) {
    let mut backoff = Duration::from_secs(1);
    let mut said_down = false;
    while !count.stop.load(Ordering::Relaxed) {
        match follow(socket, count) {
            Ok(()) => return,
            Err(e) => {
                let was = count.connected.swap(false, Ordering::Relaxed);
                if was {
                    backoff = Duration::from_secs(1);
                }
                if !said_down || was {
                    warn!(
                        source = "incus",
                        "inventory: no lifecycle events ({e}): reading every inventory.refresh until they come back"
                    );
                    said_down = true;
                }
            }
        }
        let until = std::time::Instant::now() + backoff;
        while std::time::Instant::now() < until && !count.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
        }
        backoff = (backoff * 2).min(RECONNECT_MAX);
    }
}

/// One connection to the event stream, read until it fails or the source is dropped.
fn follow(socket: &Path, count: &EventCount) -> Result<(), String> {
    let stream = UnixStream::connect(socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    stream
        .set_read_timeout(Some(CALL_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(CALL_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    let (mut ws, _) = tungstenite::client::client(EVENTS, stream).map_err(|e| match e {
        tungstenite::HandshakeError::Failure(e) => format!("the events handshake: {e}"),
        tungstenite::HandshakeError::Interrupted(_) => "the events handshake timed out".into(),
    })?;
    ws.get_ref()
        .set_read_timeout(Some(EVENT_READ))
        .map_err(|e| e.to_string())?;
    count.connected.store(true, Ordering::Relaxed);
    // Whatever happened while the stream was down is read now.
    count.changes.fetch_add(1, Ordering::Relaxed);
    info!(
        source = "incus",
        "inventory: following incus lifecycle events"
    );
    loop {
        if count.stop.load(Ordering::Relaxed) {
            let _ = ws.close(None);
            return Ok(());
        }
        match ws.read() {
            Ok(tungstenite::Message::Text(text)) => {
                if is_instance_event(text.as_str()) {
                    count.changes.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(tungstenite::Message::Close(_)) => return Err("the daemon closed the stream".into()),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// A lifecycle event about an instance (`instance-started`, `-stopped`, `-updated`,
/// `-renamed`, …). Anything else, or a line that is not an event, changes nothing.
fn is_instance_event(text: &str) -> bool {
    #[derive(Deserialize)]
    struct Event {
        #[serde(rename = "type")]
        kind: String,
        metadata: Meta,
    }
    #[derive(Deserialize)]
    struct Meta {
        action: String,
    }
    serde_json::from_str::<Event>(text)
        .is_ok_and(|e| e.kind == "lifecycle" && e.metadata.action.starts_with("instance-"))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;

    use super::*;

    fn envelope(metadata: serde_json::Value) -> Envelope {
        Envelope {
            kind: "sync".into(),
            error: String::new(),
            metadata,
            operation: String::new(),
        }
    }

    fn container(
        name: &str,
        project: &str,
        status: &str,
        veth: &str,
        extra: serde_json::Value,
    ) -> serde_json::Value {
        let mut v = serde_json::json!({
            "name": name,
            "project": project,
            "status": status,
            "type": "container",
            "expanded_config": {
                "image.os": "busybox",
                "volatile.eth0.host_name": veth,
                "volatile.eth0.hwaddr": "00:16:3e:12:34:56",
            },
            "expanded_devices": {
                "eth0": {"type": "nic", "nictype": "bridged", "parent": "incusbr0", "name": "eth0"},
                "root": {"type": "disk", "path": "/", "pool": "default"},
            },
        });
        merge(&mut v, extra);
        v
    }

    fn merge(v: &mut serde_json::Value, extra: serde_json::Value) {
        if let (Some(to), serde_json::Value::Object(from)) = (v.as_object_mut(), extra) {
            for (k, x) in from {
                match (to.get_mut(&k), x) {
                    (
                        Some(slot @ serde_json::Value::Object(_)),
                        x @ serde_json::Value::Object(_),
                    ) => merge(slot, x),
                    (_, x) => {
                        to.insert(k, x);
                    }
                }
            }
        }
    }

    #[test]
    fn limits_are_read_in_incus_units() {
        let cases = [
            ("10Mbit", Ok(10_000_000)),
            ("1Gbit", Ok(1_000_000_000)),
            ("100kbit", Ok(100_000)),
            ("2Mibit", Ok(2 * 1024 * 1024)),
            ("1.5Gbit", Ok(1_500_000_000)),
            ("5000000", Ok(5_000_000)),
            ("5000000bit", Ok(5_000_000)),
            ("10MB", Err("not a number")),
            ("fast", Err("not a number")),
            ("-1Mbit", Err("not a number")),
            ("10bit", Err("")),
        ];
        for (text, want) in cases {
            let got = parse_bit_rate(text).map(Rate::bits_per_sec);
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{text}"),
                (Err(g), Err(w)) => assert!(g.contains(w), "{text}: {g}"),
                (g, w) => panic!("{text}: got {g:?}, wanted {w:?}"),
            }
        }
    }

    #[test]
    fn running_instances_map_their_host_devices_tags_and_limits() {
        let list = serde_json::json!([
            container(
                "web1",
                "default",
                "Running",
                "veth1c71c71c",
                serde_json::json!({
                    "expanded_config": {"user.sluice.tags": "gold, eu", "volatile.eth1.host_name": "tap7f3a"},
                    "expanded_devices": {
                        "eth0": {"limits.egress": "10Mbit", "limits.ingress": "20Mbit"},
                        "eth1": {"type": "nic", "nictype": "bridged", "parent": "br1", "limits.max": "5Mbit"},
                        "eth2": {"type": "nic", "nictype": "macvlan", "parent": "eno1"},
                    },
                })
            ),
            container(
                "db",
                "shop",
                "Frozen",
                "veth0369d034",
                serde_json::json!({
                    "expanded_config": {"user.sluice.base_rate": "200mbit"},
                    "expanded_devices": {"eth0": {"limits.egress": "10Mbit"}},
                })
            ),
            container(
                "idle",
                "default",
                "Stopped",
                "veth99999999",
                serde_json::json!({})
            ),
            container(
                "plain",
                "default",
                "Running",
                "veth2b3c4d5f",
                serde_json::json!({})
            ),
        ]);
        let reading = parse_instances(&envelope(list)).unwrap();
        assert_eq!(reading.problems, vec![]);
        type Row = (
            String,
            Vec<(String, Option<String>, Option<String>)>,
            bool,
            Vec<String>,
        );
        let got: Vec<Row> = reading
            .instances
            .iter()
            .map(|i| {
                (
                    i.id.to_string(),
                    i.interfaces
                        .iter()
                        .map(|n| {
                            (
                                n.interface.to_string(),
                                n.upload.map(|r| r.to_string()),
                                n.download.map(|r| r.to_string()),
                            )
                        })
                        .collect(),
                    i.shaped,
                    i.tags.iter().map(|t| t.to_string()).collect(),
                )
            })
            .collect();
        let s = |x: &str| Some(x.to_owned());
        assert_eq!(
            got,
            vec![
                (
                    "web1".into(),
                    vec![
                        ("veth1c71c71c".into(), s("10mbit"), s("20mbit")),
                        ("tap7f3a".into(), s("5mbit"), s("5mbit")),
                    ],
                    true,
                    vec!["eu".into(), "gold".into()],
                ),
                // Another project's instance: its id carries the project; the
                // operator's plan wins over Incus's limit, for both directions.
                (
                    "shop.db".into(),
                    vec![("veth0369d034".into(), s("200mbit"), s("200mbit"))],
                    true,
                    vec![]
                ),
                (
                    "plain".into(),
                    vec![("veth2b3c4d5f".into(), None, None)],
                    false,
                    vec![]
                ),
            ]
        );
        assert_eq!(reading.instances[0].name.as_deref(), Some("web1"));
        assert_eq!(split_id("shop.db"), ("shop", "db"));
        assert_eq!(split_id("web1"), ("default", "web1"));
    }

    #[test]
    fn one_bad_instance_is_a_problem_naming_it_and_the_rest_are_read() {
        let list = serde_json::json!([
            container("a", "default", "Running", "veth0000000a", serde_json::json!({"expanded_config": {"user.sluice.tags": "ok,bad tag"}})),
            container("b", "default", "Running", "veth0000000b", serde_json::json!({"expanded_devices": {"eth0": {"limits.egress": "lots"}}})),
            container("c", "default", "Running", "veth0000000c", serde_json::json!({"expanded_config": {"volatile.eth0.host_name": "this-name-is-far-too-long"}})),
            {"name": "d", "status": 7},
            container("e", "default", "Running", "veth0000000e", serde_json::json!({})),
        ]);
        let reading = parse_instances(&envelope(list)).unwrap();
        let ids: Vec<&str> = reading.instances.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["e"]);
        let problems: Vec<String> = reading.problems.iter().map(ToString::to_string).collect();
        let wants = [
            "/1.0/instances/a?project=default: user.sluice.tags: \"bad tag\"",
            "/1.0/instances/b?project=default: devices.eth0.limits.egress: \"lots\"",
            "/1.0/instances/c?project=default: volatile.eth0.host_name: \"this-name-is-far-too-long\"",
            "/1.0/instances/d: instance 4 of the list",
        ];
        assert_eq!(problems.len(), wants.len(), "{problems:#?}");
        for (got, want) in problems.iter().zip(wants) {
            assert!(
                got.starts_with(want),
                "{got}\n  wanted it to start with {want}"
            );
        }
    }

    /// A fake daemon: answers each connection in turn with the next reply, as-is.
    fn daemon(replies: Vec<&'static str>) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("unix.socket");
        let listener = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            for reply in replies {
                let Ok((mut s, _)) = listener.accept() else {
                    return;
                };
                let mut got = Vec::new();
                let mut b = [0u8; 4096];
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut b) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&b[..n]),
                    }
                }
                let _ = s.write_all(reply.as_bytes());
            }
        });
        (dir, path)
    }

    fn http(status: &str, body: &str) -> &'static str {
        format!("HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).leak()
    }

    #[test]
    fn a_daemon_that_refuses_or_answers_garbage_fails_the_read_with_why() {
        let cases: Vec<(&'static str, &str)> = vec![
            ("garbage\r\n\r\n", "not an HTTP answer"),
            (
                http("200 OK", "<html>hi</html>"),
                "HTTP 200, not the API's JSON",
            ),
            (
                http(
                    "403 Forbidden",
                    r#"{"type":"error","error":"not authorized","error_code":403}"#,
                ),
                "HTTP 403: not authorized",
            ),
            (
                http(
                    "200 OK",
                    r#"{"type":"sync","status":"Success","metadata":{"name":"x"}}"#,
                ),
                "metadata is not a list of instances",
            ),
            (
                http("200 OK", r#"{"type":"weird","metadata":[]}"#),
                "an answer of type \"weird\"",
            ),
        ];
        for (reply, want) in cases {
            let (_d, path) = daemon(vec![reply]);
            let mut api = IncusApi::new(&IncusSource { socket: path });
            let err = api.read().unwrap_err().to_string();
            assert!(err.contains(want), "{err} (wanted {want:?})");
            assert!(err.contains("incus GET /1.0/instances"), "{err}");
        }
        let dir = tempfile::tempdir().unwrap();
        let mut api = IncusApi::new(&IncusSource {
            socket: dir.path().join("absent.socket"),
        });
        let err = api.read().unwrap_err().to_string();
        assert!(err.contains("cannot connect"), "{err}");
        // No event stream either: the stamp is unknown, so it is read every refresh.
        assert_eq!(api.stamp(), None);
    }

    #[test]
    fn instances_carry_an_api_stop_and_a_stop_waits_for_its_operation() {
        let list = serde_json::json!({"type": "sync", "metadata": [container("web1", "shop", "Running", "vethabcdef01", serde_json::json!({}))]});
        let (_d, path) = daemon(vec![
            http("200 OK", list.to_string().leak()),
            http(
                "202 Accepted",
                r#"{"type":"async","operation":"/1.0/operations/abc","metadata":{}}"#,
            ),
            http(
                "200 OK",
                r#"{"type":"sync","metadata":{"status":"Success","err":""}}"#,
            ),
            http(
                "202 Accepted",
                r#"{"type":"async","operation":"/1.0/operations/abd","metadata":{}}"#,
            ),
            http(
                "200 OK",
                r#"{"type":"sync","metadata":{"status":"Failure","err":"Failed shutting down instance"}}"#,
            ),
        ]);
        let mut api = IncusApi::new(&IncusSource {
            socket: path.clone(),
        });
        let reading = api.read().unwrap();
        assert_eq!(
            reading.instances[0].stop,
            Some(Stop::Incus {
                socket: path.clone(),
                project: "shop".into(),
                name: "web1".into()
            })
        );
        assert_eq!(
            stop(&path, "shop", "web1", Duration::from_secs(3), false).unwrap(),
            "stopped"
        );
        let err = stop(&path, "shop", "web1", Duration::from_secs(3), false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Failure: Failed shutting down instance"),
            "{err}"
        );
    }

    /// A real Incus 6.0 answer (recorded here, live state left out): two running
    /// containers with limits and tags, two stopped ones, one in another project.
    #[test]
    fn a_recorded_answer_reads_as_incus_meant_it() {
        let envelope: Envelope =
            serde_json::from_str(include_str!("testdata/incus-instances.json")).unwrap();
        let reading = parse_instances(&envelope).unwrap();
        assert_eq!(reading.problems, vec![]);
        let got: Vec<String> = reading
            .instances
            .iter()
            .map(|i| {
                let n = &i.interfaces[0];
                format!(
                    "{} {} {:?} {:?} {:?} {}",
                    i.id,
                    n.interface,
                    n.upload.map(|r| r.to_string()),
                    n.download.map(|r| r.to_string()),
                    i.tags.iter().map(Tag::as_str).collect::<Vec<_>>(),
                    i.shaped,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                r#"c1 veth564834d0 Some("10mbit") Some("20mbit") ["eu", "gold"] true"#,
                r#"c3 veth02088fec Some("10mbit") Some("20mbit") ["eu", "gold"] true"#,
                r#"p2.c2 vethf8db4842 None None [] false"#,
            ]
        );
    }

    #[test]
    fn only_instance_lifecycle_events_count() {
        let cases = [
            (
                r#"{"type":"lifecycle","metadata":{"action":"instance-started","source":"/1.0/instances/c1"}}"#,
                true,
            ),
            (
                r#"{"type":"lifecycle","metadata":{"action":"instance-updated"}}"#,
                true,
            ),
            (
                r#"{"type":"lifecycle","metadata":{"action":"image-created"}}"#,
                false,
            ),
            (r#"{"type":"logging","metadata":{"message":"x"}}"#, false),
            ("not json", false),
        ];
        for (text, want) in cases {
            assert_eq!(is_instance_event(text), want, "{text}");
        }
    }
}
