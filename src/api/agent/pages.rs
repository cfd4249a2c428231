//! The dashboard's pages on the agent's listener: `/` (every instance and the events of
//! the last 24 hours), `/instances/{id}` and its chart, `/v1/instances/{id}/chart.svg`.
//! Rendering lives in `crate::render::dashboard`; this is only the HTTP edge.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;

use super::routes::{Reader, ask, ledger_events, off_runtime};
use super::{ApiState, Ask};
use crate::account::ledger::open_read_only;
use crate::account::usage::percentiles;
use crate::api::ApiError;
use crate::api::access::refused_page;
use crate::model::calendar::Granularity;
use crate::model::ids::InstanceId;
use crate::model::percentile::Percentile;
use crate::render::dashboard::{self, Part, page};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/", get(overview))
        .route("/instances/{id}", get(instance))
        .route("/v1/instances/{id}/chart.svg", get(chart))
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    fragment: Option<String>,
}

/// Gather what a page shows — the tick loop's snapshot and the last day's events (a
/// ledger that cannot be read yet shows none rather than failing the page) — and draw.
async fn with_view<T>(
    s: &ApiState,
    instance: Option<&InstanceId>,
    draw: impl FnOnce(&page::View<'_>) -> T,
) -> Result<T, ApiError> {
    // An instance page shows its month's 95th percentile so far (from the ledger; a
    // ledger that cannot be read yet shows none).
    let percentiles = match instance {
        Some(id) => {
            let (path, id) = (s.ledger.clone(), id.clone());
            off_runtime("ledger_unavailable", "read the percentile", move || {
                let conn = open_read_only(&path).map_err(|e| e.to_string())?;
                let tz = TimeZone::system();
                let now = Timestamp::now();
                let start = Granularity::Month.start_of(now, &tz);
                let rows = percentiles(
                    &conn,
                    Some(&id),
                    Granularity::Month,
                    (start, now),
                    now,
                    &tz,
                    Percentile::P95,
                )
                .map_err(|e| e.to_string())?;
                Ok(rows.into_iter().next().map(|r| r.figures))
            })
            .await
            .unwrap_or_default()
        }
        None => None,
    };
    let snapshot = ask(s, Ask::Interfaces).await?;
    let now = Timestamp::now();
    let events = ledger_events(
        s,
        now - SignedDuration::from_hours(24),
        instance.cloned(),
        1000,
    )
    .await
    .unwrap_or_default();
    let tz = TimeZone::system();
    Ok(draw(&page::View {
        snapshot: &snapshot,
        events: &events,
        host: &s.host,
        refresh_secs: snapshot.interval_secs.max(5),
        now,
        tz: &tz,
        percentiles,
    }))
}

async fn overview(
    reader: Result<Reader, ApiError>,
    State(s): State<ApiState>,
    uri: axum::http::Uri,
    Query(q): Query<PageQuery>,
) -> Result<Response, ApiError> {
    if let Some(refused) = refused_page(reader.map(drop), &s.host, &uri) {
        return Ok(refused);
    }
    let html = with_view(&s, None, |view| {
        page::overview(view, Part::asked(q.fragment.is_some()))
    })
    .await?;
    Ok(Html(html).into_response())
}

async fn instance(
    reader: Result<Reader, ApiError>,
    State(s): State<ApiState>,
    uri: axum::http::Uri,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Response, ApiError> {
    if let Some(refused) = refused_page(reader.map(drop), &s.host, &uri) {
        return Ok(refused);
    }
    let id = InstanceId::new(&id).map_err(|e| ApiError::invalid("id", e.to_string()))?;
    let html = with_view(&s, Some(&id), |view| {
        page::instance(view, id.as_str(), Part::asked(q.fragment.is_some()))
    })
    .await?;
    match html {
        Some(html) => Ok(Html(html).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("instance {id:?} has no interface on this host"),
        )),
    }
}

#[derive(Debug, Deserialize)]
struct ChartQuery {
    by: Option<String>,
    dark: Option<String>,
}

async fn chart(
    _: Reader,
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<ChartQuery>,
) -> Result<Response, ApiError> {
    let id = InstanceId::new(&id).map_err(|e| ApiError::invalid("id", e.to_string()))?;
    let by: Granularity =
        q.by.as_deref()
            .unwrap_or("hour")
            .parse()
            .map_err(|e: String| ApiError::invalid("by", e))?;
    let dark = q.dark.is_some_and(|d| d != "0");
    let config = ask(&s, Ask::Config).await?;
    let path = s.ledger.clone();
    let svg = off_runtime("chart_unavailable", "draw the chart", move || {
        let conn = open_read_only(&path).map_err(|e| e.to_string())?;
        dashboard::chart_svg(&conn, Some(&config), &id, by, dark, Timestamp::now())
            .map_err(|e| e.to_string())
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response())
}
