//! Stream health and content failover, with real streams made by ffmpeg,
//! served by real upstreams that break them the way real upstreams do
//! (only null packets, a video PID that stops, lost packets, a PCR gap),
//! and read through the real binary: what the metrics, the statistics, the
//! `check` API and the logs say, and what a viewer gets.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

/// Whether ffmpeg and ffprobe are here; they must be in CI.
fn have_ffmpeg() -> bool {
    if have("ffmpeg") && have("ffprobe") {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "ffmpeg is required in CI (apt-get install ffmpeg)"
    );
    eprintln!("ffmpeg not installed: skipping");
    false
}

/// The lavfi inputs and encoder settings of a test channel: H.264 at 25
/// fps with a 1 s GOP, AAC audio; `live` reads the inputs in real time.
fn channel_args(programs: usize, live: bool) -> Vec<String> {
    let mut args = Vec::new();
    for program in 0..programs {
        let (video, tone) = if program == 0 {
            ("testsrc", 440)
        } else {
            ("testsrc2", 880)
        };
        for input in [
            format!("{video}=size=160x120:rate=25"),
            format!("sine=frequency={tone}:sample_rate=48000"),
        ] {
            if live {
                args.push("-re".into());
            }
            args.extend(["-f".into(), "lavfi".into(), "-i".into(), input]);
        }
    }
    for program in 0..programs {
        let (v, a) = (2 * program, 2 * program + 1);
        args.extend(["-map", &format!("{v}:v"), "-map", &format!("{a}:a")].map(String::from));
    }
    args.extend(
        [
            "-pix_fmt",
            "yuv420p",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
            "-c:a",
            "aac",
            "-b:a",
            "64k",
        ]
        .map(String::from),
    );
    if programs > 1 {
        for program in 0..programs {
            let (v, a) = (2 * program, 2 * program + 1);
            args.extend(["-program".into(), format!("title=P{program}:st={v}:st={a}")]);
        }
    }
    args
}

/// A recorded channel of `seconds` with `programs` programs, made once per
/// test binary.
fn channel_file(programs: usize, seconds: u32) -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    static MAKING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = MAKING.lock().unwrap();
    let dir = DIR.get_or_init(|| tempfile::tempdir().unwrap());
    let path = dir.path().join(format!("{programs}p-{seconds}s.ts"));
    if !path.exists() {
        let status = Command::new("ffmpeg")
            .args(["-v", "error", "-y"])
            .args(channel_args(programs, false))
            .args(["-t", &seconds.to_string(), "-f", "mpegts"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success(), "ffmpeg could not make {}", path.display());
    }
    path
}

/// What a test upstream does with one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Send,
    Drop,
    /// Send a null packet instead.
    Null,
    /// Close the connection.
    Close,
}

/// Decides for each packet: `(connection number, time since the connection
/// was accepted, packet number in the file, the packet)`; may edit it.
type Shape = dyn Fn(usize, Duration, u64, &mut [u8]) -> Action + Send + Sync;

