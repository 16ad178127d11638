//! Rendering: a `Restream` to the Kubernetes objects that run it. Pure
//! functions of the resource, so that the controller, `restreamer-operator
//! render` and the tests all see the same objects.
//!
//! One small builder per object: [`configmap`] (the data-plane config,
//! rendered in [`config`]), [`deployment`] and [`statefulset`] (both run
//! the pods of [`pods`]), [`service`], [`hpa`] or [`scaledobject`] (KEDA),
//! and [`pdb`]; [`meta`] holds the names, labels and ownership they share.
//! This file puts them together ([`render`]) in apply order
//! ([`Rendered::manifests`]). Everything here may use [`crate::crd`] and the
//! data plane's config types, and nothing else of the operator: no API
//! calls, no clock.

pub mod config;
pub mod configmap;
pub mod deployment;
pub mod error;
pub mod hpa;
pub mod meta;
pub mod pdb;
pub mod pods;
pub mod scaledobject;
pub mod service;
pub mod statefulset;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::core::ApiResource;
use kube::Resource;
use restreamer::config::Config;

pub use config::{data_plane_config, origin_config};
pub use error::RenderError;
pub use meta::{
    config_map_name, origin_name, origin_url, selector_labels, ADMIN_PORT, HTTP_PORT,
    SCALING_METRIC,
};
pub use scaledobject::ScaledObject;

use crate::crd::Restream;

/// Everything the controller applies for one Restream.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub config: Config,
    pub config_map: ConfigMap,
    pub deployment: Deployment,
    pub service: Service,
    /// The operator's HorizontalPodAutoscaler; `None` when
    /// `spec.scaling.autoscaler` is off or KEDA scales.
    pub autoscaler: Option<HorizontalPodAutoscaler>,
    /// KEDA's ScaledObject, when `spec.scaling.keda` is set.
    pub scaled_object: Option<ScaledObject>,
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
    let json = config::checked_json(restream, &config)?;
    let scaling = &restream.spec.scaling;

    let origin = match &restream.spec.tiers {
        Some(tiers) => {
            let origin = origin_name(&name);
            let config = origin_config(restream);
            let json = config::checked_json(restream, &config)?;
            Some(OriginTier {
                config_map: configmap::config_map(restream, &origin, json),
                service: service::origin_service(restream, &origin),
                stateful_set: statefulset::stateful_set(restream, tiers, &origin, default_image),
                config,
            })
        }
        None => None,
    };

    Ok(Rendered {
        config_map: configmap::config_map(restream, &name, json),
        config,
        deployment: deployment::deployment(restream, &name, default_image),
        service: service::viewer_service(restream, &name),
        autoscaler: (scaling.autoscaler && !scaling.keda).then(|| hpa::autoscaler(restream, &name)),
        scaled_object: scaling
            .keda
            .then(|| scaledobject::scaled_object(restream, &name)),
        disruption_budget: pdb::disruption_budget(restream, &name),
        origin,
    })
}

/// One object as it is applied: its API resource (group, version, kind,
/// plural), name and body, with `apiVersion` and `kind` first.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub resource: ApiResource,
    pub name: String,
    pub body: serde_json::Value,
}

impl Manifest {
    pub fn of<K>(object: &K) -> Manifest
    where
        K: Resource<DynamicType = ()> + serde::Serialize,
    {
        Manifest {
            resource: ApiResource::erase::<K>(&()),
            name: object.meta().name.clone().unwrap_or_default(),
            body: typed::<K>(serde_json::to_value(object).expect("objects serialise")),
        }
    }
}

/// `body` with `apiVersion` and `kind` of `K` first (k8s-openapi objects
/// built in code do not carry them; server-side apply needs them).
pub fn typed<K: Resource<DynamicType = ()>>(body: serde_json::Value) -> serde_json::Value {
    let mut ordered = serde_json::Map::new();
    ordered.insert("apiVersion".into(), K::api_version(&()).into());
    ordered.insert("kind".into(), K::kind(&()).into());
    if let serde_json::Value::Object(mut fields) = body {
        fields.remove("apiVersion");
        fields.remove("kind");
        if let Some(metadata) = fields.remove("metadata") {
            ordered.insert("metadata".into(), metadata);
        }
        ordered.extend(fields);
    }
    serde_json::Value::Object(ordered)
}

