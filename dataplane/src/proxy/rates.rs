//! Rates: the totals of every stream are sampled once a second, so the
//! statistics and health APIs can give per-second rates over a sliding
//! window of a few seconds.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::generation::Generation;
use super::metrics::Totals;

/// The totals of every stream, sampled once a second for a few seconds.
#[derive(Debug)]
pub struct RateWindow {
    samples: Mutex<VecDeque<(Instant, HashMap<String, Totals>)>>,
    window: Duration,
}

impl RateWindow {
    pub fn new(window: Duration) -> Self {
        RateWindow {
            samples: Mutex::new(VecDeque::new()),
            window,
        }
    }

    /// Records the current totals of every stream.
    pub fn sample(&self, streams: &HashMap<String, Totals>) {
        let now = Instant::now();
        let mut samples = self.samples.lock().unwrap();
        samples.push_back((now, streams.clone()));
        while samples
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > self.window)
        {
            samples.pop_front();
        }
    }

    /// Per-second rates of each stream (and `None` = all streams together)
    /// from the oldest sample in the window to `current`.
    pub fn rates(&self, current: &HashMap<String, Totals>) -> (Totals, HashMap<String, Totals>) {
        let samples = self.samples.lock().unwrap();
        let Some((at, oldest)) = samples.front() else {
            return (Totals::default(), HashMap::new());
        };
        let seconds = at.elapsed().as_secs_f64();
        if seconds < 0.5 {
            return (Totals::default(), HashMap::new());
        }
        let mut total = Totals::default();
        let per_stream = current
            .iter()
            .map(|(path, now)| {
                let then = oldest.get(path).copied().unwrap_or_default();
                let rate = now.rate_since(&then, seconds);
                total.add(&rate);
                (path.clone(), rate)
            })
            .collect();
        (total, per_stream)
    }
}

/// Samples the current generation's totals into `window` once a second
/// (unless `nostats`), until the proxy is gone (the sender is dropped).
pub async fn sample(window: Arc<RateWindow>, generation: watch::Receiver<Arc<Generation>>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if generation.has_changed().is_err() {
            return;
        }
        let current = Arc::clone(&generation.borrow());
        if !current.config.nostats {
            window.sample(&current.stream_totals());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_per_second_over_the_window() {
        let window = RateWindow::new(Duration::from_secs(5));
        let mut totals = HashMap::new();
        totals.insert("/a".to_string(), Totals::default());
        window.sample(&totals);
        // Pretend the sample is two seconds old.
        window.samples.lock().unwrap()[0].0 -= Duration::from_secs(2);
        let now = Totals {
            packets_sent: 2000,
            bytes_sent: 376_000,
            ..Default::default()
        };
        totals.insert("/a".to_string(), now);
        let (total, per_stream) = window.rates(&totals);
        // Two seconds and the few microseconds the test took.
        assert!((995..=1000).contains(&total.packets_sent), "{total:?}");
        assert!((187_000..=188_000).contains(&per_stream["/a"].bytes_sent));
    }
}
