//! HTTP: the agent's API (routes over the tick loop) and the quota store's API, with the
//! parts they share (the error shape, bearer tokens).

pub mod agent;
pub mod store;
