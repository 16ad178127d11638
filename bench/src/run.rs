//! The benchmark run: for each client count and each system, start the
//! source, the server and the load, measure, stop; then report side by side.
//!
//! Systems: `restreamer` (ours, the release binary), `restreamer-tls` (the
//! same over HTTPS, `tlslisten`, TLS 1.3 with a certificate made for the
//! run; clients speak HTTP/1.1 in TLS), `icecast` (Icecast2 from
//! Debian, the stream as a `video/mp2t` mount fed with the SOURCE method),
//! `baseline` (this crate's minimal fan-out). All serve the same stream to
//! the same load on the same machine; the server's CPU time and memory are
//! read from `/proc` around the measurement window.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::Serialize;
use tokio::net::TcpListener;

use crate::load::{ClientReport, Kind, Load};
use crate::{process, source};

#[derive(Debug, Clone)]
pub struct Settings {
    pub clients: Vec<usize>,
    pub systems: Vec<String>,
    pub bitrate: u64,
    pub warmup: Duration,
    pub window: Duration,
    pub slow_share: f64,
    pub stalled_share: f64,
    /// restreamer's `flushms` for the sweep.
    pub flushms: u64,
    /// restreamer's `outputbuffer`; `None`: its default.
    pub outputbuffer: Option<usize>,
    /// Also measure restreamer at `curve_clients` for these `flushms`.
    pub flush_curve: Vec<u64>,
    pub curve_clients: usize,
    pub restreamer: PathBuf,
    pub baseline_chunk_ms: u64,
    /// The source sends in bursts of this many bytes; 0 = every 2 ms.
    pub burst_bytes: usize,
}

/// The figures of one (system, clients) run.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub system: String,
    pub clients: usize,
    pub flushms: Option<u64>,
    pub fast_clients: usize,
    /// Fast clients that got at least 95 % of the stream and lost nothing.
    pub kept_up: usize,
    pub continuity_errors: u64,
    pub refused: usize,
    pub delivered_bytes: u64,
    pub cpu_seconds: f64,
    pub cpu_seconds_per_gb: f64,
    pub rss_mb: f64,
    pub peak_rss_mb: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub window_seconds: f64,
}

impl RunResult {
    pub fn all_kept_up(&self) -> bool {
        self.kept_up == self.fast_clients && self.fast_clients > 0
    }
}

pub async fn run(settings: &Settings) -> anyhow::Result<Vec<RunResult>> {
    restreamer::front::server::raise_file_limit();
    let stream = source::generate_in_bursts(settings.bitrate, settings.burst_bytes);
    let source_listener = TcpListener::bind("127.0.0.1:0").await?;
    let source_address = source_listener.local_addr()?.to_string();
    tokio::spawn(source::serve_tcp(source_listener, stream.clone()));

    let mut results = Vec::new();
    for &clients in &settings.clients {
        for system in &settings.systems {
            let result = one(
                settings,
                system,
                clients,
                settings.flushms,
                &source_address,
                &stream,
            )
            .await?;
            eprintln!("{}", summary_line(&result));
            results.push(result);
        }
    }
    for &flushms in &settings.flush_curve {
        let result = one(
            settings,
            "restreamer",
            settings.curve_clients,
            flushms,
            &source_address,
            &stream,
        )
        .await?;
        eprintln!("{}", summary_line(&result));
        results.push(result);
    }
    Ok(results)
}

fn summary_line(r: &RunResult) -> String {
    format!(
        "{:>10} {:>5} clients{}: kept up {}/{}, {:.2} CPU s/GB, RSS {:.1} MB, p99 {:.1} ms",
        r.system,
        r.clients,
        r.flushms
            .map(|f| format!(" (flushms {f})"))
            .unwrap_or_default(),
        r.kept_up,
        r.fast_clients,
        r.cpu_seconds_per_gb,
        r.rss_mb,
        r.latency_p99_ms
    )
}

