//! `restreamer-bench`: fan-out capacity, CPU per gigabyte, memory per
//! client and added latency of restreamer, side by side with Icecast2 and a
//! minimal baseline, under the same load on the same machine.
//!
//! `bench/run.sh` builds and runs it; see BENCHMARKS.md for the figures.

mod baseline;
mod keyframe;
mod load;
mod process;
mod run;
mod soak;
mod source;
mod storm;
mod streams;
mod ts;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Runs the benchmark and prints the report (Markdown) on stdout.
    Run {
        /// Client counts to measure.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "10,100,250,500,1000,1500,2000"
        )]
        clients: Vec<usize>,
        /// Systems to measure: restreamer, restreamer-tls (the same over
        /// HTTPS), icecast, baseline.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "restreamer,icecast,baseline"
        )]
        systems: Vec<String>,
        /// Stream bitrate, bits per second.
        #[arg(long, default_value_t = 8_000_000)]
        bitrate: u64,
        /// Seconds to let clients settle before measuring.
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
        /// Seconds measured.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Share of clients reading at a third of the stream's rate.
        #[arg(long, default_value_t = 0.0)]
        slow_share: f64,
        /// Share of clients that never read.
        #[arg(long, default_value_t = 0.0)]
        stalled_share: f64,
        /// restreamer's flushms in the sweep.
        #[arg(long, default_value_t = 10)]
        flushms: u64,
        /// restreamer's outputbuffer (packets); unset: its default.
        #[arg(long)]
        outputbuffer: Option<usize>,
        /// flushms values for the latency/CPU curve (`--flush-curve` alone: no curve).
        #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "2,5,10,20")]
        flush_curve: Vec<u64>,
        /// Clients for the flushms curve.
        #[arg(long, default_value_t = 1000)]
        curve_clients: usize,
        /// The restreamer binary.
        #[arg(long, default_value = "target/release/restreamer")]
        restreamer: PathBuf,
        /// The baseline's write interval, ms.
        #[arg(long, default_value_t = 20)]
        baseline_chunk_ms: u64,
        /// The source sends in bursts of this many bytes (an upstream that
        /// delivers, say, 1 MB at a time); 0 = every 2 ms.
        #[arg(long, default_value_t = 0)]
        burst_bytes: usize,
        /// Where to write the raw results (JSON).
        #[arg(long)]
        json: Option<PathBuf>,
        /// A few seconds, 10 clients, no curve: checks the harness works.
        #[arg(long)]
        smoke: bool,
    },
    /// Soak: a few hundred clients coming and going for a long time; reports
    /// the proxy's memory, descriptors and threads over the run.
    Soak {
        #[arg(long, default_value_t = 300)]
        clients: usize,
        /// Minutes (default 10; 60 for the documented long run).
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
        #[arg(long, default_value_t = 2_000_000)]
        bitrate: u64,
        /// Longest life of a client, seconds.
        #[arg(long, default_value_t = 30.0)]
        max_life: f64,
        #[arg(long, default_value = "target/release/restreamer")]
        restreamer: PathBuf,
    },
    /// Connect storm: many more connects than the hard limit within about a
    /// second, while the health API is timed.
    Storm {
        /// Viewers connected before the storm.
        #[arg(long, default_value_t = 400)]
        viewers: usize,
        /// Connects in the storm.
        #[arg(long, default_value_t = 5000)]
        connects: usize,
        /// Seconds over which the storm's connects are spread.
        #[arg(long, default_value_t = 1.0)]
        over: f64,
        /// The proxy's maxconnections.
        #[arg(long, default_value_t = 500)]
        hard_limit: usize,
        #[arg(long, default_value_t = 2_000_000)]
        bitrate: u64,
        #[arg(long, default_value = "target/release/restreamer")]
        restreamer: PathBuf,
    },
    /// Time from connect to the first keyframe byte, instantstart on and
    /// off, for H.264 GOPs of 1, 2 and 5 s (ffmpeg encodes the streams).
    Keyframe {
        /// GOP lengths, seconds.
        #[arg(long, value_delimiter = ',', default_value = "1,2,5")]
        gops: Vec<u32>,
        /// Viewers per channel.
        #[arg(long, default_value_t = 40)]
        viewers: usize,
        /// Seconds over which the viewers join.
        #[arg(long, default_value_t = 12.0)]
        window: f64,
        #[arg(long, default_value_t = 2_000_000)]
        bitrate: u64,
        #[arg(long, default_value = "target/release/restreamer")]
        restreamer: PathBuf,
    },
    /// Many low-rate UDP streams and no viewers: the memory of each binary
    /// given, side by side, over time.
    Streams {
        /// restreamer binaries to measure side by side (e.g. this tree's
        /// and main's).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "target/release/restreamer"
        )]
        binaries: Vec<PathBuf>,
        #[arg(long, default_value_t = 300)]
        streams: usize,
        /// Bits per second of each stream.
        #[arg(long, default_value_t = 500_000)]
        bitrate: u64,
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
        /// Seconds between samples.
        #[arg(long, default_value_t = 30.0)]
        every: f64,
        /// Fail if the first binary's resident memory exceeds this (MB).
        #[arg(long)]
        max_rss_mb: Option<f64>,
    },
    /// The minimal baseline server (started by `run`).
    Baseline {
        #[arg(long)]
        listen: String,
        #[arg(long)]
        source: String,
        #[arg(long, default_value_t = 20)]
        chunk_ms: u64,
        #[arg(long, default_value_t = 400)]
        queue_packets: usize,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Commands::Soak {
            clients,
            minutes,
            bitrate,
            max_life,
            restreamer,
        } => {
            let soak = soak::Soak {
                restreamer,
                clients,
                duration: Duration::from_secs_f64(minutes * 60.0),
                bitrate,
                max_life: Duration::from_secs_f64(max_life),
            };
            let (report, problems) = runtime()?.block_on(soak::run(&soak))?;
            verdict(&report, &problems)
        }
        Commands::Streams {
            binaries,
            streams,
            bitrate,
            minutes,
            every,
            max_rss_mb,
        } => {
            let settings = streams::Streams {
                binaries,
                streams,
                bitrate,
                duration: Duration::from_secs_f64(minutes * 60.0),
                every: Duration::from_secs_f64(every),
                max_rss_mb,
            };
            let (report, problems) = runtime()?.block_on(streams::run(&settings))?;
            verdict(&report, &problems)
        }
        Commands::Storm {
            viewers,
            connects,
            over,
            hard_limit,
            bitrate,
            restreamer,
        } => {
            let storm = storm::Storm {
                restreamer,
                viewers,
                connects,
                over: Duration::from_secs_f64(over),
                hard_limit,
                bitrate,
            };
            let (report, problems) = runtime()?.block_on(storm::run(&storm))?;
            verdict(&report, &problems)
        }
        Commands::Keyframe {
            gops,
            viewers,
            window,
            bitrate,
            restreamer,
        } => {
            let bench = keyframe::Keyframe {
                restreamer,
                gops,
                viewers,
                window,
                bitrate,
            };
            let (report, problems) = runtime()?.block_on(keyframe::run(&bench))?;
            verdict(&report, &problems)
        }
        Commands::Baseline {
            listen,
            source,
            chunk_ms,
            queue_packets,
        } => baseline::run(
            &listen,
            &source,
            Duration::from_millis(chunk_ms),
            queue_packets,
        ),
        Commands::Run {
            clients,
            systems,
            bitrate,
            warmup,
            seconds,
            slow_share,
            stalled_share,
            flushms,
            outputbuffer,
            flush_curve,
            curve_clients,
            restreamer,
            baseline_chunk_ms,
            burst_bytes,
            json,
            smoke,
        } => {
            let mut settings = run::Settings {
                clients,
                systems,
                bitrate,
                warmup: Duration::from_secs_f64(warmup),
                window: Duration::from_secs_f64(seconds),
                slow_share,
                stalled_share,
                flushms,
                outputbuffer,
                flush_curve,
                curve_clients,
                restreamer,
                baseline_chunk_ms,
                burst_bytes,
            };
            if smoke {
                settings.clients = vec![10];
                settings.warmup = Duration::from_secs(1);
                settings.window = Duration::from_secs(2);
                settings.flush_curve.clear();
                if which("icecast2").is_none() {
                    settings.systems.retain(|s| s != "icecast");
                }
            }
            let results = runtime()?.block_on(run::run(&settings))?;
            if let Some(path) = json {
                std::fs::write(path, serde_json::to_string_pretty(&results)?)?;
            }
            print!("{}", report(&settings, &results));
            if smoke {
                // The harness must work: ours keeps up with 10 clients.
                let ours = results
                    .iter()
                    .find(|r| r.system == "restreamer")
                    .expect("restreamer was measured");
                anyhow::ensure!(
                    ours.all_kept_up(),
                    "restreamer did not keep up with 10 clients: {ours:?}"
                );
            }
            Ok(())
        }
    }
}

