//! The controller: watches `Restream`s and the objects they own, and
//! reconciles each Restream by server-side applying what [`render`] makes
//! of it, then reporting in its status.
//!
//! Shaped after kube-rs's controller-rs: a [`Context`] built once (client,
//! metrics, the one event recorder), a [`reconcile`] that returns when to
//! look again, an [`error_policy`] that counts failures and backs off.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use kube::core::{ApiResource, PartialObjectMeta};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{metadata_watcher, watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use tracing::{debug, info, warn};

use crate::crd::{Restream, RestreamStatus};
use crate::metrics::Metrics;
use crate::render::{render, typed, Manifest, RenderError, ScaledObject};
use crate::status::{status, Applied, Observed};

/// The field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "restreamer-operator";

/// Everything a reconcile needs, built once.
pub struct Context {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    /// One recorder for every event, so that its cache turns repeated
    /// identical events into one series (a count) instead of new Events.
    pub recorder: Recorder,
    /// The data-plane image for Restreams that name none.
    pub default_image: String,
    /// KEDA is installed and the operator may manage ScaledObjects.
    pub keda: bool,
    /// Consecutive failures per Restream (by uid), for back-off.
    pub failures: Mutex<HashMap<String, u32>>,
    /// The controller's cache of Restreams, once it runs: failures of
    /// Restreams no longer in it are forgotten.
    pub restreams: OnceLock<Store<Restream>>,
    /// The controller's caches (metadata only) of the HPAs and, with KEDA,
    /// the ScaledObjects in the cluster, once it runs: a Restream without
    /// one has it deleted only when the cache holds it (see [`cached`]),
    /// not with a DELETE on every reconcile.
    pub autoscalers: OnceLock<Owned<HorizontalPodAutoscaler>>,
    pub scaled_objects: OnceLock<Owned<ScaledObject>>,
}

/// A cache of the metadata of objects of kind `K`.
pub type Owned<K> = Store<PartialObjectMeta<K>>;

impl Context {
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        reporter: Reporter,
        default_image: String,
        keda: bool,
    ) -> Context {
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            default_image,
            keda,
            failures: Mutex::default(),
            restreams: OnceLock::new(),
            autoscalers: OnceLock::new(),
            scaled_objects: OnceLock::new(),
        }
    }

    /// Counts one more failure of `restream`; returns how many in a row.
    /// Failures of Restreams that are gone are dropped on the way.
    fn count_failure(&self, restream: &Restream) -> u32 {
        let mut failures = self.failures.lock().unwrap();
        if let Some(store) = self.restreams.get() {
            let live: HashSet<String> = store.state().iter().map(|r| key(r)).collect();
            failures.retain(|key, _| live.contains(key));
        }
        let count = failures.entry(key(restream)).or_insert(0);
        *count += 1;
        *count
    }
}

/// A Restream's key in the failure count: its uid, so that a Restream
/// deleted and created again starts afresh.
fn key(restream: &Restream) -> String {
    restream.uid().unwrap_or_else(|| {
        format!(
            "{}/{}",
            restream.namespace().unwrap_or_default(),
            restream.name_any()
        )
    })
}

/// Retry delay after `failures` consecutive failures: 5 s, doubling, at
/// most 5 minutes.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(5 << failures.saturating_sub(1).min(6)).min(Duration::from_secs(300))
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Render(#[from] RenderError),
}

impl Error {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Render(RenderError::InvalidSpec(_)) => "invalid_spec",
            Error::Render(_) => "render",
        }
    }
}

/// Brings one Restream's objects in line with its spec.
pub async fn reconcile(restream: Arc<Restream>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = apply(&restream, &ctx).await;
    ctx.metrics.reconciled(started.elapsed());
    if result.is_ok() {
        ctx.failures.lock().unwrap().remove(&key(&restream));
    }
    result
}

/// Renders what the operator can run: a Restream that asks for KEDA from
/// an operator installed without it is refused like an invalid spec.
fn render_for(restream: &Restream, ctx: &Context) -> Result<crate::render::Rendered, RenderError> {
    if restream.spec.scaling.keda && !ctx.keda {
        return Err(RenderError::InvalidSpec(
            "spec.scaling.keda: the operator runs without KEDA support \
             (install it with the chart value keda.enabled=true)"
                .into(),
        ));
    }
    render(restream, &ctx.default_image)
}

async fn apply(restream: &Restream, ctx: &Context) -> Result<Action, Error> {
    let namespace = restream.namespace().unwrap_or_default();
    let name = restream.name_any();
    let restreams: Api<Restream> = Api::namespaced(ctx.client.clone(), &namespace);

    let rendered = match render_for(restream, ctx) {
        Ok(rendered) => rendered,
        Err(error) => {
            // A spec that cannot be rendered will not get better by retrying:
            // say so where the user looks, and wait for the next change.
            warn!(event = "invalid-spec", restream = %name, namespace = %namespace, error = %error);
            publish(
                ctx,
                restream,
                EventType::Warning,
                "InvalidSpec",
                &error.to_string(),
            )
            .await?;
            let refused = Observed::Refused {
                reason: "InvalidSpec".into(),
                message: error.to_string(),
            };
            patch_status(&restreams, &name, &status(restream, &refused, now())).await?;
            ctx.metrics.failed(Error::Render(error).kind());
            return Ok(Action::await_change());
        }
    };

    let mut deployment = None;
    let mut autoscaler = None;
    for manifest in rendered.manifests() {
        let applied = apply_manifest(&ctx.client, &namespace, &manifest).await?;
        match manifest.resource.kind.as_str() {
            "Deployment" => deployment = Some(applied),
            "HorizontalPodAutoscaler" => autoscaler = Some(applied),
            _ => {}
        }
    }
    // What the Restream no longer asks for: the HPA when KEDA scales or
    // nothing does (two autoscalers on one Deployment fight), the
    // ScaledObject when KEDA no longer does.
    // Only ones this Restream owns: an HPA of the same name that somebody
    // made for the Deployment by hand is theirs.
    let uid = restream.metadata.uid.clone().unwrap_or_default();
    if rendered.autoscaler.is_none() {
        let cached = cached(ctx.autoscalers.get(), &namespace, &name, &uid);
        let resource = ApiResource::erase::<HorizontalPodAutoscaler>(&());
        delete_if_owned(&ctx.client, &namespace, resource, &name, &uid, cached).await?;
    }
    if ctx.keda && rendered.scaled_object.is_none() {
        let cached = cached(ctx.scaled_objects.get(), &namespace, &name, &uid);
        let resource = ApiResource::erase::<ScaledObject>(&());
        delete_if_owned(&ctx.client, &namespace, resource, &name, &uid, cached).await?;
    }

    let deployment: Deployment = parse(deployment.expect("a Deployment is always rendered"))?;
    let autoscaler: Option<HorizontalPodAutoscaler> = autoscaler.map(parse).transpose()?;
    let config_hash = restreamer::config::config_hash(&rendered.config);
    let deployment_status = deployment.status.unwrap_or_default();
    let observed = Observed::Applied(Applied {
        replicas: deployment_status.replicas.unwrap_or(0),
        ready: deployment_status.ready_replicas.unwrap_or(0),
        updated: deployment_status.updated_replicas.unwrap_or(0),
        observed_latest: deployment_status.observed_generation >= deployment.metadata.generation,
        desired: autoscaler
            .and_then(|hpa| hpa.status)
            .map(|status| status.desired_replicas),
        config_hash: config_hash.clone(),
    });
    let previous_hash = restream.status.as_ref().and_then(|s| s.config_hash.clone());
    patch_status(&restreams, &name, &status(restream, &observed, now())).await?;
    if previous_hash.as_deref() != Some(config_hash.as_str()) {
        info!(event = "config-rendered", restream = %name, namespace = %namespace, hash = %config_hash);
        publish(
            ctx,
            restream,
            EventType::Normal,
            "ConfigUpdated",
            &format!("data-plane config {config_hash} applied"),
        )
        .await?;
    }

    // Replica counts change without a spec change: look again now and then.
    Ok(Action::requeue(Duration::from_secs(60)))
}

