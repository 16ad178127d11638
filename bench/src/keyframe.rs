//! Time to the first picture: from a viewer's connect to the first byte of
//! a keyframe it receives, with `instantstart` on and off, for H.264
//! streams with GOPs of 1, 2 and 5 s, in the same run.
//!
//! ffmpeg encodes one stream per GOP length (real H.264 and AAC; its muxer
//! sets the `random_access_indicator` on keyframes, which is how the viewers
//! here recognise them, independently of restreamer's own detection). One
//! restreamer plays each file as two live channels, one with instant start
//! and one without; viewers join every channel at random moments over a
//! window longer than two of the longest GOP.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::process::spawn;
use crate::run::{free_port, tempdir, wait_for_stream};

pub struct Keyframe {
    pub restreamer: PathBuf,
    pub gops: Vec<u32>,
    /// Viewers per channel.
    pub viewers: usize,
    /// Seconds over which viewers join.
    pub window: f64,
    pub bitrate: u64,
}

const PACKET: usize = 188;
const VIDEO_PID: u16 = 0x100;

/// Encodes a looping test channel with keyframes every `gop` seconds.
fn encode(dir: &Path, gop: u32, bitrate: u64) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("gop{gop}.ts"));
    let seconds = (4 * gop).max(12).to_string();
    let keyint = format!("keyint={0}:min-keyint={0}:scenecut=0", 25 * gop);
    let rate = format!("{}k", bitrate / 1000);
    let status = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=640x360:rate=25",
        ])
        .args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            &seconds,
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-x264-params",
            &keyint,
        ])
        .args(["-b:v", &rate, "-maxrate", &rate, "-bufsize", &rate])
        .args(["-c:a", "aac", "-b:a", "96k", "-f", "mpegts"])
        .arg(&path)
        .status()?;
    anyhow::ensure!(
        status.success(),
        "ffmpeg could not encode {}",
        path.display()
    );
    Ok(path)
}

/// Connects to `path` and returns the time to the first byte of a keyframe
/// (a video packet starting a PES with the random access indicator).
async fn time_to_keyframe(address: &str, path: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut socket = TcpStream::connect(address).await?;
    socket
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes())
        .await?;
    let mut data = Vec::new();
    let mut body = None;
    let mut checked = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(15), socket.read(&mut buf)).await??;
        anyhow::ensure!(n > 0, "{path}: stream ended before a keyframe");
        data.extend_from_slice(&buf[..n]);
        if body.is_none() {
            let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            body = Some(end + 4);
            checked = end + 4;
        }
        while checked + PACKET <= data.len() {
            let packet = &data[checked..checked + PACKET];
            let pid = u16::from(packet[1] & 0x1F) << 8 | u16::from(packet[2]);
            let start = packet[1] & 0x40 != 0;
            let random_access = packet[3] & 0x20 != 0 && packet[4] > 0 && packet[5] & 0x40 != 0;
            if pid == VIDEO_PID && start && random_access {
                return Ok(started.elapsed());
            }
            checked += PACKET;
        }
    }
}

fn percentile(sorted: &[f64], share: f64) -> f64 {
    let index = ((sorted.len() - 1) as f64 * share).round() as usize;
    sorted[index]
}

pub async fn run(bench: &Keyframe) -> anyhow::Result<(String, Vec<String>)> {
    let dir = tempdir()?;
    let mut resources = Vec::new();
    for &gop in &bench.gops {
        let file = encode(&dir, gop, bench.bitrate)?;
        let remote = format!("file://{}?realtime&loop", file.display());
        for on in [true, false] {
            resources.push(serde_json::json!({
                "type": "stream",
                "serve": channel(gop, on),
                "remote": remote,
                "instantstart": on,
            }));
        }
    }
    let address = format!("127.0.0.1:{}", free_port()?);
    let config = serde_json::json!({
        "listen": address,
        "reconnect": 1,
        "maxconnections": 0,
        "resources": resources,
    });
    let mut child = spawn(&bench.restreamer, &dir, &config)?;
    for &gop in &bench.gops {
        wait_for_stream(&address, &channel(gop, true)).await?;
        wait_for_stream(&address, &channel(gop, false)).await?;
    }
    // Let every channel pass a keyframe first.
    let longest = bench.gops.iter().copied().max().unwrap_or(1);
    tokio::time::sleep(Duration::from_secs(u64::from(longest) + 1)).await;

    let mut viewers = Vec::new();
    for &gop in &bench.gops {
        for on in [true, false] {
            for _ in 0..bench.viewers {
                let delay = rand::thread_rng().gen_range(0.0..bench.window);
                let address = address.clone();
                let path = channel(gop, on);
                viewers.push(tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs_f64(delay)).await;
                    (gop, on, time_to_keyframe(&address, &path).await)
                }));
            }
        }
    }
    let mut results: Vec<(u32, bool, Vec<f64>)> = Vec::new();
    let mut problems = Vec::new();
    for viewer in viewers {
        let (gop, on, result) = viewer.await?;
        match result {
            Ok(time) => match results.iter_mut().find(|(g, o, _)| *g == gop && *o == on) {
                Some((_, _, times)) => times.push(time.as_secs_f64() * 1000.0),
                None => results.push((gop, on, vec![time.as_secs_f64() * 1000.0])),
            },
            Err(error) => problems.push(error.to_string()),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);

    let mut report = format!(
        "Time from connect to the first keyframe byte, {} viewers per channel joining at random over {} s, H.264 at {} kbit/s:\n\n\
         | GOP | instantstart | median | p90 | worst |\n|---|---|---|---|---|\n",
        bench.viewers,
        bench.window,
        bench.bitrate / 1000
    );
    results.sort_by_key(|(gop, on, _)| (*gop, !*on));
    for (gop, on, times) in &mut results {
        times.sort_by(f64::total_cmp);
        let median = percentile(times, 0.5);
        let worst = *times.last().unwrap();
        report.push_str(&format!(
            "| {gop} s | {} | {median:.0} ms | {:.0} ms | {worst:.0} ms |\n",
            if *on { "on" } else { "off" },
            percentile(times, 0.9),
        ));
        if *on && (median > 100.0 || worst > 250.0) {
            problems.push(format!(
                "GOP {gop} s with instant start: median {median:.0} ms, worst {worst:.0} ms (target 100/250)"
            ));
        }
    }
    Ok((report, problems))
}

fn channel(gop: u32, on: bool) -> String {
    format!("/gop{gop}-{}.ts", if on { "on" } else { "off" })
}
