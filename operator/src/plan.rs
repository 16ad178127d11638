//! Capacity planning: from viewers, bitrate and channels to edge pods,
//! origins, memory, network and the `Restream` settings to use. The model
//! and its measured constants are explained in CAPACITY.md; this is the
//! same arithmetic, for `restreamer-operator plan`.

use std::fmt::Write as _;

/// What is to be served, and on what.
#[derive(Debug, Clone, PartialEq)]
pub struct Demand {
    pub viewers: u64,
    /// Bits per second of one channel.
    pub bitrate: f64,
    /// Channels.
    pub streams: u64,
    /// CPU cores of one data-plane pod.
    pub cores_per_pod: f64,
    /// Network interface of one node, Gbit/s.
    pub node_gbps: f64,
    /// Gbit/s one core delivers to clients that keep up (measured: see
    /// BENCHMARKS.md).
    pub gbps_per_core: f64,
    /// Seconds between keyframes (the GOP) of a channel.
    pub gop_seconds: f64,
    /// Instant start on (the default: `spec.instantStart.enabled`).
    pub instant_start: bool,
    /// The most a channel holds for it, MiB (`spec.instantStart.limitMebibytes`,
    /// the data plane's `instantstartlimit`).
    pub instant_start_limit_mib: u64,
}

impl Default for Demand {
    fn default() -> Self {
        Demand {
            viewers: 1000,
            bitrate: 8e6,
            streams: 1,
            cores_per_pod: 2.0,
            node_gbps: 25.0,
            gbps_per_core: 6.0,
            gop_seconds: 2.0,
            instant_start: true,
            instant_start_limit_mib: 16,
        }
    }
}

/// The answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Hard limit per pod: what it can serve at full rate.
    pub max_connections: u64,
    /// Soft limit per pod: 80 % of that; the autoscaler's target.
    pub soft_connections: u64,
    pub edge_pods: u64,
    pub min_replicas: u64,
    pub max_replicas: u64,
    pub pods_per_node: u64,
    pub nodes: u64,
    pub memory_per_pod_mib: u64,
    /// What each channel holds for instant start, in MiB: one GOP of its
    /// stream, at most the limit (0 with instant start off). Included in
    /// `memory_per_pod_mib`.
    pub instant_start_mib: f64,
    /// One GOP is more than the limit: new viewers start live instead.
    pub instant_start_capped: bool,
    pub output_packets: u64,
    pub total_gbps: f64,
    pub pod_gbps: f64,
    /// Origin pods, when tiers are advised (None: one tier is enough).
    pub origins: Option<u64>,
    /// Connections the broadcaster sees, with the plan's tiers.
    pub broadcaster_connections: u64,
    /// Connections it would see without tiers.
    pub broadcaster_connections_untiered: u64,
}

const SOFT_SHARE: f64 = 0.8;
/// Resident memory of an idle pod, and per client (BENCHMARKS.md).
const BASE_MIB: f64 = 10.0;
const PER_CLIENT_KIB: f64 = 19.0;
/// Above this many upstream connections to the broadcaster, tier.
const UNTIERED_MAX_CONNECTIONS: u64 = 50;

