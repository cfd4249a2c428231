//! The agent API's routes. Every answer is JSON except `/metrics`; every refusal has the
//! store's error shape (`{"error":{"code":…,"message":…}}`).

use axum::Json;
use axum::Router;
use axum::extract::{Form, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::oneshot;

use super::tokens::AgentRole;
use super::{ANSWER_TIMEOUT, ApiState, Ask, ReleaseRefused, metrics};
use crate::account::ledger::{open_read_only, read_events};
use crate::api::access::bearer;
use crate::api::access::{LoginForm, read_needs_token, read_token, signed_in, signed_out};
use crate::api::{ApiError, exposition};
use crate::model::ids::{IfName, InstanceId};
use crate::model::token::Token;
use crate::render::dashboard::page;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(prometheus))
        .route("/v1/status", get(status))
        .route("/v1/interfaces", get(interfaces))
        .route("/v1/interfaces/{name}/release", post(release))
        .route("/v1/instances/{id}", get(instance))
        .route("/v1/instances/{id}/rules/{rule}/reset", post(reset_quota))
        .route("/v1/rules", get(rules))
        .route("/v1/events", get(events))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .merge(super::pages::routes())
}

fn busy(why: &str) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "agent_busy",
        format!("the agent did not answer: {why}; try again"),
    )
}

/// Put a question to the tick loop and wait (bounded) for its answer.
pub(super) async fn ask<T>(
    s: &ApiState,
    make: impl FnOnce(oneshot::Sender<T>) -> Ask,
) -> Result<T, ApiError> {
    let (tx, rx) = oneshot::channel();
    s.asks.try_send(make(tx)).map_err(|e| match e {
        tokio::sync::mpsc::error::TrySendError::Full(_) => busy("too many questions waiting"),
        tokio::sync::mpsc::error::TrySendError::Closed(_) => busy("the agent is stopping"),
    })?;
    match tokio::time::timeout(ANSWER_TIMEOUT, rx).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(_)) => Err(busy("the agent is stopping")),
        Err(_) => Err(busy("a tick is taking too long")),
    }
}

/// The role of `token` in the agent's token file; a file that cannot be read is a 503.
fn role_of(s: &ApiState, token: &Token) -> Result<Option<AgentRole>, ApiError> {
    s.tokens.role_of(token).map_err(|e| {
        tracing::error!("agent API tokens: {e}");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "tokens_unreadable",
            format!("the agent cannot read its token file: {e}"),
        )
    })
}

/// A caller holding a live admin token from `sluice token create`, in the
/// `Authorization` header: never the sign-in cookie, which a browser would send along
/// with another site's forged request.
pub struct Admin;

impl FromRequestParts<ApiState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &ApiState) -> Result<Self, ApiError> {
        let token = bearer(
            parts,
            "missing Authorization: Bearer token (sluice token create)",
        )?;
        match role_of(s, &token)? {
            Some(AgentRole::Admin) => Ok(Admin),
            Some(AgentRole::Viewer) => Err(ApiError::forbidden(
                "a viewer token may only read; this needs an admin token",
            )),
            None => Err(ApiError::unauthorized("unknown or revoked token")),
        }
    }
}

/// A caller who may read: anyone on a loopback listener; beyond it, a viewer or admin
/// token in the header or the sign-in cookie.
pub struct Reader;

impl FromRequestParts<ApiState> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &ApiState) -> Result<Self, ApiError> {
        if !s.access.reads_need_token {
            return Ok(Reader);
        }
        let token = read_token(parts)?.ok_or_else(|| read_needs_token("viewer or admin"))?;
        match role_of(s, &token)? {
            Some(_) => Ok(Reader),
            None => Err(ApiError::unauthorized("unknown or revoked token")),
        }
    }
}

/// A `/metrics` scraper: a reader, or anyone when `agent.metrics_public` is set.
pub struct Scraper;

