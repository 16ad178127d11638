//! Origin/edge tiers on one machine: a broadcaster, two origin proxies that
//! pull from it, and three edge proxies that pull from the origins (each
//! origin as one of their upstreams) and serve the viewers. All real
//! processes on loopback.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

fn origin_config(broadcaster: &TcpUpstream) -> serde_json::Value {
    json!({
        "reconnect": 1,
        "flushms": 5,
        "resources": [{"type": "stream", "serve": "/tv", "remote": broadcaster.url()}]
    })
}

fn edge_config(origins: &[&Proxy]) -> serde_json::Value {
    let upstreams: Vec<String> = origins.iter().map(|origin| origin.url("/tv")).collect();
    json!({
        "reconnect": 1,
        "timeout": 2,
        "flushms": 5,
        "resources": [{"type": "stream", "serve": "/tv", "remotes": upstreams}]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_fail_over_between_origins_and_the_broadcaster_sees_one_connection_per_origin() {
    let broadcaster = TcpUpstream::start(0x100, 1000).await;
    let origin_a = Proxy::start(origin_config(&broadcaster));
    let origin_b = Proxy::start(origin_config(&broadcaster));
    origin_a.wait_for_event("upstream-connect", 1).await;
    origin_b.wait_for_event("upstream-connect", 1).await;

    let edges: Vec<Proxy> = (0..3)
        .map(|_| Proxy::start(edge_config(&[&origin_a, &origin_b])))
        .collect();
    for edge in &edges {
        edge.wait_for_event("upstream-connect", 1).await;
    }
    let mut viewers = Vec::new();
    for edge in &edges {
        for _ in 0..2 {
            let viewer = Client::get(&edge.url("/tv")).await;
            assert_eq!(viewer.status, 200);
            viewers.push(viewer);
        }
    }
    for viewer in &mut viewers {
        let packets = decode(&viewer.read_for(Duration::from_millis(700)).await);
        assert!(
            packets.len() > 300,
            "a viewer got only {} packets",
            packets.len()
        );
    }

    // The broadcaster serves the origins only: one connection each, however
    // many edges and viewers there are. The origins serve one connection
    // per edge, not per viewer.
    assert_eq!(broadcaster.connections(), 2);
    let edge_connections =
        origin_a.events("client-streaming").len() + origin_b.events("client-streaming").len();
    assert_eq!(edge_connections, 3, "one upstream connection per edge");

    // Kill origin A outright; the edges on it fail over to origin B.
    let on_a: Vec<usize> = edges
        .iter()
        .enumerate()
        .filter(|(_, edge)| {
            edge.events("upstream-connect")[0]["url"]
                .as_str()
                .unwrap()
                .contains(&origin_a.address)
        })
        .map(|(i, _)| i)
        .collect();
    let mut origin_a = origin_a;
    origin_a.signal(libc::SIGKILL);
    let _ = origin_a.terminate();
    for &i in &on_a {
        edges[i].wait_for_event("upstream-connect", 2).await;
        let url = edges[i].events("upstream-connect")[1]["url"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            url.contains(&origin_b.address),
            "edge {i} failed over to {url}"
        );
    }

    // Every viewer is still connected and receiving.
    for viewer in &mut viewers {
        let packets = decode(&viewer.read_for(Duration::from_millis(1500)).await);
        assert!(
            packets.len() > 300,
            "a viewer stalled after the failover: {} packets",
            packets.len()
        );
    }
    for edge in &edges {
        assert_eq!(
            edge.events("client-stopped").len(),
            0,
            "a viewer was disconnected"
        );
    }
    assert_eq!(
        broadcaster.connections(),
        2,
        "the failover reached the broadcaster"
    );
}
