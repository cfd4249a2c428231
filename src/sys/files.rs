//! Where sluice keeps its data: directories other users cannot write to (or they could
//! swap a file sluice trusts), and data files only their owner reads (the ledger and the
//! store's database hold every customer's traffic).

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Refuse `dir` if every user may write to it without the sticky bit: anyone could
/// replace the state, the ledger or a lock sluice then trusts.
pub fn refuse_shared_dir(dir: &Path) -> io::Result<()> {
    let mode = std::fs::metadata(dir)?.mode();
    if mode & 0o002 != 0 && mode & 0o1000 == 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "every user may write to it (mode {:o}); run chmod o-w on it",
                mode & 0o7777
            ),
        ));
    }
    Ok(())
}

/// Create `path` empty with mode 0600 if it does not exist, so that a database then
/// opened on it (and its journal, which takes its mode) is private. A symlink in its
/// place is refused, not followed.
pub fn create_private(path: &Path) -> io::Result<()> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if std::fs::symlink_metadata(path)?.file_type().is_symlink() {
                Err(io::Error::other(
                    "it is a symbolic link, which sluice does not follow",
                ))
            } else {
                Ok(())
            }
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn shared_directories_are_refused_and_data_files_are_private() {
        let tmp = tempfile::tempdir().unwrap();
        let cases = [
            (0o755, true),
            (0o770, true),
            (0o777, false),
            (0o1777, true),
            (0o703, false),
        ];
        for (mode, ok) in cases {
            let d = tmp.path().join(format!("d{mode:o}"));
            std::fs::create_dir(&d).unwrap();
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).unwrap();
            let got = refuse_shared_dir(&d);
            assert_eq!(got.is_ok(), ok, "{mode:o}: {got:?}");
            if let Err(e) = got {
                assert!(e.to_string().contains("chmod o-w"), "{e}");
            }
        }
        let f = tmp.path().join("ledger.db");
        create_private(&f).unwrap();
        assert_eq!(std::fs::metadata(&f).unwrap().mode() & 0o777, 0o600);
        // An existing file is left as it is; a symlink is never followed.
        std::fs::write(&f, b"kept").unwrap();
        create_private(&f).unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"kept");
        let link = tmp.path().join("planted.db");
        std::os::unix::fs::symlink(tmp.path().join("elsewhere"), &link).unwrap();
        assert!(create_private(&link).is_err());
        assert!(!tmp.path().join("elsewhere").exists());
    }
}
