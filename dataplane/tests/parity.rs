//! Drop-in parity with the Go restreamer: its own documented example runs
//! unchanged (in `fixtures/documented.json`, the original's structure with
//! our values), and each request answers as the original answers it,
//! checked on the wire: status, header names as bytes (legacy set-top boxes
//! compare them case-sensitively), JSON keys and types.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One raw HTTP/1.1 exchange: the response head as sent, and the start of
/// the body (what arrives within a short time).
struct Raw {
    head: String,
    body: Vec<u8>,
    /// Open until the answer is dropped (a viewer stays connected).
    _socket: TcpStream,
}

impl Raw {
    async fn send(address: &str, method: &str, target: &str, headers: &[&str]) -> Raw {
        let mut socket = TcpStream::connect(address).await.unwrap();
        let mut request = format!("{method} {target} HTTP/1.1\r\nHost: {address}\r\n");
        for header in headers {
            request.push_str(header);
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        socket.write_all(request.as_bytes()).await.unwrap();
        let mut data = Vec::new();
        let mut chunk = [0u8; 8192];
        let head_end = loop {
            if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            let n = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut chunk))
                .await
                .expect("no response head in time")
                .unwrap();
            assert!(
                n > 0,
                "closed before the response head of {method} {target}"
            );
            data.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8(data[..head_end].to_vec()).unwrap();
        let mut body = data[head_end + 4..].to_vec();
        if method != "HEAD" {
            while let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(150), socket.read(&mut chunk)).await
            {
                if n == 0 || body.len() > 64 * 1024 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        }
        Raw {
            head,
            body,
            _socket: socket,
        }
    }

    async fn get(address: &str, target: &str) -> Raw {
        Self::send(address, "GET", target, &[]).await
    }

    fn status(&self) -> u16 {
        self.head.split(' ').nth(1).unwrap().parse().unwrap()
    }

    /// The value of a header whose name is written exactly `name`.
    fn header(&self, name: &str) -> Option<&str> {
        self.head
            .lines()
            .skip(1)
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(": "))
    }

    /// Asserts that the header is sent with its name written exactly so.
    fn expect(&self, name: &str) -> &str {
        self.header(name)
            .unwrap_or_else(|| panic!("no header written exactly {name:?} in\n{}", self.head))
    }

    /// The body of a response with a Content-Length.
    fn text(&self) -> String {
        let length: usize = self.expect("Content-Length").parse().unwrap();
        String::from_utf8_lossy(&self.body[..length]).to_string()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.text()).unwrap()
    }
}

/// A tiny HTTP server answering every GET with `body`, for static remotes.
async fn document_server(body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    address
}

/// The documented fixture, as the original's example with our values, made
/// runnable: a free port, the test upstream, the test document server.
async fn documented_proxy(upstream: &TcpUpstream) -> Proxy {
    let documents = document_server("programme guide\n").await;
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/documented.json"),
    )
    .unwrap()
    .replace("127.0.0.1:8000", "127.0.0.1:0")
    .replace("tcp://127.0.0.1:10000", &upstream.url())
    .replace("127.0.0.1:10001", &documents);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("restreamer.json");
    std::fs::write(&path, text).unwrap();
    Proxy::start_on(path, Path::new(env!("CARGO_MANIFEST_DIR")), dir)
}

