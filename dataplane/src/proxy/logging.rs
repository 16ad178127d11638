//! Logs: one JSON object per line on standard output, with an `event`
//! field naming what happened; `RUST_LOG` sets the level (default `info`).
//!
//! When the config sets `log`, the access events (clients connecting,
//! leaving, refused, unauthorised: target `access`) are also appended to
//! that file, which SIGUSR1 reopens for log rotation, as in the original.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// The access log file, shared by the log layer and the reopen task.
#[derive(Clone)]
pub struct AccessLog {
    path: PathBuf,
    file: Arc<Mutex<File>>,
}

impl AccessLog {
    pub fn open(path: &Path) -> io::Result<AccessLog> {
        Ok(AccessLog {
            path: path.to_path_buf(),
            file: Arc::new(Mutex::new(append(path)?)),
        })
    }

    /// Opens the file again (after a log rotation moved it away).
    pub fn reopen(&self) -> io::Result<()> {
        *self.file.lock().unwrap() = append(&self.path)?;
        Ok(())
    }
}

fn append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl io::Write for AccessLog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.lock().unwrap().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.lock().unwrap().flush()
    }
}

impl<'a> MakeWriter<'a> for AccessLog {
    type Writer = AccessLog;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Installs the global subscriber: JSON to stdout, and access events to
/// `access_log` if given.
pub fn init(access_log: Option<AccessLog>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let stdout = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_filter(filter);
    let access = access_log.map(|file| {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(file)
            .with_filter(filter_fn(|metadata| metadata.target() == "access"))
    });
    tracing_subscriber::registry()
        .with(stdout)
        .with(access)
        .init();
}

/// Reopens the access log on every SIGUSR1, until the task is dropped.
pub async fn reopen_on_sigusr1(access_log: AccessLog) {
    let Ok(mut signals) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
    else {
        return;
    };
    while signals.recv().await.is_some() {
        match access_log.reopen() {
            Ok(()) => tracing::info!(event = "log-reopened", path = %access_log.path.display()),
            Err(error) => {
                tracing::error!(event = "error", path = %access_log.path.display(), error = %error, "cannot reopen the access log")
            }
        }
    }
}
