//! What every rendered object shares: names, labels, ports and paths in
//! the pods, and the metadata that makes the Restream an object's owner.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

use crate::crd::Restream;

/// Port of the streams and APIs in the pods.
pub const HTTP_PORT: i32 = 8080;
/// Port of the streams and APIs over HTTPS in the pods, with `spec.tls`.
pub const HTTPS_PORT: i32 = 8443;
/// Port of `/metrics`, `/healthz` and `/readyz` in the pods.
pub const ADMIN_PORT: i32 = 9090;
/// Where the ConfigMap is mounted.
pub const CONFIG_DIR: &str = "/etc/restreamer";
/// The ConfigMap's key, and so the config file's name in [`CONFIG_DIR`].
pub const CONFIG_FILE: &str = "restreamer.json";
/// Where the TLS Secret is mounted (a directory, so renewals arrive).
pub const TLS_DIR: &str = "/etc/restreamer-tls";
/// Where the users Secret is mounted.
pub const SECRET_DIR: &str = "/etc/restreamer-users";
/// The autoscaler's metric: stream clients ÷ soft limit, per pod.
pub const SCALING_METRIC: &str = "restreamer_connection_utilization";

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

/// The ConfigMap of an instance (the Restream's edges, or its origins).
pub fn config_map_name(instance: &str) -> String {
    format!("{instance}-config")
}

/// Labels that select an instance's pods.
pub fn selector_labels(instance: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "restreamer".to_string(),
        ),
        (
            "app.kubernetes.io/instance".to_string(),
            instance.to_string(),
        ),
    ])
}

/// The metadata of an object of `instance`: in the Restream's namespace,
/// labelled, and owned by the Restream. Offline (`render -f`), a Restream
/// has no uid yet and its objects no owner; from the cluster it always has
/// one.
pub fn object_meta(restream: &Restream, name: String, instance: &str) -> ObjectMeta {
    let mut labels = selector_labels(instance);
    labels.insert(
        "app.kubernetes.io/managed-by".into(),
        "restreamer-operator".into(),
    );
    labels.insert("app.kubernetes.io/component".into(), "data-plane".into());
    ObjectMeta {
        name: Some(name),
        namespace: restream.namespace(),
        labels: Some(labels),
        owner_references: restream.controller_owner_ref(&()).map(|owner| vec![owner]),
        ..ObjectMeta::default()
    }
}

/// The `replicas` to apply: none when an autoscaler owns the count (every
/// apply would otherwise take it back), else `count`.
pub fn applied_replicas(autoscaled: bool, count: i32) -> Option<i32> {
    (!autoscaled).then_some(count)
}
