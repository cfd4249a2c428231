//! A real Chromium driven over WebDriver: chromedriver runs inside a test's namespace
//! (so the browser reaches the agent's or the store's loopback there), and the session
//! is driven by fantoccini from a thread that entered the same namespace. Clicks,
//! typed text and `confirm()` dialogs are the browser's own, not simulated in the page.
#![allow(dead_code)]

use std::future::Future;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};

use super::{Netns, eventually, run_in};

/// chromedriver in a namespace, on a free loopback port; shut down on drop.
pub struct Chromedriver {
    child: Child,
    ns: String,
    pub port: u16,
    profile: tempfile::TempDir,
}

impl Chromedriver {
    pub fn start(ns: &Netns) -> Chromedriver {
        let port = ns.run(|| {
            TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        });
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "chromedriver"])
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (package chromium-driver, installed by scripts/test)");
        let name = ns.name.clone();
        eventually(Duration::from_secs(15), "chromedriver listening", || {
            let name = name.clone();
            run_in(&name, move || {
                TcpStream::connect(("127.0.0.1", port)).is_ok()
            })
            .then_some(())
        });
        Chromedriver {
            child,
            ns: ns.name.clone(),
            port,
            profile: tempfile::tempdir().unwrap(),
        }
    }

    /// Run `f` with a new headless browser session; the session ends when `f` does.
    pub fn session<T, F>(&self, f: impl FnOnce(Client) -> F + Send + 'static) -> T
    where
        T: Send + 'static,
        F: Future<Output = T>,
    {
        let url = format!("http://127.0.0.1:{}", self.port);
        let profile = self.profile.path().display().to_string();
        run_in(&self.ns, move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut caps = serde_json::Map::new();
                caps.insert(
                    "goog:chromeOptions".into(),
                    serde_json::json!({
                        "binary": "/usr/bin/chromium",
                        "args": [
                            "--headless=new",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-background-networking",
                            "--no-first-run",
                            "--window-size=1280,900",
                            format!("--user-data-dir={profile}"),
                        ],
                    }),
                );
                let connector = hyper_util::client::legacy::connect::HttpConnector::new();
                let client = ClientBuilder::new(connector)
                    .capabilities(caps)
                    .connect(&url)
                    .await
                    .expect("a WebDriver session");
                let out = f(client.clone()).await;
                let _ = client.close().await;
                out
            })
        })
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        // Its own shutdown ends the browsers it started; then it is reaped by pid.
        let port = self.port;
        run_in(&self.ns, move || {
            use std::io::Write;
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                let _ =
                    s.write_all(b"GET /shutdown HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            }
        });
        // A session left open by a failed test may outlive that: its browser processes
        // are found by parent pid under chromedriver's and killed by pid.
        let family = descendants(self.child.id());
        for _ in 0..30 {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for pid in family {
            // SAFETY: kill(2) on a pid that was, a moment ago, our chromedriver's descendant.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every process below `root`, from each /proc/PID/stat's parent field.
fn descendants(root: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // "pid (comm) state ppid …": comm may hold spaces, so split after its ')'.
            let ppid = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut out = vec![];
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(child, parent) in &parents {
            if parent == p && !out.contains(&child) {
                out.push(child);
                frontier.push(child);
            }
        }
    }
    out
}

/// Wait (bounded) until `script` (a JS expression) is true in the page.
pub async fn until(c: &Client, what: &str, script: &str) {
    let start = std::time::Instant::now();
    loop {
        let v = c
            .execute(&format!("return Boolean({script});"), vec![])
            .await
            .unwrap();
        if v == serde_json::Value::Bool(true) {
            return;
        }
        if start.elapsed() > Duration::from_secs(15) {
            let shown = c
                .execute(
                    "var n = document.getElementById('note'); return n ? n.textContent : null;",
                    vec![],
                )
                .await;
            panic!(
                "timed out waiting in the browser for {what} ({script}); the page's note: {shown:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Type an admin token into the page's token box, as an operator does, and wait for the
/// page to switch to admin mode.
pub async fn enter_token(c: &Client, token: &str) {
    let input = c.find(Locator::Id("token")).await.unwrap();
    // The page takes the token on `change`, which fires when the box loses focus: Tab.
    let typed = format!("{token}{}", fantoccini::key::Key::Tab);
    input.send_keys(&typed).await.unwrap();
    until(
        c,
        "admin mode",
        "document.documentElement.classList.contains('admin')",
    )
    .await;
}

/// Click the button matching `css`, check the `confirm()` dialog it opens names
/// `subject`, and accept it.
pub async fn click_and_confirm(c: &Client, css: &str, subject: &str) {
    let button = c.find(Locator::Css(css)).await.unwrap();
    assert!(
        button.is_displayed().await.unwrap(),
        "{css} is visible in admin mode"
    );
    button.click().await.unwrap();
    let text = c.get_alert_text().await.expect("a confirm dialog");
    assert!(
        text.contains(subject),
        "the dialog names {subject}: {text:?}"
    );
    c.accept_alert().await.unwrap();
}

/// The page's note (where its script reports what an action did), once it contains
/// `needle`: polled, since the page's next refresh replaces it.
pub async fn note_saying(c: &Client, needle: &str) -> String {
    let start = std::time::Instant::now();
    loop {
        let text = c
            .find(Locator::Id("note"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains(needle) {
            return text;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the page's note never said {needle:?}; last: {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
