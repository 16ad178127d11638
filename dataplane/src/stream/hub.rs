//! The fan-out hub: one per stream, between its upstream and its clients.
//!
//! The source publishes runs of whole packets ([`Bytes`]) into a ring that
//! holds the most recent part of the stream. Every client is a
//! [`Subscriber`] with its own cursor into that ring: the packets between
//! its cursor and the newest packet are its output queue. Publishing is
//! therefore one push and one wake-up signal, whatever the number of
//! clients, and every packet is held in memory once; a client's queue costs
//! it a cursor, not a copy.
//!
//! A client may fall behind by `outputbuffer` packets or by [`MIN_LAG`] (one
//! second) of the stream, whichever is more: the ring is shared, so holding
//! a second of it costs memory per stream, not per client, and a client
//! that keeps up on average never loses packets because its upstream
//! arrives in bursts. A client that falls further behind (its socket is
//! slow or stalled) skips forward to the oldest packet it may still have,
//! and the packets it skipped are counted as dropped for it. Nothing it does
//! can slow the source or any other client.
//!
//! Losses are counted when they happen: once a second, while publishing,
//! the hub settles every client's account (a stalled client is never
//! polled, so it cannot count its own), and finally when a client leaves.
//! A client that has not asked for packets for the stall limit while the
//! stream went on is marked stalled and its [`StallSignal`] notified:
//! whoever serves its connection closes it.
//!
//! With instant start (see [`crate::stream::instant`]) the ring also keeps
//! the packets since the stream's latest random access point: a new client
//! starts there, after fresh PAT and PMT, and a client that falls behind
//! resumes on the next one instead of skipping into the middle of a picture.
//!
//! The hub also carries the stream's state that clients care about: whether
//! its upstream is connected (new clients are refused while it is not, but
//! the connected ones stay, so a failover is a gap, not a disconnect) and
//! whether it is closed (the stream was removed: every client ends).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use futures_util::StreamExt;
use tokio::sync::{watch, Notify};
use tokio_stream::wrappers::WatchStream;

use crate::stream::align::PACKET_SIZE;
use crate::stream::inspect::health::{Check, Health, HealthReport, HealthSettings};
use crate::stream::inspect::Inspector;
use crate::stream::instant::{InstantStart, SkipCursor, StartPoint, StartPoints};

/// The least lag a client is allowed, whatever `outputbuffer` says.
pub const MIN_LAG: Duration = Duration::from_secs(1);
/// How often the hub settles its clients' losses (while it publishes).
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Notified when a client has been stalled longer than the stall limit;
/// whoever serves the client's connection closes it.
#[derive(Debug, Clone, Default)]
pub struct StallSignal(pub Arc<Notify>);

/// Tells a task that serves clients of several hubs (a writer shard) which
/// of them published: one per (task, hub), registered with
/// [`Hub::listen`]. The task takes the flag, then asks its clients of that
/// hub for packets; the hub sets it and wakes the task's waker.
#[derive(Debug)]
pub struct PublishListener {
    published: AtomicBool,
    task: Arc<AtomicWaker>,
}

impl PublishListener {
    /// A listener that wakes `task`.
    pub fn new(task: Arc<AtomicWaker>) -> Arc<PublishListener> {
        Arc::new(PublishListener {
            published: AtomicBool::new(false),
            task,
        })
    }

    /// Whether its hub published (or ended clients) since the last call.
    pub fn take(&self) -> bool {
        self.published.swap(false, Ordering::AcqRel)
    }

    fn tell(&self) {
        if !self.published.swap(true, Ordering::AcqRel) {
            self.task.wake();
        }
    }
}

/// Counters of one stream, updated by its source and its clients.
#[derive(Debug, Default)]
pub struct StreamCounters {
    pub packets_received: AtomicU64,
    pub bytes_received: AtomicU64,
    pub packets_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub packets_dropped: AtomicU64,
    pub bytes_dropped: AtomicU64,
    /// Stream clients connected now.
    pub connections: AtomicU64,
    /// Successful upstream connections so far.
    pub upstream_connects: AtomicU64,
    /// Nanoseconds that clients who have left spent streaming.
    pub client_time_ns: AtomicU64,
    /// The upstream of the current (or last) connection, as logged.
    pub upstream_url: std::sync::Mutex<String>,
}

impl StreamCounters {
    fn count_loss(&self, packets: u64) {
        self.packets_dropped.fetch_add(packets, Ordering::Relaxed);
        self.bytes_dropped
            .fetch_add(packets * PACKET_SIZE as u64, Ordering::Relaxed);
    }
}

/// A run of whole packets, the stream position of its first packet, and
/// when it was published.
#[derive(Debug)]
struct Chunk {
    first_packet: u64,
    data: Bytes,
    published: Instant,
}

impl Chunk {
    fn end_packet(&self) -> u64 {
        self.first_packet + (self.data.len() / PACKET_SIZE) as u64
    }
}

#[derive(Debug)]
struct Ring {
    chunks: VecDeque<Chunk>,
    /// Position of the next packet to be published.
    head: u64,
    closed: bool,
    /// Bumped to disconnect every current subscriber (but not later ones).
    epoch: u64,
    /// Random access points in the ring, for instant start.
    starts: StartPoints,
    /// The subscribers, for the sweep.
    clients: Vec<Registered>,
    last_sweep: Instant,
    /// Lag allowed by time (see [`MIN_LAG`]).
    min_lag: Duration,
    /// The first packet published less than `min_lag` before the latest
    /// publish: how far back a live client may be by time (set on publish,
    /// so that asking for packets needs no clock).
    time_edge: u64,
}

