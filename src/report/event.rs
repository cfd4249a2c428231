//! The event log's one JSON shape: what `simulate` prints, `sluice events --json` shows,
//! the ledger stores and webhooks receive — built here so the four never drift apart.

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::account::ledger::{EventRow, time_json};
use crate::policy::quota::{QuotaEvent, QuotaState};
use crate::policy::{ChangeCause, Event, EventKind};

/// A policy event (stage change, counters reset, …) at `time` (Unix seconds).
pub fn event_json(time: f64, e: &Event) -> Value {
    let mut v = json!({
        "time": time_json(time),
        "interface": e.interface.as_str(),
        "instance": e.instance.as_str(),
    });
    let extra = match &e.kind {
        EventKind::Stage {
            change,
            upload_limit,
            usage,
            until,
        } => json!({
            "event": "stage",
            "from": change.from,
            "to": change.to,
            "upload_limit_kbps": upload_limit.map(|r| r.kbps()),
            "cause": match change.cause { ChangeCause::Escalated => "escalated", ChangeCause::Expired => "expired", ChangeCause::Released => "released" },
            "upload_kbps": usage.map(|r| r.kbps()),
            "until": until.map(|t| t.as_second()),
        }),
        EventKind::Returned { stage } => json!({"event": "returned", "stage": stage}),
        EventKind::VanishedKeepingPenalty { stage } => json!({"event": "vanished", "stage": stage}),
        EventKind::CountersReset => json!({"event": "counters_reset"}),
    };
    if let (Value::Object(v), Value::Object(extra)) = (&mut v, extra) {
        v.extend(extra);
    }
    v
}

/// A quota rule event.
pub fn quota_json(e: &QuotaEvent) -> Value {
    let mut v = json!({
        "time": e.at.as_second(),
        "event": "rule",
        "rule": e.rule.as_str(),
        "instance": e.instance.as_str(),
        "state": e.state.as_str(),
        "action": e.action.to_string(),
        "used_bytes": e.used.get(),
        "limit_bytes": e.limit.get(),
        "period_start": e.period.start.as_second(),
        "period_end": e.period.end.as_second(),
    });
    if let (QuotaState::Threshold(f), Value::Object(m)) = (&e.state, &mut v) {
        m.insert("threshold".into(), json!(f));
    }
    v
}

/// The ledger row of a policy event.
pub fn policy_row(at: Timestamp, e: &Event) -> EventRow {
    let body = event_json(at.as_millisecond() as f64 / 1000.0, e);
    EventRow {
        at,
        kind: body["event"].as_str().unwrap_or("policy").to_owned(),
        instance: Some(e.instance.clone()),
        body,
    }
}

/// The ledger row of a quota event.
pub fn quota_row(e: &QuotaEvent) -> EventRow {
    EventRow {
        at: e.at,
        kind: "rule".into(),
        instance: Some(e.instance.clone()),
        body: quota_json(e),
    }
}
