//! Statistics and Prometheus metrics.
//!
//! The hot path only bumps plain atomic counters (in each hub's
//! [`StreamCounters`]). Everything here reads them when asked:
//!
//! - [`Totals`] are a stream's counters read at one instant (the rates over
//!   the last seconds are [`super::rates`]');
//! - [`Metrics`] renders the Prometheus text format with the `prometheus`
//!   crate: our own `restreamer_*` metrics, named by Prometheus rules, and the
//!   original's `streaming_*` names, so existing dashboards keep working.
//!
//! `restreamer_connection_utilization` (connections / soft limit) is the
//! signal the Kubernetes autoscaler scales on. The standard `process_*`
//! metrics (CPU, memory, descriptors, start time) come from the
//! `prometheus` crate's process collector, as the original's Go client
//! exports them.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::{
    Encoder, Gauge, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use serde::Serialize;

use crate::proxy::health_metrics::HealthMetrics;
use crate::proxy::limit::ConnectionLimits;
use crate::stream::hub::{Hub, StreamCounters};

/// Cumulative traffic of one stream, or of all together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Totals {
    pub packets_received: u64,
    pub packets_sent: u64,
    pub packets_dropped: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub bytes_dropped: u64,
}

impl Totals {
    pub fn of(counters: &StreamCounters) -> Totals {
        let get = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        Totals {
            packets_received: get(&counters.packets_received),
            packets_sent: get(&counters.packets_sent),
            packets_dropped: get(&counters.packets_dropped),
            bytes_received: get(&counters.bytes_received),
            bytes_sent: get(&counters.bytes_sent),
            bytes_dropped: get(&counters.bytes_dropped),
        }
    }

    pub fn add(&mut self, other: &Totals) {
        self.packets_received += other.packets_received;
        self.packets_sent += other.packets_sent;
        self.packets_dropped += other.packets_dropped;
        self.bytes_received += other.bytes_received;
        self.bytes_sent += other.bytes_sent;
        self.bytes_dropped += other.bytes_dropped;
    }

    /// Per-second rates from `earlier` to `self` over `seconds`. A counter
    /// that went backwards (its stream was replaced) counts from zero.
    pub fn rate_since(&self, earlier: &Totals, seconds: f64) -> Totals {
        let rate = |now: u64, then: u64| {
            let delta = if now >= then { now - then } else { now };
            (delta as f64 / seconds).round() as u64
        };
        Totals {
            packets_received: rate(self.packets_received, earlier.packets_received),
            packets_sent: rate(self.packets_sent, earlier.packets_sent),
            packets_dropped: rate(self.packets_dropped, earlier.packets_dropped),
            bytes_received: rate(self.bytes_received, earlier.bytes_received),
            bytes_sent: rate(self.bytes_sent, earlier.bytes_sent),
            bytes_dropped: rate(self.bytes_dropped, earlier.bytes_dropped),
        }
    }
}

/// Sums the totals of all streams.
pub fn sum(streams: &HashMap<String, Totals>) -> Totals {
    let mut total = Totals::default();
    streams.values().for_each(|t| total.add(t));
    total
}

/// The Prometheus registry of one data-plane process.
pub struct Metrics {
    registry: Registry,
    /// One scrape at a time: rendering resets and refills the stream vectors.
    render_lock: Mutex<()>,
    connections: IntGauge,
    soft_limit: IntGauge,
    hard_limit: IntGauge,
    utilization: Gauge,
    full: IntGauge,
    stream_connections: IntGaugeVec,
    packets_received: IntCounterVec,
    bytes_received: IntCounterVec,
    packets_sent: IntCounterVec,
    bytes_sent: IntCounterVec,
    packets_dropped: IntCounterVec,
    bytes_dropped: IntCounterVec,
    upstream_connected: IntGaugeVec,
    upstream_reconnects: IntCounterVec,
    keyframe_interval: GaugeVec,
    instant_start_bytes: IntGaugeVec,
    pub config_reloads: IntCounter,
    pub config_reload_failures: IntCounter,
    config_info: IntGaugeVec,
    tasks: IntGauge,
    log_lines_dropped: IntCounter,
    legacy: LegacyMetrics,
    health: HealthMetrics,
}

