//! The running proxy: the state that requests are answered from, built from
//! a validated config and rebuilt, without dropping clients, when the
//! config changes.
//!
//! A config becomes a [`Generation`] ([`generation`]): the routes (what is
//! served at which path, config-to-routes) and the streams. Requests read
//! the current generation; a reload builds the next one and swaps it in.
//! Streams outlive generations ([`streams`]: the stream lifecycle): a
//! stream whose upstreams are unchanged is carried over as it is, hub,
//! source and clients, and takes its other settings (buffers, timeouts,
//! `flushms`) in place: new clients and the source's next connection use
//! them. A stream whose upstreams changed keeps its hub and clients and
//! gets a new source; a removed stream is closed, which ends its clients;
//! a new stream starts.
//!
//! Around the generation, one module each: [`reload`] (watching the config
//! file), [`limit`] (soft and hard connection limits, and the signal that
//! the last client has gone), [`metrics`] (Prometheus), [`rates`] (the
//! per-second rates of the statistics API), [`notifications`] (limit
//! events sent to URLs, fed a `watch` of the config), [`static_resource`]
//! (static documents and their cache) and [`logging`] (JSON logs and the
//! access log). Serving, and the server's lifecycle, are the front's
//! ([`crate::front`]).
//!
//! This folder may use the streams ([`crate::stream`]), the config
//! ([`crate::config`]) and the shared HTTP clients ([`crate::http_client`]),
//! never the HTTP front, which sits above it.

pub mod generation;
pub mod limit;
pub mod logging;
pub mod metrics;
pub mod notifications;
pub mod rates;
pub mod reload;
pub mod static_resource;
pub mod streams;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{error, info, warn};

pub use self::generation::{Api, Generation, Route, Target};
use self::limit::ConnectionLimits;
use self::metrics::{Metrics, Totals};
use self::rates::RateWindow;
pub use self::streams::Stream;
use crate::config::{config_hash, Config, ValidConfig};

/// The whole proxy: current generation, limits, metrics.
#[derive(Debug)]
pub struct Proxy {
    /// The generation in force; its receivers are the statistics sampler.
    current: watch::Sender<Arc<Generation>>,
    pub limits: ConnectionLimits,
    pub metrics: Metrics,
    pub rates: Arc<RateWindow>,
    /// SIGTERM received: not ready, no new stream clients.
    draining: AtomicBool,
    /// Where the config was loaded from, for reloads.
    config_path: Option<PathBuf>,
    /// Reloads are applied one at a time.
    apply_lock: Mutex<()>,
    /// The config in force, for those who only need the config.
    config: watch::Sender<Arc<ValidConfig>>,
}

impl Proxy {
    /// Starts a proxy on a validated config: its streams' sources, the
    /// notifications and the statistics sampler.
    pub fn start(config: ValidConfig, config_path: Option<PathBuf>) -> Arc<Proxy> {
        let (limit_events, limit_rx) = tokio::sync::mpsc::channel(64);
        let (config_tx, config_rx) = watch::channel(Arc::new(config.clone()));
        // Empty until `apply` below fills it in.
        let (current, generations) =
            watch::channel(Arc::new(Generation::empty(Arc::new(config.clone()))));
        let rates = Arc::new(RateWindow::new(Duration::from_secs(5)));
        let proxy = Arc::new(Proxy {
            current,
            limits: ConnectionLimits::new(
                config.fullconnections,
                config.maxconnections,
                Some(limit_events),
            ),
            metrics: Metrics::new(),
            rates: Arc::clone(&rates),
            draining: AtomicBool::new(false),
            config_path,
            apply_lock: Mutex::new(()),
            config: config_tx,
        });
        proxy.apply(config);
        tokio::spawn(notifications::run(config_rx, limit_rx));
        tokio::spawn(rates::sample(rates, generations));
        proxy
    }

    /// The generation requests are answered from now.
    pub fn current(&self) -> Arc<Generation> {
        Arc::clone(&self.current.borrow())
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

        let streams = streams::carry_over(&config, &old.streams);
        let generation = Generation::new(Arc::clone(&config), streams, &old);
        self.limits
            .set(config.fullconnections, config.maxconnections);
        self.limits.set_per_client(config.maxperclient);
        info!(
            event = "config-applied",
            hash = %generation.hash,
            streams = generation.streams.len(),
            resources = generation.routes.len(),
            "configuration in force"
        );
        self.config.send_replace(config);
        self.current.send_replace(Arc::new(generation));
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
        self.current().stream_totals()
    }
}
