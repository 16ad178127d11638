//! HTTP serving: accepting connections and answering requests.
//!
//! Every connection is served by hyper (HTTP/1.1 and HTTP/2) on its own
//! task. A request is routed by exact path to what the config serves there.
//! A stream client gets `200` and a body that is its [`Subscriber`] to the
//! stream's hub: hyper pulls runs of packets from it and, because they are
//! separate buffers, writes them to the socket with vectored writes, so a
//! client costs one system call per batch, not one per packet.
//!
//! Stream clients are refused with `404` (legacy players handle it better
//! than `503`, as the original found) when the stream's upstream is down
//! or when the hard connection limit is reached.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::hub::{Hub, Subscriber};
use crate::limit::{ConnectionLimits, ConnectionPermit};

pub type Body = BoxBody<Bytes, Infallible>;

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What is served at one path.
#[derive(Debug, Clone)]
pub enum Route {
    Stream(Arc<Hub>),
}

/// Everything requests are answered from.
#[derive(Debug)]
pub struct App {
    pub routes: HashMap<String, Route>,
    pub limits: ConnectionLimits,
}

/// Accepts connections until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, typically: back off a little
                    // instead of spinning.
                    warn!(event = "accept-error", error = %error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        let _ = socket.set_nodelay(true);
        let app = Arc::clone(&app);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let app = Arc::clone(&app);
                async move { Ok::<_, Infallible>(handle(&app, request, peer)) }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            if let Err(error) = builder
                .serve_connection(TokioIo::new(socket), service)
                .await
            {
                debug!(event = "connection-error", client = %peer, error = %error);
            }
        });
    }
}

/// Answers one request.
pub fn handle(app: &App, request: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let path = request.uri().path();
    match app.routes.get(path) {
        Some(Route::Stream(hub)) => stream(app, hub, request.method(), path, peer),
        None => text(StatusCode::NOT_FOUND, "404 page not found\n"),
    }
}

/// Answers a stream client: the live stream, or a refusal.
fn stream(
    app: &App,
    hub: &Arc<Hub>,
    method: &Method,
    path: &str,
    peer: SocketAddr,
) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "405 method not allowed\n");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    if !hub.upstream_connected() || hub.is_closed() {
        info!(event = "client-refused", client = %peer, stream = path, reason = "offline");
        return stream_response(StatusCode::NOT_FOUND, empty());
    }
    if method == Method::HEAD {
        return stream_response(StatusCode::OK, empty());
    }
    let Some(permit) = app.limits.try_acquire() else {
        info!(event = "client-refused", client = %peer, stream = path, reason = "maxconnections");
        return stream_response(StatusCode::NOT_FOUND, empty());
    };
    let client = StreamClient::new(hub.subscribe(), permit, peer, path);
    let body = futures_util::stream::unfold(client, |mut client| async move {
        let data = client.subscriber.next().await?;
        Some((Ok(Frame::data(data)), client))
    });
    stream_response(StatusCode::OK, BodyExt::boxed(StreamBody::new(body)))
}

/// A connected stream client; logs when it goes.
struct StreamClient {
    subscriber: Subscriber,
    _permit: ConnectionPermit,
    peer: SocketAddr,
    stream: String,
    since: Instant,
}

impl StreamClient {
    fn new(
        subscriber: Subscriber,
        permit: ConnectionPermit,
        peer: SocketAddr,
        stream: &str,
    ) -> Self {
        use std::sync::atomic::Ordering;
        subscriber
            .hub()
            .counters
            .connections
            .fetch_add(1, Ordering::Relaxed);
        info!(event = "client-streaming", client = %peer, stream, "client connected");
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
        use std::sync::atomic::Ordering;
        self.subscriber
            .hub()
            .counters
            .connections
            .fetch_sub(1, Ordering::Relaxed);
        info!(
            event = "client-stopped",
            client = %self.peer,
            stream = %self.stream,
            seconds = self.since.elapsed().as_secs_f64(),
            dropped_packets = self.subscriber.dropped_packets(),
            "client disconnected"
        );
    }
}

/// A stream response: the original's headers, so players treat it as live.
fn stream_response(status: StatusCode, body: Body) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "video/mpeg")
        .header(header::CACHE_CONTROL, "no-cache,no-store,no-transform")
        .header(header::ACCEPT_RANGES, "none")
        .body(body)
        .expect("static headers are valid")
}

pub fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from_static(body.as_bytes())).boxed())
        .expect("static headers are valid")
}

fn empty() -> Body {
    Empty::new().boxed()
}
