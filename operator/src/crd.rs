//! The `Restream` custom resource: what a user writes to get a set of live
//! channels served by autoscaled data-plane pods.
//!
//! The doc comments here become the CRD's schema descriptions, so that
//! `kubectl explain restream.spec` is the reference. Each field carries its
//! own constraints (enums, patterns, bounds, as schemars attributes); rules
//! across fields (soft limit at most the hard one, min replicas at most
//! max) are CEL `x-kubernetes-validations` on the spec. All are checked
//! again by [`RestreamSpec::validate`] before anything is rendered, naming
//! the field, for objects admitted under an older CRD.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration, TopologySpreadConstraint};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A set of live MPEG-TS channels, each fetched once per data-plane pod and
/// served to many HTTP clients by pods that scale with the viewers.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "restreamer.io",
    version = "v1alpha1",
    kind = "Restream",
    namespaced,
    status = "RestreamStatus",
    shortname = "rst",
    printcolumn = r#"{"name":"Streams","type":"integer","jsonPath":".status.streams"}"#,
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".status.replicas"}"#,
    printcolumn = r#"{"name":"Desired","type":"integer","jsonPath":".status.desiredReplicas","description":"What the autoscaler wants"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason","description":"Why the Restream is or is not ready"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.limits.maxConnections == 0 || self.limits.softConnections <= self.limits.maxConnections",
     "message": "limits.softConnections must not exceed limits.maxConnections"},
    {"rule": "self.scaling.minReplicas <= self.scaling.maxReplicas",
     "message": "scaling.minReplicas must not exceed scaling.maxReplicas"},
    {"rule": "!self.apis.control || has(self.authentication)",
     "message": "the control API needs authentication"},
    {"rule": "!self.scaling.keda || has(self.scaling.prometheusAddress)",
     "message": "scaling.keda needs scaling.prometheusAddress"},
    {"rule": "!has(self.service.externalTrafficPolicy) || self.service.type != 'ClusterIP'",
     "message": "service.externalTrafficPolicy needs a NodePort or LoadBalancer service"},
    {"rule": "!has(self.tls) || self.tls.port != self.service.port",
     "message": "tls.port must differ from service.port"}
]))]
pub struct RestreamSpec {
    /// The channels served, at least one.
    #[schemars(length(min = 1))]
    pub streams: Vec<StreamSpec>,
    /// Connection limits of each data-plane pod.
    #[serde(default)]
    pub limits: Limits,
    /// Buffer sizes and batching.
    #[serde(default)]
    pub buffers: Buffers,
    /// How new viewers start: on the latest keyframe, at once.
    #[serde(default)]
    pub instant_start: InstantStart,
    /// Upstream timeouts and reconnection.
    #[serde(default)]
    pub upstream: UpstreamSettings,
    /// Which built-in APIs each pod serves.
    #[serde(default)]
    pub apis: Apis,
    /// Credentials required from clients, taken from a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<AuthenticationSpec>,
    /// HTTPS for viewers, beside plain HTTP, with a certificate from a
    /// Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// HTTP callbacks when a pod becomes full or has room again, and
    /// heartbeats.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<NotificationSpec>,
    /// The data-plane pods.
    #[serde(default)]
    pub pods: PodSettings,
    /// How the channels are exposed.
    #[serde(default)]
    pub service: ServiceSettings,
    /// Autoscaling on the pods' "full" signal.
    #[serde(default)]
    pub scaling: Scaling,
    /// Origin/edge tiers. Without them, every pod pulls every channel from
    /// its upstreams. With them, a few origin pods pull each channel from
    /// the upstreams once, and the autoscaled pods (the edges) pull from
    /// the origins, each origin one of their upstreams: scaling the edges
    /// adds no load on the broadcaster, and losing an origin is a failover,
    /// not a disconnect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiers: Option<Tiers>,
}

/// HTTPS: the pods serve the same channels and APIs over TLS (HTTP/1.1
/// and HTTP/2), on a second Service port.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// A `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`), e.g. kept by
    /// cert-manager: a renewed certificate reaches the pods without a
    /// restart (new connections use it).
    #[schemars(length(min = 1))]
    pub secret_name: String,
    /// The Service's HTTPS port.
    #[serde(default = "https_port")]
    pub port: u16,
}

fn https_port() -> u16 {
    443
}

