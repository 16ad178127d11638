//! Time to render one Restream into its objects (what every reconcile and
//! `restreamer-operator render` pay before talking to the API server).
//!
//! `cargo bench -p restreamer-operator --bench render`

use criterion::{criterion_group, criterion_main, Criterion};
use restreamer_operator::crd::Restream;
use restreamer_operator::render::{render, to_yaml};

fn rendering(c: &mut Criterion) {
    let mut restream: Restream =
        serde_yaml::from_str(include_str!("../yaml/instance-good.yaml")).unwrap();
    restream.metadata.uid = Some("uid".into());
    c.bench_function("render/instance-good", |b| {
        b.iter(|| render(&restream, "img:1").unwrap())
    });
    let rendered = render(&restream, "img:1").unwrap();
    c.bench_function("render/to_yaml", |b| b.iter(|| to_yaml(&rendered)));
}

criterion_group!(benches, rendering);
criterion_main!(benches);