fn assert_stream_headers(answer: &Raw) {
    assert_eq!(answer.expect("Content-Type"), "video/mpeg");
    assert_eq!(
        answer.expect("Cache-Control"),
        "no-cache,no-store,no-transform"
    );
    let modified = answer.expect("Last-Modified");
    let when = httpdate::parse_http_date(modified).expect("Last-Modified is an HTTP date");
    let age = std::time::SystemTime::now()
        .duration_since(when)
        .unwrap_or_default();
    assert!(age < Duration::from_secs(5), "Last-Modified is not now");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_originals_documented_example_answers_as_the_original() {
    let upstream = TcpUpstream::start(0x100, 500).await;
    let proxy = documented_proxy(&upstream).await;
    proxy.wait_for_event("upstream-connect", 1).await;
    let at = proxy.address.as_str();

    let health = Raw::get(at, "/health").await;
    assert_eq!(health.status(), 200);
    assert_eq!(health.expect("Content-Type"), "application/json");
    health.expect("Content-Length");
    health.expect("Date");
    let body = health.json();
    assert!(body["status"].is_string() && body["viewer"].is_u64());
    assert!(body["limit"].is_u64() && body["max"].is_u64() && body["bandwidth"].is_u64());
    assert_eq!(
        (body["limit"].as_u64(), body["max"].as_u64()),
        (Some(90), Some(100))
    );

    let viewer = Raw::get(at, "/stream.ts").await;
    assert_eq!(viewer.status(), 200);
    assert_stream_headers(&viewer);
    assert!(viewer.body.contains(&0x47), "the stream's packets follow");
    let head = Raw::send(at, "HEAD", "/stream.ts", &[]).await;
    assert_eq!(head.status(), 200);
    assert_stream_headers(&head);

    let check = Raw::get(at, "/check/stream.ts").await;
    assert_eq!((check.status(), check.text().as_str()), (200, "200 ok"));
    assert!(check.expect("Content-Type").starts_with("text/plain"));

    let unknown = Raw::get(at, "/nothere").await;
    assert_eq!(unknown.status(), 404);
    assert!(unknown.expect("Content-Type").starts_with("text/plain"));
    assert_eq!(unknown.expect("X-Content-Type-Options"), "nosniff");

    // A local file and a remote document: max-age as the original sends it.
    let file = Raw::get(at, "/test").await;
    assert_eq!(file.status(), 200);
    assert_eq!(file.expect("Cache-Control"), "max-age=0");
    file.expect("Etag");
    let document = Raw::get(at, "/stats").await;
    assert_eq!(document.status(), 200);
    assert_eq!(document.expect("Cache-Control"), "max-age=60");
    assert_eq!(document.text(), "programme guide\n");

    let metrics = Raw::get(at, "/metrics").await;
    assert_eq!(metrics.status(), 200);
    let text = String::from_utf8_lossy(&metrics.body).to_string();
    for name in [
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_virtual_memory_bytes ",
        "process_open_fds ",
        "process_max_fds ",
        "process_start_time_seconds ",
    ] {
        assert!(
            text.lines().any(|line| line.starts_with(name)),
            "no {name}in\n{text}"
        );
    }
    let connected = format!(
        "streaming_source_connected{{stream=\"/stream.ts\",url=\"{}\"}} 1",
        upstream.url()
    );
    assert!(
        text.lines().any(|l| l == connected),
        "no {connected} in\n{text}"
    );
    assert!(
        text.lines().any(|l| l
            == "streaming_source_connected{stream=\"/pipe.ts\",url=\"unix:///tmp/restreamer-fixture-pipe2.ts\"} 0"),
        "no series for an upstream that is not connected in\n{text}"
    );
}

/// `?online&offline` is offline, as in the original; a stream taken offline
/// answers 404 to GET and HEAD, with the stream headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_wins_over_online_and_head_gets_what_get_gets() {
    let upstream = TcpUpstream::start(0x100, 500).await;
    let proxy = documented_proxy(&upstream).await;
    proxy.wait_for_event("upstream-connect", 1).await;
    let at = proxy.address.as_str();

    let control = Raw::get(at, "/control/stream.ts?online&offline").await;
    assert_eq!(
        (control.status(), control.text().as_str()),
        (202, "202 accepted")
    );
    assert_eq!(Raw::get(at, "/check/stream.ts").await.status(), 404);
    for method in ["GET", "HEAD"] {
        let refused = Raw::send(at, method, "/stream.ts", &[]).await;
        assert_eq!(refused.status(), 404, "{method}");
        assert_stream_headers(&refused);
    }
    let control = Raw::get(at, "/control/stream.ts?online").await;
    assert_eq!(control.status(), 202);
    assert_eq!(Raw::send(at, "HEAD", "/stream.ts", &[]).await.status(), 200);
}

/// At the hard limit the original reports full (soft limit or not) and
/// refuses GET and HEAD alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_hard_limit_health_says_full_and_head_is_refused() {
    let upstream = TcpUpstream::start(0x100, 500).await;
    let proxy = Proxy::start(json!({
        "maxconnections": 1,
        "resources": [
            {"type": "stream", "serve": "/tv", "remote": upstream.url()},
            {"type": "api", "api": "health", "serve": "/health"}
        ]
    }));
    proxy.wait_for_event("upstream-connect", 1).await;
    let at = proxy.address.as_str();
    assert_eq!(Raw::get(at, "/health").await.json()["status"], "ok");
    let _viewer = Raw::get(at, "/tv").await;
    let health = Raw::get(at, "/health").await.json();
    assert_eq!(health["status"], "full", "{health}");
    assert_eq!(
        (health["viewer"].as_u64(), health["limit"].as_u64()),
        (Some(1), Some(0))
    );
    for method in ["HEAD", "GET"] {
        let refused = Raw::send(at, method, "/tv", &[]).await;
        assert_eq!(refused.status(), 404, "{method} at the hard limit");
        assert_stream_headers(&refused);
    }
}

