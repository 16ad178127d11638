//! Logs: one JSON object per line, with an `event` field naming what
//! happened; `RUST_LOG` sets the level (default `info`).
//!
//! Lines go to standard output, or, when the config sets `log`, all of them
//! to that file instead (as the original), which SIGUSR1 reopens for log
//! rotation.
//!
//! Logging never blocks the proxy: lines are queued (at most
//! [`QUEUE_LINES`]) for a writer thread of their own. When the output does
//! not keep up (a pipe nobody reads, a stalled disk), new lines are dropped
//! rather than waited for; the drops are counted
//! (`restreamer_log_lines_dropped_total`) and, once lines flow again, one
//! `log-lines-dropped` line says how many were lost.
//!
//! The operator logs the same way, with [`init`].

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::filter::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Lines waiting for the writer thread, at most; past that they are dropped.
pub const QUEUE_LINES: usize = 4096;

/// The log file, shared by the writer thread and the reopen task.
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

/// Lines dropped so far because the output did not keep up.
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// How many log lines were dropped since the start.
pub fn dropped_lines() -> u64 {
    DROPPED
        .get()
        .map_or(0, |counter| counter.dropped_lines() as u64)
}

/// Installs the global subscriber: JSON lines to `log_file` if given, else
/// to standard output, through the bounded queue. Keep the guard until the
/// process ends: dropping it flushes what is queued.
pub fn init(log_file: Option<AccessLog>) -> WorkerGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let output: Box<dyn io::Write + Send> = match log_file {
        Some(file) => Box::new(file),
        None => Box::new(io::stdout()),
    };
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUE_LINES)
        .thread_name("restreamer-log")
        .finish(output);
    let _ = DROPPED.set(writer.error_counter());
    let layer = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_writer(writer)
        .with_filter(filter);
    tracing_subscriber::registry().with(layer).init();
    std::thread::Builder::new()
        .name("restreamer-log-watch".into())
        .spawn(report_drops)
        .expect("cannot start the log watcher thread");
    guard
}

/// Says once, when lines flow again after some were dropped, how many were.
fn report_drops() {
    let mut reported = 0;
    let mut last = 0;
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let dropped = dropped_lines();
        // Still dropping: wait until a second passes without a drop.
        if dropped > reported && dropped == last {
            tracing::warn!(
                event = "log-lines-dropped",
                lines = dropped - reported,
                total = dropped,
                "log output did not keep up: lines were dropped"
            );
            reported = dropped;
        }
        last = dropped;
    }
}

/// Reopens the log file on every SIGUSR1, until the task is dropped.
pub async fn reopen_on_sigusr1(log_file: AccessLog) {
    let Ok(mut signals) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
    else {
        return;
    };
    while signals.recv().await.is_some() {
        match log_file.reopen() {
            Ok(()) => tracing::info!(event = "log-reopened", path = %log_file.path.display()),
            Err(error) => {
                tracing::error!(event = "error", path = %log_file.path.display(), error = %error, "cannot reopen the log file")
            }
        }
    }
}
