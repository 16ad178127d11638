//! Rendering: a `Restream` to the Kubernetes objects that run it. Pure
//! functions of the resource, so that the controller, `restreamer-operator
//! render` and the tests all see the same objects.
//!
//! - a ConfigMap with the data-plane config, built with the data plane's
//!   own config types and checked by its own validation, so the two cannot
//!   drift;
//! - a Deployment of data-plane pods that mount it as a directory (never a
//!   `subPath`, whose files the kubelet does not update), so a config change
//!   reaches running pods by live reload, without a restart; the pod
//!   template does not carry the config, so only image, resources and pod
//!   settings roll the pods;
//! - a Service, a HorizontalPodAutoscaler on the pods'
//!   `restreamer_connection_utilization`, and a PodDisruptionBudget.
//!
//! Every object carries the Restream as its controlling owner, so deleting
//! the Restream deletes them.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment, StatefulSet,
    StatefulSetSpec,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec,
    MetricIdentifier, MetricSpec, MetricTarget, PodsMetricSource,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    HTTPGetAction, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile,
    SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use restreamer::config::{
    ApiKind, AuthType, Authentication, Config, Notification, Resource as DataResource,
    ResourceType, User,
};

use crate::crd::{Restream, CHECK_PREFIX, CONTROL_PREFIX, HEALTH_PATH, STATISTICS_PATH};

/// Port of the streams and APIs in the pods.
pub const HTTP_PORT: i32 = 8080;
/// Port of `/metrics`, `/healthz` and `/readyz` in the pods.
pub const ADMIN_PORT: i32 = 9090;
/// Where the ConfigMap is mounted.
const CONFIG_DIR: &str = "/etc/restreamer";
/// Where the users Secret is mounted.
const SECRET_DIR: &str = "/etc/restreamer-users";
/// The HPA's metric: stream clients ÷ soft limit, per pod.
pub const SCALING_METRIC: &str = "restreamer_connection_utilization";

/// Everything the controller applies for one Restream.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub config: Config,
    pub config_map: ConfigMap,
    pub deployment: Deployment,
    pub service: Service,
    /// `None` when `spec.scaling.autoscaler` is off.
    pub autoscaler: Option<HorizontalPodAutoscaler>,
    pub disruption_budget: PodDisruptionBudget,
    /// The origin tier, when `spec.tiers` is set.
    pub origin: Option<OriginTier>,
}

/// The origin pods: a StatefulSet (stable names, one per origin) behind a
/// headless Service, so edges address each origin as its own upstream.
#[derive(Debug, Clone)]
pub struct OriginTier {
    pub config: Config,
    pub config_map: ConfigMap,
    pub service: Service,
    pub stateful_set: StatefulSet,
}

/// Why a Restream cannot be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    #[error("the rendered data-plane config is invalid: {0}")]
    InvalidConfig(String),
    #[error("the Restream has no {0}")]
    MissingMetadata(&'static str),
}

