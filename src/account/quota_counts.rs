//! The quota counts the ledger persists: each (rule, instance)'s bytes in its current
//! period and what was announced of it. The policy decides with them; the ledger stores
//! them in the same transaction as the bytes, so a restart neither forgets an exceed
//! nor repeats its action.

use jiff::Timestamp;

use crate::model::calendar::Period;
use crate::model::ids::{InstanceId, RuleName};

/// Bytes an instance's interface counted over (from, to].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spent {
    pub instance: InstanceId,
    pub upload: u64,
    pub download: u64,
    pub from: Timestamp,
    pub to: Timestamp,
    /// The span was a sampling gap (the agent was down): the ledger spread the bytes
    /// over it and flagged them estimated.
    pub estimated: bool,
}

/// One rule's count for one instance in its current period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaUsage {
    pub period: Period,
    pub upload: u64,
    pub download: u64,
    /// How many of the rule's `notify_at` thresholds were announced this period.
    pub notified: usize,
    /// The limit was exceeded this period: the action holds until the period ends.
    pub exceeded: bool,
}

impl QuotaUsage {
    /// A count at zero for `period`.
    pub fn fresh(period: Period) -> Self {
        QuotaUsage {
            period,
            upload: 0,
            download: 0,
            notified: 0,
            exceeded: false,
        }
    }
}

/// The key of one count: (rule, instance).
pub type QuotaKey = (RuleName, InstanceId);
/// Persisted counts, as the ledger stores them.
pub type QuotaRows = Vec<(QuotaKey, QuotaUsage)>;

/// Rows to write (`Some`) or delete (`None`) to make the persisted state equal this one.
pub type QuotaChanges = Vec<((RuleName, InstanceId), Option<QuotaUsage>)>;
