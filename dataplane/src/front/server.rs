//! The server's lifecycle: raising the open file limit, binding the listen
//! addresses, serving on them
//! until shutdown, then draining (readiness goes false, no new stream
//! clients, current ones are served for up to `draintime` seconds or until
//! they have all gone) and closing every stream.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tracing::info;

use crate::config::ListenAddress;
use crate::front::serve::{self, Listener};
use crate::front::shards::Shards;
use crate::front::tls::TlsListener;
use crate::proxy::Proxy;

/// Every client is a socket: lifts the soft limit of open files (often
/// 1,024) to the hard one, as Go's runtime does for the original. Returns
/// the limit before and after, if it was raised.
pub fn raise_file_limit() -> Option<(u64, u64)> {
    let (soft, hard) = rlimit::Resource::NOFILE.get().ok()?;
    if soft >= hard {
        return None;
    }
    let raised = rlimit::increase_nofile_limit(hard).ok()?;
    Some((soft, raised))
}

/// Binds a listen address. An empty host listens on every interface, IPv6
/// and IPv4 where the system allows.
pub async fn bind(listen: &ListenAddress) -> anyhow::Result<TcpListener> {
    let (host, port) = (&listen.host, listen.port);
    let listener = if host.is_empty() {
        match TcpListener::bind(("::", port)).await {
            Ok(listener) => Ok(listener),
            Err(_) => TcpListener::bind(("0.0.0.0", port)).await,
        }
    } else {
        TcpListener::bind((host.as_str(), port)).await
    }
    .with_context(|| format!("cannot listen on {listen}"))?;
    Ok(listener)
}

/// Serves `proxy` on `listener` (plain HTTP) and `tls` (HTTPS), which
/// serve the same routes (at least one of them is there), and the probes
/// and metrics on `admin`, if given, until `shutdown` completes, then
/// drains and closes every stream.
pub async fn run(
    proxy: &Arc<Proxy>,
    listener: Option<TcpListener>,
    admin: Option<TcpListener>,
    tls: Option<TlsListener>,
    shutdown: impl Future<Output = ()>,
) {
    let main_role = if admin.is_some() {
        Listener::Main
    } else {
        Listener::MainWithAdmin
    };
    let shards = Arc::new(Shards::per_core());
    let mut servers = Vec::new();
    if let Some(listener) = listener {
        servers.push(tokio::spawn(serve::serve(
            listener,
            Arc::clone(proxy),
            main_role,
            Arc::clone(&shards),
        )));
    }
    if let Some(tls) = tls {
        servers.push(tokio::spawn(tls.serve(Arc::clone(proxy), main_role)));
    }
    if let Some(admin) = admin {
        servers.push(tokio::spawn(serve::serve(
            admin,
            Arc::clone(proxy),
            Listener::Admin,
            Arc::clone(&shards),
        )));
    }
    shutdown.await;

    proxy.begin_drain();
    // Served until the last client has gone, or `draintime` is up.
    let drain = Duration::from_secs(proxy.current().config.draintime);
    info!(
        event = "draining",
        seconds = drain.as_secs(),
        clients = proxy.limits.connected(),
        "shutting down: not ready, serving current clients"
    );
    let _ = tokio::time::timeout(drain, proxy.limits.all_gone()).await;
    proxy.stop_streams();
    // Let the ended bodies finish on their connections (their last chunk
    // is written after the body, and its permit, is dropped).
    tokio::time::sleep(Duration::from_millis(100)).await;
    for server in servers {
        server.abort();
    }
}