fn now() -> Time {
    Time(k8s_openapi::chrono::Utc::now())
}

fn parse<K: serde::de::DeserializeOwned>(object: DynamicObject) -> Result<K, Error> {
    let value = serde_json::to_value(object).expect("objects serialise");
    serde_json::from_value(value).map_err(|e| Error::Kube(kube::Error::SerdeError(e)))
}

/// Server-side applies one object; returns what the API server made of it.
async fn apply_manifest(
    client: &Client,
    namespace: &str,
    manifest: &Manifest,
) -> Result<DynamicObject, Error> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &manifest.resource);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    Ok(api
        .patch(&manifest.name, &params, &Patch::Apply(&manifest.body))
        .await?)
}

/// What the controller's cache of a kind says of `namespace/name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cached {
    /// There, and owned by the Restream.
    Owned,
    /// Not there, or somebody else's.
    NotOurs,
    /// The cache cannot tell: there is none yet (before the controller
    /// runs) or it has not seen its first list (just after a start).
    Unknown,
}

/// What `cache` says of `namespace/name` for the Restream of uid `owner`.
/// A cache that lags behind a new object corrects itself: the object's
/// arrival in the cache triggers its owner's reconcile, and the 60 s
/// requeue covers the rest.
fn cached<K>(cache: Option<&Owned<K>>, namespace: &str, name: &str, owner: &str) -> Cached
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let Some(cache) = cache else {
        return Cached::Unknown;
    };
    if !matches!(cache.wait_until_ready().now_or_never(), Some(Ok(()))) {
        return Cached::Unknown;
    }
    match cache.get(&ObjectRef::new(name).within(namespace)) {
        Some(object) if is_owned_by(object.owner_references(), owner) => Cached::Owned,
        _ => Cached::NotOurs,
    }
}

fn is_owned_by(references: &[OwnerReference], owner: &str) -> bool {
    !owner.is_empty() && references.iter().any(|reference| reference.uid == owner)
}

