//! Writer shards: where plain HTTP/1 stream clients are served once their
//! response head is decided.
//!
//! hyper serves a connection with a task and a state machine around every
//! write. A stream client needs neither once its response head is sent:
//! from then on it is "write the next run of packets from the shared ring
//! when the socket can take it". So its socket leaves hyper (see
//! [`crate::front::head`]) and joins one of a few shards, one per core. A
//! shard is one task that owns its clients' sockets, grouped by hub. When a
//! hub publishes, it tells every shard that has clients of it (a
//! [`PublishListener`]), and the shard writes each of those clients' pending
//! runs with one non-blocking vectored write. A socket that would block
//! waits until it is writable again, and only it costs a wake-up; meanwhile
//! its cursor falls behind and it drops packets, for itself only, as any
//! client does (and, with instant start, resumes on a keyframe).
//!
//! Once a second a shard also ends the clients whose hub has marked them
//! stalled (`stalltimeout`; with a reset, which frees their kernel send
//! buffer at once) and those whose peer has closed while nothing was
//! written to them.
//!
//! A shard that ends (its task panicked or was aborted) drops its clients:
//! their sockets close, their permits return and their disconnect is
//! logged. The next client sent to it starts a new one.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{ErrorKind, IoSlice, Write};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::info;

use crate::front::stream_client::StreamClient;
use crate::stream::hub::{Hub, Next, PublishListener};

/// Buffers one vectored write takes at most (a run is three when chunked).
const MAX_SLICES: usize = 64;
/// How often stalled and closed clients are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// The last chunk of a chunked body.
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";
/// How long a client blocked when its stream ends may take to unblock and
/// be given the end, before it is cut off.
const ENDED_GRACE: Duration = Duration::from_secs(1);

/// The writer shards of a server.
#[derive(Debug)]
pub struct Shards {
    inboxes: Vec<Mutex<mpsc::UnboundedSender<Message>>>,
    next: AtomicUsize,
}

/// What a shard is sent.
#[derive(Debug)]
enum Message {
    Client(Box<ShardClient>),
    /// Ends the shard as a bug would (tests of what a shard leaves behind).
    #[cfg(test)]
    Panic,
}

