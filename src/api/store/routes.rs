//! The endpoints. Each handler checks its input into typed form (errors name the field),
//! makes one store call and shapes the answer.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::json;

use super::ApiState;
use super::auth::{Caller, Operator, Reader};
use super::body::JsonBody;
use super::metrics::OutcomeLabels;
use crate::api::access::{LoginForm, refused_page, signed_in, signed_out};
use crate::api::{ApiError, exposition};
use crate::model::ids::{InstanceId, Label};
use crate::model::percentile::Percentile;
use crate::model::token::{Role, Token};
use crate::model::units::parse_duration;
use crate::store::model::{Deltas, ReservationId, Scope};
use crate::store::report::{MAX_SEQ, Report};
use crate::store::spec::WireSpec;
use crate::store::traffic::{StorePeriod, TrafficResource, WireTopup};
use crate::store::view::PercentileUse;

type ApiResult<T> = Result<T, ApiError>;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/stats", get(stats))
        .route("/v1/defaults", get(get_defaults).put(put_defaults))
        .route("/v1/classes", get(list_classes))
        .route(
            "/v1/classes/{name}",
            get(get_class).put(put_class).delete(delete_class),
        )
        .route("/v1/projects", get(list_projects))
        .route("/v1/projects/{id}/usage", get(get_project_usage))
        .route(
            "/v1/projects/{id}",
            get(get_project).put(put_project).delete(delete_project),
        )
        .route(
            "/v1/instances/{id}",
            axum::routing::delete(destroy_instance),
        )
        .route(
            "/v1/instances/{id}/quota",
            get(get_quota).put(put_quota).delete(delete_quota),
        )
        .route("/v1/instances/{id}/usage", get(get_usage).put(put_usage))
        .route("/v1/instances/{id}/statements", get(list_statements))
        .route(
            "/v1/instances/{id}/traffic/topups",
            get(list_topups).post(add_topup),
        )
        .route("/v1/check", post(limit_check))
        .route("/v1/reservations", post(reserve))
        .route("/v1/reservations/{id}/commit", post(commit))
        .route("/v1/reservations/{id}/rollback", post(rollback))
        .route("/v1/usage/reset", post(usage_reset))
        .route("/v1/reports", post(reports))
        .route("/v1/quotas/lookup", post(quotas_lookup))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
}

fn instance(field: &str, s: &str) -> ApiResult<InstanceId> {
    InstanceId::new(s).map_err(|e| ApiError::invalid(field, e.to_string()))
}

fn label(field: &str, s: &str) -> ApiResult<Label> {
    Label::new(s).map_err(|e| ApiError::invalid(field, e.to_string()))
}

/// `GET /`: the fleet dashboard (see `crate::render::dashboard::fleet`).
pub fn fleet_routes() -> Router<ApiState> {
    Router::new()
        .route("/", get(fleet_page))
        .route("/login", post(login))
        .route("/logout", post(logout))
}

/// `POST /login`: a read token (admin, panel or viewer) kept in the sign-in cookie; the
/// sign-in page again (401) for anything else.
async fn login(State(s): State<ApiState>, Form(form): Form<LoginForm>) -> ApiResult<Response> {
    let token = match Token::parse(form.token.trim()) {
        Some(token) => {
            let shown = Token::parse(form.token.trim());
            match s.store.authenticate(token).await? {
                Some(Role::Admin | Role::Panel | Role::Viewer) => shown,
                _ => None,
            }
        }
        None => None,
    };
    Ok(match token {
        Some(token) => signed_in(&token, form.next_path()),
        None => (
            StatusCode::UNAUTHORIZED,
            axum::response::Html(crate::render::dashboard::page::login(
                "fleet",
                form.next_path(),
                true,
            )),
        )
            .into_response(),
    })
}

async fn logout() -> Response {
    signed_out()
}

#[derive(Debug, Deserialize)]
struct FleetQuery {
    period: Option<String>,
    fragment: Option<String>,
    /// `volume` (default) or `p95`: what the top instances are ranked by.
    rank: Option<String>,
    /// A time in the period to show (RFC 3339; default now).
    at: Option<String>,
}

/// A `period` parameter (query or body); the month when absent.
fn period_param(period: Option<&str>) -> ApiResult<StorePeriod> {
    period
        .unwrap_or("month")
        .parse()
        .map_err(|e| ApiError::invalid("period", e))
}

