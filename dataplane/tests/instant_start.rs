//! Instant start, end to end: real streams made by ffmpeg, played by the
//! proxy as live channels, viewers joining at random moments.
//!
//! For every kind of stream (H.264 with GOPs of 1, 2 and 5 s, H.265, MPEG-2
//! video, audio only, an encoder that sets no random_access_indicator, two
//! programs), 20 viewers join at random moments; each one's first packets
//! are the PAT and the PMTs, no PID starts in the middle of a unit, its
//! first video packet is a keyframe (by ffprobe), and `ffmpeg -v error`
//! decodes its first 3 s without a word. A viewer that stalls and loses
//! packets resumes on a keyframe with fresh tables.
//!
//! The streams are encoded once per run of this file (small pictures, 12 s,
//! played looped and paced by their clock).

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use common::*;
use rand::Rng;

/// The streams the tests play.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    H264 {
        gop_seconds: u32,
    },
    H265,
    Mpeg2,
    AudioOnly,
    /// H.264, 2 s GOP, with every random_access_indicator cleared.
    NoIndicator,
    TwoPrograms,
    /// H.264, 1 s GOP, 2 Mbit/s (noise), for the slow viewer.
    Busy,
}

const SECONDS: u32 = 12;

/// Where the encoded streams are kept for the run.
fn stream_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