/// Prints a report, and fails with its problems if it has any.
fn verdict(report: &str, problems: &[String]) -> anyhow::Result<()> {
    print!("{report}");
    anyhow::ensure!(problems.is_empty(), "{}", problems.join("; "));
    Ok(())
}

/// The load generator's runtime: two workers, as many as the machine the
/// figures in BENCHMARKS.md come from has cores.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| PathBuf::from(dir).join(program))
        .find(|path| path.is_file())
}

/// The Markdown report: the sweep, the ratios, the flushms curve.
fn report(settings: &run::Settings, results: &[run::RunResult]) -> String {
    let mut out = String::new();
    let sweep: Vec<&run::RunResult> = results
        .iter()
        .filter(|r| r.system != "restreamer" || r.flushms == Some(settings.flushms))
        .take(settings.clients.len() * settings.systems.len())
        .collect();
    out.push_str(&format!(
        "Stream {:.1} Mbit/s, {:.0} s measured after {:.0} s warm-up, {:.0} % slow and {:.0} % stalled clients.\n\n",
        settings.bitrate as f64 / 1e6,
        settings.window.as_secs_f64(),
        settings.warmup.as_secs_f64(),
        settings.slow_share * 100.0,
        settings.stalled_share * 100.0
    ));
    if settings.burst_bytes > 0 {
        out.push_str(&format!(
            "The source sends in bursts of {} bytes.\n\n",
            settings.burst_bytes
        ));
    }
    out.push_str("| clients | system | kept up | continuity errors | CPU s/GB | × baseline | RSS MB | latency p50 ms | p99 ms |\n");
    out.push_str("|---:|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in &sweep {
        let baseline = sweep
            .iter()
            .find(|b| b.system == "baseline" && b.clients == r.clients)
            .map(|b| b.cpu_seconds_per_gb);
        let ratio = baseline.map_or("–".to_string(), |b| {
            format!("{:.2}", r.cpu_seconds_per_gb / b)
        });
        out.push_str(&format!(
            "| {} | {} | {}/{} | {} | {:.2} | {} | {:.1} | {:.1} | {:.1} |\n",
            r.clients,
            r.system,
            r.kept_up,
            r.fast_clients,
            r.continuity_errors,
            r.cpu_seconds_per_gb,
            ratio,
            r.rss_mb,
            r.latency_p50_ms,
            r.latency_p99_ms
        ));
    }

    out.push_str(
        "\n| system | max clients all kept up | RSS growth per client (KiB) |\n|---|---:|---:|\n",
    );
    for system in &settings.systems {
        let runs: Vec<&&run::RunResult> = sweep.iter().filter(|r| &r.system == system).collect();
        let kept: Vec<&&&run::RunResult> = runs.iter().filter(|r| r.all_kept_up()).collect();
        let max = kept.iter().map(|r| r.clients).max();
        let growth = match (kept.first(), kept.last()) {
            (Some(low), Some(high)) if high.clients > low.clients => format!(
                "{:.1}",
                (high.rss_mb - low.rss_mb) * 1024.0 / (high.clients - low.clients) as f64
            ),
            _ => "–".into(),
        };
        out.push_str(&format!(
            "| {system} | {} | {growth} |\n",
            max.map_or("none".into(), |m| m.to_string())
        ));
    }

    let curve: Vec<&run::RunResult> = results[sweep.len()..].iter().collect();
    if !curve.is_empty() {
        out.push_str(&format!(
            "\nrestreamer at {} clients by `flushms`:\n\n| flushms | kept up | CPU s/GB | latency p50 ms | p99 ms |\n|---:|---:|---:|---:|---:|\n",
            settings.curve_clients
        ));
        for r in curve {
            out.push_str(&format!(
                "| {} | {}/{} | {:.2} | {:.1} | {:.1} |\n",
                r.flushms.unwrap_or_default(),
                r.kept_up,
                r.fast_clients,
                r.cpu_seconds_per_gb,
                r.latency_p50_ms,
                r.latency_p99_ms
            ));
        }
    }
    out
}
