//! Traffic accounting: turning cumulative kernel counters into deltas, and the durable
//! ledger of 5-minute and hourly buckets they are committed to.

mod delta;
pub mod ledger;
pub mod quota_counts;
pub mod usage;

pub use delta::{Boot, Counters, Delta, counter_delta};
pub use ledger::{Ledger, LedgerError, Observation, Recorded};
