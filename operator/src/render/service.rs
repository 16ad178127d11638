//! The Services: the one viewers use, and the origins' headless one that
//! gives each origin pod a DNS name for the edges.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta::{object_meta, selector_labels, HTTP_PORT};
use crate::crd::Restream;

/// The Service viewers connect to, as `spec.service` says, with an
/// `https` port with `spec.tls`.
pub fn viewer_service(restream: &Restream, name: &str) -> Service {
    let settings = &restream.spec.service;
    let https = restream
        .spec
        .tls
        .as_ref()
        .map(|tls| ("https", i32::from(tls.port)));
    service(
        restream,
        name,
        [Some(("http", i32::from(settings.port))), https]
            .into_iter()
            .flatten()
            .collect(),
        ServiceSpec {
            type_: Some(settings.kind.as_str().into()),
            external_traffic_policy: settings
                .external_traffic_policy
                .map(|policy| policy.as_str().into()),
            ..ServiceSpec::default()
        },
    )
}

/// Headless: one DNS name per origin pod.
pub fn origin_service(restream: &Restream, origin: &str) -> Service {
    service(
        restream,
        origin,
        vec![("http", HTTP_PORT)],
        ServiceSpec {
            cluster_ip: Some("None".into()),
            ..ServiceSpec::default()
        },
    )
}

/// A Service of `instance`'s pods: each `(name, port)` to the pods' port
/// of that name.
fn service(
    restream: &Restream,
    instance: &str,
    ports: Vec<(&str, i32)>,
    spec: ServiceSpec,
) -> Service {
    Service {
        metadata: object_meta(restream, instance.to_string(), instance),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(instance)),
            ports: Some(
                ports
                    .into_iter()
                    .map(|(name, port)| ServicePort {
                        name: Some(name.into()),
                        port,
                        target_port: Some(IntOrString::String(name.into())),
                        protocol: Some("TCP".into()),
                        ..ServicePort::default()
                    })
                    .collect(),
            ),
            ..spec
        }),
        ..Service::default()
    }
}
