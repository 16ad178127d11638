//! The `restreamer` command: runs the proxy on a config file, checks one,
//! or signs a URL for a resource with `token` authentication.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use restreamer::config::{token, AuthType, Config, ListenAddress};
use restreamer::front::routing;
use restreamer::front::server::{self, bind};
use restreamer::front::tls::{self, CertificateFiles, Certificates, TlsListener};
use restreamer::proxy::logging::{self, AccessLog};
use restreamer::proxy::Proxy;
use tokio::net::TcpListener;
use tokio::signal::unix::SignalKind;
use tracing::{error, info};

/// Live MPEG-TS streaming proxy: one upstream, many HTTP clients.
#[derive(Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The configuration file.
    #[arg(default_value = "restreamer.json")]
    config: PathBuf,
    /// Only check the configuration: exit 0 if it is valid, else print
    /// what is wrong and where, and exit 1.
    #[arg(long)]
    check: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Prints a signed URL (path and query, one line) for a resource with
    /// `token` authentication, as a portal hands it out.
    Sign {
        /// The configuration file (its userlist and userfile hold the keys).
        #[arg(long)]
        config: PathBuf,
        /// The user whose password is the signing key.
        #[arg(long)]
        user: String,
        /// Seconds from now until the URL expires.
        #[arg(long)]
        ttl: u64,
        /// Bind the URL to this client address.
        #[arg(long)]
        client: Option<IpAddr>,
        /// The path of the resource, as in its `serve`.
        path: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Sign {
        config,
        user,
        ttl,
        client,
        path,
    }) = &cli.command
    {
        return sign(config, user, *ttl, *client, path);
    }
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
    // The certificate is read here, not with the config: the operator
    // validates configs whose certificate is in a Secret it never sees.
    let certificates = match CertificateFiles::of(&config, &cli.config)
        .map(Certificates::load)
        .transpose()
    {
        Ok(certificates) => certificates,
        Err(error) => {
            eprintln!("{}: invalid configuration:", cli.config.display());
            eprintln!("  {error}");
            return ExitCode::FAILURE;
        }
    };
    if cli.check {
        for warning in config.warnings() {
            eprintln!("{}: warning: {warning}", cli.config.display());
        }
        println!("{}: ok", cli.config.display());
        return ExitCode::SUCCESS;
    }

    let access_log = match config.log.as_str() {
        "" => None,
        path => match AccessLog::open(path.as_ref()) {
            Ok(log) => Some(log),
            Err(e) => {
                eprintln!("cannot open the log file {path}: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let _log_writer = logging::init(access_log.clone());
    if let Some((from, to)) = server::raise_file_limit() {
        info!(event = "file-limit", from, to, "raised the open file limit");
    }

    let runtime = tokio::runtime::Runtime::new().expect("cannot start the tokio runtime");
    runtime.block_on(async {
        // Take over SIGHUP and SIGUSR1 before anything can be logged as
        // started: their default action ends the process, and the tasks
        // that listen for them start a moment later. (tokio keeps a
        // signal's handler installed once it has been asked for.)
        // The SIGHUP stream is the reload's: one that arrives before the
        // reload task runs is kept for it.
        let hangup =
            tokio::signal::unix::signal(SignalKind::hangup()).expect("cannot listen for SIGHUP");
        let _ = tokio::signal::unix::signal(SignalKind::user_defined1());
        let bound = async {
            let listener = bind_if(config.listen_address.as_ref()).await?;
            let tls_address = certificates.as_ref().and(config.tls_address.as_ref());
            let tls_listener = bind_if(tls_address).await?;
            let admin = bind_if(config.admin_address.as_ref()).await?;
            anyhow::Ok((listener, tls_listener, admin))
        };
        let (listener, tls_listener, admin) = match bound.await {
            Ok(bound) => bound,
            Err(e) => {
                error!(event = "error", error = %format!("{e:#}"), "cannot start");
                return ExitCode::FAILURE;
            }
        };
        let tls = tls_listener
            .zip(certificates.as_ref())
            .map(|(listener, certificates)| TlsListener {
                listener,
                acceptor: certificates.acceptor(),
            });
        for (role, listener) in [
            ("main", listener.as_ref()),
            ("admin", admin.as_ref()),
            ("tls", tls.as_ref().map(|tls| &tls.listener)),
        ] {
            if let Some(address) = listener.and_then(|l| l.local_addr().ok()) {
                let protocol = if role == "tls" { "HTTPS" } else { "HTTP" };
                info!(event = "listening", role, address = %address, "serving {protocol}");
            }
        }

        let config_path = std::path::absolute(&cli.config).unwrap_or(cli.config.clone());
        let proxy = Proxy::start(config, Some(config_path));
        let reload = tokio::spawn(restreamer::proxy::reload::watch(proxy.clone(), hangup));
        let reopen = access_log.map(|log| tokio::spawn(logging::reopen_on_sigusr1(log)));
        let tls_watch = certificates.map(|c| tokio::spawn(tls::watch(c)));
        server::run(&proxy, listener, admin, tls, shutdown_signal()).await;
        reload.abort();
        if let Some(tls_watch) = tls_watch {
            tls_watch.abort();
        }
        if let Some(reopen) = reopen {
            reopen.abort();
        }
        info!(event = "shutdown", "stopped");
        ExitCode::SUCCESS
    })
}

/// Binds `address`, if there is one.
async fn bind_if(address: Option<&ListenAddress>) -> anyhow::Result<Option<TcpListener>> {
    match address {
        Some(address) => bind(address).await.map(Some),
        None => Ok(None),
    }
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

/// `restreamer sign`: prints `PATH?expires=…&signature=…`.
fn sign(
    config_path: &std::path::Path,
    user: &str,
    ttl: u64,
    client: Option<IpAddr>,
    path: &str,
) -> ExitCode {
    let config = match Config::load(config_path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{}: invalid configuration:", config_path.display());
            for error in &errors.0 {
                eprintln!("  {error}");
            }
            return ExitCode::FAILURE;
        }
    };
    let Some(key) = config.userlist.get(user) else {
        eprintln!(
            "{}: user {user:?} is not in the userlist (nor the userfile)",
            config_path.display()
        );
        return ExitCode::FAILURE;
    };
    if !path.starts_with('/') {
        eprintln!("{path:?}: a path starts with /");
        return ExitCode::FAILURE;
    }
    let signs_here = config.resources.iter().any(|resource| {
        resource.serve == path
            && resource.authentication.kind == AuthType::Token
            && resource
                .authentication
                .named_users()
                .any(|name| name == user)
    });
    if !signs_here {
        eprintln!(
            "{}: warning: no resource at {path:?} takes tokens of {user:?}; the URL will be refused",
            config_path.display()
        );
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let query = token::signed_query(key.password.as_bytes(), path, now + ttl, client);
    println!("{}?{query}", routing::encode_path(path));
    ExitCode::SUCCESS
}
