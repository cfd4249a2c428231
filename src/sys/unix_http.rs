//! HTTP/1.1 over a unix socket, blocking and with a deadline: how a hypervisor's local
//! API (Incus, LXD) is asked from the inventory's own thread, which has no async runtime
//! and must never hang on a daemon that accepts and then says nothing.
//!
//! One request per connection (`Connection: close`): the inventory asks rarely, and a
//! fresh connection cannot be left half-read by an earlier answer. httparse reads the
//! head; the body is taken by `Content-Length`, chunked, or up to the close.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// An answer: its status and whole body (decoded from chunks when it was chunked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum UnixHttpError {
    #[error("{}: cannot connect: {source}", socket.display())]
    Connect {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", socket.display())]
    Io {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: no whole answer within {}s", socket.display(), after.as_secs_f32())]
    Timeout { socket: PathBuf, after: Duration },
    #[error("{}: the answer is larger than {limit} bytes", socket.display())]
    TooLarge { socket: PathBuf, limit: usize },
    #[error("{}: not an HTTP answer: {reason}", socket.display())]
    Malformed { socket: PathBuf, reason: String },
}

/// `method target` on the server at `socket`, with a JSON `body` if given. The whole
/// exchange (connect, send, the full answer) must finish within `timeout`, and the
/// answer may hold at most `limit` bytes.
pub fn request(
    socket: &Path,
    method: &str,
    target: &str,
    body: Option<&[u8]>,
    timeout: Duration,
    limit: usize,
) -> Result<Response, UnixHttpError> {
    let deadline = Instant::now() + timeout;
    let io = |source| UnixHttpError::Io {
        socket: socket.to_owned(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(|source| UnixHttpError::Connect {
        socket: socket.to_owned(),
        source,
    })?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: sluice\r\nConnection: close\r\n"
    );
    if let Some(b) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    head.push_str("\r\n");
    // In one write: a server may answer (and close) as soon as it has the head.
    let mut out = head.into_bytes();
    out.extend_from_slice(body.unwrap_or_default());
    stream
        .write_all(&out)
        .map_err(|e| timed_out(e, socket, timeout).unwrap_or_else(io))?;

    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(done) = parse(&buf, false).map_err(|reason| malformed(socket, reason))? {
            return Ok(done);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(UnixHttpError::Timeout {
                socket: socket.to_owned(),
                after: timeout,
            });
        }
        stream.set_read_timeout(Some(left)).map_err(io)?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(timed_out(e, socket, timeout).unwrap_or_else(io)),
        };
        if n == 0 {
            // Closed: what came is all there is.
            return match parse(&buf, true).map_err(|reason| malformed(socket, reason))? {
                Some(done) => Ok(done),
                None => Err(malformed(
                    socket,
                    format!("the connection closed after {} bytes", buf.len()),
                )),
            };
        }
        if buf.len() + n > limit {
            return Err(UnixHttpError::TooLarge {
                socket: socket.to_owned(),
                limit,
            });
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn malformed(socket: &Path, reason: String) -> UnixHttpError {
    UnixHttpError::Malformed {
        socket: socket.to_owned(),
        reason,
    }
}

/// A read or write timeout, said as the exchange's.
fn timed_out(
    e: std::io::Error,
    socket: &Path,
    after: Duration,
) -> Result<UnixHttpError, std::io::Error> {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            Ok(UnixHttpError::Timeout {
                socket: socket.to_owned(),
                after,
            })
        }
        _ => Err(e),
    }
}

/// The answer in `buf` when it is whole (`closed`: nothing more will come).
fn parse(buf: &[u8], closed: bool) -> Result<Option<Response>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut res = httparse::Response::new(&mut headers);
    let body_at = match res.parse(buf).map_err(|e| e.to_string())? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let status = res.code.ok_or("no status code")?;
    let header = |name: &str| {
        res.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
    };
    let rest = &buf[body_at..];
    let chunked = header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    if chunked {
        return match dechunk(rest)? {
            Some(body) => Ok(Some(Response { status, body })),
            None if closed => Err("the chunked body ended early".into()),
            None => Ok(None),
        };
    }
    if let Some(len) = header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| format!("Content-Length {len:?} is not a number"))?;
        return match rest.len() {
            n if n >= len => Ok(Some(Response {
                status,
                body: rest[..len].to_vec(),
            })),
            n if closed => Err(format!("the body ended after {n} of its {len} bytes")),
            _ => Ok(None),
        };
    }
    // Neither: the body runs to the close (or there is none, for these statuses).
    if closed || status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok(Some(Response {
            status,
            body: rest.to_vec(),
        }));
    }
    Ok(None)
}

