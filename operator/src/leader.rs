//! Leader election on a `coordination.k8s.io/v1` Lease, so that two
//! operator replicas can run and only one reconciles: the other waits, and
//! takes over when the leader's lease expires.
//!
//! The leader renews its lease every few seconds; if it cannot for a whole
//! lease duration it exits, so that it never acts on a lease it lost.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::chrono::Utc;
use kube::api::{Api, PostParams};
use kube::Client;
use tracing::{info, warn};

const LEASE_SECONDS: i32 = 15;
const RETRY: Duration = Duration::from_secs(5);

/// Waits until this process holds the lease `name`, then keeps renewing it
/// in the background (exiting the process if it is lost).
pub async fn lead(client: Client, namespace: &str, name: &str, identity: &str) {
    let leases: Api<Lease> = Api::namespaced(client, namespace);
    loop {
        match try_acquire(&leases, name, identity).await {
            Ok(true) => break,
            Ok(false) => {}
            Err(error) => warn!(event = "leader-election-error", error = %error),
        }
        tokio::time::sleep(RETRY).await;
    }
    info!(
        event = "leader-elected",
        identity,
        lease = name,
        "leading: reconciling"
    );
    let (name, identity) = (name.to_string(), identity.to_string());
    tokio::spawn(async move {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(RETRY).await;
            match try_acquire(&leases, &name, &identity).await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => {
                    warn!(
                        event = "leader-lost",
                        "another replica holds the lease: exiting"
                    );
                    std::process::exit(1);
                }
                Err(error) => {
                    warn!(event = "leader-election-error", error = %error);
                    if last_renewal.elapsed() > Duration::from_secs(LEASE_SECONDS as u64) {
                        warn!(
                            event = "leader-lost",
                            "could not renew the lease in time: exiting"
                        );
                        std::process::exit(1);
                    }
                }
            }
        }
    });
}

/// Takes or renews the lease if it is free, expired or ours.
pub async fn try_acquire(
    leases: &Api<Lease>,
    name: &str,
    identity: &str,
) -> Result<bool, kube::Error> {
    let now = MicroTime(Utc::now());
    let Some(mut lease) = leases.get_opt(name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(identity.into()),
                lease_duration_seconds: Some(LEASE_SECONDS),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                ..LeaseSpec::default()
            }),
        };
        return match leases.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(response)) if response.code == 409 => Ok(false),
            Err(error) => Err(error),
        };
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let ours = spec.holder_identity.as_deref() == Some(identity);
    let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
        (Some(renewed), Some(seconds)) => {
            renewed.0 + k8s_openapi::chrono::Duration::seconds(seconds.into()) < now.0
        }
        _ => true,
    };
    if !ours && !expired {
        return Ok(false);
    }
    if !ours {
        spec.acquire_time = Some(now.clone());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.holder_identity = Some(identity.into());
    spec.lease_duration_seconds = Some(LEASE_SECONDS);
    spec.renew_time = Some(now);
    // The resourceVersion makes this a compare-and-swap: of two replicas
    // racing for an expired lease, one gets a conflict.
    match leases.replace(name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(response)) if response.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::Context;
    use http::Method;

    const PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases/restreamer-operator";

    fn lease(holder: &str, renewed_seconds_ago: i64) -> serde_json::Value {
        let renewed = Utc::now() - k8s_openapi::chrono::Duration::seconds(renewed_seconds_ago);
        serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "restreamer-operator", "namespace": "ops", "resourceVersion": "7"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": LEASE_SECONDS,
                     "renewTime": MicroTime(renewed)}
        })
    }

    fn not_found() -> (u16, serde_json::Value) {
        (
            404,
            serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                  "reason": "NotFound", "code": 404, "message": "not found"}),
        )
    }

    #[tokio::test]
    async fn a_missing_lease_is_created_and_held() {
        let (ctx, mut server) = Context::test();
        let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), "ops");
        let attempt =
            tokio::spawn(async move { try_acquire(&leases, "restreamer-operator", "pod-a").await });
        let get = server.next(|_| not_found()).await;
        assert_eq!((get.method, get.path.as_str()), (Method::GET, PATH));
        let create = server.next(|seen| (201, seen.body.clone())).await;
        assert_eq!(create.method, Method::POST);
        assert_eq!(create.body["spec"]["holderIdentity"], "pod-a");
        assert!(attempt.await.unwrap().unwrap());
    }

    #[tokio::test]
    async fn a_fresh_lease_of_another_replica_is_left_alone() {
        let (ctx, mut server) = Context::test();
        let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), "ops");
        let attempt =
            tokio::spawn(async move { try_acquire(&leases, "restreamer-operator", "pod-b").await });
        server.next(|_| (200, lease("pod-a", 2))).await;
        assert!(
            !attempt.await.unwrap().unwrap(),
            "took a lease that is still held"
        );
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over_with_a_compare_and_swap() {
        let (ctx, mut server) = Context::test();
        let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), "ops");
        let attempt =
            tokio::spawn(async move { try_acquire(&leases, "restreamer-operator", "pod-b").await });
        server.next(|_| (200, lease("pod-a", 60))).await;
        let replace = server.next(|seen| (200, seen.body.clone())).await;
        assert_eq!((replace.method, replace.path.as_str()), (Method::PUT, PATH));
        assert_eq!(
            replace.body["metadata"]["resourceVersion"], "7",
            "the swap must be conditional"
        );
        assert_eq!(replace.body["spec"]["holderIdentity"], "pod-b");
        assert_eq!(replace.body["spec"]["leaseTransitions"], 1);
        assert!(attempt.await.unwrap().unwrap());
    }

    #[tokio::test]
    async fn losing_the_race_for_an_expired_lease_is_not_an_error() {
        let (ctx, mut server) = Context::test();
        let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), "ops");
        let attempt =
            tokio::spawn(async move { try_acquire(&leases, "restreamer-operator", "pod-b").await });
        server.next(|_| (200, lease("pod-a", 60))).await;
        server
            .next(|_| {
                (409, serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                          "reason": "Conflict", "code": 409, "message": "modified"}))
            })
            .await;
        assert!(!attempt.await.unwrap().unwrap());
    }
}