/// The origin tier.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Tiers {
    /// Origin pods (a StatefulSet); each pulls every channel once. Two or
    /// more, so that edges can fail over; at most 32 (every edge lists
    /// every origin as an upstream of every channel).
    #[schemars(range(min = 1, max = MAX_ORIGINS))]
    pub origins: i32,
    /// CPU and memory of the origin pods.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin_resources: Option<ResourceRequirements>,
}

impl Default for Tiers {
    fn default() -> Self {
        Tiers {
            origins: 2,
            origin_resources: None,
        }
    }
}

/// The most origins a Restream may have: every edge's config lists each
/// origin for each channel, and a ConfigMap holds at most 1 MiB.
pub const MAX_ORIGINS: i32 = 32;

/// The schema's pattern of a channel path, as [`check_stream_path`].
const STREAM_PATH_PATTERN: &str = "^/[A-Za-z0-9._~!$&'()*+,;=:@/-]*$";
/// The schema's pattern of an upstream URL: the schemes the data plane reads.
const UPSTREAM_PATTERN: &str = "^(file|http|https|tcp|udp|unix|unixgram|unixpacket|fork):";

/// One channel.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamSpec {
    /// A name for the channel, used in logs and metrics labels.
    #[schemars(regex(pattern = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"))]
    pub name: String,
    /// The HTTP path the channel is served at, starting with `/`, e.g.
    /// `/news.ts`.
    #[schemars(regex(pattern = STREAM_PATH_PATTERN))]
    pub path: String,
    /// Upstream URLs (http, https, tcp, udp, unix, file, fork), tried in
    /// turn: the first that connects is used, the next one on failure.
    #[schemars(length(min = 1), inner(regex(pattern = UPSTREAM_PATTERN)))]
    pub upstreams: Vec<String>,
    /// Network interface to join multicast groups on (udp upstreams).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multicast_interface: Option<String>,
    /// This channel's own `spec.instantStart.enabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instant_start: Option<bool>,
    /// This channel's own `spec.upstream.contentTimeoutSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_timeout_seconds: Option<u32>,
    /// This channel's own `spec.upstream.ccErrorLimit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cc_error_limit: Option<u32>,
}

/// Connection limits per pod.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Limits {
    /// Soft limit: at this many stream clients a pod reports itself full;
    /// the autoscaler keeps pods below it. 0 = none.
    pub soft_connections: u32,
    /// Hard limit: past this many stream clients a pod refuses new ones
    /// and reports not ready. 0 = none.
    pub max_connections: u32,
    /// Stream connections one client address may hold at once, per pod;
    /// past it its new ones are refused as past the hard limit. 0 = none.
    /// Behind a load balancer or ingress, see `service.trustedProxies`.
    pub max_connections_per_client: u32,
    /// A stream client that has packets waiting and reads none for this
    /// many seconds is disconnected (its connection reset, which frees the
    /// kernel send buffer it holds). 0 = never; unset = the data plane's
    /// default, 30.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stall_timeout_seconds: Option<u32>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            soft_connections: 800,
            max_connections: 1000,
            max_connections_per_client: 0,
            stall_timeout_seconds: None,
        }
    }
}

/// Buffer sizes, in 188-byte packets, and batching.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Buffers {
    /// Per-stream input buffer (also the kernel receive buffer of UDP
    /// upstreams), in packets.
    #[schemars(range(min = 1))]
    pub input_packets: u32,
    /// How far a client may fall behind before it loses packets, in
    /// packets. Costs no memory per client.
    #[schemars(range(min = 1))]
    pub output_packets: u32,
    /// Longest time received packets wait to be sent in a batch, in ms.
    pub flush_milliseconds: u32,
}

impl Default for Buffers {
    fn default() -> Self {
        Buffers {
            input_packets: 1000,
            output_packets: 400,
            flush_milliseconds: 10,
        }
    }
}

/// Instant start: every new viewer starts on the latest random access
/// point (a keyframe) after fresh PAT and PMT, so the picture appears at
/// once instead of after the next keyframe; a viewer that fell behind
/// resumes on the next one. The pods hold each channel since its latest
/// keyframe for this: count up to `limitMebibytes` per channel in the
/// pods' memory.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct InstantStart {
    /// Off: viewers start on the next packet, as the original restreamer.
    /// A channel may set its own (`streams[].instantStart`).
    pub enabled: bool,
    /// The most each channel holds for it, in MiB; past it new viewers
    /// start live (and the pod logs `instant-start-limit` once).
    #[schemars(range(min = 1))]
    pub limit_mebibytes: u32,
}

