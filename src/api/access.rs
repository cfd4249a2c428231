//! Who may reach an API at all, before any route looks at a token: the `Host` a
//! request names, and whether reads need a token. The agent's API and the store's share
//! these rules.
//!
//! - **Host.** A page on `http://evil.example` whose name an attacker re-points at
//!   127.0.0.1 (DNS rebinding) makes the operator's browser a client of a loopback API,
//!   with the attacker's name in `Host`. So a request is answered only when `Host` is an
//!   IP literal, `localhost`, or a name the operator listed: a rebinding attack cannot
//!   put an IP literal there, since its page was loaded by name.
//! - **Reads.** On loopback only this host's users can connect, so reads are open. Once
//!   the listener is reachable from elsewhere (`0.0.0.0:9477` for Prometheus), every read
//!   needs a token, except `/healthz` (a probe must not need a secret) and, if the
//!   operator says so, `/metrics`.
//! - **Browsers.** A page cannot send `Authorization` on a navigation, so `/login` keeps
//!   a read token in an HTTP-only, `SameSite=Strict` cookie. The cookie is good for reads
//!   only: a change still needs the `Authorization` header, which another site's page
//!   cannot make the browser send, so the cookie opens no cross-site request forgery.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, COOKIE, HOST};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::model::token::Token;

/// The cookie `/login` sets.
pub const TOKEN_COOKIE: &str = "sluice_token";

/// One API's access rules.
#[derive(Debug, Clone)]
pub struct Access {
    /// Reads need a token: the listener is reachable from beyond this host.
    pub reads_need_token: bool,
    /// `/metrics` answers without a token even then (a scraper without credentials).
    pub metrics_public: bool,
    /// Names besides IP literals and `localhost` that `Host` may carry (lower case,
    /// without a trailing dot).
    allowed_hosts: Arc<[String]>,
}

impl Access {
    /// The rules for an API listening on `listen`.
    pub fn new(listen: SocketAddr, allowed_hosts: &[String], metrics_public: bool) -> Access {
        Access {
            reads_need_token: !listen.ip().is_loopback(),
            metrics_public,
            allowed_hosts: allowed_hosts.iter().map(|h| normal_name(h)).collect(),
        }
    }

    /// Whether a request naming `host` (a `Host` header's value) is answered.
    pub fn host_allowed(&self, host: &str) -> bool {
        let Some(name) = host_name(host) else {
            return false;
        };
        name.parse::<IpAddr>().is_ok() || name == "localhost" || self.allowed_hosts.contains(&name)
    }
}

fn normal_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The host part of a `Host` value (`[::1]:9477` → `::1`, `Hv1.Example.:80` →
/// `hv1.example`); `None` when it is not an authority at all.
fn host_name(host: &str) -> Option<String> {
    let authority: axum::http::uri::Authority = host.parse().ok()?;
    if authority.as_str().contains('@') {
        return None;
    }
    let name = authority.host();
    let name = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    Some(normal_name(name))
}

/// Middleware: refuse a request whose `Host` is not one this API answers to (421, with
/// the setting that would allow it).
pub async fn check_host(State(access): State<Access>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()));
    match host {
        Some(h) if access.host_allowed(&h) => next.run(req).await,
        Some(h) => ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "host_not_allowed",
            format!(
                "Host {:?} is not an IP address, localhost or a listed name; list it in agent.allowed_hosts (agent) or with --allowed-host (sluice store) to serve it; this stops DNS rebinding",
                h.chars().take(256).collect::<String>()
            ),
        )
        .into_response(),
        None => ApiError::new(
            StatusCode::BAD_REQUEST,
            "host_missing",
            "the request names no Host",
        )
        .into_response(),
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

/// The token a request presents for a read: the `Authorization` header, else the
/// `/login` cookie; `None` when it presents neither.
pub fn read_token(parts: &Parts) -> Result<Option<Token>, ApiError> {
    if parts.headers.contains_key(AUTHORIZATION) {
        return bearer(parts, "").map(Some);
    }
    let cookie = parts
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == TOKEN_COOKIE).then(|| v.to_owned())
        });
    match cookie {
        None => Ok(None),
        Some(v) => Token::parse(&v)
            .map(Some)
            .ok_or_else(|| ApiError::unauthorized("malformed token cookie; sign in again")),
    }
}