impl Rendered {
    /// Every object, in apply order: the origins first, so that the edges
    /// find them; the ConfigMap before the pods that mount it.
    pub fn manifests(&self) -> Vec<Manifest> {
        let origin = self.origin.as_ref();
        [
            origin.map(|o| Manifest::of(&o.config_map)),
            origin.map(|o| Manifest::of(&o.service)),
            origin.map(|o| Manifest::of(&o.stateful_set)),
            Some(Manifest::of(&self.config_map)),
            Some(Manifest::of(&self.deployment)),
            Some(Manifest::of(&self.service)),
            self.autoscaler.as_ref().map(Manifest::of),
            self.scaled_object.as_ref().map(Manifest::of),
            Some(Manifest::of(&self.disruption_budget)),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// The objects as one multi-document YAML stream, in apply order.
pub fn to_yaml(rendered: &Rendered) -> String {
    rendered
        .manifests()
        .iter()
        .map(|manifest| {
            format!(
                "---\n{}",
                serde_yaml::to_string(&manifest.body).expect("objects serialise")
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{RestreamSpec, StreamSpec};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use restreamer::config::AuthType;
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
                    content_timeout_seconds: None,
                    cc_error_limit: None,
                    instant_start: None,
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
            serde_yaml::from_str(include_str!("../../yaml/instance-good.yaml")).unwrap();
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
            Some(35),
            "pre-stop pause 5 s + drain 20 s + 10 s to exit"
        );
        let pre_stop = container
            .lifecycle
            .as_ref()
            .unwrap()
            .pre_stop
            .as_ref()
            .unwrap();
        assert_eq!(pre_stop.sleep.as_ref().unwrap().seconds, 5);
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
            serde_yaml::from_str(include_str!("../../yaml/instance-tiered.yaml")).unwrap();
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
            serde_yaml::from_str(include_str!("../../yaml/instance-bad.yaml")).unwrap();
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

        // Enumerated fields refuse other values when read, naming them.
        let error = serde_yaml::from_str::<RestreamSpec>(
            "streams: []\nauthentication: {type: digest, secretName: s, users: [u]}",
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("unknown variant `digest`, expected one of `basic`, `bearer`, `token`"),
            "{error}"
        );
        let error = serde_yaml::from_str::<RestreamSpec>(
            "streams: []\nnotifications: [{event: full, url: 'http://a/'}]",
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("unknown variant `full`"), "{error}");
        let error = serde_yaml::from_str::<RestreamSpec>("streams: []\nservice: {type: Ingress}")
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown variant `Ingress`"), "{error}");
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
            event: crate::crd::NotificationEvent::LimitHit,
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

    #[test]
    fn scale_in_is_slow_by_default_and_tunable() {
        let hpa = render(&good(), "img:1").unwrap().autoscaler.unwrap();
        let down = hpa.spec.unwrap().behavior.unwrap().scale_down.unwrap();
        assert_eq!(down.stabilization_window_seconds, Some(600));
        let policy = &down.policies.as_ref().unwrap()[0];
        assert_eq!(
            (policy.type_.as_str(), policy.value, policy.period_seconds),
            ("Pods", 1, 300),
            "one pod per five minutes"
        );

        let mut tuned = good();
        tuned.spec.scaling.scale_down_stabilization_seconds = 1800;
        tuned.spec.scaling.scale_down_pods = 2;
        tuned.spec.scaling.scale_down_period_seconds = 60;
        let hpa = render(&tuned, "img:1").unwrap().autoscaler.unwrap();
        let down = hpa.spec.unwrap().behavior.unwrap().scale_down.unwrap();
        assert_eq!(down.stabilization_window_seconds, Some(1800));
        let policy = &down.policies.unwrap()[0];
        assert_eq!((policy.value, policy.period_seconds), (2, 60));

        tuned.spec.scaling.scale_down_stabilization_seconds = 7200;
        assert!(render(&tuned, "img:1")
            .unwrap_err()
            .to_string()
            .contains("spec.scaling.scaleDownStabilizationSeconds: 7200 must be from 0 to 3600"));
    }

    #[test]
    fn pods_spread_over_nodes_and_zones_unless_told_otherwise() {
        let spread = |restream: &Restream| {
            render(restream, "img:1")
                .unwrap()
                .deployment
                .spec
                .unwrap()
                .template
                .spec
                .unwrap()
                .topology_spread_constraints
        };
        let default = spread(&good()).unwrap();
        let keys: Vec<&str> = default.iter().map(|c| c.topology_key.as_str()).collect();
        assert_eq!(
            keys,
            ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
        );
        for constraint in &default {
            assert_eq!(constraint.max_skew, 1);
            assert_eq!(
                constraint.when_unsatisfiable, "ScheduleAnyway",
                "a small cluster still schedules every pod"
            );
            assert_eq!(
                constraint
                    .label_selector
                    .as_ref()
                    .unwrap()
                    .match_labels
                    .as_ref()
                    .unwrap(),
                &selector_labels("tv")
            );
        }
        let origins = render(&tiered(), "img:1").unwrap().origin.unwrap();
        let origin_spread = origins
            .stateful_set
            .spec
            .unwrap()
            .template
            .spec
            .unwrap()
            .topology_spread_constraints
            .unwrap();
        assert_eq!(
            origin_spread[0]
                .label_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap(),
            &selector_labels("tv-origin"),
            "origins spread among themselves"
        );

        let mut strict: Restream = good();
        strict.spec.pods.topology_spread_constraints = Some(
            serde_yaml::from_str(
                "[{maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule}]",
            )
            .unwrap(),
        );
        let own = spread(&strict).unwrap();
        assert_eq!(own.len(), 1);
        assert_eq!(own[0].when_unsatisfiable, "DoNotSchedule");
        strict.spec.pods.topology_spread_constraints = Some(vec![]);
        assert_eq!(spread(&strict), None, "[] turns spreading off");
    }

    #[test]
    fn host_network_and_traffic_policy_are_passed_on() {
        let rendered = render(&good(), "img:1").unwrap();
        let pod = rendered.deployment.spec.unwrap().template.spec.unwrap();
        assert_eq!((pod.host_network, pod.dns_policy), (None, None));
        assert_eq!(rendered.service.spec.unwrap().external_traffic_policy, None);

        let mut restream = good();
        restream.spec.pods.host_network = true;
        restream.spec.service.external_traffic_policy = Some(crate::crd::TrafficPolicy::Local);
        let rendered = render(&restream, "img:1").unwrap();
        let pod = rendered.deployment.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.host_network, Some(true));
        assert_eq!(
            pod.dns_policy.as_deref(),
            Some("ClusterFirstWithHostNet"),
            "the origins' names still resolve"
        );
        let service = rendered.service.spec.unwrap();
        assert_eq!(service.external_traffic_policy.as_deref(), Some("Local"));

        restream.spec.service.kind = crate::crd::ServiceKind::ClusterIP;
        assert!(render(&restream, "img:1")
            .unwrap_err()
            .to_string()
            .contains(
                "spec.service.externalTrafficPolicy: needs a NodePort or LoadBalancer service"
            ));
    }

    #[test]
    fn a_pre_stop_pause_of_zero_renders_no_hook() {
        let mut restream = good();
        restream.spec.pods.pre_stop_seconds = 0;
        let pod = render(&restream, "img:1")
            .unwrap()
            .deployment
            .spec
            .unwrap()
            .template
            .spec
            .unwrap();
        assert!(pod.containers[0].lifecycle.is_none());
        assert_eq!(pod.termination_grace_period_seconds, Some(30));
    }

    fn keda() -> Restream {
        let mut restream = good();
        restream.spec.scaling.keda = true;
        restream.spec.scaling.prometheus_address =
            Some("http://prometheus.monitoring.svc:9090".into());
        restream
    }

    #[test]
    fn with_keda_a_scaled_object_replaces_the_autoscaler() {
        let rendered = render(&keda(), "img:1").unwrap();
        assert!(rendered.autoscaler.is_none(), "KEDA makes its own HPA");
        assert_eq!(
            rendered.deployment.spec.as_ref().unwrap().replicas,
            None,
            "KEDA owns the replica count"
        );
        let yaml = to_yaml(&rendered);
        assert!(yaml.contains("\nkind: ScaledObject\n"));
        assert!(!yaml.contains("HorizontalPodAutoscaler"));

        let mut without_address = keda();
        without_address.spec.scaling.prometheus_address = None;
        assert!(render(&without_address, "img:1")
            .unwrap_err()
            .to_string()
            .contains("spec.scaling.prometheusAddress: KEDA needs the Prometheus"));
    }

    /// KEDA ships no schema with Kubernetes': the rendered object is held
    /// to the fields KEDA documents for a ScaledObject
    /// (keda.sh/docs/latest/reference/scaledobject-spec) and the
    /// prometheus scaler (keda.sh/docs/latest/scalers/prometheus).
    #[test]
    fn the_scaled_object_has_the_shape_keda_documents() {
        let manifest = render(&keda(), "img:1")
            .unwrap()
            .manifests()
            .into_iter()
            .find(|m| m.resource.kind == "ScaledObject")
            .unwrap();
        let object = &manifest.body;
        assert_eq!(object["apiVersion"], "keda.sh/v1alpha1");
        assert_eq!(object["kind"], "ScaledObject");
        assert_eq!(manifest.resource.plural, "scaledobjects");
        assert_eq!(object["metadata"]["name"], "tv");
        assert_eq!(object["metadata"]["namespace"], "media");
        assert_eq!(object["metadata"]["ownerReferences"][0]["kind"], "Restream");

        let documented = |value: &serde_json::Value, keys: &[&str]| {
            for key in value.as_object().unwrap().keys() {
                assert!(keys.contains(&key.as_str()), "KEDA has no field {key:?}");
            }
        };
        let spec = &object["spec"];
        documented(
            spec,
            &[
                "scaleTargetRef",
                "pollingInterval",
                "cooldownPeriod",
                "initialCooldownPeriod",
                "idleReplicaCount",
                "minReplicaCount",
                "maxReplicaCount",
                "fallback",
                "advanced",
                "triggers",
            ],
        );
        assert_eq!(
            spec["scaleTargetRef"],
            serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "tv"})
        );
        assert_eq!(
            (
                spec["minReplicaCount"].as_i64(),
                spec["maxReplicaCount"].as_i64()
            ),
            (Some(2), Some(20))
        );
        documented(
            &spec["advanced"],
            &[
                "restoreToOriginalReplicaCount",
                "horizontalPodAutoscalerConfig",
                "scalingModifiers",
            ],
        );
        let hpa_config = &spec["advanced"]["horizontalPodAutoscalerConfig"];
        documented(hpa_config, &["name", "behavior"]);
        assert_eq!(
            hpa_config["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
            600
        );

        let triggers = spec["triggers"].as_array().unwrap();
        assert_eq!(triggers.len(), 1);
        let trigger = &triggers[0];
        documented(
            trigger,
            &[
                "type",
                "name",
                "metadata",
                "metricType",
                "useCachedMetrics",
                "authenticationRef",
            ],
        );
        assert_eq!(trigger["type"], "prometheus");
        assert_eq!(trigger["metricType"], "AverageValue");
        let metadata = trigger["metadata"].as_object().unwrap();
        for (key, value) in metadata {
            assert!(value.is_string(), "KEDA reads metadata.{key} as a string");
        }
        documented(
            &trigger["metadata"],
            &[
                "serverAddress",
                "query",
                "threshold",
                "activationThreshold",
                "namespace",
                "customHeaders",
                "ignoreNullValues",
                "queryParameters",
                "unsafeSsl",
            ],
        );
        assert_eq!(
            metadata["serverAddress"],
            "http://prometheus.monitoring.svc:9090"
        );
        assert_eq!(metadata["threshold"], "0.8", "targetUtilizationPercent 80");
        assert_eq!(
            metadata["query"],
            "sum(restreamer_connection_utilization{namespace=\"media\",\
             pod=~\"tv-[a-z0-9]+-[a-z0-9]+\",pod!~\"tv-origin-[0-9]+\"})"
        );
        // The pod matchers (anchored, as PromQL's are) take the
        // Deployment's pods only.
        let taken = |pod: &str| {
            regex::Regex::new("^tv-[a-z0-9]+-[a-z0-9]+$")
                .unwrap()
                .is_match(pod)
                && !regex::Regex::new("^tv-origin-[0-9]+$")
                    .unwrap()
                    .is_match(pod)
        };
        assert!(taken("tv-7d9f8c6b5-x2k4q"));
        assert!(!taken("tv-origin-0"), "an origin");
        assert!(!taken("tv-sports-7d9f8c6b5-x2k4q"), "Restream tv-sports");
    }

    #[test]
    fn stream_health_settings_reach_the_pods_spec_wide_and_per_channel() {
        let rendered = render(&minimal(), "img:1").unwrap();
        assert_eq!(
            (rendered.config.contenttimeout, rendered.config.ccerrorlimit),
            (10, 0),
            "the data plane's defaults"
        );
        assert_eq!(rendered.config.resources[0].contenttimeout, None);

        let rendered = render(&good(), "img:1").unwrap();
        let json = &rendered.config_map.data.as_ref().unwrap()["restreamer.json"];
        // As the pods read it (the users file is theirs only).
        let config: Config = serde_json::from_str(json).unwrap();
        assert_eq!((config.contenttimeout, config.ccerrorlimit), (15, 0));
        let by_path = |path: &str| config.resources.iter().find(|r| r.serve == path).unwrap();
        assert_eq!(
            by_path("/news.ts").contenttimeout,
            None,
            "the spec-wide 15 s"
        );
        assert_eq!(
            (
                by_path("/sports.ts").contenttimeout,
                by_path("/sports.ts").ccerrorlimit
            ),
            (Some(0), Some(50)),
            "multicast loses packets: its own limit, and no content timeout"
        );

        let mut tiered = tiered();
        tiered.spec.upstream.cc_error_limit = 20;
        tiered.spec.streams[0].content_timeout_seconds = Some(5);
        let rendered = render(&tiered, "img:1").unwrap();
        let origin = rendered.origin.unwrap().config;
        for config in [&rendered.config, &origin] {
            assert_eq!(config.ccerrorlimit, 20);
            assert_eq!(config.resources[0].contenttimeout, Some(5));
        }
    }

    #[test]
    fn the_stall_timeout_reaches_edges_and_origins_and_unset_is_the_data_planes() {
        // As the pods read it.
        let read = |rendered: &crate::render::Rendered| -> (Config, Option<Config>) {
            let json = |map: &k8s_openapi::api::core::v1::ConfigMap| -> Config {
                serde_json::from_str(&map.data.as_ref().unwrap()["restreamer.json"]).unwrap()
            };
            (
                json(&rendered.config_map),
                rendered.origin.as_ref().map(|o| json(&o.config_map)),
            )
        };
        let (config, _) = read(&render(&minimal(), "img:1").unwrap());
        assert_eq!(config.stalltimeout, 30, "the data plane's default");
        let (config, _) = read(&render(&good(), "img:1").unwrap());
        assert_eq!(config.stalltimeout, 60, "instance-good.yaml");

        for (set, expected) in [(Some(0), 0), (Some(120), 120), (None, 30)] {
            let mut tiered = tiered();
            tiered.spec.limits.stall_timeout_seconds = set;
            let (edge, origin) = read(&render(&tiered, "img:1").unwrap());
            let origin = origin.expect("tiered renders origins");
            assert_eq!(
                (edge.stalltimeout, origin.stalltimeout),
                (expected, expected),
                "stallTimeoutSeconds {set:?}"
            );
        }
    }

    #[test]
    fn tls_serves_viewers_https_from_the_secret_on_a_second_service_port() {
        let rendered = render(&good(), "img:1").unwrap();
        let config = &rendered.config;
        assert_eq!(config.tlslisten, ":8443");
        assert_eq!(
            (config.tlscert.as_str(), config.tlskey.as_str()),
            ("/etc/restreamer-tls/tls.crt", "/etc/restreamer-tls/tls.key")
        );
        assert_eq!(config.listen, ":8080", "plain HTTP stays");

        let pod = rendered.deployment.spec.unwrap().template.spec.unwrap();
        let secret = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "tls")
            .unwrap();
        assert_eq!(
            secret.secret.as_ref().unwrap().secret_name.as_deref(),
            Some("tv-tls")
        );
        let container = &pod.containers[0];
        let mount = container
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == "tls")
            .unwrap();
        assert_eq!(mount.mount_path, "/etc/restreamer-tls");
        assert!(
            mount.sub_path.is_none(),
            "a subPath mount never sees a renewed certificate"
        );
        let ports: Vec<(String, i32)> = container
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| (p.name.clone().unwrap(), p.container_port))
            .collect();
        assert_eq!(
            ports,
            [
                ("http".to_string(), 8080),
                ("https".to_string(), 8443),
                ("admin".to_string(), 9090)
            ]
        );
        let service_ports: Vec<(String, i32, IntOrString)> = rendered
            .service
            .spec
            .unwrap()
            .ports
            .unwrap()
            .into_iter()
            .map(|p| (p.name.unwrap(), p.port, p.target_port.unwrap()))
            .collect();
        assert_eq!(
            service_ports,
            [
                ("http".into(), 80, IntOrString::String("http".into())),
                ("https".into(), 443, IntOrString::String("https".into()))
            ]
        );

        let mut plain = good();
        plain.spec.tls = None;
        let rendered = render(&plain, "img:1").unwrap();
        assert_eq!(rendered.config.tlslisten, "");
        assert_eq!(rendered.service.spec.unwrap().ports.unwrap().len(), 1);

        let mut clash = good();
        clash.spec.tls.as_mut().unwrap().port = 80;
        assert!(render(&clash, "img:1")
            .unwrap_err()
            .to_string()
            .contains("spec.tls.port: 80 is spec.service.port already"));
    }

