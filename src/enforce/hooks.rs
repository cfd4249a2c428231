//! The `shutdown` and `on_reset` hooks: operator commands run on quota actions.
//!
//! argv templates, never a shell: `{instance}`, `{interface}`, `{rule}` and `{action}` are
//! replaced inside each argument, so an instance id cannot inject anything (ids are
//! checked to a plain alphabet anyway). Each run has a timeout, runs in its own task so
//! a slow `virsh shutdown` never holds a tick, and its exit status and output are logged
//! and appended to the event log.

use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::json;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::account::ledger::EventRow;
use crate::config::Stop;
use crate::inventory;
use crate::model::event::LogKind;
use crate::model::ids::InstanceId;
use crate::sys::{CommandError, HOOK_OUTPUT_CAP, run_capped};

/// Which hook of `[hooks]` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Hook {
    /// A `shutdown` rule's limit was exceeded.
    Shutdown,
    /// A rule's period ended (or an operator reset it) and its action lifted.
    OnReset,
}

impl Hook {
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Shutdown => "shutdown",
            Hook::OnReset => "on_reset",
        }
    }
}

/// What a hook is run for, filling its placeholders.
#[derive(Debug, Clone)]
pub struct HookCall {
    pub hook: Hook,
    pub instance: InstanceId,
    /// The instance's first interface by name ("" when none is present).
    pub interface: String,
    pub rule: String,
    pub action: String,
    /// The hypervisor's name for the instance when the hook was called (its event
    /// lands a tick or more later, when a stopped instance may be gone from the
    /// inventory).
    pub name: Option<String>,
}

/// `template` with the call's values in place of its placeholders (`{timeout}`: the
/// hooks' timeout in whole seconds).
pub fn expand(template: &[String], call: &HookCall, timeout: Duration) -> Vec<String> {
    template
        .iter()
        .map(|arg| {
            arg.replace("{instance}", call.instance.as_str())
                .replace("{timeout}", &timeout.as_secs().to_string())
                .replace("{interface}", &call.interface)
                .replace("{rule}", &call.rule)
                .replace("{action}", &call.action)
        })
        .collect()
}

/// Run the hook in its own task; its outcome is logged and sent to `done` as an event
/// (dropped with a warning if the queue is full — the log line still has it).
pub fn spawn(template: &[String], call: HookCall, timeout: Duration, done: mpsc::Sender<EventRow>) {
    let argv = expand(template, &call, timeout);
    tokio::spawn(async move {
        let result = run(&argv, timeout).await;
        finish(&call, &argv, &result, &done);
    });
}

/// `hooks.shutdown = "hypervisor"`: stop the instance the way its source says, in its
/// own task. Every command run is logged and recorded as a hook event.
pub fn spawn_stop(stop: &Stop, call: HookCall, timeout: Duration, done: mpsc::Sender<EventRow>) {
    let stop = stop.clone();
    tokio::spawn(async move {
        match stop {
            Stop::Once(template) => {
                let argv = expand(&template, &call, timeout);
                // The command waits up to `timeout` itself before it forces.
                let result = run(&argv, timeout + FORCE_GRACE).await;
                finish(&call, &argv, &result, &done);
            }
            Stop::AskThenForce {
                ask,
                state,
                stopped,
                force,
            } => {
                let argv = expand(&ask, &call, timeout);
                let result = run(&argv, timeout).await;
                finish(&call, &argv, &result, &done);
                let check = expand(&state, &call, timeout);
                let deadline = tokio::time::Instant::now() + timeout;
                loop {
                    // A domain that is gone (a transient one stops existing) has stopped.
                    let still = run(&check, STATE_CHECK_TIMEOUT)
                        .await
                        .is_ok_and(|out| out.trim() != stopped);
                    if !still {
                        info!(instance = %call.instance, "the instance stopped");
                        return;
                    }
                    if tokio::time::Instant::now() >= deadline {
                        break;
                    }
                    tokio::time::sleep(STATE_POLL).await;
                }
                warn!(instance = %call.instance, "still running {}s after the clean shutdown was asked: forcing it off", timeout.as_secs());
                let argv = expand(&force, &call, timeout);
                let result = run(&argv, timeout).await;
                finish(&call, &argv, &result, &done);
            }
            Stop::Incus {
                socket,
                project,
                name,
            } => {
                // Incus waits up to `timeout` for the clean stop; then it is forced.
                for force in [false, true] {
                    let what = vec![
                        "PUT".to_owned(),
                        format!("/1.0/instances/{name}/state?project={project}"),
                        json!({"action": "stop", "timeout": timeout.as_secs(), "force": force})
                            .to_string(),
                    ];
                    let (socket, project, name) = (socket.clone(), project.clone(), name.clone());
                    let result = tokio::task::spawn_blocking(move || {
                        inventory::incus::stop(&socket, &project, &name, timeout, force)
                    })
                    .await;
                    let result = match result {
                        Ok(r) => r.map_err(|e| e.to_string()),
                        Err(e) => Err(format!("the stop's task failed: {e}")),
                    };
                    let ok = result.is_ok();
                    let status = if ok { "stopped" } else { "failed" }.to_owned();
                    let detail = result.unwrap_or_else(|e| e);
                    record(&call, &what, ok, status, detail, &done);
                    if ok {
                        info!(instance = %call.instance, "the instance stopped");
                        return;
                    }
                    if !force {
                        warn!(instance = %call.instance, "the clean stop did not end within {}s: forcing it", timeout.as_secs());
                    }
                }
            }
        }
    });
}

