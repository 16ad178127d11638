//! What clients lose, and what it costs (issue 19): many low-rate streams
//! cost memory for what their rings hold.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

/// A memory figure of a process from /proc (`VmRSS`, `VmData`), in MB.
fn memory_mb(pid: i32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kb / 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_low_rate_streams_cost_memory_for_what_their_rings_hold() {
    // 40 UDP streams at 0.5 Mbit/s (332 packets/s) in datagrams of one
    // packet, no viewers: each ring holds about a second of its stream,
    // 75 KB, so 40 streams hold 3 MB of packets. A few packets per chunk
    // must not keep a 64 KiB read buffer each.
    const STREAMS: usize = 40;
    let ports: Vec<u16> = (0..STREAMS)
        .map(|_| {
            std::net::UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        })
        .collect();
    let resources: Vec<serde_json::Value> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            json!({"type": "stream", "serve": format!("/s{i}"), "remote": format!("udp://127.0.0.1:{port}")})
        })
        .collect();
    let proxy = Proxy::start(json!({"reconnect": 1, "resources": resources}));
    let idle = memory_mb(proxy.pid(), "VmData");
    let sender = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut sources: Vec<PacketSource> = (0..STREAMS).map(|_| PacketSource::new(0x100)).collect();
    // Three one-packet datagrams per stream every 9 ms: 0.5 Mbit/s each.
    let mut tick = tokio::time::interval(Duration::from_millis(9));
    let started = tokio::time::Instant::now();
    let (mut peak_rss, mut peak_data): (f64, f64) = (0.0, 0.0);
    while started.elapsed() < Duration::from_secs(15) {
        tick.tick().await;
        for (source, port) in sources.iter_mut().zip(&ports) {
            for _ in 0..3 {
                let _ = sender
                    .send_to(&source.packets(1), ("127.0.0.1", *port))
                    .await;
            }
        }
        if started.elapsed() > Duration::from_secs(5) {
            peak_rss = peak_rss.max(memory_mb(proxy.pid(), "VmRSS"));
            peak_data = peak_data.max(memory_mb(proxy.pid(), "VmData"));
        }
    }
    eprintln!(
        "{STREAMS} streams of 0.5 Mbit/s: peak RSS {peak_rss:.1} MB, VmData {idle:.1} MB idle, {peak_data:.1} MB at peak"
    );
    // Most streams must have played (a port may be taken by another test).
    assert!(proxy.events("upstream-connect").len() >= STREAMS * 9 / 10);
    // Resident memory catches up with the allocated over minutes (each new
    // block is touched where the next chunk lands), so the allocated is
    // what is checked: a few times what the rings hold, not 64 KiB a chunk.
    assert!(
        peak_data - idle < 24.0,
        "{STREAMS} streams of 0.5 Mbit/s allocated {:.0} MB beyond the idle proxy's",
        peak_data - idle
    );
}
