//! Hostile and broken clients: oversized headers, slowloris, garbage,
//! path tricks, a connect storm far over the hard limit. In each case the
//! proxy answers (or cuts off) the offender and keeps serving everyone else.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(upstream: &TcpUpstream) -> serde_json::Value {
    json!({
        "reconnect": 1,
        "headertimeout": 1,
        "userlist": {"admin": {"password": "secret"}},
        "resources": [
            {"type": "stream", "serve": "/stream", "remote": upstream.url()},
            {"type": "api", "serve": "/health", "api": "health"},
            {"type": "api", "serve": "/control", "api": "control", "remote": "/stream",
             "authentication": {"type": "basic", "realm": "ctl", "users": ["admin"]}}
        ]
    })
}

/// Sends raw bytes and returns the status code answered, if any (None:
/// the connection was closed without an answer).
async fn raw(proxy: &Proxy, request: &[u8]) -> Option<u16> {
    let mut socket = TcpStream::connect(&proxy.address).await.unwrap();
    let _ = socket.write_all(request).await;
    let mut answer = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut answer))
        .await
        .expect("no answer and no close within 5 s")
        .unwrap_or(0);
    let text = String::from_utf8_lossy(&answer[..n]);
    text.split(' ').nth(1).and_then(|code| code.parse().ok())
}

/// Sends a GET for `path` and returns the status and the `Location`.
async fn raw_redirect(proxy: &Proxy, path: &str) -> (Option<u16>, Option<String>) {
    let mut socket = TcpStream::connect(&proxy.address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    let _ = socket.write_all(request.as_bytes()).await;
    let mut answer = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut answer))
        .await
        .expect("no answer and no close within 5 s")
        .unwrap_or(0);
    let text = String::from_utf8_lossy(&answer[..n]).to_string();
    let status = text.split(' ').nth(1).and_then(|code| code.parse().ok());
    let location = text
        .lines()
        .find_map(|line| line.strip_prefix("Location: "))
        .map(str::to_string);
    (status, location)
}

