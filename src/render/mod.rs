//! What people look at: the dashboard's pages and the exports (charts, HTML, CSV, JSON).
//! Rendering is pure: it takes views and ledger rows and returns bytes.

pub mod dashboard;
pub mod export;
