//! A real `sluice store` process on loopback, and a small HTTP client for it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::sluice_bin;

pub struct StoreProc {
    pub child: Child,
    pub db: PathBuf,
    pub base: String,
    log: PathBuf,
    extra: Vec<String>,
}

impl StoreProc {
    /// Stop it (SIGTERM, bounded wait) and start it again on the same database and
    /// address once `away` has passed: a store that is down for a while.
    #[allow(dead_code)]
    pub fn away_for(&mut self, away: impl FnOnce()) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "store did not stop"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        away();
        let listen = self.base.trim_start_matches("http://").to_owned();
        let (db, extra) = (self.db.clone(), self.extra.clone());
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let again = StoreProc::start_listen(None, &db, &listen, &extra);
        let old = std::mem::replace(self, again);
        drop(old);
    }

    /// Start `sluice store` on `db`, listening on a free loopback port.
    pub fn start(db: &Path, extra: &[&str]) -> StoreProc {
        StoreProc::start_in(None, db, extra)
    }

    /// The same inside network namespace `ns` (its own loopback).
    pub fn start_in(ns: Option<&str>, db: &Path, extra: &[&str]) -> StoreProc {
        StoreProc::start_listen(ns, db, "127.0.0.1:0", extra)
    }

    /// The same listening on `listen` (port 0: a free one).
    pub fn start_listen(ns: Option<&str>, db: &Path, listen: &str, extra: &[&str]) -> StoreProc {
        let log = if db.to_string_lossy().starts_with("postgres") {
            static LOGS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            std::env::temp_dir().join(format!(
                "sluice-store-{}-{}.log",
                std::process::id(),
                LOGS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ))
        } else {
            db.with_extension("log")
        };
        let err = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let offset = std::fs::metadata(&log)
            .map(|m| m.len() as usize)
            .unwrap_or(0);
        let mut cmd = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(sluice_bin());
                c
            }
            None => Command::new(sluice_bin()),
        };
        let child = cmd
            .arg("store")
            .arg("--database")
            .arg(db)
            .args(["--listen", listen])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        let start = Instant::now();
        let addr = loop {
            let all = std::fs::read_to_string(&log).unwrap_or_default();
            let text = all.get(offset..).unwrap_or_default();
            if let Some(rest) = text.split("listening addr=").nth(1) {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "store did not start: {text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        // A store bound to every address is reached on its loopback.
        let addr = addr.replace("0.0.0.0:", "127.0.0.1:");
        StoreProc {
            child,
            db: db.to_owned(),
            base: format!("http://{addr}"),
            log,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// The port it listens on.
    #[allow(dead_code)]
    pub fn port(&self) -> u16 {
        self.base
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait (bounded); the exit status code.
    pub fn stop(mut self) -> Option<i32> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "store did not stop"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for StoreProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `sluice store token create …` → the token.
pub fn create_token(db: &Path, args: &[&str]) -> String {
    let out = Command::new(sluice_bin())
        .args(["store", "token", "create"])
        .args(args)
        .arg("--database")
        .arg(db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// An answer: status, Retry-After, JSON body (Null when empty or not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: serde_json::Value,
}

/// An HTTP client (reqwest is built without a default TLS provider; loopback is plain
/// HTTP, but building a client still wants one installed).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// One HTTP request to the store.
pub async fn call_async(
    client: &reqwest::Client,
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<String>,
) -> Answer {
    let mut req = client.request(method.parse().unwrap(), format!("{base}{path}"));
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    if let Some(b) = body {
        req = req.header("Content-Type", "application/json").body(b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = resp.bytes().await.unwrap();
    Answer {
        status,
        retry_after,
        body: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    }
}

/// A blocking client for sequential tests.
pub struct Client {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    base: String,
}

impl Client {
    pub fn new(base: &str) -> Client {
        Client {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            http: http_client(),
            base: base.to_owned(),
        }
    }

    /// GET `path` as text (the dashboard's HTML): (status, body).
    #[allow(dead_code)]
    pub fn text(&self, path: &str) -> (u16, String) {
        self.rt.block_on(async {
            let resp = self
                .http
                .get(format!("{}{path}", self.base))
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        })
    }

    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> Answer {
        self.rt.block_on(call_async(
            &self.http,
            &self.base,
            method,
            path,
            token,
            body.map(str::to_owned),
        ))
    }
}
