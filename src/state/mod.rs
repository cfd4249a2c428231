//! The persisted snapshot (`/run/sluice/state.json`) and the one-daemon-per-host lock.
//!
//! The snapshot is what `sluice list` reads (so it works with the agent down) and what a
//! restarted agent restores its penalties from. It is written atomically — a reader, or a
//! crash, never sees half a file — and a file that cannot be read back is moved aside
//! with a warning rather than stopping the agent.

mod record;

use std::cell::Cell;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize, Serializer};

pub use record::AgentView;

use crate::config::ActionKind;
use crate::enforce::Enforcement;
use crate::model::ids::{IfName, InstanceId, RuleName};
use crate::policy::Reason;

/// Bumped on any incompatible change to [`Snapshot`].
pub const STATE_VERSION: u32 = 1;
pub const STATE_FILE: &str = "state.json";
pub const LOCK_FILE: &str = "sluice.lock";

/// Everything `sluice list` shows, and the penalties a restart must keep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    pub version: u32,
    pub written_at: Timestamp,
    pub pid: u32,
    pub backend: String,
    pub interval_secs: u64,
    pub interfaces: Vec<InterfaceRecord>,
    /// Each (rule, instance) count of the current periods.
    #[serde(default)]
    pub quotas: Vec<QuotaRecord>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One rule's usage for one instance in its current period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaRecord {
    pub rule: RuleName,
    pub instance: InstanceId,
    pub period_start: Timestamp,
    pub period_end: Timestamp,
    /// Bytes counted in the rule's direction, and the limit.
    pub used_bytes: u64,
    /// Of `used_bytes`, what other hosts counted (a store quota of an instance that
    /// moved here): the rest was counted here.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub elsewhere_bytes: u64,
    /// 0 for a rule the store judges itself (`judged`).
    pub limit_bytes: u64,
    pub action: ActionKind,
    pub exceeded: bool,
    /// A committed rate (95th percentile) the quota store judges on the fleet's curve:
    /// `exceeded` is its verdict, and the bytes are shown, not limited.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub judged: bool,
}

/// One interface. Absent optional fields mean "none" (left out to keep a
/// 10,000-interface file small).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceRecord {
    pub interface: IfName,
    pub instance: InstanceId,
    /// The hypervisor's name for the instance (`web1`), when an inventory source told it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_name: Option<String>,
    /// Seen in the latest sample (absent ones are kept only while a penalty runs).
    pub present: bool,
    pub stage: usize,
    /// When the running penalty started and ends (wall clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Timestamp>,
    pub reason: Reason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_limit_kbps: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst_kb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_limit_kbps: Option<u64>,
    /// A port with no kernel netdev (OVS DPDK or vhost-user): counted from OVSDB's
    /// `Interface.statistics`, which vswitchd refreshes every few seconds.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub userspace: bool,
    /// The upload packet-rate limit, packets per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packet_limit_pps: Option<u64>,
    /// Average rates over the latest interval; `None` when unknown (first sample, gap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_bps: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_bps: Option<u64>,
    /// Packets per second over the same interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_pps: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_pps: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforcement: Option<Enforcement>,
    /// Packets the shapers dropped and times they held traffic back (tc backend),
    /// cumulative since sluice installed them: the evidence that a limit bites.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shaper: Option<ShaperDrops>,
    /// The strictest exceeded quota rule of the instance, e.g. "rate_limit by monthly".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The link is held down by a `disconnect` rule.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disconnected: bool,
}

/// Drops and overlimits of an interface's two shapers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShaperDrops {
    pub upload_dropped: u64,
    pub upload_overlimits: u64,
    pub download_dropped: u64,
    pub download_overlimits: u64,
}

impl ShaperDrops {
    pub fn of(c: &crate::enforce::tc::ShaperCounters) -> Self {
        let up = c.upload.unwrap_or_default();
        let down = c.download.unwrap_or_default();
        ShaperDrops {
            upload_dropped: up.dropped_packets,
            upload_overlimits: up.overlimits,
            download_dropped: down.dropped_packets,
            download_overlimits: down.overlimits,
        }
    }
}

/// What was found at the state path on start.
#[derive(Debug)]
pub enum Loaded {
    Missing,
    Found(Snapshot),
    /// Unreadable or corrupt; moved to `moved_to`.
    MovedAside {
        reason: String,
        moved_to: PathBuf,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: cannot move corrupt state aside: {source}")]
    MoveAside {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a sluice state file: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// Read the snapshot at `path` (for `sluice list`): errors are reported, nothing is moved.
pub fn read(path: &Path) -> Result<Option<Snapshot>, StateError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(StateError::Io {
                path: path.to_owned(),
                source: e,
            });
        }
    };
    parse(&bytes)
        .map(Some)
        .map_err(|reason| StateError::Corrupt {
            path: path.to_owned(),
            reason,
        })
}

