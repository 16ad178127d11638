//! The data-plane pods, as the Deployment (edges) and the StatefulSet
//! (origins) run them: locked down, reading their config from a mounted
//! ConfigMap directory (never a `subPath`, whose files the kubelet does not
//! update) so a config change is a live reload, spread over nodes and
//! zones, and stopped gently (a pre-stop pause, then the drain).

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    HTTPGetAction, Lifecycle, LifecycleHandler, PodSecurityContext, PodSpec, PodTemplateSpec,
    Probe, ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext, SleepAction,
    TopologySpreadConstraint, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta::{
    config_map_name, selector_labels, ADMIN_PORT, CONFIG_DIR, CONFIG_FILE, HTTPS_PORT, HTTP_PORT,
    SECRET_DIR, TLS_DIR,
};
use crate::crd::{Restream, TlsSpec};

/// Seconds a stopping pod gets beyond its pre-stop pause and drain, to exit.
const EXIT_MARGIN_SECONDS: i64 = 10;

/// The pods of `instance` (the Restream's name, or its origin tier's),
/// reading the ConfigMap of the same instance; `tls` for the pods that
/// serve viewers HTTPS.
pub fn pod_template(
    restream: &Restream,
    instance: &str,
    default_image: &str,
    resources: Option<ResourceRequirements>,
    tls: Option<&TlsSpec>,
) -> PodTemplateSpec {
    let pods = &restream.spec.pods;
    let mut labels = pods.labels.clone();
    labels.extend(selector_labels(instance));
    let mut annotations = pods.annotations.clone();
    annotations.extend([
        ("prometheus.io/scrape".to_string(), "true".to_string()),
        ("prometheus.io/port".to_string(), ADMIN_PORT.to_string()),
        ("prometheus.io/path".to_string(), "/metrics".to_string()),
    ]);
    let probe = |path: &str| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("admin".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(5),
        failure_threshold: Some(3),
        ..Probe::default()
    };
    let (volumes, mounts) = volumes(restream, instance, tls);
    let port = |name: &str, container_port: i32| ContainerPort {
        name: Some(name.into()),
        container_port,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    };
    let pre_stop = i64::from(pods.pre_stop_seconds);
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "restreamer".into(),
                image: Some(
                    pods.image
                        .clone()
                        .unwrap_or_else(|| default_image.to_string()),
                ),
                args: Some(vec![format!("{CONFIG_DIR}/{CONFIG_FILE}")]),
                ports: Some(
                    [
                        Some(port("http", HTTP_PORT)),
                        tls.map(|_| port("https", HTTPS_PORT)),
                        Some(port("admin", ADMIN_PORT)),
                    ]
                    .into_iter()
                    .flatten()
                    .collect(),
                ),
                readiness_probe: Some(probe("/readyz")),
                liveness_probe: Some(Probe {
                    failure_threshold: Some(6),
                    ..probe("/healthz")
                }),
                // Serve on while the endpoint leaves the Service; SIGTERM
                // (and the drain) comes after.
                lifecycle: (pre_stop > 0).then(|| Lifecycle {
                    pre_stop: Some(LifecycleHandler {
                        sleep: Some(SleepAction { seconds: pre_stop }),
                        ..LifecycleHandler::default()
                    }),
                    ..Lifecycle::default()
                }),
                resources,
                security_context: Some(SecurityContext {
                    run_as_non_root: Some(true),
                    read_only_root_filesystem: Some(true),
                    allow_privilege_escalation: Some(false),
                    capabilities: Some(Capabilities {
                        drop: Some(vec!["ALL".into()]),
                        ..Capabilities::default()
                    }),
                    ..SecurityContext::default()
                }),
                volume_mounts: Some(mounts),
                ..Container::default()
            }],
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(65532),
                run_as_group: Some(65532),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..SeccompProfile::default()
                }),
                ..PodSecurityContext::default()
            }),
            // The pause, the drain, and a margin for the process to exit.
            termination_grace_period_seconds: Some(
                pre_stop + i64::from(pods.drain_seconds) + EXIT_MARGIN_SECONDS,
            ),
            host_network: pods.host_network.then_some(true),
            // Cluster DNS (the origins' names) from the node's network too.
            dns_policy: pods.host_network.then(|| "ClusterFirstWithHostNet".into()),
            topology_spread_constraints: spread(restream, instance),
            node_selector: (!pods.node_selector.is_empty()).then(|| pods.node_selector.clone()),
            tolerations: (!pods.tolerations.is_empty()).then(|| pods.tolerations.clone()),
            volumes: Some(volumes),
            automount_service_account_token: Some(false),
            ..PodSpec::default()
        }),
    }
}

/// The topology keys the pods spread over by default.
pub const SPREAD_KEYS: [&str; 2] = ["kubernetes.io/hostname", "topology.kubernetes.io/zone"];

/// `spec.pods.topologySpreadConstraints`, or by default: evenly over nodes
/// and zones, preferred (`ScheduleAnyway`) so that a small cluster still
/// schedules every pod. `[]` means none.
fn spread(restream: &Restream, instance: &str) -> Option<Vec<TopologySpreadConstraint>> {
    let constraints = match &restream.spec.pods.topology_spread_constraints {
        Some(constraints) => constraints.clone(),
        None => SPREAD_KEYS
            .iter()
            .map(|key| TopologySpreadConstraint {
                max_skew: 1,
                topology_key: key.to_string(),
                when_unsatisfiable: "ScheduleAnyway".into(),
                label_selector: Some(LabelSelector {
                    match_labels: Some(selector_labels(instance)),
                    ..LabelSelector::default()
                }),
                ..TopologySpreadConstraint::default()
            })
            .collect(),
    };
    (!constraints.is_empty()).then_some(constraints)
}

/// The config directory, a writable `/tmp`, the users Secret when the
/// Restream authenticates, and the TLS Secret.
fn volumes(
    restream: &Restream,
    instance: &str,
    tls: Option<&TlsSpec>,
) -> (Vec<Volume>, Vec<VolumeMount>) {
    let mut volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map_name(instance),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    ];
    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    };
    let mut mounts = vec![
        mount("config", CONFIG_DIR, true),
        mount("tmp", "/tmp", false),
    ];
    if let Some(auth) = &restream.spec.authentication {
        volumes.push(Volume {
            name: "users".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(auth.secret_name.clone()),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(mount("users", SECRET_DIR, true));
    }
    if let Some(tls) = tls {
        volumes.push(Volume {
            name: "tls".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(tls.secret_name.clone()),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(mount("tls", TLS_DIR, true));
    }
    (volumes, mounts)
}
