//! Micro-benchmarks of the hot path: packet alignment throughput, stream
//! inspection throughput, the stream health checks alone, and the hub's cost to publish a batch and hand it
//! to 1, 100 and 10,000 clients.
//!
//! `cargo bench -p restreamer --bench hot_path`

use std::time::Instant;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures_util::FutureExt;
use restreamer::stream::align::{Aligner, PACKET_SIZE};
use restreamer::stream::hub::Hub;
use restreamer::stream::inspect::health::Health;
use restreamer::stream::inspect::Inspector;

/// `count` valid packets.
fn packets(count: usize) -> Vec<u8> {
    (0..count)
        .flat_map(|i| {
            let mut packet = [i as u8; PACKET_SIZE];
            packet[0] = 0x47;
            packet
        })
        .collect()
}

fn alignment(c: &mut Criterion) {
    let input = packets(10_000);
    let mut group = c.benchmark_group("align");
    group.throughput(Throughput::Bytes(input.len() as u64));
    for read_size in [1316, 65536] {
        group.bench_with_input(
            BenchmarkId::new("reads_of", read_size),
            &read_size,
            |b, &read_size| {
                let mut out = Vec::new();
                b.iter(|| {
                    let mut aligner = Aligner::new();
                    for piece in input.chunks(read_size) {
                        aligner.read_buffer(piece.len()).extend_from_slice(piece);
                        aligner.scan(|_| {});
                        aligner.take(&mut out);
                        out.clear();
                    }
                });
            },
        );
    }
    group.finish();
}

/// The inspector over a real stream (the example channel: H.264 and AAC,
/// 1.2 Mbit/s, keyframes every 2 s), in batches of 100 packets as the hub
/// gets them.
fn inspection(c: &mut Criterion) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/sample.ts");
    let input = std::fs::read(path).expect("examples/sample.ts");
    let input = &input[..input.len() / PACKET_SIZE * PACKET_SIZE];
    let mut group = c.benchmark_group("inspect");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("sample_ts", |b| {
        let mut inspector = Inspector::new();
        b.iter(|| {
            for batch in input.chunks(100 * PACKET_SIZE) {
                for mark in inspector.inspect(batch, |_, facts| {
                    std::hint::black_box(facts);
                }) {
                    std::hint::black_box(mark);
                }
            }
        });
    });
    group.finish();
}

/// The stream health checks alone (continuity, PCR, null packets, tables
/// and elementary streams), on the facts the inspector read once from the
/// example channel, in batches of 100 packets as the hub gives them.
fn health(c: &mut Criterion) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/sample.ts");
    let input = std::fs::read(path).expect("examples/sample.ts");
    let input = &input[..input.len() / PACKET_SIZE * PACKET_SIZE];
    let mut inspector = Inspector::new();
    let mut facts = Vec::new();
    for _ in inspector.inspect(input, |_, f| facts.push(*f)) {}
    let programs = inspector.programs().to_vec();
    let pmt_positions = inspector.pmt_positions().to_vec();
    let pat_position = inspector.pat_position();
    let mut group = c.benchmark_group("health");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("sample_ts", |b| {
        let mut health = Health::new();
        health.connected(Instant::now());
        b.iter(|| {
            for batch in facts.chunks(100) {
                for f in batch {
                    health.packet(f);
                }
                health.after_run(pat_position, &programs, &pmt_positions, Instant::now());
            }
            std::hint::black_box(health.check(Instant::now()));
        });
    });
    group.finish();
}

fn fan_out(c: &mut Criterion) {
    // One batch: 10 ms of an 8 Mbit/s stream.
    let batch = Bytes::from(packets(53));
    let mut group = c.benchmark_group("hub");
    for subscribers in [1usize, 100, 10_000] {
        let hub = Hub::new(400);
        let mut clients: Vec<_> = (0..subscribers).map(|_| hub.subscribe()).collect();
        group.throughput(Throughput::Elements(53));
        group.bench_function(BenchmarkId::new("publish", subscribers), |b| {
            b.iter(|| hub.publish(batch.clone()));
        });
        // Publish, then every client takes the batch (what each client's
        // task does when woken).
        group.throughput(Throughput::Elements(53 * subscribers as u64));
        group.bench_function(BenchmarkId::new("publish_and_deliver", subscribers), |b| {
            b.iter(|| {
                hub.publish(batch.clone());
                for client in &mut clients {
                    // Catch up to the newest batch (earlier iterations left some).
                    while let Some(Some(data)) = client.next().now_or_never() {
                        std::hint::black_box(data);
                    }
                }
            });
        });
    }
    group.finish();
}

criterion_group!(benches, alignment, inspection, health, fan_out);
criterion_main!(benches);