pub(crate) fn parse(bytes: &[u8]) -> Result<Snapshot, String> {
    let snap: Snapshot = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if snap.version != STATE_VERSION {
        return Err(format!(
            "schema version {} (this sluice reads {STATE_VERSION})",
            snap.version
        ));
    }
    Ok(snap)
}

/// Load the snapshot for the agent: a corrupt file is moved aside
/// (`state.json.corrupt-<unix time>`), never fatal.
pub fn load_or_move_aside(path: &Path, now: Timestamp) -> Result<Loaded, StateError> {
    match read(path) {
        Ok(None) => Ok(Loaded::Missing),
        Ok(Some(s)) => Ok(Loaded::Found(s)),
        Err(StateError::Corrupt { reason, .. }) => {
            let mut aside = path.as_os_str().to_owned();
            aside.push(format!(".corrupt-{}", now.as_second()));
            let moved_to = PathBuf::from(aside);
            std::fs::rename(path, &moved_to).map_err(|e| StateError::MoveAside {
                path: path.to_owned(),
                source: e,
            })?;
            Ok(Loaded::MovedAside { reason, moved_to })
        }
        Err(e) => Err(e),
    }
}

/// Everything in a snapshot but its records, for writing.
#[derive(Debug, Clone, Serialize)]
pub struct Header<'a> {
    pub written_at: Timestamp,
    pub pid: u32,
    pub backend: &'a str,
    pub interval_secs: u64,
    pub quotas: &'a [QuotaRecord],
}

/// The on-disk shape of [`Snapshot`], with the records streamed from an iterator.
#[derive(Serialize)]
#[serde(bound = "")]
struct Streamed<'a, I: Iterator<Item = InterfaceRecord>> {
    version: u32,
    written_at: Timestamp,
    pid: u32,
    backend: &'a str,
    interval_secs: u64,
    interfaces: Stream<I>,
    quotas: &'a [QuotaRecord],
}

/// Serializes an iterator once, as a JSON array.
struct Stream<I>(Cell<Option<I>>);

impl<I: Iterator<Item = InterfaceRecord>> Serialize for Stream<I> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.take() {
            Some(records) => s.collect_seq(records),
            None => s.collect_seq(std::iter::empty::<InterfaceRecord>()),
        }
    }
}

