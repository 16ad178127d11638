//! The Deployment of the serving pods (the edges, with tiers).

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta::{applied_replicas, object_meta, selector_labels};
use super::pods::pod_template;
use crate::crd::Restream;

/// Rolls one new pod at a time over the old ones (never fewer serving
/// pods). The replica count is the autoscaler's when there is one.
pub fn deployment(restream: &Restream, name: &str, default_image: &str) -> Deployment {
    let scaling = &restream.spec.scaling;
    Deployment {
        metadata: object_meta(restream, name.to_string(), name),
        spec: Some(DeploymentSpec {
            replicas: applied_replicas(scaling.autoscaled(), scaling.min_replicas),
            selector: LabelSelector {
                match_labels: Some(selector_labels(name)),
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
                name,
                default_image,
                restream.spec.pods.resources.clone(),
                restream.spec.tls.as_ref(),
            ),
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}
