//! The built-in APIs, authentication, static resources, notifications,
//! preamble, probes, logs and shutdown, against the real binary.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BASIC_OPERATOR: &str = "Basic b3BlcmF0b3I6czNjcmV0"; // operator:s3cret
/// As the original: the bearer token is the password as written.
const BEARER_MONITOR: &str = "Bearer watching";

/// One stream at `/tv` from `upstream`, and every API.
fn api_config(upstream: &TcpUpstream) -> Value {
    json!({
        "reconnect": 1,
        "flushms": 5,
        "fullconnections": 1,
        "maxconnections": 2,
        "userlist": {"operator": {"password": "s3cret"}, "monitor": {"password": "watching"}},
        "resources": [
            {"type": "stream", "serve": "/tv", "remote": upstream.url()},
            {"type": "api", "serve": "/health", "api": "health"},
            {"type": "api", "serve": "/statistics", "api": "statistics"},
            {"type": "api", "serve": "/check/tv", "api": "check", "remote": "/tv"},
            {"type": "api", "serve": "/control/tv", "api": "control", "remote": "/tv",
             "authentication": {"type": "basic", "realm": "ctl", "users": ["operator"]}},
            {"type": "api", "serve": "/metrics", "api": "prometheus",
             "authentication": {"type": "bearer", "realm": "metrics", "user": "monitor"}}
        ]
    })
}

