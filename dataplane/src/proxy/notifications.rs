//! Notifications: HTTP GET callbacks when the soft limit is reached
//! (`limit_hit`) or left (`limit_miss`), and every `heartbeatinterval`
//! seconds (`heartbeat`).
//!
//! Events arrive on a bounded channel that the connection limits write to
//! without waiting, and each delivery runs on its own task with a timeout
//! and a few retries, so a slow or dead notification target can never hold
//! up a client or another notification. At most [`MAX_IN_FLIGHT`] deliveries
//! run at once; past that, events are dropped with a log line.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Semaphore};
use tracing::{info, warn};

use crate::config::{NotificationEvent, ValidConfig, ValidNotification};
use crate::http_client::http_client;
use crate::proxy::limit::LimitEvent;

const MAX_IN_FLIGHT: usize = 16;
const ATTEMPTS: u32 = 3;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Delivers notifications, as the config in force says, until the proxy is
/// gone (the config's sender is dropped).
pub async fn run(
    config: watch::Receiver<Arc<ValidConfig>>,
    mut limit_events: mpsc::Receiver<LimitEvent>,
) {
    let client = http_client(None).expect("the HTTP client builds");
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let heartbeat_period = |config: &watch::Receiver<Arc<ValidConfig>>| {
        Some(config.borrow().heartbeatinterval)
            .filter(|&seconds| seconds > 0)
            .map(Duration::from_secs)
    };
    let mut next_heartbeat =
        heartbeat_period(&config).map(|period| tokio::time::Instant::now() + period);

    loop {
        let event = tokio::select! {
            event = limit_events.recv() => match event {
                Some(true) => NotificationEvent::LimitHit,
                Some(false) => NotificationEvent::LimitMiss,
                None => return,
            },
            _ = tokio::time::sleep_until(next_heartbeat.unwrap_or_else(far_future)), if next_heartbeat.is_some() => {
                // The period is read again each time: a reload may change it.
                next_heartbeat = heartbeat_period(&config).map(|period| tokio::time::Instant::now() + period);
                NotificationEvent::Heartbeat
            }
        };
        if config.has_changed().is_err() {
            return; // The proxy is gone.
        }
        let config = Arc::clone(&config.borrow());
        let event_name = event.as_str();
        if event != NotificationEvent::Heartbeat {
            info!(event = event_name, "soft connection limit crossed");
        }
        for notification in config.callbacks.iter().filter(|n| n.event == event) {
            let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
                warn!(
                    event = "notification-dropped",
                    notification = event_name,
                    "too many notifications in flight"
                );
                continue;
            };
            let request = build_request(&client, notification);
            tokio::spawn(async move {
                deliver(request, event_name).await;
                drop(permit);
            });
        }
    }
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86400 * 365)
}

fn build_request(
    client: &reqwest::Client,
    notification: &ValidNotification,
) -> reqwest::RequestBuilder {
    let request = client
        .get(notification.url.clone())
        .timeout(REQUEST_TIMEOUT);
    match &notification.authorization {
        Some(credential) => request.header(http::header::AUTHORIZATION, credential),
        None => request,
    }
}

/// Sends one notification, retrying after a failure (1 s, then 2 s).
async fn deliver(request: reqwest::RequestBuilder, event: &'static str) {
    let mut delay = Duration::from_secs(1);
    for attempt in 1..=ATTEMPTS {
        let Some(request) = request.try_clone() else {
            return;
        };
        let error = match request.send().await {
            Ok(response) if response.status().is_success() => {
                info!(event = "notification-sent", notification = event);
                return;
            }
            Ok(response) => format!("answered {}", response.status()),
            Err(error) => error.without_url().to_string(),
        };
        warn!(event = "notification-failed", notification = event, attempt, error = %error);
        if attempt < ATTEMPTS {
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
    }
}
