//! Named crash points for the fault tests. `SLUICE_CRASH_AT=name[@N][,…]` makes the
//! process SIGKILL itself the Nth time (default: the first) it reaches one of them, so a
//! test dies exactly inside a window (between the ledger commit and a hook, say) that a
//! kill from outside would hit only by luck. One point hangs instead of dying, for the
//! watchdog. Unset, as in production, a point costs one read of an atomic.

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
    /// The start of a tick. This one hangs the tick loop's thread for good instead of
    /// killing: a tick stuck on the kernel or a dependency, as the watchdog must see it.
    HangTick,
}

impl CrashPoint {
    const ALL: [CrashPoint; 4] = [
        CrashPoint::BeforeHook,
        CrashPoint::LedgerBeforeCommit,
        CrashPoint::BeforeRename,
        CrashPoint::HangTick,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CrashPoint::BeforeHook => "before-hook",
            CrashPoint::LedgerBeforeCommit => "ledger-before-commit",
            CrashPoint::BeforeRename => "before-rename",
            CrashPoint::HangTick => "hang-tick",
        }
    }

    fn parse(name: &str) -> Option<CrashPoint> {
        Self::ALL.into_iter().find(|p| p.as_str() == name)
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|p| *p == self).unwrap_or(0)
    }
}

/// The points `value` arms, each with the hit it fires at (1: the first). A name that
/// is no point, or a bad count, is reported, so a typo in a test fails loudly instead
/// of never crashing.
pub fn parse_armed(value: &str) -> Result<Vec<(CrashPoint, u32)>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|item| {
            let (name, hit) = match item.split_once('@') {
                Some((name, n)) => match n.parse::<u32>() {
                    Ok(n) if n > 0 => (name, n),
                    _ => {
                        return Err(format!(
                            "{ENV}: {item:?}: the hit after @ must be 1 or more"
                        ));
                    }
                },
                None => (item, 1),
            };
            let point = CrashPoint::parse(name).ok_or_else(|| {
                let known: Vec<&str> = CrashPoint::ALL.iter().map(|p| p.as_str()).collect();
                format!(
                    "{ENV}: no crash point {name:?} (known: {})",
                    known.join(", ")
                )
            })?;
            Ok((point, hit))
        })
        .collect()
}

/// Per point, the hits left until it fires (0: not armed).
static ARMED: [AtomicU32; CrashPoint::ALL.len()] =
    [const { AtomicU32::new(0) }; CrashPoint::ALL.len()];
static FROM_ENV: Once = Once::new();

fn from_env() {
    FROM_ENV.call_once(|| {
        if let Ok(v) = std::env::var(ENV) {
            match parse_armed(&v) {
                Ok(points) => points.into_iter().for_each(|(p, hit)| arm_at(p, hit)),
                Err(e) => {
                    // Only tests set it; dying is the loudest answer to a misspelt point.
                    eprintln!("{e}");
                    std::process::exit(2)
                }
            }
        }
    });
}

/// Arm `point` to fire at its next hit, from inside the process: a kill test's child
/// does its setup unarmed, then arms the point it is to die at.
pub fn arm(point: CrashPoint) {
    from_env();
    arm_at(point, 1);
}

fn arm_at(point: CrashPoint, hit: u32) {
    ARMED[point.index()].store(hit, Ordering::Relaxed);
}

/// Check the environment once at startup, so a bad `SLUICE_CRASH_AT` stops the process
/// before it does anything rather than at the first point.
pub fn check_env() {
    from_env();
}

/// Die here, as by `kill -9`, if `point` is armed and this is its hit (or hang, for
/// [`CrashPoint::HangTick`]): no destructor, no flush, no exit code.
pub fn point(point: CrashPoint) {
    from_env();
    let left = &ARMED[point.index()];
    let fire = left
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok_and(|before| before == 1);
    if !fire {
        return;
    }
    if point == CrashPoint::HangTick {
        loop {
            std::thread::park();
        }
    }
    // SAFETY: raising a signal at ourselves has no preconditions; SIGKILL never returns.
    unsafe {
        libc::raise(libc::SIGKILL);
    }
}

/// This test binary, told to run only the ignored test `name` (the child half of a
/// kill test): the parent sets its environment, reads its stdout and kills it.
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
    fn names_and_hits_parse_and_bad_ones_are_refused() {
        use CrashPoint::*;
        let ok: [(&str, Vec<(CrashPoint, u32)>); 4] = [
            ("", vec![]),
            ("before-hook", vec![(BeforeHook, 1)]),
            (" hang-tick@3 , ", vec![(HangTick, 3)]),
            (
                "before-rename,ledger-before-commit@2",
                vec![(BeforeRename, 1), (LedgerBeforeCommit, 2)],
            ),
        ];
        for (input, want) in ok {
            assert_eq!(parse_armed(input), Ok(want), "{input:?}");
        }
        let bad = [
            (
                "before-hok",
                "no crash point \"before-hok\" (known: before-hook,",
            ),
            (
                "hang-tick@0",
                "\"hang-tick@0\": the hit after @ must be 1 or more",
            ),
            ("hang-tick@x", "the hit after @ must be 1 or more"),
        ];
        for (input, want) in bad {
            let e = parse_armed(input).unwrap_err();
            assert!(e.contains(want), "{input:?}: {e}");
        }
    }
}
