//! Traffic accounting: turning cumulative kernel counters into deltas.
//! (The durable ledger of hourly buckets comes with the ledger issue.)

mod delta;

pub use delta::{Counters, Delta, counter_delta};
