//! Sources: fetching a stream from its upstreams and feeding its hub.
//!
//! A stream has one or more upstream URLs. Its source task shuffles them
//! once, then connects to them round-robin: the first that connects is read
//! until it fails, then the next one is tried, and so on, one round of
//! attempts at most every `reconnect` seconds. While no upstream is
//! connected the hub is marked offline, which refuses new clients, but the
//! connected clients stay: they see a gap in the stream, not a disconnect.
//!
//! Reading is [`pump`]: read → [`Aligner`] → (pacing, for a file played in
//! real time) → publish to the [`Hub`] in batches of at most `flushms`.
//!
//! [`Upstream`] (the parsed URL) comes from the validated config; the
//! per-scheme connections are in `connection.rs`, real-time pacing in
//! `pacing.rs`.

mod connection;
mod pacing;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::seq::SliceRandom;
use tokio::sync::watch;
use tokio::time::{sleep_until, timeout, timeout_at, Instant};
use tracing::{debug, info, warn};

use crate::stream::align::{Aligner, PACKET_SIZE};
use crate::stream::hub::Hub;
use crate::stream::inspect::health::HealthSettings;

use crate::config::{Upstream, UpstreamKind};
pub use connection::Connection;
pub use pacing::Pacer;

/// How long a network upstream may take to connect, or to send its response
/// head (HTTP), when `timeout` and `readtimeout` are 0: no attempt waits
/// forever, so the next upstream is always tried.
pub const DEFAULT_ATTEMPT_LIMIT: Duration = Duration::from_secs(10);

/// Everything a source needs besides its URLs (the proxy fills it in from
/// the config).
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSettings {
    pub connect_timeout: Option<Duration>,
    pub read_timeout: Option<Duration>,
    /// `None`: stay offline after the first loss.
    pub reconnect: Option<Duration>,
    pub flush_interval: Duration,
    /// Packets per publish at most (a client's queue must hold several).
    pub max_batch_packets: usize,
    /// Input buffer in bytes (kernel receive buffer of datagram sockets).
    pub input_buffer_bytes: usize,
    /// Largest datagram expected, in bytes.
    pub mru: usize,
    /// Interface to join multicast groups on.
    pub interface: String,
    /// No PAT/PMT or elementary-stream packets for this long: content lost.
    pub content_timeout: Option<Duration>,
    /// Continuity errors within 10 s that count as content lost.
    pub cc_error_limit: Option<u64>,
}

impl SourceSettings {
    /// How long connecting to a network upstream may take.
    pub fn connect_limit(&self) -> Duration {
        self.connect_timeout.unwrap_or(DEFAULT_ATTEMPT_LIMIT)
    }

    /// How long an HTTP upstream may take from the start of the attempt to
    /// its response head (connect, TLS handshake, head): `timeout` or
    /// `readtimeout`, whichever is shorter (nothing was received for that
    /// long), or the default bound when both are 0.
    pub fn response_limit(&self) -> Duration {
        match (self.connect_timeout, self.read_timeout) {
            (Some(a), Some(b)) => a.min(b),
            (Some(limit), None) | (None, Some(limit)) => limit,
            (None, None) => DEFAULT_ATTEMPT_LIMIT,
        }
    }

    /// What decides that an upstream's content is lost.
    pub fn health(&self) -> HealthSettings {
        HealthSettings {
            content_timeout: self.content_timeout,
            cc_error_limit: self.cc_error_limit,
        }
    }
}

/// Why reading from an upstream stopped.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("upstream closed the stream")]
    Eof,
    #[error("nothing received for {0:?}")]
    ReadTimeout(Duration),
    #[error("connect timed out after {0:?}")]
    ConnectTimeout(Duration),
    #[error("no response head within {0:?}")]
    NoResponse(Duration),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Http(String),
    #[error("content lost: {0}")]
    ContentLost(String),
}

