//! Static resources: one local file, or one remote document cached in
//! memory for `cache` seconds, served at one exact path.
//!
//! A static resource serves exactly the file or URL of its config entry,
//! whatever the request path carries, so no request can reach another file
//! (no traversal) or make the proxy fetch another URL (no SSRF).
//! Responses carry `Content-Type` (from the file name, or the remote's own),
//! `Content-Length`, and an `ETag` that conditional requests
//! (`If-None-Match`) are answered `304 Not Modified` against.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use tracing::warn;

use crate::config::StaticSource;
use crate::front::serve::{text, Body};

#[derive(Debug)]
pub struct StaticResource {
    source: StaticSource,
    cache_for: Duration,
    /// The last remote fetch (remote documents only).
    cached: Mutex<Option<Document>>,
}

#[derive(Debug, Clone)]
struct Document {
    body: Bytes,
    content_type: HeaderValue,
    etag: HeaderValue,
    fetched: Instant,
}

impl StaticResource {
    /// A resource serving `source`; a remote document is cached for
    /// `cache_for`.
    pub fn new(source: StaticSource, cache_for: Duration) -> StaticResource {
        StaticResource {
            source,
            cache_for,
            cached: Mutex::new(None),
        }
    }

    /// Whether this serves the same document the same way (so a reload can
    /// keep its cache).
    pub fn is_same(&self, source: &StaticSource, cache_for: Duration) -> bool {
        self.source == *source && self.cache_for == cache_for
    }

    pub async fn respond<B>(&self, request: &Request<B>) -> Response<Body> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "405 method not allowed\n");
        }
        let document = match self.document().await {
            Ok(document) => document,
            Err(error) => {
                warn!(event = "static-error", error = %error, "cannot serve static resource");
                return match self.source {
                    StaticSource::File(_) => text(StatusCode::NOT_FOUND, "404 not found\n"),
                    StaticSource::Remote(_) => text(StatusCode::BAD_GATEWAY, "502 bad gateway\n"),
                };
            }
        };
        let not_modified = request
            .headers()
            .get(header::IF_NONE_MATCH)
            .is_some_and(|tags| {
                tags.as_bytes() == b"*"
                    || tags.to_str().is_ok_and(|t| etag_listed(t, &document.etag))
            });
        let builder = Response::builder()
            .header(header::ETAG, document.etag.clone())
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

    async fn document(&self) -> anyhow::Result<Document> {
        match &self.source {
            StaticSource::File(path) => {
                let body = Bytes::from(tokio::fs::read(path).await?);
                let content_type = mime_guess::from_path(path).first_or_octet_stream();
                Ok(Document::new(
                    body,
                    HeaderValue::from_str(content_type.as_ref())?,
                ))
            }
            StaticSource::Remote(url) => {
                // One fetch at a time: concurrent requests wait for it.
                let mut cached = self.cached.lock().await;
                if let Some(document) = cached.as_ref() {
                    if document.fetched.elapsed() < self.cache_for {
                        return Ok(document.clone());
                    }
                }
                let response = reqwest::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()?
                    .get(url.clone())
                    .send()
                    .await
                    .map_err(|e| e.without_url())?;
                if !response.status().is_success() {
                    anyhow::bail!(
                        "{} answered {}",
                        url.host_str().unwrap_or_default(),
                        response.status()
                    );
                }
                let content_type = response
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .cloned()
                    .unwrap_or(HeaderValue::from_static("application/octet-stream"));
                let body = response.bytes().await.map_err(|e| e.without_url())?;
                let document = Document::new(body, content_type);
                *cached = Some(document.clone());
                Ok(document)
            }
        }
    }
}

impl Document {
    fn new(body: Bytes, content_type: HeaderValue) -> Document {
        let digest = Sha256::digest(&body);
        let tag: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        Document {
            body,
            content_type,
            etag: HeaderValue::from_str(&format!("\"{tag}\"")).expect("hex is a valid header"),
            fetched: Instant::now(),
        }
    }
}

fn etag_listed(tags: &str, etag: &HeaderValue) -> bool {
    tags.split(',')
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag.as_bytes() == etag.as_bytes())
}
