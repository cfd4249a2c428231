//! The vocabulary every other layer speaks: units an operator writes (and their human
//! spelling), validated ids, the one calendar of quota periods, and the API token format.
//! Nothing here does I/O.

pub mod calendar;
pub mod day_curve;
pub mod event;
pub mod human;
pub mod ids;
pub mod percentile;
pub mod redact;
pub mod token;
pub mod units;
