//! Webhooks: each committed event POSTed as JSON to the configured URLs.
//!
//! Never in the tick's way: the tick only `try_send`s into a bounded queue per webhook
//! (a full queue drops the event with a warning — it is still in the ledger's event
//! log, where `sluice events` finds it). One task per webhook delivers in order, each
//! event retried with exponential backoff before the next is tried. With a secret, the
//! body is signed: `X-Sluice-Signature: sha256=<hex HMAC-SHA256(secret, body)>`, so the
//! receiver can check it came from this agent and was not altered.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::backoff::{Backoff, Jitter};
use crate::account::ledger::EventRow;
use crate::config::WebhookConfig;
use crate::model::event::LogKind;
use crate::model::redact::redacted;

/// Events waiting per webhook.
pub const QUEUE: usize = 1000;
/// Attempts per event (the first and the retries).
pub const ATTEMPTS: u32 = 5;
/// The longest wait between two attempts.
const MAX_RETRY: Duration = Duration::from_secs(60);
pub const SIGNATURE_HEADER: &str = "X-Sluice-Signature";
pub const EVENT_HEADER: &str = "X-Sluice-Event";

/// A body ready to POST.
#[derive(Debug, Clone)]
struct Delivery {
    kind: LogKind,
    body: String,
}

struct Queue {
    config: WebhookConfig,
    tx: mpsc::Sender<Delivery>,
    /// Events dropped on a full queue since the last warning.
    dropped: u64,
}

/// The running webhooks of the agent.
#[derive(Default)]
pub struct Webhooks {
    queues: Vec<Queue>,
}

impl Webhooks {
    /// Start one delivery task per webhook (inside a tokio runtime). `first_retry` is the
    /// first backoff (doubled each retry, capped at a minute).
    pub fn start(configs: &[WebhookConfig], first_retry: Duration) -> Webhooks {
        let queues = configs
            .iter()
            .map(|c| {
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(deliver(c.clone(), rx, first_retry));
                Queue {
                    config: c.clone(),
                    tx,
                    dropped: 0,
                }
            })
            .collect();
        Webhooks { queues }
    }

    /// The configs these webhooks run with (a reload restarts them when they differ).
    pub fn configs(&self) -> impl Iterator<Item = &WebhookConfig> {
        self.queues.iter().map(|q| &q.config)
    }

    /// Queue `events` for every webhook that wants their kind; never waits.
    pub fn send(&mut self, events: &[EventRow]) {
        for e in events {
            let body = e.body.to_string();
            for q in &mut self.queues {
                if !q.config.events.is_empty() && !q.config.events.contains(&e.kind) {
                    continue;
                }
                let d = Delivery {
                    kind: e.kind,
                    body: body.clone(),
                };
                match q.tx.try_send(d) {
                    Ok(()) if q.dropped > 0 => {
                        warn!(url = %redacted(q.config.url.as_str()), dropped = q.dropped, "webhook queue has room again; events were dropped (they are in `sluice events`)");
                        q.dropped = 0;
                    }
                    Ok(()) => {}
                    Err(_) => {
                        if q.dropped == 0 {
                            warn!(url = %redacted(q.config.url.as_str()), "webhook queue full ({QUEUE}): dropping events until it drains");
                        }
                        q.dropped += 1;
                    }
                }
            }
        }
    }
}

