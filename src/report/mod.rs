//! What leaves the agent: the event log's JSON encoding, webhooks, and the reporter that
//! delivers spooled usage to the quota store.

pub mod backoff;
pub mod event;
pub mod reporter;
pub mod webhook;

/// The HTTP client the reporter, webhooks and the CLI share: rustls on ring (a few
/// hundred kB of code instead of aws-lc's megabytes, which the agent's resident set pays
/// for on every host) with the system's root certificates.
///
/// A host without any (a minimal image lacking `ca-certificates`) makes the platform
/// verifier refuse to build at all, which would leave even a plain-HTTP store or
/// loopback API unreachable. Then the client trusts no root instead: plain HTTP works,
/// and HTTPS fails at connect as an unknown issuer, which names the cause.
pub fn http_client(timeout: std::time::Duration) -> Result<reqwest::Client, reqwest::Error> {
    // Installing twice is a no-op.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let builder = || {
        reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
    };
    builder().build().or_else(|e| {
        tracing::warn!(
            "no system root certificates ({e}): HTTPS peers will be refused, plain HTTP works"
        );
        builder().tls_certs_only([]).build()
    })
}