impl Ring {
    fn oldest_kept(&self) -> u64 {
        self.chunks
            .front()
            .map_or(self.head, |chunk| chunk.first_packet)
    }

    /// The oldest packet a live client whose queue is `queue` packets may
    /// still have: `queue` packets back or `min_lag` back, whichever is
    /// older (the ring may hold less: see [`Ring::oldest_allowed`]).
    fn live_edge(&self, queue: u64) -> u64 {
        self.head.saturating_sub(queue).min(self.time_edge)
    }

    /// Moves the edge by time to `now` (see [`Ring::time_edge`]).
    fn update_time_edge(&mut self, now: Instant) {
        self.time_edge = match now.checked_sub(self.min_lag) {
            Some(cutoff) => {
                let young = self
                    .chunks
                    .partition_point(|chunk| chunk.published < cutoff);
                self.chunks
                    .get(young)
                    .map_or(self.head, |chunk| chunk.first_packet)
            }
            None => 0,
        };
    }

    /// [`Ring::live_edge`], but not before what the ring still holds (a
    /// reload may have shrunk it).
    fn oldest_allowed(&self, queue: u64) -> u64 {
        self.live_edge(queue).max(self.oldest_kept())
    }
}

/// A subscriber as the sweep sees it.
#[derive(Debug)]
struct Registered {
    cursor: Weak<Mutex<Cursor>>,
    /// Its poll count at the previous sweep.
    seen_polls: u64,
    /// Since when it has not polled while the stream went on.
    idle_since: Option<Instant>,
}

/// The fan-out point of one stream.
#[derive(Debug)]
pub struct Hub {
    /// Reads every packet published, in order; held for the whole of a
    /// publish, so runs are inspected and enter the ring one at a time.
    inspector: Mutex<Inspector>,
    /// The stream's health checks, fed by the inspector (locked after it).
    health: Mutex<Health>,
    ring: Mutex<Ring>,
    /// Longest queue a new client may have, in packets (the ring keeps at
    /// least this many).
    queue_packets: AtomicU64,
    /// Bumped on every publish and on close, to wake subscribers.
    wake: watch::Sender<()>,
    /// Told of the same, for tasks that serve many subscribers.
    listeners: Mutex<Vec<Weak<PublishListener>>>,
    /// Milliseconds a client may not poll while the stream goes on before
    /// it is marked stalled; 0 = never.
    stall_limit_ms: AtomicU64,
    upstream_connected: AtomicBool,
    pub counters: StreamCounters,
    /// Measured interval between random access points, in milliseconds.
    keyframe_interval_ms: AtomicU64,
    /// Bytes held in the ring for instant start.
    instant_start_bytes: AtomicU64,
}

impl Hub {
    /// A hub whose clients may each queue up to `queue_packets` packets.
    pub fn new(queue_packets: usize) -> Arc<Hub> {
        Arc::new(Hub {
            inspector: Mutex::new(Inspector::new()),
            health: Mutex::new(Health::new()),
            ring: Mutex::new(Ring {
                chunks: VecDeque::new(),
                head: 0,
                closed: false,
                epoch: 0,
                starts: StartPoints::new(InstantStart::off()),
                clients: Vec::new(),
                last_sweep: Instant::now(),
                min_lag: MIN_LAG,
                time_edge: 0,
            }),
            queue_packets: AtomicU64::new(queue_packets.max(1) as u64),
            wake: watch::Sender::new(()),
            listeners: Mutex::new(Vec::new()),
            stall_limit_ms: AtomicU64::new(0),
            upstream_connected: AtomicBool::new(false),
            counters: StreamCounters::default(),
            keyframe_interval_ms: AtomicU64::new(0),
            instant_start_bytes: AtomicU64::new(0),
        })
    }

    /// Sends a run of whole packets to every subscriber, after the
    /// stream's [`Inspector`] has read them.
    pub fn publish(&self, data: Bytes) {
        debug_assert_eq!(data.len() % PACKET_SIZE, 0);
        let packets = (data.len() / PACKET_SIZE) as u64;
        if packets == 0 {
            return;
        }
        let mut inspector = self.inspector.lock().unwrap();
        let marks = {
            let mut health = self.health.lock().unwrap();
            inspector.inspect(&data, |_, facts| health.packet(facts))
        };
        self.counters
            .packets_received
            .fetch_add(packets, Ordering::Relaxed);
        self.counters
            .bytes_received
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        {
            let now = Instant::now();
            let mut ring = self.ring.lock().unwrap();
            let first_packet = ring.head;
            ring.head += packets;
            ring.chunks.push_back(Chunk {
                first_packet,
                data,
                published: now,
            });
            marks.for_each(|mark| ring.starts.mark(mark));
            ring.update_time_edge(now);
            ring.starts.set_keyed(inspector.keyed().is_some());
            if now.duration_since(ring.last_sweep) >= SWEEP_INTERVAL {
                self.sweep(&mut ring, now);
            }
            // Keep what the slowest allowed client may still need, and the
            // packets since the latest random access point.
            let head = ring.head;
            let mut oldest_needed = ring.live_edge(self.queue_packets.load(Ordering::Relaxed));
            if let Some(start) = ring.starts.oldest_needed(head) {
                oldest_needed = oldest_needed.min(start);
            }
            while ring
                .chunks
                .front()
                .is_some_and(|chunk| chunk.end_packet() <= oldest_needed)
            {
                ring.chunks.pop_front();
            }
            let oldest_kept = ring.oldest_kept();
            ring.starts.evict_before(oldest_kept);
            self.keyframe_interval_ms
                .store(ring.starts.interval_ms, Ordering::Relaxed);
            self.instant_start_bytes
                .store(ring.starts.held_bytes, Ordering::Relaxed);
        }
        self.health.lock().unwrap().after_run(
            inspector.pat_position(),
            inspector.programs(),
            inspector.pmt_positions(),
            std::time::Instant::now(),
        );
        drop(inspector);
        self.wake_subscribers();
    }

