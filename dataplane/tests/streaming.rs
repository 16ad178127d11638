//! End-to-end behaviour of stream clients: the real binary, a real TCP
//! upstream, real HTTP clients.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_receive_the_same_aligned_packets_without_loss() {
    let upstream = TcpUpstream::start(0x100, 2000).await;
    let proxy = Proxy::start(stream_config(&[upstream.url()]));
    proxy.wait_for_event("upstream-connect", 1).await;

    let mut first = Client::get(&proxy.url("/stream")).await;
    let mut second = Client::get(&proxy.url("/stream")).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("content-type"), Some("video/mpeg"));
    assert_eq!(
        first.header("cache-control"),
        Some("no-cache,no-store,no-transform")
    );
    let (a, b) = tokio::join!(
        first.read_for(Duration::from_secs(2)),
        second.read_for(Duration::from_secs(2))
    );
    let (a_packets, b_packets) = (decode(&a), decode(&b));
    assert!(
        a_packets.len() > 1000,
        "only {} packets in 2 s",
        a_packets.len()
    );
    assert_eq!(gaps(&a_packets), 0, "the first client lost packets");
    assert_eq!(gaps(&b_packets), 0, "the second client lost packets");

    // Where their streams overlap, the bytes are identical.
    let start = a_packets[0].sequence.max(b_packets[0].sequence);
    let end = a_packets
        .last()
        .unwrap()
        .sequence
        .min(b_packets.last().unwrap().sequence);
    assert!(end > start + 1000, "the clients' streams hardly overlap");
    let slice = |data: &[u8], packets: &[Received]| {
        let from = packets.iter().position(|p| p.sequence == start).unwrap() * PACKET;
        let to = (packets.iter().position(|p| p.sequence == end).unwrap() + 1) * PACKET;
        data[from..to].to_vec()
    };
    assert!(
        slice(&a, &a_packets) == slice(&b, &b_packets),
        "clients got different bytes"
    );
    assert_eq!(
        upstream.connections(),
        1,
        "the upstream is fetched once for all clients"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_keeps_the_client_connected() {
    let first = TcpUpstream::start(0x101, 1000).await;
    let second = TcpUpstream::start(0x102, 1000).await;
    let proxy = Proxy::start(stream_config(&[first.url(), second.url()]));
    proxy.wait_for_event("upstream-connect", 1).await;

    let mut client = Client::get(&proxy.url("/stream")).await;
    assert_eq!(client.status, 200);
    let before = decode(&client.read_for(Duration::from_millis(1500)).await);
    assert!(!before.is_empty());
    let active = before.last().unwrap().pid;
    assert!(before.iter().all(|p| p.pid == active));

    // Kill whichever upstream is in use (the list is shuffled).
    let (dead, alive_pid) = if active == 0x101 {
        (first, 0x102)
    } else {
        (second, 0x101)
    };
    drop(dead);

    let after = decode(&client.read_for(Duration::from_secs(4)).await);
    assert!(
        after.iter().any(|p| p.pid == alive_pid),
        "no packets from the second upstream reached the connected client"
    );
    proxy.wait_for_event("upstream-loss", 1).await;
    assert_eq!(
        proxy.events("client-stopped").len(),
        0,
        "the client was disconnected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_client_loses_packets_and_does_not_slow_others() {
    // 20,000 packets/s (30 Mbit/s) in bursts of 200 packets: a stalled
    // client fills its socket buffers in a second or two, then its
    // 2,000-packet queue (100 ms) overflows.
    let upstream = TcpUpstream::start(0x100, 20_000).await;
    let mut config = stream_config(&[upstream.url()]);
    config["outputbuffer"] = json!(2000);
    let proxy = Proxy::start(config);
    proxy.wait_for_event("upstream-connect", 1).await;

    let mut stalled = proxy.stalled_client("/stream", 4096).await;
    let mut fast = Client::get(&proxy.url("/stream")).await;

    // The fast client reads for 3 s while the stalled one reads nothing.
    let fast_packets = decode(&fast.read_for(Duration::from_secs(3)).await);
    assert!(
        fast_packets.len() > 40_000,
        "fast client got only {} packets",
        fast_packets.len()
    );
    assert_eq!(gaps(&fast_packets), 0, "the fast client lost packets");

    // The stalled client, reading again, finds a gap: its packets were dropped.
    let stalled_packets = decode(&stalled.read_for(Duration::from_secs(1)).await);
    assert!(
        gaps(&stalled_packets) > 1000,
        "the stalled client lost nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_limit_holds_under_simultaneous_connects() {
    let upstream = TcpUpstream::start(0x100, 500).await;
    let mut config = stream_config(&[upstream.url()]);
    config["maxconnections"] = json!(50);
    config["fullconnections"] = json!(40);
    let proxy = Proxy::start(config);
    proxy.wait_for_event("upstream-connect", 1).await;

    let url = proxy.url("/stream");
    let clients: Vec<Client> =
        futures_util::future::join_all((0..200).map(|_| Client::get(&url))).await;
    let accepted = clients.iter().filter(|c| c.status == 200).count();
    let refused = clients.iter().filter(|c| c.status == 404).count();
    assert_eq!(accepted, 50, "clients let in past the hard limit of 50");
    assert_eq!(refused, 150);
    for refused in clients.iter().filter(|c| c.status == 404) {
        assert_eq!(refused.header("content-type"), Some("video/mpeg"));
    }

    // When accepted clients leave, their places are free again.
    drop(clients);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = Client::get(&url).await;
    assert_eq!(again.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_streams_unknown_paths_and_methods_are_refused_at_once() {
    let upstream = TcpUpstream::start(0x100, 500).await;
    // A port nothing listens on: that stream never comes up.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = Proxy::start(json!({
        "reconnect": 1,
        "resources": [
            {"type": "stream", "serve": "/live", "remote": upstream.url()},
            {"type": "stream", "serve": "/down", "remote": format!("tcp://{closed}")}
        ]
    }));
    proxy.wait_for_event("upstream-connect", 1).await;

    let down = tokio::time::timeout(Duration::from_secs(2), Client::get(&proxy.url("/down")))
        .await
        .expect("a client of an offline stream must not hang");
    assert_eq!(down.status, 404);
    assert_eq!(down.header("content-type"), Some("video/mpeg"));

    let head = Client::request("HEAD", &proxy.url("/live")).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("video/mpeg"));
    assert_eq!(
        Client::request("POST", &proxy.url("/live")).await.status,
        405
    );
    assert_eq!(Client::get(&proxy.url("/nothing")).await.status, 404);
    assert_eq!(Client::get(&proxy.url("/live/")).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_zero_leaves_the_stream_offline_after_a_loss() {
    let upstream = TcpUpstream::start(0x100, 500).await;
    let address = upstream.address.clone();
    let mut config = stream_config(&[upstream.url()]);
    config["reconnect"] = json!(0);
    let proxy = Proxy::start(config);
    proxy.wait_for_event("upstream-connect", 1).await;
    assert_eq!(Client::get(&proxy.url("/stream")).await.status, 200);

    drop(upstream);
    proxy.wait_for_event("upstream-offline", 1).await;
    // The upstream comes back on the same address; the stream stays down.
    let listener = tokio::net::TcpListener::bind(&address).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(Client::get(&proxy.url("/stream")).await.status, 404);
    let accepted = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
    assert!(
        accepted.is_err(),
        "the proxy reconnected despite reconnect 0"
    );
}
