//! Live reload: the config file is watched, and reloaded on SIGHUP too.
//!
//! The file's directory is watched rather than the file itself, because
//! Kubernetes updates a ConfigMap volume by swapping a symlink in that
//! directory, which a watch on the old file would never see. Events are
//! debounced (editors and the kubelet write in several steps) and a reload
//! whose content is unchanged is a no-op, so a stray event costs nothing.
//! What a reload changes, and what it keeps, is [`Proxy::apply`]'s business.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::signal::unix::Signal;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::proxy::Proxy;

/// How long to wait for more events before reloading.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Reloads `proxy` whenever its config file (or its `userfile`) changes or
/// a signal arrives on `hangup` (SIGHUP, taken by the caller before the
/// proxy serves, so that an early one is not lost), until the returned
/// future is dropped. The file watch is in place when this returns.
pub fn watch(proxy: Arc<Proxy>, hangup: Signal) -> impl std::future::Future<Output = ()> {
    let path = proxy.config_path().cloned();
    let (tx, rx) = mpsc::channel::<()>(16);
    let watcher = path.as_ref().map(|path| watch_files(&proxy, path, tx));
    async move {
        if path.is_none() {
            return; // No file to reload from.
        }
        // Kept alive for as long as this runs.
        let _watcher = watcher;
        reload_on_events(proxy, rx, hangup).await
    }
}

fn watch_files(
    proxy: &Proxy,
    path: &Path,
    file_events: mpsc::Sender<()>,
) -> Option<notify::RecommendedWatcher> {
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = file_events.try_send(());
        }
    });
    match watcher {
        Ok(mut watcher) => {
            for directory in watched_directories(proxy, path) {
                if let Err(error) = watcher.watch(&directory, RecursiveMode::NonRecursive) {
                    warn!(event = "error", path = %directory.display(), error = %error, "cannot watch for config changes");
                }
            }
            Some(watcher)
        }
        Err(error) => {
            warn!(event = "error", error = %error, "cannot watch the config file: reload with SIGHUP");
            None
        }
    }
}

async fn reload_on_events(proxy: Arc<Proxy>, mut rx: mpsc::Receiver<()>, mut hangup: Signal) {
    // A change made between loading the config and setting up the watch
    // went unseen: look once (an unchanged file is a no-op).
    proxy.reload();
    loop {
        tokio::select! {
            Some(()) = rx.recv() => {
                tokio::time::sleep(DEBOUNCE).await;
                while rx.try_recv().is_ok() {}
            }
            _ = hangup.recv() => info!(event = "sighup", "reloading the configuration"),
        }
        proxy.reload();
    }
}

fn watched_directories(proxy: &Proxy, config: &Path) -> Vec<PathBuf> {
    let directory_of = |path: &Path| match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut directories = vec![directory_of(config)];
    let userfile = &proxy.current().config.userfile;
    if !userfile.is_empty() {
        let userfile = directory_of(config).join(userfile);
        let directory = directory_of(&userfile);
        if !directories.contains(&directory) {
            directories.push(directory);
        }
    }
    directories
}
