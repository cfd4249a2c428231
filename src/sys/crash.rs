//! Named crash points for the fault tests. `SLUICE_CRASH_AT=name[,name…]` makes the
//! process SIGKILL itself when it reaches one of them, so a test dies exactly inside a
//! window (between the ledger commit and a hook, say) that a kill from outside would hit
//! only by luck. Unset, as in production, a point costs one read of a cached flag.

use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};

/// The environment variable naming the armed points.
pub const ENV: &str = "SLUICE_CRASH_AT";

/// Where the process may be told to die. A closed set, so a test cannot arm a point
/// that the code does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// The tick's ledger transaction has committed a quota exceed; its `shutdown` hook
    /// has not been started.
    BeforeHook,
    /// The ledger's tick transaction has written everything and not committed.
    LedgerBeforeCommit,
    /// An atomic write has synced its temp file and not renamed it over the target.
    BeforeRename,
}

impl CrashPoint {
    const ALL: [CrashPoint; 3] = [
        CrashPoint::BeforeHook,
        CrashPoint::LedgerBeforeCommit,
        CrashPoint::BeforeRename,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CrashPoint::BeforeHook => "before-hook",
            CrashPoint::LedgerBeforeCommit => "ledger-before-commit",
            CrashPoint::BeforeRename => "before-rename",
        }
    }

    fn parse(name: &str) -> Option<CrashPoint> {
        Self::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

/// The points `value` arms; a name that is no point is reported, so a typo in a test
/// fails loudly instead of never crashing.
pub fn parse_armed(value: &str) -> Result<Vec<CrashPoint>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|n| {
            CrashPoint::parse(n).ok_or_else(|| {
                let known: Vec<&str> = CrashPoint::ALL.iter().map(|p| p.as_str()).collect();
                format!("{ENV}: no crash point {n:?} (known: {})", known.join(", "))
            })
        })
        .collect()
}

/// The armed points as bits (`1 << index in ALL`); the environment is read once.
static ARMED: AtomicU32 = AtomicU32::new(0);
static FROM_ENV: Once = Once::new();

fn bit(point: CrashPoint) -> u32 {
    let index = CrashPoint::ALL
        .iter()
        .position(|p| *p == point)
        .unwrap_or(0);
    1 << index
}

fn armed() -> u32 {
    FROM_ENV.call_once(|| {
        if let Ok(v) = std::env::var(ENV) {
            match parse_armed(&v) {
                Ok(points) => points.into_iter().for_each(arm),
                Err(e) => {
                    // Only tests set it; dying is the loudest answer to a misspelt point.
                    eprintln!("{e}");
                    std::process::exit(2)
                }
            }
        }
    });
    ARMED.load(Ordering::Relaxed)
}

/// Arm `point` from inside the process: a kill test's child does its setup unarmed,
/// then arms the point it is to die at.
pub fn arm(point: CrashPoint) {
    ARMED.fetch_or(bit(point), Ordering::Relaxed);
}

/// Check the environment once at startup, so a bad `SLUICE_CRASH_AT` stops the process
/// before it does anything rather than at the first point.
pub fn check_env() {
    let _ = armed();
}

/// Die here, as by `kill -9`, if `point` is armed: no destructor, no flush, no exit code.
pub fn point(point: CrashPoint) {
    if armed() & bit(point) != 0 {
        // SAFETY: raising a signal at ourselves has no preconditions; SIGKILL never returns.
        unsafe {
            libc::raise(libc::SIGKILL);
        }
    }
}

#[cfg(test)]
pub(crate) fn child_test(name: &str) -> std::process::Command {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let mut cmd = std::process::Command::new(exe);
    cmd.args([
        "--exact",
        name,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env_remove(ENV)
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::inherit());
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_unknown_names_are_refused() {
        let cases: [(&str, Result<Vec<CrashPoint>, ()>); 5] = [
            ("", Ok(vec![])),
            ("before-hook", Ok(vec![CrashPoint::BeforeHook])),
            (" before-hook , ", Ok(vec![CrashPoint::BeforeHook])),
            (
                "before-rename,ledger-before-commit",
                Ok(vec![
                    CrashPoint::BeforeRename,
                    CrashPoint::LedgerBeforeCommit,
                ]),
            ),
            ("before-hok", Err(())),
        ];
        for (input, want) in cases {
            let got = parse_armed(input);
            match want {
                Ok(points) => assert_eq!(got, Ok(points), "{input:?}"),
                Err(()) => {
                    let e = got.unwrap_err();
                    assert!(
                        e.contains("\"before-hok\"") && e.contains("before-hook"),
                        "{e}"
                    );
                }
            }
        }
    }
}
