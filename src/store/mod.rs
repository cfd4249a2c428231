//! The quota store: limits on counted resources (IPv4/IPv6 addresses, port mappings,
//! proxies, …) that a control panel checks and reserves against, race-free.
//!
//! [`model`] holds the rules (resolution order, what "over quota" means) with no
//! database; [`sqlite`] is the embedded backend. The HTTP API, agent reports and the
//! PostgreSQL backend build on these (issue 5, in progress).

pub mod model;
pub mod sqlite;

pub use model::{Deltas, Limit, Membership, OverQuota, Resource, Scope, Standing, StoreError};
pub use sqlite::{ReservationId, SqliteStore};
