//! The PodDisruptionBudget of the serving pods.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta::{object_meta, selector_labels};
use crate::crd::Restream;

/// One pod at a time may be evicted (node drains): its viewers reconnect
/// to the others.
pub fn disruption_budget(restream: &Restream, name: &str) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: object_meta(restream, name.to_string(), name),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(name)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}
