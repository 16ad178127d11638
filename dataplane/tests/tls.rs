//! HTTPS (`tlslisten`): the same routes over TLS, HTTP/1.1 and HTTP/2 by
//! ALPN, with a certificate made here by a test CA; a certificate renewed
//! by a symlink swap (as a Kubernetes Secret is updated) taken up by new
//! connections while a viewer keeps streaming; a broken renewal refused;
//! a client that never finishes its handshake cut off.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A test certificate authority that issues `localhost` certificates.
struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate and its key, PEM.
struct Issued {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl TestCa {
    fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa { cert, key }
    }

    fn issue(&self) -> Issued {
        let params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    fn connector(&self, alpn: &[&[u8]]) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsConnector::from(Arc::new(config))
    }
}

/// A directory laid out as kubelet lays out a mounted Secret:
/// `tls.crt` → `..data/tls.crt`, `..data` → `..<version>/`; an update
/// writes a new version directory and swaps the `..data` symlink.
struct SecretVolume {
    dir: PathBuf,
    version: usize,
}

impl SecretVolume {
    fn new(dir: &Path, cert_pem: &str, key_pem: &str) -> SecretVolume {
        std::fs::create_dir_all(dir).unwrap();
        let mut volume = SecretVolume {
            dir: dir.to_path_buf(),
            version: 0,
        };
        volume.update(cert_pem, key_pem);
        for file in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{file}"), dir.join(file)).unwrap();
        }
        volume
    }

    fn update(&mut self, cert_pem: &str, key_pem: &str) {
        self.version += 1;
        let version = format!("..2026_{}", self.version);
        std::fs::create_dir(self.dir.join(&version)).unwrap();
        std::fs::write(self.dir.join(&version).join("tls.crt"), cert_pem).unwrap();
        std::fs::write(self.dir.join(&version).join("tls.key"), key_pem).unwrap();
        let staged = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&version, &staged).unwrap();
        std::fs::rename(&staged, self.dir.join("..data")).unwrap();
    }
}

/// A proxy serving `/stream` from `upstream` on both `listen` and
/// `tlslisten`, its certificate in a Secret-like volume.
struct Setup {
    proxy: Proxy,
    tls_address: String,
    volume: SecretVolume,
}

fn start(upstream: &TcpUpstream, first: &Issued, extra: serde_json::Value) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let volume = SecretVolume::new(&dir.path().join("tls"), &first.cert_pem, &first.key_pem);
    let mut config = json!({
        "reconnect": 1,
        "headertimeout": 2,
        "tlslisten": "127.0.0.1:0",
        "tlscert": "tls/tls.crt",
        "tlskey": "tls/tls.key",
        "resources": [
            {"type": "stream", "serve": "/stream", "remote": upstream.url()},
            {"type": "api", "serve": "/health", "api": "health"}
        ]
    });
    for (key, value) in extra.as_object().unwrap() {
        config[key] = value.clone();
    }
    let path = dir.path().join("restreamer.json");
    write_config(&path, config);
    let proxy = Proxy::start_on(path, Path::new(env!("CARGO_MANIFEST_DIR")), dir);
    let tls_address = tls_address(&proxy);
    Setup {
        proxy,
        tls_address,
        volume,
    }
}

