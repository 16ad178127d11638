//! Test helpers: example Restreams, a `Context` on a mocked API server, and
//! an `ApiServerVerifier` that checks each request the reconciler makes
//! (method, path, field manager, body) and answers as the API server would.

use std::sync::Arc;

use http::{Method, Request, Response};
use kube::client::Body;
use kube::Client;
use tower_test::mock::{self, Handle};

use crate::controller::{Context, FIELD_MANAGER};
use crate::crd::Restream;
use crate::metrics::Metrics;

impl Restream {
    /// The good example, as a user would apply it (with a generation).
    pub fn test() -> Restream {
        let mut restream: Restream =
            serde_yaml::from_str(include_str!("../yaml/instance-good.yaml")).unwrap();
        restream.metadata.generation = Some(3);
        restream.metadata.uid = Some("5b3c6f1e-0000-4000-8000-000000000001".into());
        restream
    }

    /// The tiered example.
    pub fn tiered() -> Restream {
        let mut restream: Restream =
            serde_yaml::from_str(include_str!("../yaml/instance-tiered.yaml")).unwrap();
        restream.metadata.generation = Some(1);
        restream.metadata.uid = Some("5b3c6f1e-0000-4000-8000-000000000003".into());
        restream
    }

    /// One whose data-plane config cannot work.
    pub fn illegal() -> Restream {
        let mut restream: Restream =
            serde_yaml::from_str(include_str!("../yaml/instance-illegal.yaml")).unwrap();
        restream.metadata.generation = Some(1);
        restream.metadata.uid = Some("5b3c6f1e-0000-4000-8000-000000000002".into());
        restream
    }
}

pub struct ApiServerVerifier(Handle<Request<Body>, Response<Body>>);

/// One request as the verifier saw it.
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub body: serde_json::Value,
}

impl ApiServerVerifier {
    /// Takes the next request, hands it to `answer` for a reply, and
    /// returns it for the test to check.
    pub async fn next(&mut self, answer: impl FnOnce(&Seen) -> (u16, serde_json::Value)) -> Seen {
        let (request, send) =
            tokio::time::timeout(std::time::Duration::from_secs(5), self.0.next_request())
                .await
                .expect("the reconciler made no further request")
                .expect("the client is gone");
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or_default().to_string();
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("request bodies are JSON")
        };
        let seen = Seen {
            method,
            path,
            query,
            body,
        };
        let (status, reply) = answer(&seen);
        send.send_response(
            Response::builder()
                .status(status)
                .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                .unwrap(),
        );
        seen
    }

    /// Expects a server-side apply of `path` by our field manager, and
    /// answers with the applied object (plus `extra` merged in).
    pub async fn expect_apply(&mut self, path: &str, extra: serde_json::Value) -> Seen {
        let seen = self
            .next(|seen| {
                let mut reply = seen.body.clone();
                merge(&mut reply, &extra);
                (200, reply)
            })
            .await;
        assert_eq!(seen.method, Method::PATCH, "{}", seen.path);
        assert_eq!(seen.path, path);
        assert!(
            seen.query
                .contains(&format!("fieldManager={FIELD_MANAGER}"))
                && seen.query.contains("force=true"),
            "not a forced server-side apply by our field manager: {}",
            seen.query
        );
        seen
    }

    /// Expects an event to be published; returns it.
    pub async fn expect_event(&mut self, namespace: &str) -> Seen {
        let seen = self.next(|seen| (201, seen.body.clone())).await;
        assert_eq!(seen.method, Method::POST);
        assert_eq!(
            seen.path,
            format!("/apis/events.k8s.io/v1/namespaces/{namespace}/events")
        );
        seen
    }
}

/// Adds the keys of `extra` that `target` lacks (what the API server
/// knows besides what was applied).
fn merge(target: &mut serde_json::Value, extra: &serde_json::Value) {
    if let (Some(target), Some(extra)) = (target.as_object_mut(), extra.as_object()) {
        for (key, value) in extra {
            target.entry(key.clone()).or_insert_with(|| value.clone());
        }
    }
}

impl Context {
    /// A context whose client talks to a verifier instead of a cluster.
    pub fn test() -> (Arc<Context>, ApiServerVerifier) {
        Context::test_with(false)
    }

    /// The same, for an operator installed with KEDA support.
    pub fn test_with_keda() -> (Arc<Context>, ApiServerVerifier) {
        Context::test_with(true)
    }

    fn test_with(keda: bool) -> (Arc<Context>, ApiServerVerifier) {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let reporter = kube::runtime::events::Reporter {
            controller: "restreamer-operator".into(),
            instance: Some("test".into()),
        };
        let ctx = Context::new(
            client,
            Arc::new(Metrics::default()),
            reporter,
            "restreamer:test".into(),
            keda,
        );
        (Arc::new(ctx), ApiServerVerifier(handle))
    }
}
