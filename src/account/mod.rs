//! Traffic accounting: turning cumulative kernel counters into deltas, and the durable
//! ledger of 5-minute and hourly buckets they are committed to.

mod charge;
mod delta;
pub mod ledger;
pub mod usage;

pub use charge::{Charged, SpoolPlan, charge};
pub use delta::{Counters, Delta, counter_delta};
pub use ledger::{Ledger, LedgerError, Observation, Recorded};
