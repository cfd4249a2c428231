//! What leaves the agent: the event log's JSON encoding, webhooks, and the reporter that
//! delivers spooled usage to the quota store.

pub mod backoff;
pub mod event;
pub mod reporter;
pub mod webhook;
