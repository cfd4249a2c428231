//! One agent per host: an exclusive `flock` on `/run/sluice/sluice.lock`, which holds the
//! holder's pid so the second agent can say who is in the way. The kernel drops the lock
//! when the process dies, so a stale file never blocks a restart — and the lock is also
//! the one reliable answer to "is an agent running?" (`sluice list` asks it; the state
//! file's age cannot tell, since an idle host's state is not rewritten).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A second agent retries this long before giving up, so a `sluice list` probing the
/// lock at the very moment an agent starts cannot make that start fail.
const ACQUIRE_RETRIES: u32 = 5;
const ACQUIRE_PAUSE: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another sluice process (pid {pid}) holds {path}")]
    Held { pid: String, path: PathBuf },
    #[error("cannot lock {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Held for the life of the agent; dropping it releases the lock.
#[derive(Debug)]
pub struct AgentLock {
    _file: File,
}

impl AgentLock {
    pub fn acquire(path: &Path) -> Result<AgentLock, LockError> {
        let io = |e: std::io::Error| LockError::Io {
            path: path.to_owned(),
            source: e,
        };
        // Never through a symlink: one planted at the lock's name made the agent
        // truncate its target.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o644)
            .open(path)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::ELOOP) {
                    io(std::io::Error::other(
                        "it is a symbolic link, which sluice does not follow",
                    ))
                } else {
                    io(e)
                }
            })?;
        let mut attempt = 0;
        let locked = loop {
            match file.try_lock() {
                Err(std::fs::TryLockError::WouldBlock) if attempt < ACQUIRE_RETRIES => {
                    attempt += 1;
                    std::thread::sleep(ACQUIRE_PAUSE);
                }
                other => break other,
            }
        };
        match locked {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(LockError::Held {
                    pid: if pid.is_empty() {
                        "unknown".into()
                    } else {
                        pid.into()
                    },
                    path: path.to_owned(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(AgentLock { _file: file })
    }
}

/// Whether an agent holds the lock at `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// Held; the pid written in the file.
    Running(String),
    NotRunning,
    /// The lock file cannot be opened (permissions): nothing can be said.
    Unknown(String),
}

/// Ask the lock whether an agent is running, without disturbing one: a shared lock is
/// refused while an agent holds its exclusive one, and released at once otherwise.
pub fn holder(path: &Path) -> Holder {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Holder::NotRunning,
        Err(e) => return Holder::Unknown(e.to_string()),
    };
    match file.try_lock_shared() {
        Ok(()) => Holder::NotRunning,
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            Holder::Running(pid.trim().to_owned())
        }
        Err(std::fs::TryLockError::Error(e)) => Holder::Unknown(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A symlink planted at the lock's name is refused, and its target left whole (it
    /// used to be truncated and overwritten with the agent's pid).
    #[test]
    fn a_symlinked_lock_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("passwd");
        std::fs::write(&target, b"root:x:0:0\n").unwrap();
        let path = dir.path().join("sluice.lock");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let err = AgentLock::acquire(&path).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read(&target).unwrap(), b"root:x:0:0\n");
    }

    #[test]
    fn second_holder_is_refused_with_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.lock");
        let first = AgentLock::acquire(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().trim(),
            std::process::id().to_string()
        );
        // flock locks belong to the open file description: a second open is refused too.
        let err = AgentLock::acquire(&path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "another sluice process (pid {}) holds {}",
                std::process::id(),
                path.display()
            )
        );
        assert_eq!(
            holder(&path),
            Holder::Running(std::process::id().to_string())
        );
        drop(first);
        assert_eq!(holder(&path), Holder::NotRunning);
        // Probing left no lock behind.
        AgentLock::acquire(&path).unwrap();
        assert_eq!(holder(&dir.path().join("absent.lock")), Holder::NotRunning);
    }
}