/// The Go restreamer's metric names, each with a `stream` label.
struct LegacyMetrics {
    source_connected: IntGaugeVec,
    packets_received: IntCounterVec,
    bytes_received: IntCounterVec,
    packets_sent: IntCounterVec,
    bytes_sent: IntCounterVec,
    packets_dropped: IntCounterVec,
    bytes_dropped: IntCounterVec,
    connections: IntGaugeVec,
    duration: IntCounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("process metric names are unique");
        fn add<C: prometheus::core::Collector + Clone + 'static>(
            registry: &Registry,
            collector: C,
        ) -> C {
            registry
                .register(Box::new(collector.clone()))
                .expect("metric names are unique");
            collector
        }
        let gauge = |name: &str, help: &str| add(&registry, IntGauge::new(name, help).unwrap());
        let stream_gauge = |name: &str, help: &str| {
            add(
                &registry,
                IntGaugeVec::new(Opts::new(name, help), &["stream"]).unwrap(),
            )
        };
        let stream_counter = |name: &str, help: &str| {
            add(
                &registry,
                IntCounterVec::new(Opts::new(name, help), &["stream"]).unwrap(),
            )
        };
        Metrics {
            connections: gauge("restreamer_connections", "Stream clients connected, all streams together."),
            soft_limit: gauge(
                "restreamer_connections_soft_limit",
                "The soft connection limit (fullconnections); 0 = none.",
            ),
            hard_limit: gauge(
                "restreamer_connections_hard_limit",
                "The hard connection limit (maxconnections); 0 = none.",
            ),
            utilization: add(
                &registry,
                Gauge::new(
                    "restreamer_connection_utilization",
                    "Stream clients per soft limit (1 = full): the autoscaling signal. 0 without a soft limit.",
                )
                .unwrap(),
            ),
            full: gauge("restreamer_full", "1 when the soft limit is reached, else 0."),
            stream_connections: stream_gauge("restreamer_stream_connections", "Clients connected to a stream."),
            packets_received: stream_counter("restreamer_packets_received_total", "TS packets received from upstream."),
            bytes_received: stream_counter("restreamer_received_bytes_total", "Bytes received from upstream."),
            packets_sent: stream_counter("restreamer_packets_sent_total", "TS packets sent to clients."),
            bytes_sent: stream_counter("restreamer_sent_bytes_total", "Bytes sent to clients."),
            packets_dropped: stream_counter(
                "restreamer_packets_dropped_total",
                "TS packets dropped for clients that fell behind.",
            ),
            bytes_dropped: stream_counter("restreamer_dropped_bytes_total", "Bytes dropped for clients that fell behind."),
            upstream_connected: stream_gauge("restreamer_upstream_connected", "1 while the stream's upstream is connected."),
            upstream_reconnects: stream_counter(
                "restreamer_upstream_reconnects_total",
                "Upstream connections made after the first one.",
            ),
            keyframe_interval: add(
                &registry,
                GaugeVec::new(
                    Opts::new(
                        "restreamer_keyframe_interval_seconds",
                        "Measured interval between the stream's random access points (keyframes); 0 until two were seen.",
                    ),
                    &["stream"],
                )
                .unwrap(),
            ),
            instant_start_bytes: stream_gauge(
                "restreamer_instant_start_bytes",
                "Bytes held for instant start: the stream since its latest random access point.",
            ),
            config_reloads: add(
                &registry,
                IntCounter::new("restreamer_config_reloads_total", "Configuration reloads applied.").unwrap(),
            ),
            config_reload_failures: add(
                &registry,
                IntCounter::new(
                    "restreamer_config_reload_failures_total",
                    "Configuration reloads rejected (the last good configuration stays in force).",
                )
                .unwrap(),
            ),
            config_info: add(
                &registry,
                IntGaugeVec::new(
                    Opts::new("restreamer_config_info", "The configuration in force, by its SHA-256 hash."),
                    &["hash"],
                )
                .unwrap(),
            ),
            tasks: gauge(
                "restreamer_tasks",
                "Tokio tasks alive: about one per client, source and connection; growth with a steady load is a leak.",
            ),
            log_lines_dropped: add(
                &registry,
                IntCounter::new(
                    "restreamer_log_lines_dropped_total",
                    "Log lines dropped because the log output did not keep up (logging never blocks the proxy).",
                )
                .unwrap(),
            ),
            legacy: LegacyMetrics {
                source_connected: add(
                    &registry,
                    IntGaugeVec::new(
                        Opts::new(
                            "streaming_source_connected",
                            "1 for the upstream a stream is connected to, 0 for its others (original name).",
                        ),
                        &["stream", "url"],
                    )
                    .unwrap(),
                ),
                packets_received: stream_counter("streaming_packets_received", "Packets received (original name)."),
                bytes_received: stream_counter("streaming_bytes_received", "Bytes received (original name)."),
                packets_sent: stream_counter("streaming_packets_sent", "Packets sent (original name)."),
                bytes_sent: stream_counter("streaming_bytes_sent", "Bytes sent (original name)."),
                packets_dropped: stream_counter("streaming_packets_dropped", "Packets dropped (original name)."),
                bytes_dropped: stream_counter("streaming_bytes_dropped", "Bytes dropped (original name)."),
                connections: stream_gauge("streaming_connections", "Connections (original name)."),
                duration: stream_counter(
                    "streaming_duration",
                    "Nanoseconds streamed by clients that have left (original name).",
                ),
            },
            health: HealthMetrics::new(&registry),
            registry,
            render_lock: Mutex::new(()),
        }
    }

    /// The Prometheus text format of the current state.
    pub fn render<'a>(
        &self,
        limits: &ConnectionLimits,
        streams: impl Iterator<Item = (&'a str, &'a Hub, Vec<String>)>,
        config_hash: &str,
    ) -> String {
        let _one_at_a_time = self.render_lock.lock().unwrap();
        self.connections.set(limits.connected() as i64);
        self.soft_limit.set(limits.soft() as i64);
        self.hard_limit.set(limits.max() as i64);
        self.utilization.set(limits.utilization());
        self.full.set(limits.is_full() as i64);
        self.config_info.reset();
        self.config_info.with_label_values(&[config_hash]).set(1);
        let dropped = crate::proxy::logging::dropped_lines();
        self.log_lines_dropped
            .inc_by(dropped.saturating_sub(self.log_lines_dropped.get()));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            self.tasks.set(runtime.metrics().num_alive_tasks() as i64);
        }

        // Refilled from the hubs' counters on every scrape, so that removed
        // streams disappear and the values are exactly the hubs' own.
        let legacy = &self.legacy;
        // Each vector is listed once, in the order of the values below.
        let counter_vecs = [
            &self.packets_received,
            &self.bytes_received,
            &self.packets_sent,
            &self.bytes_sent,
            &self.packets_dropped,
            &self.bytes_dropped,
            &self.upstream_reconnects,
            &legacy.packets_received,
            &legacy.bytes_received,
            &legacy.packets_sent,
            &legacy.bytes_sent,
            &legacy.packets_dropped,
            &legacy.bytes_dropped,
            &legacy.duration,
        ];
        let gauge_vecs = [
            &self.stream_connections,
            &self.upstream_connected,
            &legacy.connections,
        ];
        counter_vecs.iter().for_each(|vec| vec.reset());
        gauge_vecs.iter().for_each(|vec| vec.reset());
        legacy.source_connected.reset();
        self.keyframe_interval.reset();
        self.instant_start_bytes.reset();
        self.health.reset();
        for (path, hub, upstreams) in streams {
            self.health.record(path, &hub.health_report());
            let counters = &hub.counters;
            let totals = Totals::of(counters);
            let connected = hub.upstream_connected() as i64;
            let clients = counters.connections.load(Ordering::Relaxed) as i64;
            let reconnects = counters
                .upstream_connects
                .load(Ordering::Relaxed)
                .saturating_sub(1);
            let duration = counters.client_time_ns.load(Ordering::Relaxed);
            let traffic = [
                totals.packets_received,
                totals.bytes_received,
                totals.packets_sent,
                totals.bytes_sent,
                totals.packets_dropped,
                totals.bytes_dropped,
            ];
            // Ours (with reconnects), then the original's (with duration).
            let counter_values = traffic
                .iter()
                .chain([&reconnects])
                .chain(&traffic)
                .chain([&duration]);
            for (vec, value) in counter_vecs.iter().zip(counter_values) {
                vec.with_label_values(&[path]).inc_by(*value);
            }
            for (vec, value) in gauge_vecs.iter().zip([clients, connected, clients]) {
                vec.with_label_values(&[path]).set(value);
            }
            // As the original: a series per upstream, 1 for the connected one.
            let current = counters.upstream_url.lock().unwrap().clone();
            for url in &upstreams {
                let on = connected == 1 && *url == current;
                legacy
                    .source_connected
                    .with_label_values(&[path, url])
                    .set(on as i64);
            }
            self.keyframe_interval
                .with_label_values(&[path])
                .set(hub.keyframe_interval_ms() as f64 / 1000.0);
            self.instant_start_bytes
                .with_label_values(&[path])
                .set(hub.instant_start_bytes() as i64);
        }

        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("the text encoder writes to memory");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_carry_our_names_and_the_originals() {
        let metrics = Metrics::new();
        let limits = ConnectionLimits::new(4, 8, None);
        let _clients: Vec<_> = (0..3).map(|_| limits.try_acquire().unwrap()).collect();
        let hub = Hub::new(10);
        hub.set_upstream_connected(true);
        hub.publish(bytes::Bytes::from(vec![0x47; 188 * 2]));
        *hub.counters.upstream_url.lock().unwrap() = "tcp://b:2".into();
        let upstreams = vec!["tcp://a:1".to_string(), "tcp://b:2".to_string()];
        let text = metrics.render(&limits, [("/tv", &*hub, upstreams)].into_iter(), "abc");
        for line in [
            "restreamer_connections 3",
            "restreamer_connection_utilization 0.75",
            "restreamer_connections_soft_limit 4",
            "restreamer_connections_hard_limit 8",
            "restreamer_full 0",
            "restreamer_packets_received_total{stream=\"/tv\"} 2",
            "restreamer_received_bytes_total{stream=\"/tv\"} 376",
            "restreamer_upstream_connected{stream=\"/tv\"} 1",
            "restreamer_config_info{hash=\"abc\"} 1",
            "streaming_packets_received{stream=\"/tv\"} 2",
            "streaming_bytes_received{stream=\"/tv\"} 376",
            "restreamer_upstream_reconnects_total{stream=\"/tv\"} 0",
            "streaming_connections{stream=\"/tv\"} 0",
            "streaming_source_connected{stream=\"/tv\",url=\"tcp://a:1\"} 0",
            "streaming_source_connected{stream=\"/tv\",url=\"tcp://b:2\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // A stream that is gone disappears from the next scrape.
        let text = metrics.render(&limits, std::iter::empty(), "abc");
        assert!(!text.contains("stream=\"/tv\""));
    }
}
