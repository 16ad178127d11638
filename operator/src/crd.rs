//! The `Restream` custom resource: what a user writes to get a set of live
//! channels served by autoscaled data-plane pods.
//!
//! The doc comments here become the CRD's schema descriptions, so that
//! `kubectl explain restream.spec` is the reference. Rules that a schema
//! type cannot express (soft limit at most the hard one, paths that start
//! with `/`, min replicas at most max) are added as CEL
//! `x-kubernetes-validations` in [`crd`], and checked again by
//! [`RestreamSpec::validate`] before anything is rendered.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
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
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RestreamSpec {
    /// The channels served, at least one.
    pub streams: Vec<StreamSpec>,
    /// Connection limits of each data-plane pod.
    #[serde(default)]
    pub limits: Limits,
    /// Buffer sizes and batching.
    #[serde(default)]
    pub buffers: Buffers,
    /// Upstream timeouts and reconnection.
    #[serde(default)]
    pub upstream: UpstreamSettings,
    /// Which built-in APIs each pod serves.
    #[serde(default)]
    pub apis: Apis,
    /// Credentials required from clients, taken from a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<AuthenticationSpec>,
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

/// The origin tier.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tiers {
    /// Origin pods (a StatefulSet); each pulls every channel once. Two or
    /// more, so that edges can fail over; at most 32 (every edge lists
    /// every origin as an upstream of every channel).
    #[serde(default = "two")]
    pub origins: i32,
    /// CPU and memory of the origin pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_resources: Option<ResourceRequirements>,
}

fn two() -> i32 {
    2
}

/// The most origins a Restream may have: every edge's config lists each
/// origin for each channel, and a ConfigMap holds at most 1 MiB.
pub const MAX_ORIGINS: i32 = 32;

/// One channel.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamSpec {
    /// A name for the channel, used in logs and metrics labels.
    pub name: String,
    /// The HTTP path the channel is served at, starting with `/`, e.g.
    /// `/news.ts`.
    pub path: String,
    /// Upstream URLs (http, https, tcp, udp, unix, file, fork), tried in
    /// turn: the first that connects is used, the next one on failure.
    pub upstreams: Vec<String>,
    /// Network interface to join multicast groups on (udp upstreams).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multicast_interface: Option<String>,
}

/// Connection limits per pod.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Soft limit: at this many stream clients a pod reports itself full;
    /// the autoscaler keeps pods below it. 0 = none.
    #[serde(default = "default_soft")]
    pub soft_connections: u32,
    /// Hard limit: past this many stream clients a pod refuses new ones
    /// and reports not ready. 0 = none.
    #[serde(default = "default_hard")]
    pub max_connections: u32,
}

fn default_soft() -> u32 {
    800
}
fn default_hard() -> u32 {
    1000
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            soft_connections: default_soft(),
            max_connections: default_hard(),
        }
    }
}

/// Buffer sizes, in 188-byte packets, and batching.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Buffers {
    /// Per-stream input buffer (also the kernel receive buffer of UDP
    /// upstreams), in packets.
    #[serde(default = "default_input")]
    pub input_packets: u32,
    /// How far a client may fall behind before it loses packets, in
    /// packets. Costs no memory per client.
    #[serde(default = "default_output")]
    pub output_packets: u32,
    /// Longest time received packets wait to be sent in a batch, in ms.
    #[serde(default = "default_flush")]
    pub flush_milliseconds: u32,
}

fn default_input() -> u32 {
    1000
}
fn default_output() -> u32 {
    400
}
fn default_flush() -> u32 {
    10
}

impl Default for Buffers {
    fn default() -> Self {
        Buffers {
            input_packets: default_input(),
            output_packets: default_output(),
            flush_milliseconds: default_flush(),
        }
    }
}

/// Upstream timeouts and reconnection, in seconds.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamSettings {
    /// Connect timeout; 0 = none.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_seconds: u32,
    /// Drop an upstream silent for this long and fail over; 0 = never.
    #[serde(default = "default_read_timeout")]
    pub read_timeout_seconds: u32,
    /// Minimum time between rounds of connection attempts; 0 = never
    /// reconnect.
    #[serde(default = "default_reconnect")]
    pub reconnect_seconds: u32,
}

fn default_connect_timeout() -> u32 {
    5
}
fn default_read_timeout() -> u32 {
    10
}
fn default_reconnect() -> u32 {
    2
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        UpstreamSettings {
            connect_timeout_seconds: default_connect_timeout(),
            read_timeout_seconds: default_read_timeout(),
            reconnect_seconds: default_reconnect(),
        }
    }
}

/// The built-in APIs each pod serves (`/metrics`, `/healthz` and `/readyz`
/// are always served on the admin port).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Apis {
    /// `/health`: status, viewers, limits, bandwidth (JSON).
    #[serde(default = "yes")]
    pub health: bool,
    /// `/statistics`: totals and rates, global and per stream (JSON).
    #[serde(default = "yes")]
    pub statistics: bool,
    /// `/check/<stream name>`: 200 while the stream's upstream is connected.
    #[serde(default = "yes")]
    pub check: bool,
    /// `/control/<stream name>?offline|online`; requires `authentication`.
    #[serde(default)]
    pub control: bool,
}

fn yes() -> bool {
    true
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
    /// `basic` or `bearer`.
    #[serde(default = "default_auth_type", rename = "type")]
    pub kind: String,
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

fn default_auth_type() -> String {
    "basic".into()
}
fn default_realm() -> String {
    "restreamer".into()
}
fn default_secret_key() -> String {
    "users.json".into()
}

/// An HTTP GET sent on an event.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationSpec {
    /// `limit_hit`, `limit_miss` or `heartbeat`.
    pub event: String,
    /// The URL to GET (http or https).
    pub url: String,
}

