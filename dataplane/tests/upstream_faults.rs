//! Upstreams that fail in the ways a hostile probe found (issue 19): a
//! server that accepts and never answers, HTTP failures that must be named,
//! silent and garbage upstreams that must not count as live.

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

/// A TCP upstream that sends, every 10 ms, what `next` makes.
async fn tcp_upstream_sending(mut next: impl FnMut() -> Vec<u8> + Send + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            loop {
                let data = next();
                if !data.is_empty() && socket.write_all(&data).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    format!("tcp://{address}")
}

/// Random bytes (xorshift, so every run is the same).
fn random_bytes(state: &mut u64, count: usize) -> Vec<u8> {
    (0..count)
        .map(|_| {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            (*state >> 24) as u8
        })
        .collect()
}

/// Asks for `/stream` every 200 ms for `duration`; the statuses seen.
async fn statuses_for(proxy: &Proxy, duration: Duration) -> Vec<u16> {
    let deadline = tokio::time::Instant::now() + duration;
    let mut statuses = Vec::new();
    while tokio::time::Instant::now() < deadline {
        statuses.push(Client::get(&proxy.url("/stream")).await.status);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_upstream_does_not_make_the_stream_live() {
    // Accepts, then sends nothing: dropped after readtimeout and
    // reconnected at once, over and over.
    let upstream = tcp_upstream_sending(Vec::new).await;
    let mut config = stream_config(&[upstream]);
    config["readtimeout"] = json!(1);
    let proxy = Proxy::start(config);
    let statuses = statuses_for(&proxy, Duration::from_secs(4)).await;
    assert!(
        statuses.iter().all(|&status| status == 404),
        "a stream whose upstream sends nothing let viewers in: {statuses:?}"
    );
    assert!(proxy.events("upstream-loss").len() >= 2);
    assert!(proxy.events("upstream-connect").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_upstream_is_not_live_and_is_logged_while_it_lasts() {
    // 40 KB of random bytes every 10 ms (4 MB/s), never a packet; the
    // connection stays open.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let upstream = tcp_upstream_sending(move || random_bytes(&mut state, 40_000)).await;
    let proxy = Proxy::start(stream_config(&[upstream]));
    proxy.wait_for_event("upstream-garbage", 1).await;
    assert!(
        proxy.events("upstream-loss").is_empty(),
        "garbage was logged only when the connection ended"
    );
    let statuses = statuses_for(&proxy, Duration::from_secs(3)).await;
    assert!(
        statuses.iter().all(|&status| status == 404),
        "a stream of garbage let viewers in: {statuses:?}"
    );
    // Rate-limited: one line when it starts, not one per read.
    assert!(proxy.events("upstream-garbage").len() <= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_between_packets_never_reach_viewers() {
    // 10 test packets, then 4 KB of random bytes, every 10 ms.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut source = PacketSource::new(0x100);
    let upstream = tcp_upstream_sending(move || {
        let mut data = source.packets(10);
        data.extend(random_bytes(&mut state, 4096));
        data
    })
    .await;
    let proxy = Proxy::start(stream_config(&[upstream]));
    proxy.wait_for_event("upstream-connect", 1).await;
    let mut viewer = Client::get(&proxy.url("/stream")).await;
    assert_eq!(viewer.status, 200);
    let packets = decode(&viewer.read_for(Duration::from_secs(4)).await);
    assert!(packets.len() > 1000, "only {} packets", packets.len());
    let false_packets = packets.iter().filter(|p| p.pid != 0x100).count();
    assert_eq!(
        false_packets, 0,
        "random bytes reached the viewer as packets"
    );
}
