//! Time limits of one client connection, whatever its protocol.
//!
//! HTTP/1: hyper's `header_read_timeout` bounds the wait for each request's
//! headers, which also closes a keep-alive connection left idle.
//!
//! HTTP/2 has no such timer in hyper: a client could send the connection
//! preface and nothing else, or open a connection and leave it idle, and
//! hold a socket forever. So every HTTP/2 connection has an [`Activity`]
//! count of its open requests (a request is open until its response body
//! is finished or dropped), and is closed once it has had no open request
//! for `headertimeout`: from the connect (no request ever came, or its
//! headers never ended) or from its last response. Keep-alive pings find
//! dead peers of connections that do have open streams.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::net::TcpStream;

use crate::front::response::Body;

/// The HTTP/2 connection preface a client starts with.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a new connection's first bytes say.
#[derive(Debug, PartialEq, Eq)]
pub enum FirstBytes {
    Http2,
    Other,
    /// Nothing (or not enough to tell) within the time allowed.
    Silent,
}

/// Waits up to `limit` for the first bytes of `socket`, without consuming
/// them, and tells whether they are the HTTP/2 preface.
pub async fn sniff(socket: &TcpStream, limit: Duration) -> FirstBytes {
    let look = async {
        let mut first = [0u8; PREFACE.len()];
        loop {
            let n = match socket.peek(&mut first).await {
                Ok(0) | Err(_) => return FirstBytes::Silent,
                Ok(n) => n,
            };
            if first[..n] != PREFACE[..n] {
                return FirstBytes::Other;
            }
            if n == PREFACE.len() {
                return FirstBytes::Http2;
            }
            // Part of the preface: peek returns at once while anything is
            // buffered, so wait a little for the rest.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(limit, look)
        .await
        .unwrap_or(FirstBytes::Silent)
}

/// The open requests of one connection, and since when it has had none.
#[derive(Debug)]
pub struct Activity {
    open: AtomicUsize,
    idle_since: Mutex<Instant>,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            open: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        })
    }

    /// A request has started: open until the returned guard is dropped.
    pub fn begin(self: &Arc<Self>) -> OpenRequest {
        self.open.fetch_add(1, Ordering::AcqRel);
        OpenRequest {
            activity: Arc::clone(self),
        }
    }

    /// How long the connection has had no open request (zero while it has).
    pub fn idle_for(&self) -> Duration {
        if self.open.load(Ordering::Acquire) > 0 {
            return Duration::ZERO;
        }
        self.idle_since.lock().unwrap().elapsed()
    }
}

/// One open request of a connection.
#[derive(Debug)]
pub struct OpenRequest {
    activity: Arc<Activity>,
}

impl Drop for OpenRequest {
    fn drop(&mut self) {
        *self.activity.idle_since.lock().unwrap() = Instant::now();
        self.activity.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request open until it is done.
pub struct Tracked {
    body: Body,
    _open: OpenRequest,
}

impl Tracked {
    pub fn new(body: Body, open: OpenRequest) -> Tracked {
        Tracked { body, _open: open }
    }
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