impl Shards {
    /// `count` shards (at least one), each a task of the current runtime.
    pub fn start(count: usize) -> Shards {
        Shards {
            inboxes: (0..count.max(1))
                .map(|_| Mutex::new(Shard::spawn()))
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// One shard per core.
    pub fn per_core() -> Shards {
        Shards::start(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// Serves `client` on the next shard in turn (starting it again if it
    /// has ended).
    pub fn add(&self, client: ShardClient) {
        self.send(Message::Client(Box::new(client)));
    }

    fn send(&self, message: Message) {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.inboxes.len();
        let mut inbox = self.inboxes[index].lock().unwrap();
        if let Err(mpsc::error::SendError(message)) = inbox.send(message) {
            *inbox = Shard::spawn();
            // A new shard's inbox is open.
            let _ = inbox.send(message);
        }
    }
}

/// A stream client served by a shard: its socket, and what is still to be
/// written to it.
#[derive(Debug)]
pub struct ShardClient {
    socket: TcpStream,
    client: StreamClient,
    /// HTTP/1.1: every run is sent as a chunk.
    chunked: bool,
    /// What is to be written, in order: the response head, then runs.
    out: VecDeque<Piece>,
    /// Bytes of the first buffer of `out` already written.
    written: usize,
    /// The socket would block: wait until it is writable.
    blocked: bool,
    /// Since when it has been blocked without taking anything.
    blocked_since: Option<Instant>,
    /// The stream has ended for it: what is in `out` is the last.
    ending: bool,
}

/// One buffer of what is to be written to a client: stream data shared
/// with the ring, or a chunk's size line, kept inline so that framing a
/// run allocates nothing.
#[derive(Debug)]
enum Piece {
    Shared(Bytes),
    ChunkSize { text: [u8; 18], len: u8 },
}

impl Piece {
    /// `{size:x}\r\n`: at most 16 hexadecimal digits and the line end.
    fn chunk_size(size: usize) -> Piece {
        let mut text = [0u8; 18];
        let mut line = &mut text[..];
        write!(line, "{size:x}\r\n").expect("18 bytes hold any usize in hex");
        let len = (18 - line.len()) as u8;
        Piece::ChunkSize { text, len }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Piece::Shared(bytes) => bytes,
            Piece::ChunkSize { text, len } => &text[..usize::from(*len)],
        }
    }
}

/// Whether a client stays after being served.
#[derive(Debug, PartialEq, Eq)]
enum Served {
    Stays,
    Ends,
}

impl ShardClient {
    /// A client whose response `head` is to be written first, then the
    /// `preamble`, if any, then the stream.
    pub fn new(
        socket: TcpStream,
        client: StreamClient,
        head: Bytes,
        preamble: Option<Bytes>,
        chunked: bool,
    ) -> ShardClient {
        let mut shard_client = ShardClient {
            socket,
            client,
            chunked,
            out: VecDeque::from([Piece::Shared(head)]),
            written: 0,
            blocked: false,
            blocked_since: None,
            ending: false,
        };
        if let Some(preamble) = preamble {
            shard_client.push(preamble);
        }
        shard_client
    }

    fn hub(&self) -> &Arc<Hub> {
        self.client.subscriber.hub()
    }

    /// Queues a run of the body, framed.
    fn push(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        if self.chunked {
            self.out.push_back(Piece::chunk_size(data.len()));
            self.out.push_back(Piece::Shared(data));
            self.out
                .push_back(Piece::Shared(Bytes::from_static(b"\r\n")));
        } else {
            self.out.push_back(Piece::Shared(data));
        }
    }

    /// Takes what the stream has for it, as long as a write can hold it.
    fn fill(&mut self) {
        while !self.ending && self.out.len() + 3 <= MAX_SLICES {
            match self.client.subscriber.try_next() {
                Next::Data(data) => self.push(data),
                Next::Empty => break,
                Next::Closed => {
                    self.ending = true;
                    if self.chunked {
                        self.out
                            .push_back(Piece::Shared(Bytes::from_static(LAST_CHUNK)));
                    }
                }
            }
        }
    }

    /// Writes what it has until the socket would block or nothing is left.
    fn write(&mut self) -> Served {
        loop {
            self.fill();
            if self.out.is_empty() {
                return match self.ending {
                    true => Served::Ends,
                    false => Served::Stays,
                };
            }
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut count = 0;
            for (i, piece) in self.out.iter().take(MAX_SLICES).enumerate() {
                let skip = if i == 0 { self.written } else { 0 };
                slices[i] = IoSlice::new(&piece.as_slice()[skip..]);
                count += 1;
            }
            match self.socket.try_write_vectored(&slices[..count]) {
                Ok(0) => return Served::Ends,
                Ok(n) => {
                    self.blocked_since = None;
                    self.advance(n);
                }
                Err(error) if error.kind() == ErrorKind::WouldBlock => {
                    self.blocked = true;
                    self.blocked_since.get_or_insert_with(Instant::now);
                    return Served::Stays;
                }
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                // The peer has gone (reset, broken pipe).
                Err(_) => return Served::Ends,
            }
        }
    }

    /// Drops the `n` bytes just written from `out`.
    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let first = self.out[0].as_slice().len() - self.written;
            if n < first {
                self.written += n;
                return;
            }
            n -= first;
            self.written = 0;
            self.out.pop_front();
        }
    }

    /// Writes to it, or waits for its socket to take more.
    fn serve(&mut self, cx: &mut Context<'_>) -> Served {
        loop {
            if self.blocked {
                match self.socket.poll_write_ready(cx) {
                    Poll::Pending => return Served::Stays,
                    Poll::Ready(Err(_)) => return Served::Ends,
                    Poll::Ready(Ok(())) => self.blocked = false,
                }
            }
            if self.write() == Served::Ends {
                return Served::Ends;
            }
            if !self.blocked {
                return Served::Stays;
            }
            // It would block: register for writability above.
        }
    }

    /// Whether the peer has closed its side (read once a second: a client
    /// of a silent stream is not written to, so no write would tell).
    fn peer_closed(&mut self, cx: &mut Context<'_>) -> bool {
        let mut scratch = [0u8; 512];
        loop {
            match self.socket.poll_read_ready(cx) {
                Poll::Pending => return false,
                Poll::Ready(Err(_)) => return true,
                Poll::Ready(Ok(())) => {}
            }
            match self.socket.try_read(&mut scratch) {
                Ok(0) => return true,
                // Sent something after its request: nothing to answer.
                Ok(_) => {}
                Err(error) if error.kind() == ErrorKind::WouldBlock => {}
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
    }

    /// Whether it is to be cut off: its socket has taken nothing for the
    /// stall limit, or for a moment after its stream ended (it cannot be
    /// given the end). The hub also marks stalled clients, but only while
    /// the stream goes on.
    fn stuck(&self) -> bool {
        let Some(since) = self.blocked_since else {
            return false;
        };
        let blocked = since.elapsed();
        let subscriber = &self.client.subscriber;
        subscriber.is_stalled()
            || self
                .hub()
                .stall_limit()
                .is_some_and(|limit| blocked >= limit)
            || (blocked >= ENDED_GRACE && subscriber.is_ended())
    }

    /// Ends a client the hub has marked stalled, with a reset.
    fn cut_stalled(&self) {
        crate::front::serve::reset_on_close(&self.socket);
        info!(target: "access", event = "client-stalled", client = %self.client.peer, "disconnected: read nothing for stalltimeout");
    }
}

/// The clients of one hub on one shard, and how the hub tells the shard
/// it published.
#[derive(Debug)]
struct Group {
    hub: Arc<Hub>,
    listener: Arc<PublishListener>,
    clients: Vec<ShardClient>,
    /// Clients waiting for their socket to be writable.
    blocked: usize,
}

/// One writer shard: a task serving many stream clients.
struct Shard {
    inbox: mpsc::UnboundedReceiver<Message>,
    /// This task's waker, which the hubs' listeners wake.
    waker: Arc<AtomicWaker>,
    groups: Vec<Group>,
    sweep: tokio::time::Interval,
}

impl Shard {
    /// Starts a shard; returns its inbox.
    fn spawn() -> mpsc::UnboundedSender<Message> {
        let (sender, inbox) = mpsc::unbounded_channel();
        let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::spawn(Shard {
            inbox,
            waker: Arc::new(AtomicWaker::new()),
            groups: Vec::new(),
            sweep,
        });
        sender
    }

    fn group_of(&mut self, hub: &Arc<Hub>) -> &mut Group {
        let index = match self.groups.iter().position(|g| Arc::ptr_eq(&g.hub, hub)) {
            Some(index) => index,
            None => {
                let listener = PublishListener::new(Arc::clone(&self.waker));
                hub.listen(&listener);
                self.groups.push(Group {
                    hub: Arc::clone(hub),
                    listener,
                    clients: Vec::new(),
                    blocked: 0,
                });
                self.groups.len() - 1
            }
        };
        &mut self.groups[index]
    }
}

impl Future for Shard {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let shard = self.get_mut();
        // Before looking: a publish from now on wakes this task again.
        shard.waker.register(cx.waker());
        loop {
            match shard.inbox.poll_recv(cx) {
                Poll::Ready(Some(Message::Client(client))) => {
                    let mut client = *client;
                    // Listening to its hub first, so that a publish from
                    // here on wakes this task; then its head (and what the
                    // stream has) goes out at once.
                    let hub = Arc::clone(client.hub());
                    let group = shard.group_of(&hub);
                    if client.serve(cx) == Served::Stays {
                        group.blocked += usize::from(client.blocked);
                        group.clients.push(client);
                    }
                }
                #[cfg(test)]
                Poll::Ready(Some(Message::Panic)) => panic!("a shard ended by a test"),
                // The server has gone: its clients go too.
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending => break,
            }
        }
        let mut sweep = false;
        while shard.sweep.poll_tick(cx).is_ready() {
            sweep = true;
        }
        for group in &mut shard.groups {
            let published = group.listener.take();
            if !published && !sweep && group.blocked == 0 {
                continue;
            }
            group.clients.retain_mut(|client| {
                if sweep {
                    if client.stuck() {
                        client.cut_stalled();
                        return false;
                    }
                    if client.peer_closed(cx) {
                        return false;
                    }
                }
                // Woken for another hub or a socket: only the blocked ones
                // may have something to do.
                if !published && !sweep && !client.blocked {
                    return true;
                }
                client.serve(cx) == Served::Stays
            });
            group.blocked = group.clients.iter().filter(|c| c.blocked).count();
        }
        shard.groups.retain(|group| !group.clients.is_empty());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::front::stream_client::Writer;
    use crate::proxy::limit::ConnectionLimits;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// A connected pair: the server's socket and the client's.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (server, client)
    }

    /// A pair whose client never reads, with buffers so small on both
    /// sides that the server's socket is soon full, whatever the host's
    /// TCP memory settings.
    async fn stalled_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let client = socket
            .connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        socket2::SockRef::from(&server)
            .set_send_buffer_size(4096)
            .unwrap();
        (server, client)
    }

    fn shard_client(socket: TcpStream, hub: &Arc<Hub>, limits: &ConnectionLimits) -> ShardClient {
        let peer = socket.peer_addr().unwrap();
        let permit = limits.try_acquire().unwrap();
        let client = StreamClient::new(hub.subscribe(), permit, peer, "/test", Writer::Shard);
        ShardClient::new(socket, client, Bytes::from_static(b"HEAD\r\n"), None, true)
    }

    /// Publishes 1.9 MB, far more than a stalled pair's buffers hold.
    async fn fill_until_blocked(hub: &Hub) {
        for _ in 0..200 {
            hub.publish(packets(50));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    async fn read_some(socket: &mut TcpStream) -> Vec<u8> {
        let mut buffer = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buffer))
            .await
            .expect("nothing read in 5 s")
            .unwrap();
        buffer.truncate(n);
        buffer
    }

    fn packets(count: usize) -> Bytes {
        let mut data = vec![0u8; count * crate::stream::align::PACKET_SIZE];
        data.iter_mut()
            .step_by(crate::stream::align::PACKET_SIZE)
            .for_each(|byte| *byte = 0x47);
        data.into()
    }

    #[test]
    fn chunk_size_lines_are_hexadecimal() {
        assert_eq!(Piece::chunk_size(376).as_slice(), b"178\r\n");
        assert_eq!(Piece::chunk_size(0).as_slice(), b"0\r\n");
        assert_eq!(
            Piece::chunk_size(usize::MAX).as_slice(),
            b"ffffffffffffffff\r\n"
        );
    }

    #[tokio::test]
    async fn clients_get_the_head_then_each_run_as_a_chunk() {
        let hub = Hub::new(100);
        let limits = ConnectionLimits::new(0, 0, None);
        let shards = Shards::start(1);
        let (server, mut client) = pair().await;
        shards.add(shard_client(server, &hub, &limits));
        assert_eq!(read_some(&mut client).await, b"HEAD\r\n");
        hub.publish(packets(2));
        let chunk = read_some(&mut client).await;
        assert!(chunk.starts_with(b"178\r\nG"), "{:?}", &chunk[..8]);
        assert!(chunk.ends_with(b"\r\n"));
        assert_eq!(chunk.len(), 5 + 376 + 2);
        // The stream ends: the last chunk, then the connection closes.
        hub.close();
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rest, LAST_CHUNK);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(limits.connected(), 0, "the permit was kept");
    }