async fn get_json(url: &str) -> Value {
    let mut response = Client::get(url).await;
    assert_eq!(response.status, 200, "{url}");
    assert_eq!(response.header("content-type"), Some("application/json"));
    serde_json::from_str(&response.text().await).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_statistics_report_viewers_limits_and_rates() {
    let upstream = TcpUpstream::start(0x100, 2000).await;
    let proxy = Proxy::start(api_config(&upstream));
    proxy.wait_for_event("upstream-connect", 1).await;

    let health = get_json(&proxy.url("/health")).await;
    assert_eq!(
        health,
        json!({"status": "ok", "viewer": 0, "limit": 1, "max": 2, "bandwidth": 0})
    );

    let mut first = Client::get(&proxy.url("/tv")).await;
    let mut second = Client::get(&proxy.url("/tv")).await;
    let (a, b) = tokio::join!(
        first.read_for(Duration::from_millis(2500)),
        second.read_for(Duration::from_millis(2500))
    );
    assert!(!a.is_empty() && !b.is_empty());

    let health = get_json(&proxy.url("/health")).await;
    assert_eq!(health["status"], "full");
    assert_eq!(health["viewer"], 2);
    // Two clients of 2000 packets/s: about 6,000 kbit/s.
    let bandwidth = health["bandwidth"].as_u64().unwrap();
    assert!(
        (4000..8000).contains(&bandwidth),
        "bandwidth {bandwidth} kbit/s"
    );

    let statistics = get_json(&proxy.url("/statistics")).await;
    assert_eq!(
        statistics["status"], "overload",
        "2 clients at a hard limit of 2"
    );
    assert_eq!(statistics["connections"], 2);
    assert_eq!(statistics["max_connections"], 2);
    assert_eq!(statistics["full_connections"], 1);
    for key in [
        "total_packets_received",
        "total_packets_sent",
        "total_packets_dropped",
        "total_bytes_received",
        "total_bytes_sent",
        "total_bytes_dropped",
        "total_stream_time_ns",
        "packets_per_second_received",
        "packets_per_second_sent",
        "packets_per_second_dropped",
        "bytes_per_second_received",
        "bytes_per_second_sent",
        "bytes_per_second_dropped",
    ] {
        assert!(
            statistics[key].is_u64(),
            "statistics lacks {key}: {statistics}"
        );
    }
    let received = statistics["packets_per_second_received"].as_u64().unwrap();
    assert!(
        (1500..2500).contains(&received),
        "{received} packets/s received"
    );
    assert!(statistics["total_packets_sent"].as_u64().unwrap() > 5000);
    let tv = &statistics["streams"]["/tv"];
    assert_eq!(tv["connections"], 2);
    assert_eq!(tv["connected"], true);
    assert_eq!(
        tv["total_packets_received"],
        statistics["total_packets_received"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_and_control_take_a_stream_offline_and_back() {
    let upstream = TcpUpstream::start(0x100, 1000).await;
    let proxy = Proxy::start(api_config(&upstream));
    proxy.wait_for_event("upstream-connect", 1).await;

    let mut check = Client::get(&proxy.url("/check/tv")).await;
    assert_eq!((check.status, check.text().await.as_str()), (200, "200 ok"));

    // Without, or with wrong, credentials: 401 and the realm.
    let refused = Client::get(&proxy.url("/control/tv?offline")).await;
    assert_eq!(refused.status, 401);
    assert_eq!(
        refused.header("www-authenticate"),
        Some("Basic realm=\"ctl\" charset=\"UTF-8\"")
    );
    let wrong = Client::send(
        "GET",
        &proxy.url("/control/tv?offline"),
        &[("Authorization", "Basic b3BlcmF0b3I6d3Jvbmc=")],
    )
    .await;
    assert_eq!(wrong.status, 401);

    let mut viewer = Client::get(&proxy.url("/tv")).await;
    assert_eq!(viewer.status, 200);
    assert!(!viewer.read_for(Duration::from_millis(300)).await.is_empty());

    let mut offline = Client::send(
        "GET",
        &proxy.url("/control/tv?offline"),
        &[("Authorization", BASIC_OPERATOR)],
    )
    .await;
    assert_eq!(
        (offline.status, offline.text().await.as_str()),
        (202, "202 accepted")
    );
    assert!(
        viewer.ends_within(Duration::from_secs(2)).await,
        "the viewer was not disconnected"
    );
    assert_eq!(Client::get(&proxy.url("/tv")).await.status, 404);
    let mut check = Client::get(&proxy.url("/check/tv")).await;
    assert_eq!(
        (check.status, check.text().await.as_str()),
        (404, "404 not found")
    );

    let online = Client::send(
        "GET",
        &proxy.url("/control/tv?online"),
        &[("Authorization", BASIC_OPERATOR)],
    )
    .await;
    assert_eq!(online.status, 202);
    assert_eq!(Client::get(&proxy.url("/tv")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_metrics_parse_and_carry_ours_and_the_originals() {
    let upstream = TcpUpstream::start(0x100, 1000).await;
    let proxy = Proxy::start(api_config(&upstream));
    proxy.wait_for_event("upstream-connect", 1).await;
    let mut viewer = Client::get(&proxy.url("/tv")).await;
    viewer.read_for(Duration::from_millis(500)).await;

    assert_eq!(
        Client::get(&proxy.url("/metrics")).await.status,
        401,
        "bearer auth is enforced"
    );
    let mut response = Client::send(
        "GET",
        &proxy.url("/metrics"),
        &[("Authorization", BEARER_MONITOR)],
    )
    .await;
    assert_eq!(response.status, 200);
    assert!(response
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = response.text().await;
    let samples = parse_prometheus(&text);

    let value = |name: &str| {
        samples
            .iter()
            .find(|(sample, _)| sample == name)
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
            .1
    };
    assert_eq!(value("restreamer_connections"), 1.0);
    assert_eq!(value("restreamer_connection_utilization"), 1.0);
    assert_eq!(value("restreamer_full"), 1.0);
    assert_eq!(value("restreamer_connections_soft_limit"), 1.0);
    assert_eq!(value("restreamer_connections_hard_limit"), 2.0);
    assert_eq!(value("restreamer_upstream_connected{stream=\"/tv\"}"), 1.0);
    assert_eq!(value("restreamer_stream_connections{stream=\"/tv\"}"), 1.0);
    assert!(value("restreamer_packets_received_total{stream=\"/tv\"}") > 100.0);
    assert!(value("restreamer_sent_bytes_total{stream=\"/tv\"}") > 10_000.0);
    assert_eq!(
        value("restreamer_packets_dropped_total{stream=\"/tv\"}"),
        0.0
    );
    assert_eq!(value("restreamer_config_reloads_total"), 0.0);
    // At least the viewer's connection and the stream's source.
    assert!(value("restreamer_tasks") >= 2.0);
    assert!(samples
        .iter()
        .any(|(name, v)| name.starts_with("restreamer_config_info{hash=") && *v == 1.0));
    for original in [
        "streaming_packets_received",
        "streaming_bytes_received",
        "streaming_packets_sent",
        "streaming_bytes_sent",
        "streaming_packets_dropped",
        "streaming_bytes_dropped",
        "streaming_connections",
        "streaming_duration",
    ] {
        value(&format!("{original}{{stream=\"/tv\"}}"));
    }
    // As the original: a series per upstream, 1 for the connected one.
    assert_eq!(
        value(&format!(
            "streaming_source_connected{{stream=\"/tv\",url=\"{}\"}}",
            upstream.url()
        )),
        1.0
    );
}

/// Parses the Prometheus text format strictly enough to catch malformed
/// output: every line is a comment, or `name{labels} value`.
fn parse_prometheus(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|line| !line.is_empty())
        .filter(|line| {
            if line.starts_with('#') {
                assert!(
                    line.starts_with("# HELP ") || line.starts_with("# TYPE "),
                    "bad comment {line:?}"
                );
                false
            } else {
                true
            }
        })
        .map(|line| {
            let (name, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad sample {line:?}"));
            let metric = name.split('{').next().unwrap();
            assert!(
                metric
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "bad metric name {metric:?}"
            );
            (
                name.to_string(),
                value
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value {line:?}")),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_files_are_served_with_type_length_and_etag_and_cannot_escape() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "<h1>TV</h1>").unwrap();
    std::fs::write(dir.path().join("secret.txt"), "do not serve").unwrap();
    let (remote, requests) = recording_server().await;
    let proxy = Proxy::start(json!({
        "resources": [
            {"type": "static", "serve": "/index.html", "remote": format!("file://{}/index.html", dir.path().display())},
            {"type": "static", "serve": "/guide.xml", "remote": format!("http://{remote}/guide.xml"), "cache": 60}
        ]
    }));

    let mut page = Client::get(&proxy.url("/index.html")).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("text/html"));
    assert_eq!(page.header("content-length"), Some("11"));
    let etag = page.header("etag").unwrap().to_string();
    assert_eq!(page.text().await, "<h1>TV</h1>");
    let again = Client::send(
        "GET",
        &proxy.url("/index.html"),
        &[("If-None-Match", &etag)],
    )
    .await;
    assert_eq!(again.status, 304);

    for trick in [
        "/index.html/../secret.txt",
        "/secret.txt",
        "/%2e%2e/secret.txt",
        "/index.html%2f..%2fsecret.txt",
    ] {
        let mut response = Client::get(&proxy.url(trick)).await;
        // An unclean path is redirected to its clean form first, as the
        // original's ServeMux does: that one must not serve the file either.
        if response.status == 301 {
            let location = response.header("location").unwrap().to_string();
            assert!(location.starts_with('/') && !location.starts_with("//"));
            response = Client::get(&proxy.url(&location)).await;
        }
        assert_eq!(response.status, 404, "{trick}");
        assert!(!response.text().await.contains("do not serve"));
    }

    // The remote document is fetched once and then served from the cache.
    for _ in 0..3 {
        let mut guide = Client::get(&proxy.url("/guide.xml")).await;
        assert_eq!(guide.status, 200);
        assert_eq!(guide.text().await, "<tv>guide</tv>");
    }
    assert_eq!(
        requests.lock().unwrap().len(),
        1,
        "the remote was fetched more than once"
    );
}

/// An HTTP server that records each request head and answers 200 with a
/// small XML body.
async fn recording_server() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&requests);
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let recorded = Arc::clone(&recorded);
            tokio::spawn(async move {
                let mut head = Vec::new();
                loop {
                    let mut buf = [0u8; 1024];
                    let Ok(n) = socket.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                    while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                        let request: Vec<u8> = head.drain(..end + 4).collect();
                        recorded
                            .lock()
                            .unwrap()
                            .push(String::from_utf8_lossy(&request).to_string());
                        let body = "<tv>guide</tv>";
                        let response = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if socket.write_all(response.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (address, requests)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_report_limit_hit_miss_and_heartbeat() {
    let upstream = TcpUpstream::start(0x100, 500).await;
    let (receiver, requests) = recording_server().await;
    let proxy = Proxy::start(json!({
        "reconnect": 1,
        "fullconnections": 1,
        "heartbeatinterval": 1,
        "userlist": {"operator": {"password": "s3cret"}},
        "resources": [{"type": "stream", "serve": "/tv", "remote": upstream.url()}],
        "notifications": [
            {"event": "limit_hit", "type": "url", "url": format!("http://{receiver}/hit"),
             "authentication": {"type": "basic", "user": "operator"}},
            {"event": "limit_miss", "type": "url", "url": format!("http://{receiver}/miss")},
            {"event": "heartbeat", "type": "url", "url": format!("http://{receiver}/alive")}
        ]
    }));
    proxy.wait_for_event("upstream-connect", 1).await;

    let viewer = Client::get(&proxy.url("/tv")).await;
    assert_eq!(viewer.status, 200);
    wait_for_request(&requests, "GET /hit ").await;
    drop(viewer);
    wait_for_request(&requests, "GET /miss ").await;
    wait_for_request(&requests, "GET /alive ").await;

    let requests = requests.lock().unwrap();
    let hit = requests
        .iter()
        .find(|r| r.starts_with("GET /hit "))
        .unwrap();
    assert!(
        hit.to_ascii_lowercase().contains(&format!(
            "authorization: {}",
            BASIC_OPERATOR.to_ascii_lowercase()
        )),
        "limit_hit came without the operator's credentials:\n{hit}"
    );
}

async fn wait_for_request(requests: &Mutex<Vec<String>>, prefix: &str) {
    for _ in 0..500 {
        if requests
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.starts_with(prefix))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "no {prefix:?} request arrived; got {:?}",
        requests.lock().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_notification_target_does_not_hold_up_clients() {
    let upstream = TcpUpstream::start(0x100, 500).await;
    // Accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_address = silent.local_addr().unwrap();
    let _hold = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            sockets.push(socket);
        }
    });
    let proxy = Proxy::start(json!({
        "reconnect": 1,
        "fullconnections": 1,
        "resources": [{"type": "stream", "serve": "/tv", "remote": upstream.url()}],
        "notifications": [
            {"event": "limit_hit", "type": "url", "url": format!("http://{silent_address}/hit")},
            {"event": "limit_miss", "type": "url", "url": format!("http://{silent_address}/miss")}
        ]
    }));
    proxy.wait_for_event("upstream-connect", 1).await;
    for _ in 0..20 {
        let mut viewer =
            tokio::time::timeout(Duration::from_secs(2), Client::get(&proxy.url("/tv")))
                .await
                .expect("a client was held up");
        assert_eq!(viewer.status, 200);
        assert!(!viewer.read_for(Duration::from_millis(50)).await.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_preamble_comes_first() {
    let upstream = TcpUpstream::start(0x100, 1000).await;
    let dir = tempfile::tempdir().unwrap();
    let preamble_path = dir.path().join("preamble.ts");
    let preamble = PacketSource::new(0x1ff).packets(3);
    std::fs::write(&preamble_path, &preamble).unwrap();
    let mut config = stream_config(&[upstream.url()]);
    config["resources"][0]["preamble"] = preamble_path.display().to_string().into();
    let proxy = Proxy::start(config);
    proxy.wait_for_event("upstream-connect", 1).await;

    let mut viewer = Client::get(&proxy.url("/stream")).await;
    let body = viewer.read_for(Duration::from_millis(500)).await;
    assert_eq!(&body[..preamble.len()], &preamble[..]);
    assert!(decode(&body[preamble.len()..])
        .iter()
        .all(|p| p.pid == 0x100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_on_the_main_port_or_the_admin_port() {
    let upstream = TcpUpstream::start(0x100, 500).await;
    let mut config = stream_config(&[upstream.url()]);
    config["maxconnections"] = json!(1);
    let proxy = Proxy::start(config);
    proxy.wait_for_event("upstream-connect", 1).await;
    assert_eq!(Client::get(&proxy.url("/healthz")).await.status, 200);
    assert_eq!(Client::get(&proxy.url("/readyz")).await.status, 200);
    let viewer = Client::get(&proxy.url("/stream")).await;
    assert_eq!(viewer.status, 200);
    let mut full = Client::get(&proxy.url("/readyz")).await;
    assert_eq!(
        full.status, 503,
        "a pod at its hard limit must not be ready"
    );
    assert!(full.text().await.contains("hard connection limit"));
    assert_eq!(
        Client::get(&proxy.url("/healthz")).await.status,
        200,
        "but it is alive"
    );
    drop(viewer);

    // With adminlisten, the probes and metrics move there.
    let admin_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = stream_config(&[upstream.url()]);
    config["adminlisten"] = format!("127.0.0.1:{admin_port}").into();
    let proxy = Proxy::start(config);
    let admin = |path: &str| format!("http://127.0.0.1:{admin_port}{path}");
    assert_eq!(Client::get(&admin("/readyz")).await.status, 200);
    assert_eq!(Client::get(&admin("/metrics")).await.status, 200);
    assert_eq!(Client::get(&admin("/stream")).await.status, 404);
    assert_eq!(Client::get(&proxy.url("/readyz")).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_clients_then_exits_cleanly() {
    let upstream = TcpUpstream::start(0x100, 1000).await;
    let admin_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = stream_config(&[upstream.url()]);
    config["draintime"] = json!(2);
    config["adminlisten"] = format!("127.0.0.1:{admin_port}").into();
    let mut proxy = Proxy::start(config);
    proxy.wait_for_event("upstream-connect", 1).await;
    let mut viewer = Client::get(&proxy.url("/stream")).await;
    assert_eq!(viewer.status, 200);

    proxy.signal(libc::SIGTERM);
    proxy.wait_for_event("draining", 1).await;
    let readyz = Client::get(&format!("http://127.0.0.1:{admin_port}/readyz")).await;
    assert_eq!(readyz.status, 503, "not ready while draining");
    assert_eq!(
        Client::get(&proxy.url("/stream")).await.status,
        404,
        "no new clients while draining"
    );
    let during = viewer.read_for(Duration::from_millis(1000)).await;
    assert!(
        during.len() > 100 * PACKET,
        "the existing client was not served during the drain"
    );
    assert!(
        viewer.ends_within(Duration::from_secs(3)).await,
        "the client was not closed after the drain"
    );
    let status = proxy.terminate();
    assert!(status.success(), "exit status {status}");
}