impl Default for InstantStart {
    fn default() -> Self {
        InstantStart {
            enabled: true,
            limit_mebibytes: 16,
        }
    }
}

/// Upstream timeouts and reconnection, in seconds.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct UpstreamSettings {
    /// Connect timeout; 0 = none.
    pub connect_timeout_seconds: u32,
    /// Drop an upstream silent for this long and fail over; 0 = never.
    pub read_timeout_seconds: u32,
    /// Minimum time between rounds of connection attempts; 0 = never
    /// reconnect.
    pub reconnect_seconds: u32,
    /// An upstream that stays connected but sends no PAT and PMT, or no
    /// packet of any elementary stream its PMT lists, or whose video
    /// stops, for this long counts as lost: the pods fail over as on a
    /// disconnect. 0 = off. A channel may set its own.
    pub content_timeout_seconds: u32,
    /// Continuity-counter errors within 10 seconds that count as a lost
    /// upstream (failover), for paths that lose packets. 0 = off. A
    /// channel may set its own.
    pub cc_error_limit: u32,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        UpstreamSettings {
            connect_timeout_seconds: 5,
            read_timeout_seconds: 10,
            reconnect_seconds: 2,
            content_timeout_seconds: 10,
            cc_error_limit: 0,
        }
    }
}

/// The built-in APIs each pod serves (`/metrics`, `/healthz` and `/readyz`
/// are always served on the admin port).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Apis {
    /// `/health`: status, viewers, limits, bandwidth (JSON).
    pub health: bool,
    /// `/statistics`: totals and rates, global and per stream (JSON).
    pub statistics: bool,
    /// `/check/<stream name>`: 200 while the stream's upstream is connected.
    pub check: bool,
    /// `/control/<stream name>?offline|online`; requires `authentication`.
    pub control: bool,
}

/// Where the APIs are served. Stream paths may not take these, whether or
/// not the API is enabled, so that enabling one later breaks nothing.
pub const HEALTH_PATH: &str = "/health";
pub const STATISTICS_PATH: &str = "/statistics";
/// Followed by a stream's name.
pub const CHECK_PREFIX: &str = "/check/";
/// Followed by a stream's name.
pub const CONTROL_PREFIX: &str = "/control/";

impl Default for Apis {
    fn default() -> Self {
        Apis {
            health: true,
            statistics: true,
            check: true,
            control: false,
        }
    }
}

/// Client credentials from a Secret: its key (default `users.json`) holds
/// users in the data plane's `userlist` format,
/// `{"name": {"password": "..."}}`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthenticationSpec {
    /// `basic` (a user name and password), `bearer` (a token) or `token`
    /// (signed URLs, each user's password the signing key).
    #[serde(default, rename = "type")]
    pub kind: AuthenticationKind,
    /// The realm shown to clients.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// The Secret holding the users.
    pub secret_name: String,
    /// The Secret's key holding the users.
    #[serde(default = "default_secret_key")]
    pub secret_key: String,
    /// The users allowed in (names in the Secret).
    pub users: Vec<String>,
    /// Also require credentials from stream clients (not only for the APIs).
    #[serde(default)]
    pub streams: bool,
}

fn default_realm() -> String {
    "restreamer".into()
}
fn default_secret_key() -> String {
    "users.json".into()
}

/// How clients authenticate.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuthenticationKind {
    /// HTTP Basic: a user name and password.
    #[default]
    Basic,
    /// A bearer token (the password) in the `Authorization` header.
    Bearer,
    /// Signed URLs (`?expires=...&signature=...`): each user's password is
    /// a key that signs a path and an expiry time.
    Token,
}

/// An HTTP GET sent on an event.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationSpec {
    /// `limit_hit`, `limit_miss` or `heartbeat`.
    pub event: NotificationEvent,
    /// The URL to GET (http or https).
    #[schemars(regex(pattern = "^https?://"))]
    pub url: String,
}

/// The data plane's notification events.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotificationEvent {
    /// A pod reached its soft limit.
    LimitHit,
    /// A pod is below its soft limit again.
    LimitMiss,
    /// Every so often, while the pod runs.
    Heartbeat,
}