impl FromRequestParts<ApiState> for Scraper {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &ApiState) -> Result<Self, ApiError> {
        if s.access.metrics_public {
            return Ok(Scraper);
        }
        Reader::from_request_parts(parts, s).await.map(|_| Scraper)
    }
}

/// `POST /login`: a form's token, kept in the sign-in cookie if it is a live one; the
/// sign-in page again (401) if not.
async fn login(State(s): State<ApiState>, Form(form): Form<LoginForm>) -> Response {
    let known = match Token::parse(form.token.trim()) {
        Some(token) => match role_of(&s, &token) {
            Ok(Some(_)) => Some(token),
            Ok(None) => None,
            Err(e) => return e.into_response(),
        },
        None => None,
    };
    match known {
        Some(token) => signed_in(&token, form.next_path()),
        None => (
            StatusCode::UNAUTHORIZED,
            Html(page::login(&s.host, form.next_path(), true)),
        )
            .into_response(),
    }
}

async fn logout() -> Response {
    signed_out()
}

async fn healthz(State(s): State<ApiState>) -> Response {
    let now = Timestamp::now();
    let last = s.liveness.last_tick();
    let body = json!({
        "status": match last {
            None => "starting",
            Some(_) if s.liveness.overdue(now) => "stale",
            Some(_) => "ok",
        },
        "last_tick": last.map(|(at, _)| at.to_string()),
        "last_tick_ms": last.map(|(_, took)| took.as_secs_f64() * 1e3),
    });
    let code = if s.liveness.overdue(now) {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, Json(body)).into_response()
}

async fn prometheus(
    _: Scraper,
    State(s): State<ApiState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let scrape = ask(&s, Ask::Metrics).await?;
    let text = metrics::render(&s.metrics, scrape).map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "metrics could not be encoded",
        )
    })?;
    Ok(exposition::respond(&headers, text))
}

async fn status(_: Reader, State(s): State<ApiState>) -> Result<Response, ApiError> {
    Ok(Json(ask(&s, Ask::Status).await?).into_response())
}

async fn interfaces(_: Reader, State(s): State<ApiState>) -> Result<Response, ApiError> {
    Ok(Json(ask(&s, Ask::Interfaces).await?).into_response())
}

async fn instance(
    _: Reader,
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = InstanceId::new(&id).map_err(|e| ApiError::invalid("id", e.to_string()))?;
    match ask(&s, |tx| Ask::Instance(id.clone(), tx)).await? {
        Some(view) => Ok(Json(view).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("instance {id:?} has no interface on this host"),
        )),
    }
}

async fn rules(_: Reader, State(s): State<ApiState>) -> Result<Response, ApiError> {
    let rules = ask(&s, Ask::Rules).await?;
    Ok(Json(json!({ "rules": rules })).into_response())
}

async fn release(
    _admin: Admin,
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let name = IfName::new(&name).map_err(|e| ApiError::invalid("name", e.to_string()))?;
    match ask(&s, |tx| Ask::Release(name.clone(), tx)).await? {
        Ok(record) => Ok(Json(json!({ "released": record })).into_response()),
        Err(e @ ReleaseRefused::Unknown(_)) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            e.to_string(),
        )),
        Err(e @ ReleaseRefused::NotPenalised(_)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_penalised",
            e.to_string(),
        )),
    }
}

/// Events at or after `since` (at most `limit`, the newest), read on the API's own
/// read-only ledger connection on a blocking thread.
pub(super) async fn ledger_events(
    s: &ApiState,
    since: Timestamp,
    instance: Option<InstanceId>,
    limit: usize,
) -> Result<Vec<crate::account::ledger::EventRow>, ApiError> {
    let conn = s.events_conn.clone();
    let path = s.ledger.clone();
    off_runtime("ledger_unavailable", "read the event log", move || {
        let mut held = conn
            .lock()
            .map_err(|_| "event reader poisoned".to_owned())?;
        if held.is_none() {
            *held = Some(open_read_only(&path).map_err(|e| e.to_string())?);
        }
        let c = held.as_ref().ok_or("no ledger connection")?;
        read_events(c, Some(since), instance.as_ref(), limit).map_err(|e| {
            // A broken connection is opened again next time.
            *held = None;
            e.to_string()
        })
    })
    .await
}

