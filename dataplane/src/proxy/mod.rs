//! The running proxy: the state that requests are answered from, built from
//! a [`Config`] and rebuilt, without dropping clients, when the config
//! changes.
//!
//! A config becomes a [`Generation`]: the routes (what is served at which
//! path) and the streams. Requests read the current generation; a reload
//! builds the next one and swaps it in. Streams outlive generations: a
//! stream whose upstreams are unchanged is carried over as it is, hub,
//! source and clients, and takes its other settings (buffers, timeouts,
//! `flushms`) in place: new clients and the source's next connection use
//! them. A stream whose upstreams changed keeps its hub and clients and
//! gets a new source; a removed stream is closed, which ends its clients;
//! a new stream starts.
//!
//! Around the generation, one module each: [`reload`] (watching the config
//! file), [`limit`] (soft and hard connection limits), [`metrics`]
//! (statistics and Prometheus), [`notifications`] (limit events sent to
//! URLs, fed a `watch` of the config), [`static_resource`] (static
//! documents and their cache) and [`logging`] (JSON logs and the access
//! log).
//!
//! This folder may use the streams ([`crate::stream`]) and the config
//! ([`crate::config`]), never the HTTP front, which sits above it.

pub mod health_metrics;
pub mod limit;
pub mod logging;
pub mod metrics;
pub mod notifications;
pub mod reload;
pub mod static_resource;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use self::limit::ConnectionLimits;
use self::metrics::{Metrics, RateWindow, Totals};
use self::static_resource::StaticResource;
use crate::config::{ApiTarget, Authenticator, Config, Resource, Served, ValidConfig};
use crate::stream::align::PACKET_SIZE;
use crate::stream::hub::Hub;
use crate::stream::instant::InstantStart;
use crate::stream::source::{self, SourceSettings, Upstream};

/// The whole proxy: current generation, limits, metrics.
#[derive(Debug)]
pub struct Proxy {
    current: RwLock<Arc<Generation>>,
    pub limits: ConnectionLimits,
    pub metrics: Metrics,
    pub rates: RateWindow,
    /// SIGTERM received: not ready, no new stream clients.
    draining: AtomicBool,
    /// Where the config was loaded from, for reloads.
    config_path: Option<PathBuf>,
    /// Reloads are applied one at a time.
    apply_lock: Mutex<()>,
    /// The config in force, for those who only need the config.
    config: watch::Sender<Arc<ValidConfig>>,
}

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

/// A stream: its hub, and the source task feeding it.
#[derive(Debug)]
pub struct Stream {
    pub path: String,
    pub hub: Arc<Hub>,
    source: Mutex<RunningSource>,
    /// Taken offline by the control API.
    offline: AtomicBool,
}

#[derive(Debug)]
struct RunningSource {
    upstreams: Vec<Upstream>,
    /// The settings the source reads at its next connection.
    settings: watch::Sender<SourceSettings>,
    task: JoinHandle<()>,
}

impl Stream {
    fn start(
        path: &str,
        upstreams: Vec<Upstream>,
        settings: SourceSettings,
        queue_packets: usize,
    ) -> Arc<Stream> {
        let hub = Hub::new(queue_packets);
        let settings = watch::Sender::new(settings);
        let task = spawn_source(path, &upstreams, &settings, &hub);
        Arc::new(Stream {
            path: path.to_string(),
            hub,
            source: Mutex::new(RunningSource {
                upstreams,
                settings,
                task,
            }),
            offline: AtomicBool::new(false),
        })
    }

    /// Switches to a new source if the upstreams changed (clients stay);
    /// other settings apply in place, from the source's next connection,
    /// the content checks (`contenttimeout`, `ccerrorlimit`) at once.
    fn update(&self, upstreams: Vec<Upstream>, settings: SourceSettings) {
        self.hub.set_health_settings(settings.health());
        let mut source = self.source.lock().unwrap();
        source.settings.send_if_modified(|current| {
            let changed = *current != settings;
            *current = settings;
            changed
        });
        if source.upstreams == upstreams {
            return;
        }
        source.task.abort();
        self.hub.set_upstream_connected(false);
        source.task = spawn_source(&self.path, &upstreams, &source.settings, &self.hub);
        source.upstreams = upstreams;
        info!(event = "stream-updated", stream = %self.path, "upstreams changed: switching source, clients stay");
    }

