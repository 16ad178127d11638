//! Signed URLs (authentication `"type": "token"`): a link signed as the
//! README documents is let in until it expires; every part of it is
//! signed, so a changed path, expiry, address or signature, another
//! user's key, or no token at all get `401`; `restreamer sign` prints links
//! that work; the token never reaches what answers the request nor an
//! upstream.

mod common;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The README's computation, written out independently of the proxy's code.
fn sign(key: &str, path: &str, expires: u64, client: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(format!("{path}\n{expires}\n{client}").as_bytes());
    let signature: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if client.is_empty() {
        format!("expires={expires}&signature={signature}")
    } else {
        format!("expires={expires}&client={client}&signature={signature}")
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An HTTP upstream that records every request head it gets: a TS stream
/// at `/live`, a small document at `/doc`.
struct RecordingUpstream {
    address: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl RecordingUpstream {
    async fn start() -> RecordingUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if socket.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).to_string();
                    seen.lock().unwrap().push(head.clone());
                    if head.starts_with("GET /doc ") {
                        let _ = socket
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\ndoc")
                            .await;
                    } else {
                        let _ = socket
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\n\r\n")
                            .await;
                        produce(socket, 0x100, 1000).await;
                    }
                });
            }
        });
        RecordingUpstream { address, requests }
    }
}

fn config(upstream: &RecordingUpstream) -> serde_json::Value {
    let token = json!({"type": "token", "realm": "tv", "users": ["portal"]});
    json!({
        "reconnect": 1,
        "userlist": {"portal": {"password": "s3cret key"}, "reseller": {"password": "other"}},
        "resources": [
            {"type": "stream", "serve": "/stream", "remote": format!("http://{}/live", upstream.address),
             "authentication": token},
            {"type": "stream", "serve": "/other", "remote": format!("http://{}/live", upstream.address),
             "authentication": token},
            {"type": "static", "serve": "/doc", "remote": format!("http://{}/doc", upstream.address),
             "authentication": token},
            {"type": "api", "serve": "/control", "api": "control", "remote": "/stream",
             "authentication": token}
        ]
    })
}

