//! The event log's one JSON shape: what `simulate` prints, `sluice events --json` shows,
//! the ledger stores and webhooks receive — built here so the four never drift apart.
//!
//! Each kind is a variant of a `#[serde(tag = "event")]` enum, so a field's name and
//! type are written once, in the variant, rather than in a `json!` per call site.

use jiff::Timestamp;
use serde::Serialize;
use serde_json::Value;

use crate::account::ledger::{EventRow, time_json};
use crate::config::ActionKind;
use crate::model::event::LogKind;
use crate::policy::quota::{QuotaEvent, QuotaState};
use crate::policy::{ChangeCause, Event, EventKind};

/// A policy event as JSON: when, where, then its kind's fields.
#[derive(Serialize)]
struct PolicyJson<'a> {
    time: Value,
    interface: &'a str,
    instance: &'a str,
    #[serde(flatten)]
    body: PolicyBody,
}

#[derive(Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum PolicyBody {
    Stage {
        from: usize,
        to: usize,
        upload_limit_kbps: Option<u64>,
        cause: ChangeCause,
        upload_kbps: Option<u64>,
        until: Option<i64>,
    },
    Returned {
        stage: usize,
    },
    Vanished {
        stage: usize,
    },
    CountersReset,
}

impl PolicyBody {
    fn of(kind: &EventKind) -> PolicyBody {
        match kind {
            EventKind::Stage {
                change,
                upload_limit,
                usage,
                until,
            } => PolicyBody::Stage {
                from: change.from,
                to: change.to,
                upload_limit_kbps: upload_limit.map(|r| r.kbps()),
                cause: change.cause,
                upload_kbps: usage.map(|r| r.kbps()),
                until: until.map(|t| t.as_second()),
            },
            EventKind::Returned { stage } => PolicyBody::Returned { stage: *stage },
            EventKind::VanishedKeepingPenalty { stage } => PolicyBody::Vanished { stage: *stage },
            EventKind::CountersReset => PolicyBody::CountersReset,
        }
    }

    fn log_kind(&self) -> LogKind {
        match self {
            PolicyBody::Stage { .. } => LogKind::Stage,
            PolicyBody::Returned { .. } => LogKind::Returned,
            PolicyBody::Vanished { .. } => LogKind::Vanished,
            PolicyBody::CountersReset => LogKind::CountersReset,
        }
    }
}

/// A quota rule event as JSON.
#[derive(Serialize)]
struct QuotaJson<'a> {
    time: i64,
    #[serde(flatten)]
    body: QuotaBody<'a>,
}

#[derive(Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum QuotaBody<'a> {
    Rule {
        rule: &'a str,
        instance: &'a str,
        state: &'static str,
        action: ActionKind,
        used_bytes: u64,
        /// Of `used_bytes`, what other hosts counted (a store quota of an instance that
        /// moved); absent when none did.
        #[serde(skip_serializing_if = "Option::is_none")]
        elsewhere_bytes: Option<u64>,
        limit_bytes: u64,
        period_start: i64,
        period_end: i64,
        /// Only for a threshold: the share of the limit it announces.
        #[serde(skip_serializing_if = "Option::is_none")]
        threshold: Option<f64>,
    },
}

/// Serialising these types cannot fail (no maps with non-string keys, no custom
/// serialisers that refuse); `Null` stands in should that ever change.
fn to_value(v: impl Serialize) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// A policy event (stage change, counters reset, …) at `time` (Unix seconds).
pub fn event_json(time: f64, e: &Event) -> Value {
    to_value(PolicyJson {
        time: time_json(time),
        interface: e.interface.as_str(),
        instance: e.instance.as_str(),
        body: PolicyBody::of(&e.kind),
    })
}

/// A quota rule event.
pub fn quota_json(e: &QuotaEvent) -> Value {
    to_value(QuotaJson {
        time: e.at.as_second(),
        body: QuotaBody::Rule {
            rule: e.rule.as_str(),
            instance: e.instance.as_str(),
            state: e.state.as_str(),
            action: e.action,
            used_bytes: e.used.get(),
            elsewhere_bytes: (e.elsewhere > 0).then_some(e.elsewhere),
            limit_bytes: e.limit.get(),
            period_start: e.period.start.as_second(),
            period_end: e.period.end.as_second(),
            threshold: match e.state {
                QuotaState::Threshold(f) => Some(f),
                _ => None,
            },
        },
    })
}

/// The ledger row of a policy event.
pub fn policy_row(at: Timestamp, e: &Event) -> EventRow {
    EventRow {
        at,
        kind: PolicyBody::of(&e.kind).log_kind(),
        instance: Some(e.instance.clone()),
        body: event_json(at.as_millisecond() as f64 / 1000.0, e),
    }
}

/// The ledger row of a quota event.
pub fn quota_row(e: &QuotaEvent) -> EventRow {
    EventRow {
        at: e.at,
        kind: LogKind::Rule,
        instance: Some(e.instance.clone()),
        body: quota_json(e),
    }
}