    /// Wakes every subscriber waiting for packets, and every listener.
    fn wake_subscribers(&self) {
        self.wake.send_replace(());
        self.listeners.lock().unwrap().retain(|listener| {
            let Some(listener) = listener.upgrade() else {
                return false;
            };
            listener.tell();
            true
        });
    }

    /// Has `listener` told of every publish from now on, for as long as it
    /// lives.
    pub fn listen(&self, listener: &Arc<PublishListener>) {
        self.listeners
            .lock()
            .unwrap()
            .push(Arc::downgrade(listener));
    }

    /// Settles every client's losses, forgets the clients that left, and
    /// marks (and signals) the ones that have not polled for the stall
    /// limit while the stream went on.
    fn sweep(&self, ring: &mut Ring, now: Instant) {
        ring.last_sweep = now;
        let stall_limit = self.stall_limit();
        let mut clients = std::mem::take(&mut ring.clients);
        clients.retain_mut(|client| {
            let Some(cursor) = client.cursor.upgrade() else {
                return false;
            };
            let mut cursor = cursor.lock().unwrap();
            cursor.settle(ring, &self.counters);
            if cursor.polls != client.seen_polls {
                client.seen_polls = cursor.polls;
                client.idle_since = None;
                return true;
            }
            let since = *client.idle_since.get_or_insert(now);
            if !cursor.stalled && stall_limit.is_some_and(|limit| now - since >= limit) {
                cursor.stalled = true;
                if let Some(signal) = &cursor.stall_signal {
                    signal.0.notify_one();
                }
            }
            true
        });
        ring.clients = clients;
    }

    /// How long a client may not ask for packets while the stream goes on
    /// before it is marked stalled (see [`Subscriber::is_stalled`]); zero =
    /// never.
    pub fn set_stall_limit(&self, limit: Duration) {
        self.stall_limit_ms
            .store(limit.as_millis() as u64, Ordering::Relaxed);
    }

    /// Changes the least lag allowed by time (tests of the count rule).
    pub fn set_min_lag(&self, lag: Duration) {
        let mut ring = self.ring.lock().unwrap();
        ring.min_lag = lag;
        ring.update_time_edge(Instant::now());
    }

    /// A new client. With instant start, it receives the tables and the
    /// stream from the latest random access point (or waits for the next
    /// one); without, what is published from now on.
    pub fn subscribe(self: &Arc<Self>) -> Subscriber {
        let mut ring = self.ring.lock().unwrap();
        let mut cursor = Cursor {
            next_packet: ring.head,
            epoch: ring.epoch,
            queue_packets: self.queue_packets.load(Ordering::Relaxed),
            dropped_packets: 0,
            mode: Mode::Live,
            tables: None,
            skip: None,
            polls: 0,
            stalled: false,
            stall_signal: None,
        };
        if ring.starts.active() {
            match ring.starts.latest() {
                Some(start) => cursor.start_at(start),
                None => {
                    cursor.mode = Mode::Waiting {
                        counts_loss: false,
                        since: ring.head,
                        started: Instant::now(),
                    }
                }
            }
        }
        let cursor = Arc::new(Mutex::new(cursor));
        ring.clients.push(Registered {
            cursor: Arc::downgrade(&cursor),
            seen_polls: 0,
            idle_since: None,
        });
        Subscriber {
            hub: Arc::clone(self),
            cursor,
            wake: WatchStream::from_changes(self.wake.subscribe()),
        }
    }

    /// Changes the instant start settings (for clients from now on).
    pub fn set_instant_start(&self, settings: InstantStart) {
        self.ring.lock().unwrap().starts.set_settings(settings);
    }

    /// Measured interval between random access points, in milliseconds (0
    /// until two have been seen).
    pub fn keyframe_interval_ms(&self) -> u64 {
        self.keyframe_interval_ms.load(Ordering::Relaxed)
    }

    /// Bytes of the ring held for instant start.
    pub fn instant_start_bytes(&self) -> u64 {
        self.instant_start_bytes.load(Ordering::Relaxed)
    }

    /// Changes the queue length of clients that subscribe from now on.
    pub fn set_queue_packets(&self, packets: usize) {
        self.queue_packets
            .store(packets.max(1) as u64, Ordering::Relaxed);
    }

    /// Ends the stream of every current subscriber; later ones are served.
    pub fn disconnect_all(&self) {
        let mut ring = self.ring.lock().unwrap();
        ring.epoch += 1;
        signal_if_not_ended(&ring);
        drop(ring);
        self.wake_subscribers();
    }

