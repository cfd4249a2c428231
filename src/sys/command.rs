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

/// Run `program args…`, returning its stdout; kills it when `timeout` passes.
pub async fn run<S: AsRef<OsStr>>(
    program: &Path,
    args: &[S],
    timeout: Duration,
) -> Result<String, CommandError> {
    let name = program.display().to_string();
    let child = Command::new(program)
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
    let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
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
    if !output.status.success() {
        return Err(CommandError::Failed {
            program: name,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
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
}