    #[tokio::test]
    async fn a_shard_that_panics_closes_its_sockets_and_frees_their_permits() {
        let hub = Hub::new(100);
        let limits = ConnectionLimits::new(0, 0, None);
        let shards = Shards::start(1);
        let (server, mut client) = pair().await;
        shards.add(shard_client(server, &hub, &limits));
        assert_eq!(read_some(&mut client).await, b"HEAD\r\n");
        assert_eq!(limits.connected(), 1);

        shards.send(Message::Panic);
        // The socket is closed (end of stream or a reset)...
        let mut rest = Vec::new();
        let ended = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut rest))
            .await
            .expect("the socket of a panicked shard stayed open");
        assert!(ended.is_err() || rest.is_empty(), "{rest:?}");
        // ...and its permit returned.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(limits.connected(), 0, "a panicked shard kept its permit");

        // The next client is served by a shard started again.
        let (server, mut client) = pair().await;
        shards.add(shard_client(server, &hub, &limits));
        assert_eq!(read_some(&mut client).await, b"HEAD\r\n");
        hub.publish(packets(1));
        assert!(read_some(&mut client).await.starts_with(b"bc\r\nG"));
    }

    #[tokio::test]
    async fn a_client_whose_socket_is_full_waits_alone() {
        // A queue of 10,000 packets, counted in packets only.
        let hub = Hub::new(10_000);
        hub.set_min_lag(Duration::ZERO);
        let limits = ConnectionLimits::new(0, 0, None);
        let shards = Shards::start(1);
        let (server, _stalled) = stalled_pair().await;
        shards.add(shard_client(server, &hub, &limits));
        let (server, mut reader) = pair().await;
        shards.add(shard_client(server, &hub, &limits));
        assert_eq!(read_some(&mut reader).await, b"HEAD\r\n");
        // Far more than the kernel buffers of the stalled one hold.
        let mut received = 0;
        for _ in 0..2_000 {
            hub.publish(packets(50));
            let mut buffer = vec![0u8; 64 * 1024];
            while let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(1), reader.read(&mut buffer)).await
            {
                received += n;
            }
        }
        while let Ok(Ok(n)) = tokio::time::timeout(
            Duration::from_millis(200),
            reader.read(&mut vec![0u8; 65536]),
        )
        .await
        {
            if n == 0 {
                break;
            }
            received += n;
        }
        let sent = 2_000 * (50 * 188 + 8);
        assert_eq!(
            received, sent,
            "the reader lost data beside a stalled client"
        );
        assert!(
            hub.counters.packets_dropped.load(Ordering::Relaxed) > 0,
            "the stalled client lost nothing"
        );
    }

    #[tokio::test]
    async fn a_blocked_client_of_a_stream_that_ends_is_cut_off() {
        let hub = Hub::new(100);
        hub.set_min_lag(Duration::ZERO);
        let limits = ConnectionLimits::new(0, 0, None);
        let shards = Shards::start(1);
        let (server, _stalled) = stalled_pair().await;
        shards.add(shard_client(server, &hub, &limits));
        fill_until_blocked(&hub).await;
        assert_eq!(limits.connected(), 1);
        // The stream is removed; no packet will come again.
        hub.close();
        tokio::time::sleep(ENDED_GRACE + SWEEP_INTERVAL * 2).await;
        assert_eq!(
            limits.connected(),
            0,
            "a blocked client of an ended stream kept its socket and permit"
        );
    }

    #[tokio::test]
    async fn a_client_blocked_past_the_stall_limit_is_cut_off_even_on_a_silent_stream() {
        let hub = Hub::new(100);
        hub.set_min_lag(Duration::ZERO);
        hub.set_stall_limit(Duration::from_secs(1));
        let limits = ConnectionLimits::new(0, 0, None);
        let shards = Shards::start(1);
        let (server, _stalled) = stalled_pair().await;
        shards.add(shard_client(server, &hub, &limits));
        fill_until_blocked(&hub).await;
        // The upstream goes silent: the hub's sweep no longer runs.
        tokio::time::sleep(Duration::from_secs(1) + SWEEP_INTERVAL * 2).await;
        assert_eq!(
            limits.connected(),
            0,
            "a client blocked past the stall limit stayed"
        );
    }
}
