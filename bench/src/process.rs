//! A restreamer process under test, for the soak and the storm: started on
//! a config of one stream fed by the bench's own source, looked at through
//! `/proc` and its own `/metrics`, killed when dropped.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::run::{free_port, memory_mb, tempdir, wait_for_stream};

/// The stream's path on every proxy started here.
pub const STREAM: &str = "/live.ts";

pub struct Restreamer {
    child: Child,
    dir: std::path::PathBuf,
    pub address: String,
}

impl Restreamer {
    /// Starts a source at `bitrate` and restreamer serving it at
    /// [`STREAM`], with `extra` merged into the top level of its config;
    /// returns once the stream plays.
    pub async fn start(
        binary: &std::path::Path,
        bitrate: u64,
        extra: serde_json::Value,
    ) -> anyhow::Result<Restreamer> {
        let source = TcpListener::bind("127.0.0.1:0").await?;
        let source_address = source.local_addr()?;
        tokio::spawn(crate::source::serve_tcp(
            source,
            crate::source::generate(bitrate),
        ));

        let dir = tempdir()?;
        let address = format!("127.0.0.1:{}", free_port()?);
        let mut config = stream_config(&address, &source_address.to_string());
        if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
            for (key, value) in extra {
                match (key.as_str(), value.as_array()) {
                    ("resources", Some(more)) => config["resources"]
                        .as_array_mut()
                        .expect("resources is a list")
                        .extend(more.iter().cloned()),
                    _ => {
                        config.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        let child = spawn(binary, &dir, &config)?;
        let restreamer = Restreamer {
            child,
            dir,
            address,
        };
        wait_for_stream(&restreamer.address, STREAM).await?;
        Ok(restreamer)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn rss_mb(&self) -> f64 {
        memory_mb(self.pid()).0
    }

    pub fn peak_rss_mb(&self) -> f64 {
        memory_mb(self.pid()).1
    }

    pub fn descriptors(&self) -> usize {
        count_entries(&format!("/proc/{}/fd", self.pid()))
    }

    pub fn threads(&self) -> usize {
        count_entries(&format!("/proc/{}/task", self.pid()))
    }

    /// The proxy's live tokio tasks, from its own metrics.
    pub async fn tasks(&self) -> anyhow::Result<u64> {
        let (_, metrics) = get(&self.address, "/metrics").await?;
        metrics
            .lines()
            .find_map(|line| line.strip_prefix("restreamer_tasks "))
            .and_then(|value| value.trim().parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no restreamer_tasks in /metrics"))
    }
}

impl Drop for Restreamer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// restreamer's config for one stream, served at [`STREAM`] on `listen`,
/// pulled over TCP from `source` and reconnected after a second.
pub fn stream_config(listen: &str, source: &str) -> serde_json::Value {
    serde_json::json!({
        "listen": listen,
        "reconnect": 1,
        // The generated stream has no PAT or PMT: no content failover.
        "contenttimeout": 0,
        "resources": [{"type": "stream", "serve": STREAM, "remote": format!("tcp://{source}")}]
    })
}

/// Writes `config` into `dir` and starts `binary` on it, logging warnings
/// only.
pub fn spawn(
    binary: &std::path::Path,
    dir: &std::path::Path,
    config: &serde_json::Value,
) -> std::io::Result<Child> {
    let config_path = dir.join("restreamer.json");
    std::fs::write(&config_path, config.to_string())?;
    Command::new(binary)
        .arg(&config_path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
}

fn count_entries(dir: &str) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| entries.count())
}

/// A whole-body HTTP/1.0 GET (for APIs, not streams): status and body.
pub async fn get(address: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let mut socket = TcpStream::connect(address).await?;
    socket
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes())
        .await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut response)).await??;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no HTTP status from {address}{path}"))?;
    Ok((status, body.to_string()))
}

/// Opens a viewer on [`STREAM`]: the socket after the request is sent.
pub async fn open_viewer(address: &str) -> std::io::Result<TcpStream> {
    let mut socket = TcpStream::connect(address).await?;
    socket
        .write_all(format!("GET {STREAM} HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes())
        .await?;
    Ok(socket)
}

/// Reads a viewer's socket until the proxy closes it.
pub async fn drain(mut socket: TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    while socket.read(&mut buf).await? != 0 {}
    Ok(())
}