/// One system at one client count.
async fn one(
    settings: &Settings,
    system: &str,
    clients: usize,
    flushms: u64,
    source_address: &str,
    stream: &tokio::sync::broadcast::Sender<bytes::Bytes>,
) -> anyhow::Result<RunResult> {
    let dir = tempdir()?;
    let port = free_port()?;
    let address = format!("127.0.0.1:{port}");
    let mut tls = None;
    let mut ready_address = address.clone();
    let (mut server, path) = match system {
        "restreamer-tls" => {
            // The plain listener only tells when the stream plays; the
            // load is on the TLS one.
            ready_address = format!("127.0.0.1:{}", free_port()?);
            let mut config = process::stream_config(&ready_address, source_address);
            config["flushms"] = flushms.into();
            if let Some(packets) = settings.outputbuffer {
                config["outputbuffer"] = packets.into();
            }
            let (connector, cert, key) = test_certificate(&dir)?;
            config["tlslisten"] = address.clone().into();
            config["tlscert"] = cert.into();
            config["tlskey"] = key.into();
            tls = Some(connector);
            let child = process::spawn(&settings.restreamer, &dir, &config)?;
            (child, process::STREAM)
        }
        "restreamer" => {
            let mut config = process::stream_config(&address, source_address);
            config["flushms"] = flushms.into();
            if let Some(packets) = settings.outputbuffer {
                config["outputbuffer"] = packets.into();
            }
            let child = process::spawn(&settings.restreamer, &dir, &config)?;
            (child, process::STREAM)
        }
        "baseline" => {
            let child = Command::new(std::env::current_exe()?)
                .args(["baseline", "--listen", &address, "--source", source_address])
                .args(["--chunk-ms", &settings.baseline_chunk_ms.to_string()])
                .spawn()?;
            (child, "/live.ts")
        }
        "icecast" => {
            let config_path = icecast_config(&dir, port)?;
            let child = Command::new("icecast2")
                .arg("-c")
                .arg(&config_path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            wait_for_port(&address).await?;
            source::push_icecast(&address, "/live.ts", "hackme", stream.clone()).await?;
            (child, "/live.ts")
        }
        other => anyhow::bail!("unknown system {other:?}"),
    };
    let result = async {
        wait_for_stream(&ready_address, path).await?;
        let load = Load {
            tls: tls.clone(),
            address: address.clone(),
            path: path.to_string(),
            clients,
            slow_share: settings.slow_share,
            stalled_share: settings.stalled_share,
            warmup: settings.warmup,
            window: settings.window,
        };
        let pid = server.id();
        // CPU time over exactly the measurement window.
        let load_task = async { load.run().await };
        let cpu_task = async {
            let start = tokio::time::Instant::now()
                + Duration::from_millis(clients as u64 / 2 + 200)
                + settings.warmup;
            tokio::time::sleep_until(start).await;
            let before = cpu_seconds(pid);
            tokio::time::sleep(settings.window).await;
            let after = cpu_seconds(pid);
            let (rss, peak) = memory_mb(pid);
            (after - before, rss, peak)
        };
        let ((reports, _), (cpu, rss, peak)) = tokio::join!(load_task, cpu_task);
        anyhow::Ok(summarise(
            system, clients, flushms, settings, &reports, cpu, rss, peak,
        ))
    }
    .await;
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let mut result = result?;
    if !system.starts_with("restreamer") {
        result.flushms = None;
    }
    Ok(result)
}

#[allow(clippy::too_many_arguments)]
fn summarise(
    system: &str,
    clients: usize,
    flushms: u64,
    settings: &Settings,
    reports: &[ClientReport],
    cpu: f64,
    rss: f64,
    peak: f64,
) -> RunResult {
    let expected = settings.bitrate as f64 / 8.0 * settings.window.as_secs_f64();
    let fast: Vec<&ClientReport> = reports.iter().filter(|r| r.kind == Kind::Fast).collect();
    let kept_up = fast
        .iter()
        .filter(|r| {
            r.status == 200 && r.continuity_errors == 0 && r.bytes as f64 >= 0.95 * expected
        })
        .count();
    let mut latency = crate::load::microseconds();
    for report in &fast {
        latency.add(&report.latency_us).unwrap();
    }
    let delivered: u64 = reports.iter().map(|r| r.bytes).sum();
    RunResult {
        system: system.to_string(),
        clients,
        flushms: Some(flushms),
        fast_clients: fast.len(),
        kept_up,
        continuity_errors: fast.iter().map(|r| r.continuity_errors).sum(),
        refused: reports.iter().filter(|r| r.status != 200).count(),
        delivered_bytes: delivered,
        cpu_seconds: cpu,
        cpu_seconds_per_gb: if delivered > 0 {
            cpu / (delivered as f64 / 1e9)
        } else {
            f64::NAN
        },
        rss_mb: rss,
        peak_rss_mb: peak,
        latency_p50_ms: latency.value_at_quantile(0.5) as f64 / 1000.0,
        latency_p99_ms: latency.value_at_quantile(0.99) as f64 / 1000.0,
        window_seconds: settings.window.as_secs_f64(),
    }
}

/// A `localhost` certificate for the TLS run, written to `dir`, and a
/// client connector that trusts it.
fn test_certificate(dir: &Path) -> anyhow::Result<(tokio_rustls::TlsConnector, String, String)> {
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])?.self_signed(&key)?;
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem())?;
    std::fs::write(&key_path, key.serialize_pem())?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone())?;
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)),
        cert_path.display().to_string(),
        key_path.display().to_string(),
    ))
}

