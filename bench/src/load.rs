//! The load generator: N HTTP clients reading one live stream, each
//! checking every packet's continuity counter and timing the marker
//! packets. Clients are "fast" (read as fast as they can), "slow" (read at
//! a third of the stream's rate) or "stalled" (never read); only fast
//! clients are expected to lose nothing.

use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use crate::ts::{Checker, PACKET};

/// A histogram of microseconds, from 1 µs to a minute (values outside are
/// not recorded, never clamped).
pub fn microseconds() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Fast,
    Slow,
    Stalled,
}

/// What one client saw during the measurement window.
#[derive(Debug)]
pub struct ClientReport {
    pub kind: Kind,
    pub status: u16,
    pub bytes: u64,
    pub continuity_errors: u64,
    /// Microseconds from the source writing a marker to this client reading it.
    pub latency_us: Histogram<u64>,
}

/// One load run against `address` (`host:port`) and `path`.
pub struct Load {
    pub address: String,
    pub path: String,
    pub clients: usize,
    /// Share of clients that are slow, and of those that are stalled.
    pub slow_share: f64,
    pub stalled_share: f64,
    pub warmup: Duration,
    pub window: Duration,
    /// HTTPS: each client's TLS session (ALPN http/1.1) made by this.
    pub tls: Option<TlsConnector>,
}

impl Load {
    /// Connects every client (in waves, so the listen backlog holds), lets
    /// them settle for `warmup`, measures for `window`. Returns the reports
    /// and the window's start.
    pub async fn run(&self) -> (Vec<ClientReport>, Instant) {
        let connected_by = Instant::now() + Duration::from_millis(self.clients as u64 / 2 + 200);
        let start = connected_by + self.warmup;
        let end = start + self.window;
        let slow = (self.clients as f64 * self.slow_share).round() as usize;
        let stalled = (self.clients as f64 * self.stalled_share).round() as usize;
        let mut tasks = Vec::with_capacity(self.clients);
        for i in 0..self.clients {
            let kind = if i < stalled {
                Kind::Stalled
            } else if i < stalled + slow {
                Kind::Slow
            } else {
                Kind::Fast
            };
            let address = self.address.clone();
            let path = self.path.clone();
            let tls = self.tls.clone();
            tasks.push(tokio::spawn(async move {
                client(&address, &path, tls, kind, start, end).await
            }));
            if i % 100 == 99 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let mut reports = Vec::with_capacity(self.clients);
        for task in tasks {
            reports.push(task.await.expect("a client task panicked"));
        }
        (reports, start)
    }
}

async fn client(
    address: &str,
    path: &str,
    tls: Option<TlsConnector>,
    kind: Kind,
    start: Instant,
    end: Instant,
) -> ClientReport {
    let report = ClientReport {
        kind,
        status: 0,
        bytes: 0,
        continuity_errors: 0,
        latency_us: microseconds(),
    };
    let Ok(socket) = TcpStream::connect(address).await else {
        return report;
    };
    match tls {
        None => read_stream(socket, address, path, report, start, end).await,
        Some(connector) => {
            let name = rustls::pki_types::ServerName::try_from("localhost").expect("a DNS name");
            match connector.connect(name, socket).await {
                Ok(socket) => read_stream(socket, address, path, report, start, end).await,
                Err(_) => report,
            }
        }
    }
}

async fn read_stream<S: AsyncRead + AsyncWrite + Unpin>(
    mut socket: S,
    address: &str,
    path: &str,
    mut report: ClientReport,
    start: Instant,
    end: Instant,
) -> ClientReport {
    let kind = report.kind;
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: {address}\r\nUser-Agent: restreamer-bench\r\n\r\n");
    if socket.write_all(request.as_bytes()).await.is_err() {
        return report;
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut data: Vec<u8> = Vec::new();
    // Response head.
    loop {
        let Ok(Ok(n)) = tokio::time::timeout_at(end, socket.read(&mut buf)).await else {
            return report;
        };
        if n == 0 {
            return report;
        }
        data.extend_from_slice(&buf[..n]);
        if let Some(head_end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..head_end]).to_string();
            report.status = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            data.drain(..head_end + 4);
            break;
        }
    }
    if report.status != 200 {
        return report;
    }
    if kind == Kind::Stalled {
        tokio::time::sleep_until(end).await;
        return report;
    }

    let mut checker = Checker::default();
    let mut synced = false;
    loop {
        // Whole packets in `data` are checked; a partial one waits.
        let now = Instant::now();
        let measuring = now >= start;
        let mut offset = 0;
        while data.len() - offset >= PACKET {
            if !synced || data[offset] != 0x47 {
                // Find three sync bytes 188 apart (Icecast starts anywhere).
                match (offset..data.len()).find(|&i| {
                    data.get(i) == Some(&0x47)
                        && data.get(i + PACKET) == Some(&0x47)
                        && data.get(i + 2 * PACKET) == Some(&0x47)
                }) {
                    Some(i) => {
                        if synced && measuring {
                            report.continuity_errors += 1;
                        }
                        offset = i;
                        synced = true;
                        checker.resync();
                    }
                    None => break,
                }
            }
            let errors_before = checker.continuity_errors;
            let latency = checker.packet(&data[offset..offset + PACKET]);
            if measuring {
                report.continuity_errors += checker.continuity_errors - errors_before;
                if let Some(us) = latency {
                    let _ = report.latency_us.record(us.max(1));
                }
            }
            offset += PACKET;
        }
        data.drain(..offset);

        if now >= end {
            return report;
        }
        let read_size = if kind == Kind::Slow {
            16 * 1024
        } else {
            buf.len()
        };
        let n = match tokio::time::timeout_at(end, socket.read(&mut buf[..read_size])).await {
            Ok(Ok(0)) | Ok(Err(_)) => return report,
            Ok(Ok(n)) => n,
            Err(_) => return report,
        };
        if Instant::now() >= start {
            report.bytes += n as u64;
        }
        data.extend_from_slice(&buf[..n]);
        if kind == Kind::Slow {
            // At most 16 KiB per 50 ms, 330 KB/s: a third of an 8 Mbit/s stream.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
