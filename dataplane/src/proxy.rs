//! The running proxy: one hub and one source task per stream, and the HTTP
//! server in front of them, all built from a [`Config`].

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::info;

use crate::config::{parse_listen, Config, ResourceType};
use crate::hub::Hub;
use crate::limit::ConnectionLimits;
use crate::serve::{self, App, Route};
use crate::source::{self, SourceSettings, Upstream};

/// A proxy built from a config, with its sources running.
pub struct Proxy {
    app: Arc<App>,
    sources: Vec<JoinHandle<()>>,
}

impl Proxy {
    /// Creates every stream's hub and starts its source.
    pub fn start(config: &Config) -> Proxy {
        let mut routes = HashMap::new();
        let mut sources = Vec::new();
        for resource in &config.resources {
            if resource.kind != ResourceType::Stream {
                continue;
            }
            let hub = Hub::new(config.outputbuffer);
            let upstreams = resource
                .upstream_urls()
                .into_iter()
                .map(|url| Upstream::parse(url).expect("validated with the config"))
                .collect();
            let settings = SourceSettings::new(config, resource);
            sources.push(tokio::spawn(source::run(
                resource.serve.clone(),
                upstreams,
                settings,
                Arc::clone(&hub),
            )));
            routes.insert(resource.serve.clone(), Route::Stream(hub));
        }
        let app = Arc::new(App {
            routes,
            limits: ConnectionLimits::new(config.fullconnections, config.maxconnections),
        });
        Proxy { app, sources }
    }

    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Serves HTTP on `listener` until `shutdown` completes, then stops the
    /// sources and ends every client's stream.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        serve::serve(listener, Arc::clone(&self.app), shutdown).await;
        for source in &self.sources {
            source.abort();
        }
        for route in self.app.routes.values() {
            let Route::Stream(hub) = route;
            hub.close();
        }
    }
}

/// Binds the listen address of the config. An empty host listens on every
/// interface, IPv6 and IPv4 where the system allows.
pub async fn bind(listen: &str) -> anyhow::Result<TcpListener> {
    let (host, port) = parse_listen(listen).map_err(anyhow::Error::msg)?;
    let listener = if host.is_empty() {
        match TcpListener::bind(("::", port)).await {
            Ok(listener) => Ok(listener),
            Err(_) => TcpListener::bind(("0.0.0.0", port)).await,
        }
    } else {
        TcpListener::bind((host.as_str(), port)).await
    }
    .with_context(|| format!("cannot listen on {listen}"))?;
    info!(event = "listening", address = %listener.local_addr()?, "serving HTTP");
    Ok(listener)
}