/// Runs a stream's source until the task is aborted (or, with reconnect
/// disabled, until its upstream is lost).
///
/// `settings` may change while it runs (a reload): each connection attempt
/// uses the newest, and a connection keeps the ones it started with.
pub async fn run(
    stream: String,
    mut upstreams: Vec<Upstream>,
    settings: watch::Receiver<SourceSettings>,
    hub: Arc<Hub>,
) {
    upstreams.shuffle(&mut rand::thread_rng());
    let mut next = 0;
    loop {
        let settings = settings.borrow().clone();
        hub.set_health_settings(settings.health());
        let round_started = Instant::now();
        let mut connected = None;
        for attempt in 0..upstreams.len() {
            let index = (next + attempt) % upstreams.len();
            let upstream = &upstreams[index];
            match connect(upstream, &settings).await {
                Ok(connection) => {
                    connected = Some((index, connection));
                    break;
                }
                Err(error) => warn!(
                    event = "upstream-error",
                    stream = %stream,
                    url = %upstream,
                    error = %error,
                    "cannot connect to upstream"
                ),
            }
        }

        let Some((index, mut connection)) = connected else {
            let Some(reconnect) = settings.reconnect else {
                warn!(event = "upstream-offline", stream = %stream, "no upstream connected and reconnect is 0: the stream stays offline");
                return;
            };
            sleep_until(round_started + reconnect).await;
            continue;
        };

        let upstream = &upstreams[index];
        debug!(event = "upstream-open", stream = %stream, url = %upstream, "upstream connection open, waiting for packets");
        hub.upstream_opened();
        let connected_at = Instant::now();
        let error = pump(&stream, &mut connection, upstream, &settings, &hub).await;
        hub.set_upstream_connected(false);
        drop(connection);
        warn!(event = "upstream-loss", stream = %stream, url = %upstream, error = %error, "upstream lost");

        // Fail over to the next upstream; wait only if this connection was
        // short-lived, so a flapping upstream is not hammered.
        next = (index + 1) % upstreams.len();
        let Some(reconnect) = settings.reconnect else {
            warn!(event = "upstream-offline", stream = %stream, "reconnect is 0: the stream stays offline");
            return;
        };
        sleep_until(connected_at + reconnect).await;
    }
}

async fn connect(
    upstream: &Upstream,
    settings: &SourceSettings,
) -> Result<Connection, SourceError> {
    let limit = match upstream.kind {
        // Bounded inside: the connect, then the response head.
        UpstreamKind::Http(_) => return Connection::open(upstream, settings).await,
        // A peer that never completes the handshake must not hold the
        // stream, whatever the config says.
        UpstreamKind::Tcp { .. } | UpstreamKind::Unix { .. } | UpstreamKind::UnixPacket { .. } => {
            Some(settings.connect_limit())
        }
        // Files, FIFOs (which wait for their writer), commands and
        // datagram sockets: only the configured timeout.
        _ => settings.connect_timeout,
    };
    match limit {
        Some(limit) => timeout(limit, Connection::open(upstream, settings))
            .await
            .map_err(|_| SourceError::ConnectTimeout(limit))?,
        None => Connection::open(upstream, settings).await,
    }
}

/// How often, at most, garbage from one connection is logged while it lasts.
const GARBAGE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Reads one connection until it fails, publishing whole packets in batches.
/// The stream goes live (new clients are let in, `upstream-connect` is
/// logged) when the connection's first packets are published, not when it
/// opens: an upstream that accepts and sends nothing, or only garbage, is
/// not live. Always returns the reason it stopped.
pub async fn pump(
    stream: &str,
    connection: &mut Connection,
    upstream: &Upstream,
    settings: &SourceSettings,
    hub: &Hub,
) -> SourceError {
    let mut aligner = Aligner::new();
    let mut pacer = upstream.realtime().then(Pacer::new);
    // Paced reads (files only) are small, so that pacing is smooth; other
    // reads take what there is, and a whole datagram of up to `mru` bytes.
    let read_size = if pacer.is_some() {
        7 * PACKET_SIZE
    } else if connection.is_datagram() {
        // Datagrams arrive through a scratch buffer: a stream's own buffer
        // holds a few of them, not 64 KiB.
        14 * PACKET_SIZE
    } else {
        settings.mru.max(64 * 1024)
    };
    let mut out = Publisher {
        batch: Vec::new(),
        live: false,
        max_packets: settings.max_batch_packets,
        stream,
        upstream,
        hub,
    };
    // When the oldest unpublished packet must go out at the latest.
    let mut flush_deadline: Option<Instant> = None;
    // When the content is next judged (see `check_content`); one timer,
    // reused, whatever the number of reads.
    let mut checks = tokio::time::interval(CONTENT_CHECK_INTERVAL);
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut read_since_restart = false;
    let mut last_read = Instant::now();
    let mut garbage = GarbageLog::default();

    let error = loop {
        let read = connection.read(aligner.read_buffer(read_size), read_size);
        // The silence is timed from the last read, not from this attempt:
        // the select below starts a new attempt after each of its timers.
        let read = async {
            match settings.read_timeout {
                Some(limit) => timeout_at(last_read + limit, read)
                    .await
                    .unwrap_or(Err(SourceError::ReadTimeout(limit))),
                None => read.await,
            }
        };
        let result = tokio::select! {
            result = read => result,
            _ = sleep_until(flush_deadline.unwrap_or_else(Instant::now)), if flush_deadline.is_some() => {
                out.publish(&mut aligner);
                flush_deadline = None;
                continue;
            }
            _ = checks.tick() => {
                match check_content(stream, upstream, hub) {
                    Some(error) => break error,
                    None => continue,
                }
            }
        };
        match result {
            // An empty file is not looped forever.
            Ok(0) if !read_since_restart => break SourceError::Eof,
            Ok(0) => match connection.restart().await {
                // A looped file: its last packet, then a discontinuity.
                Ok(true) => {
                    aligner.finish(|packet| {
                        if let Some(pacer) = &mut pacer {
                            pacer.observe(packet);
                        }
                    });
                    out.publish(&mut aligner);
                    flush_deadline = None;
                    hub.discontinuity();
                    read_since_restart = false;
                    continue;
                }
                Ok(false) => break SourceError::Eof,
                Err(error) => break error,
            },
            Ok(_) => {
                read_since_restart = true;
                last_read = Instant::now();
            }
            Err(error) => break error,
        }

        match &mut pacer {
            Some(pacer) => {
                aligner.scan(|packet| pacer.observe(packet));
                // Hold the packets back until the clock reaches their PCR.
                if let Some(due) = pacer.due() {
                    sleep_until(due).await;
                }
            }
            None => aligner.scan(|_| {}),
        }
        garbage.check(&aligner, stream, upstream, false);

        if aligner.packets() >= settings.max_batch_packets || settings.flush_interval.is_zero() {
            out.publish(&mut aligner);
            flush_deadline = None;
        } else if aligner.packets() > 0 && flush_deadline.is_none() {
            flush_deadline = Some(Instant::now() + settings.flush_interval);
        }
    };

    aligner.finish(|_| {});
    out.publish(&mut aligner);
    garbage.check(&aligner, stream, upstream, true);
    error
}

