//! Running external commands: argv only (never a shell) and always a timeout.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum CommandError {
    #[error("cannot run {program}: {reason}")]
    Spawn { program: String, reason: String },
    #[error("{program} timed out after {secs:.1}s")]
    Timeout { program: String, secs: f64 },
    #[error("{program} exited with {status}: {stderr}")]
    Failed {
        program: String,
        status: String,
        stderr: String,
    },
}

/// Run `program args…`, returning its stdout; kills it when `timeout` passes. For
/// sluice's own tools (ovs-vsctl), whose output it reads whole.
pub async fn run<S: AsRef<OsStr>>(
    program: &Path,
    args: &[S],
    timeout: Duration,
) -> Result<String, CommandError> {
    run_capped(program, args, timeout, usize::MAX).await
}

/// What an operator's command (a hook) may print per stream that sluice keeps: its
/// output goes to the log, the event log, webhooks and the dashboard.
pub const HOOK_OUTPUT_CAP: usize = 64 * 1024;

/// As [`run`], keeping at most `cap` bytes of each of stdout and stderr, then a marker
/// saying how much more there was. The rest is read and dropped, so a chatty command
/// neither blocks on a full pipe nor fills sluice's memory.
pub async fn run_capped<S: AsRef<OsStr>>(
    program: &Path,
    args: &[S],
    timeout: Duration,
    cap: usize,
) -> Result<String, CommandError> {
    let name = program.display().to_string();
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| CommandError::Spawn {
            program: name.clone(),
            reason: e.to_string(),
        })?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(CommandError::Spawn {
            program: name,
            reason: "its output pipes were not set up".into(),
        });
    };
    let work = async {
        let (out, err, status) = tokio::join!(
            read_capped(stdout, cap),
            read_capped(stderr, cap),
            child.wait()
        );
        Ok::<_, std::io::Error>((out?, err?, status?))
    };
    let (stdout, stderr, status) = match tokio::time::timeout(timeout, work).await {
        Err(_) => {
            return Err(CommandError::Timeout {
                program: name,
                secs: timeout.as_secs_f64(),
            });
        }
        Ok(Err(e)) => {
            return Err(CommandError::Spawn {
                program: name,
                reason: e.to_string(),
            });
        }
        Ok(Ok(o)) => o,
    };
    if !status.success() {
        return Err(CommandError::Failed {
            program: name,
            status: status.to_string(),
            stderr: stderr.trim().to_owned(),
        });
    }
    Ok(stdout)
}

/// All of `r`, keeping the first `cap` bytes (as text) and a marker for the rest.
async fn read_capped(
    mut r: impl tokio::io::AsyncRead + Unpin,
    cap: usize,
) -> std::io::Result<String> {
    use tokio::io::AsyncReadExt;
    let mut kept = Vec::new();
    let mut dropped = 0u64;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        let take = cap.saturating_sub(kept.len()).min(n);
        kept.extend_from_slice(&buf[..take]);
        dropped += (n - take) as u64;
    }
    let mut text = String::from_utf8_lossy(&kept).into_owned();
    if dropped > 0 {
        text.push_str(&format!("\n[output truncated: {dropped} more bytes]"));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_failure_and_timeout() {
        let sh = Path::new("/bin/sh");
        let out = run(sh, &["-c", "printf 'a b'"], Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(out, "a b");
        // argv is passed as-is: no shell sees "$(…)".
        let echo = run(Path::new("/bin/echo"), &["$(id)"], Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(echo.trim(), "$(id)");
        let err = run(sh, &["-c", "echo oops >&2; exit 3"], Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, CommandError::Failed { stderr, .. } if stderr == "oops"),
            "{err}"
        );
        let err = run(sh, &["-c", "sleep 5"], Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(err, CommandError::Timeout { .. }), "{err}");
        let err = run(
            Path::new("/nonexistent/ovs-vsctl"),
            &["x"],
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, CommandError::Spawn { .. }), "{err}");
    }

    /// A hook printing 20 MB on each stream: 64 KiB of each is kept, with a marker
    /// saying how much more there was, and the command is not blocked on its pipes.
    #[tokio::test]
    async fn a_chatty_command_is_kept_to_the_cap() {
        let sh = Path::new("/bin/sh");
        let flood =
            "head -c 20000000 /dev/zero | tr '\\0' a; head -c 20000000 /dev/zero | tr '\\0' b >&2";
        let out = run_capped(sh, &["-c", flood], Duration::from_secs(30), HOOK_OUTPUT_CAP)
            .await
            .unwrap();
        let marker = format!(
            "\n[output truncated: {} more bytes]",
            20_000_000 - HOOK_OUTPUT_CAP
        );
        assert_eq!(out.len(), HOOK_OUTPUT_CAP + marker.len());
        assert!(
            out.starts_with("aaaa") && out.ends_with(&marker),
            "{}",
            &out[out.len() - 80..]
        );
        let err = run_capped(
            sh,
            &["-c", &format!("{flood}; exit 4")],
            Duration::from_secs(30),
            HOOK_OUTPUT_CAP,
        )
        .await
        .unwrap_err();
        let CommandError::Failed { stderr, .. } = err else {
            panic!("{err}")
        };
        assert_eq!(stderr.len(), HOOK_OUTPUT_CAP + marker.len());
        assert!(stderr.starts_with("bbbb") && stderr.ends_with(&marker));
    }
}
