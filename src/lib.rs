//! sluice: a per-host traffic agent for hypervisors. See DESIGN.md for the map; each
//! module's first lines say what it owns.

pub mod account;
pub mod api;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dashboard;
pub mod enforce;
pub mod events;
pub mod export;
pub mod hooks;
pub mod logging;
pub mod names;
pub mod netlink;
pub mod policy;
pub mod reporter;
pub mod sample;
pub mod state;
pub mod store;
pub mod units;
pub mod webhook;