/// The stream file of `kind`, encoded on first use.
fn stream_file(kind: Kind) -> PathBuf {
    static MADE: OnceLock<Mutex<HashMap<Kind, PathBuf>>> = OnceLock::new();
    let made = MADE.get_or_init(Default::default);
    if let Some(path) = made.lock().unwrap().get(&kind) {
        return path.clone();
    }
    let path = stream_dir().join(format!("{kind:?}.ts").replace([' ', '{', '}', ':'], ""));
    let video = |source: &str| format!("{source}=size=320x240:rate=25");
    let seconds = SECONDS.to_string();
    let mut args: Vec<String> = vec!["-v".into(), "error".into(), "-y".into()];
    let mut add = |items: &[&str]| args.extend(items.iter().map(|s| s.to_string()));
    let x264 = |gop: u32| format!("keyint={0}:min-keyint={0}:scenecut=0", gop * 25);
    match kind {
        Kind::H264 { gop_seconds } => {
            add(&[
                "-f",
                "lavfi",
                "-i",
                &video("testsrc"),
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:sample_rate=48000",
            ]);
            add(&[
                "-t",
                &seconds,
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-x264-params",
                &x264(gop_seconds),
            ]);
            add(&["-c:a", "aac", "-b:a", "64k"]);
        }
        Kind::Busy => {
            add(&[
                "-f",
                "lavfi",
                "-i",
                &video("testsrc"),
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:sample_rate=48000",
            ]);
            add(&["-vf", "noise=alls=8:allf=t"]);
            add(&[
                "-t",
                &seconds,
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-x264-params",
                &x264(1),
            ]);
            add(&["-c:a", "aac", "-b:a", "64k"]);
        }
        Kind::NoIndicator => {
            add(&[
                "-f",
                "lavfi",
                "-i",
                &video("testsrc"),
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:sample_rate=48000",
            ]);
            add(&[
                "-t",
                &seconds,
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-x264-params",
                &x264(2),
            ]);
            add(&["-c:a", "aac", "-b:a", "64k"]);
        }
        Kind::H265 => {
            add(&[
                "-f",
                "lavfi",
                "-i",
                &video("testsrc"),
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:sample_rate=48000",
            ]);
            add(&["-t", &seconds, "-c:v", "libx265", "-preset", "ultrafast"]);
            add(&[
                "-x265-params",
                "keyint=50:min-keyint=50:scenecut=0:log-level=error",
            ]);
            add(&["-c:a", "aac", "-b:a", "64k"]);
        }
        Kind::Mpeg2 => {
            add(&[
                "-f",
                "lavfi",
                "-i",
                &video("testsrc"),
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:sample_rate=48000",
            ]);
            add(&[
                "-t",
                &seconds,
                "-c:v",
                "mpeg2video",
                "-g",
                "50",
                "-b:v",
                "1M",
                "-c:a",
                "mp2",
            ]);
        }
        Kind::AudioOnly => {
            add(&["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]);
            add(&["-t", &seconds, "-c:a", "aac", "-b:a", "96k"]);
        }
        Kind::TwoPrograms => {
            add(&[
                "-f",
                "lavfi",
                "-i",
                &video("testsrc"),
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:sample_rate=48000",
            ]);
            add(&[
                "-f",
                "lavfi",
                "-i",
                &video("testsrc2"),
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=660:sample_rate=48000",
            ]);
            add(&["-map", "0:v", "-map", "1:a", "-map", "2:v", "-map", "3:a"]);
            add(&[
                "-t",
                &seconds,
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-x264-params",
                &x264(2),
            ]);
            add(&["-c:a", "aac", "-b:a", "64k"]);
            add(&[
                "-program",
                "program_num=1:title=one:st=0:st=1",
                "-program",
                "program_num=2:title=two:st=2:st=3",
            ]);
        }
    }
    args.extend(["-f".into(), "mpegts".into(), path.to_str().unwrap().into()]);
    let output = Command::new("ffmpeg")
        .args(&args)
        .output()
        .expect("ffmpeg runs");
    assert!(
        output.status.success(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    if kind == Kind::NoIndicator {
        let mut data = std::fs::read(&path).unwrap();
        let cleared = clear_random_access_indicators(&mut data);
        assert!(cleared > 0, "the encoder set no indicator to clear");
        std::fs::write(&path, data).unwrap();
    }
    made.lock().unwrap().insert(kind, path.clone());
    path
}

/// Clears every adaptation field's random_access_indicator; returns how many
/// were set.
fn clear_random_access_indicators(data: &mut [u8]) -> usize {
    let mut cleared = 0;
    for packet in data.chunks_exact_mut(PACKET) {
        if packet[3] & 0x20 != 0 && packet[4] > 0 && packet[5] & 0x40 != 0 {
            packet[5] &= !0x40;
            cleared += 1;
        }
    }
    cleared
}

fn pid(packet: &[u8]) -> u16 {
    u16::from(packet[1] & 0x1F) << 8 | u16::from(packet[2])
}

fn pusi(packet: &[u8]) -> bool {
    packet[1] & 0x40 != 0
}

fn has_payload(packet: &[u8]) -> bool {
    packet[3] & 0x10 != 0
}

/// The PMT PIDs of a PAT packet, in its order.
fn pmt_pids(pat: &[u8]) -> Vec<u16> {
    assert!(pusi(pat) && pid(pat) == 0, "not a PAT packet");
    let section = &pat[5 + usize::from(pat[4])..];
    let length = 3 + (usize::from(section[1] & 0x0F) << 8 | usize::from(section[2]));
    section[8..length - 4]
        .chunks_exact(4)
        .filter(|e| e[0] != 0 || e[1] != 0)
        .map(|e| u16::from(e[2] & 0x1F) << 8 | u16::from(e[3]))
        .collect()
}

/// What a viewer's first seconds must show.
fn check_start(kind: Kind, received: &[u8], label: &str) {
    assert!(
        received.len() >= 20 * PACKET,
        "{label}: only {} bytes",
        received.len()
    );
    let packets: Vec<&[u8]> = received.chunks_exact(PACKET).collect();
    // PAT first, then each program's PMT.
    let head: Vec<(u16, bool)> = packets[..6].iter().map(|p| (pid(p), pusi(p))).collect();
    assert!(
        pid(packets[0]) == 0 && pusi(packets[0]),
        "{label}: first packets (PID, PUSI) {head:?}"
    );
    let pmts = pmt_pids(packets[0]);
    let expected_programs = if kind == Kind::TwoPrograms { 2 } else { 1 };
    assert_eq!(
        pmts.len(),
        expected_programs,
        "{label}: programs in the first PAT"
    );
    for (i, &pmt) in pmts.iter().enumerate() {
        assert_eq!(
            pid(packets[1 + i]),
            pmt,
            "{label}: packet {} is not the PMT",
            1 + i
        );
        assert!(pusi(packets[1 + i]));
    }
    // No PID starts in the middle of a PES packet or section.
    let mut started = HashSet::new();
    for (i, packet) in packets.iter().enumerate() {
        let pid = pid(packet);
        if pid == 0x1FFF || !has_payload(packet) || started.contains(&pid) {
            continue;
        }
        assert!(
            pusi(packet),
            "{label}: PID {pid:#x} starts mid-unit at packet {i}"
        );
        started.insert(pid);
    }
    // The keyed stream's first packet: ffmpeg puts program 1's first stream
    // on PID 0x100.
    let first = packets
        .iter()
        .position(|p| pid(p) == 0x100)
        .expect("keyed stream");
    assert!(pusi(packets[first]), "{label}");
}

/// A recording without the last, unfinished, unit of each PID (where the
/// recording was cut off, which is not what is being checked).
fn without_unfinished_ends(received: &[u8]) -> Vec<u8> {
    let packets: Vec<&[u8]> = received.chunks_exact(PACKET).collect();
    let mut last_start = HashMap::new();
    for (i, packet) in packets.iter().enumerate() {
        if pusi(packet) {
            last_start.insert(pid(packet), i);
        }
    }
    packets
        .iter()
        .enumerate()
        .filter(|(i, packet)| last_start.get(&pid(packet)).is_none_or(|&last| *i < last))
        .flat_map(|(_, packet)| packet.iter().copied())
        .collect()
}

/// Runs ffprobe/ffmpeg on a viewer's recording.
fn check_decodes(kind: Kind, path: &Path, label: &str) {
    let recording = std::fs::read(path).unwrap();
    std::fs::write(path, without_unfinished_ends(&recording)).unwrap();
    if kind != Kind::AudioOnly {
        let probe = Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-select_streams",
                "v:0",
                "-show_entries",
                "packet=flags",
            ])
            .args(["-read_intervals", "%+#1", "-of", "csv=p=0"])
            .arg(path)
            .output()
            .unwrap();
        let flags = String::from_utf8_lossy(&probe.stdout);
        assert!(
            flags.starts_with('K'),
            "{label}: first video packet flags {flags:?}"
        );
    }
    let decode = Command::new("ffmpeg")
        .args(["-v", "error", "-t", "3", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    let errors = String::from_utf8_lossy(&decode.stderr);
    assert!(
        decode.status.success() && errors.is_empty(),
        "{label}: ffmpeg says {errors}"
    );
}

/// The proxy playing `kind` as a live channel at `/stream`.
fn play(kind: Kind, extra: serde_json::Value) -> Proxy {
    let url = format!("file://{}?realtime&loop", stream_file(kind).display());
    let mut config = stream_config(&[url]);
    if let serde_json::Value::Object(extra) = extra {
        for (key, value) in extra {
            config[key] = value;
        }
    }
    Proxy::start(config)
}

async fn wait_live(proxy: &Proxy) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let client = Client::get(&proxy.url("/stream")).await;
        if client.status == 200 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stream did not come up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// 20 viewers join at random moments within the first 5 s and record 3.5 s.
async fn twenty_viewers_start_clean(kind: Kind) {
    if !have("ffmpeg") || !have("ffprobe") {
        eprintln!("ffmpeg not installed: skipped");
        return;
    }
    let proxy = play(kind, serde_json::json!({}));
    wait_live(&proxy).await;
    // A viewer that comes in the first moments of an upstream connection,
    // before its tables have passed, gets it from its very start (not
    // necessarily a PAT first): join a running stream.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let url = proxy.url("/stream");
    let viewers: Vec<_> = (0..20)
        .map(|i| {
            let url = url.clone();
            let delay = rand::thread_rng().gen_range(0..5000);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                let mut client = Client::get(&url).await;
                assert_eq!(client.status, 200);
                (i, delay, client.read_for(Duration::from_millis(3500)).await)
            })
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    for viewer in viewers {
        let (i, delay, received) = viewer.await.unwrap();
        let label = format!("{kind:?}, viewer {i} joining at {delay} ms");
        check_start(kind, &received, &label);
        let path = dir.path().join(format!("viewer{i}.ts"));
        std::fs::write(&path, &received).unwrap();
        check_decodes(kind, &path, &label);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_gop_1s_viewers_start_on_a_keyframe() {
    twenty_viewers_start_clean(Kind::H264 { gop_seconds: 1 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_gop_2s_viewers_start_on_a_keyframe() {
    twenty_viewers_start_clean(Kind::H264 { gop_seconds: 2 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_gop_5s_viewers_start_on_a_keyframe() {
    twenty_viewers_start_clean(Kind::H264 { gop_seconds: 5 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h265_viewers_start_on_an_irap_picture() {
    twenty_viewers_start_clean(Kind::H265).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mpeg2_viewers_start_on_a_sequence_header_and_i_picture() {
    twenty_viewers_start_clean(Kind::Mpeg2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_only_viewers_start_on_an_audio_frame() {
    twenty_viewers_start_clean(Kind::AudioOnly).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyframes_are_found_when_the_encoder_sets_no_indicator() {
    twenty_viewers_start_clean(Kind::NoIndicator).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_program_viewers_get_both_tables_and_start_on_the_first_programs_keyframe() {
    twenty_viewers_start_clean(Kind::TwoPrograms).await;
}

/// The continuity counter of a packet.
fn cc(packet: &[u8]) -> u8 {
    packet[3] & 0x0F
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_fell_behind_resumes_on_a_keyframe_with_fresh_tables() {
    if !have("ffmpeg") || !have("ffprobe") {
        eprintln!("ffmpeg not installed: skipped");
        return;
    }
    let kind = Kind::Busy;
    let proxy = play(kind, serde_json::json!({"outputbuffer": 100}));
    wait_live(&proxy).await;
    // A small receive buffer, so that a stall soon shows at the proxy.
    let mut client = proxy.stalled_client("/stream", 2048).await;
    let mut received = client.read_for(Duration::from_millis(1500)).await;
    // 10 s of a 2 Mbit/s stream: more than the kernel's socket buffers and
    // the second of lag a viewer is allowed.
    tokio::time::sleep(Duration::from_secs(10)).await;
    received.extend(client.read_for(Duration::from_secs(4)).await);
    drop(client);
    proxy.wait_for_event("client-stopped", 2).await;
    let stopped = proxy
        .events("client-stopped")
        .into_iter()
        .find(|event| event["seconds"].as_f64().unwrap() > 9.0)
        .expect("the viewer's client-stopped event");
    assert!(
        stopped["dropped_packets"].as_u64().unwrap() > 0,
        "the viewer lost nothing: {stopped}"
    );

    // Where the video's continuity counter breaks, the viewer resumed: on a
    // keyframe's first packet, right after a PAT and a PMT. A viewer this
    // slow may fall behind more than once, and one resume in sixteen keeps
    // the counter in step by chance: every PAT, PMT, keyframe start is taken
    // as a possible resume (ffmpeg also writes its tables before each
    // keyframe), and each break must be one of them.
    let packets: Vec<&[u8]> = received.chunks_exact(PACKET).collect();
    let pmt = pmt_pids(packets[0])[0];
    let starts: Vec<usize> = (2..packets.len())
        .filter(|&i| pid(packets[i - 2]) == 0 && pid(packets[i - 1]) == pmt)
        .filter(|&i| pid(packets[i]) == 0x100 && pusi(packets[i]))
        .collect();
    let video: Vec<usize> = (0..packets.len())
        .filter(|&i| pid(packets[i]) == 0x100 && has_payload(packets[i]))
        .collect();
    let resumes: Vec<usize> = video
        .windows(2)
        .filter(|w| cc(packets[w[1]]) != (cc(packets[w[0]]) + 1) & 0x0F)
        .map(|w| w[1])
        .collect();
    assert!(
        !resumes.is_empty(),
        "no gap in the video: the viewer did not fall behind"
    );
    for &resume in &resumes {
        assert!(
            starts.contains(&resume),
            "packet {resume}: resumed without PAT, PMT and a keyframe start"
        );
    }
    // What follows the first resume, up to the next possible one, decodes
    // cleanly (the unit cut off there is left out, as at a recording's end).
    let end = starts
        .iter()
        .find(|&&start| start > resumes[0])
        .map_or(packets.len(), |&next| next - 2);
    let tail = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        tail.path(),
        &received[(resumes[0] - 2) * PACKET..end * PACKET],
    )
    .unwrap();
    check_decodes(kind, tail.path(), "after the resume");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instant_start_is_measured_and_can_be_turned_off_per_stream() {
    if !have("ffmpeg") {
        eprintln!("ffmpeg not installed: skipped");
        return;
    }
    let url = format!(
        "file://{}?realtime&loop",
        stream_file(Kind::H264 { gop_seconds: 2 }).display()
    );
    let mut config = stream_config(std::slice::from_ref(&url));
    config["resources"]
        .as_array_mut()
        .unwrap()
        .extend([
            serde_json::json!({"type": "stream", "serve": "/off", "remote": url, "instantstart": false}),
            serde_json::json!({"type": "api", "serve": "/statistics", "api": "statistics"}),
            serde_json::json!({"type": "api", "serve": "/metrics", "api": "prometheus"}),
        ]);
    let proxy = Proxy::start(config);
    wait_live(&proxy).await;
    // Two keyframes at least, so the interval is measured.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let statistics: serde_json::Value =
        serde_json::from_str(&Client::get(&proxy.url("/statistics")).await.text().await).unwrap();
    let on = &statistics["streams"]["/stream"];
    let off = &statistics["streams"]["/off"];
    for stream in [on, off] {
        let interval = stream["keyframe_interval_ms"].as_u64().unwrap();
        assert!(
            (1900..=2100).contains(&interval),
            "keyframe interval {interval} ms: {stream}"
        );
    }
    assert!(on["instant_start_bytes"].as_u64().unwrap() > 0, "{on}");
    assert_eq!(off["instant_start_bytes"].as_u64().unwrap(), 0, "{off}");
    let metrics = Client::get(&proxy.url("/metrics")).await.text().await;
    assert!(
        metrics.contains("restreamer_keyframe_interval_seconds{stream=\"/stream\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("restreamer_instant_start_bytes{stream=\"/off\"} 0"),
        "{metrics}"
    );

    // With it on, a viewer gets the tables first; with it off it starts on
    // the next packet, which is a PAT followed by a PMT only by chance (one
    // packet in a hundred or so here: three in a row would be a wonder).
    let mut viewer = Client::get(&proxy.url("/stream")).await;
    let first = viewer.read_body(2 * PACKET, Duration::from_secs(5)).await;
    assert_eq!(pid(&first[..PACKET]), 0);
    let mut tables_first = 0;
    for _ in 0..3 {
        let mut viewer = Client::get(&proxy.url("/off")).await;
        let first = viewer.read_body(2 * PACKET, Duration::from_secs(5)).await;
        if pid(&first[..PACKET]) == 0 && pid(&first[PACKET..2 * PACKET]) == 0x1000 {
            tables_first += 1;
        }
        tokio::time::sleep(Duration::from_millis(137)).await;
    }
    assert!(
        tables_first < 3,
        "instantstart false still starts viewers on the tables"
    );
}
