//! A minimal blocking HTTP/1.1 client for APIs served inside a test's namespace (a thread
//! enters the namespace, so the agent's loopback port is reachable; reqwest would need a
//! runtime on that thread for one request).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::Netns;

/// `METHOD path` to 127.0.0.1:`port` inside `ns`; returns (status, body).
pub fn request(
    ns: &Netns,
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, String) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    let a = exchange(ns, port, method, path, &headers, "");
    (a.status, a.body)
}

/// One answer: status, the header block as the server sent it, body.
#[allow(dead_code)]
pub struct Exchange {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

#[allow(dead_code)]
impl Exchange {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// `METHOD path` to 127.0.0.1:`port` inside `ns` with `headers` (a `Host` among them
/// replaces the default `127.0.0.1`) and `body`.
pub fn exchange(
    ns: &Netns,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Exchange {
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        head.push_str("Host: 127.0.0.1\r\n");
    }
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    ns.run(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the API");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(head.as_bytes()).unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (headers, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
        let status: u16 = headers
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("a status line");
        let body = if headers
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_owned()
        };
        Exchange {
            status,
            headers: headers.to_owned(),
            body,
        }
    })
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

/// Wait (bounded) until the agent inside `ns` answers `/healthz` with 200: listening and
/// past its first tick.
#[allow(dead_code)]
pub fn wait_healthy(ns: &Netns, port: u16, max: Duration) {
    super::eventually(max, "the agent's /healthz answers 200", || {
        let listening = ns.run(move || TcpStream::connect(("127.0.0.1", port)).is_ok());
        (listening && request(ns, port, "GET", "/healthz", None).0 == 200).then_some(())
    });
}

/// GET and parse JSON, insisting on 200.
pub fn get_json(ns: &Netns, port: u16, path: &str) -> serde_json::Value {
    let (code, body) = request(ns, port, "GET", path, None);
    assert_eq!(code, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}