/// Write a snapshot atomically, streaming the records (no copy of the whole file in memory).
pub fn write_streamed(
    path: &Path,
    header: &Header<'_>,
    records: impl Iterator<Item = InterfaceRecord>,
) -> Result<(), StateError> {
    let out = Streamed {
        version: STATE_VERSION,
        written_at: header.written_at,
        pid: header.pid,
        backend: header.backend,
        interval_secs: header.interval_secs,
        interfaces: Stream(Cell::new(Some(records))),
        quotas: header.quotas,
    };
    // Compact: at 10,000 interfaces pretty-printing doubles the size and the time;
    // `sluice list --json` pretty-prints for people.
    crate::sys::write_atomic(path, 0o644, |file| {
        let mut w = BufWriter::with_capacity(64 * 1024, file);
        serde_json::to_writer(&mut w, &out)?;
        w.write_all(b"\n")?;
        w.flush()
    })
    .map_err(|e| StateError::Io {
        path: path.to_owned(),
        source: e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Write an owned snapshot atomically.
    fn write(path: &Path, snap: &Snapshot) -> Result<(), StateError> {
        let header = Header {
            written_at: snap.written_at,
            pid: snap.pid,
            backend: &snap.backend,
            interval_secs: snap.interval_secs,
            quotas: &snap.quotas,
        };
        write_streamed(path, &header, snap.interfaces.iter().cloned())
    }

    fn snapshot() -> Snapshot {
        Snapshot {
            version: STATE_VERSION,
            written_at: Timestamp::from_second(1_700_000_000).unwrap(),
            pid: 42,
            backend: "ovs".into(),
            interval_secs: 60,
            interfaces: vec![InterfaceRecord {
                interface: IfName::new("kvm101.0").unwrap(),
                instance: InstanceId::new("101").unwrap(),
                instance_name: None,
                present: true,
                stage: 1,
                since: Some(Timestamp::from_second(1_700_000_000).unwrap()),
                until: Some(Timestamp::from_second(1_700_001_800).unwrap()),
                reason: Reason::Penalty { stage: 1 },
                upload_limit_kbps: Some(900_000),
                burst_kb: Some(90_000),
                upload_bps: Some(950_000_000),
                download_bps: None,
                upload_pps: None,
                download_pps: None,
                enforcement: Some(Enforcement::failed("no policer")),
                download_limit_kbps: Some(500_000),
                packet_limit_pps: None,
                userspace: false,
                shaper: Some(ShaperDrops {
                    upload_dropped: 3,
                    upload_overlimits: 40,
                    download_dropped: 0,
                    download_overlimits: 1,
                }),
                rule: Some("rate_limit by monthly".into()),
                disconnected: true,
            }],
            quotas: vec![QuotaRecord {
                rule: RuleName::new("monthly").unwrap(),
                instance: InstanceId::new("101").unwrap(),
                period_start: Timestamp::from_second(1_698_796_800).unwrap(),
                period_end: Timestamp::from_second(1_701_388_800).unwrap(),
                used_bytes: 1_200_000_000_000,
                elsewhere_bytes: 0,
                limit_bytes: 1_000_000_000_000,
                action: ActionKind::RateLimit,
                exceeded: true,
                judged: false,
            }],
        }
    }

    #[test]
    fn round_trip_and_atomic_replace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        assert!(read(&path).unwrap().is_none());
        write(&path, &snapshot()).unwrap();
        assert_eq!(read(&path).unwrap().unwrap(), snapshot());
        let mut s2 = snapshot();
        s2.interfaces.clear();
        write(&path, &s2).unwrap();
        assert_eq!(read(&path).unwrap().unwrap(), s2);
        // No temp files left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(STATE_FILE)]);
    }

    const CHILD_PATH: &str = "SLUICE_STATE_CHILD";

    /// The child half of `a_kill_between_write_and_rename_leaves_the_old_file`: writes
    /// a second snapshot with the crash point before the rename armed.
    #[test]
    #[ignore = "the child process of a_kill_between_write_and_rename_leaves_the_old_file"]
    fn child_dies_before_the_rename() {
        let path =
            std::path::PathBuf::from(std::env::var_os(CHILD_PATH).expect("run by its parent"));
        let mut s2 = snapshot();
        s2.interfaces.clear();
        s2.pid = std::process::id();
        crate::sys::crash::arm(crate::sys::crash::CrashPoint::BeforeRename);
        let _ = write(&path, &s2);
        unreachable!("the crash point kills the process");
    }

    /// A writer killed after its new file is complete and synced but before the rename:
    /// a reader still finds the old file, whole; the new one sits only in the writer's
    /// temp file, which the next writer of that name never reads.
    #[test]
    fn a_kill_between_write_and_rename_leaves_the_old_file() {
        use std::os::unix::process::ExitStatusExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        write(&path, &snapshot()).unwrap();
        let before = std::fs::read_to_string(&path).unwrap();
        let child = crate::sys::crash::child_test("state::tests::child_dies_before_the_rename")
            .env(CHILD_PATH, &path)
            .spawn()
            .unwrap();
        let pid = child.id();
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{:?}", out.status);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            before,
            "the old file, byte for byte"
        );
        assert_eq!(read(&path).unwrap().unwrap(), snapshot());
        // The crash came after the new file was complete: the temp file holds it whole.
        let prefix = format!(".{STATE_FILE}.tmp-{pid}-");
        let tmp = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with(&prefix)
            })
            .expect("the dead writer's temp file");
        let written: Snapshot = serde_json::from_slice(&std::fs::read(&tmp).unwrap()).unwrap();
        assert_eq!((written.pid, written.interfaces.len()), (pid, 0));
        // The next writer replaces the file as usual.
        let mut s3 = snapshot();
        s3.pid = 7;
        write(&path, &s3).unwrap();
        assert_eq!(read(&path).unwrap().unwrap(), s3);
        assert!(!tmp.exists(), "the dead writer's temp file is swept");
    }

    #[test]
    fn corrupt_files_are_moved_aside() {
        let now = Timestamp::from_second(1_700_000_123).unwrap();
        let table: [(&str, &[u8]); 4] = [
            ("garbage", b"{not json"),
            ("truncated", br#"{"version":1,"written_at":"2023-11-14T22:13:20Z""#),
            ("future version", br#"{"version":99,"written_at":"2023-11-14T22:13:20Z","pid":1,"backend":"ovs","interval_secs":60,"interfaces":[]}"#),
            ("empty", b""),
        ];
        for (what, bytes) in table {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(STATE_FILE);
            std::fs::write(&path, bytes).unwrap();
            match load_or_move_aside(&path, now).unwrap() {
                Loaded::MovedAside { moved_to, .. } => {
                    assert_eq!(
                        moved_to,
                        dir.path().join("state.json.corrupt-1700000123"),
                        "{what}"
                    );
                    assert_eq!(
                        std::fs::read(&moved_to).unwrap(),
                        bytes,
                        "{what}: content kept for inspection"
                    );
                    assert!(!path.exists(), "{what}");
                }
                other => panic!("{what}: {other:?}"),
            }
        }
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            load_or_move_aside(&dir.path().join(STATE_FILE), now).unwrap(),
            Loaded::Missing
        ));
    }
}
