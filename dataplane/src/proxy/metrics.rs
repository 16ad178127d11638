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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{
    Counter, Gauge as ProtoGauge, LabelPair, Metric, MetricFamily, MetricType,
};
use prometheus::{Encoder, Gauge, IntCounter, IntGauge, Registry, TextEncoder};
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
    connections: IntGauge,
    soft_limit: IntGauge,
    hard_limit: IntGauge,
    utilization: Gauge,
    full: IntGauge,
    pub config_reloads: IntCounter,
    pub config_reload_failures: IntCounter,
    tasks: IntGauge,
    log_lines_dropped: IntCounter,
    health: HealthMetrics,
    /// One scrape at a time: the health vectors are reset and refilled.
    render_lock: Mutex<()>,
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
        self.connections.set(limits.connected() as i64);
        self.soft_limit.set(limits.soft() as i64);
        self.hard_limit.set(limits.max() as i64);
        self.utilization.set(limits.utilization());
        self.full.set(limits.is_full() as i64);
        let dropped = crate::proxy::logging::dropped_lines();
        self.log_lines_dropped
            .inc_by(dropped.saturating_sub(self.log_lines_dropped.get()));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            self.tasks.set(runtime.metrics().num_alive_tasks() as i64);
        }
        let streams: Vec<_> = streams.collect();
        let _one_at_a_time = self.render_lock.lock().unwrap();
        self.health.reset();
        for (path, hub, _) in &streams {
            self.health.record(path, &hub.health_report());
        }
        let mut families = self.registry.gather();
        families.extend(
            StreamMetrics {
                streams,
                config_hash,
            }
            .collect(),
        );
        families.sort_by(|a, b| a.name().cmp(b.name()));

        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&families, &mut out)
            .expect("the text encoder writes to memory");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// One metric with a `stream` label, read from each hub's counters.
struct StreamFamily {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    value: fn(&Hub) -> f64,
}

fn load(counter: &AtomicU64) -> f64 {
    counter.load(Ordering::Relaxed) as f64
}

/// Ours, named by Prometheus rules, then the Go restreamer's names, so
/// existing dashboards keep working.
const STREAM_FAMILIES: &[StreamFamily] = &[
    StreamFamily {
        name: "restreamer_stream_connections",
        help: "Clients connected to a stream.",
        kind: MetricType::GAUGE,
        value: |hub| load(&hub.counters.connections),
    },
    StreamFamily {
        name: "restreamer_packets_received_total",
        help: "TS packets received from upstream.",
        kind: MetricType::COUNTER,
        value: |hub| load(&hub.counters.packets_received),
    },
    StreamFamily {
        name: "restreamer_received_bytes_total",
        help: "Bytes received from upstream.",
        kind: MetricType::COUNTER,
        value: |hub| load(&hub.counters.bytes_received),
    },
    StreamFamily {
        name: "restreamer_packets_sent_total",
        help: "TS packets sent to clients.",
        kind: MetricType::COUNTER,
        value: |hub| load(&hub.counters.packets_sent),
    },
    StreamFamily {
        name: "restreamer_sent_bytes_total",
        help: "Bytes sent to clients.",
        kind: MetricType::COUNTER,
        value: |hub| load(&hub.counters.bytes_sent),
    },
    StreamFamily {
        name: "restreamer_packets_dropped_total",
        help: "TS packets dropped for clients that fell behind.",
        kind: MetricType::COUNTER,
        value: |hub| load(&hub.counters.packets_dropped),
    },
    StreamFamily {
        name: "restreamer_dropped_bytes_total",
        help: "Bytes dropped for clients that fell behind.",
        kind: MetricType::COUNTER,
        value: |hub| load(&hub.counters.bytes_dropped),
    },
    StreamFamily {
        name: "restreamer_upstream_connected",
        help: "1 while the stream's upstream is connected.",
        kind: MetricType::GAUGE,
        value: |hub| hub.upstream_connected() as u8 as f64,
    },
    StreamFamily {
        name: "restreamer_upstream_reconnects_total",
        help: "Upstream connections made after the first one.",
        kind: MetricType::COUNTER,
        value: |hub| {
            (hub.counters.upstream_connects.load(Ordering::Relaxed)).saturating_sub(1) as f64
        },
    },
    StreamFamily {
        name: "restreamer_keyframe_interval_seconds",
        help: "Measured interval between the stream's random access points (keyframes); 0 until two were seen.",
        kind: MetricType::GAUGE,
        value: |hub| hub.keyframe_interval_ms() as f64 / 1000.0,
    },
    StreamFamily {
        name: "restreamer_instant_start_bytes",
        help: "Bytes held for instant start: the stream since its latest random access point.",
        kind: MetricType::GAUGE,
        value: |hub| hub.instant_start_bytes() as f64,
    },
    StreamFamily {
        name: "streaming_packets_received",
        help: "Packets received (original name).",
        kind: MetricType::COUNTER,
        value: |hub| load(&hub.counters.packets_received),
    },
    StreamFamily {
        name: "streaming_bytes_received",
        help: "Bytes received (original name).",
        kind: MetricType::COUNTER,
        value: |hub| load(&hub.counters.bytes_received),
    },
    StreamFamily {
        name: "streaming_packets_sent",
        help: "Packets sent (original name).",
        kind: MetricType::COUNTER,
        value: |hub| load(&hub.counters.packets_sent),
    },
    StreamFamily {
        name: "streaming_bytes_sent",
        help: "Bytes sent (original name).",
        kind: MetricType::COUNTER,
        value: |hub| load(&hub.counters.bytes_sent),
    },
    StreamFamily {
        name: "streaming_packets_dropped",
        help: "Packets dropped (original name).",
        kind: MetricType::COUNTER,
        value: |hub| load(&hub.counters.packets_dropped),
    },
    StreamFamily {
        name: "streaming_bytes_dropped",
        help: "Bytes dropped (original name).",
        kind: MetricType::COUNTER,
        value: |hub| load(&hub.counters.bytes_dropped),
    },
    StreamFamily {
        name: "streaming_connections",
        help: "Connections (original name).",
        kind: MetricType::GAUGE,
        value: |hub| load(&hub.counters.connections),
    },
    StreamFamily {
        name: "streaming_duration",
        help: "Nanoseconds streamed by clients that have left (original name).",
        kind: MetricType::COUNTER,
        value: |hub| load(&hub.counters.client_time_ns),
    },
];