/// User plus system CPU seconds of a process, from `/proc/PID/stat`.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // Fields after the command name (which may hold spaces) in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// Resident and peak resident memory of a process, in MB.
pub fn memory_mb(pid: u32) -> (f64, f64) {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return (f64::NAN, f64::NAN);
    };
    let field = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn icecast_config(dir: &Path, port: u16) -> anyhow::Result<PathBuf> {
    let running_as_root = unsafe { libc::geteuid() } == 0;
    let security = if running_as_root {
        // Icecast refuses to run as root.
        "<security><chroot>0</chroot><changeowner><user>nobody</user><group>nogroup</group></changeowner></security>"
    } else {
        "<security><chroot>0</chroot></security>"
    };
    // Queue comparable to restreamer's default outputbuffer (400 packets).
    let config = format!(
        r#"<icecast>
  <limits>
    <clients>10000</clients><sources>2</sources>
    <queue-size>{queue}</queue-size><burst-on-connect>0</burst-on-connect><burst-size>0</burst-size>
    <client-timeout>30</client-timeout><header-timeout>15</header-timeout><source-timeout>10</source-timeout>
  </limits>
  <authentication>
    <source-password>hackme</source-password><admin-user>admin</admin-user><admin-password>hackme</admin-password>
  </authentication>
  <hostname>localhost</hostname>
  <listen-socket><port>{port}</port><bind-address>127.0.0.1</bind-address></listen-socket>
  <fileserve>0</fileserve>
  <paths>
    <basedir>/usr/share/icecast2</basedir><logdir>{dir}</logdir><pidfile>{dir}/icecast.pid</pidfile>
    <webroot>/usr/share/icecast2/web</webroot><adminroot>/usr/share/icecast2/admin</adminroot>
  </paths>
  <logging><accesslog>access.log</accesslog><errorlog>error.log</errorlog><loglevel>1</loglevel></logging>
  {security}
</icecast>
"#,
        queue = 400 * 188,
        dir = dir.display(),
    );
    let path = dir.join("icecast.xml");
    std::fs::write(&path, config)?;
    Ok(path)
}

async fn wait_for_port(address: &str) -> anyhow::Result<()> {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(address).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("nothing listens on {address}")
}

/// Waits until the stream answers 200 (its upstream is connected).
pub async fn wait_for_stream(address: &str, path: &str) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for _ in 0..200 {
        if let Ok(mut socket) = tokio::net::TcpStream::connect(address).await {
            let request = format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n");
            if socket.write_all(request.as_bytes()).await.is_ok() {
                let mut head = [0u8; 64];
                if let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_secs(1), socket.read(&mut head)).await
                {
                    if String::from_utf8_lossy(&head[..n]).contains(" 200 ") {
                        return Ok(());
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("{address}{path} never served the stream")
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub fn tempdir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "restreamer-bench-{}-{}",
        std::process::id(),
        crate::ts::now_ns()
    ));
    std::fs::create_dir_all(&dir)?;
    // Icecast drops to nobody and writes its logs here.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))?;
    Ok(dir)
}
