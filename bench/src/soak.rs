//! The soak: restreamer serving a few hundred clients that come and go,
//! for minutes to hours, sampled every few seconds for resident memory,
//! open descriptors and threads. A proxy that leaks shows it as growth
//! from the start of the run to its end.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use crate::process::{drain, open_viewer, Restreamer};

#[derive(Debug, Clone)]
pub struct Soak {
    pub restreamer: std::path::PathBuf,
    pub clients: usize,
    pub duration: Duration,
    pub bitrate: u64,
    /// Longest life of a client before it leaves and another comes.
    pub max_life: Duration,
}

/// One look at the proxy's resources.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    rss_mb: f64,
    descriptors: usize,
    threads: usize,
    tasks: u64,
    connects: u64,
}

impl Sample {
    async fn take(proxy: &Restreamer, at: Duration, connects: u64) -> anyhow::Result<Sample> {
        Ok(Sample {
            at,
            rss_mb: proxy.rss_mb(),
            descriptors: proxy.descriptors(),
            threads: proxy.threads(),
            tasks: proxy.tasks().await?,
            connects,
        })
    }
}

/// Runs the soak; returns the report, and the leaks: descriptors or tasks
/// left over once every client has gone.
pub async fn run(soak: &Soak) -> anyhow::Result<(String, Vec<String>)> {
    restreamer::front::server::raise_file_limit();
    let proxy = Restreamer::start(&soak.restreamer, soak.bitrate, serde_json::json!({})).await?;
    let idle = Sample::take(&proxy, Duration::ZERO, 0).await?;

    let connects = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + soak.duration;
    for _ in 0..soak.clients {
        let (address, connects, max_life) =
            (proxy.address.clone(), connects.clone(), soak.max_life);
        tokio::spawn(async move {
            while Instant::now() < end {
                let life = rand::thread_rng().gen_range(Duration::from_millis(200)..max_life);
                connects.fetch_add(1, Ordering::Relaxed);
                let _ =
                    tokio::time::timeout(life, async { drain(open_viewer(&address).await?).await })
                        .await;
            }
        });
    }

    let started = Instant::now();
    let mut samples = Vec::new();
    let every = (soak.duration / 20).max(Duration::from_secs(2));
    loop {
        samples
            .push(Sample::take(&proxy, started.elapsed(), connects.load(Ordering::Relaxed)).await?);
        if Instant::now() >= end {
            break;
        }
        tokio::time::sleep(
            every
                .min(end.saturating_duration_since(Instant::now()))
                .max(Duration::from_millis(100)),
        )
        .await;
    }
    // Let every client go (the last ones live up to `max_life` past the
    // end), then look once more: what is left is a leak.
    tokio::time::sleep(soak.max_life + Duration::from_secs(2)).await;
    let after = Sample::take(&proxy, started.elapsed(), connects.load(Ordering::Relaxed)).await?;

    let mut out = format!(
        "Soak: {} clients coming and going (lives up to {:?}), {:.1} Mbit/s, {:?}\n\n| time | RSS MB | descriptors | threads | tasks | connects so far |\n|---:|---:|---:|---:|---:|---:|\n",
        soak.clients,
        soak.max_life,
        soak.bitrate as f64 / 1e6,
        soak.duration
    );
    for s in &samples {
        out.push_str(&format!(
            "| {:.0} s | {:.1} | {} | {} | {} | {} |\n",
            s.at.as_secs_f64(),
            s.rss_mb,
            s.descriptors,
            s.threads,
            s.tasks,
            s.connects
        ));
    }
    let first = samples[samples.len().min(2) - 1];
    let last = samples[samples.len() - 1];
    out.push_str(&format!(
        "\nFrom the first steady sample to the end: RSS {:+.1} MB, descriptors {:+}, threads {:+}, tasks {:+}.\n\
         Idle before the clients came: RSS {:.1} MB, {} descriptors, {} tasks. \
         After all clients left: RSS {:.1} MB, {} descriptors, {} tasks.\n",
        last.rss_mb - first.rss_mb,
        last.descriptors as i64 - first.descriptors as i64,
        last.threads as i64 - first.threads as i64,
        last.tasks as i64 - first.tasks as i64,
        idle.rss_mb,
        idle.descriptors,
        idle.tasks,
        after.rss_mb,
        after.descriptors,
        after.tasks
    ));
    let mut problems = Vec::new();
    if after.descriptors > idle.descriptors {
        problems.push(format!(
            "{} descriptors open after all clients left, {} before they came",
            after.descriptors, idle.descriptors
        ));
    }
    if after.tasks > idle.tasks {
        problems.push(format!(
            "{} tasks alive after all clients left, {} before they came",
            after.tasks, idle.tasks
        ));
    }
    Ok((out, problems))
}