    /// Ends every subscriber's stream, now and for subscribers to come.
    pub fn close(&self) {
        let mut ring = self.ring.lock().unwrap();
        ring.closed = true;
        signal_if_not_ended(&ring);
        drop(ring);
        self.wake_subscribers();
    }

    /// How long a client may not ask for packets while the stream goes on
    /// before it is marked stalled; `None` = never.
    pub fn stall_limit(&self) -> Option<Duration> {
        match self.stall_limit_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    pub fn is_closed(&self) -> bool {
        self.ring.lock().unwrap().closed
    }

    /// Whether new clients are let in: the source sets it once packets
    /// arrive on a connection, and clears it when the connection ends.
    pub fn set_upstream_connected(&self, connected: bool) {
        self.upstream_connected.store(connected, Ordering::Relaxed);
    }

    /// A new upstream connection is open: it starts anywhere in its stream,
    /// so the inspection, the instant-start points and the content checks
    /// start again (it is live only once packets arrive).
    pub fn upstream_opened(&self) {
        let mut inspector = self.inspector.lock().unwrap();
        inspector.restart();
        self.ring.lock().unwrap().starts.clear();
        self.instant_start_bytes.store(0, Ordering::Relaxed);
        self.health
            .lock()
            .unwrap()
            .connected(std::time::Instant::now());
    }

    /// What decides that the content of this stream's upstream is lost.
    pub fn set_health_settings(&self, settings: HealthSettings) {
        self.health.lock().unwrap().set_settings(settings);
    }

    /// The stream jumps without loss (a looped file started again).
    pub fn discontinuity(&self) {
        self.health.lock().unwrap().discontinuity();
    }

    /// Judges the content now (see [`Health::check`]).
    pub fn check_health(&self) -> Check {
        self.health.lock().unwrap().check(std::time::Instant::now())
    }

    /// The health figures, for the APIs and metrics.
    pub fn health_report(&self) -> HealthReport {
        let inspector = self.inspector.lock().unwrap();
        let connected = self.upstream_connected();
        self.health.lock().unwrap().report(
            inspector.programs(),
            connected,
            std::time::Instant::now(),
        )
    }

    /// The content is judged healthy (the upstream may be disconnected).
    pub fn content_ok(&self) -> bool {
        self.health.lock().unwrap().content_ok()
    }

    /// Reads the stream's inspection state (programs, keyed stream, ...).
    pub fn with_inspector<T>(&self, read: impl FnOnce(&Inspector) -> T) -> T {
        read(&self.inspector.lock().unwrap())
    }

    pub fn upstream_connected(&self) -> bool {
        self.upstream_connected.load(Ordering::Relaxed)
    }

    /// Clients connected to this hub now.
    pub fn subscribers(&self) -> usize {
        self.wake.receiver_count()
    }
}

/// How long a client whose stream has ended may take to notice it before
/// its [`StallSignal`] is notified (its socket is full: it cannot be told).
const ENDED_GRACE: Duration = Duration::from_secs(5);

/// After [`ENDED_GRACE`], notifies the stall signal of every client of
/// `ring` that is still there: the stream ended for them (the hub closed or
/// disconnected them), but they have not taken the end. No more packets
/// will come to mark them stalled.
fn signal_if_not_ended(ring: &Ring) {
    let clients: Vec<Weak<Mutex<Cursor>>> = ring
        .clients
        .iter()
        .map(|client| Weak::clone(&client.cursor))
        .collect();
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        tokio::time::sleep(ENDED_GRACE).await;
        for cursor in clients.iter().filter_map(Weak::upgrade) {
            let cursor = cursor.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(signal) = &cursor.stall_signal {
                signal.0.notify_one();
            }
        }
    });
}

/// One client's view of a hub: a cursor into its ring.
#[derive(Debug)]
pub struct Subscriber {
    hub: Arc<Hub>,
    /// Shared with the hub's sweep, which settles this client's losses
    /// while it is not polled; locked after the ring.
    cursor: Arc<Mutex<Cursor>>,
    /// Yields after every publish (and close) since it was last polled.
    wake: WatchStream<()>,
}

/// Where a client is in the stream, and what it has lost.
#[derive(Debug)]
struct Cursor {
    /// Position of the next packet this client is to receive.
    next_packet: u64,
    /// The hub's epoch when this client joined; a new epoch ends it.
    epoch: u64,
    /// Longest queue this client may have, in packets.
    queue_packets: u64,
    dropped_packets: u64,
    mode: Mode,
    /// PAT and PMT to send before the next packet (a start or a resume).
    tables: Option<Bytes>,
    /// The skip list of the start point this client started at.
    skip: Option<SkipCursor>,
    /// Times it asked for packets; the sweep tells a stalled client by it.
    polls: u64,
    /// It has not asked for packets for the stall limit.
    stalled: bool,
    stall_signal: Option<StallSignal>,
}

/// How far behind live a client may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Up to its queue (`outputbuffer` packets or a second of the stream).
    Live,
    /// Catching up from a start point: as far as the ring holds.
    CatchingUp,
    /// Receives nothing until the next start point at or after its cursor
    /// (the loss is counted when it resumes after falling behind), for at
    /// most `instantstartlimit` bytes of stream after `since` and at most
    /// two keyframe intervals (a stream whose video stopped has none).
    Waiting {
        counts_loss: bool,
        since: u64,
        started: Instant,
    },
}

