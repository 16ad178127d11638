//! Helpers for end-to-end tests: the real `restreamer` binary, real
//! upstreams on real sockets, and real HTTP clients.

#![allow(dead_code)] // each test binary uses its own share of these

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

pub const PACKET: usize = 188;

/// The proxy binary, running on a config, listening on a free port.
pub struct Proxy {
    child: Child,
    pub address: String,
    /// The config file the proxy runs on.
    pub config_path: PathBuf,
    logs: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Proxy {
    /// Starts the proxy on `config` (its `listen` is set to a free port)
    /// in the working directory `cwd`, and waits until it listens.
    pub fn start_in(config: serde_json::Value, cwd: &Path) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("restreamer.json");
        write_config(&path, config);
        Self::start_on(path, cwd, dir)
    }

    /// Starts the proxy on an existing config file; `dir` is kept until the
    /// proxy is dropped.
    pub fn start_on(path: PathBuf, cwd: &Path, dir: tempfile::TempDir) -> Proxy {
        let mut child = Command::new(env!("CARGO_BIN_EXE_restreamer"))
            .arg(&path)
            .current_dir(cwd)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start restreamer");
        let stdout = child.stdout.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (address_tx, address_rx) = mpsc::channel();
        let lines = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) {
                    if event["event"] == "listening" && event["role"] == "main" {
                        let _ = address_tx.send(event["address"].as_str().unwrap().to_string());
                    }
                }
                lines.lock().unwrap().push(line);
            }
        });
        let address = address_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("restreamer did not report a listening address");
        Proxy {
            child,
            address,
            config_path: path,
            logs,
            _dir: dir,
        }
    }

    /// Replaces the config file (atomically, as an editor or kubectl would).
    pub fn rewrite(&self, config: serde_json::Value) {
        let temporary = self.config_path.with_extension("new");
        write_config(&temporary, config);
        std::fs::rename(&temporary, &self.config_path).unwrap();
    }

    /// All log lines so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        unsafe { libc::kill(self.pid(), signal) };
    }

    pub fn start(config: serde_json::Value) -> Proxy {
        Self::start_in(config, Path::new(env!("CARGO_MANIFEST_DIR")))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.address, path)
    }

    /// Log lines (JSON) whose `event` is `event`.
    pub fn events(&self, event: &str) -> Vec<serde_json::Value> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|line| line["event"] == event)
            .collect()
    }

    /// Waits until the log has been quiet for 100 ms (at most 3 s): log
    /// lines are written by the proxy's own writer thread, a moment after
    /// the answers they are about.
    pub async fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut seen = self.logs.lock().unwrap().len();
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = self.logs.lock().unwrap().len();
            if now == seen {
                return;
            }
            seen = now;
        }
    }

    /// Waits until an `event` has been logged `count` times.
    pub async fn wait_for_event(&self, event: &str, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.events(event).len() < count {
            assert!(Instant::now() < deadline, "no {event} event logged in time");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Proxy {
    /// A client of `path` that never reads, with a small receive buffer
    /// (`recv_buffer` bytes) so that the proxy sees it stall soon.
    pub async fn stalled_client(&self, path: &str, recv_buffer: u32) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(recv_buffer).unwrap();
        let stream = socket.connect(self.address.parse().unwrap()).await.unwrap();
        let client = Client::request_on(stream, "GET", &self.url(path)).await;
        assert_eq!(client.status, 200, "{path}");
        client
    }

    /// A value of the Prometheus metrics served at `/metrics`, summed over
    /// its series.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = Client::get(&self.url("/metrics")).await.text().await;
        text.lines()
            .filter(|line| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Stops the proxy with SIGTERM and waits for it to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the proxy did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a config for a test proxy: listening on a free loopback port.
pub fn write_config(path: &Path, mut config: serde_json::Value) {
    config["listen"] = "127.0.0.1:0".into();
    // The synthetic test packets carry no PAT or PMT, which content
    // failover would take for a broken upstream; tests of stream health
    // set it themselves.
    if config.get("contenttimeout").is_none() {
        config["contenttimeout"] = 0.into();
    }
    std::fs::write(path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
}

/// The workspace root (where `examples/` is).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A config with one stream at `/stream` from `remotes`.
pub fn stream_config(remotes: &[String]) -> serde_json::Value {
    serde_json::json!({
        "reconnect": 1,
        "timeout": 2,
        "flushms": 5,
        "resources": [{"type": "stream", "serve": "/stream", "remotes": remotes}]
    })
}

/// Test packets: PID `pid`, continuity counter, and the packet's sequence
/// number in the payload, so a receiver can tell order, loss and source.
pub struct PacketSource {
    pub pid: u16,
    pub next: u64,
}

impl PacketSource {
    pub fn new(pid: u16) -> Self {
        PacketSource { pid, next: 0 }
    }

    /// The next `count` packets, back to back.
    pub fn packets(&mut self, count: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(count * PACKET);
        for _ in 0..count {
            let mut packet = [0xffu8; PACKET];
            packet[0] = 0x47;
            packet[1..3].copy_from_slice(&self.pid.to_be_bytes());
            packet[3] = 0x10 | (self.next % 16) as u8; // payload only, CC
            packet[4..12].copy_from_slice(&self.next.to_be_bytes());
            out.extend_from_slice(&packet);
            self.next += 1;
        }
        out
    }
}

/// What a client received, decoded packet by packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub pid: u16,
    pub sequence: u64,
}

/// Checks that `data` is whole TS packets and decodes the test packets.
pub fn decode(data: &[u8]) -> Vec<Received> {
    assert_eq!(data.len() % PACKET, 0, "not a whole number of packets");
    data.chunks(PACKET)
        .map(|packet| {
            assert_eq!(packet[0], 0x47, "packet does not start with the sync byte");
            Received {
                pid: u16::from_be_bytes([packet[1], packet[2]]) & 0x1fff,
                sequence: u64::from_be_bytes(packet[4..12].try_into().unwrap()),
            }
        })
        .collect()
}

/// Counts the sequence numbers missing between consecutive packets.
pub fn gaps(received: &[Received]) -> u64 {
    received
        .windows(2)
        .map(|pair| pair[1].sequence.saturating_sub(pair[0].sequence + 1))
        .sum()
}

/// A streaming HTTP/1.1 client (hyper's), one connection per request, so
/// tests see what a player would: status, headers, then the body as it
/// arrives. Tests where the bytes on the wire are the point use raw sockets
/// instead.
pub struct Client {
    pub status: u16,
    /// Header names in lower case, values as sent.
    pub headers: Vec<(String, String)>,
    body: Incoming,
    connection: tokio::task::JoinHandle<()>,
}

impl Client {
    pub async fn get(url: &str) -> Client {
        Self::request("GET", url).await
    }

    pub async fn request(method: &str, url: &str) -> Client {
        Self::send(method, url, &[]).await
    }

    /// A request with extra headers.
    pub async fn send(method: &str, url: &str, headers: &[(&str, &str)]) -> Client {
        let socket = connect(url).await;
        Self::send_on(socket, method, url, headers).await
    }

    /// Sends the request on `socket` and reads the response head.
    pub async fn request_on(socket: TcpStream, method: &str, url: &str) -> Client {
        Self::send_on(socket, method, url, &[]).await
    }

    pub async fn send_on(
        socket: TcpStream,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Client {
        let (host, path) = split_url(url);
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", host)
            .header("user-agent", "test");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Empty::<Bytes>::new()).unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(socket))
            .await
            .expect("HTTP handshake");
        let connection = tokio::spawn(async move {
            let _ = connection.await;
        });
        let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
            .await
            .expect("no response head in time")
            .expect("connection closed before the response head");
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes()).to_string();
                (name.as_str().to_string(), value)
            })
            .collect();
        Client {
            status: response.status().as_u16(),
            headers,
            body: response.into_body(),
            connection,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The next piece of body; `None` at the end of the body (or of the
    /// connection).
    pub async fn next_body(&mut self) -> Option<Vec<u8>> {
        loop {
            match self.body.frame().await? {
                Ok(frame) => match frame.into_data() {
                    Ok(data) if data.is_empty() => continue,
                    Ok(data) => return Some(data.to_vec()),
                    Err(_trailers) => continue,
                },
                Err(_) => return None,
            }
        }
    }

    /// The whole body (empty if there is none).
    pub async fn text(&mut self) -> String {
        let mut body = Vec::new();
        while let Some(data) = self.next_body().await {
            body.extend_from_slice(&data);
        }
        String::from_utf8(body).expect("a text body")
    }

    /// Whether the body ends (or the connection closes) within `limit`.
    pub async fn ends_within(&mut self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.next_body()).await {
                Ok(Some(_)) => continue,
                Ok(None) => return true,
                Err(_) => return false,
            }
        }
    }

    /// Reads body bytes until at least `bytes` arrived or `limit` passed.
    pub async fn read_body(&mut self, bytes: usize, limit: Duration) -> Vec<u8> {
        let mut body = Vec::new();
        let deadline = tokio::time::Instant::now() + limit;
        while body.len() < bytes {
            match tokio::time::timeout_at(deadline, self.next_body()).await {
                Ok(Some(data)) => body.extend_from_slice(&data),
                Ok(None) | Err(_) => break,
            }
        }
        body
    }

    /// Reads whole packets for `duration` (or until the body ends).
    pub async fn read_for(&mut self, duration: Duration) -> Vec<u8> {
        let mut body = self.read_body(usize::MAX, duration).await;
        // Complete the last packet, which may straddle the deadline.
        while body.len() % PACKET != 0 {
            match tokio::time::timeout(Duration::from_secs(5), self.next_body()).await {
                Ok(Some(data)) => body.extend_from_slice(&data),
                _ => break,
            }
        }
        let whole = body.len() / PACKET * PACKET;
        body.truncate(whole);
        body
    }
}