/// Deletes an object the Restream no longer wants, if it owns it; one
/// already gone is fine. When the cache cannot tell, the object is read
/// first, and deleted with its uid as a precondition (so that one made
/// anew meanwhile is not).
async fn delete_if_owned(
    client: &Client,
    namespace: &str,
    resource: ApiResource,
    name: &str,
    owner: &str,
    cached: Cached,
) -> Result<(), Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    let mut params = DeleteParams::default();
    match cached {
        Cached::NotOurs => return Ok(()),
        Cached::Owned => {}
        Cached::Unknown => {
            let Some(object) = api.get_opt(name).await? else {
                return Ok(());
            };
            if !is_owned_by(object.owner_references(), owner) {
                debug!(event = "not-owned", kind = %resource.kind, name, namespace, "left alone: not the Restream's");
                return Ok(());
            }
            params.preconditions = object.uid().map(|uid| Preconditions {
                uid: Some(uid),
                resource_version: None,
            });
        }
    }
    match api.delete(name, &params).await {
        Ok(_) => {
            info!(event = "deleted", kind = %resource.kind, name, namespace);
            Ok(())
        }
        Err(kube::Error::Api(response)) if matches!(response.code, 404 | 409) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

async fn patch_status(
    api: &Api<Restream>,
    name: &str,
    status: &RestreamStatus,
) -> Result<(), Error> {
    let body = typed::<Restream>(serde_json::json!({ "status": status }));
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

/// Publishes an event about `restream` through the context's one recorder.
pub async fn publish(
    ctx: &Context,
    restream: &Restream,
    type_: EventType,
    reason: &str,
    note: &str,
) -> Result<(), Error> {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    ctx.recorder
        .publish(&event, &restream.object_ref(&()))
        .await?;
    Ok(())
}

/// What to do after a failed reconcile: count it, and try again after an
/// exponential back-off (5 s, 10 s, 20 s, ... at most 5 minutes).
pub fn error_policy(restream: Arc<Restream>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(error.kind());
    let failures = ctx.count_failure(&restream);
    let delay = backoff(failures);
    warn!(event = "reconcile-failed", restream = %restream.name_any(), error = %error, failures, retry_seconds = delay.as_secs());
    Action::requeue(delay)
}

/// Runs the controller until SIGTERM.
pub async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let restreams: Api<Restream> = Api::all(client.clone());
    let config = watcher::Config::default();
    // The autoscalers are watched as `owns` would (their metadata), through
    // a cache that tells a reconcile whether there is one to delete.
    let (autoscalers, writer) = reflector::store();
    let autoscaler_events = reflector::reflector(
        writer,
        metadata_watcher(
            Api::<HorizontalPodAutoscaler>::all(client.clone()),
            config.clone(),
        ),
    )
    .touched_objects();
    let _ = ctx.autoscalers.set(autoscalers);
    let mut controller = Controller::new(restreams, config.clone())
        .owns(Api::<ConfigMap>::all(client.clone()), config.clone())
        .owns(Api::<Deployment>::all(client.clone()), config.clone())
        .owns(Api::<StatefulSet>::all(client.clone()), config.clone())
        .owns(Api::<Service>::all(client.clone()), config.clone())
        .owns_stream(autoscaler_events)
        .owns(
            Api::<PodDisruptionBudget>::all(client.clone()),
            config.clone(),
        );
    if ctx.keda {
        let (scaled_objects, writer) = reflector::store();
        let scaled_object_events = reflector::reflector(
            writer,
            metadata_watcher(Api::<ScaledObject>::all(client), config),
        )
        .touched_objects();
        let _ = ctx.scaled_objects.set(scaled_objects);
        controller = controller.owns_stream(scaled_object_events);
    }
    let _ = ctx.restreams.set(controller.store());
    controller
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                warn!(event = "controller-error", error = %error);
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::RestreamStatus;
    use crate::fixtures::Seen;

    /// The API server's view after applying: the Deployment has pods.
    fn deployment_status() -> serde_json::Value {
        serde_json::json!({"status": {"replicas": 2, "readyReplicas": 1, "updatedReplicas": 2, "observedGeneration": 1},
                           "metadata": {"name": "tv", "namespace": "media", "generation": 1}})
    }

    #[tokio::test]
    async fn a_good_restream_is_applied_object_by_object_then_reported() {
        let (ctx, mut server) = Context::test();
        let restream = Restream::test();
        let reconciler = tokio::spawn(reconcile(Arc::new(restream.clone()), Arc::clone(&ctx)));

        let config_map = server
            .expect_apply(
                "/api/v1/namespaces/media/configmaps/tv-config",
                serde_json::json!({}),
            )
            .await;
        let config: restreamer::config::Config =
            serde_json::from_str(config_map.body["data"]["restreamer.json"].as_str().unwrap())
                .unwrap();
        assert_eq!(config.resources[0].serve, "/news.ts");
        assert_eq!(
            config_map.body["metadata"]["ownerReferences"][0]["kind"],
            "Restream"
        );
        assert_eq!(
            config_map.body["metadata"]["ownerReferences"][0]["controller"],
            true
        );

        let deployment = server
            .expect_apply(
                "/apis/apps/v1/namespaces/media/deployments/tv",
                deployment_status(),
            )
            .await;
        assert_eq!(deployment.body["kind"], "Deployment");
        server
            .expect_apply(
                "/api/v1/namespaces/media/services/tv",
                serde_json::json!({}),
            )
            .await;
        server
            .expect_apply(
                "/apis/autoscaling/v2/namespaces/media/horizontalpodautoscalers/tv",
                serde_json::json!({}),
            )
            .await;
        server
            .expect_apply(
                "/apis/policy/v1/namespaces/media/poddisruptionbudgets/tv",
                serde_json::json!({}),
            )
            .await;

        let status = server
            .expect_apply(
                "/apis/restreamer.io/v1alpha1/namespaces/media/restreams/tv/status",
                serde_json::to_value(&restream).unwrap(),
            )
            .await;
        let status: RestreamStatus = serde_json::from_value(status.body["status"].clone()).unwrap();
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(
            (status.streams, status.replicas, status.ready_replicas),
            (2, 2, 1)
        );
        assert_eq!(
            status.config_hash,
            Some(restreamer::config::config_hash(&config))
        );
        let condition = |kind: &str| {
            status
                .conditions
                .iter()
                .find(|c| c.type_ == kind)
                .unwrap()
                .clone()
        };
        assert_eq!(
            (
                condition("Ready").status.as_str(),
                condition("Ready").reason.as_str()
            ),
            ("True", "PodsReady")
        );
        assert_eq!(condition("Progressing").status, "False");
        assert_eq!(condition("Degraded").status, "False");

        let event = server.expect_event("media").await;
        assert_eq!(event.body["reason"], "ConfigUpdated");
        assert_eq!(event.body["regarding"]["name"], "tv");

        let action = reconciler.await.unwrap().expect("reconcile succeeds");
        assert_eq!(action, Action::requeue(Duration::from_secs(60)));
        assert_eq!(ctx.metrics.reconciles.get(), 1);
    }

    #[tokio::test]
    async fn an_unchanged_config_publishes_no_event() {
        let (ctx, mut server) = Context::test();
        let mut restream = Restream::test();
        let rendered = render(&restream, "restreamer:test").unwrap();
        restream.status = Some(RestreamStatus {
            config_hash: Some(restreamer::config::config_hash(&rendered.config)),
            ..RestreamStatus::default()
        });
        let restream_json = serde_json::to_value(&restream).unwrap();
        let reconciler = tokio::spawn(reconcile(Arc::new(restream), Arc::clone(&ctx)));
        for (path, extra) in [
            (
                "/api/v1/namespaces/media/configmaps/tv-config",
                serde_json::json!({}),
            ),
            (
                "/apis/apps/v1/namespaces/media/deployments/tv",
                deployment_status(),
            ),
            (
                "/api/v1/namespaces/media/services/tv",
                serde_json::json!({}),
            ),
            (
                "/apis/autoscaling/v2/namespaces/media/horizontalpodautoscalers/tv",
                serde_json::json!({}),
            ),
            (
                "/apis/policy/v1/namespaces/media/poddisruptionbudgets/tv",
                serde_json::json!({}),
            ),
            (
                "/apis/restreamer.io/v1alpha1/namespaces/media/restreams/tv/status",
                restream_json,
            ),
        ] {
            server.expect_apply(path, extra).await;
        }
        reconciler.await.unwrap().expect("reconcile succeeds");
    }

    #[tokio::test]
    async fn an_illegal_restream_is_reported_degraded_and_not_applied() {
        let (ctx, mut server) = Context::test();
        let restream = Restream::illegal();
        let reconciler = tokio::spawn(reconcile(Arc::new(restream.clone()), Arc::clone(&ctx)));

        let event = server.expect_event("media").await;
        assert_eq!(event.body["reason"], "InvalidSpec");
        assert_eq!(event.body["type"], "Warning");
        let note = event.body["note"].as_str().unwrap();
        assert!(
            note.contains("spec.streams[0].upstreams[0]: unsupported scheme \"rtmp\""),
            "{note}"
        );

        let status = server
            .expect_apply(
                "/apis/restreamer.io/v1alpha1/namespaces/media/restreams/illegal/status",
                serde_json::to_value(&restream).unwrap(),
            )
            .await;
        let status: RestreamStatus = serde_json::from_value(status.body["status"].clone()).unwrap();
        let degraded = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Degraded")
            .unwrap();
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "InvalidSpec")
        );

        // Nothing else is applied, and there is no point retrying before a change.
        assert_eq!(reconciler.await.unwrap().unwrap(), Action::await_change());
        assert_eq!(
            ctx.metrics
                .failures
                .with_label_values(&["invalid_spec"])
                .get(),
            1
        );
    }

    #[tokio::test]
    async fn an_api_error_fails_the_reconcile_and_the_error_policy_counts_it() {
        let (ctx, mut server) = Context::test();
        let restream = Arc::new(Restream::test());
        let reconciler = tokio::spawn(reconcile(Arc::clone(&restream), Arc::clone(&ctx)));
        server
            .next(|_| {
                (500, serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                          "message": "etcd is down", "reason": "InternalError", "code": 500}))
            })
            .await;
        let error = reconciler.await.unwrap().expect_err("the reconcile fails");
        assert!(error.to_string().contains("etcd is down"), "{error}");
        let action = error_policy(Arc::clone(&restream), &error, Arc::clone(&ctx));
        assert_eq!(action, Action::requeue(Duration::from_secs(5)));
        assert_eq!(ctx.metrics.failures.with_label_values(&["kube"]).get(), 1);
        // Failing again backs off further.
        let action = error_policy(restream, &error, Arc::clone(&ctx));
        assert_eq!(action, Action::requeue(Duration::from_secs(10)));
    }

    fn not_found() -> serde_json::Value {
        serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                           "reason": "NotFound", "code": 404})
    }

    /// What the API server keeps of the Deployment, and what the
    /// HorizontalPodAutoscaler does to it between two reconciles.
    struct LiveDeployment(serde_json::Value);

    impl LiveDeployment {
        /// Server-side apply, as far as this test needs: the applied
        /// fields are merged in; fields the applier does not send (here
        /// `spec.replicas`, owned by the HPA) are kept.
        fn apply(&mut self, applied: &serde_json::Value) -> serde_json::Value {
            fn merge(live: &mut serde_json::Value, applied: &serde_json::Value) {
                match (live.as_object_mut(), applied.as_object()) {
                    (Some(live), Some(applied)) => {
                        for (key, value) in applied {
                            merge(
                                live.entry(key.clone()).or_insert(serde_json::Value::Null),
                                value,
                            );
                        }
                    }
                    _ => *live = applied.clone(),
                }
            }
            merge(&mut self.0, applied);
            // The API server defaults a missing count to 1.
            if self.0["spec"]["replicas"].is_null() {
                self.0["spec"]["replicas"] = 1.into();
            }
            let replicas = self.0["spec"]["replicas"].clone();
            self.0["status"] = serde_json::json!({"replicas": replicas, "readyReplicas": replicas,
                "updatedReplicas": replicas, "observedGeneration": 1});
            self.0["metadata"]["generation"] = 1.into();
            self.0.clone()
        }
    }

    /// Runs one reconcile against `live`; returns the applied Deployment
    /// and the status reported.
    async fn reconcile_with(
        restream: &Restream,
        live: &mut LiveDeployment,
    ) -> (Seen, RestreamStatus, Vec<String>) {
        let (ctx, mut server) = Context::test();
        let mut deleted = Vec::new();
        let reconciler = tokio::spawn(reconcile(Arc::new(restream.clone()), Arc::clone(&ctx)));
        server
            .expect_apply(
                "/api/v1/namespaces/media/configmaps/tv-config",
                serde_json::json!({}),
            )
            .await;
        let deployment = server.next(|seen| (200, live.apply(&seen.body))).await;
        assert_eq!(
            deployment.path,
            "/apis/apps/v1/namespaces/media/deployments/tv"
        );
        let mut status = None;
        loop {
            let seen = server
                .next(|seen| match seen.method {
                    http::Method::POST => (201, seen.body.clone()),
                    http::Method::DELETE => (404, not_found()),
                    http::Method::GET => (200, owned_object(&seen.path)),
                    _ if seen.path.ends_with("/status") => {
                        (200, serde_json::to_value(restream).unwrap())
                    }
                    _ => (200, seen.body.clone()),
                })
                .await;
            if seen.path.ends_with("/status") {
                status = Some(serde_json::from_value(seen.body["status"].clone()).unwrap());
            }
            if seen.method == http::Method::DELETE {
                deleted.push(seen.path.clone());
            }
            if seen.method == http::Method::POST {
                break;
            }
        }
        reconciler.await.unwrap().expect("reconcile succeeds");
        (deployment, status.expect("a status is reported"), deleted)
    }

    #[tokio::test]
    async fn the_autoscalers_replica_count_survives_the_next_reconcile() {
        let restream = Restream::test();
        assert!(restream.spec.scaling.autoscaler);
        let mut live = LiveDeployment(serde_json::json!({}));

        let (applied, status, _) = reconcile_with(&restream, &mut live).await;
        assert!(
            applied.body["spec"].get("replicas").is_none(),
            "an autoscaled Deployment is applied without replicas: {}",
            applied.body["spec"]
        );
        assert_eq!(
            status.replicas, 1,
            "the API server's default, until the HPA acts"
        );

        // The HPA scales out between two reconciles.
        live.0["spec"]["replicas"] = 7.into();
        let (applied, status, _) = reconcile_with(&restream, &mut live).await;
        assert!(applied.body["spec"].get("replicas").is_none());
        assert_eq!(
            live.0["spec"]["replicas"], 7,
            "the apply left the HPA's count alone"
        );
        assert_eq!((status.replicas, status.ready_replicas), (7, 7));
    }

    #[tokio::test]
    async fn without_an_autoscaler_the_operator_owns_the_replica_count() {
        let mut restream = Restream::test();
        restream.spec.scaling.autoscaler = false;
        let mut live = LiveDeployment(serde_json::json!({}));
        live.0["spec"] = serde_json::json!({"replicas": 7});
        let (applied, status, deleted) = reconcile_with(&restream, &mut live).await;
        assert_eq!(applied.body["spec"]["replicas"], 2, "minReplicas");
        assert_eq!(status.replicas, 2);
        assert_eq!(
            deleted,
            ["/apis/autoscaling/v2/namespaces/media/horizontalpodautoscalers/tv"],
            "an HPA left from before would fight the operator over the count"
        );
    }

    /// Runs one reconcile, answering as the API server would (applies
    /// echoed, events created, deletions done); returns each request's
    /// method and path, in order.
    async fn requests_of(
        ctx: Arc<Context>,
        server: crate::fixtures::ApiServerVerifier,
        restream: Restream,
    ) -> Vec<(String, String)> {
        requests_with(ctx, server, restream, None).await
    }

    /// [`requests_of`], where a GET (of an object the cache cannot tell
    /// about) finds `existing`, or nothing (404).
    async fn requests_with(
        ctx: Arc<Context>,
        mut server: crate::fixtures::ApiServerVerifier,
        restream: Restream,
        existing: Option<serde_json::Value>,
    ) -> Vec<(String, String)> {
        let answer = serde_json::to_value(&restream).unwrap();
        let mut reconciler = tokio::spawn(reconcile(Arc::new(restream), ctx));
        let mut seen = Vec::new();
        loop {
            let answer = answer.clone();
            let existing = existing.clone();
            tokio::select! {
                biased;
                result = &mut reconciler => {
                    result.unwrap().expect("reconcile succeeds");
                    return seen;
                }
                request = server.next(move |request| match request.method {
                    http::Method::DELETE => (200, serde_json::json!({"kind": "Status",
                        "apiVersion": "v1", "status": "Success", "code": 200})),
                    http::Method::GET => match existing {
                        Some(object) => (200, object),
                        None => (404, serde_json::json!({"kind": "Status", "apiVersion": "v1",
                            "status": "Failure", "reason": "NotFound", "code": 404})),
                    },
                    http::Method::POST => (201, request.body.clone()),
                    _ if request.path.ends_with("/status") => (200, answer),
                    _ => (200, request.body.clone()),
                }) => seen.push((request.method.to_string(), request.path)),
            }
        }
    }

    /// The uid of `Restream::test()`.
    const OWNER: &str = "5b3c6f1e-0000-4000-8000-000000000001";

    fn owned_by(uid: &str) -> Vec<OwnerReference> {
        vec![OwnerReference {
            api_version: "restreamer.io/v1alpha1".into(),
            kind: "Restream".into(),
            name: "tv".into(),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]
    }

    /// What a GET of `path` finds: an object owned by `Restream::test()`
    /// (a left-over HPA or ScaledObject the reconcile is to delete).
    pub(super) fn owned_object(path: &str) -> serde_json::Value {
        owned_object_of(path, OWNER)
    }

    /// [`owned_object`], owned by the Restream of uid `owner`.
    fn owned_object_of(path: &str, owner: &str) -> serde_json::Value {
        serde_json::json!({"apiVersion": "v1", "kind": "Object",
            "metadata": {"name": path.rsplit('/').next().unwrap(), "namespace": "media",
                         "uid": "left-over-1", "ownerReferences": owned_by(owner)}})
    }

    /// A cache of `K`s as the controller keeps it: `listed` once it has
    /// seen the first list, holding `names` in namespace `media`, owned by
    /// `Restream::test()`.
    fn cache_of<K>(listed: bool, names: &[&str]) -> Owned<K>
    where
        K: Resource<DynamicType = ()> + Clone + 'static,
    {
        cache_owned_by(listed, names, OWNER)
    }

    /// [`cache_of`], the objects owned by the Restream of uid `owner`.
    fn cache_owned_by<K>(listed: bool, names: &[&str], owner: &str) -> Owned<K>
    where
        K: Resource<DynamicType = ()> + Clone + 'static,
    {
        use kube::core::{ObjectMeta, PartialObjectMetaExt};
        let (cache, mut writer) = reflector::store::<PartialObjectMeta<K>>();
        writer.apply_watcher_event(&watcher::Event::Init);
        for name in names {
            let meta = ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some("media".into()),
                owner_references: Some(owned_by(owner)),
                ..ObjectMeta::default()
            };
            writer.apply_watcher_event(&watcher::Event::InitApply(
                meta.into_response_partial::<K>(),
            ));
        }
        if listed {
            writer.apply_watcher_event(&watcher::Event::InitDone);
        }
        // The cache stays ready when its writer goes.
        std::mem::forget(writer);
        cache
    }

    fn fixed_count() -> Restream {
        let mut restream = Restream::test();
        restream.spec.scaling.autoscaler = false;
        restream
    }

    const HPA: &str = "/apis/autoscaling/v2/namespaces/media/horizontalpodautoscalers/tv";
    const SCALED_OBJECT: &str = "/apis/keda.sh/v1alpha1/namespaces/media/scaledobjects/tv";

    fn deletes(requests: &[(String, String)]) -> Vec<&str> {
        requests
            .iter()
            .filter(|(method, _)| method == "DELETE")
            .map(|(_, path)| path.as_str())
            .collect()
    }

    #[tokio::test]
    async fn without_an_autoscaler_no_delete_is_sent_when_the_cache_holds_no_hpa() {
        let (ctx, server) = Context::test();
        ctx.autoscalers
            .set(cache_of(true, &["other"]))
            .ok()
            .unwrap();
        let requests = requests_of(ctx, server, fixed_count()).await;
        let calls: Vec<(&str, &str)> = requests
            .iter()
            .map(|(method, path)| (method.as_str(), path.as_str()))
            .collect();
        assert_eq!(
            calls,
            [
                ("PATCH", "/api/v1/namespaces/media/configmaps/tv-config"),
                ("PATCH", "/apis/apps/v1/namespaces/media/deployments/tv"),
                ("PATCH", "/api/v1/namespaces/media/services/tv"),
                (
                    "PATCH",
                    "/apis/policy/v1/namespaces/media/poddisruptionbudgets/tv"
                ),
                (
                    "PATCH",
                    "/apis/restreamer.io/v1alpha1/namespaces/media/restreams/tv/status"
                ),
                ("POST", "/apis/events.k8s.io/v1/namespaces/media/events"),
            ],
            "an HPA of the same name elsewhere (here `other`) changes nothing"
        );
    }

    #[tokio::test]
    async fn without_an_autoscaler_the_hpa_in_the_cache_is_deleted() {
        let (ctx, server) = Context::test();
        ctx.autoscalers.set(cache_of(true, &["tv"])).ok().unwrap();
        let requests = requests_of(ctx, server, fixed_count()).await;
        assert_eq!(deletes(&requests), [HPA]);
        let position = |path: &str| requests.iter().position(|(_, p)| p == path).unwrap();
        assert!(
            position(HPA) > position("/apis/policy/v1/namespaces/media/poddisruptionbudgets/tv"),
            "deleted after everything is applied: {requests:?}"
        );
    }

    /// An HPA as the API server returns it, owned by the Restream `owner`.
    fn hpa_owned_by(owner: &str) -> serde_json::Value {
        serde_json::json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "tv", "namespace": "media", "uid": "hpa-uid-1",
                         "ownerReferences": owned_by(owner)}})
    }

    #[tokio::test]
    async fn after_a_restart_the_hpa_is_read_and_deleted_if_owned_until_the_cache_has_listed() {
        // The operator restarted: its cache has not seen the first list yet,
        // so it cannot tell whether an HPA from before exists.
        let (ctx, server) = Context::test();
        ctx.autoscalers.set(cache_of(false, &[])).ok().unwrap();
        let requests = requests_with(ctx, server, fixed_count(), Some(hpa_owned_by(OWNER))).await;
        assert_eq!(deletes(&requests), [HPA]);
        let get = requests.iter().position(|r| r.0 == "GET" && r.1 == HPA);
        let delete = requests.iter().position(|r| r.0 == "DELETE");
        assert!(
            get.is_some() && get < delete,
            "read before deleted: {requests:?}"
        );
        // Before the controller runs there is no cache at all: the same.
        let (ctx, server) = Context::test();
        let requests = requests_with(ctx, server, fixed_count(), Some(hpa_owned_by(OWNER))).await;
        assert_eq!(deletes(&requests), [HPA]);
        // None there: read, nothing deleted.
        let (ctx, server) = Context::test();
        let requests = requests_with(ctx, server, fixed_count(), None).await;
        assert_eq!(deletes(&requests), Vec::<&str>::new());
    }

    #[tokio::test]
    async fn an_hpa_of_the_same_name_the_restream_does_not_own_is_left_alone() {
        // Somebody scales the Deployment with an HPA of their own.
        let (ctx, server) = Context::test();
        ctx.autoscalers
            .set(cache_owned_by(true, &["tv"], "someone-else"))
            .ok()
            .unwrap();
        let requests = requests_of(ctx, server, fixed_count()).await;
        assert_eq!(deletes(&requests), Vec::<&str>::new());
        // The same when the cache cannot tell: the object is read.
        let (ctx, server) = Context::test();
        let requests = requests_with(
            ctx,
            server,
            fixed_count(),
            Some(hpa_owned_by("someone-else")),
        )
        .await;
        assert_eq!(deletes(&requests), Vec::<&str>::new());
        let (ctx, server) = Context::test();
        let mut unowned = hpa_owned_by(OWNER);
        unowned["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("ownerReferences");
        let requests = requests_with(ctx, server, fixed_count(), Some(unowned)).await;
        assert_eq!(deletes(&requests), Vec::<&str>::new());
    }

    #[tokio::test]
    async fn with_keda_installed_a_scaled_object_is_deleted_only_when_cached() {
        // Restream::test() scales with the HPA: the ScaledObject goes, if any.
        let (ctx, server) = Context::test_with_keda();
        ctx.scaled_objects.set(cache_of(true, &[])).ok().unwrap();
        let requests = requests_of(ctx, server, Restream::test()).await;
        assert_eq!(deletes(&requests), Vec::<&str>::new());
        assert!(requests
            .iter()
            .any(|(method, path)| method == "PATCH" && path == HPA));

        let (ctx, server) = Context::test_with_keda();
        ctx.scaled_objects
            .set(cache_of(true, &["tv"]))
            .ok()
            .unwrap();
        let requests = requests_of(ctx, server, Restream::test()).await;
        assert_eq!(deletes(&requests), [SCALED_OBJECT]);
    }

    #[tokio::test]
    async fn the_controllers_hpa_watch_fills_the_cache_the_reconcile_reads() {
        let (ctx, mut server) = Context::test();
        let controller = tokio::spawn(run(Arc::clone(&ctx)));
        let list = |items: serde_json::Value| {
            serde_json::json!({"apiVersion": "v1", "kind": "List",
                               "metadata": {"resourceVersion": "1"}, "items": items})
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        let mut listed = false;
        while !listed {
            let request = tokio::time::timeout_at(
                deadline,
                server.next(|request| {
                    let hpas = request.path == "/apis/autoscaling/v2/horizontalpodautoscalers"
                        && !request.query.contains("watch=true");
                    if hpas {
                        (
                            200,
                            list(serde_json::json!([{"apiVersion": "autoscaling/v2",
                            "kind": "HorizontalPodAutoscaler",
                            "metadata": {"name": "tv", "namespace": "media", "resourceVersion": "1",
                                         "ownerReferences": owned_by(OWNER)}}])),
                        )
                    } else {
                        (200, list(serde_json::json!([])))
                    }
                }),
            )
            .await
            .expect("the controller lists the HPAs");
            listed = request.path == "/apis/autoscaling/v2/horizontalpodautoscalers";
        }
        let cache = ctx.autoscalers.get().expect("the controller set its cache");
        tokio::time::timeout(Duration::from_secs(3), cache.wait_until_ready())
            .await
            .expect("the cache is ready after the first list")
            .unwrap();
        controller.abort();
        assert_eq!(cached(Some(cache), "media", "tv", OWNER), Cached::Owned);
        assert_eq!(cached(Some(cache), "media", "tv", "other"), Cached::NotOurs);
        assert_eq!(
            cached(Some(cache), "media", "radio", OWNER),
            Cached::NotOurs
        );
        assert_eq!(cached(Some(cache), "sport", "tv", OWNER), Cached::NotOurs);
    }

    #[tokio::test]
    async fn two_identical_events_become_one_series() {
        let (ctx, mut server) = Context::test();
        let publisher = tokio::spawn({
            let ctx = Arc::clone(&ctx);
            async move {
                let restream = Restream::illegal();
                for _ in 0..2 {
                    publish(
                        &ctx,
                        &restream,
                        EventType::Warning,
                        "InvalidSpec",
                        "bad upstream",
                    )
                    .await
                    .unwrap();
                }
            }
        });
        let first = server.expect_event("media").await;
        let name = first.body["metadata"]["name"].as_str().unwrap().to_string();
        let second = server.next(|seen| (200, seen.body.clone())).await;
        publisher.await.unwrap();
        assert_eq!(
            (second.method.as_str(), second.path.as_str()),
            (
                "PATCH",
                format!("/apis/events.k8s.io/v1/namespaces/media/events/{name}").as_str()
            ),
            "the repeat updates the first Event instead of creating another"
        );
        assert_eq!(second.body["series"]["count"], 2);
        assert_eq!(second.body["reason"], "InvalidSpec");
    }

    #[tokio::test]
    async fn failures_of_deleted_restreams_are_forgotten() {
        let (ctx, _server) = Context::test();
        let (store, mut writer) = kube::runtime::reflector::store::<Restream>();
        let kept = Restream::test();
        let mut deleted = Restream::tiered();
        deleted.metadata.name = Some("gone".into());
        writer.apply_watcher_event(&watcher::Event::Apply(kept.clone()));
        writer.apply_watcher_event(&watcher::Event::Apply(deleted.clone()));
        ctx.restreams.set(store).ok().unwrap();
        let error = || Error::Render(RenderError::InvalidConfig("x".into()));
        error_policy(Arc::new(kept.clone()), &error(), Arc::clone(&ctx));
        error_policy(Arc::new(deleted.clone()), &error(), Arc::clone(&ctx));
        assert_eq!(ctx.failures.lock().unwrap().len(), 2);

        writer.apply_watcher_event(&watcher::Event::Delete(deleted.clone()));
        let action = error_policy(Arc::new(kept.clone()), &error(), Arc::clone(&ctx));
        assert_eq!(
            action,
            Action::requeue(Duration::from_secs(10)),
            "the second failure"
        );
        let failures = ctx.failures.lock().unwrap();
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert_eq!(failures.get(&kept.uid().unwrap()), Some(&2));
    }

    #[tokio::test]
    async fn a_restream_recreated_under_the_same_name_backs_off_afresh() {
        let (ctx, _server) = Context::test();
        let error = Error::Render(RenderError::InvalidConfig("x".into()));
        let first = Restream::test();
        for _ in 0..3 {
            error_policy(Arc::new(first.clone()), &error, Arc::clone(&ctx));
        }
        let mut again = Restream::test();
        again.metadata.uid = Some("5b3c6f1e-0000-4000-8000-0000000000ff".into());
        assert_eq!(
            error_policy(Arc::new(again), &error, ctx),
            Action::requeue(Duration::from_secs(5))
        );
    }

    fn keda_restream() -> Restream {
        let mut restream: Restream =
            serde_yaml::from_str(include_str!("../yaml/instance-keda.yaml")).unwrap();
        restream.metadata.uid = Some("5b3c6f1e-0000-4000-8000-000000000004".into());
        restream.metadata.generation = Some(1);
        restream
    }

    #[tokio::test]
    async fn keda_from_an_operator_without_it_is_refused_naming_the_setting() {
        let (ctx, mut server) = Context::test();
        let reconciler = tokio::spawn(reconcile(Arc::new(keda_restream()), Arc::clone(&ctx)));
        let event = server.expect_event("media").await;
        let note = event.body["note"].as_str().unwrap();
        assert!(
            note.contains("spec.scaling.keda: the operator runs without KEDA support")
                && note.contains("keda.enabled=true"),
            "{note}"
        );
        let status = server
            .expect_apply(
                "/apis/restreamer.io/v1alpha1/namespaces/media/restreams/tv/status",
                serde_json::to_value(keda_restream()).unwrap(),
            )
            .await;
        assert_eq!(status.body["status"]["conditions"][2]["type"], "Degraded");
        assert_eq!(status.body["status"]["conditions"][2]["status"], "True");
        assert_eq!(reconciler.await.unwrap().unwrap(), Action::await_change());
    }

    #[tokio::test]
    async fn with_keda_the_scaled_object_is_applied_and_the_hpa_removed() {
        let (ctx, mut server) = Context::test_with_keda();
        let restream = keda_restream();
        let reconciler = tokio::spawn(reconcile(Arc::new(restream.clone()), Arc::clone(&ctx)));
        let mut requests = Vec::new();
        loop {
            let seen = server
                .next(|seen| match seen.method {
                    http::Method::DELETE => (
                        200,
                        serde_json::json!({"kind": "Status",
                        "apiVersion": "v1", "status": "Success", "code": 200}),
                    ),
                    http::Method::POST => (201, seen.body.clone()),
                    http::Method::GET => (
                        200,
                        owned_object_of(&seen.path, restream.metadata.uid.as_ref().unwrap()),
                    ),
                    _ if seen.path.ends_with("/status") => {
                        (200, serde_json::to_value(&restream).unwrap())
                    }
                    _ => (200, seen.body.clone()),
                })
                .await;
            let done = seen.method == http::Method::POST;
            requests.push(seen);
            if done {
                break;
            }
        }
        reconciler.await.unwrap().expect("reconcile succeeds");
        let calls: Vec<(&str, &str)> = requests
            .iter()
            .map(|s| (s.method.as_str(), s.path.as_str()))
            .collect();
        assert_eq!(
            calls,
            [
                ("PATCH", "/api/v1/namespaces/media/configmaps/tv-config"),
                ("PATCH", "/apis/apps/v1/namespaces/media/deployments/tv"),
                ("PATCH", "/api/v1/namespaces/media/services/tv"),
                (
                    "PATCH",
                    "/apis/keda.sh/v1alpha1/namespaces/media/scaledobjects/tv"
                ),
                (
                    "PATCH",
                    "/apis/policy/v1/namespaces/media/poddisruptionbudgets/tv"
                ),
                (
                    "GET",
                    "/apis/autoscaling/v2/namespaces/media/horizontalpodautoscalers/tv"
                ),
                (
                    "DELETE",
                    "/apis/autoscaling/v2/namespaces/media/horizontalpodautoscalers/tv"
                ),
                (
                    "PATCH",
                    "/apis/restreamer.io/v1alpha1/namespaces/media/restreams/tv/status"
                ),
                ("POST", "/apis/events.k8s.io/v1/namespaces/media/events"),
            ]
        );
        assert!(
            requests[1].body["spec"].get("replicas").is_none(),
            "KEDA owns the count"
        );
        let scaled = &requests[3].body;
        assert_eq!(scaled["kind"], "ScaledObject");
        assert_eq!(scaled["spec"]["triggers"][0]["type"], "prometheus");
    }

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let delays: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
    }
}