/// Bearer: the token is the password as written, for requests and for
/// notifications, as the original.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_are_the_password_for_requests_and_notifications() {
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap().to_string();
    let requests = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = socket.read(&mut buf).await.unwrap_or(0);
            requests
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf[..n]).to_string());
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await;
        }
    });
    let proxy = Proxy::start(json!({
        "heartbeatinterval": 1,
        "userlist": {"monitor": {"password": "t0ken-as-written"}},
        "resources": [{"type": "api", "api": "statistics", "serve": "/statistics",
                       "authentication": {"type": "bearer", "realm": "stats", "user": "monitor"}}],
        "notifications": [{"event": "heartbeat", "type": "url", "url": format!("http://{target}/beat"),
                           "authentication": {"type": "bearer", "user": "monitor"}}]
    }));
    let at = proxy.address.as_str();
    let allowed = Raw::send(
        at,
        "GET",
        "/statistics",
        &["Authorization: Bearer t0ken-as-written"],
    )
    .await;
    assert_eq!(allowed.status(), 200);
    assert!(allowed.json()["connections"].is_u64());
    // base64 of the password, as our earlier versions wanted: refused.
    let encoded = Raw::send(
        at,
        "GET",
        "/statistics",
        &["Authorization: Bearer dDBrZW4tYXMtd3JpdHRlbg=="],
    )
    .await;
    assert_eq!(encoded.status(), 401);
    assert_eq!(Raw::get(at, "/statistics").await.status(), 401);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let beats = seen.lock().unwrap().clone();
        if let Some(beat) = beats.first() {
            assert!(
                beat.lines()
                    .any(|l| l.eq_ignore_ascii_case("authorization: Bearer t0ken-as-written")),
                "the heartbeat did not send the password as the token:\n{beat}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no heartbeat arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Routing as Go's ServeMux: subtrees, longest pattern, exact first, and
/// unclean paths redirected to their clean form; nothing escapes a route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_paths_route_as_the_originals_serve_mux() {
    let upstream = TcpUpstream::start(0x100, 500).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("guide.txt");
    std::fs::write(&file, "the one file\n").unwrap();
    let proxy = Proxy::start(json!({
        "resources": [
            {"type": "api", "api": "health", "serve": "/status/"},
            {"type": "api", "api": "statistics", "serve": "/status/detail/"},
            {"type": "stream", "serve": "/status/tv", "remote": upstream.url()},
            {"type": "static", "serve": "/files/", "remote": format!("file://{}", file.display())},
            {"type": "api", "api": "health", "serve": "/health"}
        ]
    }));
    proxy.wait_for_event("upstream-connect", 1).await;
    let at = proxy.address.as_str();

    let below = Raw::get(at, "/status/a/b").await;
    assert_eq!(below.status(), 200);
    assert!(
        below.json()["viewer"].is_u64(),
        "the subtree's health answers"
    );
    let longest = Raw::get(at, "/status/detail/x").await;
    assert!(
        longest.json()["connections"].is_u64(),
        "the longest pattern wins"
    );
    let exact = Raw::send(at, "HEAD", "/status/tv", &[]).await;
    assert_eq!(
        exact.expect("Content-Type"),
        "video/mpeg",
        "an exact path wins"
    );

    for (target, location) in [
        ("/status", "/status/"),
        ("//health", "/health"),
        ("/./health", "/health"),
        ("/a/../health", "/health"),
        ("/a/%2e%2e/health?x=1", "/health?x=1"),
        ("/files/../../../etc/passwd", "/etc/passwd"),
    ] {
        let moved = Raw::get(at, target).await;
        assert_eq!(moved.status(), 301, "{target}");
        assert_eq!(moved.expect("Location"), location, "{target}");
    }
    assert_eq!(Raw::get(at, "/etc/passwd").await.status(), 404);
    assert_eq!(Raw::get(at, "/health/").await.status(), 404);
    // Any path below a static subtree serves its one file, nothing else.
    for target in ["/files/", "/files/x", "/files/..%2f..%2fetc%2fpasswd"] {
        let answer = Raw::get(at, target).await;
        if answer.status() == 301 {
            assert!(answer.expect("Location").starts_with("/"), "{target}");
            continue;
        }
        assert_eq!(answer.status(), 200, "{target}");
        assert_eq!(answer.text(), "the one file\n", "{target}");
    }
}
