//! The connect storm: far more connects than the hard limit, all within
//! about a second, while a prober times the health API. Reports whether
//! the limit held exactly, how fast the refused got their 404, how long
//! the health API took, and the proxy's memory before, at peak and after.

use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use crate::load::microseconds;
use crate::process::{drain, get, open_viewer, Restreamer};

#[derive(Debug, Clone)]
pub struct Storm {
    pub restreamer: std::path::PathBuf,
    /// Viewers connected before the storm.
    pub viewers: usize,
    /// Connects in the storm.
    pub connects: usize,
    /// Over how long the storm's connects are spread.
    pub over: Duration,
    /// maxconnections.
    pub hard_limit: usize,
    pub bitrate: u64,
}

/// What one storm client saw.
enum Outcome {
    /// 200: it streams until the end of the run.
    Accepted(tokio::net::TcpStream),
    /// Another status, and how long from connect to the status line.
    Refused(u16, Duration),
    Failed(String),
}

/// Runs the storm; returns the report, and what went wrong: the limit not
/// held, a health request failed, clients still counted after leaving.
pub async fn run(storm: &Storm) -> anyhow::Result<(String, Vec<String>)> {
    restreamer::front::server::raise_file_limit();
    let extra = serde_json::json!({
        "maxconnections": storm.hard_limit,
        "fullconnections": storm.hard_limit,
        "resources": [{"type": "api", "serve": "/health", "api": "health"}],
    });
    let proxy = Restreamer::start(&storm.restreamer, storm.bitrate, extra).await?;
    let rss_idle = proxy.rss_mb();

    // The viewers already there, reading as players do.
    let mut viewers = Vec::new();
    for _ in 0..storm.viewers {
        viewers.push(tokio::spawn(drain(open_viewer(&proxy.address).await?)));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = proxy.rss_mb();

    // The prober: a health request every 10 ms through the storm.
    let (stop_probe, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let prober = tokio::spawn({
        let address = proxy.address.clone();
        async move {
            let mut latency = microseconds();
            let (mut max_viewers, mut failures) = (0u64, 0usize);
            loop {
                let asked = Instant::now();
                match get(&address, "/health").await {
                    Ok((200, body)) => {
                        latency.saturating_record(asked.elapsed().as_micros() as u64);
                        let health: serde_json::Value =
                            serde_json::from_str(&body).unwrap_or_default();
                        max_viewers = max_viewers.max(health["viewer"].as_u64().unwrap_or(0));
                    }
                    _ => failures += 1,
                }
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                }
            }
            (latency, max_viewers, failures)
        }
    });

    // The storm, its connects spread evenly over `over`.
    let started = Instant::now();
    let gap = storm.over / storm.connects.max(1) as u32;
    let mut clients = Vec::with_capacity(storm.connects);
    for i in 0..storm.connects {
        tokio::time::sleep_until(started + gap * i as u32).await;
        let address = proxy.address.clone();
        clients.push(tokio::spawn(async move { storm_client(&address).await }));
    }
    let launched = started.elapsed();
    let mut accepted = Vec::new();
    let mut refused = microseconds();
    let (mut statuses, mut failed) = (std::collections::BTreeMap::new(), Vec::new());
    for client in clients {
        match client.await? {
            Outcome::Accepted(socket) => accepted.push(tokio::spawn(drain(socket))),
            Outcome::Refused(status, took) => {
                *statuses.entry(status).or_insert(0usize) += 1;
                refused.saturating_record(took.as_micros() as u64);
            }
            Outcome::Failed(error) => failed.push(error),
        }
    }
    let answered = started.elapsed();
    let rss_peak = proxy.peak_rss_mb();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stop_probe.send(());
    let (health, max_viewers, probe_failures) = prober.await?;

    viewers
        .iter()
        .chain(&accepted)
        .for_each(|viewer| viewer.abort());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, health_after) = get(&proxy.address, "/health").await?;
    let viewers_after = serde_json::from_str::<serde_json::Value>(&health_after)?["viewer"]
        .as_u64()
        .unwrap_or(u64::MAX);
    let rss_after = proxy.rss_mb();

    let expected_accepted = storm.hard_limit.saturating_sub(storm.viewers);
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let mut out = format!(
        "Connect storm: {} connects in {:.2} s (all answered after {:.2} s) on top of {} viewers, hard limit {}, {:.1} Mbit/s\n\n",
        storm.connects,
        launched.as_secs_f64(),
        answered.as_secs_f64(),
        storm.viewers,
        storm.hard_limit,
        storm.bitrate as f64 / 1e6
    );
    out.push_str("| figure | value |\n|---|---:|\n");
    let held = accepted.len() == expected_accepted && max_viewers <= storm.hard_limit as u64;
    let accepted_line = format!(
        "{} (room was {expected_accepted}: {})",
        accepted.len(),
        if held {
            "the limit held exactly"
        } else {
            "THE LIMIT DID NOT HOLD"
        }
    );
    let rows = [
        ("storm clients accepted", accepted_line),
        ("storm clients refused, by status", format!("{statuses:?}")),
        (
            "storm clients that failed to connect",
            failed.len().to_string(),
        ),
        (
            "refused: time to the status line p50 / p99 / max",
            format!(
                "{:.2} / {:.2} / {:.2} ms",
                ms(&refused, 0.5),
                ms(&refused, 0.99),
                refused.max() as f64 / 1000.0
            ),
        ),
        (
            "health API during the storm p50 / p99 / max",
            format!(
                "{:.2} / {:.2} / {:.2} ms ({} answers, {} failures)",
                ms(&health, 0.5),
                ms(&health, 0.99),
                health.max() as f64 / 1000.0,
                health.len(),
                probe_failures
            ),
        ),
        (
            "most viewers the health API reported",
            max_viewers.to_string(),
        ),
        (
            "RSS idle / with viewers / peak / after all left",
            format!("{rss_idle:.1} / {rss_before:.1} / {rss_peak:.1} / {rss_after:.1} MB"),
        ),
        ("viewers counted after all left", viewers_after.to_string()),
    ];
    for (figure, value) in rows {
        out.push_str(&format!("| {figure} | {value} |\n"));
    }
    if let Some(error) = failed.first() {
        out.push_str(&format!("\nFirst connect failure: {error}\n"));
    }
    let mut problems = Vec::new();
    if !held {
        problems.push(format!(
            "{} storm clients accepted where there was room for {expected_accepted}; at most {max_viewers} viewers seen",
            accepted.len()
        ));
    }
    if probe_failures > 0 {
        problems.push(format!("{probe_failures} health requests failed"));
    }
    if viewers_after != 0 {
        problems.push(format!(
            "{viewers_after} viewers still counted after all left"
        ));
    }
    Ok((out, problems))
}

/// Connects, asks for the stream and reads the status line.
async fn storm_client(address: &str) -> Outcome {
    let asked = Instant::now();
    let mut socket = match open_viewer(address).await {
        Ok(socket) => socket,
        Err(error) => return Outcome::Failed(error.to_string()),
    };
    let mut head = [0u8; 12];
    match tokio::time::timeout(Duration::from_secs(10), socket.read_exact(&mut head)).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => return Outcome::Failed(error.to_string()),
        Err(_) => return Outcome::Failed("no status line within 10 s".into()),
    }
    let status = std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    if status == 200 {
        Outcome::Accepted(socket)
    } else {
        Outcome::Refused(status, asked.elapsed())
    }
}