/// How long `Stop::Once`'s command may take beyond `hooks.timeout` (its forced stop).
const FORCE_GRACE: Duration = Duration::from_secs(30);
const STATE_CHECK_TIMEOUT: Duration = Duration::from_secs(10);
const STATE_POLL: Duration = Duration::from_secs(1);

async fn run(argv: &[String], timeout: Duration) -> Result<String, CommandError> {
    let Some((program, args)) = argv.split_first() else {
        return Ok(String::new());
    };
    run_capped(Path::new(program), args, timeout, HOOK_OUTPUT_CAP).await
}

/// Log one command's outcome and queue its event.
fn finish(
    call: &HookCall,
    argv: &[String],
    result: &Result<String, CommandError>,
    done: &mpsc::Sender<EventRow>,
) {
    let (ok, detail) = match result {
        Ok(stdout) => (true, stdout.trim().to_owned()),
        Err(e) => (false, e.to_string()),
    };
    let status = match result {
        Ok(_) => "exit status: 0".to_owned(),
        Err(CommandError::Failed { status, .. }) => status.clone(),
        Err(CommandError::Timeout { .. }) => "timed out".to_owned(),
        Err(CommandError::Spawn { .. }) => "not started".to_owned(),
    };
    record(call, argv, ok, status, detail, done);
}

/// Log one step of a hook (a command, or an API call described as one) and queue its
/// event.
fn record(
    call: &HookCall,
    argv: &[String],
    ok: bool,
    status: String,
    detail: String,
    done: &mpsc::Sender<EventRow>,
) {
    if ok {
        info!(hook = call.hook.as_str(), instance = %call.instance, rule = %call.rule, argv = ?argv, output = %detail, "hook succeeded");
    } else {
        warn!(hook = call.hook.as_str(), instance = %call.instance, rule = %call.rule, argv = ?argv, "hook failed: {detail}");
    }
    let mut event = EventRow::new(
        Timestamp::now(),
        LogKind::Hook,
        Some(&call.instance),
        json!({
            "hook": call.hook,
            "rule": call.rule,
            "action": call.action,
            "argv": argv,
            "ok": ok,
            "status": status,
            "output": detail,
        }),
    );
    if let (Some(name), serde_json::Value::Object(body)) = (&call.name, &mut event.body) {
        body.insert("instance_name".into(), json!(name));
    }
    if done.try_send(event).is_err() {
        warn!("event queue full: the hook's event is only in the log");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_fill_each_argument_and_nothing_else() {
        let call = HookCall {
            hook: Hook::Shutdown,
            instance: InstanceId::new("101").unwrap(),
            interface: "tap101i0".into(),
            rule: "monthly".into(),
            action: "shutdown".into(),
            name: None,
        };
        let t = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let table = [
            (
                t(&["virsh", "shutdown", "{instance}"]),
                t(&["virsh", "shutdown", "101"]),
            ),
            (
                t(&["qm", "shutdown", "{instance}"]),
                t(&["qm", "shutdown", "101"]),
            ),
            (
                t(&[
                    "/usr/local/bin/notify",
                    "--vm={instance}",
                    "{interface}",
                    "{rule}:{action}",
                ]),
                t(&[
                    "/usr/local/bin/notify",
                    "--vm=101",
                    "tap101i0",
                    "monthly:shutdown",
                ]),
            ),
            // No shell: a `;` stays a literal argument.
            (
                t(&["echo", "{instance}; rm -rf /"]),
                t(&["echo", "101; rm -rf /"]),
            ),
        ];
        for (template, want) in table {
            assert_eq!(expand(&template, &call, Duration::from_secs(60)), want);
        }
    }
}
