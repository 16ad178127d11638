//! The stream source: a constant-bitrate transport stream, generated in
//! memory (no ffmpeg, so every run is the same), served to whoever connects
//! over TCP (restreamer, the baseline) or pushed to an Icecast mount.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;

use crate::ts::{Generator, PACKET};

/// How often packets are written.
const TICK: Duration = Duration::from_millis(2);
/// How often a marker packet is among them.
const MARKER_EVERY: Duration = Duration::from_millis(10);

/// Generates the stream at `bitrate` bits/s into a broadcast channel, one
/// message per tick.
pub fn generate(bitrate: u64) -> broadcast::Sender<Bytes> {
    generate_in_bursts(bitrate, 0)
}

/// [`generate`], but holding the packets back until `burst` bytes are
/// ready and sending them at once (an upstream that delivers in bursts);
/// 0 = every tick.
pub fn generate_in_bursts(bitrate: u64, burst: usize) -> broadcast::Sender<Bytes> {
    let (tx, _) = broadcast::channel(1024);
    let sender = tx.clone();
    tokio::spawn(async move {
        let mut generator = Generator::default();
        let packets_per_second = bitrate as f64 / (PACKET as f64 * 8.0);
        let mut owed = 0.0;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let ticks_per_marker = (MARKER_EVERY.as_micros() / TICK.as_micros()) as u64;
        let mut n = 0u64;
        let mut out = Vec::new();
        loop {
            tick.tick().await;
            owed += packets_per_second * TICK.as_secs_f64();
            if n % ticks_per_marker == 0 && owed >= 1.0 {
                generator.marker(&mut out);
                owed -= 1.0;
            }
            while owed >= 1.0 {
                generator.data(&mut out);
                owed -= 1.0;
            }
            n += 1;
            if out.len() < burst {
                continue;
            }
            // No receivers yet is fine: the stream is live.
            let _ = sender.send(Bytes::from(std::mem::take(&mut out)));
        }
    });
    tx
}

/// Serves the stream to every TCP connection on `listener`.
pub async fn serve_tcp(listener: TcpListener, stream: broadcast::Sender<Bytes>) {
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        let _ = socket.set_nodelay(true);
        tokio::spawn(feed(socket, stream.subscribe()));
    }
}

/// Pushes the stream to an Icecast mount with the SOURCE method.
pub async fn push_icecast(
    address: &str,
    mount: &str,
    password: &str,
    stream: broadcast::Sender<Bytes>,
) -> anyhow::Result<()> {
    let mut socket = TcpStream::connect(address).await?;
    socket.set_nodelay(true)?;
    let credentials = BASE64.encode(format!("source:{password}"));
    let request = format!(
        "SOURCE {mount} HTTP/1.0\r\nAuthorization: Basic {credentials}\r\nContent-Type: video/mp2t\r\nIce-Public: 0\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await?;
    tokio::spawn(feed(socket, stream.subscribe()));
    Ok(())
}

async fn feed(mut socket: TcpStream, mut chunks: broadcast::Receiver<Bytes>) {
    loop {
        match chunks.recv().await {
            Ok(chunk) => {
                if socket.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