impl NotificationEvent {
    /// The event's name in the data-plane config.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationEvent::LimitHit => "limit_hit",
            NotificationEvent::LimitMiss => "limit_miss",
            NotificationEvent::Heartbeat => "heartbeat",
        }
    }
}

/// The data-plane pods.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct PodSettings {
    /// The data-plane image; default: the operator's `--image`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// CPU and memory requests and limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Extra labels on the pods.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations on the pods.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Node selector of the pods.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the pods.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// How the pods spread over the cluster. Default: as evenly as
    /// possible over nodes and over zones (where nodes carry
    /// `topology.kubernetes.io/zone`), never refusing to schedule, so one
    /// node's loss does not take every viewer. `[]` for no constraint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    /// Run the pods in the node's network namespace, for multicast (UDP)
    /// upstreams: most clusters' pod networks carry no multicast. The pods'
    /// ports (8080, 9090) are then the node's, so at most one pod of a
    /// hostNetwork Restream runs per node.
    pub host_network: bool,
    /// Seconds current viewers keep being served when a pod is stopped.
    pub drain_seconds: u32,
    /// Seconds a stopping pod keeps serving as if nothing happened, before
    /// its drain starts, so that its endpoint is gone from the Service (and
    /// load balancers) first and no new viewer is sent to it. Needs
    /// Kubernetes 1.30 or later (the `sleep` pre-stop hook). 0 = none.
    pub pre_stop_seconds: u32,
}

impl Default for PodSettings {
    fn default() -> Self {
        PodSettings {
            image: None,
            resources: None,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            topology_spread_constraints: None,
            host_network: false,
            drain_seconds: 5,
            pre_stop_seconds: 5,
        }
    }
}

/// How the channels are exposed.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct ServiceSettings {
    /// `ClusterIP`, `NodePort` or `LoadBalancer`.
    #[serde(rename = "type")]
    pub kind: ServiceKind,
    /// The Service's port.
    pub port: u16,
    /// `Local` keeps viewers' addresses (in the pods' logs and per-address
    /// limits) by sending external traffic only to pods on the node that
    /// received it; `Cluster` (Kubernetes' default) spreads it evenly but
    /// the pods see a node's address. NodePort and LoadBalancer only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_traffic_policy: Option<TrafficPolicy>,
    /// Proxies in front of the pods (an ingress controller's or load
    /// balancer's addresses, as CIDRs or single addresses) whose
    /// `Forwarded` / `X-Forwarded-For` headers name the viewer's address,
    /// for `limits.maxConnectionsPerClient`, address-bound tokens and logs.
    /// Those headers are ignored from anyone else.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<String>,
}

impl Default for ServiceSettings {
    fn default() -> Self {
        ServiceSettings {
            kind: ServiceKind::ClusterIP,
            port: 80,
            external_traffic_policy: None,
            trusted_proxies: Vec::new(),
        }
    }
}

/// A Service type.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ServiceKind {
    ClusterIP,
    NodePort,
    LoadBalancer,
}

impl ServiceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceKind::ClusterIP => "ClusterIP",
            ServiceKind::NodePort => "NodePort",
            ServiceKind::LoadBalancer => "LoadBalancer",
        }
    }
}

/// A Service's `externalTrafficPolicy`.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum TrafficPolicy {
    Cluster,
    Local,
}

impl TrafficPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            TrafficPolicy::Cluster => "Cluster",
            TrafficPolicy::Local => "Local",
        }
    }
}

