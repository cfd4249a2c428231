//! sluice: a per-host traffic agent for hypervisors. See DESIGN.md for the map; each
//! module's first lines say what it owns.
//!
//! The modules form layers, listed here lowest first. A module imports only from the
//! layers above it in this list (`tests/layering.rs` reads every `crate::` path and fails
//! on any other edge), so each layer can be read, tested and replaced knowing only what
//! is below it:
//!
//! | layer      | owns |
//! | ---------- | ---- |
//! | `model`    | units and their human formatting, ids, the one calendar, the token format |
//! | `sys`      | the route netlink socket, the argv+timeout command runner, atomic files, locks |
//! | `config`   | raw (serde) → validated `Config`; every default |
//! | `sample`   | the netlink link sampler and the trace reader → `Sample` |
//! | `inventory`| the hypervisors' records: who owns each interface, its name, tags, rates |
//! | `account`  | the one counter delta, the ledger, usage queries |
//! | `policy`   | pure: penalty machine, quota decisions, verdicts |
//! | `enforce`  | backends (ovs, tc), links, hooks |
//! | `state`    | the snapshot (`state.json`) and its records |
//! | `store`    | the quota engine over SQLite or PostgreSQL |
//! | `report`   | event encoding, webhooks, the reporter to the store |
//! | `engine`   | one tick: policy → ledger commit → verdicts, for the agent and `simulate` alike |
//! | `render`   | dashboard pages and exports (charts, HTML, CSV, JSON) |
//! | `api`      | HTTP: shared errors and auth, the agent's routes, the store's routes |
//! | `daemon`   | the agent's loop, signals, reload, store link, logging |
//! | `cli`      | one file per subcommand: parse, call, print |

// One module a group, so that rustfmt keeps them in layer order.
pub mod model;

pub mod sys;

pub mod config;

pub mod sample;

pub mod inventory;

pub mod account;

pub mod policy;

pub mod enforce;

pub mod state;

pub mod store;

pub mod report;

pub mod engine;

pub mod render;

pub mod api;

pub mod daemon;

pub mod cli;