impl Subscriber {
    /// The next run of packets for this client, waiting for one if none is
    /// there yet; `None` once the hub is closed.
    pub async fn next(&mut self) -> Option<Bytes> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// [`Subscriber::next`] as a poll, for a response body to call without
    /// a future per packet run.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        loop {
            match self.try_next() {
                Next::Data(data) => return Poll::Ready(Some(data)),
                Next::Closed => return Poll::Ready(None),
                Next::Empty => {}
            }
            // A publish after the look above makes this ready at once, so
            // no wake-up is lost; a spurious one only costs another look.
            if ready!(self.wake.poll_next_unpin(cx)).is_none() {
                return Poll::Ready(None);
            }
        }
    }

    /// The next run of packets if there is one now, without waiting.
    pub fn try_next(&mut self) -> Next {
        let ring = self.hub.ring.lock().unwrap();
        let next = self.lock_cursor().next(&ring, &self.hub.counters);
        drop(ring);
        if let Next::Data(data) = &next {
            let counters = &self.hub.counters;
            counters
                .packets_sent
                .fetch_add((data.len() / PACKET_SIZE) as u64, Ordering::Relaxed);
            counters
                .bytes_sent
                .fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        next
    }

    /// This client's cursor. A panic that poisoned it cannot have left it
    /// worse than a count off: the client can still be ended and logged.
    fn lock_cursor(&self) -> MutexGuard<'_, Cursor> {
        self.cursor.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Packets this client has lost because it fell behind, up to now
    /// (what it can no longer get is counted, even if it was not polled).
    /// Called when a client leaves, also after a panic: it does not panic
    /// on a poisoned lock.
    pub fn dropped_packets(&self) -> u64 {
        let ring = self.hub.ring.lock().unwrap_or_else(PoisonError::into_inner);
        let mut cursor = self.lock_cursor();
        cursor.settle(&ring, &self.hub.counters);
        cursor.dropped_packets
    }

    /// It has not asked for packets for the stall limit while the stream
    /// went on (see [`Hub::set_stall_limit`]).
    pub fn is_stalled(&self) -> bool {
        self.lock_cursor().stalled
    }

    /// The stream has ended for it (the hub closed, or disconnected it):
    /// once it asks for packets it gets the end.
    pub fn is_ended(&self) -> bool {
        let ring = self.hub.ring.lock().unwrap_or_else(PoisonError::into_inner);
        ring.closed || ring.epoch != self.lock_cursor().epoch
    }

    /// Has `signal` notified when this client is marked stalled.
    pub fn notify_on_stall(&self, signal: StallSignal) {
        self.lock_cursor().stall_signal = Some(signal);
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }
}

impl Cursor {
    /// Starts this client on a start point: its tables, then its packets.
    fn start_at(&mut self, start: &StartPoint) {
        self.next_packet = start.position;
        self.tables = Some(start.tables.clone());
        self.skip = Some(StartPoints::cursor(start));
        self.mode = Mode::CatchingUp;
    }

    fn count_loss(&mut self, packets: u64, counters: &StreamCounters) {
        self.dropped_packets += packets;
        counters.count_loss(packets);
    }

    /// Counts what this client can no longer get, and moves it past it: a
    /// live client skips to the oldest packet it may still have (or, with
    /// instant start, waits for the next start point), a waiting one loses
    /// everything before the next start point.
    fn settle(&mut self, ring: &Ring, counters: &StreamCounters) {
        if ring.closed || ring.epoch != self.epoch {
            return;
        }
        let oldest_allowed = match self.mode {
            Mode::Live => ring.oldest_allowed(self.queue_packets),
            Mode::CatchingUp => ring.oldest_kept(),
            Mode::Waiting {
                counts_loss: true, ..
            } => {
                // What comes before the start point it will resume on is
                // lost; with none in the ring yet, all of it is.
                let resume = ring
                    .starts
                    .at_or_after(self.next_packet)
                    .map_or(ring.head, |start| start.position);
                if self.next_packet < resume {
                    self.count_loss(resume - self.next_packet, counters);
                    self.next_packet = resume;
                }
                return;
            }
            Mode::Waiting { .. } => return,
        };
        if self.next_packet >= oldest_allowed {
            return;
        }
        if ring.starts.active() {
            // Resume on the next start point, not mid-picture.
            self.mode = Mode::Waiting {
                counts_loss: true,
                since: self.next_packet,
                started: Instant::now(),
            };
            self.skip = None;
            self.settle(ring, counters);
            return;
        }
        self.count_loss(oldest_allowed - self.next_packet, counters);
        self.next_packet = oldest_allowed;
    }

