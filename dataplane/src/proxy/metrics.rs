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
//! The per-stream metrics, traffic and health (see
//! [`crate::stream::inspect::health`] for what each health figure means),
//! are read from the hubs by a `Collector` at scrape time: a stream that is
//! gone is simply not in the next scrape.
//!
//! `restreamer_connection_utilization` (connections / soft limit) is the
//! signal the Kubernetes autoscaler scales on; `restreamer_continuity_errors_total`
//! and `restreamer_stream_content_ok` are fixed names too (dashboards use
//! them). The standard `process_*`
//! metrics (CPU, memory, descriptors, start time) come from the
//! `prometheus` crate's process collector, as the original's Go client
//! exports them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{
    Counter, Gauge as ProtoGauge, LabelPair, Metric, MetricFamily, MetricType,
};
use prometheus::{Encoder, Gauge, IntCounter, IntGauge, Registry, TextEncoder};
use serde::Serialize;

use crate::proxy::limit::ConnectionLimits;
use crate::stream::hub::{Hub, StreamCounters};
use crate::stream::inspect::health::HealthReport;

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
                "Tokio tasks alive: one per source, writer shard and connection served by hyper (plain HTTP/1 stream clients have none); growth with a steady load is a leak.",
            ),
            log_lines_dropped: add(
                &registry,
                IntCounter::new(
                    "restreamer_log_lines_dropped_total",
                    "Log lines dropped because the log output did not keep up (logging never blocks the proxy).",
                )
                .unwrap(),
            ),
            registry,
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
        let mut families = self.registry.gather();
        families.extend(
            StreamMetrics {
                streams: streams.collect(),
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

/// One stream health figure with a `stream` label, from the stream's
/// [`HealthReport`]; `None` leaves the stream out (not measured yet). The
/// PSI intervals (`table` label) and the elementary streams' packet rates
/// (`pid`, `kind`) have more labels: see [`StreamMetrics::collect`].
struct HealthFamily {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    value: fn(&HealthReport) -> Option<f64>,
}

const HEALTH_FAMILIES: &[HealthFamily] = &[
    HealthFamily {
        name: "restreamer_stream_content_ok",
        help: "1 while the stream's upstream is connected and its content healthy (PAT, PMT and its elementary streams arrive, continuity errors under ccerrorlimit), else 0.",
        kind: MetricType::GAUGE,
        value: |report| Some(report.content_ok as u8 as f64),
    },
    HealthFamily {
        name: "restreamer_continuity_errors_total",
        help: "Continuity counter errors (packets lost or out of order upstream); repeated packets, discontinuity_indicator, failovers and file loops are not counted.",
        kind: MetricType::COUNTER,
        value: |report| Some(report.continuity_errors as f64),
    },
    HealthFamily {
        name: "restreamer_discontinuities_total",
        help: "Jumps in the stream that are not loss: upstream connections after the first, file loops, packets with discontinuity_indicator.",
        kind: MetricType::COUNTER,
        value: |report| Some(report.discontinuities as f64),
    },
    HealthFamily {
        name: "restreamer_pcr_errors_total",
        help: "Steps between two PCRs of one PID over 100 ms or backwards, without discontinuity_indicator.",
        kind: MetricType::COUNTER,
        value: |report| Some(report.pcr_errors as f64),
    },
    HealthFamily {
        name: "restreamer_content_failovers_total",
        help: "Upstream connections ended because their content was lost (contenttimeout, ccerrorlimit).",
        kind: MetricType::COUNTER,
        value: |report| Some(report.content_failovers as f64),
    },
    HealthFamily {
        name: "restreamer_pcr_interval_seconds",
        help: "Largest step between two PCRs of one PID in the last 5 s (ISO 13818-1 allows 0.1).",
        kind: MetricType::GAUGE,
        value: |report| report.pcr_interval_seconds,
    },
    HealthFamily {
        name: "restreamer_null_packet_ratio",
        help: "Null packets among the packets received in the last 5 s (0 to 1).",
        kind: MetricType::GAUGE,
        value: |report| Some(report.null_share),
    },
    HealthFamily {
        name: "restreamer_stream_bitrate_bits_per_second",
        help: "Bits per second received from the upstream over the last 5 s.",
        kind: MetricType::GAUGE,
        value: |report| Some(report.bitrate as f64),
    },
];

/// The metrics of the current streams and config, read at scrape time
/// straight from the hubs (their counters, and their health reports, each
/// taken once per scrape): a stream that is gone is simply not there, and
/// nothing is copied into metric vectors between scrapes.
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
        // Labels in name order, as the prometheus crate's own metrics have them.
        let metric = |labels: &[(&str, &str)], kind: MetricType, number: f64| {
            let mut labels: Vec<LabelPair> = labels
                .iter()
                .map(|(name, value)| {
                    let mut pair = LabelPair::default();
                    pair.set_name(name.to_string());
                    pair.set_value(value.to_string());
                    pair
                })
                .collect();
            labels.sort();
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
        families.push(family(
            "streaming_source_connected",
            "1 for the upstream a stream is connected to, 0 for its others (original name).",
            MetricType::GAUGE,
            sources,
        ));

        let reports: Vec<(&str, HealthReport)> = self
            .streams
            .iter()
            .map(|(path, hub, _)| (*path, hub.health_report()))
            .collect();
        families.extend(HEALTH_FAMILIES.iter().map(|f| {
            let metrics = reports
                .iter()
                .filter_map(|(path, report)| {
                    (f.value)(report).map(|value| metric(&[("stream", path)], f.kind, value))
                })
                .collect();
            family(f.name, f.help, f.kind, metrics)
        }));
        let psi = reports.iter().flat_map(|(path, report)| {
            [
                ("pat", report.pat_interval_seconds),
                ("pmt", report.pmt_interval_seconds),
            ]
            .into_iter()
            .filter_map(move |(table, interval)| {
                interval.map(|interval| {
                    metric(
                        &[("stream", path), ("table", table)],
                        MetricType::GAUGE,
                        interval,
                    )
                })
            })
        });
        families.push(family(
            "restreamer_psi_interval_seconds",
            "Largest time between two PATs (table=\"pat\") or PMTs (table=\"pmt\", worst program) in the last 5 s, or since the last one (DVB asks for 0.5 at most).",
            MetricType::GAUGE,
            psi.collect(),
        ));
        let elementary = reports.iter().flat_map(|(path, report)| {
            report.streams.iter().map(move |es| {
                metric(
                    &[
                        ("stream", path),
                        ("pid", &es.pid.to_string()),
                        ("kind", es.kind),
                    ],
                    MetricType::GAUGE,
                    es.packets_per_second,
                )
            })
        });
        families.push(family(
            "restreamer_elementary_stream_packets_per_second",
            "Packets per second of each elementary stream the PMTs list, over the last 5 s.",
            MetricType::GAUGE,
            elementary.collect(),
        ));

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
        // As the registry gathers: no empty families, and each family's
        // series in the order of their label values.
        families.retain(|family| !family.get_metric().is_empty());
        for family in &mut families {
            family.mut_metric().sort_by(|a, b| {
                let values = |m: &Metric| -> Vec<String> {
                    m.get_label()
                        .iter()
                        .map(|l| l.value().to_string())
                        .collect()
                };
                values(a).cmp(&values(b))
            });
        }
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

    /// A hub that received the first 8,000 packets of examples/sample.ts
    /// (H.264 on PID 256, audio on 257).
    fn fed_hub() -> std::sync::Arc<Hub> {
        let sample = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/sample.ts"
        ))
        .expect("examples/sample.ts");
        let hub = Hub::new(10);
        hub.upstream_opened();
        hub.set_upstream_connected(true);
        for chunk in sample[..188 * 8000].chunks(188 * 7) {
            hub.publish(bytes::Bytes::copy_from_slice(chunk));
        }
        hub
    }

    #[test]
    fn health_metrics_are_read_from_the_hubs_and_leave_with_their_stream() {
        let metrics = Metrics::new();
        let limits = ConnectionLimits::new(4, 8, None);
        let (news, sport) = (fed_hub(), fed_hub());
        let both = || {
            [
                ("/sport", &*sport, Vec::new()),
                ("/news", &*news, Vec::new()),
            ]
            .into_iter()
        };
        let text = metrics.render(&limits, both(), "abc");
        for line in [
            "restreamer_stream_content_ok{stream=\"/news\"} 1",
            "restreamer_continuity_errors_total{stream=\"/sport\"} 0",
            "restreamer_content_failovers_total{stream=\"/news\"} 0",
            "restreamer_elementary_stream_packets_per_second{kind=\"video\",pid=\"256\",stream=\"/news\"} 0",
            "restreamer_elementary_stream_packets_per_second{kind=\"audio\",pid=\"257\",stream=\"/sport\"} 0",
            "# TYPE restreamer_continuity_errors_total counter",
            "# TYPE restreamer_psi_interval_seconds gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        for prefix in [
            "restreamer_psi_interval_seconds{stream=\"/news\",table=\"pat\"} ",
            "restreamer_psi_interval_seconds{stream=\"/sport\",table=\"pmt\"} ",
            "restreamer_pcr_interval_seconds{stream=\"/news\"} ",
            "restreamer_null_packet_ratio{stream=\"/sport\"} ",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(prefix)),
                "missing {prefix:?} in\n{text}"
            );
        }
        // Each family's series in label order, whatever order the streams come in.
        let series = |text: &str, name: &str| -> Vec<String> {
            text.lines()
                .filter(|l| l.starts_with(&format!("{name}{{")))
                .map(|l| l.split(' ').next().unwrap().to_string())
                .collect()
        };
        for name in [
            "restreamer_stream_content_ok",
            "restreamer_packets_received_total",
        ] {
            assert_eq!(
                series(&text, name),
                [
                    format!("{name}{{stream=\"/news\"}}"),
                    format!("{name}{{stream=\"/sport\"}}")
                ]
            );
        }
        // One stream removed: its health series go with it.
        let text = metrics.render(&limits, [("/news", &*news, Vec::new())].into_iter(), "abc");
        assert!(!text.contains("stream=\"/sport\""), "{text}");
        assert!(text.contains("restreamer_stream_content_ok{stream=\"/news\"} 1"));
        // No stream: no family of theirs, not even its HELP.
        let text = metrics.render(&limits, std::iter::empty(), "abc");
        for name in [
            "restreamer_stream_content_ok",
            "restreamer_psi_interval_seconds",
            "restreamer_elementary_stream_packets_per_second",
            "streaming_source_connected",
        ] {
            assert!(!text.contains(name), "{name} in\n{text}");
        }
    }
}
