//! One tick, the same for `sluice agent` and `sluice simulate`: samples in, counted,
//! charged to the quotas and judged by the policy, committed in one ledger transaction.

mod charge;
mod tick;

pub use charge::{Charged, SpoolPlan, charge};
pub use tick::{TickInput, Ticked, tick};
