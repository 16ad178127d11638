//! The Prometheus metrics of stream health, one set per stream, refilled
//! from each hub's [`HealthReport`] on every scrape (see
//! [`crate::stream::inspect::health`] for what each figure means).
//!
//! `restreamer_continuity_errors_total` and `restreamer_stream_content_ok`
//! are fixed names: the autoscaler and dashboards use them.

use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::stream::inspect::health::HealthReport;

pub struct HealthMetrics {
    content_ok: IntGaugeVec,
    continuity_errors: IntCounterVec,
    discontinuities: IntCounterVec,
    pcr_errors: IntCounterVec,
    content_failovers: IntCounterVec,
    pcr_interval: GaugeVec,
    psi_interval: GaugeVec,
    null_share: GaugeVec,
    bitrate: GaugeVec,
    stream_packets: GaugeVec,
}

impl HealthMetrics {
    pub fn new(registry: &Registry) -> HealthMetrics {
        fn add<C: prometheus::core::Collector + Clone + 'static>(
            registry: &Registry,
            collector: C,
        ) -> C {
            registry
                .register(Box::new(collector.clone()))
                .expect("metric names are unique");
            collector
        }
        let counter = |name: &str, help: &str| {
            add(
                registry,
                IntCounterVec::new(Opts::new(name, help), &["stream"]).unwrap(),
            )
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            add(
                registry,
                GaugeVec::new(Opts::new(name, help), labels).unwrap(),
            )
        };
        HealthMetrics {
            content_ok: add(
                registry,
                IntGaugeVec::new(
                    Opts::new(
                        "restreamer_stream_content_ok",
                        "1 while the stream's upstream is connected and its content healthy (PAT, PMT and its elementary streams arrive, continuity errors under ccerrorlimit), else 0.",
                    ),
                    &["stream"],
                )
                .unwrap(),
            ),
            continuity_errors: counter(
                "restreamer_continuity_errors_total",
                "Continuity counter errors (packets lost or out of order upstream); repeated packets, discontinuity_indicator, failovers and file loops are not counted.",
            ),
            discontinuities: counter(
                "restreamer_discontinuities_total",
                "Jumps in the stream that are not loss: upstream connections after the first, file loops, packets with discontinuity_indicator.",
            ),
            pcr_errors: counter(
                "restreamer_pcr_errors_total",
                "Steps between two PCRs of one PID over 100 ms or backwards, without discontinuity_indicator.",
            ),
            content_failovers: counter(
                "restreamer_content_failovers_total",
                "Upstream connections ended because their content was lost (contenttimeout, ccerrorlimit).",
            ),
            pcr_interval: gauge(
                "restreamer_pcr_interval_seconds",
                "Largest step between two PCRs of one PID in the last 5 s (ISO 13818-1 allows 0.1).",
                &["stream"],
            ),
            psi_interval: gauge(
                "restreamer_psi_interval_seconds",
                "Largest time between two PATs (table=\"pat\") or PMTs (table=\"pmt\", worst program) in the last 5 s, or since the last one (DVB asks for 0.5 at most).",
                &["stream", "table"],
            ),
            null_share: gauge(
                "restreamer_null_packet_ratio",
                "Null packets among the packets received in the last 5 s (0 to 1).",
                &["stream"],
            ),
            bitrate: gauge(
                "restreamer_stream_bitrate_bits_per_second",
                "Bits per second received from the upstream over the last 5 s.",
                &["stream"],
            ),
            stream_packets: gauge(
                "restreamer_elementary_stream_packets_per_second",
                "Packets per second of each elementary stream the PMTs list, over the last 5 s.",
                &["stream", "pid", "kind"],
            ),
        }
    }

    /// Forgets every stream, before the current ones are recorded.
    pub fn reset(&self) {
        for vec in [
            &self.continuity_errors,
            &self.discontinuities,
            &self.pcr_errors,
            &self.content_failovers,
        ] {
            vec.reset();
        }
        for vec in [
            &self.pcr_interval,
            &self.psi_interval,
            &self.null_share,
            &self.bitrate,
            &self.stream_packets,
        ] {
            vec.reset();
        }
        self.content_ok.reset();
    }

    /// Records one stream's health.
    pub fn record(&self, stream: &str, report: &HealthReport) {
        self.content_ok
            .with_label_values(&[stream])
            .set(report.content_ok as i64);
        for (vec, value) in [
            (&self.continuity_errors, report.continuity_errors),
            (&self.discontinuities, report.discontinuities),
            (&self.pcr_errors, report.pcr_errors),
            (&self.content_failovers, report.content_failovers),
        ] {
            vec.with_label_values(&[stream]).inc_by(value);
        }
        if let Some(interval) = report.pcr_interval_seconds {
            self.pcr_interval.with_label_values(&[stream]).set(interval);
        }
        for (table, interval) in [
            ("pat", report.pat_interval_seconds),
            ("pmt", report.pmt_interval_seconds),
        ] {
            if let Some(interval) = interval {
                self.psi_interval
                    .with_label_values(&[stream, table])
                    .set(interval);
            }
        }
        self.null_share
            .with_label_values(&[stream])
            .set(report.null_share);
        self.bitrate
            .with_label_values(&[stream])
            .set(report.bitrate as f64);
        for es in &report.streams {
            self.stream_packets
                .with_label_values(&[stream, &es.pid.to_string(), es.kind])
                .set(es.packets_per_second);
        }
    }
}
