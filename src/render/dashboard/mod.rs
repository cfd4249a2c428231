//! The web dashboard: server-rendered pages ([`page`]) with a little hand-written script,
//! every asset compiled into the binary — no framework, no bundler, nothing fetched
//! from elsewhere. The agent's HTTP API serves it at `/`.

pub mod fleet;
pub mod page;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use rusqlite::Connection;

use crate::config::Config;
use crate::model::calendar::Granularity;
use crate::model::ids::InstanceId;
use crate::render::export::chart::{self, ChartError, Figure, Theme};
use crate::render::export::{Directions, Spec, build};

/// What a page request gets: the whole page, or only the parts its script refreshes
/// (`?fragment=1`), so rows are rendered in one place only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Page,
    Fragments,
}

impl Part {
    /// `?fragment=…` present or not.
    pub fn asked(fragment: bool) -> Part {
        if fragment {
            Part::Fragments
        } else {
            Part::Page
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChartPageError {
    #[error(transparent)]
    Ledger(#[from] crate::account::LedgerError),
    #[error(transparent)]
    Chart(#[from] ChartError),
}

/// How far back a chart of each granularity looks.
pub fn lookback(by: Granularity) -> SignedDuration {
    match by {
        Granularity::FiveMinutes => SignedDuration::from_hours(6),
        Granularity::Hour => SignedDuration::from_hours(48),
        Granularity::Day => SignedDuration::from_hours(24 * 31),
        Granularity::Month => SignedDuration::from_hours(24 * 366),
    }
}

/// One instance's traffic chart as SVG, ending now.
pub fn chart_svg(
    conn: &Connection,
    config: Option<&Config>,
    id: &InstanceId,
    by: Granularity,
    dark: bool,
    now: Timestamp,
) -> Result<String, ChartPageError> {
    let tz = TimeZone::system();
    let spec = Spec {
        instance: Some(id.clone()),
        interface: None,
        by,
        from: now - lookback(by),
        to: now,
        tz: tz.clone(),
        directions: Directions::Both,
    };
    let report = build(conn, &spec, config, None, now)?;
    let Some(series) = report.series.first() else {
        return Ok(String::new());
    };
    Ok(chart::svg(
        &report,
        &Figure::Instance(series),
        &Theme::new(dark),
        &tz,
    )?)
}