impl Drop for Client {
    /// Closes the connection, as a player that goes away does.
    fn drop(&mut self) {
        self.connection.abort();
    }
}

pub async fn connect(url: &str) -> TcpStream {
    let (host, _) = split_url(url);
    TcpStream::connect(host)
        .await
        .expect("cannot connect to the proxy")
}

fn split_url(url: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    (host.to_string(), format!("/{path}"))
}

/// Whether a program is on the PATH.
pub fn have(program: &str) -> bool {
    Command::new(program)
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// ffprobe's list of stream codec types (e.g. ["video", "audio"]) for a
/// file, or `None` when ffprobe is not installed (it must be in CI).
pub fn ffprobe_codec_types(path: &Path) -> Option<Vec<String>> {
    if !have("ffprobe") {
        assert!(
            std::env::var_os("CI").is_none(),
            "ffprobe is required in CI (apt-get install ffmpeg)"
        );
        eprintln!("ffprobe not installed: skipping the decoder check");
        return None;
    }
    let output = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .unwrap();
    Some(
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| line.trim().trim_end_matches(',').to_string())
            .filter(|line| !line.is_empty())
            .collect(),
    )
}

/// Writes test packets to `writer` at `packets_per_second`, every 10 ms, in
/// writes that end anywhere but on packet boundaries. Runs until the writer
/// fails (the reader went away).
pub async fn produce<W: tokio::io::AsyncWrite + Unpin>(
    mut writer: W,
    pid: u16,
    packets_per_second: usize,
) {
    let mut source = PacketSource::new(pid);
    let per_tick = (packets_per_second / 100).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    loop {
        tick.tick().await;
        let data = source.packets(per_tick);
        for piece in data.chunks(1000) {
            if writer.write_all(piece).await.is_err() {
                return;
            }
        }
    }
}

/// Sends test packets as datagrams of 7 packets at `packets_per_second`.
pub async fn produce_datagrams<F, Fut>(mut send: F, pid: u16, packets_per_second: usize)
where
    F: FnMut(Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<usize>>,
{
    let mut source = PacketSource::new(pid);
    let per_tick = (packets_per_second / 100).max(7);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    loop {
        tick.tick().await;
        for datagram in source.packets(per_tick).chunks(7 * PACKET) {
            // A datagram socket with no reader yet refuses: keep trying.
            let _ = send(datagram.to_vec()).await;
        }
    }
}

/// A TCP upstream that streams test packets to everyone who connects, until
/// it is dropped (which closes its listener and every connection).
pub struct TcpUpstream {
    pub address: String,
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpUpstream {
    pub async fn start(pid: u16, packets_per_second: usize) -> TcpUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&connections);
        let task = tokio::spawn(async move {
            let mut streams = tokio::task::JoinSet::new();
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                streams.spawn(produce(socket, pid, packets_per_second));
            }
        });
        TcpUpstream {
            address,
            connections,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("tcp://{}", self.address)
    }

    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for TcpUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