/// Renders every object of a Restream. `default_image` is used when the
/// Restream names none.
pub fn render(restream: &Restream, default_image: &str) -> Result<Rendered, RenderError> {
    restream.spec.validate().map_err(RenderError::InvalidSpec)?;
    let name = restream
        .metadata
        .name
        .clone()
        .ok_or(RenderError::MissingMetadata("name"))?;
    restream
        .metadata
        .namespace
        .as_ref()
        .ok_or(RenderError::MissingMetadata("namespace"))?;

    let config = data_plane_config(restream);
    let json = checked_json(restream, &config)?;

    let labels = selector_labels(&name);
    let meta_of = |object_name: String, instance: &str| ObjectMeta {
        name: Some(object_name),
        namespace: restream.namespace(),
        labels: Some(common_labels(instance)),
        // Offline (`render -f`), a Restream has no uid yet and its objects
        // no owner; from the cluster it always has one.
        owner_references: restream.controller_owner_ref(&()).map(|owner| vec![owner]),
        ..ObjectMeta::default()
    };
    let meta = |object_name: String| meta_of(object_name, &name);

    let config_map = ConfigMap {
        metadata: meta(config_map_name(&name)),
        data: Some(BTreeMap::from([("restreamer.json".to_string(), json)])),
        ..ConfigMap::default()
    };

    let deployment = Deployment {
        metadata: meta(name.clone()),
        spec: Some(DeploymentSpec {
            // When an autoscaler owns the count, the applied object has no
            // `replicas` at all: every apply would otherwise take the count
            // back from the autoscaler (the API server starts it at 1 and
            // the autoscaler brings it to `minReplicas`).
            replicas: (!restream.spec.scaling.autoscaler)
                .then_some(restream.spec.scaling.min_replicas),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..LabelSelector::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::String("25%".into())),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: pod_template(
                restream,
                &name,
                default_image,
                restream.spec.pods.resources.clone(),
            ),
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    };

    let service = Service {
        metadata: meta(name.clone()),
        spec: Some(ServiceSpec {
            type_: Some(restream.spec.service.kind.clone()),
            selector: Some(labels.clone()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: i32::from(restream.spec.service.port),
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };

    let target = restream.spec.scaling.target_utilization_percent;
    let autoscaler = restream
        .spec
        .scaling
        .autoscaler
        .then(|| HorizontalPodAutoscaler {
            metadata: meta(name.clone()),
            spec: Some(HorizontalPodAutoscalerSpec {
                scale_target_ref: CrossVersionObjectReference {
                    api_version: Some("apps/v1".into()),
                    kind: "Deployment".into(),
                    name: name.clone(),
                },
                min_replicas: Some(restream.spec.scaling.min_replicas),
                max_replicas: restream.spec.scaling.max_replicas,
                metrics: Some(vec![MetricSpec {
                    type_: "Pods".into(),
                    pods: Some(PodsMetricSource {
                        metric: MetricIdentifier {
                            name: SCALING_METRIC.into(),
                            selector: None,
                        },
                        target: MetricTarget {
                            type_: "AverageValue".into(),
                            // Percent as a quantity: 80 % is "800m".
                            average_value: Some(Quantity(format!("{}m", target * 10))),
                            ..MetricTarget::default()
                        },
                    }),
                    ..MetricSpec::default()
                }]),
                ..HorizontalPodAutoscalerSpec::default()
            }),
            ..HorizontalPodAutoscaler::default()
        });

    let disruption_budget = PodDisruptionBudget {
        metadata: meta(name.clone()),
        spec: Some(PodDisruptionBudgetSpec {
            // One pod at a time: its viewers reconnect to the others.
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(labels),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    };

    let origin = match &restream.spec.tiers {
        Some(tiers) => {
            let origin_name = origin_name(&name);
            let config = origin_config(restream);
            let json = checked_json(restream, &config)?;
            let labels = selector_labels(&origin_name);
            let meta = |object_name: String| meta_of(object_name, &origin_name);
            Some(OriginTier {
                config_map: ConfigMap {
                    metadata: meta(config_map_name(&origin_name)),
                    data: Some(BTreeMap::from([("restreamer.json".to_string(), json)])),
                    ..ConfigMap::default()
                },
                // Headless: one DNS name per origin pod, for the edges.
                service: Service {
                    metadata: meta(origin_name.clone()),
                    spec: Some(ServiceSpec {
                        cluster_ip: Some("None".into()),
                        selector: Some(labels.clone()),
                        ports: Some(vec![ServicePort {
                            name: Some("http".into()),
                            port: HTTP_PORT,
                            target_port: Some(IntOrString::String("http".into())),
                            protocol: Some("TCP".into()),
                            ..ServicePort::default()
                        }]),
                        ..ServiceSpec::default()
                    }),
                    ..Service::default()
                },
                stateful_set: StatefulSet {
                    metadata: meta(origin_name.clone()),
                    spec: Some(StatefulSetSpec {
                        replicas: Some(tiers.origins),
                        service_name: Some(origin_name.clone()),
                        pod_management_policy: Some("Parallel".into()),
                        selector: LabelSelector {
                            match_labels: Some(labels),
                            ..LabelSelector::default()
                        },
                        template: pod_template(
                            restream,
                            &origin_name,
                            default_image,
                            tiers.origin_resources.clone(),
                        ),
                        ..StatefulSetSpec::default()
                    }),
                    ..StatefulSet::default()
                },
                config,
            })
        }
        None => None,
    };

    Ok(Rendered {
        config,
        config_map,
        deployment,
        service,
        autoscaler,
        disruption_budget,
        origin,
    })
}

/// The instance name of a Restream's origin tier.
pub fn origin_name(name: &str) -> String {
    format!("{name}-origin")
}

/// The URL of a channel on one origin pod, through the headless Service.
pub fn origin_url(restream: &Restream, index: i32, path: &str) -> String {
    let name = origin_name(&restream.name_any());
    let namespace = restream.namespace().unwrap_or_default();
    format!("http://{name}-{index}.{name}.{namespace}.svc:{HTTP_PORT}{path}")
}

/// The most a ConfigMap holds (1 MiB), less room for its metadata.
const MAX_CONFIG_BYTES: usize = 1_000_000;

/// The config as the ConfigMap carries it, after the data plane's own
/// checks: what it would refuse to load, we refuse to render. The users
/// live in a Secret the pods mount, so the check stands placeholders in for
/// them. A config too large for a ConfigMap is refused too.
fn checked_json(restream: &Restream, config: &Config) -> Result<String, RenderError> {
    let mut check = config.clone();
    check.userfile.clear();
    for user in restream
        .spec
        .authentication
        .iter()
        .flat_map(|auth| &auth.users)
    {
        check.userlist.insert(user.clone(), User::default());
    }
    check
        .validate()
        .map_err(|e| RenderError::InvalidConfig(e.to_string().replace('\n', "; ")))?;
    let json = serde_json::to_string_pretty(config).expect("a config serialises");
    if json.len() > MAX_CONFIG_BYTES {
        return Err(RenderError::InvalidConfig(format!(
            "the data-plane config is {} bytes, over the {MAX_CONFIG_BYTES} a ConfigMap can hold: \
             fewer streams or origins",
            json.len()
        )));
    }
    Ok(json)
}

pub fn config_map_name(name: &str) -> String {
    format!("{name}-config")
}

/// Labels that select a Restream's pods.
pub fn selector_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "restreamer".to_string(),
        ),
        ("app.kubernetes.io/instance".to_string(), name.to_string()),
    ])
}

fn common_labels(name: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(name);
    labels.insert(
        "app.kubernetes.io/managed-by".into(),
        "restreamer-operator".into(),
    );
    labels.insert("app.kubernetes.io/component".into(), "data-plane".into());
    labels
}

/// The data-plane config of a Restream's serving pods: with tiers, each
/// channel's upstreams are the origins.
pub fn data_plane_config(restream: &Restream) -> Config {
    let upstreams = |stream: &crate::crd::StreamSpec| match &restream.spec.tiers {
        Some(tiers) => (0..tiers.origins)
            .map(|i| origin_url(restream, i, &stream.path))
            .collect(),
        None => stream.upstreams.clone(),
    };
    config_with(restream, &upstreams, false)
}

/// The data-plane config of the origin pods: the real upstreams, no
/// connection limits (their clients are the edges), open streams.
pub fn origin_config(restream: &Restream) -> Config {
    config_with(restream, &|stream| stream.upstreams.clone(), true)
}

fn config_with(
    restream: &Restream,
    upstreams_of: &dyn Fn(&crate::crd::StreamSpec) -> Vec<String>,
    origin: bool,
) -> Config {
    let spec = &restream.spec;
    let auth = spec.authentication.as_ref().map(|auth| Authentication {
        kind: if auth.kind == "bearer" {
            AuthType::Bearer
        } else {
            AuthType::Basic
        },
        realm: auth.realm.clone(),
        users: auth.users.clone(),
        ..Authentication::default()
    });
    let api_auth = auth.clone().unwrap_or_default();
    let stream_auth = match &spec.authentication {
        Some(settings) if settings.streams && !origin => api_auth.clone(),
        _ => Authentication::default(),
    };

    let mut resources = Vec::new();
    for stream in &spec.streams {
        let mut upstreams = upstreams_of(stream);
        resources.push(DataResource {
            kind: ResourceType::Stream,
            serve: stream.path.clone(),
            remote: upstreams.remove(0),
            remotes: upstreams,
            clientinterface: stream.multicast_interface.clone().unwrap_or_default(),
            authentication: stream_auth.clone(),
            ..DataResource::default()
        });
    }
    let api = |kind: ApiKind, serve: String, remote: String, authentication: Authentication| {
        DataResource {
            kind: ResourceType::Api,
            serve,
            remote,
            api: Some(kind),
            authentication,
            ..DataResource::default()
        }
    };
    if spec.apis.health {
        resources.push(api(
            ApiKind::Health,
            HEALTH_PATH.into(),
            String::new(),
            Authentication::default(),
        ));
    }
    if spec.apis.statistics {
        resources.push(api(
            ApiKind::Statistics,
            STATISTICS_PATH.into(),
            String::new(),
            api_auth.clone(),
        ));
    }
    for stream in &spec.streams {
        if spec.apis.check {
            let serve = format!("{CHECK_PREFIX}{}", stream.name);
            resources.push(api(
                ApiKind::Check,
                serve,
                stream.path.clone(),
                Authentication::default(),
            ));
        }
        if spec.apis.control {
            let serve = format!("{CONTROL_PREFIX}{}", stream.name);
            resources.push(api(
                ApiKind::Control,
                serve,
                stream.path.clone(),
                api_auth.clone(),
            ));
        }
    }

    Config {
        listen: format!(":{HTTP_PORT}"),
        adminlisten: format!(":{ADMIN_PORT}"),
        timeout: u64::from(spec.upstream.connect_timeout_seconds),
        readtimeout: u64::from(spec.upstream.read_timeout_seconds),
        reconnect: u64::from(spec.upstream.reconnect_seconds),
        inputbuffer: spec.buffers.input_packets as usize,
        outputbuffer: spec.buffers.output_packets as usize,
        flushms: u64::from(spec.buffers.flush_milliseconds),
        fullconnections: if origin {
            0
        } else {
            spec.limits.soft_connections as usize
        },
        maxconnections: if origin {
            0
        } else {
            spec.limits.max_connections as usize
        },
        draintime: u64::from(spec.pods.drain_seconds.unwrap_or(5)),
        userfile: spec
            .authentication
            .as_ref()
            .map(|auth| format!("{SECRET_DIR}/{}", auth.secret_key))
            .unwrap_or_default(),
        resources,
        notifications: spec
            .notifications
            .iter()
            .map(|n| Notification {
                event: n.event.clone(),
                kind: "url".into(),
                url: n.url.clone(),
                ..Notification::default()
            })
            .collect(),
        ..Config::default()
    }
}

/// The pods of `instance` (the Restream's name, or its origin tier's),
/// reading the ConfigMap of the same instance.
fn pod_template(
    restream: &Restream,
    name: &str,
    default_image: &str,
    resources: Option<k8s_openapi::api::core::v1::ResourceRequirements>,
) -> PodTemplateSpec {
    let spec = &restream.spec;
    let mut labels = spec.pods.labels.clone();
    labels.extend(selector_labels(name));
    let mut annotations = spec.pods.annotations.clone();
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
    let mut volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map_name(name),
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
    let mut mounts = vec![
        VolumeMount {
            name: "config".into(),
            mount_path: CONFIG_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..VolumeMount::default()
        },
    ];
    if let Some(auth) = &spec.authentication {
        volumes.push(Volume {
            name: "users".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(auth.secret_name.clone()),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: "users".into(),
            mount_path: SECRET_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    let drain = i64::from(spec.pods.drain_seconds.unwrap_or(5));
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
                    spec.pods
                        .image
                        .clone()
                        .unwrap_or_else(|| default_image.to_string()),
                ),
                args: Some(vec![format!("{CONFIG_DIR}/restreamer.json")]),
                ports: Some(vec![
                    ContainerPort {
                        name: Some("http".into()),
                        container_port: HTTP_PORT,
                        protocol: Some("TCP".into()),
                        ..ContainerPort::default()
                    },
                    ContainerPort {
                        name: Some("admin".into()),
                        container_port: ADMIN_PORT,
                        protocol: Some("TCP".into()),
                        ..ContainerPort::default()
                    },
                ]),
                readiness_probe: Some(probe("/readyz")),
                liveness_probe: Some(Probe {
                    failure_threshold: Some(6),
                    ..probe("/healthz")
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
            // The drain, plus a margin for the process to exit.
            termination_grace_period_seconds: Some(drain + 10),
            node_selector: (!spec.pods.node_selector.is_empty())
                .then(|| spec.pods.node_selector.clone()),
            tolerations: (!spec.pods.tolerations.is_empty()).then(|| spec.pods.tolerations.clone()),
            volumes: Some(volumes),
            automount_service_account_token: Some(false),
            ..PodSpec::default()
        }),
    }
}

/// The objects as one multi-document YAML stream, in apply order.
pub fn to_yaml(rendered: &Rendered) -> String {
    fn document<T: serde::Serialize + Resource<DynamicType = ()>>(object: &T) -> String {
        let mut value = serde_json::to_value(object).expect("objects serialise");
        // k8s-openapi objects do not carry apiVersion/kind when built in code.
        value["apiVersion"] = T::api_version(&()).into();
        value["kind"] = T::kind(&()).into();
        let map = value.as_object_mut().unwrap();
        let mut ordered = serde_json::Map::new();
        for key in ["apiVersion", "kind", "metadata"] {
            if let Some(v) = map.remove(key) {
                ordered.insert(key.into(), v);
            }
        }
        ordered.extend(std::mem::take(map));
        format!(
            "---\n{}",
            serde_yaml::to_string(&ordered).expect("objects serialise")
        )
    }
    let origin = rendered.origin.as_ref();
    [
        origin.map(|o| document(&o.config_map)),
        origin.map(|o| document(&o.service)),
        origin.map(|o| document(&o.stateful_set)),
        Some(document(&rendered.config_map)),
        Some(document(&rendered.deployment)),
        Some(document(&rendered.service)),
        rendered.autoscaler.as_ref().map(document),
        Some(document(&rendered.disruption_budget)),
    ]
    .into_iter()
    .flatten()
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{AuthenticationSpec, RestreamSpec, StreamSpec};
    use serde::Deserialize;

    fn minimal() -> Restream {
        let mut restream = Restream::new(
            "tv",
            RestreamSpec {
                streams: vec![StreamSpec {
                    name: "news".into(),
                    path: "/news.ts".into(),
                    upstreams: vec!["tcp://encoder:9000".into(), "udp://239.1.1.1:5000".into()],
                    multicast_interface: None,
                }],
                ..serde_yaml::from_str("streams: []").unwrap()
            },
        );
        restream.metadata.namespace = Some("media".into());
        restream.metadata.uid = Some("uid-1".into());
        restream
    }

    fn good() -> Restream {
        let mut restream: Restream =
            serde_yaml::from_str(include_str!("../yaml/instance-good.yaml")).unwrap();
        restream.metadata.uid = Some("uid-2".into());
        restream
    }

    #[test]
    fn defaults_render_a_working_data_plane_config() {
        let rendered = render(&minimal(), "img:1").unwrap();
        let config = &rendered.config;
        assert_eq!(config.listen, ":8080");
        assert_eq!(config.adminlisten, ":9090");
        assert_eq!((config.fullconnections, config.maxconnections), (800, 1000));
        assert_eq!(
            (config.inputbuffer, config.outputbuffer, config.flushms),
            (1000, 400, 10)
        );
        assert_eq!(
            (config.timeout, config.readtimeout, config.reconnect),
            (5, 10, 2)
        );
        let stream = &config.resources[0];
        assert_eq!(stream.serve, "/news.ts");
        assert_eq!(
            stream.upstream_urls(),
            ["tcp://encoder:9000", "udp://239.1.1.1:5000"]
        );
        let paths: Vec<&str> = config.resources.iter().map(|r| r.serve.as_str()).collect();
        assert_eq!(paths, ["/news.ts", "/health", "/statistics", "/check/news"]);
        // What the ConfigMap carries loads in the data plane as it is.
        let json = &rendered.config_map.data.as_ref().unwrap()["restreamer.json"];
        assert_eq!(&Config::parse(json).unwrap(), config);
    }

    #[test]
    fn authentication_comes_from_the_secret_and_guards_the_apis() {
        let rendered = render(&good(), "img:1").unwrap();
        let config = &rendered.config;
        assert_eq!(config.userfile, "/etc/restreamer-users/users.json");
        assert!(
            config.userlist.is_empty(),
            "no password may be in the ConfigMap"
        );
        let by_path = |path: &str| config.resources.iter().find(|r| r.serve == path).unwrap();
        assert_eq!(
            by_path("/control/news").authentication.kind,
            AuthType::Basic
        );
        assert_eq!(by_path("/control/news").authentication.users, ["operator"]);
        assert_eq!(by_path("/statistics").authentication.kind, AuthType::Basic);
        assert!(
            by_path("/news.ts").authentication.is_none(),
            "streams stay open unless asked"
        );
        assert!(by_path("/health").authentication.is_none());

        let pod = rendered.deployment.spec.unwrap().template.spec.unwrap();
        let users = pod
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "users")
            .unwrap();
        assert_eq!(
            users.secret.unwrap().secret_name.as_deref(),
            Some("tv-users")
        );
        let mounts = pod.containers[0].volume_mounts.clone().unwrap();
        assert!(mounts
            .iter()
            .any(|m| m.name == "users" && m.mount_path == "/etc/restreamer-users"));

        let mut streams_too = good();
        streams_too.spec.authentication.as_mut().unwrap().streams = true;
        let config = render(&streams_too, "img:1").unwrap().config;
        assert_eq!(config.resources[0].authentication.kind, AuthType::Basic);
    }

    #[test]
    fn the_deployment_runs_locked_down_pods_that_reload_their_config() {
        let rendered = render(&good(), "img:1").unwrap();
        let deployment = rendered.deployment.spec.unwrap();
        assert_eq!(
            deployment.replicas, None,
            "the autoscaler owns the replica count"
        );
        let template = deployment.template;
        let labels = template.metadata.as_ref().unwrap().labels.clone().unwrap();
        assert_eq!(labels["team"], "broadcast");
        assert_eq!(labels["app.kubernetes.io/instance"], "tv");
        assert_eq!(
            deployment.selector.match_labels.unwrap(),
            selector_labels("tv")
        );
        let annotations = template.metadata.unwrap().annotations.unwrap();
        assert_eq!(annotations["prometheus.io/port"], "9090");
        let pod = template.spec.unwrap();
        let container = &pod.containers[0];
        assert_eq!(
            container.image.as_deref(),
            Some("img:1"),
            "the operator's image by default"
        );
        assert_eq!(
            container.args.as_ref().unwrap(),
            &["/etc/restreamer/restreamer.json"]
        );
        let config_mount = container
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == "config")
            .unwrap();
        assert_eq!(config_mount.mount_path, "/etc/restreamer");
        assert!(
            config_mount.sub_path.is_none(),
            "a subPath mount never sees ConfigMap updates"
        );
        let security = container.security_context.as_ref().unwrap();
        assert_eq!(security.run_as_non_root, Some(true));
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(
            security
                .capabilities
                .as_ref()
                .unwrap()
                .drop
                .as_ref()
                .unwrap(),
            &["ALL"]
        );
        assert_eq!(pod.security_context.unwrap().run_as_user, Some(65532));
        let readiness = container
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(
            (readiness.path.as_deref(), &readiness.port),
            (Some("/readyz"), &IntOrString::String("admin".into()))
        );
        let liveness = container
            .liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(liveness.path.as_deref(), Some("/healthz"));
        assert_eq!(
            pod.termination_grace_period_seconds,
            Some(30),
            "drain 20 s + 10 s"
        );
        assert_eq!(pod.node_selector.unwrap()["kubernetes.io/os"], "linux");
        assert_eq!(
            container
                .resources
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap()["cpu"],
            Quantity("500m".into())
        );
        // The config is not in the pod template: changing it must not roll pods.
        let template_json = serde_json::to_string(&pod.containers).unwrap();
        assert!(!template_json.contains("encoder-a"));
    }

    #[test]
    fn a_config_change_changes_the_configmap_only_and_an_image_change_the_pods() {
        let before = render(&good(), "img:1").unwrap();
        let mut changed = good();
        changed.spec.streams[0]
            .upstreams
            .push("tcp://encoder-c:9000".into());
        changed.spec.limits.soft_connections = 500;
        let after = render(&changed, "img:1").unwrap();
        assert_ne!(before.config_map.data, after.config_map.data);
        assert_eq!(before.deployment.spec, after.deployment.spec);

        changed.spec.pods.image = Some("img:2".into());
        let rolled = render(&changed, "img:1").unwrap();
        assert_ne!(before.deployment.spec, rolled.deployment.spec);
    }

    #[test]
    fn the_service_autoscaler_and_budget_follow_the_spec() {
        let rendered = render(&good(), "img:1").unwrap();
        let service = rendered.service.spec.unwrap();
        assert_eq!(service.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(service.ports.as_ref().unwrap()[0].port, 80);
        assert_eq!(service.selector.unwrap(), selector_labels("tv"));

        let hpa = rendered.autoscaler.unwrap().spec.unwrap();
        assert_eq!((hpa.min_replicas, hpa.max_replicas), (Some(2), 20));
        assert_eq!(hpa.scale_target_ref.kind, "Deployment");
        assert_eq!(hpa.scale_target_ref.name, "tv");
        let pods = hpa.metrics.unwrap()[0].pods.clone().unwrap();
        assert_eq!(pods.metric.name, "restreamer_connection_utilization");
        assert_eq!(pods.target.type_, "AverageValue");
        assert_eq!(pods.target.average_value, Some(Quantity("800m".into())));

        let pdb = rendered.disruption_budget.spec.unwrap();
        assert_eq!(pdb.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(
            pdb.selector.unwrap().match_labels.unwrap(),
            selector_labels("tv")
        );
    }

    #[test]
    fn the_autoscaler_can_be_left_to_other_means() {
        let mut restream = good();
        restream.spec.scaling.autoscaler = false;
        let rendered = render(&restream, "img:1").unwrap();
        assert!(rendered.autoscaler.is_none());
        assert_eq!(rendered.deployment.spec.unwrap().replicas, Some(2));
        assert!(!to_yaml(&render(&restream, "img:1").unwrap()).contains("HorizontalPodAutoscaler"));
    }

    fn tiered() -> Restream {
        let mut restream: Restream =
            serde_yaml::from_str(include_str!("../yaml/instance-tiered.yaml")).unwrap();
        restream.metadata.uid = Some("uid-3".into());
        restream
    }

    #[test]
    fn with_tiers_the_edges_pull_from_each_origin_and_only_the_origins_from_the_broadcaster() {
        let rendered = render(&tiered(), "img:1").unwrap();
        let edge = &rendered.config.resources[0];
        assert_eq!(
            edge.upstream_urls(),
            [
                "http://tv-origin-0.tv-origin.media.svc:8080/news.ts",
                "http://tv-origin-1.tv-origin.media.svc:8080/news.ts"
            ]
        );
        assert_eq!(
            rendered.config.fullconnections, 800,
            "the edges keep the limits"
        );

        let origin = rendered.origin.expect("an origin tier");
        assert_eq!(
            origin.config.resources[0].upstream_urls(),
            ["http://broadcaster.example.net/news.ts"]
        );
        assert_eq!(
            (origin.config.fullconnections, origin.config.maxconnections),
            (0, 0)
        );
        assert_eq!(
            origin.config_map.metadata.name.as_deref(),
            Some("tv-origin-config")
        );

        let service = origin.service.spec.unwrap();
        assert_eq!(
            service.cluster_ip.as_deref(),
            Some("None"),
            "headless: one name per origin"
        );
        let statefulset = origin.stateful_set.spec.unwrap();
        assert_eq!(statefulset.replicas, Some(2));
        assert_eq!(statefulset.service_name.as_deref(), Some("tv-origin"));
        assert_eq!(
            statefulset.selector.match_labels.unwrap(),
            selector_labels("tv-origin")
        );
        assert_ne!(
            selector_labels("tv-origin"),
            selector_labels("tv"),
            "edges must not select origins"
        );
        let pod = statefulset.template.spec.unwrap();
        let volumes = pod.volumes.unwrap();
        let config = volumes.iter().find(|v| v.name == "config").unwrap();
        assert_eq!(config.config_map.as_ref().unwrap().name, "tv-origin-config");
        assert_eq!(
            pod.containers[0]
                .resources
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap()["cpu"],
            Quantity("250m".into())
        );
        // Origins are fixed: the autoscaler targets the edges only.
        let hpa = rendered.autoscaler.unwrap().spec.unwrap();
        assert_eq!(hpa.scale_target_ref.name, "tv");
    }

    #[test]
    fn without_tiers_there_is_no_origin() {
        assert!(render(&good(), "img:1").unwrap().origin.is_none());
        let yaml = to_yaml(&render(&tiered(), "img:1").unwrap());
        assert_eq!(yaml.matches("\nkind: StatefulSet\n").count(), 1);
        assert_eq!(yaml.matches("\nkind: ConfigMap\n").count(), 2);
    }

    #[test]
    fn every_object_is_owned_by_the_restream_and_labelled() {
        let rendered = render(&good(), "img:1").unwrap();
        let metas = [
            &rendered.config_map.metadata,
            &rendered.deployment.metadata,
            &rendered.service.metadata,
            &rendered.autoscaler.as_ref().unwrap().metadata,
            &rendered.disruption_budget.metadata,
        ];
        for meta in metas {
            assert_eq!(meta.namespace.as_deref(), Some("media"));
            let owner = &meta.owner_references.as_ref().unwrap()[0];
            assert_eq!(
                (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
                ("Restream", "tv", "uid-2")
            );
            assert_eq!(owner.controller, Some(true));
            assert_eq!(
                meta.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"],
                "restreamer-operator"
            );
        }
        assert_eq!(
            rendered.config_map.metadata.name.as_deref(),
            Some("tv-config")
        );
    }

    #[test]
    fn invalid_specs_are_refused_with_the_field_named() {
        let bad: Restream =
            serde_yaml::from_str(include_str!("../yaml/instance-bad.yaml")).unwrap();
        let error = render(&bad, "img:1").unwrap_err().to_string();
        for expected in [
            "spec.streams[0].path: \"news.ts\" must start with /",
            "spec.streams[0].upstreams: at least one upstream is needed",
            "spec.limits.softConnections: 2000 is above maxConnections 1000",
        ] {
            assert!(error.contains(expected), "{error}");
        }

        let mut control_without_auth = minimal();
        control_without_auth.spec.apis.control = true;
        let error = render(&control_without_auth, "img:1")
            .unwrap_err()
            .to_string();
        assert!(error.contains("spec.apis.control: the control API needs spec.authentication"));

        let mut twice = minimal();
        twice.spec.streams.push(twice.spec.streams[0].clone());
        let error = render(&twice, "img:1").unwrap_err().to_string();
        assert!(
            error.contains("\"news\" is used twice")
                && error.contains("\"/news.ts\" is used twice")
        );

        let mut bad_auth = minimal();
        bad_auth.spec.authentication = Some(AuthenticationSpec {
            kind: "digest".into(),
            realm: "r".into(),
            secret_name: "s".into(),
            secret_key: "users.json".into(),
            users: vec!["u".into()],
            streams: false,
        });
        assert!(render(&bad_auth, "img:1")
            .unwrap_err()
            .to_string()
            .contains("not basic or bearer"));
    }

    /// Found by the `render` fuzz target: these passed the spec's checks
    /// and failed only on the rendered config, named by its keys.
    #[test]
    fn a_spec_the_data_plane_would_refuse_is_not_rendered_naming_its_field() {
        let mut restream = minimal();
        restream.spec.streams[0].upstreams = vec!["rtmp://encoder/live".into()];
        let error = render(&restream, "img:1").unwrap_err().to_string();
        assert!(
            error.contains("spec.streams[0].upstreams[0]: unsupported scheme \"rtmp\""),
            "{error}"
        );
        let mut restream = minimal();
        restream.spec.buffers.output_packets = 0;
        assert!(render(&restream, "img:1")
            .unwrap_err()
            .to_string()
            .contains("spec.buffers.outputPackets: must be at least 1 packet"));
        let mut restream = minimal();
        restream.spec.notifications = vec![crate::crd::NotificationSpec {
            event: "limit_hit".into(),
            url: "hptt://balancer/full".into(),
        }];
        assert!(render(&restream, "img:1")
            .unwrap_err()
            .to_string()
            .contains("spec.notifications[0].url: unsupported scheme \"hptt\""));
        let mut restream = minimal();
        restream.spec.streams[0].path = "/check/news".into();
        assert!(render(&restream, "img:1")
            .unwrap_err()
            .to_string()
            .contains("spec.streams[0].path: \"/check/news\" is where an API is served"));
        // A path no client can request as written.
        let mut restream = minimal();
        restream.spec.streams[0].path = "/n?ws.ts".into();
        assert!(render(&restream, "img:1")
            .unwrap_err()
            .to_string()
            .contains("spec.streams[0].path: \"/n?ws.ts\": '?' is not allowed in a channel path"));
        // Found as a slow input: 923,447 origins, each an upstream of each channel.
        let mut restream = minimal();
        restream.spec.tiers = Some(crate::crd::Tiers {
            origins: 923_447,
            origin_resources: None,
        });
        assert!(render(&restream, "img:1")
            .unwrap_err()
            .to_string()
            .contains("spec.tiers.origins: 923447 must be from 1 to 32"));
    }

    #[test]
    fn a_config_too_large_for_a_config_map_is_refused() {
        let mut restream = minimal();
        let stream = restream.spec.streams[0].clone();
        restream.spec.streams = (0..600)
            .map(|i| crate::crd::StreamSpec {
                name: format!("channel-{i}"),
                path: format!("/channel-{i}.ts"),
                ..stream.clone()
            })
            .collect();
        restream.spec.tiers = Some(crate::crd::Tiers {
            origins: 32,
            origin_resources: None,
        });
        let error = render(&restream, "img:1").unwrap_err().to_string();
        assert!(
            error.contains("over the 1000000 a ConfigMap can hold"),
            "{error}"
        );
        restream.spec.tiers.as_mut().unwrap().origins = 2;
        assert!(render(&restream, "img:1").is_ok());
    }

    #[test]
    fn the_yaml_carries_api_version_and_kind_in_apply_order() {
        let yaml = to_yaml(&render(&good(), "img:1").unwrap());
        let kinds: Vec<(String, String)> = serde_yaml::Deserializer::from_str(&yaml)
            .map(|document| {
                let value = serde_yaml::Value::deserialize(document).unwrap();
                (
                    value["apiVersion"].as_str().unwrap().into(),
                    value["kind"].as_str().unwrap().into(),
                )
            })
            .collect();
        let expected = [
            ("v1", "ConfigMap"),
            ("apps/v1", "Deployment"),
            ("v1", "Service"),
            ("autoscaling/v2", "HorizontalPodAutoscaler"),
            ("policy/v1", "PodDisruptionBudget"),
        ];
        assert_eq!(kinds, expected.map(|(a, k)| (a.to_string(), k.to_string())));
    }
}