/// Run blocking work (a ledger read, a chart) on a blocking thread. Its failure, or the
/// thread's, answers 503 with `code` and "cannot {what}: …".
pub(super) async fn off_runtime<T: Send + 'static>(
    code: &'static str,
    what: &'static str,
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r)
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                code,
                format!("cannot {what}: {e}"),
            )
        })
}

async fn reset_quota(
    _admin: Admin,
    State(s): State<ApiState>,
    Path((id, rule)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id = InstanceId::new(&id).map_err(|e| ApiError::invalid("id", e.to_string()))?;
    let rule = crate::model::ids::RuleName::new(&rule)
        .map_err(|e| ApiError::invalid("rule", e.to_string()))?;
    match ask(&s, |tx| Ask::ResetQuota(rule.clone(), id.clone(), tx)).await? {
        Some(count) => Ok(Json(json!({ "reset": count })).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("rule {rule:?} counts nothing for instance {id:?} in this period"),
        )),
    }
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    since: Option<String>,
    instance: Option<String>,
    limit: Option<usize>,
}

/// The most events one request returns.
const MAX_EVENTS: usize = 10_000;

/// `since`: an RFC 3339 instant, or a duration back from now ("1h", "7d").
fn parse_since(s: &str, now: Timestamp) -> Result<Timestamp, ApiError> {
    if let Ok(t) = s.parse::<Timestamp>() {
        return Ok(t);
    }
    let back = crate::model::units::parse_duration(s)
        .ok()
        .and_then(|d| SignedDuration::try_from(d).ok())
        .and_then(|d| now.checked_sub(d).ok());
    back.ok_or_else(|| {
        ApiError::invalid(
            "since",
            format!("{s:?} is neither an RFC 3339 instant nor a duration like 1h"),
        )
    })
}

async fn events(
    _: Reader,
    State(s): State<ApiState>,
    Query(q): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    let now = Timestamp::now();
    let since = match q.since.as_deref() {
        None => now - SignedDuration::from_hours(24),
        Some(x) => parse_since(x, now)?,
    };
    let instance = q
        .instance
        .as_deref()
        .map(InstanceId::new)
        .transpose()
        .map_err(|e| ApiError::invalid("instance", e.to_string()))?;
    let limit = q.limit.unwrap_or(1000);
    if limit == 0 || limit > MAX_EVENTS {
        return Err(ApiError::invalid(
            "limit",
            format!("must be 1..={MAX_EVENTS}"),
        ));
    }
    let rows = ledger_events(&s, since, instance, limit).await?;
    let events: Vec<&serde_json::Value> = rows.iter().map(|e| &e.body).collect();
    Ok(Json(json!({ "since": since.to_string(), "events": events })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_an_instant_or_a_duration_back() {
        let now: Timestamp = "2026-11-24T12:00:00Z".parse().unwrap();
        let table = [
            ("2026-11-24T10:00:00Z", Some("2026-11-24T10:00:00Z")),
            ("1h", Some("2026-11-24T11:00:00Z")),
            ("7d", Some("2026-11-17T12:00:00Z")),
            ("yesterday", None),
            ("", None),
        ];
        for (arg, want) in table {
            match (parse_since(arg, now), want) {
                (Ok(t), Some(w)) => assert_eq!(t, w.parse::<Timestamp>().unwrap(), "{arg}"),
                (Err(e), None) => assert_eq!(e.details.get("field").unwrap(), "since"),
                (got, want) => panic!("{arg:?}: {got:?}, wanted {want:?}"),
            }
        }
    }
}