/// The data-plane pods.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodSettings {
    /// The data-plane image; default: the operator's `--image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// CPU and memory requests and limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Extra labels on the pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations on the pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Node selector of the pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Seconds current viewers keep being served when a pod is stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_seconds: Option<u32>,
}

/// How the channels are exposed.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSettings {
    /// `ClusterIP`, `NodePort` or `LoadBalancer`.
    #[serde(default = "default_service_type", rename = "type")]
    pub kind: String,
    /// The Service's port.
    #[serde(default = "default_service_port")]
    pub port: u16,
}

fn default_service_type() -> String {
    "ClusterIP".into()
}
fn default_service_port() -> u16 {
    80
}

impl Default for ServiceSettings {
    fn default() -> Self {
        ServiceSettings {
            kind: default_service_type(),
            port: default_service_port(),
        }
    }
}

/// Autoscaling on `restreamer_connection_utilization` (connections ÷ soft
/// limit, per pod).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Scaling {
    /// Create the HorizontalPodAutoscaler. Turn off to scale by other
    /// means (e.g. a KEDA ScaledObject on the same metric); the Deployment
    /// then starts at `minReplicas`.
    #[serde(default = "yes")]
    pub autoscaler: bool,
    #[serde(default = "one")]
    pub min_replicas: i32,
    #[serde(default = "ten")]
    pub max_replicas: i32,
    /// Average utilization of the soft limit to keep, in percent.
    #[serde(default = "default_target")]
    pub target_utilization_percent: u32,
}

fn one() -> i32 {
    1
}
fn ten() -> i32 {
    10
}
fn default_target() -> u32 {
    80
}

impl Default for Scaling {
    fn default() -> Self {
        Scaling {
            autoscaler: true,
            min_replicas: one(),
            max_replicas: ten(),
            target_utilization_percent: default_target(),
        }
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
                if let Err(message) = restreamer::stream::source::Upstream::parse(url) {
                    problems.push(format!("spec.streams[{i}].upstreams[{j}]: {message}"));
                }
            }
        }
        for (i, notification) in self.notifications.iter().enumerate() {
            use restreamer::config::{check_notification_event, check_notification_url};
            if let Err(message) = check_notification_event(&notification.event) {
                problems.push(format!("spec.notifications[{i}].event: {message}"));
            }
            if let Err(message) = check_notification_url(&notification.url) {
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
        if !matches!(
            self.service.kind.as_str(),
            "ClusterIP" | "NodePort" | "LoadBalancer"
        ) {
            problems.push(format!(
                "spec.service.type: {:?} is not ClusterIP, NodePort or LoadBalancer",
                self.service.kind
            ));
        }
        if let Some(auth) = &self.authentication {
            if !matches!(auth.kind.as_str(), "basic" | "bearer") {
                problems.push(format!(
                    "spec.authentication.type: {:?} is not basic or bearer",
                    auth.kind
                ));
            }
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

/// The CRD, with the CEL validations that the schema types cannot carry.
pub fn crd() -> CustomResourceDefinition {
    use kube::CustomResourceExt;
    let mut crd = Restream::crd();
    let version = &mut crd.spec.versions[0];
    let schema = version
        .schema
        .as_mut()
        .and_then(|s| s.open_api_v3_schema.as_mut())
        .expect("the derived CRD has a schema");
    let mut json = serde_json::to_value(&*schema).expect("a schema serialises");
    let spec = &mut json["properties"]["spec"];
    spec["x-kubernetes-validations"] = serde_json::json!([
        {"rule": "self.limits.maxConnections == 0 || self.limits.softConnections <= self.limits.maxConnections",
         "message": "limits.softConnections must not exceed limits.maxConnections"},
        {"rule": "self.scaling.minReplicas <= self.scaling.maxReplicas",
         "message": "scaling.minReplicas must not exceed scaling.maxReplicas"},
        {"rule": "!self.apis.control || has(self.authentication)",
         "message": "the control API needs authentication"}
    ]);
    spec["properties"]["streams"]["minItems"] = 1.into();
    let stream = &mut spec["properties"]["streams"]["items"];
    // As `check_stream_path`.
    stream["properties"]["path"]["pattern"] = "^/[A-Za-z0-9._~!$&'()*+,;=:@/-]*$".into();
    stream["properties"]["name"]["pattern"] = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$".into();
    stream["properties"]["upstreams"]["minItems"] = 1.into();
    stream["properties"]["upstreams"]["items"]["pattern"] =
        "^(file|http|https|tcp|udp|unix|unixgram|unixpacket|fork):".into();
    for field in ["inputPackets", "outputPackets"] {
        spec["properties"]["buffers"]["properties"][field]["minimum"] = 1.into();
    }
    spec["properties"]["scaling"]["properties"]["minReplicas"]["minimum"] = 1.into();
    spec["properties"]["tiers"]["properties"]["origins"]["minimum"] = 1.into();
    spec["properties"]["tiers"]["properties"]["origins"]["maximum"] = MAX_ORIGINS.into();
    let notification = &mut spec["properties"]["notifications"]["items"]["properties"];
    notification["event"]["enum"] = serde_json::json!(["limit_hit", "limit_miss", "heartbeat"]);
    notification["url"]["pattern"] = "^https?://".into();
    spec["properties"]["service"]["properties"]["type"]["enum"] =
        serde_json::json!(["ClusterIP", "NodePort", "LoadBalancer"]);
    *schema = serde_json::from_value(json).expect("the schema stays valid");
    crd
}