fn tls_address(proxy: &Proxy) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(event) = proxy
            .events("listening")
            .into_iter()
            .find(|event| event["role"] == "tls")
        {
            return event["address"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "no tls listening event");
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn tls_connect(address: &str, connector: &TlsConnector) -> TlsStream<TcpStream> {
    let socket = TcpStream::connect(address).await.unwrap();
    connector
        .connect(ServerName::try_from("localhost").unwrap(), socket)
        .await
        .expect("TLS handshake with the proxy")
}

/// The certificate the server presented on `stream`.
fn presented(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// A GET on an established TLS connection, by HTTP/2 if ALPN chose it,
/// else HTTP/1.1.
async fn get(stream: TlsStream<TcpStream>, path: &str) -> hyper::Response<Incoming> {
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(stream);
    let request = hyper::Request::get(format!("https://localhost{path}"))
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    if h2 {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
        tokio::spawn(connection);
        sender.send_request(request).await.unwrap()
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(connection);
        let (mut parts, body) = request.into_parts();
        parts.uri = path.parse().unwrap();
        sender
            .send_request(hyper::Request::from_parts(parts, body))
            .await
            .unwrap()
    }
}

/// Body bytes received within `duration`.
async fn read_for(body: &mut Incoming, duration: Duration) -> Vec<u8> {
    let mut data = Vec::new();
    let deadline = tokio::time::Instant::now() + duration;
    while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, body.frame()).await {
        if let Ok(chunk) = frame.into_data() {
            data.extend_from_slice(&chunk);
        }
    }
    data
}

fn whole_packets(mut data: Vec<u8>) -> Vec<Received> {
    data.truncate(data.len() / PACKET * PACKET);
    decode(&data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_the_same_routes_over_http1_and_http2() {
    let upstream = TcpUpstream::start(0x100, 1000).await;
    let ca = TestCa::new();
    let issued = ca.issue();
    let setup = start(&upstream, &issued, json!({}));
    setup.proxy.wait_for_event("upstream-connect", 1).await;

    for (alpn, version) in [
        (&b"http/1.1"[..], hyper::Version::HTTP_11),
        (&b"h2"[..], hyper::Version::HTTP_2),
    ] {
        let stream = tls_connect(&setup.tls_address, &ca.connector(&[alpn])).await;
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(alpn));
        assert_eq!(presented(&stream), issued.der);
        let mut response = get(stream, "/stream").await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), version);
        assert_eq!(response.headers()["content-type"], "video/mpeg");
        let received =
            whole_packets(read_for(response.body_mut(), Duration::from_millis(500)).await);
        assert!(
            received.len() > 50,
            "{version:?}: {} packets",
            received.len()
        );
        assert!(received.iter().all(|packet| packet.pid == 0x100));

        let stream = tls_connect(&setup.tls_address, &ca.connector(&[alpn])).await;
        let response = get(stream, "/health").await;
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&body).contains("\"status\""));
        let stream = tls_connect(&setup.tls_address, &ca.connector(&[alpn])).await;
        assert_eq!(get(stream, "/nothing").await.status(), 404);
    }

    // The plain listener serves the same, beside it.
    let mut plain = Client::get(&setup.proxy.url("/stream")).await;
    assert_eq!(plain.status, 200);
    assert!(!plain.read_for(Duration::from_millis(300)).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_taken_up_by_new_connections_while_viewers_keep_streaming() {
    let upstream = TcpUpstream::start(0x100, 1000).await;
    let ca = TestCa::new();
    let first = ca.issue();
    let mut setup = start(&upstream, &first, json!({}));
    setup.proxy.wait_for_event("upstream-connect", 1).await;
    // A connector per connection: a resumed session would show the
    // certificate of the session it resumes.
    let connector = || ca.connector(&[b"http/1.1"]);

    let stream = tls_connect(&setup.tls_address, &connector()).await;
    assert_eq!(presented(&stream), first.der);
    let mut viewer = get(stream, "/stream").await;
    assert_eq!(viewer.status(), 200);
    let before = whole_packets(read_for(viewer.body_mut(), Duration::from_millis(300)).await);
    assert!(!before.is_empty());

    let second = ca.issue();
    setup.volume.update(&second.cert_pem, &second.key_pem);
    setup.proxy.wait_for_event("tls-reload", 1).await;

    let fresh = tls_connect(&setup.tls_address, &connector()).await;
    assert_eq!(
        presented(&fresh),
        second.der,
        "a new connection gets the new certificate"
    );
    assert_eq!(get(fresh, "/stream").await.status(), 200);
    let mut after = read_for(viewer.body_mut(), Duration::from_millis(500)).await;
    after.truncate(after.len() / PACKET * PACKET);
    assert!(
        after.len() > 50 * PACKET,
        "the viewer connected before the renewal keeps streaming: {} bytes",
        after.len()
    );

    // A broken renewal: a key that is not the certificate's, then garbage.
    let third = ca.issue();
    setup.volume.update(&third.cert_pem, &first.key_pem);
    setup.proxy.wait_for_event("tls-reload-failed", 1).await;
    let failure = &setup.proxy.events("tls-reload-failed")[0];
    let message = failure["error"].as_str().unwrap();
    assert!(
        message.contains("not the key of the certificate"),
        "{message}"
    );
    let stream = tls_connect(&setup.tls_address, &connector()).await;
    assert_eq!(
        presented(&stream),
        second.der,
        "the previous certificate keeps serving"
    );

    setup.volume.update("not a certificate", "not a key");
    setup.proxy.wait_for_event("tls-reload-failed", 2).await;
    let stream = tls_connect(&setup.tls_address, &connector()).await;
    assert_eq!(presented(&stream), second.der);
    assert_eq!(get(stream, "/stream").await.status(), 200);
    assert_eq!(setup.proxy.events("tls-reload").len(), 1);
    // And the first viewer is still there.
    assert!(!read_for(viewer.body_mut(), Duration::from_millis(200))
        .await
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_the_handshake_is_closed_at_the_header_timeout() {
    let upstream = TcpUpstream::start(0x100, 1000).await;
    let ca = TestCa::new();
    let setup = start(&upstream, &ca.issue(), json!({"headertimeout": 1}));

    let started = Instant::now();
    let mut silent = TcpStream::connect(&setup.tls_address).await.unwrap();
    let mut buffer = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buffer)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "a client that never starts its handshake is closed"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
        "closed after {waited:?}"
    );

    // Half a ClientHello, then nothing.
    let mut stalled = TcpStream::connect(&setup.tls_address).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stalled, &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), stalled.read(&mut buffer)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))));

    // Others are served meanwhile and after.
    let stream = tls_connect(&setup.tls_address, &ca.connector(&[b"h2"])).await;
    assert_eq!(get(stream, "/health").await.status(), 200);
}

