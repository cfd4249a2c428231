//! Atomic file replacement: write a temp file beside the target, fsync it, rename it over
//! the target, fsync the directory. Readers see the old file or the new one, never a mix,
//! and after a crash the rename is either durable or not there at all.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::crash::{self, CrashPoint};

/// Replace `path` atomically with what `fill` writes (streamed: large files need no copy
/// in memory), created with permission bits `mode`.
pub fn write_atomic(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(file_name);
    prefix.push(".tmp-");
    sweep_dead_writers(dir, &prefix);
    // A name nobody can guess, created only if it does not exist and never through a
    // symlink: a link planted at a predictable name once made a token file be written
    // through it, world-readable.
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(|e| io::Error::other(format!("random name: {e}")))?;
    let mut tmp_name = prefix.clone();
    tmp_name.push(format!(
        "{}-{}",
        std::process::id(),
        suffix
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    ));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(mode)
            .open(&tmp)?;
        fill(&mut f)?;
        f.sync_all()?;
        crash::point(CrashPoint::BeforeRename);
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Remove temp files `prefix<pid>-…` in `dir` left by writers that died before their
/// rename (a kill -9 in the window): their pid no longer runs.
fn sweep_dead_writers(dir: &Path, prefix: &std::ffi::OsStr) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = prefix.as_encoded_bytes();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.as_encoded_bytes().strip_prefix(prefix) else {
            continue;
        };
        let pid = std::str::from_utf8(rest)
            .ok()
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<i32>().ok());
        let Some(pid) = pid.filter(|p| *p > 0) else {
            continue;
        };
        // SAFETY: kill(2) with signal 0 only asks whether the pid exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, symlink};

    /// Symlinks planted where the temp file used to be named (`.NAME.tmp-<pid>`) are
    /// never written through, the file gets exactly the asked mode, and a dead writer's
    /// temp file is swept while a live one's is left.
    #[test]
    fn planted_links_are_not_followed_and_dead_writers_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("victim");
        std::fs::write(&target, b"precious").unwrap();
        let path = dir.path().join("tokens.json");
        symlink(
            &target,
            dir.path()
                .join(format!(".tokens.json.tmp-{}", std::process::id())),
        )
        .unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale = dir.path().join(format!(".tokens.json.tmp-{dead}-00"));
        std::fs::write(&stale, b"half").unwrap();
        write_atomic(&path, 0o600, |f| {
            use std::io::Write;
            f.write_all(b"secret")
        })
        .unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
        assert_eq!(std::fs::read(&path).unwrap(), b"secret");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert!(!stale.exists(), "a dead writer's temp file is swept");
        assert!(
            std::fs::symlink_metadata(
                dir.path()
                    .join(format!(".tokens.json.tmp-{}", std::process::id()))
            )
            .is_ok(),
            "a live pid's file is left alone"
        );
    }
}