/// `sha256=<hex>` of the body under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length; the error case cannot happen for Hmac<Sha256>.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn deliver(config: WebhookConfig, mut rx: mpsc::Receiver<Delivery>, first_retry: Duration) {
    let client = match super::http_client(config.timeout) {
        Ok(c) => c,
        Err(e) => {
            warn!(url = %redacted(config.url.as_str()), "cannot build the webhook client, events are not sent: {e}");
            return;
        }
    };
    while let Some(d) = rx.recv().await {
        let mut backoff = Backoff::new(first_retry, MAX_RETRY, Jitter::None);
        for attempt in 1..=ATTEMPTS {
            let mut req = client
                .post(config.url.clone())
                .header("Content-Type", "application/json")
                .header(EVENT_HEADER, d.kind.as_str())
                .body(d.body.clone());
            if let Some(secret) = &config.secret {
                req = req.header(SIGNATURE_HEADER, signature(secret, d.body.as_bytes()));
            }
            let outcome = match req.send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!("HTTP {}", r.status())),
                Err(e) => Err(e.without_url().to_string()),
            };
            match outcome {
                Ok(()) => {
                    debug!(url = %redacted(config.url.as_str()), kind = %d.kind, attempt, "webhook delivered");
                    break;
                }
                Err(why) if attempt == ATTEMPTS => {
                    warn!(url = %redacted(config.url.as_str()), kind = %d.kind, "webhook gave up after {ATTEMPTS} attempts: {why}");
                }
                Err(why) => {
                    let wait = backoff.step();
                    debug!(url = %redacted(config.url.as_str()), attempt, "webhook failed ({why}); retrying in {wait:?}");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::mpsc as std_mpsc;

    use jiff::Timestamp;
    use serde_json::json;

    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    /// A loopback HTTP server answering with `statuses` in turn; sends each request's
    /// (headers, body) back to the test.
    /// Each attempt: when it arrived, its headers and its body.
    type Attempt = (std::time::Instant, Vec<String>, String);

    fn server(statuses: Vec<u16>) -> (String, std_mpsc::Receiver<Attempt>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let (tx, rx) = std_mpsc::channel();
        std::thread::spawn(move || {
            for status in statuses {
                let (mut stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut headers = Vec::new();
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    let line = line.trim_end().to_owned();
                    if line.is_empty() {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                    headers.push(line);
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                // When the attempt arrived, before it is answered.
                let at = std::time::Instant::now();
                write!(
                    stream,
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                )
                .unwrap();
                tx.send((at, headers, String::from_utf8(body).unwrap()))
                    .unwrap();
            }
        });
        (url, rx)
    }

    fn event(kind: &str) -> EventRow {
        EventRow {
            at: Timestamp::from_second(1_763_921_460).unwrap(),
            kind: kind.parse().unwrap(),
            instance: None,
            body: json!({"time": 1_763_921_460, "event": kind, "state": "exceeded"}),
        }
    }

    fn header<'a>(headers: &'a [String], name: &str) -> Option<&'a str> {
        headers.iter().find_map(|h| {
            let (k, v) = h.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    #[tokio::test]
    async fn delivered_signed_and_retried_after_a_failure() {
        let (url, rx) = server(vec![500, 200, 200]);
        let config = WebhookConfig {
            url: url.parse().unwrap(),
            secret: Some("s3cret".into()),
            timeout: Duration::from_secs(5),
            events: BTreeSet::from([LogKind::Rule]),
        };
        let mut hooks = Webhooks::start(&[config], Duration::from_millis(50));
        // "stage" is filtered out; "rule" fails once, then arrives; the next follows.
        hooks.send(&[event("stage"), event("rule"), event("rule")]);
        let got = tokio::task::spawn_blocking(move || {
            (0..3)
                .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
                .collect::<Vec<_>>()
        })
        .await
        .unwrap();
        let want_body = event("rule").body.to_string();
        for (_, headers, body) in &got {
            assert_eq!(body, &want_body, "the same body on every attempt");
            assert_eq!(
                header(headers, SIGNATURE_HEADER),
                Some(signature("s3cret", body.as_bytes()).as_str())
            );
            assert_eq!(header(headers, EVENT_HEADER), Some("rule"));
            assert_eq!(header(headers, "content-type"), Some("application/json"));
        }
    }

    #[tokio::test]
    async fn gives_up_after_five_attempts_each_waiting_at_least_twice_as_long() {
        // Five failures for the first event, then the second arrives at once.
        let (url, rx) = server(vec![500, 503, 500, 502, 500, 200]);
        let config = WebhookConfig {
            url: url.parse().unwrap(),
            secret: None,
            timeout: Duration::from_secs(5),
            events: BTreeSet::new(),
        };
        let mut hooks = Webhooks::start(&[config], Duration::from_millis(40));
        let mut second = event("stage");
        second.body = json!({"event": "stage", "n": 2});
        hooks.send(&[event("rule"), second.clone()]);
        let got = tokio::task::spawn_blocking(move || {
            (0..6)
                .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
                .collect::<Vec<_>>()
        })
        .await
        .unwrap();
        let first = event("rule").body.to_string();
        let bodies: Vec<&str> = got.iter().map(|(_, _, b)| b.as_str()).collect();
        assert_eq!(
            bodies[..5],
            [first.as_str(); 5],
            "{ATTEMPTS} attempts of the first"
        );
        assert_eq!(bodies[5], second.body.to_string(), "then the next event");
        // Sleeps are never shorter than asked: each gap is at least its backoff step
        // (40, 80, 160, 320 ms).
        for (k, pair) in got[..5].windows(2).enumerate() {
            let gap = pair[1].0 - pair[0].0;
            let step = Duration::from_millis(40 << k);
            assert!(
                gap >= step,
                "retry {} after {gap:?}, before its {step:?}",
                k + 1
            );
        }
    }

    #[tokio::test]
    async fn a_full_queue_drops_instead_of_waiting() {
        // Nobody listens on this port: every delivery fails slowly, the queue fills.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        drop(listener);
        let config = WebhookConfig {
            url: url.parse().unwrap(),
            secret: None,
            timeout: Duration::from_millis(200),
            events: BTreeSet::new(),
        };
        let mut hooks = Webhooks::start(&[config], Duration::from_secs(60));
        let many: Vec<EventRow> = (0..QUEUE + 50).map(|_| event("rule")).collect();
        let started = std::time::Instant::now();
        hooks.send(&many);
        // Waiting on deliveries would take minutes (each fails after 200 ms, one at a
        // time); seconds of slack keep a loaded machine from failing it.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "send never waits"
        );
        // One may already be in flight; the rest beyond the queue's room are dropped.
        let dropped = hooks.queues[0].dropped;
        assert!((49..=50).contains(&dropped), "dropped {dropped}");
    }
}
