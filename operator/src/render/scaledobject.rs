//! KEDA's `ScaledObject` (`keda.sh/v1alpha1`), in place of the
//! HorizontalPodAutoscaler when `spec.scaling.keda` is set: a `prometheus`
//! trigger on the pods' utilization, with the same scale-in behaviour.
//!
//! KEDA ships no schema with the Kubernetes ones, so the type here holds
//! the fields KEDA documents for a ScaledObject and no others
//! (<https://keda.sh/docs/latest/reference/scaledobject-spec/>).

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerBehavior;
use kube::{CustomResource, ResourceExt};
use serde::{Deserialize, Serialize};

use super::hpa::behavior;
use super::meta::{object_meta, origin_name, SCALING_METRIC};
use crate::crd::Restream;

/// What KEDA scales and how.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "keda.sh",
    version = "v1alpha1",
    kind = "ScaledObject",
    namespaced,
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct ScaledObjectSpec {
    pub scale_target_ref: ScaleTargetRef,
    pub min_replica_count: i32,
    pub max_replica_count: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advanced: Option<Advanced>,
    pub triggers: Vec<Trigger>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScaleTargetRef {
    pub api_version: String,
    pub kind: String,
    pub name: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Advanced {
    pub horizontal_pod_autoscaler_config: HorizontalPodAutoscalerConfig,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HorizontalPodAutoscalerConfig {
    pub behavior: HorizontalPodAutoscalerBehavior,
}

/// One scaler; its `metadata` values are strings, as KEDA reads them.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Trigger {
    #[serde(rename = "type")]
    pub kind: String,
    pub metric_type: String,
    pub metadata: BTreeMap<String, String>,
}

/// The ScaledObject of the Deployment `name`. The query sums the
/// utilization of the Deployment's pods; KEDA's `AverageValue` divides it
/// by the pod count, so the threshold is the pods' average, as for the
/// HorizontalPodAutoscaler.
pub fn scaled_object(restream: &Restream, name: &str) -> ScaledObject {
    let scaling = &restream.spec.scaling;
    let namespace = restream.namespace().unwrap_or_default();
    // The Deployment's pods are `<name>-<template hash>-<suffix>`: not
    // another Restream's pods, and not the origins (`<name>-origin-0`).
    let origin = origin_name(name);
    let query = format!(
        "sum({SCALING_METRIC}{{namespace=\"{namespace}\",pod=~\"{name}-[a-z0-9]+-[a-z0-9]+\",pod!~\"{origin}-[0-9]+\"}})"
    );
    let threshold = f64::from(scaling.target_utilization_percent) / 100.0;
    ScaledObject {
        metadata: object_meta(restream, name.to_string(), name),
        spec: ScaledObjectSpec {
            scale_target_ref: ScaleTargetRef {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: name.to_string(),
            },
            min_replica_count: scaling.min_replicas,
            max_replica_count: scaling.max_replicas,
            advanced: Some(Advanced {
                horizontal_pod_autoscaler_config: HorizontalPodAutoscalerConfig {
                    behavior: behavior(scaling),
                },
            }),
            triggers: vec![Trigger {
                kind: "prometheus".into(),
                metric_type: "AverageValue".into(),
                metadata: BTreeMap::from([
                    (
                        "serverAddress".to_string(),
                        scaling.prometheus_address.clone().unwrap_or_default(),
                    ),
                    ("query".to_string(), query),
                    ("threshold".to_string(), threshold.to_string()),
                ]),
            }],
        },
    }
}
