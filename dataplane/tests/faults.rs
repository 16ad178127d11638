//! Upstream and client faults: a stalling upstream, an HTTP 500, garbage
//! between packets, and thousands of clients that come and go. Each time:
//! the behaviour a user expects, a clear log line, nothing leaked.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upstream_is_dropped_after_readtimeout_and_reconnected() {
    // The first connection sends for half a second, then stalls without
    // closing; later connections stream normally.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&connections);
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let n = counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if n == 0 {
                    let _ = tokio::time::timeout(
                        Duration::from_millis(500),
                        produce(&mut socket, 0x101, 1000),
                    )
                    .await;
                    // Hold the socket open, silent, for a long time.
                    tokio::time::sleep(Duration::from_secs(60)).await;
                } else {
                    produce(socket, 0x102, 1000).await;
                }
            });
        }
    });
    let mut config = stream_config(&[format!("tcp://{address}")]);
    config["readtimeout"] = json!(1);
    let proxy = Proxy::start(config);
    proxy.wait_for_event("upstream-connect", 1).await;
    let mut viewer = Client::get(&proxy.url("/stream")).await;
    assert_eq!(viewer.status, 200);

    proxy.wait_for_event("upstream-loss", 1).await;
    let loss = &proxy.events("upstream-loss")[0];
    assert!(
        loss["error"]
            .as_str()
            .unwrap()
            .contains("nothing received for 1s"),
        "{loss}"
    );
    proxy.wait_for_event("upstream-connect", 2).await;
    let after = decode(&viewer.read_for(Duration::from_secs(1)).await);
    assert!(
        after.iter().any(|p| p.pid == 0x102),
        "the viewer got nothing after the reconnect"
    );
    assert_eq!(
        proxy.events("client-stopped").len(),
        0,
        "the viewer was disconnected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_answering_500_is_logged_and_the_stream_refuses_viewers() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops",
                    )
                    .await;
            });
        }
    });
    let proxy = Proxy::start(stream_config(&[format!("http://{address}/live.ts")]));
    proxy.wait_for_event("upstream-error", 2).await;
    let error = &proxy.events("upstream-error")[0];
    assert!(
        error["error"].as_str().unwrap().contains("HTTP status 500"),
        "{error}"
    );
    assert_eq!(Client::get(&proxy.url("/stream")).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_between_packets_never_reaches_viewers() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut source = PacketSource::new(0x100);
        loop {
            let mut data = source.packets(10);
            // Garbage that even holds false sync bytes.
            data.extend_from_slice(&[0x47, 0x00, 0x47, 0xde, 0xad, 0x47, 0xbe, 0xef]);
            if socket.write_all(&data).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let proxy = Proxy::start(stream_config(&[format!("tcp://{address}")]));
    proxy.wait_for_event("upstream-connect", 1).await;
    let mut viewer = Client::get(&proxy.url("/stream")).await;
    let body = viewer.read_for(Duration::from_secs(1)).await;
    // decode() asserts every packet starts with the sync byte; the test
    // packets also carry their PID.
    let packets = decode(&body);
    assert!(packets.len() > 300, "only {} packets", packets.len());
    assert!(
        packets.iter().all(|p| p.pid == 0x100),
        "a garbage packet got through"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_clients_coming_and_going_leak_nothing() {
    let upstream = TcpUpstream::start(0x100, 500).await;
    let mut config = stream_config(&[upstream.url()]);
    config["resources"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "api", "serve": "/health", "api": "health"}));
    let proxy = Proxy::start(config);
    proxy.wait_for_event("upstream-connect", 1).await;
    let descriptors = || {
        std::fs::read_dir(format!("/proc/{}/fd", proxy.pid()))
            .unwrap()
            .count()
    };

    // Warm up once, so lazily opened descriptors are counted in the baseline.
    drop(Client::get(&proxy.url("/stream")).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = descriptors();
    let tasks_before = tasks(&proxy).await;

    let url = proxy.url("/stream");
    for _ in 0..50 {
        let wave: Vec<_> = (0..200)
            .map(|i| {
                let url = url.clone();
                tokio::spawn(async move {
                    let mut client = Client::get(&url).await;
                    assert_eq!(client.status, 200);
                    // Half read a little first, half leave at once.
                    if i % 2 == 0 {
                        client.read_body(188, Duration::from_millis(200)).await;
                    }
                })
            })
            .collect();
        for client in wave {
            client.await.unwrap();
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Counted before the health request, whose connection is a task too.
    let tasks_after = tasks(&proxy).await;
    let mut health = Client::get(&proxy.url("/health")).await;
    let health: serde_json::Value = serde_json::from_str(&health.text().await).unwrap();
    assert_eq!(health["viewer"], 0, "clients still counted after leaving");
    let after = descriptors();
    assert!(
        after <= before + 5,
        "descriptors grew from {before} to {after}"
    );
    assert!(
        tasks_after <= tasks_before,
        "tokio tasks grew from {tasks_before} to {tasks_after}"
    );
    assert_eq!(proxy.events("client-stopped").len(), 10_001);
}

/// The proxy's own count of live tokio tasks, from its metrics.
async fn tasks(proxy: &Proxy) -> u64 {
    let text = Client::get(&proxy.url("/metrics")).await.text().await;
    text.lines()
        .find_map(|line| line.strip_prefix("restreamer_tasks "))
        .unwrap_or_else(|| panic!("no restreamer_tasks in\n{text}"))
        .parse()
        .unwrap()
}
