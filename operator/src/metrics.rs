//! The operator's own Prometheus metrics: reconciles, failures by kind,
//! and reconcile duration.

use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub reconciles: IntCounter,
    pub failures: IntCounterVec,
    pub duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = Registry::new();
        let reconciles =
            IntCounter::new("restreamer_operator_reconciles_total", "Reconciles run.").unwrap();
        let failures = IntCounterVec::new(
            Opts::new(
                "restreamer_operator_reconcile_failures_total",
                "Reconciles that failed, by kind of error.",
            ),
            &["error"],
        )
        .unwrap();
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "restreamer_operator_reconcile_duration_seconds",
                "Time a reconcile took.",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
        )
        .unwrap();
        registry.register(Box::new(reconciles.clone())).unwrap();
        registry.register(Box::new(failures.clone())).unwrap();
        registry.register(Box::new(duration.clone())).unwrap();
        Metrics {
            registry,
            reconciles,
            failures,
            duration,
        }
    }
}

impl Metrics {
    pub fn reconciled(&self, took: Duration) {
        self.reconciles.inc();
        self.duration.observe(took.as_secs_f64());
    }

    pub fn failed(&self, kind: &str) {
        self.failures.with_label_values(&[kind]).inc();
    }

    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }
}