/// How many instances the fleet view ranks.
const FLEET_TOP: usize = 50;

async fn fleet_page(
    reader: Result<Reader, ApiError>,
    State(s): State<ApiState>,
    uri: axum::http::Uri,
    Query(q): Query<FleetQuery>,
) -> ApiResult<Response> {
    if s.access.reads_need_token
        && let Some(refused) = refused_page(reader.map(drop), "fleet", &uri)
    {
        return Ok(refused);
    }
    let period = period_param(q.period.as_deref())?;
    let now = jiff::Timestamp::now();
    let at = at_param(q.at.as_deref())?;
    let fleet = match q.rank.as_deref() {
        None | Some("volume") => s.store.fleet(period, at, FLEET_TOP).await?,
        Some("p95") => s.store.fleet_by_percentile(period, at, FLEET_TOP).await?,
        Some(other) => {
            return Err(ApiError::invalid(
                "rank",
                format!("must be volume or p95, got {other:?}"),
            ));
        }
    };
    let html = crate::render::dashboard::fleet::render(
        &fleet,
        now,
        &jiff::tz::TimeZone::system(),
        crate::render::dashboard::Part::asked(q.fragment.is_some()),
    );
    Ok(axum::response::Html(html).into_response())
}

async fn healthz(State(s): State<ApiState>) -> Response {
    match s.store.health().await {
        Ok(()) => Json(json!({"status": "ok", "database": "reachable", "backend": s.store.backend_name()}))
            .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "database": e.to_string(), "backend": s.store.backend_name()})),
        )
            .into_response(),
    }
}

/// `/metrics`: open on loopback or with `--metrics-public`; else a read token.
async fn metrics(
    reader: Result<Reader, ApiError>,
    State(s): State<ApiState>,
    headers: HeaderMap,
) -> Response {
    if s.access.reads_need_token
        && !s.access.metrics_public
        && let Err(e) = reader
    {
        return e.into_response();
    }
    match s.metrics.render() {
        Ok(text) => exposition::respond(&headers, text),
        Err(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "metrics could not be encoded",
        )
        .into_response(),
    }
}

async fn stats(_: Reader, State(s): State<ApiState>) -> ApiResult<Response> {
    Ok(Json(s.store.stats().await?).into_response())
}

async fn put_scope(s: &ApiState, scope: Scope, spec: WireSpec) -> ApiResult<Response> {
    if !matches!(scope, Scope::Instance(_)) && spec.project.is_some() {
        return Err(ApiError::invalid(
            "project",
            "only an instance belongs to a project",
        ));
    }
    if matches!(scope, Scope::Class(_) | Scope::Default) && spec.class.is_some() {
        return Err(ApiError::invalid(
            "class",
            "only instances and projects have a class",
        ));
    }
    let spec = spec.validate(&s.store.settings().resources)?;
    s.store.put_scope(scope.clone(), spec).await?;
    Ok(Json(s.store.get_scope(scope).await?).into_response())
}

async fn get_defaults(_: Reader, State(s): State<ApiState>) -> ApiResult<Response> {
    Ok(Json(s.store.get_scope(Scope::Default).await?).into_response())
}

async fn put_defaults(
    _: Operator,
    State(s): State<ApiState>,
    JsonBody(spec): JsonBody<WireSpec>,
) -> ApiResult<Response> {
    put_scope(&s, Scope::Default, spec).await
}

async fn list_classes(_: Reader, State(s): State<ApiState>) -> ApiResult<Response> {
    Ok(Json(json!({"classes": s.store.list_scopes("class").await?})).into_response())
}

async fn get_class(
    _: Reader,
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let scope = Scope::Class(label("class", &name)?);
    Ok(Json(s.store.get_scope(scope).await?).into_response())
}

async fn put_class(
    _: Operator,
    State(s): State<ApiState>,
    Path(name): Path<String>,
    JsonBody(spec): JsonBody<WireSpec>,
) -> ApiResult<Response> {
    put_scope(&s, Scope::Class(label("class", &name)?), spec).await
}

