//! Static resources: one local file, or one remote document cached in
//! memory for `cache` seconds, served at one exact path.
//!
//! A static resource serves exactly the file or URL of its config entry,
//! whatever the request path carries, so no request can reach another file
//! (no traversal) or make the proxy fetch another URL (no SSRF).
//! Responses carry `Content-Type` (from the file name, or the remote's own),
//! `Content-Length`, and an `ETag` that conditional requests
//! (`If-None-Match`) are answered `304 Not Modified` against. The document
//! itself, and the cache, are the running proxy's
//! ([`crate::proxy::static_resource`]).

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use tracing::warn;

use crate::config::StaticSource;
use crate::front::response::{text, Body};
use crate::proxy::static_resource::StaticResource;

/// Answers a request for a static resource.
pub async fn respond<B>(resource: &StaticResource, request: &Request<B>) -> Response<Body> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "405 method not allowed\n");
    }
    let document = match resource.document().await {
        Ok(document) => document,
        Err(error) => {
            warn!(event = "static-error", error = %error, "cannot serve static resource");
            return match resource.source() {
                StaticSource::File(_) => text(StatusCode::NOT_FOUND, "404 not found\n"),
                StaticSource::Remote(_) => text(StatusCode::BAD_GATEWAY, "502 bad gateway\n"),
            };
        }
    };
    let not_modified = request
        .headers()
        .get(header::IF_NONE_MATCH)
        .is_some_and(|tags| {
            tags.as_bytes() == b"*" || tags.to_str().is_ok_and(|t| etag_listed(t, &document.etag))
        });
    let builder = Response::builder()
        .header(header::ETAG, document.etag.clone())
        // As the original, whatever the source: how long the answer may be
        // kept (0 = revalidate every time).
        .header(
            header::CACHE_CONTROL,
            format!("max-age={}", resource.cache_for().as_secs()),
        )
        .header(header::CONTENT_TYPE, document.content_type.clone());
    let response = if not_modified {
        builder
            .status(StatusCode::NOT_MODIFIED)
            .body(Empty::new().boxed())
    } else if request.method() == Method::HEAD {
        builder
            .header(header::CONTENT_LENGTH, document.body.len())
            .body(Empty::new().boxed())
    } else {
        builder.body(Full::new(document.body).boxed())
    };
    response.expect("headers are valid")
}

fn etag_listed(tags: &str, etag: &HeaderValue) -> bool {
    tags.split(',')
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag.as_bytes() == etag.as_bytes())
}
