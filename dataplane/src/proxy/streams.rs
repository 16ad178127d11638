//! The stream lifecycle: a stream is its hub and the source task feeding
//! it, and lives across generations. On each config, [`carry_over`] keeps
//! a stream whose upstreams are unchanged as it is (hub, source, clients)
//! and hands its source the new settings, which its next connection uses;
//! it gives a stream whose upstreams changed a new source (its hub and
//! clients stay), closes a removed stream (which ends its clients) and
//! starts a new one.
//!
//! The mapping from the config to what a source needs
//! ([`SourceSettings`]) is here too: the stream folder knows nothing of
//! the config file.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

use crate::config::{Config, Resource, Served, Upstream, ValidConfig};
use crate::stream::align::PACKET_SIZE;
use crate::stream::hub::Hub;
use crate::stream::instant::InstantStart;
use crate::stream::source::{self, SourceSettings};

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

/// The streams of `config`, by serve path: those of `old` carried over
/// (switched to a new source where their definition changed), new ones
/// started; streams of `old` that `config` no longer has are stopped.
pub fn carry_over(
    config: &ValidConfig,
    old: &HashMap<String, Arc<Stream>>,
) -> HashMap<String, Arc<Stream>> {
    let mut streams = HashMap::new();
    for (resource, parsed) in config.parsed_resources() {
        let Served::Stream { upstreams } = &parsed.serves else {
            continue;
        };
        let upstreams = upstreams.clone();
        let settings = source_settings(config, resource);
        let stream = match old.get(&resource.serve) {
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
        stream
            .hub
            .set_stall_limit(std::time::Duration::from_secs(config.stalltimeout));
        streams.insert(resource.serve.clone(), stream);
    }
    for (path, stream) in old {
        if !streams.contains_key(path) {
            info!(event = "stream-removed", stream = %path, "stream removed: its clients are disconnected");
            stream.stop();
        }
    }
    streams
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
    pub fn stop(&self) {
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