pub fn plan(demand: &Demand) -> Plan {
    let pod_capacity_bps = demand.cores_per_pod * demand.gbps_per_core * 1e9;
    let max_connections = ((pod_capacity_bps / demand.bitrate).floor() as u64).max(1);
    let soft_connections = ((max_connections as f64 * SOFT_SHARE).floor() as u64).max(1);
    let edge_pods = demand.viewers.div_ceil(soft_connections).max(1);
    // Two at least, so one can go (node drain, PodDisruptionBudget); a
    // quarter more at most, for a node failure at the peak.
    let min_replicas = 2.max(edge_pods.div_ceil(4));
    let max_replicas = (edge_pods + edge_pods.div_ceil(4)).max(min_replicas + 1);
    let pod_gbps = soft_connections as f64 * demand.bitrate / 1e9;
    let pods_per_node = ((demand.node_gbps * SOFT_SHARE / pod_gbps).floor() as u64).max(1);
    let nodes = edge_pods.max(min_replicas).div_ceil(pods_per_node);
    // One second of stream per client queue: costs no memory per client.
    let output_packets = (demand.bitrate / (188.0 * 8.0)).ceil() as u64;
    let ring_mib = demand.streams as f64 * (output_packets as f64 * 188.0 + 65536.0) / 1048576.0;
    // Instant start: each channel also holds its stream since the latest
    // keyframe, up to one GOP, at most the limit. Counted on top of the
    // output buffer (the ring keeps the longer of the two: an upper bound).
    let gop_mib = demand.bitrate * demand.gop_seconds / 8.0 / 1048576.0;
    let limit_mib = demand.instant_start_limit_mib as f64;
    let instant_start_mib = if demand.instant_start {
        gop_mib.min(limit_mib)
    } else {
        0.0
    };
    let instant_start_capped = demand.instant_start && gop_mib > limit_mib;
    let memory = BASE_MIB
        + ring_mib
        + demand.streams as f64 * instant_start_mib
        + max_connections as f64 * PER_CLIENT_KIB / 1024.0;
    let memory_per_pod_mib = (memory * 1.5 / 16.0).ceil() as u64 * 16;

    let untiered = edge_pods * demand.streams;
    let origins = (untiered > UNTIERED_MAX_CONNECTIONS).then(|| {
        // Each edge pulls every channel from one origin.
        let fan_in_bps = (edge_pods * demand.streams) as f64 * demand.bitrate;
        let origin_bps = pod_capacity_bps.min(demand.node_gbps * 1e9) * SOFT_SHARE;
        2.max((fan_in_bps / origin_bps).ceil() as u64)
    });
    Plan {
        max_connections,
        soft_connections,
        edge_pods,
        min_replicas,
        max_replicas,
        pods_per_node,
        nodes,
        memory_per_pod_mib,
        instant_start_mib,
        instant_start_capped,
        output_packets,
        total_gbps: demand.viewers as f64 * demand.bitrate / 1e9,
        pod_gbps,
        broadcaster_connections: origins.map_or(untiered, |o| o * demand.streams),
        broadcaster_connections_untiered: untiered,
        origins,
    }
}

impl Plan {
    /// A Markdown table and the `Restream` settings to use.
    pub fn report(&self, demand: &Demand) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} viewers, {} channel(s) at {:.1} Mbit/s, pods of {} cores, {} Gbit/s nodes\n",
            demand.viewers,
            demand.streams,
            demand.bitrate / 1e6,
            demand.cores_per_pod,
            demand.node_gbps
        );
        let _ = writeln!(out, "| | |\n|---|---|");
        let rows = [
            (
                "viewers per pod (soft / hard limit)",
                format!("{} / {}", self.soft_connections, self.max_connections),
            ),
            ("edge pods at the peak", self.edge_pods.to_string()),
            (
                "min / max replicas",
                format!("{} / {}", self.min_replicas, self.max_replicas),
            ),
            (
                "network per pod at the soft limit",
                format!("{:.1} Gbit/s", self.pod_gbps),
            ),
            (
                "pods per node / nodes",
                format!("{} / {}", self.pods_per_node, self.nodes),
            ),
            ("total egress", format!("{:.1} Gbit/s", self.total_gbps)),
            (
                "memory per pod (limit)",
                format!("{} MiB", self.memory_per_pod_mib),
            ),
            ("instant start per channel", self.instant_start_row(demand)),
            (
                "origins",
                self.origins
                    .map_or("none: one tier".to_string(), |o| o.to_string()),
            ),
            (
                "broadcaster connections",
                format!(
                    "{} (without tiers: {})",
                    self.broadcaster_connections, self.broadcaster_connections_untiered
                ),
            ),
        ];
        for (what, value) in rows {
            let _ = writeln!(out, "| {what} | {value} |");
        }
        let _ = writeln!(out, "\nSuggested Restream settings:\n\n```yaml\nspec:");
        let _ = writeln!(
            out,
            "  limits:\n    softConnections: {}\n    maxConnections: {}",
            self.soft_connections, self.max_connections
        );
        let _ = writeln!(
            out,
            "  buffers:\n    outputPackets: {}",
            self.output_packets
        );
        if !demand.instant_start {
            let _ = writeln!(out, "  instantStart:\n    enabled: false");
        } else if demand.instant_start_limit_mib != Demand::default().instant_start_limit_mib {
            let _ = writeln!(
                out,
                "  instantStart:\n    limitMebibytes: {}",
                demand.instant_start_limit_mib
            );
        }
        let _ = writeln!(
            out,
            "  scaling:\n    minReplicas: {}\n    maxReplicas: {}\n    targetUtilizationPercent: 80",
            self.min_replicas, self.max_replicas
        );
        let _ = writeln!(
            out,
            "  pods:\n    resources:\n      requests: {{cpu: \"{}\", memory: {}Mi}}\n      limits: {{memory: {}Mi}}",
            demand.cores_per_pod, self.memory_per_pod_mib, self.memory_per_pod_mib
        );
        if let Some(origins) = self.origins {
            let _ = writeln!(out, "  tiers:\n    origins: {origins}");
        }
        let _ = writeln!(out, "```");
        out
    }

    /// What instant start holds per channel, and that the memory counts it.
    fn instant_start_row(&self, demand: &Demand) -> String {
        if !demand.instant_start {
            return "off: nothing held".into();
        }
        let gop = format!(
            "one {} s GOP at {:.1} Mbit/s",
            demand.gop_seconds,
            demand.bitrate / 1e6
        );
        if self.instant_start_capped {
            format!(
                "{:.1} MiB, the limit ({gop} is more: new viewers of it start live; \
                 raise instantStart.limitMebibytes to keep instant start), in the memory per pod",
                self.instant_start_mib
            )
        } else {
            format!(
                "{:.1} MiB ({gop}), in the memory per pod",
                self.instant_start_mib
            )
        }
    }
}

