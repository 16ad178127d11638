//! Logs: with `log` set every line goes to that file (as the original),
//! SIGUSR1 reopens it, and a log output that does not keep up (a pipe
//! nobody reads) never slows streaming or the APIs: lines are dropped,
//! counted, and reported once when the output flows again.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The proxy started with its standard output as given, on a fixed port
/// (its address cannot be read from a log it does not write to stdout).
struct Started {
    child: Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Started {
    async fn new(mut config: Value, stdout: Stdio) -> Started {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = format!("127.0.0.1:{port}");
        config["listen"] = address.clone().into();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("restreamer.json");
        std::fs::write(&path, config.to_string()).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_restreamer"))
            .arg(&path)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("RUST_LOG", "info")
            .stdout(stdout)
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(&address).await.is_err() {
            assert!(Instant::now() < deadline, "the proxy does not listen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Started {
            child,
            address,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    fn stdout(&mut self) -> ChildStdout {
        self.child.stdout.take().unwrap()
    }
}

fn events_in(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).expect("every line is JSON"))
        .collect()
}

async fn wait_for_event_in(path: &Path, event: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let events = events_in(path);
        if events.iter().any(|e| e["event"] == event) {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "no {event} in {}:\n{events:#?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn api_config(upstream: &TcpUpstream) -> Value {
    json!({
        "userlist": {"operator": {"password": "s3cret"}, "monitor": {"password": "watching"}},
        "resources": [
            {"type": "stream", "serve": "/tv", "remote": upstream.url()},
            {"type": "api", "api": "health", "serve": "/health"},
            {"type": "api", "api": "control", "serve": "/control/tv", "remote": "/tv",
             "authentication": {"type": "basic", "realm": "ctl", "users": ["operator"]}},
            {"type": "api", "api": "statistics", "serve": "/statistics",
             "authentication": {"type": "bearer", "user": "monitor"}}
        ]
    })
}

/// As the original: with `log` set, every log line goes to that file, none
/// to standard output; SIGUSR1 reopens the file after a rotation; no
/// credential reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_file_gets_client_events_and_no_credentials() {
    let upstream = TcpUpstream::start(0x100, 500).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("restreamer.log");
    let mut config = api_config(&upstream);
    config["log"] = log.display().to_string().into();
    let mut proxy = Started::new(config, Stdio::piped()).await;
    let stdout = proxy.stdout();

    let events = wait_for_event_in(&log, "upstream-connect").await;
    for event in ["listening", "config-applied"] {
        assert!(
            events.iter().any(|e| e["event"] == event),
            "{event} is not in the log file"
        );
    }
    let viewer = Client::get(&proxy.url("/tv")).await;
    assert_eq!(viewer.status, 200);
    drop(viewer);
    let _ = Client::send(
        "GET",
        &proxy.url("/control/tv?offline"),
        &[("Authorization", "Basic b3BlcmF0b3I6czNjcmV0")],
    )
    .await;
    let _ = Client::send(
        "GET",
        &proxy.url("/statistics"),
        &[("Authorization", "Bearer watching")],
    )
    .await;
    let events = wait_for_event_in(&log, "client-stopped").await;
    assert!(events
        .iter()
        .any(|e| e["event"] == "client-streaming" && e["stream"] == "/tv"));
    wait_for_event_in(&log, "stream-offline").await;

    // Rotation: move the file away, SIGUSR1, and the next lines go to a
    // new file at the configured path.
    let rotated = dir.path().join("restreamer.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    // SAFETY: kill(2) on our own child's pid has no memory effects.
    unsafe { libc::kill(proxy.child.id() as i32, libc::SIGUSR1) };
    wait_for_event_in(&log, "log-reopened").await;
    let _ = Client::send(
        "GET",
        &proxy.url("/control/tv?online"),
        &[("Authorization", "Basic b3BlcmF0b3I6czNjcmV0")],
    )
    .await;
    let viewer = Client::get(&proxy.url("/tv")).await;
    drop(viewer);
    wait_for_event_in(&log, "client-streaming").await;

    // Nothing on standard output, and no credential anywhere.
    let _ = proxy.child.kill();
    let _ = proxy.child.wait();
    let printed: Vec<String> = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .collect();
    assert!(
        printed.is_empty(),
        "lines went to standard output: {printed:?}"
    );
    let everything =
        std::fs::read_to_string(&rotated).unwrap() + &std::fs::read_to_string(&log).unwrap();
    for secret in ["s3cret", "watching", "b3BlcmF0b3I6czNjcmV0"] {
        assert!(
            !everything.contains(secret),
            "a credential reached the logs"
        );
    }
}

/// Standard output is a pipe nobody reads: once it is full, writing a log
/// line would block. The proxy must go on: health answers at once, a
/// viewer gets the full rate, lost lines are counted, and once the pipe is
/// read again one line says how many were lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_log_output_blocks_nothing() {
    const RATE: usize = 2000; // packets per second, about 3 Mbit/s
    let upstream = TcpUpstream::start(0x100, RATE).await;
    let mut proxy = Started::new(api_config(&upstream), Stdio::piped()).await;
    let stdout = proxy.stdout(); // held, never read (yet)
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Clients coming and going, two log lines each: far more than the pipe
    // (64 KiB) and the proxy's log queue hold.
    let spam: Vec<_> = (0..4)
        .map(|_| {
            let address = proxy.address.clone();
            tokio::spawn(async move {
                loop {
                    let visit = async {
                        let mut socket = tokio::net::TcpStream::connect(&address).await?;
                        socket
                            .write_all(b"GET /tv HTTP/1.1\r\nHost: x\r\n\r\n")
                            .await?;
                        let mut head = [0u8; 512];
                        socket.read(&mut head).await
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(2), visit).await;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        })
        .collect();

    // A few seconds of it fill the pipe and the proxy's queue.
    tokio::time::sleep(Duration::from_secs(4)).await;

    for _ in 0..5 {
        let started = Instant::now();
        let health =
            tokio::time::timeout(Duration::from_secs(2), Client::get(&proxy.url("/health")))
                .await
                .expect("health did not answer within 2 s while the log is blocked");
        assert_eq!(health.status, 200);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "health took {:?}",
            started.elapsed()
        );
    }
    let mut viewer = tokio::time::timeout(Duration::from_secs(2), Client::get(&proxy.url("/tv")))
        .await
        .expect("a viewer was not answered while the log is blocked");
    assert_eq!(viewer.status, 200);
    let received = viewer.read_for(Duration::from_secs(3)).await.len() / PACKET;
    assert!(
        received >= RATE * 3 * 8 / 10,
        "the viewer got {received} packets in 3 s of {} sent",
        RATE * 3
    );
    // Lines were dropped, and counted.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = tokio::time::timeout(Duration::from_secs(2), async {
            let mut metrics = Client::get(&proxy.url("/metrics")).await;
            metrics.text().await
        })
        .await
        .expect("metrics did not answer while the log is blocked");
        let dropped = metrics
            .lines()
            .find_map(|l| l.strip_prefix("restreamer_log_lines_dropped_total "))
            .expect("no restreamer_log_lines_dropped_total")
            .parse::<f64>()
            .unwrap();
        if dropped > 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "no dropped line counted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    spam.iter().for_each(|task| task.abort());

    // Read the pipe again: one line tells what was lost.
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let report = loop {
        let line = lines_rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("no log-lines-dropped line after the output recovered");
        let event: Value = serde_json::from_str(&line).unwrap_or_default();
        if event["event"] == "log-lines-dropped" {
            break event;
        }
    };
    assert!(report["lines"].as_u64().unwrap() > 0, "{report}");
}