/// The refusal of a read without a token on a listener beyond loopback.
pub fn read_needs_token(roles: &str) -> ApiError {
    ApiError::unauthorized(&format!(
        "this API listens beyond loopback, so reads need a {roles} token (Authorization: Bearer, or sign in at /login)"
    ))
}

/// `None` when a page may be read (`reader` is Ok); else what to answer instead: the
/// sign-in page, titled `title`, for a browser that has no token (yet), or the refusal.
pub fn refused_page(
    reader: Result<(), ApiError>,
    title: &str,
    uri: &axum::http::Uri,
) -> Option<Response> {
    match reader {
        Ok(()) => None,
        Err(e) if e.status == StatusCode::UNAUTHORIZED => {
            let next = uri.path_and_query().map_or("/", |p| p.as_str());
            let page = crate::render::dashboard::page::login(title, local_path(next), false);
            Some((StatusCode::UNAUTHORIZED, axum::response::Html(page)).into_response())
        }
        Err(e) => Some(e.into_response()),
    }
}

/// What `/login` was sent.
#[derive(Debug, serde::Deserialize)]
pub struct LoginForm {
    pub token: String,
    #[serde(default)]
    pub next: String,
}

impl LoginForm {
    /// Where to send the browser after signing in: a path on this API only, so the form
    /// cannot be made into a redirect to another site.
    pub fn next_path(&self) -> &str {
        local_path(&self.next)
    }
}

/// `path` if it is a path on this server (`/…`, not `//host/…` or `/\host`), else `/`.
pub fn local_path(path: &str) -> &str {
    let b = path.as_bytes();
    let local = b.first() == Some(&b'/')
        && !matches!(b.get(1), Some(b'/' | b'\\'))
        && !path.chars().any(|c| c.is_control());
    if local { path } else { "/" }
}

/// The answer to a good `/login`: the cookie, and back to `next`.
pub fn signed_in(token: &Token, next: &str) -> Response {
    let cookie = format!(
        "{TOKEN_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
        token.reveal()
    );
    redirect_with_cookie(next, &cookie)
}

/// `/logout`: the cookie cleared.
pub fn signed_out() -> Response {
    redirect_with_cookie(
        "/",
        &format!("{TOKEN_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"),
    )
}

fn redirect_with_cookie(to: &str, cookie: &str) -> Response {
    let mut resp = axum::response::Redirect::to(local_path(to)).into_response();
    if let Ok(v) = HeaderValue::from_str(cookie) {
        resp.headers_mut().insert(axum::http::header::SET_COOKIE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_ip_literals_localhost_or_listed() {
        let listen: SocketAddr = "0.0.0.0:9477".parse().unwrap();
        let access = Access::new(listen, &["HV1.example.net.".into()], false);
        for (host, allowed) in [
            ("127.0.0.1:9477", true),
            ("127.0.0.1", true),
            ("[::1]:9477", true),
            ("10.1.2.3:9477", true),
            ("localhost:9477", true),
            ("LOCALHOST", true),
            ("hv1.example.net:9477", true),
            ("hv1.example.net.", true),
            ("evil.example:9477", false),
            ("127.0.0.1.evil.example", false),
            ("localhost.evil.example", false),
            ("user@127.0.0.1", false),
            ("", false),
            ("not a host", false),
        ] {
            assert_eq!(access.host_allowed(host), allowed, "{host:?}");
        }
    }

    #[test]
    fn reads_need_a_token_off_loopback_only() {
        for (listen, needs) in [
            ("127.0.0.1:9477", false),
            ("127.0.0.2:9477", false),
            ("[::1]:9477", false),
            ("0.0.0.0:9477", true),
            ("[::]:9477", true),
            ("10.0.0.5:9477", true),
        ] {
            let access = Access::new(listen.parse().unwrap(), &[], false);
            assert_eq!(access.reads_need_token, needs, "{listen}");
        }
    }

    #[test]
    fn login_redirects_stay_on_this_server() {
        for (next, to) in [
            ("/instances/101", "/instances/101"),
            ("/?period=day", "/?period=day"),
            ("", "/"),
            ("//evil.example/", "/"),
            ("/\\evil.example", "/"),
            ("https://evil.example/", "/"),
            ("/a\r\nSet-Cookie: x=1", "/"),
        ] {
            assert_eq!(local_path(next), to, "{next:?}");
        }
    }
}
