//! HTTP serving: accepting connections and answering requests.
//!
//! Every connection is served by hyper (HTTP/1.1 and HTTP/2) on its own
//! task, within the time limits of [`connection`]. HTTP/1 header names are
//! written in Go's canonical case (`Content-Type`). A request is routed by
//! its decoded path as Go's `ServeMux` routes it ([`routing`]) to what the
//! current config serves there, after its credentials are checked.
//!
//! A stream client gets `200` and the live stream from its subscriber to
//! the stream's hub. On a plain HTTP/1 connection whose first request is
//! such a client, that request is answered before hyper sees it
//! ([`head`]) and the socket handed to a writer shard
//! ([`shards`](crate::front::shards)), which
//! writes many clients' runs of packets from one task. Everywhere else
//! (HTTPS, HTTP/2, a stream request after another on a keep-alive
//! connection) the response body is the subscriber: hyper pulls runs of
//! packets from it and writes them with vectored writes. Either way a
//! client costs one system call per batch, not one per packet.
//!
//! Stream clients are refused with `404` (legacy players handle it better
//! than `503`, as the original found) when the stream's upstream is down,
//! when it was taken offline, when the hard connection limit is reached and
//! while the proxy drains for shutdown.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use crate::config::token;
use crate::front::connection::{self, Activity, FirstBytes, Tracked};
use crate::front::head::Head;
use crate::front::response::{empty, text, with_type, Body};
use crate::front::routing::{self, Routed};
use crate::front::shards::{ShardClient, Shards};
use crate::front::stream_client::{StreamClient, Writer};
use crate::front::{api, client, head, static_files};
use crate::proxy::{Proxy, Stream, Target};
use crate::stream::hub::StallSignal;

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The configured resources only (probes and metrics have their own port).
    Main,
    /// The configured resources, and `/healthz`, `/readyz`, `/metrics` where
    /// no resource is served at those paths.
    MainWithAdmin,
    /// `/healthz`, `/readyz` and `/metrics` only.
    Admin,
}