/// Autoscaling on `restreamer_connection_utilization` (connections ÷ soft
/// limit, per pod). Scaling out is fast; scaling in is slow on purpose,
/// because every removed pod disconnects its viewers after its drain: they
/// reconnect to the other pods.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Scaling {
    /// Create the HorizontalPodAutoscaler. Turn off to scale by other
    /// means; the Deployment then runs `minReplicas` pods, set by the
    /// operator.
    pub autoscaler: bool,
    /// Scale with KEDA instead of the HorizontalPodAutoscaler: a
    /// `keda.sh/v1alpha1` ScaledObject with a `prometheus` trigger on the
    /// pods' utilization, read from `prometheusAddress`. Needs KEDA in the
    /// cluster and the operator installed with `keda.enabled`.
    pub keda: bool,
    /// The Prometheus that scrapes the pods, for KEDA, e.g.
    /// `http://prometheus-operated.monitoring.svc:9090`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^https?://"))]
    pub prometheus_address: Option<String>,
    #[schemars(range(min = 1))]
    pub min_replicas: i32,
    pub max_replicas: i32,
    /// Average utilization of the soft limit to keep, in percent.
    #[schemars(range(min = 1))]
    pub target_utilization_percent: u32,
    /// How long the load must stay low before pods are removed, in
    /// seconds: the highest recommendation over this window is used, so
    /// a dip in viewers (half-time, a break) removes nothing.
    #[schemars(range(min = 0, max = 3600))]
    pub scale_down_stabilization_seconds: i32,
    /// At most this many pods are removed per `scaleDownPeriodSeconds`.
    #[schemars(range(min = 1))]
    pub scale_down_pods: i32,
    /// See `scaleDownPods`.
    #[schemars(range(min = 1, max = 1800))]
    pub scale_down_period_seconds: i32,
}

impl Default for Scaling {
    fn default() -> Self {
        Scaling {
            autoscaler: true,
            keda: false,
            prometheus_address: None,
            min_replicas: 1,
            max_replicas: 10,
            target_utilization_percent: 80,
            scale_down_stabilization_seconds: 600,
            scale_down_pods: 1,
            scale_down_period_seconds: 300,
        }
    }
}

impl Scaling {
    /// Whether something other than the operator sets the replica count.
    pub fn autoscaled(&self) -> bool {
        self.autoscaler || self.keda
    }
}

/// What the operator last did with a Restream.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestreamStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing` and `Degraded`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Channels configured.
    #[serde(default)]
    pub streams: i32,
    /// Data-plane pods.
    #[serde(default)]
    pub replicas: i32,
    /// Data-plane pods ready for viewers.
    #[serde(default)]
    pub ready_replicas: i32,
    /// The pods the autoscaler wants (its `desiredReplicas`); absent
    /// without the operator's HorizontalPodAutoscaler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,
    /// Hash of the data-plane config in force (as in the pods'
    /// `restreamer_config_info` metric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
}

