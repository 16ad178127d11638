//! Writer shards (issue 16): plain HTTP/1 stream clients are written to by
//! a few shard tasks instead of hyper. What a client had before must still
//! hold: nothing lost while it keeps up, a stalled socket costs only
//! itself, a client that goes frees its place at once, nothing leaks over
//! many connects, and the control API, a reload and the drain end them.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config(upstream: &TcpUpstream) -> serde_json::Value {
    let mut config = stream_config(&[upstream.url()]);
    config["resources"].as_array_mut().unwrap().extend([
        json!({"type": "stream", "serve": "/other", "remote": upstream.url()}),
        json!({"type": "api", "serve": "/health", "api": "health"}),
        json!({"type": "api", "serve": "/metrics", "api": "prometheus"}),
        json!({"type": "api", "serve": "/control", "api": "control", "remote": "/stream"}),
    ]);
    config
}

/// The `writer` of every `client-streaming` event so far.
fn writers(proxy: &Proxy) -> Vec<String> {
    proxy
        .events("client-streaming")
        .iter()
        .map(|event| event["writer"].as_str().unwrap_or("none").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http1_viewers_are_written_by_shards_and_lose_nothing() {
    let upstream = TcpUpstream::start(0x100, 4_000).await;
    let proxy = Proxy::start(config(&upstream));
    proxy.wait_for_event("upstream-connect", 2).await;
    let mut viewers = Vec::new();
    for _ in 0..20 {
        let viewer = Client::get(&proxy.url("/stream")).await;
        assert_eq!(viewer.status, 200);
        assert_eq!(viewer.header("content-type"), Some("video/mpeg"));
        assert_eq!(viewer.header("transfer-encoding"), Some("chunked"));
        viewers.push(viewer);
    }
    let reads: Vec<_> = viewers
        .into_iter()
        .map(|mut viewer| {
            tokio::spawn(async move { decode(&viewer.read_for(Duration::from_secs(3)).await) })
        })
        .collect();
    for read in reads {
        let received = read.await.unwrap();
        assert!(received.len() > 6_000, "{} packets in 3 s", received.len());
        assert_eq!(gaps(&received), 0, "a viewer that keeps up lost packets");
    }
    proxy.settle().await;
    assert_eq!(writers(&proxy), vec!["shard"; 20]);

    // HTTP/1.0: no chunks, the body is the packets themselves.
    let mut socket = connect(&proxy.url("/stream")).await;
    socket
        .write_all(b"GET /stream HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut head = vec![0u8; 4096];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") || got.len() < 2000 {
        let n = socket.read(&mut head).await.unwrap();
        assert!(n > 0, "closed");
        got.extend_from_slice(&head[..n]);
    }
    let at = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(got.starts_with(b"HTTP/1.0 200 OK\r\n"));
    assert_eq!(got[at], 0x47, "the body does not start with a packet");
    assert_eq!(got[at + PACKET], 0x47, "the body is framed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_request_after_another_on_one_connection_is_served_by_hyper() {
    let upstream = TcpUpstream::start(0x100, 2_000).await;
    let proxy = Proxy::start(config(&upstream));
    proxy.wait_for_event("upstream-connect", 2).await;
    // Pipelined: the head is not alone in what the client sent.
    let mut socket = connect(&proxy.url("/")).await;
    socket
        .write_all(
            b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /stream HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buffer = vec![0u8; 65536];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while got.windows(15).filter(|w| w == b"HTTP/1.1 200 OK").count() < 2 || got.len() < 20_000 {
        let n = tokio::time::timeout_at(deadline, socket.read(&mut buffer))
            .await
            .expect("both answers in 5 s")
            .unwrap();
        assert!(n > 0, "closed");
        got.extend_from_slice(&buffer[..n]);
    }
    proxy.settle().await;
    assert_eq!(writers(&proxy), ["hyper"]);
}

/// The response head on `socket` after `request`, with the dates blanked.
async fn head_after(socket: &mut tokio::net::TcpStream, request: &[u8]) -> String {
    socket.write_all(request).await.unwrap();
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut byte))
            .await
            .expect("a response head in 5 s")
            .unwrap();
        assert!(n > 0, "closed");
        got.push(byte[0]);
    }
    String::from_utf8(got)
        .unwrap()
        .lines()
        .map(|line| match line.split_once(": ") {
            Some((name @ ("Date" | "Last-Modified"), _)) => format!("{name}: *"),
            _ => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_answers_with_the_head_hyper_writes() {
    let upstream = TcpUpstream::start(0x100, 2_000).await;
    let proxy = Proxy::start(config(&upstream));
    proxy.wait_for_event("upstream-connect", 2).await;
    for request in [
        &b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, close\r\n\r\n",
        b"GET /stream HTTP/1.0\r\n\r\n",
    ] {
        // First on its connection: a shard's.
        let mut socket = connect(&proxy.url("/")).await;
        let shard = head_after(&mut socket, request).await;
        // After another request on one connection: hyper's.
        let mut socket = connect(&proxy.url("/")).await;
        let version = &request[12..20];
        let mut health = b"GET /health ".to_vec();
        health.extend_from_slice(version);
        health.extend_from_slice(b"\r\nHost: x\r\nConnection: keep-alive\r\n\r\n");
        let _ = head_after(&mut socket, &health).await;
        let mut body = vec![0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_millis(200), socket.read(&mut body)).await;
        let hyper = head_after(&mut socket, request).await;
        assert_eq!(shard, hyper, "{}", String::from_utf8_lossy(request));
        assert!(shard.contains("Content-Type: video/mpeg"));
        let close = request.windows(5).any(|w| w == b"close");
        assert_eq!(shard.contains("Connection: close"), close, "{shard}");
    }
    proxy.settle().await;
    assert_eq!(
        writers(&proxy),
        ["shard", "hyper", "shard", "hyper", "shard", "hyper"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_socket_costs_only_itself() {
    // 15 Mbit/s; one client never reads, with a small receive buffer: in
    // 6 s, more than its kernel buffers and its second of lag hold.
    let upstream = TcpUpstream::start(0x100, 10_000).await;
    let proxy = Proxy::start(config(&upstream));
    proxy.wait_for_event("upstream-connect", 2).await;
    let stalled = proxy.stalled_client("/stream", 4096).await;
    let mut viewers = Vec::new();
    for _ in 0..10 {
        viewers.push(Client::get(&proxy.url("/stream")).await);
    }
    let reads: Vec<_> = viewers
        .into_iter()
        .map(|mut viewer| {
            tokio::spawn(async move { decode(&viewer.read_for(Duration::from_secs(6)).await) })
        })
        .collect();
    for read in reads {
        let received = read.await.unwrap();
        assert!(received.len() > 40_000, "{} packets in 6 s", received.len());
        assert_eq!(
            gaps(&received),
            0,
            "a viewer lost packets beside a stalled one"
        );
    }
    assert!(
        proxy.metric("restreamer_packets_dropped_total").await > 5_000.0,
        "the stalled client's loss is not counted"
    );
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_goes_frees_its_place_at_once() {
    let upstream = TcpUpstream::start(0x100, 2_000).await;
    let mut config = config(&upstream);
    config["maxconnections"] = json!(1);
    let proxy = Proxy::start(config);
    proxy.wait_for_event("upstream-connect", 2).await;
    let mut viewer = Client::get(&proxy.url("/stream")).await;
    for _ in 0..5 {
        assert_eq!(viewer.status, 200);
        assert!(!viewer.read_for(Duration::from_millis(200)).await.is_empty());
        assert_eq!(
            Client::get(&proxy.url("/other")).await.status,
            404,
            "the limit is 1"
        );
        drop(viewer);
        // The next write to it fails: within a batch or two (flushms 5).
        let left = tokio::time::Instant::now();
        viewer = loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let next = Client::get(&proxy.url("/stream")).await;
            if next.status == 200 {
                break next;
            }
            assert!(
                left.elapsed() < Duration::from_millis(500),
                "the place of a viewer that went was not free after 500 ms"
            );
        };
    }
}

/// Open descriptors and tasks of the proxy, from its metrics.
async fn descriptors_and_tasks(proxy: &Proxy) -> (f64, f64) {
    (
        proxy.metric("process_open_fds").await,
        proxy.metric("restreamer_tasks").await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_connects_and_disconnects_leave_descriptors_and_tasks_where_they_were() {
    let upstream = TcpUpstream::start(0x100, 2_000).await;
    let proxy = Proxy::start(config(&upstream));
    proxy.wait_for_event("upstream-connect", 2).await;
    let before = descriptors_and_tasks(&proxy).await;
    let url = proxy.url("/stream");
    let mut batches = tokio::task::JoinSet::new();
    for batch in 0..100 {
        let url = url.clone();
        batches.spawn(async move {
            for n in 0..100 {
                let mut socket = connect(&url).await;
                let request = if (batch + n) % 2 == 0 {
                    &b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n"[..]
                } else {
                    &b"GET /other HTTP/1.0\r\n\r\n"[..]
                };
                socket.write_all(request).await.unwrap();
                // Half read the head and some packets, half go at once.
                if n % 2 == 0 {
                    let mut buffer = [0u8; 1024];
                    let _ = socket.read(&mut buffer).await;
                }
            }
        });
    }
    while let Some(batch) = batches.join_next().await {
        batch.unwrap();
    }
    // Every client has gone: the shards find out at their next write.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let after = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = descriptors_and_tasks(&proxy).await;
        if (after.0 <= before.0 + 2.0 && after.1 <= before.1 + 2.0)
            || tokio::time::Instant::now() > deadline
        {
            break after;
        }
    };
    assert!(
        after.0 <= before.0 + 2.0,
        "open descriptors {} before, {} after 10,000 clients came and went",
        before.0,
        after.0
    );
    assert!(
        after.1 <= before.1 + 2.0,
        "tasks {} before, {} after 10,000 clients came and went",
        before.1,
        after.1
    );
    assert_eq!(proxy.metric("restreamer_connections").await, 0.0);
    proxy.settle().await;
    assert_eq!(proxy.events("client-stopped").len(), 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_a_reload_and_the_drain_end_shard_clients() {
    let upstream = TcpUpstream::start(0x100, 2_000).await;
    let mut config = config(&upstream);
    config["resources"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "stream", "serve": "/third", "remote": upstream.url()}));
    config["draintime"] = json!(1);
    let mut proxy = Proxy::start(config.clone());
    proxy.wait_for_event("upstream-connect", 3).await;
    let mut on_stream = Client::get(&proxy.url("/stream")).await;
    let mut on_other = Client::get(&proxy.url("/other")).await;
    let mut on_third = Client::get(&proxy.url("/third")).await;
    for client in [&mut on_stream, &mut on_other, &mut on_third] {
        assert_eq!(client.status, 200);
        assert!(!client.read_for(Duration::from_millis(200)).await.is_empty());
    }
    proxy.settle().await;
    assert_eq!(writers(&proxy), ["shard", "shard", "shard"]);

    // The control API takes /stream offline: its client ends, the others not.
    assert_eq!(
        Client::get(&proxy.url("/control?offline")).await.status,
        202
    );
    assert!(on_stream.ends_within(Duration::from_secs(2)).await);
    assert!(!on_other
        .read_for(Duration::from_millis(200))
        .await
        .is_empty());

    // A reload without /other ends its client.
    config["resources"]
        .as_array_mut()
        .unwrap()
        .retain(|resource| resource["serve"] != "/other");
    proxy.rewrite(config);
    assert!(
        on_other.ends_within(Duration::from_secs(5)).await,
        "the client of a removed stream stayed"
    );
    assert!(!on_third
        .read_for(Duration::from_millis(200))
        .await
        .is_empty());

    // The drain serves /third for draintime, then closes it.
    proxy.signal(libc::SIGTERM);
    proxy.wait_for_event("draining", 1).await;
    assert!(!on_third
        .read_for(Duration::from_millis(300))
        .await
        .is_empty());
    assert!(
        on_third.ends_within(Duration::from_secs(3)).await,
        "the drain did not close a shard client"
    );
    assert!(proxy.terminate().success());
}
