//! The built-in APIs (resources of `type: api`) and the Kubernetes probes.
//!
//! The APIs answer as the original does, field for field: `health` and
//! `statistics` in JSON, `check` and `control` in plain text, `prometheus`
//! in the Prometheus text format. `statistics` adds a `streams` object with
//! the same figures per stream.
//!
//! The probes: `/healthz` answers 200 while the process serves at all;
//! `/readyz` answers 200 while it takes new viewers, and 503 while it drains
//! for shutdown or sits at its hard connection limit, so that a Kubernetes
//! Service stops sending viewers to a pod that cannot take them.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use http::{Request, Response, StatusCode};
use serde::Serialize;

use crate::front::response::{text, with_type, Body};
use crate::proxy::metrics::{sum, Totals};
use crate::proxy::{Api, Generation, Proxy, Stream};
use crate::stream::inspect::health::HealthReport;

/// Answers a request to an API resource.
pub fn respond<B>(
    proxy: &Proxy,
    generation: &Generation,
    api: &Api,
    request: &Request<B>,
) -> Response<Body> {
    match api {
        Api::Health => json(&health(proxy)),
        Api::Statistics => json(&statistics(proxy, generation)),
        Api::Check(stream) => {
            // On air: connected, and what it sends is a healthy stream.
            if stream.is_live() && stream.hub.content_ok() {
                text(StatusCode::OK, "200 ok")
            } else {
                text(StatusCode::NOT_FOUND, "404 not found")
            }
        }
        Api::Control(stream) => match control_action(request.uri().query()) {
            Some(offline) => {
                stream.set_offline(offline);
                text(StatusCode::ACCEPTED, "202 accepted")
            }
            None => text(
                StatusCode::BAD_REQUEST,
                "400 bad request: use ?offline or ?online",
            ),
        },
        Api::Prometheus => prometheus(proxy, generation),
    }
}

/// What a control request asks for: `Some(true)` = offline, `Some(false)` =
/// online. As in the original, a parameter counts whatever its value, and
/// `offline` wins when both are given.
fn control_action(query: Option<&str>) -> Option<bool> {
    let keys: Vec<_> = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .map(|(key, _)| key)
        .collect();
    if keys.iter().any(|key| key == "offline") {
        Some(true)
    } else if keys.iter().any(|key| key == "online") {
        Some(false)
    } else {
        None
    }
}

/// Answers the probe and metrics paths, if `path` is one of them.
pub fn admin(proxy: &Proxy, generation: &Generation, path: &str) -> Option<Response<Body>> {
    Some(match path {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => match proxy.readiness() {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(reason) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {reason}\n"),
            ),
        },
        "/metrics" => prometheus(proxy, generation),
        _ => return None,
    })
}

fn prometheus(proxy: &Proxy, generation: &Generation) -> Response<Body> {
    let streams = generation
        .streams
        .iter()
        .map(|(path, stream)| (path.as_str(), &*stream.hub, stream.upstream_urls()));
    let body = proxy
        .metrics
        .render(&proxy.limits, streams, &generation.hash);
    with_type(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        body,
    )
}

fn json(value: &impl Serialize) -> Response<Body> {
    let body = serde_json::to_vec(value).expect("API answers serialise");
    with_type(StatusCode::OK, "application/json", body)
}

/// The `health` answer, field for field as the original's.
#[derive(Debug, Serialize)]
pub struct Health {
    pub status: &'static str,
    pub viewer: usize,
    pub limit: usize,
    pub max: usize,
    /// Kbit/s sent to clients.
    pub bandwidth: u64,
}

pub fn health(proxy: &Proxy) -> Health {
    let (rates, _) = proxy.rates.rates(&proxy.stream_totals());
    Health {
        // As the original: full at the soft limit, and at the hard limit
        // even without a soft limit (no viewer can get in there).
        status: if proxy.limits.is_full() || proxy.limits.is_at_max() {
            "full"
        } else {
            "ok"
        },
        viewer: proxy.limits.connected(),
        limit: proxy.limits.soft(),
        max: proxy.limits.max(),
        bandwidth: rates.bytes_sent * 8 / 1024,
    }
}

