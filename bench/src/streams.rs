//! Many low-rate streams: each restreamer binary given serves the same N
//! UDP streams (datagrams of 7 packets, as multicast channels arrive) with
//! no viewers, side by side in the same run, sampled every few seconds for
//! resident and allocated memory. What the rings hold is about one second
//! of each stream; memory beyond that is overhead per stream.

use std::path::PathBuf;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::process::spawn;
use crate::run::{free_port, tempdir};
use crate::ts::{Generator, PACKET};

#[derive(Debug, Clone)]
pub struct Streams {
    /// The binaries measured side by side (e.g. this tree's and main's).
    pub binaries: Vec<PathBuf>,
    pub streams: usize,
    /// Bits per second of each stream.
    pub bitrate: u64,
    pub duration: Duration,
    pub every: Duration,
    /// Fail when the first binary's resident memory exceeds this (MB).
    pub max_rss_mb: Option<f64>,
}

/// One running binary and its streams' ports.
struct Proxy {
    label: String,
    child: std::process::Child,
    dir: PathBuf,
    ports: Vec<u16>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `VmRSS` and `VmData` of a process, in MB.
fn memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmData:"))
}

fn start(binary: &std::path::Path, streams: usize) -> anyhow::Result<Proxy> {
    let ports = (0..streams)
        .map(|_| {
            Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
                .local_addr()?
                .port())
        })
        .collect::<anyhow::Result<Vec<u16>>>()?;
    let resources: Vec<serde_json::Value> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            serde_json::json!({"type": "stream", "serve": format!("/s{i}"), "remote": format!("udp://127.0.0.1:{port}")})
        })
        .collect();
    let config = serde_json::json!({
        "listen": format!("127.0.0.1:{}", free_port()?),
        "reconnect": 1,
        "contenttimeout": 0,
        "resources": resources,
    });
    let dir = tempdir()?;
    let child = spawn(binary, &dir, &config)?;
    Ok(Proxy {
        label: binary.display().to_string(),
        child,
        dir,
        ports,
    })
}

/// Runs the measurement; returns the report and, with `max_rss_mb`, the
/// problem if the first binary went over it.
pub async fn run(settings: &Streams) -> anyhow::Result<(String, Vec<String>)> {
    restreamer::front::server::raise_file_limit();
    let proxies = settings
        .binaries
        .iter()
        .map(|binary| start(binary, settings.streams))
        .collect::<anyhow::Result<Vec<Proxy>>>()?;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // One datagram of 7 packets per stream and binary, paced to `bitrate`.
    let datagram_bits = (7 * PACKET * 8) as f64;
    let interval = Duration::from_secs_f64(datagram_bits / settings.bitrate as f64);
    let targets: Vec<u16> = proxies.iter().flat_map(|p| p.ports.clone()).collect();
    let sender = UdpSocket::bind("127.0.0.1:0").await?;
    let end = Instant::now() + settings.duration;
    let sending = tokio::spawn(async move {
        let mut generators: Vec<Generator> = targets.iter().map(|_| Generator::default()).collect();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut datagram = Vec::with_capacity(7 * PACKET);
        while Instant::now() < end {
            tick.tick().await;
            for (generator, port) in generators.iter_mut().zip(&targets) {
                datagram.clear();
                for _ in 0..7 {
                    generator.data(&mut datagram);
                }
                let _ = sender.send_to(&datagram, ("127.0.0.1", *port)).await;
            }
        }
    });

    let started = Instant::now();
    let mut rows: Vec<(Duration, Vec<(f64, f64)>)> = Vec::new();
    loop {
        rows.push((
            started.elapsed(),
            proxies.iter().map(|p| memory(p.child.id())).collect(),
        ));
        if Instant::now() >= end {
            break;
        }
        tokio::time::sleep(
            settings
                .every
                .min(end.saturating_duration_since(Instant::now())),
        )
        .await;
    }
    sending.await?;

    let held_mb = settings.streams as f64 * settings.bitrate as f64 / 8.0 / 1e6;
    let mut out = format!(
        "{} UDP streams at {:.2} Mbit/s each (datagrams of 7 packets), no viewers, {:?}; \
         the rings hold about one second of each: {:.1} MB in all.\n\n| time |",
        settings.streams,
        settings.bitrate as f64 / 1e6,
        settings.duration,
        held_mb
    );
    for proxy in &proxies {
        out.push_str(&format!(" {} RSS MB | VmData MB |", proxy.label));
    }
    out.push_str("\n|---:|");
    for _ in &proxies {
        out.push_str("---:|---:|");
    }
    out.push('\n');
    for (at, figures) in &rows {
        out.push_str(&format!("| {:.0} s |", at.as_secs_f64()));
        for (rss, data) in figures {
            out.push_str(&format!(" {rss:.1} | {data:.1} |"));
        }
        out.push('\n');
    }
    let mut problems = Vec::new();
    if let (Some(limit), Some((_, last))) = (settings.max_rss_mb, rows.last()) {
        let peak = rows
            .iter()
            .map(|(_, figures)| figures[0].0)
            .fold(0.0, f64::max);
        if peak > limit {
            problems.push(format!(
                "{} reached {peak:.1} MB resident (limit {limit} MB); at the end {:.1} MB",
                proxies[0].label, last[0].0
            ));
        }
    }
    Ok((out, problems))
}