    #[test]
    fn origins_serve_the_edges_plainly_without_viewer_limits() {
        let mut restream = tiered();
        restream.spec.tls = Some(crate::crd::TlsSpec {
            secret_name: "tv-tls".into(),
            port: 443,
        });
        restream.spec.limits.max_connections_per_client = 4;
        restream.spec.service.trusted_proxies = vec!["10.0.0.0/8".into()];
        let rendered = render(&restream, "img:1").unwrap();
        assert_eq!(rendered.config.tlslisten, ":8443");
        assert_eq!(rendered.config.maxperclient, 4);
        let origin = rendered.origin.unwrap();
        assert_eq!(origin.config.tlslisten, "");
        assert_eq!(origin.config.maxperclient, 0, "every edge is one client");
        assert!(origin.config.trustedproxies.is_empty());
        let pod = origin.stateful_set.spec.unwrap().template.spec.unwrap();
        assert!(pod.volumes.unwrap().iter().all(|v| v.name != "tls"));
        assert_eq!(origin.service.spec.unwrap().ports.unwrap().len(), 1);
    }

    #[test]
    fn per_client_limits_and_trusted_proxies_reach_the_pods() {
        let config = render(&good(), "img:1").unwrap().config;
        assert_eq!(config.maxperclient, 4);
        let proxies: Vec<String> = config
            .trustedproxies
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(proxies, ["10.0.0.0/8"]);

        let mut restream = good();
        restream.spec.service.trusted_proxies = vec!["192.0.2.7".into(), "10.0.0/8".into()];
        let error = render(&restream, "img:1").unwrap_err().to_string();
        assert!(
            error
                .contains("spec.service.trustedProxies[1]: \"10.0.0/8\" is not an address or CIDR"),
            "{error}"
        );
        restream.spec.service.trusted_proxies = vec!["192.0.2.7".into()];
        let config = render(&restream, "img:1").unwrap().config;
        assert_eq!(config.trustedproxies[0].to_string(), "192.0.2.7/32");
    }

