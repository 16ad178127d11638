//! The `restreamer-operator` command: `crdgen` prints the CRD, `render`
//! prints offline what the controller would apply for a Restream, `run`
//! runs the controller.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use restreamer_operator::controller::{self, Context};
use restreamer_operator::crd::{self, Restream};
use restreamer_operator::metrics::Metrics;
use restreamer_operator::{leader, render};

#[derive(Parser)]
#[command(version, about = "Kubernetes operator for restreamer")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Prints the Restream CustomResourceDefinition (YAML).
    Crdgen,
    /// Prints every object the controller would apply for a Restream (YAML).
    Render {
        /// The Restream manifest (YAML); `-` for standard input.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// The data-plane image for Restreams that name none.
        #[arg(long, env = "RESTREAMER_IMAGE", default_value = DEFAULT_IMAGE)]
        image: String,
    },
    /// Prints how many pods, nodes and origins a number of viewers needs,
    /// and the Restream settings to use (see CAPACITY.md).
    Plan {
        /// Concurrent viewers at the peak.
        #[arg(long)]
        viewers: u64,
        /// Bitrate of one channel, e.g. 8M or 800k.
        #[arg(long, default_value = "8M", value_parser = restreamer_operator::plan::parse_bitrate)]
        bitrate: f64,
        /// Channels.
        #[arg(long, default_value_t = 1)]
        streams: u64,
        /// CPU cores per data-plane pod.
        #[arg(long, default_value_t = 2.0)]
        cores_per_pod: f64,
        /// Network interface of a node, Gbit/s.
        #[arg(long, default_value_t = 25.0)]
        node_gbps: f64,
        /// Gbit/s one core serves at full rate (measured: BENCHMARKS.md).
        #[arg(long, default_value_t = 6.0)]
        gbps_per_core: f64,
        /// Seconds between keyframes (the GOP) of a channel: with instant
        /// start, each channel holds up to one GOP in every pod's memory.
        #[arg(long, default_value = "2", value_parser = restreamer_operator::plan::parse_seconds)]
        gop: f64,
        /// Plan with instant start off (`spec.instantStart.enabled: false`).
        #[arg(long)]
        no_instant_start: bool,
        /// The most a channel holds for instant start, MiB
        /// (`spec.instantStart.limitMebibytes`).
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
        instant_start_limit: u64,
    },
    /// Runs the controller against the cluster of the current kubeconfig or
    /// service account.
    Run {
        /// The data-plane image for Restreams that name none.
        #[arg(long, env = "RESTREAMER_IMAGE", default_value = DEFAULT_IMAGE)]
        image: String,
        /// Address of `/metrics`, `/healthz` and `/readyz`.
        #[arg(long, default_value = "0.0.0.0:8080")]
        metrics_address: String,
        /// Hold this Lease before reconciling, so several replicas can run.
        #[arg(long, env = "LEADER_ELECTION_LEASE")]
        leader_election_lease: Option<String>,
        /// Namespace of the Lease.
        #[arg(long, env = "POD_NAMESPACE", default_value = "restreamer-system")]
        namespace: String,
        /// This replica's identity in the Lease.
        #[arg(long, env = "POD_NAME", default_value = "restreamer-operator")]
        identity: String,
        /// KEDA is installed: watch and manage ScaledObjects for Restreams
        /// with `spec.scaling.keda` (needs RBAC for `keda.sh`).
        #[arg(long, env = "RESTREAMER_KEDA")]
        keda: bool,
    },
}

const DEFAULT_IMAGE: &str = "ghcr.io/restreamer/restreamer:0.1.0";

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crdgen => {
            print!("{}", serde_yaml::to_string(&crd::crd())?);
            Ok(())
        }
        Command::Render { file, image } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&file)?
            };
            let restream: Restream = serde_yaml::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{}: not a Restream: {e}", file.display()))?;
            let mut restream = restream;
            restream
                .metadata
                .namespace
                .get_or_insert_with(|| "default".into());
            let rendered = render::render(&restream, &image)?;
            print!("{}", render::to_yaml(&rendered));
            Ok(())
        }
        Command::Plan {
            viewers,
            bitrate,
            streams,
            cores_per_pod,
            node_gbps,
            gbps_per_core,
            gop,
            no_instant_start,
            instant_start_limit,
        } => {
            let demand = restreamer_operator::plan::Demand {
                viewers,
                bitrate,
                streams,
                cores_per_pod,
                node_gbps,
                gbps_per_core,
                gop_seconds: gop,
                instant_start: !no_instant_start,
                instant_start_limit_mib: instant_start_limit,
            };
            print!(
                "{}",
                restreamer_operator::plan::plan(&demand).report(&demand)
            );
            Ok(())
        }
        Command::Run {
            image,
            metrics_address,
            leader_election_lease,
            namespace,
            identity,
            keda,
        } => {
            // Held until the end: dropping it flushes the queued lines.
            let _log_writer = restreamer::proxy::logging::init(None);
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(async {
                let client = kube::Client::try_default().await?;
                let metrics = Arc::new(Metrics::default());
                tokio::spawn(serve_metrics(metrics_address, Arc::clone(&metrics)));
                if let Some(lease) = leader_election_lease {
                    leader::lead(client.clone(), &namespace, &lease, &identity).await;
                }
                let reporter = kube::runtime::events::Reporter {
                    controller: "restreamer-operator".into(),
                    instance: Some(identity),
                };
                let ctx = Arc::new(Context::new(client, metrics, reporter, image, keda));
                controller::run(ctx).await;
                anyhow::Ok(())
            })
        }
    }
}

/// Serves the operator's metrics and health endpoints.
async fn serve_metrics(address: String, metrics: Arc<Metrics>) {
    use http_body_util::Full;
    use hyper::body::Bytes;
    let listener = match tokio::net::TcpListener::bind(&address).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(event = "error", address, error = %error, "cannot serve metrics");
            return;
        }
    };
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(
                move |request: hyper::Request<hyper::body::Incoming>| {
                    let metrics = Arc::clone(&metrics);
                    async move {
                        let (status, body) = match request.uri().path() {
                            "/metrics" => (200, metrics.render()),
                            "/healthz" | "/readyz" => (200, "ok\n".to_string()),
                            _ => (404, "404 page not found\n".to_string()),
                        };
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from(body)))
                                .unwrap(),
                        )
                    }
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(socket), service)
                .await;
        });
    }
}