/// How often the content of a connection is judged: the precision of
/// `contenttimeout`.
const CONTENT_CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// Judges the content of the connection (see [`crate::stream::inspect::health`]),
/// logs what there is to log, and says whether to end the connection.
fn check_content(stream: &str, upstream: &Upstream, hub: &Hub) -> Option<SourceError> {
    let check = hub.check_health();
    if let Some((count, pids)) = check.continuity_errors {
        warn!(
            event = "continuity-errors",
            stream = %stream,
            url = %upstream,
            count,
            pids = ?pids,
            "continuity errors: packets lost upstream"
        );
    }
    if check.restored {
        info!(event = "content-restored", stream = %stream, url = %upstream, "content healthy again");
    }
    let reason = check.lost?;
    warn!(event = "content-lost", stream = %stream, url = %upstream, reason = %reason, "content lost: failing over");
    Some(SourceError::ContentLost(reason))
}

/// Publishes what the aligner verified, in chunks of at most
/// `max_packets`, and makes the stream live on the first packets.
struct Publisher<'a> {
    batch: Vec<Bytes>,
    live: bool,
    max_packets: usize,
    stream: &'a str,
    upstream: &'a Upstream,
    hub: &'a Hub,
}

impl Publisher<'_> {
    fn publish(&mut self, aligner: &mut Aligner) {
        aligner.take(&mut self.batch);
        if self.batch.is_empty() {
            return;
        }
        if !self.live {
            // Packets have arrived on this connection: the stream is live.
            self.live = true;
            *self.hub.counters.upstream_url.lock().unwrap() = self.upstream.to_string();
            self.hub.set_upstream_connected(true);
            self.hub
                .counters
                .upstream_connects
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            info!(event = "upstream-connect", stream = %self.stream, url = %self.upstream, "upstream connected: packets arriving");
        }
        let max_bytes = self.max_packets.max(1) * PACKET_SIZE;
        for data in self.batch.drain(..) {
            // A large read must not become one chunk larger than a client's
            // share of the ring; slicing is free.
            let mut start = 0;
            while start < data.len() {
                let end = (start + max_bytes).min(data.len());
                self.hub.publish(data.slice(start..end));
                start = end;
            }
        }
    }
}

/// Logs garbage when it starts, then at most every
/// [`GARBAGE_LOG_INTERVAL`] while it goes on, and what is left at the end.
#[derive(Default)]
struct GarbageLog {
    logged_bytes: u64,
    logged_at: Option<Instant>,
}

impl GarbageLog {
    fn check(&mut self, aligner: &Aligner, stream: &str, upstream: &Upstream, end: bool) {
        let skipped = aligner.skipped_bytes();
        if skipped == self.logged_bytes {
            return;
        }
        let due = self
            .logged_at
            .is_none_or(|at| at.elapsed() >= GARBAGE_LOG_INTERVAL);
        if !due && !end {
            return;
        }
        warn!(
            event = "upstream-garbage",
            stream = %stream,
            url = %upstream,
            bytes = skipped - self.logged_bytes,
            total_bytes = skipped,
            "skipped bytes that were not MPEG-TS packets in sync"
        );
        self.logged_bytes = skipped;
        self.logged_at = Some(Instant::now());
    }
}
