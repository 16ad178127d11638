//! Client addresses: `maxperclient` caps the stream connections of each
//! address (clients on 127.0.0.1 and 127.0.0.2 are two addresses), and
//! `Forwarded` / `X-Forwarded-For` name the client only when the peer is
//! one of `trustedproxies`.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use tokio::net::{TcpSocket, TcpStream};

/// A connection to the proxy from `local` (a loopback address).
async fn connect_from(local: &str, proxy: &Proxy) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
    socket
        .connect(proxy.address.parse().unwrap())
        .await
        .unwrap()
}

/// A GET of `path` from `local`, with `headers`.
async fn get_from(local: &str, proxy: &Proxy, path: &str, headers: &[(&str, &str)]) -> Client {
    let socket = connect_from(local, proxy).await;
    Client::send_on(socket, "GET", &proxy.url(path), headers).await
}

async fn refusals(proxy: &Proxy, reason: &str) -> usize {
    proxy.settle().await;
    proxy
        .events("client-refused")
        .iter()
        .filter(|event| event["reason"] == reason)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maxperclient_caps_each_address_and_places_come_back() {
    let upstream = TcpUpstream::start(0x100, 1000).await;
    let mut config = stream_config(&[upstream.url()]);
    config["maxperclient"] = 2.into();
    config["maxconnections"] = 10.into();
    let proxy = Proxy::start(config);
    proxy.wait_for_event("upstream-connect", 1).await;

    let mut first = get_from("127.0.0.1", &proxy, "/stream", &[]).await;
    let second = get_from("127.0.0.1", &proxy, "/stream", &[]).await;
    assert_eq!((first.status, second.status), (200, 200));
    let third = get_from("127.0.0.1", &proxy, "/stream", &[]).await;
    assert_eq!(third.status, 404, "a third stream from 127.0.0.1");
    assert_eq!(third.header("content-type"), Some("video/mpeg"));
    assert_eq!(refusals(&proxy, "maxperclient").await, 1);

    // Another address has its own share.
    let mut others = Vec::new();
    for _ in 0..2 {
        let other = get_from("127.0.0.2", &proxy, "/stream", &[]).await;
        assert_eq!(other.status, 200);
        others.push(other);
    }
    assert_eq!(
        get_from("127.0.0.2", &proxy, "/stream", &[]).await.status,
        404
    );
    // The viewers let in are served.
    assert!(!first.read_for(Duration::from_millis(200)).await.is_empty());
    assert!(!others[0]
        .read_for(Duration::from_millis(200))
        .await
        .is_empty());

    // A viewer that leaves gives its address's place back.
    drop(second);
    proxy.wait_for_event("client-stopped", 1).await;
    assert_eq!(
        get_from("127.0.0.1", &proxy, "/stream", &[]).await.status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_are_ignored_from_untrusted_peers_and_used_from_trusted_ones() {
    let upstream = TcpUpstream::start(0x100, 1000).await;
    let mut config = stream_config(&[upstream.url()]);
    config["maxperclient"] = 1.into();
    config["trustedproxies"] = json!(["127.0.0.2/32"]);
    let proxy = Proxy::start(config);
    proxy.wait_for_event("upstream-connect", 1).await;

    // 127.0.0.1 is not trusted: whatever it says, it is 127.0.0.1.
    let _a = get_from(
        "127.0.0.1",
        &proxy,
        "/stream",
        &[("X-Forwarded-For", "198.51.100.1")],
    )
    .await;
    assert_eq!(_a.status, 200);
    for header in [
        ("X-Forwarded-For", "198.51.100.2"),
        ("Forwarded", "for=198.51.100.3"),
    ] {
        let posing = get_from("127.0.0.1", &proxy, "/stream", &[header]).await;
        assert_eq!(posing.status, 404, "{header:?} from an untrusted peer");
    }

    // 127.0.0.2 is a trusted proxy: each client it names is its own address.
    let mut behind = Vec::new();
    for header in [
        ("X-Forwarded-For", "198.51.100.1"),
        ("X-Forwarded-For", "203.0.113.9, 198.51.100.2"),
        ("Forwarded", "for=\"[2001:db8::1]:4711\";proto=https"),
    ] {
        let client = get_from("127.0.0.2", &proxy, "/stream", &[header]).await;
        assert_eq!(client.status, 200, "{header:?} from a trusted proxy");
        behind.push(client);
    }
    // The same client again, behind the proxy: over its limit. A forged
    // entry left of the proxy's own does not make it someone else.
    for header in [
        ("X-Forwarded-For", "198.51.100.1"),
        ("X-Forwarded-For", "192.0.2.200, 198.51.100.2"),
    ] {
        let again = get_from("127.0.0.2", &proxy, "/stream", &[header]).await;
        assert_eq!(again.status, 404, "{header:?}");
    }
    // Without a header the proxy itself is the client.
    assert_eq!(
        get_from("127.0.0.2", &proxy, "/stream", &[]).await.status,
        200
    );
    assert_eq!(refusals(&proxy, "maxperclient").await, 4);
    // The log names the client behind the proxy.
    let refused: Vec<_> = proxy.events("client-refused");
    assert!(
        refused.iter().any(|e| e["address"] == "198.51.100.1"),
        "{refused:?}"
    );
    assert!(
        refused.iter().any(|e| e["address"] == "127.0.0.1"),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_bound_to_an_address_works_behind_a_trusted_proxy_only() {
    let upstream = TcpUpstream::start(0x100, 1000).await;
    let mut config = stream_config(&[upstream.url()]);
    config["trustedproxies"] = json!(["127.0.0.2"]);
    config["userlist"] = json!({"portal": {"password": "key"}});
    config["resources"][0]["authentication"] = json!({"type": "token", "users": ["portal"]});
    let proxy = Proxy::start(config);
    proxy.wait_for_event("upstream-connect", 1).await;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_restreamer"))
        .args(["sign", "--config"])
        .arg(&proxy.config_path)
        .args([
            "--user",
            "portal",
            "--ttl",
            "60",
            "--client",
            "198.51.100.7",
            "/stream",
        ])
        .output()
        .unwrap();
    let url = String::from_utf8(output.stdout).unwrap().trim().to_string();
    let header = [("X-Forwarded-For", "198.51.100.7")];
    assert_eq!(
        get_from("127.0.0.2", &proxy, &url, &header).await.status,
        200
    );
    assert_eq!(
        get_from("127.0.0.1", &proxy, &url, &header).await.status,
        401
    );
    assert_eq!(get_from("127.0.0.2", &proxy, &url, &[]).await.status, 401);
}
