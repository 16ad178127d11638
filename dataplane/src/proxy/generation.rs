//! A generation: what one config serves. The config, its hash, the
//! streams (carried over from the previous generation by
//! [`super::streams`]) and the routes: what is served at each path and who
//! may see it. Requests are answered from the current generation; a reload
//! builds the next one and swaps it in.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tracing::warn;

use super::metrics::Totals;
use super::static_resource::StaticResource;
use super::streams::Stream;
use crate::config::{config_hash, ApiTarget, Authenticator, Served, ValidConfig};

/// What one config serves.
#[derive(Debug)]
pub struct Generation {
    pub config: Arc<ValidConfig>,
    /// SHA-256 of the config, shown in metrics and logs.
    pub hash: String,
    pub routes: HashMap<String, Route>,
    /// Streams by serve path.
    pub streams: HashMap<String, Arc<Stream>>,
}

/// What is served at one path, and who may see it.
#[derive(Debug)]
pub struct Route {
    pub auth: Option<Authenticator>,
    pub target: Target,
}

#[derive(Debug)]
pub enum Target {
    Stream {
        stream: Arc<Stream>,
        /// Sent to each new client before the live packets.
        preamble: Option<Bytes>,
    },
    Static(Arc<StaticResource>),
    Api(Api),
}

/// A built-in API, with the stream that `check` and `control` are about.
#[derive(Debug)]
pub enum Api {
    Health,
    Statistics,
    Check(Arc<Stream>),
    Control(Arc<Stream>),
    Prometheus,
}

impl Generation {
    /// A generation that serves nothing yet.
    pub fn empty(config: Arc<ValidConfig>) -> Generation {
        Generation {
            config,
            hash: String::new(),
            routes: HashMap::new(),
            streams: HashMap::new(),
        }
    }

    /// The generation of `config`, serving `streams`; the caches of static
    /// resources that `old` serves the same way are kept.
    pub fn new(
        config: Arc<ValidConfig>,
        streams: HashMap<String, Arc<Stream>>,
        old: &Generation,
    ) -> Generation {
        let mut routes = HashMap::new();
        for (resource, parsed) in config.parsed_resources() {
            let target = match &parsed.serves {
                Served::Stream { .. } => Target::Stream {
                    stream: Arc::clone(&streams[&resource.serve]),
                    preamble: read_preamble(&resource.preamble),
                },
                Served::Static(source) => {
                    let cache_for = Duration::from_secs(resource.cache);
                    let reused = match old.routes.get(&resource.serve).map(|r| &r.target) {
                        Some(Target::Static(existing)) if existing.is_same(source, cache_for) => {
                            Some(Arc::clone(existing))
                        }
                        _ => None,
                    };
                    Target::Static(reused.unwrap_or_else(|| {
                        Arc::new(StaticResource::new(source.clone(), cache_for))
                    }))
                }
                Served::Api(target) => Target::Api(match target {
                    ApiTarget::Health => Api::Health,
                    ApiTarget::Statistics => Api::Statistics,
                    ApiTarget::Prometheus => Api::Prometheus,
                    ApiTarget::Check { stream } => Api::Check(Arc::clone(&streams[stream])),
                    ApiTarget::Control { stream } => Api::Control(Arc::clone(&streams[stream])),
                }),
            };
            let auth = parsed.auth.clone();
            routes.insert(resource.serve.clone(), Route { auth, target });
        }
        Generation {
            hash: config_hash(&config),
            config,
            routes,
            streams,
        }
    }

    /// The totals of every stream, by serve path.
    pub fn stream_totals(&self) -> HashMap<String, Totals> {
        self.streams
            .iter()
            .map(|(path, stream)| (path.clone(), Totals::of(&stream.hub.counters)))
            .collect()
    }
}

fn read_preamble(path: &str) -> Option<Bytes> {
    if path.is_empty() {
        return None;
    }
    match std::fs::read(path) {
        Ok(data) => Some(data.into()),
        Err(e) => {
            warn!(event = "error", preamble = path, error = %e, "cannot read preamble: clients get none");
            None
        }
    }
}