async fn status(url: &str) -> u16 {
    Client::get(url).await.status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_url_is_accepted_and_every_tampered_part_refused() {
    let upstream = RecordingUpstream::start().await;
    let proxy = Proxy::start(config(&upstream));
    proxy.wait_for_event("upstream-connect", 2).await;
    let key = "s3cret key";
    let expires = now() + 60;
    let good = sign(key, "/stream", expires, "");

    let mut viewer = Client::get(&proxy.url(&format!("/stream?{good}"))).await;
    assert_eq!(viewer.status, 200);
    assert!(!decode(&viewer.read_for(Duration::from_millis(300)).await).is_empty());
    // Players add their own parameters: those are not signed, and allowed.
    assert_eq!(
        status(&proxy.url(&format!("/stream?{good}&session=7"))).await,
        200
    );
    let bound = sign(key, "/stream", expires, "127.0.0.1");
    assert_eq!(status(&proxy.url(&format!("/stream?{bound}"))).await, 200);

    let signature = good.rsplit_once('=').unwrap().1.to_string();
    let flipped = format!(
        "{}{}",
        &signature[..63],
        if signature.ends_with('0') { '1' } else { '0' }
    );
    let refused = [
        ("no token", "/stream".to_string()),
        (
            "signed for another path",
            format!("/stream?{}", sign(key, "/other", expires, "")),
        ),
        ("another path", format!("/other?{good}")),
        (
            "expiry changed",
            format!(
                "/stream?{}",
                good.replace(&expires.to_string(), &(expires + 3600).to_string())
            ),
        ),
        (
            "signature changed",
            format!("/stream?{}", good.replace(&signature, &flipped)),
        ),
        (
            "signature cut",
            format!("/stream?{}", &good[..good.len() - 2]),
        ),
        (
            "address added",
            format!(
                "/stream?{}",
                good.replace("&signature", "&client=127.0.0.1&signature")
            ),
        ),
        (
            "address removed",
            format!("/stream?{}", bound.replace("&client=127.0.0.1", "")),
        ),
        (
            "address changed",
            format!("/stream?{}", bound.replace("127.0.0.1", "127.0.0.2")),
        ),
        (
            "for another address",
            format!("/stream?{}", sign(key, "/stream", expires, "192.0.2.1")),
        ),
        (
            "expired",
            format!("/stream?{}", sign(key, "/stream", now() - 1, "")),
        ),
        (
            "another user's key",
            format!("/stream?{}", sign("other", "/stream", expires, "")),
        ),
        (
            "a made-up key",
            format!("/stream?{}", sign("guess", "/stream", expires, "")),
        ),
        (
            "twice",
            format!("/stream?{good}&expires={}", expires + 3600),
        ),
    ];
    for (what, path) in &refused {
        let client = Client::get(&proxy.url(path)).await;
        assert_eq!(client.status, 401, "{what}: {path}");
        assert!(client.header("www-authenticate").is_some(), "{what}");
    }
    proxy.settle().await;
    let logged = proxy.events("client-unauthorized");
    assert_eq!(logged.len(), refused.len());
    assert!(logged.iter().any(|e| e["reason"] == "expired token"));
    assert!(logged
        .iter()
        .any(|e| e["reason"] == "token signed for another client address"));
    // The viewer let in is still streaming.
    assert!(!viewer.read_for(Duration::from_millis(200)).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restreamer_sign_prints_urls_that_are_let_in() {
    let upstream = RecordingUpstream::start().await;
    let proxy = Proxy::start(config(&upstream));
    proxy.wait_for_event("upstream-connect", 2).await;
    let signed = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_restreamer"))
            .arg("sign")
            .arg("--config")
            .arg(&proxy.config_path)
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let line = String::from_utf8(output.stdout).unwrap();
        assert_eq!(line.lines().count(), 1);
        line.trim().to_string()
    };
    let url = signed(&["--user", "portal", "--ttl", "60", "/stream"]);
    assert!(url.starts_with("/stream?expires="), "{url}");
    assert_eq!(status(&proxy.url(&url)).await, 200);
    let url = signed(&[
        "--user",
        "portal",
        "--ttl",
        "60",
        "--client",
        "127.0.0.1",
        "/doc",
    ]);
    let mut doc = Client::get(&proxy.url(&url)).await;
    assert_eq!(doc.status, 200);
    assert_eq!(doc.text().await, "doc");
    // Signed with a key the resource does not take.
    let url = signed(&["--user", "reseller", "--ttl", "60", "/stream"]);
    assert_eq!(status(&proxy.url(&url)).await, 401);
    let url = signed(&["--user", "portal", "--ttl", "0", "/stream"]);
    assert_eq!(
        status(&proxy.url(&url)).await,
        401,
        "a link with no time left"
    );

    let unknown = Command::new(env!("CARGO_BIN_EXE_restreamer"))
        .args(["sign", "--config"])
        .arg(&proxy.config_path)
        .args(["--user", "nobody", "--ttl", "60", "/stream"])
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("\"nobody\" is not in the userlist"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restreamer_sign_escapes_what_a_url_path_cannot_carry() {
    // A backslash (browsers make it a slash), a pipe, a caret and a space.
    let path = "/tv\\hd|1^ x";
    let upstream = RecordingUpstream::start().await;
    let proxy = Proxy::start(json!({
        "reconnect": 1,
        "userlist": {"portal": {"password": "s3cret key"}},
        "resources": [
            {"type": "stream", "serve": path, "remote": format!("http://{}/live", upstream.address),
             "authentication": {"type": "token", "realm": "tv", "users": ["portal"]}}
        ]
    }));
    proxy.wait_for_event("upstream-connect", 1).await;
    let output = Command::new(env!("CARGO_BIN_EXE_restreamer"))
        .args(["sign", "--config"])
        .arg(&proxy.config_path)
        .args(["--user", "portal", "--ttl", "60", path])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let url = String::from_utf8(output.stdout).unwrap().trim().to_string();
    assert!(url.starts_with("/tv%5Chd%7C1%5E%20x?expires="), "{url}");
    assert_eq!(status(&proxy.url(&url)).await, 200, "{url}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_reaches_neither_what_answers_nor_an_upstream() {
    let upstream = RecordingUpstream::start().await;
    let proxy = Proxy::start(config(&upstream));
    proxy.wait_for_event("upstream-connect", 2).await;
    let key = "s3cret key";
    let expires = now() + 60;

    // The control API reads its query: it sees `offline`, not the token.
    let control = sign(key, "/control", expires, "");
    let mut answer = Client::get(&proxy.url(&format!("/control?offline&{control}"))).await;
    let code = answer.status;
    assert_eq!(code, 202, "{}", answer.text().await);
    assert_eq!(
        status(&proxy.url(&format!("/stream?{}", sign(key, "/stream", expires, "")))).await,
        404
    );
    assert_eq!(
        status(&proxy.url(&format!("/control?{control}&online"))).await,
        202
    );

    let mut doc =
        Client::get(&proxy.url(&format!("/doc?{}", sign(key, "/doc", expires, "")))).await;
    assert_eq!(doc.status, 200);
    assert_eq!(doc.text().await, "doc");
    let requests = upstream.requests.lock().unwrap().clone();
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("GET /doc HTTP/1.1\r\n")),
        "{requests:?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("GET /live HTTP/1.1\r\n")),
        "{requests:?}"
    );
    for request in &requests {
        assert!(
            !request.contains("signature") && !request.contains("expires"),
            "the token reached the upstream: {request}"
        );
    }
}
