//! The HorizontalPodAutoscaler on the pods' utilization, and the scaling
//! behaviour it shares with KEDA's: out fast, in slowly.

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HPAScalingPolicy, HPAScalingRules, HorizontalPodAutoscaler,
    HorizontalPodAutoscalerBehavior, HorizontalPodAutoscalerSpec, MetricIdentifier, MetricSpec,
    MetricTarget, PodsMetricSource,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::meta::{object_meta, SCALING_METRIC};
use crate::crd::{Restream, Scaling};

/// The autoscaler of the Deployment `name`, keeping the pods' average
/// `restreamer_connection_utilization` at the target (80 % is `800m`).
pub fn autoscaler(restream: &Restream, name: &str) -> HorizontalPodAutoscaler {
    let scaling = &restream.spec.scaling;
    HorizontalPodAutoscaler {
        metadata: object_meta(restream, name.to_string(), name),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: name.to_string(),
            },
            min_replicas: Some(scaling.min_replicas),
            max_replicas: scaling.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Pods".into(),
                pods: Some(PodsMetricSource {
                    metric: MetricIdentifier {
                        name: SCALING_METRIC.into(),
                        selector: None,
                    },
                    target: MetricTarget {
                        type_: "AverageValue".into(),
                        average_value: Some(Quantity(format!(
                            "{}m",
                            scaling.target_utilization_percent * 10
                        ))),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            behavior: Some(behavior(scaling)),
        }),
        ..HorizontalPodAutoscaler::default()
    }
}

/// Scale-in removes pods, and with them their viewers (after the drain,
/// they reconnect to the others): only after the load stayed low for the
/// whole stabilization window, and at most `scaleDownPods` per
/// `scaleDownPeriodSeconds`. Scale-out keeps Kubernetes' defaults (at once,
/// doubling).
pub fn behavior(scaling: &Scaling) -> HorizontalPodAutoscalerBehavior {
    HorizontalPodAutoscalerBehavior {
        scale_down: Some(HPAScalingRules {
            stabilization_window_seconds: Some(scaling.scale_down_stabilization_seconds),
            select_policy: Some("Min".into()),
            policies: Some(vec![HPAScalingPolicy {
                type_: "Pods".into(),
                value: scaling.scale_down_pods,
                period_seconds: scaling.scale_down_period_seconds,
            }]),
            ..HPAScalingRules::default()
        }),
        scale_up: None,
    }
}