    /// Stops the source and ends every client.
    fn stop(&self) {
        self.source.lock().unwrap().task.abort();
        self.hub.set_upstream_connected(false);
        self.hub.close();
    }

    /// Takes the stream offline (its clients are disconnected, new ones
    /// refused) or back online.
    pub fn set_offline(&self, offline: bool) {
        self.offline.store(offline, Ordering::Relaxed);
        if offline {
            self.hub.disconnect_all();
        }
        info!(event = if offline { "stream-offline" } else { "stream-online" }, stream = %self.path);
    }

    /// The stream's upstream URLs (as logged: passwords masked).
    pub fn upstream_urls(&self) -> Vec<String> {
        let source = self.source.lock().unwrap();
        source.upstreams.iter().map(|u| u.to_string()).collect()
    }

    /// Whether new clients can be served: upstream connected, not offline.
    pub fn is_live(&self) -> bool {
        self.hub.upstream_connected()
            && !self.offline.load(Ordering::Relaxed)
            && !self.hub.is_closed()
    }
}

fn spawn_source(
    path: &str,
    upstreams: &[Upstream],
    settings: &watch::Sender<SourceSettings>,
    hub: &Arc<Hub>,
) -> JoinHandle<()> {
    tokio::spawn(source::run(
        path.to_string(),
        upstreams.to_vec(),
        settings.subscribe(),
        Arc::clone(hub),
    ))
}

impl Proxy {
    /// Starts a proxy on a validated config: its streams' sources, the
    /// notifications and the statistics sampler.
    pub fn start(config: ValidConfig, config_path: Option<PathBuf>) -> Arc<Proxy> {
        let (limit_events, limit_rx) = tokio::sync::mpsc::channel(64);
        let (config_tx, config_rx) = watch::channel(Arc::new(config.clone()));
        let proxy = Arc::new(Proxy {
            // Empty until `apply` below fills it in.
            current: RwLock::new(Arc::new(Generation {
                config: Arc::new(config.clone()),
                hash: String::new(),
                routes: HashMap::new(),
                streams: HashMap::new(),
            })),
            limits: ConnectionLimits::new(
                config.fullconnections,
                config.maxconnections,
                Some(limit_events),
            ),
            metrics: Metrics::new(),
            rates: RateWindow::new(Duration::from_secs(5)),
            draining: AtomicBool::new(false),
            config_path,
            apply_lock: Mutex::new(()),
            config: config_tx,
        });
        proxy.apply(config);
        tokio::spawn(notifications::run(config_rx, limit_rx));
        tokio::spawn(sample_rates(Arc::downgrade(&proxy)));
        proxy
    }

    /// The generation requests are answered from now.
    pub fn current(&self) -> Arc<Generation> {
        Arc::clone(&self.current.read().unwrap())
    }