/// `tlslisten` alone: no plain listener at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_alone_serves_without_a_plain_listener() {
    let upstream = TcpUpstream::start(0x100, 1000).await;
    let ca = TestCa::new();
    let issued = ca.issue();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cert.pem"), &issued.cert_pem).unwrap();
    std::fs::write(dir.path().join("key.pem"), &issued.key_pem).unwrap();
    let path = dir.path().join("restreamer.json");
    std::fs::write(
        &path,
        json!({
            "listen": "",
            "contenttimeout": 0,
            "tlslisten": "127.0.0.1:0",
            "tlscert": "cert.pem",
            "tlskey": "key.pem",
            "resources": [{"type": "stream", "serve": "/stream", "remote": upstream.url()}]
        })
        .to_string(),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_restreamer"))
        .arg(&path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in stdout.lines().map_while(Result::ok) {
            let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if event["event"] == "listening" {
                let _ = tx.send((event["role"].clone(), event["address"].clone()));
            }
        }
    });
    let (role, address) = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(role, "tls");
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "only the TLS listener"
    );
    let address = address.as_str().unwrap().to_string();
    let mut status = 0;
    for _ in 0..100 {
        let stream = tls_connect(&address, &ca.connector(&[b"h2"])).await;
        status = get(stream, "/stream").await.status().as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn check_reads_the_certificate_and_names_a_bad_pair() {
    let ca = TestCa::new();
    let first = ca.issue();
    let second = ca.issue();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cert.pem"), &first.cert_pem).unwrap();
    std::fs::write(dir.path().join("key.pem"), &first.key_pem).unwrap();
    std::fs::write(dir.path().join("other.pem"), &second.key_pem).unwrap();
    let check = |cert: &str, key: &str| {
        let path = dir.path().join("restreamer.json");
        std::fs::write(
            &path,
            json!({"listen": ":8000", "tlslisten": ":8443", "tlscert": cert, "tlskey": key})
                .to_string(),
        )
        .unwrap();
        // From another directory: the files are relative to the config.
        let output = Command::new(env!("CARGO_BIN_EXE_restreamer"))
            .arg("--check")
            .arg(&path)
            .current_dir("/")
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    };
    assert_eq!(check("cert.pem", "key.pem"), (true, String::new()));
    let (ok, message) = check("cert.pem", "other.pem");
    assert!(!ok);
    assert!(
        message.contains("tlskey")
            && message.contains("other.pem")
            && message.contains("not the key of the certificate"),
        "{message}"
    );
    let (ok, message) = check("missing.pem", "key.pem");
    assert!(
        !ok && message.contains("tlscert") && message.contains("missing.pem"),
        "{message}"
    );
    let (ok, message) = check("key.pem", "key.pem");
    assert!(!ok && message.contains("no PEM certificate"), "{message}");
}