/// A TCP upstream that plays a recorded channel to each connection from
/// its start, at its average rate, shaped by a [`Shape`].
struct ChannelUpstream {
    address: String,
    /// When each connection was accepted.
    accepted: Arc<Mutex<Vec<Instant>>>,
    /// Packets the shape dropped.
    dropped: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl ChannelUpstream {
    async fn start(file: &Path, seconds: u32, shape: Arc<Shape>) -> ChannelUpstream {
        let data: Arc<Vec<u8>> = Arc::new(std::fs::read(file).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let dropped = Arc::new(AtomicU64::new(0));
        let (times, drops) = (Arc::clone(&accepted), Arc::clone(&dropped));
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                let number = {
                    let mut times = times.lock().unwrap();
                    times.push(Instant::now());
                    times.len() - 1
                };
                connections.spawn(play(
                    socket,
                    Arc::clone(&data),
                    seconds,
                    number,
                    Arc::clone(&shape),
                    Arc::clone(&drops),
                ));
            }
        });
        ChannelUpstream {
            address,
            accepted,
            dropped,
            task,
        }
    }

    fn url(&self) -> String {
        format!("tcp://{}", self.address)
    }

    fn accepted(&self) -> Vec<Instant> {
        self.accepted.lock().unwrap().clone()
    }

    /// Waits until `count` connections were accepted.
    async fn wait_for_connections(&self, count: usize, limit: Duration) -> Vec<Instant> {
        let deadline = Instant::now() + limit;
        loop {
            let accepted = self.accepted();
            if accepted.len() >= count {
                return accepted;
            }
            assert!(
                Instant::now() < deadline,
                "only {} connections after {limit:?}",
                accepted.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ChannelUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn play(
    mut socket: tokio::net::TcpStream,
    data: Arc<Vec<u8>>,
    seconds: u32,
    connection: usize,
    shape: Arc<Shape>,
    dropped: Arc<AtomicU64>,
) {
    let started = Instant::now();
    let packets = data.len() / PACKET;
    let per_tick = packets as f64 / f64::from(seconds) / 100.0;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut owed = 0.0;
    let mut next = 0;
    while next < packets {
        tick.tick().await;
        owed += per_tick;
        let mut out = Vec::new();
        while owed >= 1.0 && next < packets {
            owed -= 1.0;
            let mut packet = data[next * PACKET..(next + 1) * PACKET].to_vec();
            match shape(connection, started.elapsed(), next as u64, &mut packet) {
                Action::Send => out.extend_from_slice(&packet),
                Action::Drop => {
                    dropped.fetch_add(1, Ordering::SeqCst);
                }
                Action::Null => out.extend_from_slice(&null_packet()),
                Action::Close => {
                    let _ = socket.write_all(&out).await;
                    return;
                }
            }
            next += 1;
        }
        if socket.write_all(&out).await.is_err() {
            return;
        }
    }
}

fn null_packet() -> [u8; PACKET] {
    let mut packet = [0xFFu8; PACKET];
    packet[..4].copy_from_slice(&[0x47, 0x1F, 0xFF, 0x10]);
    packet
}

fn pid(packet: &[u8]) -> u16 {
    u16::from_be_bytes([packet[1] & 0x1F, packet[2]])
}

/// One stream at `/stream`, its `check` API at `/check`, statistics at
/// `/statistics`; `extra` is merged into the top level.
fn health_config(remotes: &[String], extra: Value) -> Value {
    let mut config = json!({
        "reconnect": 1,
        "timeout": 2,
        "flushms": 5,
        "contenttimeout": 10,
        "resources": [
            {"type": "stream", "serve": "/stream", "remotes": remotes},
            {"type": "api", "serve": "/statistics", "api": "statistics"},
            {"type": "api", "serve": "/check", "api": "check", "remote": "/stream"}
        ]
    });
    for (key, value) in extra.as_object().unwrap() {
        config[key] = value.clone();
    }
    config
}

/// The stream's `health` in the statistics API.
async fn health(proxy: &Proxy) -> Value {
    let mut response = Client::get(&proxy.url("/statistics")).await;
    assert_eq!(response.status, 200);
    let statistics: Value = serde_json::from_str(&response.text().await).unwrap();
    statistics["streams"]["/stream"]["health"].clone()
}

/// A per-stream metric of `/stream` (the main port serves `/metrics`).
async fn metric(proxy: &Proxy, name: &str) -> f64 {
    let text = Client::get(&proxy.url("/metrics")).await.text().await;
    let prefix = format!("{name}{{stream=\"/stream\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
        .parse()
        .unwrap()
}

async fn check_status(proxy: &Proxy) -> u16 {
    Client::get(&proxy.url("/check")).await.status
}

/// Waits up to `limit` for an `event` to be logged `count` times.
async fn wait_for(proxy: &Proxy, event: &str, count: usize, limit: Duration) -> Vec<Value> {
    let deadline = Instant::now() + limit;
    loop {
        let events = proxy.events(event);
        if events.len() >= count {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "{event} logged {} times in {limit:?}, not {count}",
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Pieces of a viewer's body and when they arrived.
type Chunks = Arc<Mutex<Vec<(Instant, Vec<u8>)>>>;

/// A viewer read in the background: what arrived, and when.
struct Recording {
    chunks: Chunks,
    task: tokio::task::JoinHandle<()>,
}

impl Recording {
    fn start(mut viewer: Client) -> Recording {
        let chunks = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&chunks);
        let task = tokio::spawn(async move {
            while let Some(data) = viewer.next_body().await {
                sink.lock().unwrap().push((Instant::now(), data));
            }
        });
        Recording { chunks, task }
    }

    /// Whole packets that arrived after `from`.
    fn since(&self, from: Instant) -> Vec<u8> {
        let mut offset = 0;
        let mut out = Vec::new();
        for (at, data) in self.chunks.lock().unwrap().iter() {
            if *at >= from {
                // Start on the first packet boundary.
                let skip = (PACKET - offset % PACKET) % PACKET;
                if out.is_empty() {
                    out.extend_from_slice(data.get(skip.min(data.len())..).unwrap_or_default());
                } else {
                    out.extend_from_slice(data);
                }
            }
            offset += data.len();
        }
        out.truncate(out.len() / PACKET * PACKET);
        out
    }

    /// Whether the viewer's stream is still open.
    fn open(&self) -> bool {
        !self.task.is_finished()
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Video frames ffmpeg decodes from `data`.
fn decoded_video_frames(data: &[u8]) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("viewer.ts");
    std::fs::write(&path, data).unwrap();
    let output = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
        ])
        .arg(&path)
        .output()
        .unwrap();
    // One line per program section too: the count is the number.
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.trim().trim_end_matches(',').parse().ok())
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_sending_only_null_packets_is_failed_over_and_viewers_stay() {
    if !have_ffmpeg() {
        return;
    }
    // The first connection carries the channel for 2 s, then only null
    // packets; later connections carry the channel.
    const NULLS_AFTER: Duration = Duration::from_secs(2);
    let shape: Arc<Shape> = Arc::new(|connection, elapsed, _, _| {
        if connection == 0 && elapsed >= NULLS_AFTER {
            Action::Null
        } else {
            Action::Send
        }
    });
    let upstream = ChannelUpstream::start(&channel_file(1, 20), 20, shape).await;
    let proxy = Proxy::start(health_config(
        &[upstream.url()],
        json!({"contenttimeout": 3}),
    ));
    proxy.wait_for_event("upstream-connect", 1).await;
    let viewer = Client::get(&proxy.url("/stream")).await;
    assert_eq!(viewer.status, 200);
    let recording = Recording::start(viewer);

    let accepted = upstream
        .wait_for_connections(2, Duration::from_secs(20))
        .await;
    let nulls_from = accepted[0] + NULLS_AFTER;
    let failover = accepted[1] - nulls_from;
    assert!(
        failover >= Duration::from_millis(2900) && failover <= Duration::from_secs(4),
        "failed over {failover:?} after the null packets began (contenttimeout 3 s)"
    );
    let lost = &proxy.events("content-lost")[0];
    let reason = lost["reason"].as_str().unwrap();
    assert!(
        reason.contains("no packet of any elementary stream") && reason.contains("null packets"),
        "{lost}"
    );
    wait_for(&proxy, "content-restored", 1, Duration::from_secs(10)).await;

    // The viewer was never disconnected, and decodes the new connection.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(recording.open(), "the viewer's stream ended");
    assert!(proxy.events("client-stopped").is_empty());
    let frames = decoded_video_frames(&recording.since(accepted[1]));
    assert!(
        frames >= 25,
        "only {frames} frames decoded after the failover"
    );
    assert_eq!(
        metric(&proxy, "restreamer_content_failovers_total").await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_answers_404_while_content_is_lost_and_200_once_restored() {
    if !have_ffmpeg() {
        return;
    }
    // Two connections of null packets only, then the channel.
    let shape: Arc<Shape> = Arc::new(|connection, _, _, _| {
        if connection < 2 {
            Action::Null
        } else {
            Action::Send
        }
    });
    let upstream = ChannelUpstream::start(&channel_file(1, 20), 20, shape).await;
    let proxy = Proxy::start(health_config(
        &[upstream.url()],
        json!({"contenttimeout": 3}),
    ));
    wait_for(&proxy, "content-lost", 1, Duration::from_secs(20)).await;
    assert_eq!(
        check_status(&proxy).await,
        404,
        "content lost, check says 200"
    );
    assert_eq!(metric(&proxy, "restreamer_stream_content_ok").await, 0.0);
    assert_eq!(health(&proxy).await["content_ok"], false);

    wait_for(&proxy, "content-restored", 1, Duration::from_secs(20)).await;
    assert_eq!(
        proxy.events("content-lost").len(),
        2,
        "each null connection is lost once"
    );
    assert_eq!(check_status(&proxy).await, 200);
    assert_eq!(metric(&proxy, "restreamer_stream_content_ok").await, 1.0);
    let health = health(&proxy).await;
    assert_eq!(health["content_ok"], true);
    assert_eq!(health["content_failovers"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_pid_that_stops_while_audio_goes_on_is_lost_content() {
    if !have_ffmpeg() {
        return;
    }
    const VIDEO_STOPS: Duration = Duration::from_secs(2);
    let shape: Arc<Shape> = Arc::new(|connection, elapsed, _, packet| {
        if connection == 0 && elapsed >= VIDEO_STOPS && pid(packet) == 0x100 {
            Action::Drop
        } else {
            Action::Send
        }
    });
    let upstream = ChannelUpstream::start(&channel_file(1, 20), 20, shape).await;
    let proxy = Proxy::start(health_config(
        &[upstream.url()],
        json!({"contenttimeout": 3}),
    ));
    let accepted = upstream
        .wait_for_connections(2, Duration::from_secs(20))
        .await;
    let failover = accepted[1] - (accepted[0] + VIDEO_STOPS);
    assert!(
        failover <= Duration::from_secs(4),
        "failed over {failover:?} after the video stopped (contenttimeout 3 s)"
    );
    let lost = &proxy.events("content-lost")[0];
    assert!(
        lost["reason"].as_str().unwrap().contains("video PID 256"),
        "{lost}"
    );
    // Losing a whole PID is not a continuity error.
    assert_eq!(
        metric(&proxy, "restreamer_continuity_errors_total").await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_lost_packet_is_counted_and_ccerrorlimit_fails_over() {
    if !have_ffmpeg() {
        return;
    }
    // Every 100th packet of the file is lost on the way.
    let shape: Arc<Shape> = Arc::new(|_, _, number, _| {
        if number % 100 == 99 {
            Action::Drop
        } else {
            Action::Send
        }
    });
    let upstream = ChannelUpstream::start(&channel_file(1, 20), 20, shape).await;
    let mut config = health_config(&[upstream.url()], json!({}));
    let proxy = Proxy::start(config.clone());
    proxy.wait_for_event("upstream-connect", 1).await;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(6)).await;

    let dropped_before = upstream.dropped.load(Ordering::SeqCst);
    let counted = metric(&proxy, "restreamer_continuity_errors_total").await as u64;
    let dropped_after = upstream.dropped.load(Ordering::SeqCst);
    // A loss is seen when the next packet of its PID arrives.
    assert!(
        counted + 3 >= dropped_before && counted <= dropped_after,
        "{counted} continuity errors counted, {dropped_before}..{dropped_after} packets dropped"
    );
    assert!(dropped_before >= 5, "only {dropped_before} packets dropped");
    assert_eq!(health(&proxy).await["continuity_errors"], counted);
    // Logged with a count, at most once a second.
    let logged = proxy.events("continuity-errors");
    let seconds = started.elapsed().as_secs() + 1;
    assert!(
        !logged.is_empty() && logged.len() as u64 <= seconds,
        "{} continuity-errors lines in {seconds} s",
        logged.len()
    );
    let sum: u64 = logged.iter().map(|e| e["count"].as_u64().unwrap()).sum();
    assert!(sum <= counted && sum > 0, "logged {sum} of {counted}");
    assert!(
        proxy.events("content-lost").is_empty(),
        "no ccerrorlimit: no failover"
    );

    // With a limit below the loss rate, the connection counts as lost.
    config["resources"][0]["ccerrorlimit"] = json!(5);
    proxy.rewrite(config);
    let lost = &wait_for(&proxy, "content-lost", 1, Duration::from_secs(20)).await[0];
    assert!(
        lost["reason"]
            .as_str()
            .unwrap()
            .contains("continuity errors within 10 s (ccerrorlimit 5)"),
        "{lost}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pcr_gap_is_counted_and_shown() {
    if !have_ffmpeg() {
        return;
    }
    // For 400 ms of the first connection, no packet carries its PCR.
    let shape: Arc<Shape> = Arc::new(|connection, elapsed, _, packet| {
        let in_gap = elapsed >= Duration::from_secs(2) && elapsed < Duration::from_millis(2400);
        let has_pcr = packet[3] & 0x20 != 0 && packet[4] >= 7 && packet[5] & 0x10 != 0;
        if connection == 0 && in_gap && has_pcr {
            packet[5] &= !0x10;
        }
        Action::Send
    });
    let upstream = ChannelUpstream::start(&channel_file(1, 20), 20, shape).await;
    let proxy = Proxy::start(health_config(&[upstream.url()], json!({})));
    let accepted = upstream
        .wait_for_connections(1, Duration::from_secs(20))
        .await;
    tokio::time::sleep_until((accepted[0] + Duration::from_millis(3500)).into()).await;
    let health = health(&proxy).await;
    assert_eq!(health["pcr_errors"], 1, "{health}");
    let interval = health["pcr_interval_seconds"].as_f64().unwrap();
    assert!(interval >= 0.35, "largest PCR interval {interval} s");
    assert_eq!(metric(&proxy, "restreamer_pcr_errors_total").await, 1.0);
    assert!(metric(&proxy, "restreamer_pcr_interval_seconds").await >= 0.35);
    assert_eq!(health["continuity_errors"], 0);
    assert_eq!(health["content_ok"], true, "a PCR gap is no content loss");
}

/// Checks a clean stream's figures: nothing counted, tables and PCR
/// within the DVB limits, every elementary stream flowing.
fn assert_clean(health: &Value, streams: usize) {
    assert_eq!(health["content_ok"], true, "{health}");
    assert_eq!(health["continuity_errors"], 0, "{health}");
    assert_eq!(health["pcr_errors"], 0, "{health}");
    assert_eq!(health["content_failovers"], 0, "{health}");
    for key in ["pat_interval_seconds", "pmt_interval_seconds"] {
        let interval = health[key].as_f64().unwrap();
        assert!(interval < 0.6, "{key} {interval}: {health}");
    }
    let pcr = health["pcr_interval_seconds"].as_f64().unwrap();
    assert!(pcr > 0.0 && pcr <= 0.1, "PCR interval {pcr}: {health}");
    assert!(health["bitrate"].as_u64().unwrap() > 50_000, "{health}");
    let listed = health["streams"].as_array().unwrap();
    assert_eq!(listed.len(), streams, "{health}");
    for stream in listed {
        assert!(
            stream["packets_per_second"].as_f64().unwrap() > 1.0,
            "{stream} does not flow: {health}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_live_stream_from_ffmpeg_counts_no_error_in_30_seconds() {
    if !have_ffmpeg() {
        return;
    }
    let ffmpeg = String::from_utf8(Command::new("which").arg("ffmpeg").output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string();
    let mut args = vec!["-v".to_string(), "error".into()];
    args.extend(channel_args(1, true));
    args.extend(["-t", "30", "-f", "mpegts", "-"].map(String::from));
    let remote = format!("fork://{ffmpeg}?{}", args.join("+"));
    let proxy = Proxy::start(health_config(&[remote], json!({})));
    proxy.wait_for_event("upstream-connect", 1).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_clean(&health(&proxy).await, 2);
    assert_eq!(check_status(&proxy).await, 200);

    // ffmpeg ends after 30 s of stream.
    wait_for(&proxy, "upstream-loss", 1, Duration::from_secs(60)).await;
    let health = health(&proxy).await;
    assert_eq!(health["continuity_errors"], 0, "{health}");
    assert_eq!(health["pcr_errors"], 0, "{health}");
    assert!(proxy.events("content-lost").is_empty());
    assert!(proxy.events("continuity-errors").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_program_file_played_in_a_loop_counts_no_error() {
    if !have_ffmpeg() {
        return;
    }
    let file = channel_file(2, 4);
    let remote = format!("file://{}?realtime&loop", file.display());
    let proxy = Proxy::start(health_config(&[remote], json!({})));
    proxy.wait_for_event("upstream-connect", 1).await;
    // Three loops of the 4 s file.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let health = health(&proxy).await;
    assert_clean(&health, 4);
    assert!(
        health["discontinuities"].as_u64().unwrap() >= 2,
        "the loops are discontinuities: {health}"
    );
    assert_eq!(check_status(&proxy).await, 200);
    assert!(proxy.events("content-lost").is_empty());
    assert_eq!(proxy.events("upstream-connect").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_between_upstreams_counts_a_discontinuity_not_errors() {
    if !have_ffmpeg() {
        return;
    }
    // Each upstream ends its first connection after 3 s.
    let shape: Arc<Shape> = Arc::new(|connection, elapsed, _, _| {
        if connection == 0 && elapsed >= Duration::from_secs(3) {
            Action::Close
        } else {
            Action::Send
        }
    });
    let file = channel_file(2, 20);
    let a = ChannelUpstream::start(&file, 20, Arc::clone(&shape)).await;
    let b = ChannelUpstream::start(&file, 20, shape).await;
    let proxy = Proxy::start(health_config(&[a.url(), b.url()], json!({})));
    proxy.wait_for_event("upstream-connect", 1).await;
    let viewer = Client::get(&proxy.url("/stream")).await;
    let recording = Recording::start(viewer);
    wait_for(&proxy, "upstream-connect", 2, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let health = health(&proxy).await;
    assert_clean(&health, 4);
    assert!(health["discontinuities"].as_u64().unwrap() >= 1, "{health}");
    assert!(proxy.events("content-lost").is_empty());
    assert!(
        recording.open(),
        "the viewer's stream ended at the failover"
    );
    assert_eq!(
        metric(&proxy, "restreamer_continuity_errors_total").await,
        0.0
    );
}
