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
}

/// `template` with the call's values in place of its placeholders.
pub fn expand(template: &[String], call: &HookCall) -> Vec<String> {
    template
        .iter()
        .map(|arg| {
            arg.replace("{instance}", call.instance.as_str())
                .replace("{interface}", &call.interface)
                .replace("{rule}", &call.rule)
                .replace("{action}", &call.action)
        })
        .collect()
}

/// Run the hook in its own task; its outcome is logged and sent to `done` as an event
/// (dropped with a warning if the queue is full — the log line still has it).
pub fn spawn(template: &[String], call: HookCall, timeout: Duration, done: mpsc::Sender<EventRow>) {
    let argv = expand(template, &call);
    tokio::spawn(async move {
        let Some((program, args)) = argv.split_first() else {
            return;
        };
        let result = run_capped(Path::new(program), args, timeout, HOOK_OUTPUT_CAP).await;
        let (ok, detail) = match &result {
            Ok(stdout) => (true, stdout.trim().to_owned()),
            Err(e) => (false, e.to_string()),
        };
        if ok {
            info!(hook = call.hook.as_str(), instance = %call.instance, rule = %call.rule, argv = ?argv, output = %detail, "hook succeeded");
        } else {
            warn!(hook = call.hook.as_str(), instance = %call.instance, rule = %call.rule, argv = ?argv, "hook failed: {detail}");
        }
        let status = match &result {
            Ok(_) => "exit status: 0".to_owned(),
            Err(CommandError::Failed { status, .. }) => status.clone(),
            Err(CommandError::Timeout { .. }) => "timed out".to_owned(),
            Err(CommandError::Spawn { .. }) => "not started".to_owned(),
        };
        let event = EventRow::new(
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
        if done.try_send(event).is_err() {
            warn!("event queue full: the hook's event is only in the log");
        }
    });
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
            assert_eq!(expand(&template, &call), want);
        }
    }
}
