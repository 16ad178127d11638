//! The `restreamer` command: runs the proxy on a config file, or checks one.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use restreamer::config::Config;
use restreamer::proxy::{bind, Proxy};
use tracing::{error, info};

/// Live MPEG-TS streaming proxy: one upstream, many HTTP clients.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// The configuration file.
    #[arg(default_value = "restreamer.json")]
    config: PathBuf,
    /// Only check the configuration: exit 0 if it is valid, else print
    /// what is wrong and where, and exit 1.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{}: invalid configuration:", cli.config.display());
            for error in &errors.0 {
                eprintln!("  {error}");
            }
            return ExitCode::FAILURE;
        }
    };
    if cli.check {
        println!("{}: ok", cli.config.display());
        return ExitCode::SUCCESS;
    }

    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    let runtime = tokio::runtime::Runtime::new().expect("cannot start the tokio runtime");
    runtime.block_on(async {
        let listener = match bind(&config.listen).await {
            Ok(listener) => listener,
            Err(e) => {
                error!(event = "error", error = %format!("{e:#}"), "cannot start");
                return ExitCode::FAILURE;
            }
        };
        let proxy = Proxy::start(&config);
        proxy.serve(listener, shutdown_signal()).await;
        info!(event = "shutdown", "stopped");
        ExitCode::SUCCESS
    })
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).expect("cannot listen for SIGTERM");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
