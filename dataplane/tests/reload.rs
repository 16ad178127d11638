//! Live reload while clients stream: rewriting the config file, swapping it
//! the way Kubernetes swaps a ConfigMap volume, and rejecting bad configs.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn two_streams(a: &TcpUpstream, b: &TcpUpstream) -> Value {
    json!({
        "reconnect": 1,
        "flushms": 5,
        "resources": [
            {"type": "stream", "serve": "/a", "remote": a.url()},
            {"type": "stream", "serve": "/b", "remote": b.url()},
            {"type": "api", "serve": "/metrics", "api": "prometheus"}
        ]
    })
}

/// Polls until `path` answers `status`; returns how long that took.
async fn until_status(proxy: &Proxy, path: &str, status: u16) -> Duration {
    let started = Instant::now();
    while Client::get(&proxy.url(path)).await.status != status {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{path} never answered {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_unchanged_streams_switches_changed_ones_and_closes_removed_ones() {
    let a = TcpUpstream::start(0x10a, 1000).await;
    let b = TcpUpstream::start(0x10b, 1000).await;
    let proxy = Proxy::start(two_streams(&a, &b));
    proxy.wait_for_event("upstream-connect", 2).await;
    let mut viewer_a = Client::get(&proxy.url("/a")).await;
    let mut viewer_b = Client::get(&proxy.url("/b")).await;
    assert_eq!((viewer_a.status, viewer_b.status), (200, 200));
    viewer_a.read_for(Duration::from_millis(300)).await;

    // /a gets a new upstream, /b is removed, /c is new.
    let a2 = TcpUpstream::start(0x20a, 1000).await;
    let c = TcpUpstream::start(0x10c, 1000).await;
    proxy.rewrite(json!({
        "reconnect": 1,
        "flushms": 5,
        "resources": [
            {"type": "stream", "serve": "/a", "remote": a2.url()},
            {"type": "stream", "serve": "/c", "remote": c.url()},
            {"type": "api", "serve": "/metrics", "api": "prometheus"}
        ]
    }));
    let took = until_status(&proxy, "/c", 200).await;
    assert!(took < Duration::from_secs(2), "reload took {took:?}");

    assert!(
        viewer_b.ends_within(Duration::from_secs(2)).await,
        "the removed stream's client stayed"
    );
    assert_eq!(Client::get(&proxy.url("/b")).await.status, 404);

    // The /a client, still on its first connection, now gets the new upstream.
    let after = decode(&viewer_a.read_for(Duration::from_secs(2)).await);
    assert!(
        after.iter().any(|p| p.pid == 0x20a),
        "the /a client did not switch upstream"
    );
    assert!(after.iter().rev().take(10).all(|p| p.pid == 0x20a));
    let a_stopped = proxy
        .events("client-stopped")
        .iter()
        .filter(|e| e["stream"] == "/a")
        .count();
    assert_eq!(a_stopped, 0, "the /a client was disconnected");
    assert_eq!(a2.connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_stream_keeps_its_clients_and_its_upstream_connection() {
    let a = TcpUpstream::start(0x10a, 1000).await;
    let b = TcpUpstream::start(0x10b, 1000).await;
    let mut config = two_streams(&a, &b);
    let proxy = Proxy::start(config.clone());
    proxy.wait_for_event("upstream-connect", 2).await;
    let mut viewer = Client::get(&proxy.url("/a")).await;
    viewer.read_for(Duration::from_millis(300)).await;

    // Limits change; the streams do not.
    config["maxconnections"] = json!(1);
    proxy.rewrite(config);
    proxy.wait_for_event("config-reload", 1).await;
    let during = decode(&viewer.read_for(Duration::from_secs(1)).await);
    assert_eq!(
        gaps(&during),
        0,
        "the unchanged stream's client lost packets"
    );
    assert_eq!(
        a.connections(),
        1,
        "the unchanged stream reconnected its upstream"
    );
    // The new hard limit applies at once: one client is already connected.
    assert_eq!(Client::get(&proxy.url("/b")).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffer_and_timeout_changes_apply_without_reconnecting_upstreams() {
    let a = TcpUpstream::start(0x10a, 1000).await;
    let b = TcpUpstream::start(0x10b, 1000).await;
    let mut config = two_streams(&a, &b);
    let proxy = Proxy::start(config.clone());
    proxy.wait_for_event("upstream-connect", 2).await;
    let mut viewer = Client::get(&proxy.url("/a")).await;
    viewer.read_for(Duration::from_millis(300)).await;

    // Every setting but the upstream lists changes.
    config["outputbuffer"] = json!(4000);
    config["inputbuffer"] = json!(2000);
    config["timeout"] = json!(7);
    config["readtimeout"] = json!(9);
    config["reconnect"] = json!(3);
    config["flushms"] = json!(20);
    proxy.rewrite(config);
    proxy.wait_for_event("config-reload", 1).await;
    let during = decode(&viewer.read_for(Duration::from_secs(1)).await);
    assert!(
        !during.is_empty(),
        "the client got nothing after the reload"
    );
    assert_eq!(gaps(&during), 0, "the client lost packets in the reload");
    assert_eq!(
        (a.connections(), b.connections()),
        (1, 1),
        "an upstream was reconnected although no upstream list changed"
    );
    assert!(
        proxy.events("stream-updated").is_empty(),
        "logged as an upstream change: {:?}",
        proxy.events("stream-updated")
    );
    assert!(proxy.events("upstream-loss").is_empty());
    assert_eq!(Client::get(&proxy.url("/b")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_is_rejected_and_the_last_good_one_keeps_serving() {
    let a = TcpUpstream::start(0x10a, 1000).await;
    let b = TcpUpstream::start(0x10b, 1000).await;
    let proxy = Proxy::start(two_streams(&a, &b));
    proxy.wait_for_event("upstream-connect", 2).await;
    let mut viewer = Client::get(&proxy.url("/a")).await;

    // Half-written, then invalid values, then a deleted file.
    std::fs::write(&proxy.config_path, "{\"resources\": [").unwrap();
    proxy.wait_for_event("config-reload-failed", 1).await;
    std::fs::write(
        &proxy.config_path,
        r#"{"outputbuffer": 0, "listen": "127.0.0.1:0"}"#,
    )
    .unwrap();
    proxy.wait_for_event("config-reload-failed", 2).await;
    std::fs::remove_file(&proxy.config_path).unwrap();
    proxy.wait_for_event("config-reload-failed", 3).await;

    let failure = &proxy.events("config-reload-failed")[1];
    assert!(failure["error"]
        .as_str()
        .unwrap()
        .contains("outputbuffer: must be at least 1 packet"));
    assert!(decode(&viewer.read_for(Duration::from_millis(500)).await).len() > 100);
    assert_eq!(Client::get(&proxy.url("/b")).await.status, 200);
    let mut metrics = Client::get(&proxy.url("/metrics")).await;
    let text = metrics.text().await;
    assert!(
        text.lines()
            .any(|l| l == "restreamer_config_reload_failures_total 3"),
        "{text}"
    );
    let a_stopped = proxy
        .events("client-stopped")
        .iter()
        .filter(|e| e["stream"] == "/a")
        .count();
    assert_eq!(a_stopped, 0, "the /a client was disconnected");
}

/// A Kubernetes ConfigMap volume: `restreamer.json` is a symlink to
/// `..data/restreamer.json`, and `..data` a symlink to a timestamped
/// directory that an update replaces by renaming a new symlink over it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_style_symlink_swap_is_picked_up() {
    let a = TcpUpstream::start(0x10a, 1000).await;
    let b = TcpUpstream::start(0x10b, 1000).await;
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path();
    let publish = |version: &str, config: Value| {
        let data = volume.join(version);
        std::fs::create_dir(&data).unwrap();
        write_config(&data.join("restreamer.json"), config);
        let link = volume.join("..data_tmp");
        std::os::unix::fs::symlink(version, &link).unwrap();
        std::fs::rename(&link, volume.join("..data")).unwrap();
    };
    let first = json!({"reconnect": 1, "resources": [{"type": "stream", "serve": "/a", "remote": a.url()}]});
    publish("..2026_01_01_v1", first);
    std::os::unix::fs::symlink("..data/restreamer.json", volume.join("restreamer.json")).unwrap();

    let proxy = Proxy::start_on(volume.join("restreamer.json"), Path::new("."), dir);
    proxy.wait_for_event("upstream-connect", 1).await;
    let mut viewer = Client::get(&proxy.url("/a")).await;
    assert_eq!(Client::get(&proxy.url("/b")).await.status, 404);

    let volume = proxy.config_path.parent().unwrap().to_path_buf();
    let data = volume.join("..2026_01_01_v2");
    std::fs::create_dir(&data).unwrap();
    write_config(
        &data.join("restreamer.json"),
        json!({"reconnect": 1, "resources": [
            {"type": "stream", "serve": "/a", "remote": a.url()},
            {"type": "stream", "serve": "/b", "remote": b.url()}
        ]}),
    );
    std::os::unix::fs::symlink("..2026_01_01_v2", volume.join("..data_tmp")).unwrap();
    std::fs::rename(volume.join("..data_tmp"), volume.join("..data")).unwrap();

    let took = until_status(&proxy, "/b", 200).await;
    assert!(took < Duration::from_secs(2), "reload took {took:?}");
    assert_eq!(
        gaps(&decode(&viewer.read_for(Duration::from_millis(500)).await)),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_does_not_kill_the_proxy() {
    let a = TcpUpstream::start(0x10a, 1000).await;
    let b = TcpUpstream::start(0x10b, 1000).await;
    let proxy = Proxy::start(two_streams(&a, &b));
    proxy.wait_for_event("upstream-connect", 2).await;
    proxy.signal(libc::SIGHUP);
    proxy.wait_for_event("sighup", 1).await;
    assert_eq!(Client::get(&proxy.url("/a")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_can_come_from_a_separate_file() {
    let a = TcpUpstream::start(0x10a, 1000).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("users.json"),
        r#"{"viewer": {"password": "from-secret"}}"#,
    )
    .unwrap();
    let config_path = dir.path().join("restreamer.json");
    write_config(
        &config_path,
        json!({
            "reconnect": 1,
            "userfile": "users.json",
            "resources": [{"type": "stream", "serve": "/a", "remote": a.url(),
                           "authentication": {"type": "basic", "realm": "tv", "users": ["viewer"]}}]
        }),
    );
    let proxy = Proxy::start_on(config_path, Path::new("."), dir);
    proxy.wait_for_event("upstream-connect", 1).await;
    assert_eq!(Client::get(&proxy.url("/a")).await.status, 401);
    // viewer:from-secret
    let authorized = Client::send(
        "GET",
        &proxy.url("/a"),
        &[("Authorization", "Basic dmlld2VyOmZyb20tc2VjcmV0")],
    )
    .await;
    assert_eq!(authorized.status, 200);
}
