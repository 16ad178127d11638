//! Connection limits: the soft limit (`fullconnections`), at which the proxy
//! reports itself full, and the hard limit (`maxconnections`), past which
//! new stream clients are refused.
//!
//! Each stream client holds a [`ConnectionPermit`] for as long as it is
//! connected, and gets one only by a compare-and-swap that increments the
//! count if it is below the hard limit: the limit holds by construction, even
//! when hundreds of clients connect at the same instant, and a place comes
//! back when its client goes, however it goes. (A semaphore would do the
//! same, but these limits change on a config reload.)
//!
//! Crossing the soft limit, up or down, is reported on a channel: that is
//! where the `limit_hit` and `limit_miss` notifications come from.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

/// The soft limit was reached (`true`) or left again (`false`).
pub type LimitEvent = bool;

#[derive(Debug)]
pub struct ConnectionLimits {
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    connected: AtomicUsize,
    /// 0 = no limit.
    soft: AtomicUsize,
    /// 0 = no limit.
    max: AtomicUsize,
    events: Option<mpsc::Sender<LimitEvent>>,
}

impl State {
    fn report(&self, full: bool) {
        if let Some(events) = &self.events {
            // Never wait: a notification queue that is full loses an event
            // rather than slowing a client down.
            let _ = events.try_send(full);
        }
    }
}

/// One stream client's place under the limits; dropping it frees the place.
#[derive(Debug)]
pub struct ConnectionPermit {
    state: Arc<State>,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let before = self.state.connected.fetch_sub(1, Ordering::AcqRel);
        let soft = self.state.soft.load(Ordering::Relaxed);
        if soft > 0 && before == soft {
            self.state.report(false);
        }
    }
}

impl ConnectionLimits {
    /// Limits with `soft` and `max` stream clients (0 = no limit), reporting
    /// soft-limit crossings to `events`.
    pub fn new(soft: usize, max: usize, events: Option<mpsc::Sender<LimitEvent>>) -> Self {
        ConnectionLimits {
            state: Arc::new(State {
                connected: AtomicUsize::new(0),
                soft: AtomicUsize::new(soft),
                max: AtomicUsize::new(max),
                events,
            }),
        }
    }

    /// Changes the limits; clients already connected stay connected.
    pub fn set(&self, soft: usize, max: usize) {
        self.state.soft.store(soft, Ordering::Relaxed);
        self.state.max.store(max, Ordering::Relaxed);
    }

    /// A place for one more stream client, or `None` at the hard limit.
    pub fn try_acquire(&self) -> Option<ConnectionPermit> {
        let max = self.state.max.load(Ordering::Relaxed);
        let before = self
            .state
            .connected
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |connected| {
                (max == 0 || connected < max).then_some(connected + 1)
            })
            .ok()?;
        let soft = self.soft();
        if soft > 0 && before + 1 == soft {
            self.state.report(true);
        }
        Some(ConnectionPermit {
            state: Arc::clone(&self.state),
        })
    }

    /// Stream clients connected now.
    pub fn connected(&self) -> usize {
        self.state.connected.load(Ordering::Relaxed)
    }

    /// At or above the soft limit.
    pub fn is_full(&self) -> bool {
        let soft = self.soft();
        soft > 0 && self.connected() >= soft
    }

    /// At or above the hard limit: no new client can get in.
    pub fn is_at_max(&self) -> bool {
        let max = self.max();
        max > 0 && self.connected() >= max
    }

    /// Connections per soft limit: the autoscaling signal (0 without a soft limit).
    pub fn utilization(&self) -> f64 {
        match self.soft() {
            0 => 0.0,
            soft => self.connected() as f64 / soft as f64,
        }
    }

    pub fn soft(&self) -> usize {
        self.state.soft.load(Ordering::Relaxed)
    }

    pub fn max(&self) -> usize {
        self.state.max.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hard_limit_holds_and_places_come_back() {
        let limits = ConnectionLimits::new(1, 2, None);
        let a = limits.try_acquire().unwrap();
        assert!(limits.is_full());
        let b = limits.try_acquire().unwrap();
        assert!(limits.try_acquire().is_none());
        assert!(limits.is_at_max());
        assert_eq!(limits.connected(), 2);
        drop(a);
        let _c = limits.try_acquire().unwrap();
        drop(b);
        assert_eq!(limits.connected(), 1);
    }

    #[test]
    fn the_hard_limit_holds_across_threads() {
        let limits = Arc::new(ConnectionLimits::new(0, 100, None));
        let permits: Vec<_> = (0..8)
            .map(|_| {
                let limits = Arc::clone(&limits);
                std::thread::spawn(move || {
                    (0..1000)
                        .filter_map(|_| limits.try_acquire())
                        .collect::<Vec<_>>()
                })
            })
            .flat_map(|thread| thread.join().unwrap())
            .collect();
        assert_eq!(permits.len(), 100);
        assert_eq!(limits.connected(), 100);
    }

    #[test]
    fn zero_means_no_limit() {
        let limits = ConnectionLimits::new(0, 0, None);
        let permits: Vec<_> = (0..10_000).map(|_| limits.try_acquire().unwrap()).collect();
        assert!(!limits.is_full());
        assert_eq!(limits.utilization(), 0.0);
        assert_eq!(limits.connected(), permits.len());
    }

    #[test]
    fn crossing_the_soft_limit_is_reported_both_ways() {
        let (tx, mut rx) = mpsc::channel(10);
        let limits = ConnectionLimits::new(2, 0, Some(tx));
        let a = limits.try_acquire().unwrap();
        assert!(rx.try_recv().is_err());
        let b = limits.try_acquire().unwrap();
        assert_eq!(rx.try_recv(), Ok(true));
        assert_eq!(limits.utilization(), 1.0);
        let c = limits.try_acquire().unwrap();
        drop(c);
        assert!(rx.try_recv().is_err(), "3 → 2 is still full");
        drop(b);
        assert_eq!(rx.try_recv(), Ok(false));
        drop(a);
        assert!(rx.try_recv().is_err());
    }
}