    #[test]
    fn token_authentication_signs_urls_with_the_secrets_passwords() {
        let mut restream = good();
        let auth = restream.spec.authentication.as_mut().unwrap();
        auth.kind = crate::crd::AuthenticationKind::Token;
        auth.streams = true;
        let config = render(&restream, "img:1").unwrap().config;
        assert_eq!(config.resources[0].authentication.kind, AuthType::Token);
        assert_eq!(config.resources[0].authentication.users, ["operator"]);
        assert!(config
            .notifications
            .iter()
            .all(|n| n.authentication.is_none()));
        let spec: RestreamSpec = serde_yaml::from_str(
            "streams: []\nauthentication: {type: token, secretName: s, users: [u]}",
        )
        .unwrap();
        assert_eq!(
            spec.authentication.unwrap().kind,
            crate::crd::AuthenticationKind::Token
        );
    }

    #[test]
    fn instant_start_is_on_by_default_and_can_be_turned_off_per_channel() {
        let config = render(&minimal(), "img:1").unwrap().config;
        assert!(config.instantstart);
        assert_eq!(config.instantstartlimit, 16);
        assert_eq!(config.resources[0].instantstart, None, "the global value");

        let mut restream = tiered();
        restream.spec.instant_start.limit_mebibytes = 64;
        restream.spec.streams[0].instant_start = Some(false);
        let rendered = render(&restream, "img:1").unwrap();
        let origin = rendered.origin.unwrap().config;
        for config in [&rendered.config, &origin] {
            assert_eq!(config.instantstartlimit, 64);
            assert_eq!(config.resources[0].instantstart, Some(false));
        }
        let json = serde_json::to_string(&rendered.config).unwrap();
        assert!(json.contains("\"instantstart\":false"), "{json}");

        restream.spec.instant_start.limit_mebibytes = 0;
        assert!(render(&restream, "img:1")
            .unwrap_err()
            .to_string()
            .contains("spec.instantStart.limitMebibytes: must be at least 1"));
    }
}