    /// Makes `config` the one in force. Streams are carried over, switched,
    /// stopped or started as their definitions say (see the module docs).
    pub fn apply(&self, config: ValidConfig) {
        let _one_at_a_time = self.apply_lock.lock().unwrap();
        for warning in config.warnings() {
            warn!(event = "config-warning", key = %warning.path, warning = %warning.message, "configuration warning");
        }
        let old = self.current();
        let config = Arc::new(config);

        let mut streams = HashMap::new();
        for (resource, parsed) in config.parsed_resources() {
            let Served::Stream { upstreams } = &parsed.serves else {
                continue;
            };
            let upstreams = upstreams.clone();
            let settings = source_settings(&config, resource);
            let stream = match old.streams.get(&resource.serve) {
                Some(stream) => {
                    stream.update(upstreams, settings);
                    stream.hub.set_queue_packets(config.outputbuffer);
                    Arc::clone(stream)
                }
                None => Stream::start(&resource.serve, upstreams, settings, config.outputbuffer),
            };
            stream.hub.set_instant_start(InstantStart {
                enabled: resource.instantstart.unwrap_or(config.instantstart),
                limit_bytes: config.instantstartlimit.saturating_mul(1 << 20),
                stream: resource.serve.clone(),
            });
            streams.insert(resource.serve.clone(), stream);
        }
        for (path, stream) in &old.streams {
            if !streams.contains_key(path) {
                info!(event = "stream-removed", stream = %path, "stream removed: its clients are disconnected");
                stream.stop();
            }
        }

        let mut routes = HashMap::new();
        for (resource, parsed) in config.parsed_resources() {
            let target = match &parsed.serves {
                Served::Stream { .. } => Target::Stream {
                    stream: Arc::clone(&streams[&resource.serve]),
                    preamble: read_preamble(&resource.preamble),
                },
                Served::Static(source) => {
                    let cache_for = Duration::from_secs(resource.cache);
                    // Keep the cache of an unchanged static resource.
                    let reused =
                        old.routes
                            .get(&resource.serve)
                            .and_then(|route| match &route.target {
                                Target::Static(existing) if existing.is_same(source, cache_for) => {
                                    Some(Arc::clone(existing))
                                }
                                _ => None,
                            });
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

        self.limits
            .set(config.fullconnections, config.maxconnections);
        self.limits.set_per_client(config.maxperclient);
        let hash = config_hash(&config);
        info!(
            event = "config-applied",
            hash = %hash,
            streams = streams.len(),
            resources = routes.len(),
            "configuration in force"
        );
        self.config.send_replace(Arc::clone(&config));
        *self.current.write().unwrap() = Arc::new(Generation {
            config,
            hash,
            routes,
            streams,
        });
    }

    /// Reloads the config file. An invalid file is rejected with a log line
    /// and a failure count; the last good config stays in force.
    pub fn reload(&self) -> bool {
        let Some(path) = &self.config_path else {
            return false;
        };
        match Config::load(path) {
            Ok(config) => {
                if config_hash(&config) == self.current().hash {
                    return false;
                }
                self.apply(config);
                self.metrics.config_reloads.inc();
                info!(event = "config-reload", path = %path.display(), "configuration reloaded");
                true
            }
            Err(errors) => {
                self.metrics.config_reload_failures.inc();
                error!(
                    event = "config-reload-failed",
                    path = %path.display(),
                    error = %errors.to_string().replace('\n', "; "),
                    "invalid configuration rejected: the last good one stays in force"
                );
                false
            }
        }
    }

    pub fn config_path(&self) -> Option<&PathBuf> {
        self.config_path.as_ref()
    }

    /// From now on: not ready, no new stream clients (shutdown has begun).
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Closes every stream, which ends its clients.
    pub fn stop_streams(&self) {
        for stream in self.current().streams.values() {
            stream.stop();
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Ready for new viewers: not draining and below the hard limit.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if self.is_draining() {
            Err("draining")
        } else if self.limits.is_at_max() {
            Err("at the hard connection limit")
        } else {
            Ok(())
        }
    }

    /// The totals of every current stream, by serve path.
    pub fn stream_totals(&self) -> HashMap<String, Totals> {
        self.current()
            .streams
            .iter()
            .map(|(path, stream)| (path.clone(), Totals::of(&stream.hub.counters)))
            .collect()
    }
}

/// What a stream's source needs from the config besides its upstreams.
fn source_settings(config: &Config, resource: &Resource) -> SourceSettings {
    SourceSettings {
        connect_timeout: config.timeout(),
        read_timeout: config.readtimeout(),
        reconnect: config.reconnect(),
        flush_interval: config.flush_interval(),
        max_batch_packets: (config.outputbuffer / 4).clamp(1, 1024),
        input_buffer_bytes: config.inputbuffer * PACKET_SIZE,
        mru: if resource.mru > 0 {
            resource.mru
        } else {
            65536
        },
        interface: resource.clientinterface.clone(),
        content_timeout: config.content_timeout(resource),
        cc_error_limit: config.cc_error_limit(resource),
    }
}

/// Samples the stream totals once a second for the statistics API's rates.
async fn sample_rates(proxy: std::sync::Weak<Proxy>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(proxy) = proxy.upgrade() else { return };
        if !proxy.current().config.nostats {
            proxy.rates.sample(&proxy.stream_totals());
        }
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

/// The first 16 hex digits of the SHA-256 of the config's canonical JSON.
pub fn config_hash(config: &Config) -> String {
    let json = serde_json::to_vec(config).expect("a config serialises");
    Sha256::digest(&json)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}