/// A chunked body, when all of it (through the last, empty chunk) is in `rest`.
fn dechunk(mut rest: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut body = Vec::new();
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&rest[..eol]).map_err(|_| "a chunk size is not text")?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16)
            .map_err(|_| format!("chunk size {size:?} is not hexadecimal"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            // Trailers, if any, are not read: the body is whole.
            return Ok(Some(body));
        }
        if rest.len() < size + 2 {
            return Ok(None);
        }
        if &rest[size..size + 2] != b"\r\n" {
            return Err("a chunk does not end where its size says".into());
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    /// A server that reads one request and answers `reply` (then closes, unless
    /// `hold`), returning what it received.
    fn serve(
        reply: &'static [u8],
        hold: bool,
    ) -> (tempfile::TempDir, PathBuf, std::thread::JoinHandle<Vec<u8>>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let handle = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            let mut b = [0u8; 4096];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut b).unwrap();
                got.extend_from_slice(&b[..n]);
            }
            s.write_all(reply).unwrap();
            if hold {
                std::thread::sleep(Duration::from_millis(1500));
            }
            got
        });
        (dir, path, handle)
    }

    #[test]
    fn answers_are_read_by_length_by_chunks_or_to_the_close() {
        let cases: &[(&[u8], u16, &str)] = &[
            (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 200, "hello"),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n",
                200,
                "hello",
            ),
            (b"HTTP/1.0 404 Not Found\r\n\r\n{\"e\":1}", 404, "{\"e\":1}"),
        ];
        for (reply, status, body) in cases {
            let (_d, path, server) = serve(reply, false);
            let got = request(&path, "GET", "/1.0", None, Duration::from_secs(5), 1 << 20).unwrap();
            assert_eq!(
                (got.status, got.body.as_slice()),
                (*status, body.as_bytes())
            );
            let sent = String::from_utf8(server.join().unwrap()).unwrap();
            assert!(sent.starts_with("GET /1.0 HTTP/1.1\r\n"), "{sent}");
            assert!(sent.contains("Connection: close\r\n"), "{sent}");
        }
    }

    #[test]
    fn a_length_is_honoured_without_waiting_for_the_close() {
        let (_d, path, _server) =
            serve(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA", true);
        let start = Instant::now();
        let got = request(&path, "GET", "/", None, Duration::from_secs(5), 1024).unwrap();
        assert_eq!(got.body, b"ok");
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn bad_answers_are_errors_that_say_what_was_wrong() {
        let cases: &[(&[u8], &str)] = &[
            (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP answer"),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
                "ended after 5 of its 10",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                "Content-Length \"x\"",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                "not hexadecimal",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
                "ended early",
            ),
            (b"HTTP/1.1 200", "closed after 12 bytes"),
        ];
        for (reply, want) in cases {
            let (_d, path, _server) = serve(reply, false);
            let err = request(&path, "GET", "/", None, Duration::from_secs(5), 1024).unwrap_err();
            assert!(err.to_string().contains(want), "{err} (wanted {want:?})");
            assert!(
                err.to_string().contains("s.sock"),
                "names the socket: {err}"
            );
        }
        let (_d, path, _server) = serve(b"HTTP/1.1 200 OK\r\n\r\n0123456789", false);
        let err = request(&path, "GET", "/", None, Duration::from_secs(5), 8).unwrap_err();
        assert!(
            matches!(err, UnixHttpError::TooLarge { limit: 8, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_server_that_says_nothing_times_out_and_one_that_is_absent_refuses() {
        let (_d, path, _server) = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\npart", true);
        let start = Instant::now();
        let err = request(&path, "GET", "/", None, Duration::from_millis(300), 1024).unwrap_err();
        assert!(matches!(err, UnixHttpError::Timeout { .. }), "{err}");
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_millis(1200),
            "{took:?}"
        );

        let dir = tempfile::tempdir().unwrap();
        let err = request(
            &dir.path().join("none.sock"),
            "GET",
            "/",
            None,
            Duration::from_secs(1),
            1024,
        )
        .unwrap_err();
        assert!(matches!(err, UnixHttpError::Connect { .. }), "{err}");
    }

    #[test]
    fn a_body_goes_with_its_type_and_length() {
        let (_d, path, server) =
            serve(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n", false);
        let got = request(
            &path,
            "PUT",
            "/1.0/x",
            Some(b"{\"a\":1}"),
            Duration::from_secs(5),
            1024,
        )
        .unwrap();
        assert_eq!(got.status, 202);
        let sent = String::from_utf8(server.join().unwrap()).unwrap();
        assert!(
            sent.contains("Content-Type: application/json\r\nContent-Length: 7\r\n\r\n"),
            "{sent}"
        );
    }
}
