//! The quota store: limits on counted resources (IPv4/IPv6 addresses, port mappings,
//! proxies, …) that a control panel checks and reserves against race-free, traffic
//! quotas the agents enforce, and the traffic the agents report, counted exactly once.
//!
//! [`model`] and [`traffic`] hold the rules with no database; [`engine`] is every
//! operation, written once over the statements of [`backend`], which [`sqlite`] (the
//! embedded backend) and [`postgres`] (the fleet's) implement; [`service`] is the async
//! face the HTTP API and the agent use.

pub(crate) mod backend;
pub(crate) mod engine;
pub mod model;
pub mod postgres;
pub mod report;
pub mod service;
pub mod spec;
pub mod sqlite;
pub mod statement;
pub mod traffic;
pub mod view;

pub use model::{
    Deltas, Limit, Membership, OverQuota, ReservationId, Resource, Scope, Standing, StoreError,
};
pub use sqlite::SqliteStore;

/// The most instances one `POST /v1/quotas/lookup` may name: a lookup of 400,000 held
/// the store's one SQLite writer for seconds. Agents with more ask in parts.
pub const MAX_LOOKUP_IDS: usize = 10_000;