/// The next connection, with `TCP_NODELAY` set. Accept errors (out of
/// file descriptors, typically) are logged and waited out a little
/// instead of spinning.
pub async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((socket, peer)) => {
                let _ = socket.set_nodelay(true);
                return (socket, peer);
            }
            Err(error) => {
                warn!(event = "accept-error", error = %error, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Accepts connections until the task is aborted. Plain HTTP/1 stream
/// clients are handed to `shards` once their response head is decided.
pub async fn serve(listener: TcpListener, proxy: Arc<Proxy>, role: Listener, shards: Arc<Shards>) {
    loop {
        let (mut socket, peer) = accept(&listener).await;
        let header_timeout = Duration::from_secs(proxy.current().config.headertimeout);
        let proxy = Arc::clone(&proxy);
        let shards = Arc::clone(&shards);
        tokio::spawn(async move {
            // hyper's header timer starts only once it knows the protocol,
            // which it learns from the first bytes: a client that connects
            // and says nothing would hold its socket forever.
            let first = connection::sniff(&socket, header_timeout).await;
            if first == FirstBytes::Silent {
                debug!(event = "connection-silent", client = %peer, "closed: nothing sent within headertimeout");
                return;
            }
            if first == FirstBytes::Other && role != Listener::Admin {
                if let Some(head) = head::peek(&socket).await {
                    if let Some((client, preamble)) = admit_stream_client(&proxy, &head, peer) {
                        if head.consume(&mut socket).await.is_ok() {
                            let response = head.stream_response();
                            shards.add(ShardClient::new(
                                socket,
                                client,
                                response,
                                preamble,
                                head.chunked(),
                            ));
                        }
                        return;
                    }
                }
            }
            serve_connection(
                socket,
                peer,
                proxy,
                role,
                header_timeout,
                first == FirstBytes::Http2,
            )
            .await;
        });
    }
}

/// Serves one connection, plain or TLS, until it closes. `http2`: the
/// client starts with the HTTP/2 preface (or chose `h2` by ALPN), so the
/// connection is closed once it has had no open request for
/// `header_timeout` (hyper has no header timer for HTTP/2).
pub async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    proxy: Arc<Proxy>,
    role: Listener,
    header_timeout: Duration,
    http2: bool,
) where
    I: AsyncRead + AsyncWrite + AsRawFd + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let requests = Arc::clone(&activity);
    // A stream client on this connection that stalls past `stalltimeout`
    // is signalled here, and the connection closed.
    let stalled = StallSignal::default();
    let signal = stalled.clone();
    let service = service_fn(move |mut request: Request<Incoming>| {
        let proxy = Arc::clone(&proxy);
        let open = requests.begin();
        request.extensions_mut().insert(signal.clone());
        async move {
            let response = handle(&proxy, request, peer, role).await;
            Ok::<_, Infallible>(response.map(|body| Tracked::new(body, open).boxed()))
        }
    });
    // The protocol is known by now: a client that did not start with the
    // HTTP/2 preface (or, over TLS, choose h2) speaks HTTP/1 or nothing, so
    // HTTP/2 cannot slip past the watch below.
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let mut builder = if http2 {
        builder.http2_only()
    } else {
        builder.http1_only()
    };
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        // As Go writes them (`Content-Type`): some set-top boxes compare
        // header names case-sensitively.
        .title_case_headers(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(header_timeout)
        .keep_alive_timeout(header_timeout);
    let fd = io.as_raw_fd();
    let served = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(served);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let result = loop {
        tokio::select! {
            result = &mut served => break result,
            _ = tick.tick(), if http2 => if activity.idle_for() >= header_timeout {
                debug!(event = "connection-idle", client = %peer, "closed: no HTTP/2 request within headertimeout");
                return;
            },
            _ = stalled.0.notified() => {
                // SAFETY: the socket is open until `served`, which owns it,
                // is dropped at the end of this function.
                let socket = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
                reset_on_close(&socket);
                info!(target: "access", event = "client-stalled", client = %peer, "disconnected: read nothing for stalltimeout");
                return;
            }
        }
    };
    if let Err(error) = result {
        debug!(event = "connection-error", client = %peer, error = %error);
    }
}

/// A stream client, if `head` is a request its stream will serve now: the
/// route is a stream, the credentials (if any) are good, the stream is live
/// and a place under the limits is free. Anything else (a refusal
/// included) is answered by hyper as usual, which routes the request again
/// and logs what it answers.
fn admit_stream_client(
    proxy: &Proxy,
    head: &Head,
    peer: SocketAddr,
) -> Option<(StreamClient, Option<Bytes>)> {
    let request = &head.request;
    let generation = proxy.current();
    let decoded = percent_encoding::percent_decode_str(request.uri().path()).decode_utf8_lossy();
    let path: &str = &decoded;
    let Routed::Found(route) = routing::route(&generation.routes, path, request.uri().query())
    else {
        return None;
    };
    let Target::Stream { stream, preamble } = &route.target else {
        return None;
    };
    let client = client::address(peer, request.headers(), &generation.config.trustedproxies);
    if let Some(auth) = &route.auth {
        auth.check(request.headers(), path, request.uri().query(), client)
            .ok()?;
    }
    if proxy.is_draining() || !stream.is_live() {
        return None;
    }
    let permit = proxy.limits.try_acquire_for(client).ok()?;
    let subscriber = stream.hub.subscribe();
    Some((
        StreamClient::new(subscriber, permit, peer, &stream.path, Writer::Shard),
        preamble.clone(),
    ))
}

/// Answers one request.
pub async fn handle(
    proxy: &Proxy,
    mut request: Request<Incoming>,
    peer: SocketAddr,
    role: Listener,
) -> Response<Body> {
    let generation = proxy.current();
    // Routed by the decoded path, as Go's net/http routes `r.URL.Path`: a
    // serve path with a space or non-ASCII is reached by its encoding, and
    // `/%73tream` is `/stream`. Nothing is joined to a directory.
    let decoded = percent_encoding::percent_decode_str(request.uri().path()).decode_utf8_lossy();
    let path: &str = &decoded;
    let routed = match role {
        Listener::Admin => Routed::NotFound,
        _ => routing::route(&generation.routes, path, request.uri().query()),
    };
    let route = match routed {
        Routed::Found(route) => route,
        Routed::Redirect(location) => return moved_permanently(&location),
        Routed::NotFound => {
            if role != Listener::Main {
                if let Some(response) = api::admin(proxy, &generation, path) {
                    return response;
                }
            }
            let mut response = text(StatusCode::NOT_FOUND, "404 page not found\n");
            response.headers_mut().insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            return response;
        }
    };

    let client = client::address(peer, request.headers(), &generation.config.trustedproxies);
    if let Some(auth) = &route.auth {
        if let Err(reason) = auth.check(request.headers(), path, request.uri().query(), client) {
            info!(target: "access", event = "client-unauthorized", client = %peer, address = %client, path, reason, "missing or wrong credentials");
            let mut response = Response::new(empty());
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, auth.challenge().clone());
            return response;
        }
        if auth.is_token() {
            // The token is spent on the way in: what answers never sees it.
            without_token(&mut request);
        }
    }

    match &route.target {
        Target::Stream { stream, preamble } => {
            let stalled = request.extensions().get::<StallSignal>().cloned();
            serve_stream(
                proxy,
                stream,
                preamble.clone(),
                request.method(),
                peer,
                client,
                stalled,
            )
        }
        Target::Static(resource) => static_files::respond(resource, &request).await,
        Target::Api(api) => api::respond(proxy, &generation, api, &request),
    }
}

