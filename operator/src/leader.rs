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