/// The RBAC of the chart (rendered in `deploy/`) must allow every call the
/// operator makes, and nothing more. The calls are recorded from the
/// running code against the mocked API server: the controller's watches,
/// a reconcile that applies everything, one refused as invalid, events
/// (first and repeated), and leader election.
#[cfg(test)]
mod rbac_tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::fixtures::Seen;

    type Permission = (String, String, String); // (apiGroup, resource, verb)

    /// What a request needs: its API group, resource (with subresource)
    /// and verb.
    fn permissions(seen: &Seen) -> Vec<Permission> {
        let parts: Vec<&str> = seen.path.trim_start_matches('/').split('/').collect();
        let (group, rest) = match parts[0] {
            "api" => ("", &parts[2..]),
            _ => (parts[1], &parts[3..]),
        };
        let rest = if rest.first() == Some(&"namespaces") && rest.len() > 2 {
            &rest[2..]
        } else {
            rest
        };
        let resource = match rest {
            [resource, _name, subresource] => format!("{resource}/{subresource}"),
            [resource, ..] => resource.to_string(),
            [] => panic!("no resource in {}", seen.path),
        };
        let named = rest.len() >= 2;
        let verbs: Vec<&str> = match seen.method.as_str() {
            "GET" if !named && seen.query.contains("watch=true") => vec!["watch"],
            "GET" if !named => vec!["list"],
            "GET" => vec!["get"],
            "POST" => vec!["create"],
            "PUT" => vec!["update"],
            // A server-side apply creates the object when it is missing.
            "PATCH" if seen.query.contains("fieldManager=") && !resource.contains('/') => {
                vec!["patch", "create"]
            }
            "PATCH" => vec!["patch"],
            "DELETE" => vec!["delete"],
            other => panic!("unexpected method {other}"),
        };
        verbs
            .into_iter()
            .map(|verb| (group.to_string(), resource.clone(), verb.to_string()))
            .collect()
    }

    fn granted(file: &str) -> BTreeSet<Permission> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(file);
        let text = std::fs::read_to_string(path).unwrap();
        let mut granted = BTreeSet::new();
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = <serde_yaml::Value as serde::Deserialize>::deserialize(document).unwrap();
            if !matches!(value["kind"].as_str(), Some("ClusterRole" | "Role")) {
                continue;
            }
            for rule in value["rules"].as_sequence().unwrap() {
                let list = |key: &str| -> Vec<String> {
                    rule[key]
                        .as_sequence()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_str().unwrap().to_string())
                        .collect()
                };
                for group in list("apiGroups") {
                    for resource in list("resources") {
                        for verb in list("verbs") {
                            granted.insert((group.clone(), resource.clone(), verb));
                        }
                    }
                }
            }
        }
        granted
    }

    /// Records every request of one reconcile, answering as the API
    /// server would: applies echoed (with the Restream's fields for its
    /// status), events created, deletions of what is already gone.
    async fn record_reconcile_on(
        ctx: Arc<Context>,
        mut server: crate::fixtures::ApiServerVerifier,
        restream: Restream,
    ) -> Vec<Seen> {
        let mut seen = Vec::new();
        let answer = serde_json::to_value(&restream).unwrap();
        let mut reconciler = tokio::spawn(reconcile(Arc::new(restream), ctx));
        loop {
            let answer = answer.clone();
            tokio::select! {
                biased;
                result = &mut reconciler => {
                    result.unwrap().expect("reconcile succeeds");
                    return seen;
                }
                request = server.next(move |request| match request.method {
                    http::Method::DELETE => (404, serde_json::json!({"kind": "Status",
                        "apiVersion": "v1", "code": 404, "status": "Failure", "reason": "NotFound"})),
                    http::Method::POST => (201, request.body.clone()),
                    http::Method::GET => (200, super::tests::owned_object(&request.path)),
                    _ => {
                        let mut reply = request.body.clone();
                        if let (Some(reply), Some(extra)) = (reply.as_object_mut(), answer.as_object()) {
                            for (key, value) in extra {
                                if key != "status" {
                                    reply.entry(key.clone()).or_insert(value.clone());
                                }
                            }
                        }
                        (200, reply)
                    }
                }) => seen.push(request),
            }
        }
    }

    /// The controller's watches: answers the lists with nothing and the
    /// watches with an empty stream, and records the first moments.
    async fn record_watches(keda: bool) -> Vec<Seen> {
        let (ctx, mut server) = if keda {
            Context::test_with_keda()
        } else {
            Context::test()
        };
        let mut seen = Vec::new();
        let controller = tokio::spawn(run(Arc::clone(&ctx)));
        let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
        while let Ok(request) = tokio::time::timeout_at(
            deadline,
            server.next(|_| (200, serde_json::json!({"apiVersion": "v1", "kind": "List",
                                                      "metadata": {"resourceVersion": "1"}, "items": []}))),
        )
        .await
        {
            seen.push(request);
        }
        controller.abort();
        seen
    }

    #[tokio::test]
    async fn rbac_covers_every_call_the_operator_makes_and_nothing_more() {
        let mut seen: Vec<Seen> = record_watches(false).await;

        // A reconcile that applies everything, tiers included (and
        // publishes an event): 3 origin objects, 5 edge objects, the
        // status, the event.
        let (ctx, server) = Context::test();
        seen.extend(record_reconcile_on(ctx, server, Restream::tiered()).await);
        // One without an autoscaler: the HPA is deleted.
        let mut fixed = Restream::test();
        fixed.spec.scaling.autoscaler = false;
        let (ctx, server) = Context::test();
        seen.extend(record_reconcile_on(ctx, server, fixed).await);

        // The same event twice: the second is a patch of the first.
        let (ctx, mut server) = Context::test();
        let publisher = tokio::spawn(async move {
            let restream = Restream::test();
            for _ in 0..2 {
                publish(&ctx, &restream, EventType::Warning, "InvalidSpec", "again")
                    .await
                    .unwrap();
            }
        });
        seen.push(server.next(|request| (201, request.body.clone())).await);
        seen.push(server.next(|request| (200, request.body.clone())).await);
        publisher.await.unwrap();

        // Leader election: create, then take over an expired lease.
        let (ctx, mut server) = Context::test();
        let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(ctx.client.clone(), "ops");
        let elector =
            tokio::spawn(async move { crate::leader::try_acquire(&leases, "lease", "me").await });
        seen.push(server.next(|_| (404, serde_json::json!({"kind": "Status", "apiVersion": "v1", "code": 404,
                                                             "status": "Failure", "reason": "NotFound"}))).await);
        seen.push(server.next(|request| (201, request.body.clone())).await);
        elector.await.unwrap().unwrap();
        let (ctx, mut server) = Context::test();
        let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(ctx.client.clone(), "ops");
        let elector =
            tokio::spawn(async move { crate::leader::try_acquire(&leases, "lease", "me").await });
        seen.push(server.next(|_| (200, serde_json::json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "lease", "resourceVersion": "1"},
            "spec": {"holderIdentity": "old", "leaseDurationSeconds": 1, "renewTime": "2020-01-01T00:00:00.000000Z"}}))).await);
        seen.push(server.next(|request| (200, request.body.clone())).await);
        elector.await.unwrap().unwrap();

        let needed: BTreeSet<Permission> = seen.iter().flat_map(permissions).collect();
        assert_exactly(
            &needed,
            &granted("deploy/restreamer.yaml"),
            "deploy/restreamer.yaml",
        );

        // With KEDA (deploy/keda/, the chart's keda.enabled): its watch,
        // a Restream scaled by KEDA (ScaledObject applied, HPA deleted),
        // and one that is not (its ScaledObject deleted).
        let mut with_keda = needed.clone();
        let mut keda_seen = record_watches(true).await;
        let restream: Restream =
            serde_yaml::from_str(include_str!("../yaml/instance-keda.yaml")).unwrap();
        let (ctx, server) = Context::test_with_keda();
        keda_seen.extend(record_reconcile_on(ctx, server, restream).await);
        let (ctx, server) = Context::test_with_keda();
        keda_seen.extend(record_reconcile_on(ctx, server, Restream::test()).await);
        assert!(keda_seen
            .iter()
            .any(|s| s.path == "/apis/keda.sh/v1alpha1/namespaces/media/scaledobjects/tv"));
        with_keda.extend(keda_seen.iter().flat_map(permissions));
        assert_exactly(
            &with_keda,
            &granted("deploy/keda/restreamer.yaml"),
            "deploy/keda/restreamer.yaml",
        );
    }

    fn assert_exactly(needed: &BTreeSet<Permission>, granted: &BTreeSet<Permission>, file: &str) {
        let missing: Vec<_> = needed.difference(granted).collect();
        let unused: Vec<_> = granted.difference(needed).collect();
        assert!(missing.is_empty(), "the RBAC of {file} lacks {missing:?}");
        assert!(
            unused.is_empty(),
            "the RBAC of {file} grants more than is used: {unused:?}"
        );
    }
}