    /// The next run of packets for this client in `ring`, if any.
    fn next(&mut self, ring: &Ring, counters: &StreamCounters) -> Next {
        self.polls += 1;
        if ring.closed || ring.epoch != self.epoch {
            return Next::Closed;
        }
        if let Mode::Live | Mode::CatchingUp = self.mode {
            // Fell too far behind: skip (or wait for a start point).
            self.settle(ring, counters);
        }
        if let Mode::Waiting {
            counts_loss,
            since,
            started,
        } = self.mode
        {
            match ring.starts.at_or_after(self.next_packet) {
                Some(start) => {
                    if counts_loss {
                        self.count_loss(start.position - self.next_packet, counters);
                    }
                    self.start_at(start);
                }
                // Nothing to start on any more (instant start turned off,
                // the stream has no keyed stream or is over the limit), or
                // waited longer than the limit: live, as without.
                None if !ring.starts.active()
                    || ring.starts.over_limit(since, ring.head)
                    || started.elapsed() > ring.starts.longest_wait() =>
                {
                    self.mode = Mode::Live;
                    if counts_loss {
                        let live = ring.oldest_allowed(self.queue_packets);
                        if self.next_packet < live {
                            self.count_loss(live - self.next_packet, counters);
                            self.next_packet = live;
                        }
                    } else {
                        self.next_packet = ring.head;
                    }
                }
                None => {
                    if counts_loss {
                        self.settle(ring, counters);
                    } else {
                        self.next_packet = ring.head;
                    }
                    return Next::Empty;
                }
            }
        }
        if let Some(tables) = self.tables.take() {
            return Next::Data(tables);
        }
        if self.next_packet >= ring.head {
            return Next::Empty;
        }
        if self.mode == Mode::CatchingUp && self.next_packet >= ring.live_edge(self.queue_packets) {
            self.mode = Mode::Live;
        }
        // Packets of units begun before this client's start point.
        let mut until = ring.head;
        if let Some(cursor) = &mut self.skip {
            match ring.starts.skip(cursor, self.next_packet) {
                Some(skip) => {
                    self.next_packet += skip.now;
                    if let Some(next_skip) = skip.until {
                        until = next_skip;
                    }
                }
                None => self.skip = None,
            }
            if self.next_packet >= ring.head {
                return Next::Empty;
            }
        }
        // The chunk holding `next_packet`: the last one starting at or before it.
        let index = ring
            .chunks
            .partition_point(|chunk| chunk.first_packet <= self.next_packet)
            - 1;
        let chunk = &ring.chunks[index];
        let offset = (self.next_packet - chunk.first_packet) as usize * PACKET_SIZE;
        let end = chunk.end_packet().min(until);
        let end_offset = (end - chunk.first_packet) as usize * PACKET_SIZE;
        self.next_packet = end;
        Next::Data(chunk.data.slice(offset..end_offset))
    }
}

/// What [`Subscriber::try_next`] found.
#[derive(Debug)]
pub enum Next {
    /// A run of packets (or the tables before them) to send.
    Data(Bytes),
    /// Nothing yet: wait for the next publish.
    Empty,
    /// The stream ended for this client.
    Closed,
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use std::time::Duration;

    /// `count` packets numbered from `first`: the number is in byte 1.
    fn packets(first: u8, count: usize) -> Bytes {
        (0..count)
            .flat_map(|i| {
                let mut packet = [0u8; PACKET_SIZE];
                packet[0] = 0x47;
                packet[1] = first + i as u8;
                packet
            })
            .collect::<Vec<u8>>()
            .into()
    }

    fn numbers(data: &Bytes) -> Vec<u8> {
        data.chunks(PACKET_SIZE).map(|packet| packet[1]).collect()
    }

    #[tokio::test]
    async fn every_subscriber_gets_every_packet_from_when_it_joined() {
        let hub = Hub::new(100);
        hub.publish(packets(0, 2)); // before anyone listens
        let mut early = hub.subscribe();
        hub.publish(packets(2, 3));
        let mut late = hub.subscribe();
        hub.publish(packets(5, 1));
        assert_eq!(numbers(&early.next().await.unwrap()), [2, 3, 4]);
        assert_eq!(numbers(&early.next().await.unwrap()), [5]);
        assert_eq!(numbers(&late.next().await.unwrap()), [5]);
        assert_eq!(hub.counters.packets_sent.load(Ordering::Relaxed), 5);
    }

    #[tokio::test]
    async fn packets_are_shared_not_copied() {
        let hub = Hub::new(100);
        let mut a = hub.subscribe();
        let mut b = hub.subscribe();
        let data = packets(0, 4);
        hub.publish(data.clone());
        let (x, y) = (a.next().await.unwrap(), b.next().await.unwrap());
        assert_eq!(x.as_ptr(), data.as_ptr());
        assert_eq!(y.as_ptr(), data.as_ptr());
    }

    #[tokio::test]
    async fn a_slow_subscriber_skips_to_its_queue_limit_and_counts_the_loss() {
        let hub = Hub::new(5);
        hub.set_min_lag(Duration::ZERO); // the packet count alone
        let mut slow = hub.subscribe();
        let mut fast = hub.subscribe();
        for n in 0..4 {
            hub.publish(packets(n * 3, 3));
            assert_eq!(numbers(&fast.next().await.unwrap()).len(), 3);
        }
        // 12 packets published, the slow one read none: it keeps the last 5,
        // starting in the middle of a chunk.
        assert_eq!(numbers(&slow.next().await.unwrap()), [7, 8]);
        assert_eq!(numbers(&slow.next().await.unwrap()), [9, 10, 11]);
        assert_eq!(slow.dropped_packets(), 7);
        assert_eq!(fast.dropped_packets(), 0);
        assert_eq!(hub.counters.packets_dropped.load(Ordering::Relaxed), 7);
    }

    #[tokio::test]
    async fn the_ring_keeps_only_what_a_client_may_still_need() {
        let hub = Hub::new(10);
        hub.set_min_lag(Duration::ZERO); // the packet count alone
        for n in 0..100 {
            hub.publish(packets(n, 1));
        }
        assert_eq!(hub.ring.lock().unwrap().chunks.len(), 10);
    }