/// Answers a stream client: the live stream, or a refusal.
fn serve_stream(
    proxy: &Proxy,
    stream: &Arc<Stream>,
    preamble: Option<Bytes>,
    method: &Method,
    peer: SocketAddr,
    client: IpAddr,
    stalled: Option<StallSignal>,
) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "405 method not allowed\n");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let refuse = |reason: &str| {
        info!(target: "access", event = "client-refused", client = %peer, address = %client, stream = %stream.path, reason);
        stream_response(StatusCode::NOT_FOUND, empty())
    };
    if proxy.is_draining() {
        return refuse("draining");
    }
    if !stream.is_live() {
        return refuse("offline");
    }
    if method == Method::HEAD {
        // What a GET would get, without taking a place.
        if let Some(refused) = proxy.limits.would_refuse(client) {
            return refuse(refused.as_str());
        }
        return stream_response(StatusCode::OK, empty());
    }
    let permit = match proxy.limits.try_acquire_for(client) {
        Ok(permit) => permit,
        Err(refused) => return refuse(refused.as_str()),
    };
    let subscriber = stream.hub.subscribe();
    if let Some(signal) = stalled {
        subscriber.notify_on_stall(signal);
    }
    let client = StreamClient::new(subscriber, permit, peer, &stream.path, Writer::Hyper);
    stream_response(
        StatusCode::OK,
        BodyExt::boxed(ClientBody { client, preamble }),
    )
}

/// Takes a signed URL's parameters out of the request's query.
fn without_token<B>(request: &mut Request<B>) {
    let uri = request.uri();
    let Some(query) = uri.query() else { return };
    let path_and_query = match token::strip(query) {
        Some(rest) => format!("{}?{rest}", uri.path()),
        None => uri.path().to_string(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = path_and_query.parse().ok();
    if let Ok(stripped) = http::Uri::from_parts(parts) {
        *request.uri_mut() = stripped;
    }
}

/// A stream client's response body: the preamble, then whatever its
/// subscriber has, for as long as the stream lasts.
struct ClientBody {
    client: StreamClient,
    preamble: Option<Bytes>,
}

impl http_body::Body for ClientBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(preamble) = this.preamble.take() {
            return Poll::Ready(Some(Ok(Frame::data(preamble))));
        }
        this.client
            .subscriber
            .poll_next(cx)
            .map(|data| data.map(|data| Ok(Frame::data(data))))
    }
}

/// A stream response: the original's headers, so players treat it as live
/// (`Last-Modified` is now: a live stream is always current).
fn stream_response(status: StatusCode, body: Body) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "video/mpeg")
        .header(
            header::LAST_MODIFIED,
            httpdate::fmt_http_date(std::time::SystemTime::now()),
        )
        .header(header::CACHE_CONTROL, "no-cache,no-store,no-transform")
        .header(header::ACCEPT_RANGES, "none")
        .body(body)
        .expect("static headers are valid")
}

/// A redirect to the clean form of a path, as Go's `ServeMux` answers.
fn moved_permanently(location: &str) -> Response<Body> {
    let body = format!(
        "<a href=\"{}\">Moved Permanently</a>.\n\n",
        location
            .replace('&', "&amp;")
            .replace('"', "&quot;")
            .replace('<', "&lt;")
    );
    let mut response = with_type(
        StatusCode::MOVED_PERMANENTLY,
        "text/html; charset=utf-8",
        body,
    );
    if let Ok(location) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// Makes the close of `socket` a reset: a close would leave the unsent
/// megabytes of a stalled client in the kernel until the peer reads them or
/// TCP gives up.
pub fn reset_on_close(socket: &impl std::os::fd::AsFd) {
    let _ = socket2::SockRef::from(socket).set_linger(Some(Duration::ZERO));
}
