//! The document of a static resource: one local file, read when asked, or
//! one remote document fetched and cached in memory for `cache` seconds.
//! A reload keeps the cache of a resource whose source is unchanged.
//!
//! Each document carries its `Content-Type` (from the file name, or the
//! remote's own) and an `ETag` (a digest of the body); answering requests
//! with it is [`crate::front::static_files`]' business.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderValue};
use tokio::sync::Mutex;

use crate::config::{short_digest, StaticSource};
use crate::http_client::http_client;

#[derive(Debug)]
pub struct StaticResource {
    source: StaticSource,
    cache_for: Duration,
    /// The last remote fetch (remote documents only).
    cached: Mutex<Option<Document>>,
}

/// A document as served.
#[derive(Debug, Clone)]
pub struct Document {
    pub body: Bytes,
    pub content_type: HeaderValue,
    pub etag: HeaderValue,
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

    /// Where the document comes from.
    /// How long a fetched document is kept (sent as `max-age`).
    pub fn cache_for(&self) -> Duration {
        self.cache_for
    }

    pub fn source(&self) -> &StaticSource {
        &self.source
    }

    /// The document now: the file as it is, or the cached remote one
    /// (fetched again once older than `cache`).
    pub async fn document(&self) -> anyhow::Result<Document> {
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
                let response = http_client(None)?
                    .get(url.clone())
                    .timeout(Duration::from_secs(30))
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
        let tag = short_digest(&body);
        Document {
            body,
            content_type,
            etag: HeaderValue::from_str(&format!("\"{tag}\"")).expect("hex is a valid header"),
            fetched: Instant::now(),
        }
    }
}