    #[tokio::test]
    async fn a_waiting_subscriber_wakes_on_publish_and_ends_on_close() {
        let hub = Hub::new(10);
        let mut subscriber = hub.subscribe();
        let waiter = tokio::spawn(async move {
            let first = subscriber.next().await;
            let after_close = subscriber.next().await;
            (first, after_close)
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        hub.publish(packets(1, 1));
        tokio::time::sleep(Duration::from_millis(20)).await;
        hub.close();
        let (first, after_close) = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(numbers(&first.unwrap()), [1]);
        assert!(after_close.is_none());
        assert!(hub.subscribe().next().await.is_none());
    }

    #[tokio::test]
    async fn disconnect_all_ends_current_subscribers_only() {
        let hub = Hub::new(10);
        let mut before = hub.subscribe();
        hub.disconnect_all();
        let mut after = hub.subscribe();
        hub.publish(packets(0, 1));
        assert!(before.next().await.is_none());
        assert_eq!(numbers(&after.next().await.unwrap()), [0]);
    }

    #[tokio::test]
    async fn a_burst_larger_than_outputbuffer_is_not_lost_within_a_second() {
        // 10 packets of queue, but a burst of 200 arrives at once: a client
        // that reads it right after loses nothing.
        let hub = Hub::new(10);
        let mut client = hub.subscribe();
        for n in 0..20 {
            hub.publish(packets(n * 10, 10));
        }
        let mut got = Vec::new();
        while got.len() < 200 {
            got.extend(numbers(&client.next().await.unwrap()));
        }
        assert_eq!(got, (0..200).collect::<Vec<u8>>());
        assert_eq!(client.dropped_packets(), 0);
    }

    #[tokio::test]
    async fn a_client_never_polled_has_its_loss_counted_as_it_happens() {
        let hub = Hub::new(10);
        hub.set_min_lag(Duration::from_millis(100));
        let stalled = hub.subscribe();
        // 1.2 s of publishing: the sweep runs at least once.
        for n in 0..12 {
            hub.publish(packets(n, 20));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let counted = hub.counters.packets_dropped.load(Ordering::Relaxed);
        assert!(counted > 0, "nothing counted before the client was polled");
        assert!(stalled.dropped_packets() >= counted);
    }

    #[tokio::test]
    async fn a_stalled_client_is_signalled_after_the_stall_limit() {
        let hub = Hub::new(10);
        hub.set_stall_limit(Duration::from_millis(1500));
        let stalled = hub.subscribe();
        let signal = StallSignal::default();
        stalled.notify_on_stall(signal.clone());
        let mut reading = hub.subscribe();
        let reading_signal = StallSignal::default();
        reading.notify_on_stall(reading_signal.clone());
        let publishing = async {
            for n in 0..40 {
                hub.publish(packets(n, 1));
                reading.next().await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::select! {
            _ = signal.0.notified() => {}
            _ = publishing => panic!("the stalled client was not signalled in 4 s"),
        }
        assert!(stalled.is_stalled());
        assert!(!reading.is_stalled(), "a reading client was marked stalled");
        let not_signalled =
            tokio::time::timeout(Duration::from_millis(10), reading_signal.0.notified()).await;
        assert!(not_signalled.is_err(), "a reading client was signalled");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_does_not_take_the_end_of_its_stream_is_signalled() {
        let hub = Hub::new(10);
        let stuck = hub.subscribe();
        let signal = StallSignal::default();
        stuck.notify_on_stall(signal.clone());
        let mut taking = hub.subscribe();
        let taking_signal = StallSignal::default();
        taking.notify_on_stall(taking_signal.clone());
        hub.close();
        assert!(taking.next().await.is_none());
        drop(taking);
        let signalled = tokio::time::timeout(2 * ENDED_GRACE, signal.0.notified()).await;
        assert!(
            signalled.is_ok(),
            "a client that never took the end was not signalled"
        );
        let not_signalled =
            tokio::time::timeout(Duration::from_millis(10), taking_signal.0.notified()).await;
        assert!(
            not_signalled.is_err(),
            "a client that took the end was signalled"
        );
    }

    #[tokio::test]
    async fn subscribers_are_counted_while_they_live() {
        let hub = Hub::new(10);
        let a = hub.subscribe();
        let b = hub.subscribe();
        assert_eq!(hub.subscribers(), 2);
        drop(a);
        drop(b);
        assert_eq!(hub.subscribers(), 0);
    }

    mod instant_start {
        use super::*;
        use crate::stream::inspect::tests::{Stream, AUDIO, IDR, P_FRAME, VIDEO};
        use crate::stream::instant::InstantStart;

        fn pids(data: &Bytes) -> Vec<u16> {
            data.chunks(PACKET_SIZE)
                .map(|p| u16::from(p[1] & 0x1F) << 8 | u16::from(p[2]))
                .collect()
        }

        fn hub(queue_packets: usize, limit_bytes: u64) -> Arc<Hub> {
            let hub = Hub::new(queue_packets);
            hub.set_instant_start(InstantStart {
                enabled: true,
                limit_bytes,
                stream: "/test".into(),
            });
            hub
        }

        /// A subscriber that has taken all of `stream`, published whole.
        fn caught_up(hub: &Arc<Hub>, stream: &Stream) -> Subscriber {
            hub.publish(stream.bytes().into());
            let mut subscriber = hub.subscribe();
            while subscriber
                .next()
                .now_or_never()
                .is_some_and(|d| d.is_some())
            {}
            subscriber
        }

        /// Publishes a GOP packet by packet, as `stream.packets`: ten P
        /// frames, new tables (10, 11), a keyframe (12) and a P frame.
        fn publish_gop(hub: &Hub, stream: &mut Stream) {
            stream.packets.clear();
            for _ in 0..10 {
                stream.pes(VIDEO, P_FRAME, false);
            }
            stream.pat();
            stream.pmt(&[(0x1B, VIDEO), (0x0F, AUDIO)]);
            stream.pes(VIDEO, IDR, false);
            stream.pes(VIDEO, P_FRAME, false);
            for packet in &stream.packets {
                hub.publish(Bytes::copy_from_slice(packet));
            }
        }

        /// PAT, PMT, audio, a P frame, an audio start, the keyframe (6), the
        /// audio unit's continuation (7), a P frame, a whole audio unit.
        fn stream() -> Stream {
            let mut stream = Stream::default();
            stream.pat();
            stream.pmt(&[(0x1B, VIDEO), (0x0F, AUDIO)]);
            stream.pes(AUDIO, &[0xAA; 300], false);
            stream.pes(VIDEO, P_FRAME, false);
            stream.pes(AUDIO, &[0xAA; 300], false);
            let continuation = stream.packets.pop().unwrap();
            stream.pes(VIDEO, IDR, false);
            stream.packets.push(continuation);
            stream.pes(VIDEO, P_FRAME, false);
            stream.pes(AUDIO, &[0xAA; 300], false);
            stream
        }

        #[tokio::test]
        async fn a_new_subscriber_gets_the_tables_then_the_keyframe_without_partial_units() {
            let stream = stream();
            let hub = hub(100, 1 << 20);
            hub.publish(stream.bytes().into());
            let mut subscriber = hub.subscribe();
            let tables = subscriber.next().await.unwrap();
            assert_eq!(&tables[..], &stream.bytes()[..2 * PACKET_SIZE]);
            let first = subscriber.next().await.unwrap();
            assert_eq!(
                &first[..],
                &stream.packets[6][..],
                "the keyframe, alone: 7 is skipped"
            );
            assert_eq!(
                pids(&subscriber.next().await.unwrap()),
                [VIDEO, AUDIO, AUDIO]
            );
            assert_eq!(subscriber.dropped_packets(), 0);
            assert!(hub.instant_start_bytes() > 0);
        }

        #[tokio::test]
        async fn catching_up_from_the_keyframe_is_not_falling_behind() {
            let hub = hub(2, 1 << 20);
            hub.publish(stream().bytes().into());
            let mut subscriber = hub.subscribe();
            let mut received = Vec::new();
            while let Some(Some(data)) = subscriber.next().now_or_never() {
                received.extend(pids(&data));
            }
            assert_eq!(received, [0, 0x1000, VIDEO, VIDEO, AUDIO, AUDIO]);
            assert_eq!(subscriber.dropped_packets(), 0);
        }

        #[tokio::test]
        async fn a_subscriber_that_falls_behind_resumes_on_the_next_keyframe_with_the_tables() {
            let hub = hub(2, 1 << 20);
            hub.set_min_lag(Duration::ZERO); // the packet count alone
            let mut stream = stream();
            let mut subscriber = caught_up(&hub, &stream);
            // It stops reading; ten P frames, then new tables and a keyframe.
            publish_gop(&hub, &mut stream);
            let tables = subscriber.next().await.unwrap();
            assert_eq!(
                &tables[..],
                &stream.bytes()[10 * PACKET_SIZE..12 * PACKET_SIZE]
            );
            assert_eq!(
                &subscriber.next().await.unwrap()[..],
                &stream.packets[12][..]
            );
            assert_eq!(
                subscriber.dropped_packets(),
                12,
                "the P frames and the tables in the stream"
            );
        }

        #[tokio::test]
        async fn a_stalled_subscribers_loss_is_counted_without_it_asking() {
            let hub = hub(2, 1 << 20);
            hub.set_min_lag(Duration::ZERO);
            let mut stream = stream();
            let subscriber = caught_up(&hub, &stream);
            // It never asks again: three GOPs of 14 packets go by.
            for _ in 0..3 {
                publish_gop(&hub, &mut stream);
            }
            // What the access log says when it leaves, and the metric.
            let lost = subscriber.dropped_packets();
            assert!(lost >= 2 * 14 + 12, "lost {lost}");
            assert_eq!(hub.counters.packets_dropped.load(Ordering::Relaxed), lost);
        }

        #[tokio::test]
        async fn past_the_limit_new_subscribers_start_live() {
            let hub = hub(100, 3 * PACKET_SIZE as u64);
            let mut stream = stream();
            for _ in 0..5 {
                stream.pes(VIDEO, P_FRAME, false);
            }
            hub.publish(stream.bytes().into());
            assert_eq!(hub.instant_start_bytes(), 0);
            let mut subscriber = hub.subscribe();
            hub.publish(packets(7, 1));
            assert_eq!(numbers(&subscriber.next().await.unwrap()), [7]);
        }
    }
}