async fn still_serving(proxy: &Proxy) {
    let mut viewer = Client::get(&proxy.url("/stream")).await;
    assert_eq!(viewer.status, 200);
    assert!(!viewer.read_for(Duration::from_millis(300)).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_and_garbage_are_refused() {
    let upstream = TcpUpstream::start(0x100, 1000).await;
    let proxy = Proxy::start(config(&upstream));
    proxy.wait_for_event("upstream-connect", 1).await;

    let huge = format!(
        "GET /stream HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let status = raw(&proxy, huge.as_bytes()).await;
    assert!(
        matches!(status, None | Some(431) | Some(400)),
        "got {status:?}"
    );

    let status = raw(&proxy, b"\x00\x01\x02 garbage \xff\r\n\r\n").await;
    assert!(matches!(status, None | Some(400)), "got {status:?}");
    assert_eq!(
        raw(&proxy, b"BREW /stream HTTP/1.1\r\nHost: x\r\n\r\n").await,
        Some(405)
    );
    assert_eq!(
        raw(&proxy, b"DELETE /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .map(|s| s < 500),
        Some(true)
    );
    still_serving(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_tricks_reach_nothing_they_should_not() {
    let upstream = TcpUpstream::start(0x100, 1000).await;
    let proxy = Proxy::start(config(&upstream));
    proxy.wait_for_event("upstream-connect", 1).await;
    let long = format!("/{}", "a".repeat(60_000));
    // Unclean paths are redirected to their clean form, as the original's
    // ServeMux does (after percent-decoding): the redirect serves nothing
    // itself, and its target is routed (and authenticated) as any request.
    for (path, clean) in [
        ("/stream/../stream", "/stream"),
        ("/./stream", "/stream"),
        ("//stream", "/stream"),
        ("/stream%2f..%2fhealth", "/health"),
        ("/control/../control", "/control"),
        ("/../../../etc/passwd", "/etc/passwd"),
    ] {
        assert_eq!(
            raw_redirect(&proxy, path).await,
            (Some(301), Some(clean.to_string())),
            "{path}"
        );
    }
    for path in ["/health/", "/etc/passwd", long.as_str()] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        let status = raw(&proxy, request.as_bytes()).await;
        assert!(
            matches!(status, None | Some(404) | Some(414) | Some(431) | Some(400)),
            "{path}: {status:?}"
        );
    }
    // The control API stays closed without credentials, whatever the path.
    assert_eq!(
        raw(&proxy, b"GET /control?offline HTTP/1.1\r\nHost: x\r\n\r\n").await,
        Some(401)
    );
    still_serving(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_clients_are_cut_off_at_the_header_timeout() {
    let upstream = TcpUpstream::start(0x100, 1000).await;
    let proxy = Proxy::start(config(&upstream));
    proxy.wait_for_event("upstream-connect", 1).await;

    // 100 clients that send a header line and then nothing more.
    let mut slow = Vec::new();
    for _ in 0..100 {
        let mut socket = TcpStream::connect(&proxy.address).await.unwrap();
        socket
            .write_all(b"GET /stream HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slow.push(socket);
    }
    still_serving(&proxy).await;
    let started = Instant::now();
    for socket in &mut slow {
        let mut buf = [0u8; 256];
        // The proxy closes (or answers 408) after `headertimeout` (1 s).
        let n = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf))
            .await
            .expect("a slow client was not cut off")
            .unwrap_or(0);
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(n == 0 || text.contains(" 408 "), "{text}");
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_storm_far_over_the_hard_limit_holds_it_exactly() {
    // A thousand clients and the proxy's sockets need more than 1,024
    // descriptors.
    restreamer::front::server::raise_file_limit();
    let upstream = TcpUpstream::start(0x100, 200).await;
    let mut config = config(&upstream);
    config["maxconnections"] = json!(100);
    let proxy = Proxy::start(config);
    proxy.wait_for_event("upstream-connect", 1).await;

    let url = proxy.url("/stream");
    let storm: Vec<_> = (0..1000)
        .map(|_| {
            tokio::spawn({
                let url = url.clone();
                async move { Client::get(&url).await }
            })
        })
        .collect();
    let mut clients = Vec::new();
    for task in storm {
        clients.push(task.await.unwrap());
    }
    let accepted = clients.iter().filter(|c| c.status == 200).count();
    let refused = clients.iter().filter(|c| c.status == 404).count();
    assert_eq!((accepted, refused), (100, 900));

    // The health API still answers, with the exact count.
    let mut health = Client::get(&proxy.url("/health")).await;
    let health: serde_json::Value = serde_json::from_str(&health.text().await).unwrap();
    assert_eq!(health["viewer"], 100);
    drop(clients);
}

/// A keep-alive client that got its answer and then sits idle is closed
/// after `headertimeout` too (hyper starts the header timer again while it
/// waits for the next request), as is one that connects and says nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_and_silent_connections_are_closed() {
    let upstream = TcpUpstream::start(0x100, 1000).await;
    let proxy = Proxy::start(config(&upstream));
    proxy.wait_for_event("upstream-connect", 1).await;

    let mut idle = TcpStream::connect(&proxy.address).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = vec![0u8; 4096];
    let n = idle.read(&mut answer).await.unwrap();
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 200"));
    let silent = TcpStream::connect(&proxy.address).await.unwrap();

    for (name, mut socket) in [("idle keep-alive", idle), ("silent", silent)] {
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            let mut buf = [0u8; 256];
            loop {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    // A 408 before closing is fine.
                    Ok(_) => continue,
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "the {name} connection was still open after 5 s"
        );
    }
}

/// No request makes the proxy connect anywhere its config does not name:
/// a URL in absolute form, in the Host header, in a query or via CONNECT
/// is routed by its path only, and nothing reaches the canary listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_makes_the_proxy_fetch_an_unconfigured_url() {
    let upstream = TcpUpstream::start(0x100, 1000).await;
    let canary = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = canary.local_addr().unwrap();
    let proxy = Proxy::start(config(&upstream));
    proxy.wait_for_event("upstream-connect", 1).await;

    let requests = [
        format!("GET http://{target}/ HTTP/1.1\r\nHost: {target}\r\n\r\n"),
        format!("GET http://{target}/stream HTTP/1.1\r\nHost: x\r\n\r\n"),
        format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"),
        format!("GET /health?url=http://{target}/ HTTP/1.1\r\nHost: x\r\n\r\n"),
        format!("GET /?remote=tcp://{target} HTTP/1.1\r\nHost: {target}\r\n\r\n"),
    ];
    for request in &requests {
        let status = raw(&proxy, request.as_bytes()).await;
        assert!(
            matches!(status, None | Some(200) | Some(400) | Some(404) | Some(405)),
            "{request:?}: {status:?}"
        );
    }
    let reached = tokio::time::timeout(Duration::from_secs(1), canary.accept()).await;
    assert!(reached.is_err(), "the proxy connected to {target}");
}

/// Paths are matched after percent-decoding, as the original (Go's
/// net/http) does: a serve path with a space is reached as `%20`, and an
/// encoded letter is the letter. Encoded slashes and dots are slashes and
/// dots: an unclean result is redirected to its clean form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_paths_are_decoded_as_the_original_does() {
    let upstream = TcpUpstream::start(0x100, 1000).await;
    let mut config = config(&upstream);
    config["resources"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "stream", "serve": "/my news", "remote": upstream.url()}));
    let proxy = Proxy::start(config);
    proxy.wait_for_event("upstream-connect", 1).await;
    for (path, expected) in [
        ("/my%20news", Some(200)),
        ("/%73tream", Some(200)),
        // Decoded, this is `/stream/../health`: redirected to `/health`,
        // as the original does.
        ("/stream%2f..%2fhealth", Some(301)),
        ("/my%20news%00", Some(404)),
    ] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(raw(&proxy, request.as_bytes()).await, expected, "{path}");
    }
}

/// The proxy's open descriptors, from /proc.
fn open_descriptors(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| dir.count())
}

/// HTTP/2 connections get the header timeout too: thousands that send the
/// preface and nothing more, or stop after one request, are closed within
/// `headertimeout`, and the proxy keeps answering meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_connections_that_send_nothing_more_are_closed() {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    // Room for this many sockets in the test itself.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    let count = (limit.rlim_cur as usize).saturating_sub(500).min(10_000);
    let upstream = TcpUpstream::start(0x100, 1000).await;
    let proxy = Proxy::start(config(&upstream));
    proxy.wait_for_event("upstream-connect", 1).await;
    let before = open_descriptors(proxy.pid());

    let mut sockets = Vec::with_capacity(count);
    let mut peak = 0;
    for i in 0..count {
        let mut socket = TcpStream::connect(&proxy.address).await.unwrap();
        socket.write_all(PREFACE).await.unwrap();
        sockets.push(socket);
        if i % 500 == 0 {
            peak = peak.max(open_descriptors(proxy.pid()));
        }
    }
    // A client that makes one request and then sits idle on the connection.
    let mut idle = TcpStream::connect(&proxy.address).await.unwrap();
    idle.write_all(PREFACE).await.unwrap();
    // SETTINGS (empty), then HEADERS for GET /health on stream 1, literal
    // fields without indexing: :method GET (static 2), :scheme http (6),
    // :path (4) "/health", :authority (1) "x".
    idle.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    let block: Vec<u8> = [&[0x82u8, 0x86, 0x04, 7][..], b"/health", &[0x01, 1], b"x"].concat();
    let mut frame = vec![0, 0, block.len() as u8, 1, 0x05, 0, 0, 0, 1];
    frame.extend_from_slice(&block);
    idle.write_all(&frame).await.unwrap();
    let started = Instant::now();
    assert!(
        peak >= before + count.min(1000),
        "the connections were not even accepted (at most {peak} descriptors)"
    );
    // Meanwhile, HTTP/1 clients are answered.
    let health = Client::get(&proxy.url("/health")).await;
    assert_eq!(health.status, 200);

    // headertimeout is 1 s: all are closed a little after.
    let deadline = Instant::now() + Duration::from_secs(15);
    while open_descriptors(proxy.pid()) > before + 10 {
        assert!(
            Instant::now() < deadline,
            "{} descriptors still open {:?} after {count} preface-only HTTP/2 connections (before: {before})",
            open_descriptors(proxy.pid()),
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut buf = vec![0u8; 65536];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match idle.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the idle HTTP/2 connection was kept open");
    drop(sockets);
}
