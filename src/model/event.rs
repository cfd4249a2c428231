//! The closed set of what the event log records. The ledger stores the kind's name, the
//! webhooks send it in a header and filter on it, `sluice events` prints it: one enum so
//! that a new kind is added everywhere at once, and a misspelt one is a compile error.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What an entry of the event log is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogKind {
    /// A quota rule crossed a threshold, was exceeded or restored.
    Rule,
    /// A penalty stage changed.
    Stage,
    /// An interface came back while its penalty still ran.
    Returned,
    /// An interface vanished with a penalty running.
    Vanished,
    /// An interface's counters were reset.
    CountersReset,
    /// A hook ran.
    Hook,
    LinkDown,
    LinkUp,
    /// A limit did not take in the kernel.
    EnforceFailed,
    /// An operator started a rule's count over.
    QuotaReset,
    /// An action observe-only mode (`backend = "none"`) did not carry out.
    Skipped,
}

impl LogKind {
    pub const ALL: [LogKind; 11] = [
        LogKind::Rule,
        LogKind::Stage,
        LogKind::Returned,
        LogKind::Vanished,
        LogKind::CountersReset,
        LogKind::Hook,
        LogKind::LinkDown,
        LogKind::LinkUp,
        LogKind::EnforceFailed,
        LogKind::QuotaReset,
        LogKind::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LogKind::Rule => "rule",
            LogKind::Stage => "stage",
            LogKind::Returned => "returned",
            LogKind::Vanished => "vanished",
            LogKind::CountersReset => "counters_reset",
            LogKind::Hook => "hook",
            LogKind::LinkDown => "link_down",
            LogKind::LinkUp => "link_up",
            LogKind::EnforceFailed => "enforce_failed",
            LogKind::QuotaReset => "quota_reset",
            LogKind::Skipped => "skipped",
        }
    }
}

impl fmt::Display for LogKind {
    /// Padded as a `str` would be (`{:<14}` lines up `sluice events`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for LogKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        LogKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = LogKind::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown event kind {s:?}; one of {}", names.join(", "))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_match_serde() {
        for k in LogKind::ALL {
            assert_eq!(k.as_str().parse::<LogKind>(), Ok(k));
            assert_eq!(
                serde_json::to_value(k).unwrap(),
                serde_json::json!(k.as_str())
            );
        }
        let e = "policy".parse::<LogKind>().unwrap_err();
        assert!(
            e.contains("\"policy\"") && e.contains("counters_reset"),
            "{e}"
        );
    }
}
