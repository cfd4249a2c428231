//! Who is calling: `Authorization: Bearer sluice_…`, checked against the store's hashed
//! tokens, then the caller's per-token rate limit (a per-address limit ran before, on
//! every request). There is no default token: without one, nothing but `/healthz`, and
//! on loopback `/metrics` and the fleet page, answers.
//!
//! Roles, least first: `viewer` reads; `agent` reports for its host and reads quotas;
//! `panel` reads and changes quotas, usage and reservations; `admin` also reports for
//! any host. Tokens, backups and restores are not on the API at all: they are `sluice
//! store` commands run where the database is.

use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use super::ApiState;
use crate::api::ApiError;
use crate::api::access::{bearer, read_token};
use crate::model::token::Role;

/// Requests per second each key (a token, a client address) may make, with a burst of
/// the same size.
pub struct Limiter<K: Hash + Eq + Clone = String> {
    inner: RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock>,
    clock: DefaultClock,
    /// Checks so far: every `FORGET_EVERY`th one forgets the keys that went quiet, so
    /// a scan from many addresses does not grow the table for good.
    checks: AtomicU64,
}

const FORGET_EVERY: u64 = 4096;

impl<K: Hash + Eq + Clone> Limiter<K> {
    /// `None` when `per_second` is 0 (no limit).
    pub fn new(per_second: u32) -> Option<Arc<Limiter<K>>> {
        let n = NonZeroU32::new(per_second)?;
        Some(Arc::new(Limiter {
            inner: RateLimiter::keyed(Quota::per_second(n)),
            clock: DefaultClock::default(),
            checks: AtomicU64::new(0),
        }))
    }

    /// Ok, or the 429 that says how long until `key` may ask again (`whose`: "this
    /// token", "this address").
    pub fn check(&self, key: &K, whose: &str) -> Result<(), ApiError> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % FORGET_EVERY == FORGET_EVERY - 1 {
            self.inner.retain_recent();
        }
        self.inner.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many requests from {whose}; retry in {secs} s"),
            );
            e.retry_after = Some(secs.max(1));
            e
        })
    }
}

/// An authenticated caller of any role.
pub struct Caller {
    pub role: Role,
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let token = bearer(parts, "missing Authorization: Bearer token")?;
        let id = token.id.as_str().to_owned();
        let role = state
            .store
            .authenticate(token)
            .await?
            .ok_or_else(|| ApiError::unauthorized("unknown or revoked token"))?;
        if let Some(limiter) = &state.limiter {
            limiter.check(&id, "this token")?;
        }
        Ok(Caller { role })
    }
}

/// The caller's role, for the refusals below.
fn refused(role: &Role, needs: &str) -> ApiError {
    let who = match role {
        Role::Agent { host } => format!("an agent token (host {host})"),
        other => format!("a {} token", other.name()),
    };
    ApiError::forbidden(format!("{who} may not do this: it needs {needs}"))
}

/// A caller who may read fleet-wide: admin, panel or viewer. A read token may also come
/// in the dashboard's sign-in cookie (see `crate::api::access`).
pub struct Reader;

impl FromRequestParts<ApiState> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let token = read_token(parts)?
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer token"))?;
        let id = token.id.as_str().to_owned();
        let role = state
            .store
            .authenticate(token)
            .await?
            .ok_or_else(|| ApiError::unauthorized("unknown or revoked token"))?;
        if let Some(limiter) = &state.limiter {
            limiter.check(&id, "this token")?;
        }
        match role {
            Role::Admin | Role::Panel | Role::Viewer => Ok(Reader),
            Role::Agent { .. } => Err(refused(&role, "an admin, panel or viewer token")),
        }
    }
}

/// A caller who may change quotas, usage and reservations: admin or panel.
pub struct Operator;

impl FromRequestParts<ApiState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        match Caller::from_request_parts(parts, state).await?.role {
            Role::Admin | Role::Panel => Ok(Operator),
            role => Err(refused(&role, "an admin or panel token")),
        }
    }
}