/// Parses a number of seconds greater than 0, such as `2` or `0.5`.
pub fn parse_seconds(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|n| n.is_finite() && *n > 0.0)
        .ok_or_else(|| format!("{text:?} is not a number of seconds greater than 0 (e.g. 2, 0.5)"))
}

/// Parses a bitrate such as `8M`, `2.5M`, `800k` or `8000000`.
pub fn parse_bitrate(text: &str) -> Result<f64, String> {
    let (number, scale) = match text.chars().last() {
        Some('k' | 'K') => (&text[..text.len() - 1], 1e3),
        Some('m' | 'M') => (&text[..text.len() - 1], 1e6),
        Some('g' | 'G') => (&text[..text.len() - 1], 1e9),
        _ => (text, 1.0),
    };
    number
        .parse::<f64>()
        .ok()
        .filter(|n| *n > 0.0)
        .map(|n| n * scale)
        .ok_or_else(|| format!("{text:?} is not a bitrate (e.g. 8M, 800k)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demand(viewers: u64, streams: u64) -> Demand {
        Demand {
            viewers,
            streams,
            ..Demand::default()
        }
    }

    #[test]
    fn a_thousand_viewers_fit_two_pods_without_tiers() {
        let plan = plan(&demand(1000, 1));
        // 2 cores × 6 Gbit/s ÷ 8 Mbit/s.
        assert_eq!((plan.max_connections, plan.soft_connections), (1500, 1200));
        assert_eq!(plan.edge_pods, 1);
        assert_eq!((plan.min_replicas, plan.max_replicas), (2, 3));
        assert_eq!(plan.origins, None);
        assert_eq!(plan.broadcaster_connections, 1);
        assert_eq!(plan.output_packets, 5320);
    }

    #[test]
    fn a_hundred_thousand_viewers_on_ten_channels_need_tiers() {
        let plan = plan(&demand(100_000, 10));
        assert_eq!(plan.edge_pods, 84);
        assert_eq!(plan.max_replicas, 105);
        assert_eq!(plan.broadcaster_connections_untiered, 840);
        assert_eq!(plan.origins, Some(2));
        assert_eq!(plan.broadcaster_connections, 20);
        assert_eq!((plan.pods_per_node, plan.nodes), (2, 42));
        assert!((plan.total_gbps - 800.0).abs() < 1e-6);
    }

    #[test]
    fn a_million_viewers_need_more_origins() {
        let plan = plan(&demand(1_000_000, 10));
        assert_eq!(plan.edge_pods, 834);
        // 834 edges × 10 channels × 8 Mbit/s = 66.7 Gbit/s from the origins,
        // 9.6 Gbit/s each.
        assert_eq!(plan.origins, Some(7));
        assert_eq!(plan.broadcaster_connections, 70);
    }

    #[test]
    fn the_report_suggests_settings_the_crd_accepts() {
        let demand = demand(100_000, 10);
        let report = plan(&demand).report(&demand);
        let yaml = report
            .split("```yaml\n")
            .nth(1)
            .unwrap()
            .split("```")
            .next()
            .unwrap();
        let value: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
        let mut spec: serde_yaml::Value = value["spec"].clone();
        spec["streams"] =
            serde_yaml::from_str("[{name: tv, path: /tv.ts, upstreams: [\"tcp://a:1\"]}]").unwrap();
        let spec: crate::crd::RestreamSpec = serde_yaml::from_value(spec).unwrap();
        spec.validate().unwrap();
        assert_eq!(spec.tiers.unwrap().origins, 2);
    }

    #[test]
    fn the_suggested_instant_start_settings_are_the_crds() {
        let spec_of = |demand: &Demand| -> crate::crd::RestreamSpec {
            let report = plan(demand).report(demand);
            let yaml = report.split("```yaml\n").nth(1).unwrap();
            let yaml = yaml.split("```").next().unwrap();
            let value: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
            let mut spec = value["spec"].clone();
            spec["streams"] =
                serde_yaml::from_str("[{name: tv, path: /tv.ts, upstreams: [\"tcp://a:1\"]}]")
                    .unwrap();
            let spec: crate::crd::RestreamSpec = serde_yaml::from_value(spec).unwrap();
            spec.validate().unwrap();
            spec
        };
        let default = spec_of(&demand(1000, 1)).instant_start;
        assert_eq!(default, crate::crd::InstantStart::default());
        let off = spec_of(&Demand {
            instant_start: false,
            ..demand(1000, 1)
        });
        assert!(!off.instant_start.enabled);
        let raised = spec_of(&Demand {
            instant_start_limit_mib: 32,
            ..demand(1000, 1)
        });
        assert!(raised.instant_start.enabled);
        assert_eq!(raised.instant_start.limit_mebibytes, 32);
    }

    #[test]
    fn instant_start_adds_one_gop_per_channel_to_the_memory() {
        let on = plan(&demand(100_000, 10));
        // 8 Mbit/s × 2 s ÷ 8 = 2,000,000 bytes per channel.
        assert!((on.instant_start_mib - 2e6 / 1048576.0).abs() < 1e-9);
        assert!(!on.instant_start_capped);
        let off = plan(&Demand {
            instant_start: false,
            ..demand(100_000, 10)
        });
        assert_eq!(off.instant_start_mib, 0.0);
        // 10 + 10 × (5320 × 188 B + 64 KiB) + 1500 × 19 KiB = 47.99 MiB, and
        // with ten GOPs 67.06 MiB; × 1.5, up to a multiple of 16.
        assert_eq!((off.memory_per_pod_mib, on.memory_per_pod_mib), (80, 112));
        // Longer GOPs hold more.
        let long = plan(&Demand {
            gop_seconds: 5.0,
            ..demand(100_000, 10)
        });
        assert!((long.instant_start_mib - 5e6 / 1048576.0).abs() < 1e-9);
        assert_eq!(long.memory_per_pod_mib, 144);
    }

    #[test]
    fn a_gop_beyond_the_limit_counts_the_limit_and_says_so() {
        let demand = Demand {
            bitrate: 20e6,
            gop_seconds: 10.0,
            ..demand(1000, 4)
        };
        let plan = plan(&demand);
        // 25,000,000 bytes, 23.8 MiB: more than the 16 MiB limit.
        assert_eq!(plan.instant_start_mib, 16.0);
        assert!(plan.instant_start_capped);
        let report = plan.report(&demand);
        assert!(
            report.contains("| instant start per channel | 16.0 MiB, the limit (one 10 s GOP at 20.0 Mbit/s is more: new viewers of it start live"),
            "{report}"
        );
        let raised = Demand {
            instant_start_limit_mib: 32,
            ..demand.clone()
        };
        let raised_plan = super::plan(&raised);
        assert!((raised_plan.instant_start_mib - 25e6 / 1048576.0).abs() < 1e-9);
        assert!(raised_plan.memory_per_pod_mib > plan.memory_per_pod_mib);
    }

    #[test]
    fn the_report_says_what_instant_start_holds() {
        let demand = demand(1000, 1);
        let report = plan(&demand).report(&demand);
        assert!(
            report.contains(
                "| instant start per channel | 1.9 MiB (one 2 s GOP at 8.0 Mbit/s), in the memory per pod |"
            ),
            "{report}"
        );
        assert!(!report.contains("instantStart:"), "the defaults: {report}");
        let off = Demand {
            instant_start: false,
            ..demand
        };
        let report = plan(&off).report(&off);
        assert!(
            report.contains("| instant start per channel | off: nothing held |"),
            "{report}"
        );
    }

    #[test]
    fn gop_lengths_parse_as_positive_seconds() {
        assert_eq!(parse_seconds("2"), Ok(2.0));
        assert_eq!(parse_seconds("0.5"), Ok(0.5));
        for bad in ["0", "-1", "two", "inf", "NaN"] {
            let error = parse_seconds(bad).unwrap_err();
            assert!(error.contains(&format!("{bad:?}")), "{error}");
        }
    }

    #[test]
    fn bitrates_parse_with_units() {
        assert_eq!(parse_bitrate("8M"), Ok(8e6));
        assert_eq!(parse_bitrate("800k"), Ok(8e5));
        assert_eq!(parse_bitrate("2.5M"), Ok(2.5e6));
        assert!(parse_bitrate("fast").is_err());
        assert!(parse_bitrate("0").is_err());
    }
}
