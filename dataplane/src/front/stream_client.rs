//! A connected stream client, whichever way it is served (a hyper response
//! body, or a writer shard): its cursor into the stream's hub, its place
//! under the connection limits, and its access log at connect and
//! disconnect.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tracing::info;

use crate::proxy::limit::ConnectionPermit;
use crate::stream::hub::Subscriber;

/// A connected stream client; counted while it lives, logged when it goes.
#[derive(Debug)]
pub struct StreamClient {
    pub subscriber: Subscriber,
    _permit: ConnectionPermit,
    pub peer: SocketAddr,
    stream: String,
    since: Instant,
}

/// What writes a stream client's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    /// A writer shard (plain HTTP/1).
    Shard,
    /// hyper, as a response body (HTTPS, HTTP/2, keep-alive after another
    /// request).
    Hyper,
}

impl Writer {
    fn as_str(self) -> &'static str {
        match self {
            Writer::Shard => "shard",
            Writer::Hyper => "hyper",
        }
    }
}

impl StreamClient {
    pub fn new(
        subscriber: Subscriber,
        permit: ConnectionPermit,
        peer: SocketAddr,
        stream: &str,
        writer: Writer,
    ) -> Self {
        subscriber
            .hub()
            .counters
            .connections
            .fetch_add(1, Ordering::Relaxed);
        info!(target: "access", event = "client-streaming", client = %peer, stream, writer = writer.as_str(), "client connected");
        StreamClient {
            subscriber,
            _permit: permit,
            peer,
            stream: stream.to_string(),
            since: Instant::now(),
        }
    }
}

impl Drop for StreamClient {
    fn drop(&mut self) {
        let counters = &self.subscriber.hub().counters;
        counters.connections.fetch_sub(1, Ordering::Relaxed);
        let elapsed = self.since.elapsed();
        counters
            .client_time_ns
            .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
        info!(
            target: "access",
            event = "client-stopped",
            client = %self.peer,
            stream = %self.stream,
            seconds = elapsed.as_secs_f64(),
            dropped_packets = self.subscriber.dropped_packets(),
            "client disconnected"
        );
    }
}