impl RestreamSpec {
    /// The rules of the CRD's CEL validations, checked again here (and
    /// with messages naming the field) before anything is rendered.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if self.streams.is_empty() {
            problems.push("spec.streams: at least one stream is needed".to_string());
        }
        let mut names = std::collections::HashSet::new();
        let mut paths = std::collections::HashSet::new();
        for (i, stream) in self.streams.iter().enumerate() {
            if !is_dns_label(&stream.name) {
                problems.push(format!(
                    "spec.streams[{i}].name: {:?} must be lower-case letters, digits and '-'",
                    stream.name
                ));
            }
            if !names.insert(&stream.name) {
                problems.push(format!(
                    "spec.streams[{i}].name: {:?} is used twice",
                    stream.name
                ));
            }
            if let Err(message) = check_stream_path(&stream.path) {
                problems.push(format!("spec.streams[{i}].path: {message}"));
            }
            if stream.path == HEALTH_PATH
                || stream.path == STATISTICS_PATH
                || stream.path.starts_with(CHECK_PREFIX)
                || stream.path.starts_with(CONTROL_PREFIX)
            {
                problems.push(format!(
                    "spec.streams[{i}].path: {:?} is where an API is served \
                     ({HEALTH_PATH}, {STATISTICS_PATH}, {CHECK_PREFIX}..., {CONTROL_PREFIX}...)",
                    stream.path
                ));
            }
            if !paths.insert(&stream.path) {
                problems.push(format!(
                    "spec.streams[{i}].path: {:?} is used twice",
                    stream.path
                ));
            }
            if stream.upstreams.is_empty() {
                problems.push(format!(
                    "spec.streams[{i}].upstreams: at least one upstream is needed"
                ));
            }
            // The data plane's own URL parser: what it would refuse at
            // load is refused here, naming the Restream's field.
            for (j, url) in stream.upstreams.iter().enumerate() {
                if let Err(message) = restreamer::config::Upstream::parse(url) {
                    problems.push(format!("spec.streams[{i}].upstreams[{j}]: {message}"));
                }
            }
        }
        for (i, notification) in self.notifications.iter().enumerate() {
            if let Err(message) = restreamer::config::check_notification_url(&notification.url) {
                problems.push(format!("spec.notifications[{i}].url: {message}"));
            }
        }
        for (field, packets) in [
            ("inputPackets", self.buffers.input_packets),
            ("outputPackets", self.buffers.output_packets),
        ] {
            if packets == 0 {
                problems.push(format!("spec.buffers.{field}: must be at least 1 packet"));
            }
        }
        if self.instant_start.limit_mebibytes == 0 {
            problems.push("spec.instantStart.limitMebibytes: must be at least 1".into());
        }
        if self.limits.max_connections > 0
            && self.limits.soft_connections > self.limits.max_connections
        {
            problems.push(format!(
                "spec.limits.softConnections: {} is above maxConnections {}",
                self.limits.soft_connections, self.limits.max_connections
            ));
        }
        if self.scaling.min_replicas < 1 || self.scaling.min_replicas > self.scaling.max_replicas {
            problems.push(format!(
                "spec.scaling: need 1 <= minReplicas ({}) <= maxReplicas ({})",
                self.scaling.min_replicas, self.scaling.max_replicas
            ));
        }
        if let Some(tiers) = &self.tiers {
            if !(1..=MAX_ORIGINS).contains(&tiers.origins) {
                problems.push(format!(
                    "spec.tiers.origins: {} must be from 1 to {MAX_ORIGINS}",
                    tiers.origins
                ));
            }
        }
        if self.apis.control && self.authentication.is_none() {
            problems.push("spec.apis.control: the control API needs spec.authentication".into());
        }
        if self.service.external_traffic_policy.is_some()
            && self.service.kind == ServiceKind::ClusterIP
        {
            problems.push(
                "spec.service.externalTrafficPolicy: needs a NodePort or LoadBalancer service"
                    .into(),
            );
        }
        for (i, proxy) in self.service.trusted_proxies.iter().enumerate() {
            if let Err(message) = proxy.parse::<restreamer::config::Cidr>() {
                problems.push(format!("spec.service.trustedProxies[{i}]: {message}"));
            }
        }
        if let Some(tls) = &self.tls {
            if tls.port == self.service.port {
                problems.push(format!(
                    "spec.tls.port: {} is spec.service.port already",
                    tls.port
                ));
            }
        }
        if self.scaling.keda && self.scaling.prometheus_address.is_none() {
            problems.push(
                "spec.scaling.prometheusAddress: KEDA needs the Prometheus that scrapes the pods"
                    .into(),
            );
        }
        for (field, value) in [
            (
                "targetUtilizationPercent",
                self.scaling.target_utilization_percent as i64,
            ),
            ("scaleDownPods", self.scaling.scale_down_pods.into()),
            (
                "scaleDownPeriodSeconds",
                self.scaling.scale_down_period_seconds.into(),
            ),
        ] {
            if value < 1 {
                problems.push(format!("spec.scaling.{field}: must be at least 1"));
            }
        }
        if !(0..=3600).contains(&self.scaling.scale_down_stabilization_seconds) {
            problems.push(format!(
                "spec.scaling.scaleDownStabilizationSeconds: {} must be from 0 to 3600",
                self.scaling.scale_down_stabilization_seconds
            ));
        }
        if self.scaling.scale_down_period_seconds > 1800 {
            problems.push(format!(
                "spec.scaling.scaleDownPeriodSeconds: {} is over the autoscaler's 1800",
                self.scaling.scale_down_period_seconds
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

/// A channel's path: plain URL characters only, as the schema's pattern
/// says, so that it needs no encoding in the edges' upstream URLs or in
/// viewers' players.
pub fn check_stream_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} must start with /"));
    }
    // RFC 3986 `pchar`s and `/`, without `%`: the pods match requests
    // after decoding them, so an encoded path would never match.
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@/".contains(c);
    match path.chars().find(|&c| !allowed(c)) {
        None => Ok(()),
        Some(c) => Err(format!(
            "{path:?}: {c:?} is not allowed in a channel path \
             (use letters, digits and -._~!$&'()*+,;=:@/)"
        )),
    }
}

fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// The CRD. Its validations are on the types above (schemars
/// attributes), so that the schema and the checks of
/// [`RestreamSpec::validate`] sit side by side.
pub fn crd() -> CustomResourceDefinition {
    use kube::CustomResourceExt;
    Restream::crd()
}
