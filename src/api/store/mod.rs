//! The store's HTTP API (axum), JSON in and out. Listens on 127.0.0.1 unless told
//! otherwise; TLS belongs to a reverse proxy in front (README has a Caddy snippet).

mod auth;
mod body;
mod error;
mod metrics;
mod routes;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tokio::net::TcpListener;
use tracing::{info, warn};

pub use auth::{Limiter, bearer};
pub use error::ApiError;

use crate::store::service::Store;
use metrics::{Metrics, RouteLabels};

/// How the API is served.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// Largest request body accepted (413 beyond).
    pub body_limit: usize,
    /// Requests per second per token (0: unlimited).
    pub rate_limit: u32,
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
}

/// The whole API as a router (the tests and the server share it).
pub fn router(store: Store, options: &ApiOptions) -> Router {
    let state = ApiState {
        metrics: Arc::new(Metrics::new(store.backend_name())),
        limiter: Limiter::new(options.rate_limit),
        store,
    };
    let routes = if options.dashboard {
        routes::routes().merge(routes::fleet_routes())
    } else {
        routes::routes()
    };
    routes
        .layer(axum::middleware::from_fn_with_state(state.clone(), track))
        .layer(DefaultBodyLimit::max(options.body_limit))
        .with_state(state)
        .layer(tower_http::compression::CompressionLayer::new())
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

/// Serve until `shutdown` resolves; drops lapsed reservations in the background.
pub async fn serve(
    listener: TcpListener,
    store: Store,
    options: ApiOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(store.clone(), &options);
    let every = options.expire_every;
    let expirer = tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
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