async fn delete_class(
    _: Operator,
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    s.store
        .delete_scope(Scope::Class(label("class", &name)?))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_projects(_: Reader, State(s): State<ApiState>) -> ApiResult<Response> {
    Ok(Json(json!({"projects": s.store.list_scopes("project").await?})).into_response())
}

async fn get_project(
    _: Reader,
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let scope = Scope::Project(label("project", &id)?);
    Ok(Json(s.store.get_scope(scope).await?).into_response())
}

async fn put_project(
    _: Operator,
    State(s): State<ApiState>,
    Path(id): Path<String>,
    JsonBody(spec): JsonBody<WireSpec>,
) -> ApiResult<Response> {
    put_scope(&s, Scope::Project(label("project", &id)?), spec).await
}

async fn delete_project(
    _: Operator,
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.store
        .delete_scope(Scope::Project(label("project", &id)?))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn destroy_instance(
    _: Operator,
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.store.destroy_instance(instance("instance", &id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Admins read any instance; agents read quotas too (they enforce them).
async fn get_quota(
    _: Caller,
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(Json(s.store.instance_quota(instance("instance", &id)?).await?).into_response())
}

async fn put_quota(
    _: Operator,
    State(s): State<ApiState>,
    Path(id): Path<String>,
    JsonBody(spec): JsonBody<WireSpec>,
) -> ApiResult<Response> {
    let i = instance("instance", &id)?;
    put_scope(&s, Scope::Instance(i.clone()), spec).await?;
    Ok(Json(s.store.instance_quota(i).await?).into_response())
}

async fn delete_quota(
    _: Operator,
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.store
        .delete_scope(Scope::Instance(instance("instance", &id)?))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct UsageQuery {
    period: Option<String>,
    at: Option<String>,
    percentile: Option<String>,
}

/// `percentile=` as a whole number 1 to 100 (none: no percentiles asked).
fn percentile_param(p: Option<&str>) -> ApiResult<Option<Percentile>> {
    p.map(|p| {
        p.parse()
            .map_err(|why| ApiError::invalid("percentile", why))
    })
    .transpose()
}

async fn get_usage(
    _: Caller,
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<UsageQuery>,
) -> ApiResult<Response> {
    let period = period_param(q.period.as_deref())?;
    let at = at_param(q.at.as_deref())?;
    let p = percentile_param(q.percentile.as_deref())?;
    let i = instance("instance", &id)?;
    let mut usage = s.store.traffic_usage(i.clone(), period, at).await?;
    if let Some(p) = p {
        let all = s
            .store
            .percentiles(vec![i.clone()], period, at, Timestamp::now(), p)
            .await?;
        usage.percentiles = Some(
            all.get(i.as_str())
                .map(PercentileUse::from)
                .unwrap_or_else(|| PercentileUse::none(p)),
        );
    }
    Ok(Json(usage).into_response())
}

/// Buy more traffic for the current period of one of the instance's quotas: its limit
/// rises at once, and an exceed the top-up ends is lifted on every host within one
/// quota refresh.
async fn add_topup(
    _: Operator,
    State(s): State<ApiState>,
    Path(id): Path<String>,
    JsonBody(wire): JsonBody<WireTopup>,
) -> ApiResult<Response> {
    let i = instance("instance", &id)?;
    let topup = wire
        .validate()
        .map_err(|(field, why)| ApiError::invalid(field, why))?;
    let added = s.store.add_topup(i, topup).await?;
    Ok((StatusCode::CREATED, Json(added)).into_response())
}

/// The instance's top-ups of periods not yet over.
async fn list_topups(
    _: Caller,
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let i = instance("instance", &id)?;
    Ok(Json(json!({"topups": s.store.topups(i).await?})).into_response())
}

/// The instance's statements of closed billing months, oldest first, each exactly as
/// stored (so a client can check its hash and chain itself).
async fn list_statements(
    _: Caller,
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let i = instance("instance", &id)?;
    let mut out = Vec::new();
    for st in s.store.statements(Some(i)).await? {
        // A body that is not JSON was edited in the database: say so, and that
        // `sluice store statements verify` names it.
        let body: serde_json::Value = serde_json::from_str(&st.body).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "corrupt_statement",
                format!(
                    "statement {} {} is not JSON ({e}); run sluice store statements verify",
                    st.instance, st.start
                ),
            )
        })?;
        out.push(body);
    }
    Ok(Json(json!({ "statements": out })).into_response())
}

/// `at=` as an RFC 3339 time (default: now).
fn at_param(at: Option<&str>) -> ApiResult<Timestamp> {
    match at {
        None => Ok(Timestamp::now()),
        Some(t) => t.parse().map_err(|e: jiff::Error| {
            ApiError::invalid("at", format!("not an RFC 3339 time: {e}"))
        }),
    }
}

/// A project's traffic (all its instances') in a period, with its pooled quotas.
async fn get_project_usage(
    _: Caller,
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<UsageQuery>,
) -> ApiResult<Response> {
    let period = period_param(q.period.as_deref())?;
    let at = at_param(q.at.as_deref())?;
    let p = percentile_param(q.percentile.as_deref())?;
    let project = label("project", &id)?;
    let mut usage = s.store.project_usage(project.clone(), period, at).await?;
    if let Some(p) = p {
        let figures = s
            .store
            .project_percentiles(project, period, at, Timestamp::now(), p)
            .await?;
        usage.percentiles = Some(
            figures
                .as_ref()
                .map(PercentileUse::from)
                .unwrap_or_else(|| PercentileUse::none(p)),
        );
    }
    Ok(Json(usage).into_response())
}

/// Recount: `{"ipv4": 3, "proxies": 0}` — the panel's real counts replace the store's.
async fn put_usage(
    _: Operator,
    State(s): State<ApiState>,
    Path(id): Path<String>,
    JsonBody(counts): JsonBody<BTreeMap<String, u64>>,
) -> ApiResult<Response> {
    let i = instance("instance", &id)?;
    let known = &s.store.settings().resources;
    let mut typed = BTreeMap::new();
    for (name, n) in counts {
        typed.insert(known.counted(&name, &name)?, n);
    }
    s.store.usage_set(i.clone(), typed).await?;
    Ok(Json(s.store.instance_quota(i).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeltasBody {
    instance: String,
    deltas: BTreeMap<String, i64>,
    #[serde(default)]
    expires_in: Option<String>,
}

/// The largest change one reservation or release may ask for.
const MAX_DELTA: u64 = 1_000_000_000_000;

fn deltas(s: &ApiState, body: &DeltasBody) -> ApiResult<(InstanceId, Deltas)> {
    let i = instance("instance", &body.instance)?;
    if body.deltas.is_empty() {
        return Err(ApiError::invalid("deltas", "name at least one resource"));
    }
    let known = &s.store.settings().resources;
    let mut d = Deltas::new();
    for (name, v) in &body.deltas {
        let field = format!("deltas.{name}");
        // Counted resources are addresses, ports and the like: a bound keeps every sum
        // of use and reservations inside the databases' 64-bit integers.
        if v.unsigned_abs() > MAX_DELTA {
            return Err(ApiError::invalid(
                field,
                format!("must be within ±{MAX_DELTA}"),
            ));
        }
        d.insert(known.counted(&field, name)?, *v);
    }
    Ok((i, d))
}

/// Would these deltas fit? 200, or 409 over_quota; nothing is reserved.
async fn limit_check(
    _: Operator,
    State(s): State<ApiState>,
    JsonBody(body): JsonBody<DeltasBody>,
) -> ApiResult<Response> {
    let (i, d) = deltas(&s, &body)?;
    s.store.limit_check(i, d).await?;
    Ok(Json(json!({"ok": true})).into_response())
}

const DEFAULT_RESERVATION: Duration = Duration::from_secs(3600);
const LONGEST_RESERVATION: Duration = Duration::from_secs(7 * 86_400);

async fn reserve(
    _: Operator,
    State(s): State<ApiState>,
    JsonBody(body): JsonBody<DeltasBody>,
) -> ApiResult<Response> {
    let (i, d) = deltas(&s, &body)?;
    let expires_in = match &body.expires_in {
        None => DEFAULT_RESERVATION,
        Some(t) => parse_duration(t).map_err(|e| ApiError::invalid("expires_in", e.to_string()))?,
    };
    if expires_in.is_zero() || expires_in > LONGEST_RESERVATION {
        return Err(ApiError::invalid(
            "expires_in",
            "must be more than 0 and at most 7 days",
        ));
    }
    let (id, expires) = s.store.reserve(i, d, expires_in).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": id.as_str(), "expires_at": expires.to_string()})),
    )
        .into_response())
}

async fn commit(
    _: Operator,
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.store.commit(ReservationId::parse(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn rollback(
    _: Operator,
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.store.rollback(ReservationId::parse(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetBody {
    resource: String,
    #[serde(default)]
    instance: Option<String>,
    /// Traffic resources: which period (default month) of `instance` to forget.
    #[serde(default)]
    period: Option<String>,
}

/// A counted resource: use back to 0 (every instance, or `instance`). A traffic resource:
/// `instance`'s traffic in the current `period` forgotten (all directions).
async fn usage_reset(
    _: Operator,
    State(s): State<ApiState>,
    JsonBody(body): JsonBody<ResetBody>,
) -> ApiResult<Response> {
    let target = body
        .instance
        .as_deref()
        .map(|i| instance("instance", i))
        .transpose()?;
    if body.resource.parse::<TrafficResource>().is_ok() {
        let i = target
            .ok_or_else(|| ApiError::invalid("instance", "a traffic reset names the instance"))?;
        let period = period_param(body.period.as_deref())?;
        let hours = s.store.traffic_reset(i, period).await?;
        return Ok(Json(json!({"reset_hours": hours})).into_response());
    }
    if body.period.is_some() {
        return Err(ApiError::invalid(
            "period",
            "only traffic resources have periods",
        ));
    }
    let resource = s
        .store
        .settings()
        .resources
        .counted("resource", &body.resource)?;
    let n = s.store.usage_reset(resource, target).await?;
    Ok(Json(json!({"reset_instances": n})).into_response())
}

/// Largest number of batches and samples one report may carry.
const MAX_BATCHES: usize = 10_000;
const MAX_SAMPLES: usize = 1_000_000;

async fn reports(
    caller: Caller,
    State(s): State<ApiState>,
    JsonBody(report): JsonBody<Report>,
) -> ApiResult<Response> {
    match &caller.role {
        Role::Admin => {}
        Role::Agent { host } if host == &report.agent => {}
        Role::Agent { host } => {
            return Err(ApiError::forbidden(format!(
                "this token reports for host {host}, not {}",
                report.agent
            )));
        }
        // Usage comes from the agents that measured it; a panel sets it with PUT usage.
        role @ (Role::Panel | Role::Viewer) => {
            return Err(ApiError::forbidden(format!(
                "a {} token may not report usage: that needs an agent token for host {}",
                role.name(),
                report.agent
            )));
        }
    }
    if report.batches.len() > MAX_BATCHES {
        return Err(ApiError::invalid(
            "batches",
            format!("more than {MAX_BATCHES} batches"),
        ));
    }
    let mut samples = 0usize;
    for (i, b) in report.batches.iter().enumerate() {
        if b.seq == 0 || b.seq > MAX_SEQ {
            return Err(ApiError::invalid(
                format!("batches[{i}].seq"),
                format!("must be 1..={MAX_SEQ}"),
            ));
        }
        samples += b.samples.len();
    }
    if samples > MAX_SAMPLES {
        return Err(ApiError::invalid(
            "batches",
            format!("more than {MAX_SAMPLES} samples"),
        ));
    }
    let done = s.store.ingest(report).await?;
    let m = &s.metrics;
    m.batches
        .get_or_create(&OutcomeLabels { outcome: "applied" })
        .inc_by(done.applied.len() as u64);
    m.batches
        .get_or_create(&OutcomeLabels {
            outcome: "duplicate",
        })
        .inc_by(done.duplicates.len() as u64);
    m.samples.inc_by(done.samples);
    Ok(Json(done).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LookupBody {
    instances: Vec<String>,
}

/// The traffic quotas in force for many instances at once (what an agent fetches).
async fn quotas_lookup(
    caller: Caller,
    State(s): State<ApiState>,
    JsonBody(body): JsonBody<LookupBody>,
) -> ApiResult<Response> {
    if body.instances.len() > crate::store::MAX_LOOKUP_IDS {
        return Err(ApiError::invalid(
            "instances",
            format!(
                "{} ids; at most {} per lookup (ask in parts)",
                body.instances.len(),
                crate::store::MAX_LOOKUP_IDS
            ),
        ));
    }
    let ids = body
        .instances
        .iter()
        .enumerate()
        .map(|(n, i)| instance(&format!("instances[{n}]"), i))
        .collect::<ApiResult<Vec<_>>>()?;
    let tz = &s.store.settings().timezone;
    Ok(Json(json!({
        "timezone": tz.iana_name().unwrap_or("UTC"),
        // An agent is told what the rest of the fleet counted of each quota.
        "quotas": match caller.role {
            Role::Agent { host } => s.store.traffic_quotas_for(host, ids).await?,
            _ => s.store.traffic_quotas(ids).await?,
        },
    }))
    .into_response())
}
