//! The store's HTTP API (axum), JSON in and out. Listens on 127.0.0.1 unless told
//! otherwise; TLS belongs to a reverse proxy in front (README has a Caddy snippet).

mod auth;
mod body;
mod metrics;
mod routes;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tracing::{info, warn};

pub use auth::Limiter;

use crate::api::access::{self, Access};
use crate::store::service::Store;
use metrics::{Metrics, RouteLabels};

/// How the API is served.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// Largest request body accepted (413 beyond).
    pub body_limit: usize,
    /// Requests per second per token (0: unlimited).
    pub rate_limit: u32,
    /// Requests per second per client address, counted before any token is looked at,
    /// so a flood of bad tokens is limited too (0: unlimited).
    pub address_rate_limit: u32,
    /// The `Host` names served and whether the fleet page and `/metrics` need a token.
    pub access: Access,
    /// How often lapsed reservations are dropped.
    pub expire_every: Duration,
    /// Serve the read-only fleet dashboard at `/`.
    pub dashboard: bool,
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            body_limit: 8 << 20,
            rate_limit: 1000,
            address_rate_limit: 2000,
            access: Access::new(std::net::SocketAddr::from(([127, 0, 0, 1], 0)), &[], false),
            expire_every: Duration::from_secs(10),
            dashboard: true,
        }
    }
}

#[derive(Clone)]
pub struct ApiState {
    store: Store,
    limiter: Option<Arc<Limiter>>,
    metrics: Arc<Metrics>,
    access: Access,
}

/// The whole API as a router (the tests and the server share it).
pub fn router(store: Store, options: &ApiOptions) -> Router {
    let state = ApiState {
        metrics: Arc::new(Metrics::new(store.backend_name())),
        limiter: Limiter::new(options.rate_limit),
        access: options.access.clone(),
        store,
    };
    let by_address: Option<Arc<Limiter<IpAddr>>> = Limiter::new(options.address_rate_limit);
    let routes = if options.dashboard {
        routes::routes().merge(routes::fleet_routes())
    } else {
        routes::routes()
    };
    routes
        .layer(axum::middleware::from_fn_with_state(state.clone(), track))
        .layer(DefaultBodyLimit::max(options.body_limit))
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            options.access.clone(),
            access::check_host,
        ))
        .layer(axum::middleware::from_fn_with_state(
            by_address,
            limit_address,
        ))
        .layer(tower_http::compression::CompressionLayer::new())
}

/// Refuse a client address over its rate (429), before anything else is done for it.
/// Without the peer's address (a router not served by [`serve`]) nothing is limited.
async fn limit_address(
    State(limiter): State<Option<Arc<Limiter<IpAddr>>>>,
    req: Request,
    next: Next,
) -> Response {
    if let (Some(limiter), Some(ConnectInfo(peer))) =
        (&limiter, req.extensions().get::<ConnectInfo<SocketAddr>>())
        && let Err(refused) = limiter.check(&peer.ip(), "this address")
    {
        return refused.into_response();
    }
    next.run(req).await
}

/// Count every request by route and status, and time it.
async fn track(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let resp = next.run(req).await;
    state
        .metrics
        .duration
        .observe(started.elapsed().as_secs_f64());
    state
        .metrics
        .requests
        .get_or_create(&RouteLabels {
            route,
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}

/// How often a serving store writes due statements, prunes old 5-minute traffic and
/// packs closed days of it.
const BOOKKEEPING_EVERY: Duration = Duration::from_secs(300);

/// Serve until `shutdown` resolves; drops lapsed reservations in the background.
pub async fn serve(
    listener: TcpListener,
    store: Store,
    options: ApiOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(store.clone(), &options).into_make_service_with_connect_info::<SocketAddr>();
    let every = options.expire_every;
    let expirer = tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut bookkept: Option<std::time::Instant> = None;
        loop {
            tick.tick().await;
            // Statements first, then pruning: a month closed late (the store was down)
            // is still read whole. Both scan more than a tick's worth, so not every tick.
            if bookkept.is_none_or(|t| t.elapsed() >= BOOKKEEPING_EVERY) {
                bookkept = Some(std::time::Instant::now());
                match store.close_periods(jiff::Timestamp::now()).await {
                    Ok(0) => {}
                    Ok(n) => info!(statements = n, "store: closed billing months"),
                    Err(e) => warn!("store: writing statements failed: {e}"),
                }
                match store.prune_intervals(jiff::Timestamp::now()).await {
                    Ok(0) => {}
                    Ok(n) => info!(intervals = n, "store: pruned old 5-minute traffic"),
                    Err(e) => warn!("store: pruning 5-minute traffic failed: {e}"),
                }
                match store.pack_days(jiff::Timestamp::now()).await {
                    Ok(0) => {}
                    Ok(n) => info!(
                        instance_days = n,
                        "store: packed closed days of 5-minute traffic"
                    ),
                    Err(e) => warn!("store: packing 5-minute traffic failed: {e}"),
                }
            }
            match store.expire(jiff::Timestamp::now()).await {
                Ok((0, 0)) => {}
                Ok((reservations, keys)) => {
                    info!(
                        reservations,
                        report_keys = keys,
                        "store: dropped lapsed reservations and old report keys"
                    )
                }
                Err(e) => warn!("store: expiring reservations failed: {e}"),
            }
        }
    });
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "quota store API listening");
    }
    // Under systemd (Type=notify): the database is open and the socket bound.
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        warn!("cannot notify systemd: {e}");
    }
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    expirer.abort();
    result
}
