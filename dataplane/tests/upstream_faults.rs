//! Upstreams that fail in the ways a hostile probe found (issue 19): a
//! server that accepts and never answers, HTTP failures that must be named.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An HTTP upstream whose first connection is accepted and never answered
/// (the request is read, nothing is sent); later connections get a live
/// stream of test packets.
async fn http_upstream_silent_at_first() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/live.ts", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&connections);
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let n = counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                if n == 0 {
                    tokio::time::sleep(Duration::from_secs(300)).await;
                    return;
                }
                let head =
                    "HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nConnection: close\r\n\r\n";
                if socket.write_all(head.as_bytes()).await.is_ok() {
                    produce(socket, 0x100, 1000).await;
                }
            });
        }
    });
    (url, connections)
}

/// Waits until a viewer of `/stream` gets packets, up to `limit`.
async fn until_viewers_get_packets(proxy: &Proxy, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        let mut viewer = Client::get(&proxy.url("/stream")).await;
        if viewer.status == 200
            && !viewer
                .read_body(10 * PACKET, Duration::from_secs(2))
                .await
                .is_empty()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_upstream_that_never_answers_is_given_up_after_readtimeout() {
    let (url, connections) = http_upstream_silent_at_first().await;
    let mut config = stream_config(&[url]);
    config["timeout"] = json!(0);
    config["readtimeout"] = json!(1);
    let proxy = Proxy::start(config);
    assert!(
        until_viewers_get_packets(&proxy, Duration::from_secs(30)).await,
        "the stream never played: the silent first attempt was not given up"
    );
    let error = &proxy.events("upstream-error")[0];
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("no response head within 1s"),
        "{error}"
    );
    assert!(connections.load(Ordering::SeqCst) >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_upstream_attempt_waits_forever_even_without_timeouts() {
    let (url, _) = http_upstream_silent_at_first().await;
    let mut config = stream_config(&[url]);
    config["timeout"] = json!(0);
    config["readtimeout"] = json!(0);
    let proxy = Proxy::start(config);
    // The default bound is 10 s; then the next attempt streams.
    assert!(
        until_viewers_get_packets(&proxy, Duration::from_secs(45)).await,
        "the stream never played: an attempt waited forever"
    );
    let error = &proxy.events("upstream-error")[0];
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("no response head within 10s"),
        "{error}"
    );
}

/// An HTTP upstream that answers every request with `respond`.
async fn http_upstream_answering(respond: fn(String) -> Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                // Every request on the connection (a redirect reuses it).
                let mut request = [0u8; 4096];
                loop {
                    let n = socket.read(&mut request).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    let request = String::from_utf8_lossy(&request[..n]).to_string();
                    if socket.write_all(&respond(request)).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{address}/live.ts")
}

/// The first `upstream-error` logged by a proxy of one stream from `url`.
async fn first_upstream_error(url: String) -> String {
    let proxy = Proxy::start(stream_config(&[url]));
    proxy.wait_for_event("upstream-error", 1).await;
    proxy.events("upstream-error")[0]["error"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_upstream_failures_are_named_in_upstream_error() {
    // Headers that never end.
    let endless = http_upstream_answering(|_| {
        let mut answer = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..20_000 {
            answer.extend_from_slice(format!("X-Header-{i}: padding\r\n").as_bytes());
        }
        answer
    })
    .await;
    let error = first_upstream_error(endless).await;
    assert!(
        error.contains("message head is too large"),
        "endless headers: {error}"
    );

    // A redirect to itself.
    let looping = http_upstream_answering(|_| {
        b"HTTP/1.1 302 Found\r\nLocation: /live.ts\r\nContent-Length: 0\r\n\r\n".to_vec()
    })
    .await;
    let error = first_upstream_error(looping).await;
    assert!(
        error.contains("too many redirects"),
        "redirect loop: {error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_named_in_upstream_error() {
    if !have("openssl") {
        assert!(
            std::env::var_os("CI").is_none(),
            "openssl is required in CI"
        );
        return;
    }
    // A real TLS server (openssl s_server) with a self-signed certificate.
    let dir = tempfile::tempdir().unwrap();
    let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
    let status = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let mut server = std::process::Command::new("openssl")
        .args(["s_server", "-quiet", "-accept", &port.to_string(), "-key"])
        .arg(&key)
        .arg("-cert")
        .arg(&cert)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "s_server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let error = first_upstream_error(format!("https://localhost:{port}/live.ts")).await;
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        error.contains("invalid peer certificate"),
        "bad certificate: {error}"
    );
}