/// The metrics of the current streams and config, read at scrape time
/// straight from the hubs' counters: a stream that is gone is simply not
/// there, and nothing is copied into metric vectors between scrapes.
struct StreamMetrics<'a> {
    /// Each stream's path, hub and upstream URLs (as logged).
    streams: Vec<(&'a str, &'a Hub, Vec<String>)>,
    config_hash: &'a str,
}

impl Collector for StreamMetrics<'_> {
    fn desc(&self) -> Vec<&Desc> {
        // Never registered: the families are named in `collect`.
        Vec::new()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let family = |name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>| {
            let mut family = MetricFamily::default();
            family.set_name(name.to_string());
            family.set_help(help.to_string());
            family.set_field_type(kind);
            family.set_metric(metrics);
            family
        };
        let metric = |labels: &[(&str, &str)], kind: MetricType, number: f64| {
            let labels = labels
                .iter()
                .map(|(name, value)| {
                    let mut pair = LabelPair::default();
                    pair.set_name(name.to_string());
                    pair.set_value(value.to_string());
                    pair
                })
                .collect();
            let mut metric = Metric::default();
            metric.set_label(labels);
            if kind == MetricType::COUNTER {
                let mut counter = Counter::default();
                counter.set_value(number);
                metric.set_counter(counter);
            } else {
                let mut gauge = ProtoGauge::default();
                gauge.set_value(number);
                metric.set_gauge(gauge);
            }
            metric
        };
        let mut families: Vec<MetricFamily> = STREAM_FAMILIES
            .iter()
            .filter(|_| !self.streams.is_empty())
            .map(|f| {
                let metrics = self
                    .streams
                    .iter()
                    .map(|(path, hub, _)| metric(&[("stream", path)], f.kind, (f.value)(hub)))
                    .collect();
                family(f.name, f.help, f.kind, metrics)
            })
            .collect();
        // As the original: a series per upstream, 1 for the connected one.
        let sources: Vec<Metric> = self
            .streams
            .iter()
            .flat_map(|(path, hub, upstreams)| {
                let current = hub.counters.upstream_url.lock().unwrap().clone();
                let connected = hub.upstream_connected();
                upstreams.iter().map(move |url| {
                    let on = connected && *url == current;
                    metric(
                        &[("stream", path), ("url", url)],
                        MetricType::GAUGE,
                        on as u8 as f64,
                    )
                })
            })
            .collect();
        if !sources.is_empty() {
            families.push(family(
                "streaming_source_connected",
                "1 for the upstream a stream is connected to, 0 for its others (original name).",
                MetricType::GAUGE,
                sources,
            ));
        }
        families.push(family(
            "restreamer_config_info",
            "The configuration in force, by its SHA-256 hash.",
            MetricType::GAUGE,
            vec![metric(
                &[("hash", self.config_hash)],
                MetricType::GAUGE,
                1.0,
            )],
        ));
        families
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
        hub.upstream_opened();
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