/// The `statistics` answer: the original's fields, and the same per stream.
#[derive(Debug, Serialize)]
pub struct Statistics {
    pub status: &'static str,
    pub connections: usize,
    pub max_connections: usize,
    pub full_connections: usize,
    #[serde(flatten)]
    pub figures: Figures,
    pub streams: BTreeMap<String, StreamStatistics>,
}

#[derive(Debug, Serialize)]
pub struct StreamStatistics {
    pub connections: u64,
    pub connected: bool,
    pub offline: bool,
    /// Measured interval between random access points (keyframes), in
    /// milliseconds; 0 until two have been seen.
    pub keyframe_interval_ms: u64,
    /// Bytes held for instant start: the stream since its latest random
    /// access point.
    pub instant_start_bytes: u64,
    #[serde(flatten)]
    pub figures: Figures,
    /// What the stream's content looks like (see the stream health checks).
    pub health: HealthReport,
}

/// Totals and per-second rates, named as the original names them.
#[derive(Debug, Serialize)]
pub struct Figures {
    pub total_packets_received: u64,
    pub total_packets_sent: u64,
    pub total_packets_dropped: u64,
    pub total_bytes_received: u64,
    pub total_bytes_sent: u64,
    pub total_bytes_dropped: u64,
    pub total_stream_time_ns: u64,
    pub packets_per_second_received: u64,
    pub packets_per_second_sent: u64,
    pub packets_per_second_dropped: u64,
    pub bytes_per_second_received: u64,
    pub bytes_per_second_sent: u64,
    pub bytes_per_second_dropped: u64,
}

impl Figures {
    fn new(totals: &Totals, rates: &Totals, stream_time_ns: u64) -> Figures {
        Figures {
            total_packets_received: totals.packets_received,
            total_packets_sent: totals.packets_sent,
            total_packets_dropped: totals.packets_dropped,
            total_bytes_received: totals.bytes_received,
            total_bytes_sent: totals.bytes_sent,
            total_bytes_dropped: totals.bytes_dropped,
            total_stream_time_ns: stream_time_ns,
            packets_per_second_received: rates.packets_received,
            packets_per_second_sent: rates.packets_sent,
            packets_per_second_dropped: rates.packets_dropped,
            bytes_per_second_received: rates.bytes_received,
            bytes_per_second_sent: rates.bytes_sent,
            bytes_per_second_dropped: rates.bytes_dropped,
        }
    }
}

pub fn statistics(proxy: &Proxy, generation: &Generation) -> Statistics {
    let totals = proxy.stream_totals();
    let (total_rates, stream_rates) = proxy.rates.rates(&totals);
    let limits = &proxy.limits;
    let status = if limits.is_at_max() {
        "overload"
    } else if limits.is_full() {
        "full"
    } else {
        "ok"
    };
    let stream_time = |stream: &Stream| stream.hub.counters.client_time_ns.load(Ordering::Relaxed);
    let streams = generation
        .streams
        .iter()
        .map(|(path, stream)| {
            let figures = Figures::new(
                &totals[path],
                &stream_rates.get(path).copied().unwrap_or_default(),
                stream_time(stream),
            );
            let statistics = StreamStatistics {
                connections: stream.hub.counters.connections.load(Ordering::Relaxed),
                connected: stream.hub.upstream_connected(),
                offline: !stream.is_live() && stream.hub.upstream_connected(),
                keyframe_interval_ms: stream.hub.keyframe_interval_ms(),
                instant_start_bytes: stream.hub.instant_start_bytes(),
                figures,
                health: stream.hub.health_report(),
            };
            (path.clone(), statistics)
        })
        .collect();
    let total_time = generation.streams.values().map(|s| stream_time(s)).sum();
    Statistics {
        status,
        connections: limits.connected(),
        max_connections: limits.max(),
        full_connections: limits.soft(),
        figures: Figures::new(&sum(&totals), &total_rates, total_time),
        streams,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_reads_its_query_as_the_original() {
        assert_eq!(control_action(Some("offline")), Some(true));
        assert_eq!(control_action(Some("online")), Some(false));
        assert_eq!(control_action(Some("online&offline")), Some(true));
        assert_eq!(control_action(Some("offline&online")), Some(true));
        assert_eq!(control_action(Some("x=1&online=yes")), Some(false));
        assert_eq!(control_action(Some("offlin")), None);
        assert_eq!(control_action(None), None);
    }
}
