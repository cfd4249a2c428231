//! Who is calling: `Authorization: Bearer sluice_…`, checked against the store's hashed
//! tokens, then the caller's per-token rate limit. There is no default token: without
//! one, nothing but `/healthz` and `/metrics` answers.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use super::ApiState;
use super::error::ApiError;
use crate::model::token::{Role, Token};

/// Requests per second each token may make (with a burst of the same size).
pub struct Limiter {
    inner: RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>,
    clock: DefaultClock,
}

impl Limiter {
    /// `None` when `per_second` is 0 (no limit).
    pub fn new(per_second: u32) -> Option<Arc<Limiter>> {
        let n = NonZeroU32::new(per_second)?;
        Some(Arc::new(Limiter {
            inner: RateLimiter::keyed(Quota::per_second(n)),
            clock: DefaultClock::default(),
        }))
    }

    /// Ok, or how long until the token may ask again.
    fn check(&self, token: &str) -> Result<(), Duration> {
        self.inner
            .check_key(&token.to_owned())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

/// The token of `Authorization: Bearer sluice_…` (the store's and the agent's API
/// share this shape); `missing` is the refusal when there is no header at all.
pub fn bearer(parts: &Parts, missing: &str) -> Result<Token, ApiError> {
    parts
        .headers
        .get(AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized(missing))?
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|t| Token::parse(t.trim()))
        .ok_or_else(|| ApiError::unauthorized("malformed bearer token"))
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
        if let Some(limiter) = &state.limiter
            && let Err(wait) = limiter.check(&id)
        {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many requests for this token; retry in {secs} s"),
            );
            e.retry_after = Some(secs.max(1));
            return Err(e);
        }
        Ok(Caller { role })
    }
}

/// A caller with the admin role.
pub struct Admin;

impl FromRequestParts<ApiState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        match Caller::from_request_parts(parts, state).await?.role {
            Role::Admin => Ok(Admin),
            Role::Agent { host } => Err(ApiError::forbidden(format!(
                "an agent token (host {host}) may only report usage and read quotas"
            ))),
        }
    }
}
