//! The StatefulSet of the origin pods: stable names (`<name>-origin-0`,
//! ...), each an upstream of the edges, all started at once.

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::meta::{applied_replicas, object_meta, selector_labels};
use super::pods::pod_template;
use crate::crd::{Restream, Tiers};

/// The origins are not autoscaled (every edge lists each one): the
/// operator owns their count.
pub fn stateful_set(
    restream: &Restream,
    tiers: &Tiers,
    origin: &str,
    default_image: &str,
) -> StatefulSet {
    StatefulSet {
        metadata: object_meta(restream, origin.to_string(), origin),
        spec: Some(StatefulSetSpec {
            replicas: applied_replicas(false, tiers.origins),
            service_name: Some(origin.to_string()),
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(selector_labels(origin)),
                ..LabelSelector::default()
            },
            template: pod_template(
                restream,
                origin,
                default_image,
                tiers.origin_resources.clone(),
                None,
            ),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}
