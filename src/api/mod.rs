//! HTTP: the agent's API (routes over the tick loop) and the quota store's API, with the
//! parts they share (the error shape, bearer tokens, who may reach them).

pub mod access;
pub mod agent;
mod error;
pub mod exposition;
pub mod store;

pub use error::ApiError;
