//! Connection limits: the soft limit (`fullconnections`), at which the proxy
//! reports itself full, and the hard limit (`maxconnections`), past which
//! new stream clients are refused.
//!
//! The hard limit is a [`Semaphore`]: each stream client holds one of its
//! permits for as long as it is connected, so the limit holds by
//! construction, even when hundreds of clients connect at the same instant,
//! and a permit comes back when its client goes, however it goes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug)]
pub struct ConnectionLimits {
    /// `None` when there is no hard limit.
    hard: Option<Arc<Semaphore>>,
    max: usize,
    soft: usize,
    connected: Arc<AtomicUsize>,
}

/// One stream client's place under the limits; dropping it frees the place.
#[derive(Debug)]
pub struct ConnectionPermit {
    _permit: Option<OwnedSemaphorePermit>,
    connected: Arc<AtomicUsize>,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.connected.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ConnectionLimits {
    /// Limits with `soft` and `max` stream clients; 0 means no limit.
    pub fn new(soft: usize, max: usize) -> Self {
        ConnectionLimits {
            hard: (max > 0).then(|| Arc::new(Semaphore::new(max))),
            max,
            soft,
            connected: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// A place for one more stream client, or `None` at the hard limit.
    pub fn try_acquire(&self) -> Option<ConnectionPermit> {
        let permit = match &self.hard {
            Some(semaphore) => Some(Arc::clone(semaphore).try_acquire_owned().ok()?),
            None => None,
        };
        self.connected.fetch_add(1, Ordering::Relaxed);
        Some(ConnectionPermit {
            _permit: permit,
            connected: Arc::clone(&self.connected),
        })
    }

    /// Stream clients connected now.
    pub fn connected(&self) -> usize {
        self.connected.load(Ordering::Relaxed)
    }

    /// At or above the soft limit.
    pub fn is_full(&self) -> bool {
        self.soft > 0 && self.connected() >= self.soft
    }

    pub fn soft(&self) -> usize {
        self.soft
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hard_limit_holds_and_places_come_back() {
        let limits = ConnectionLimits::new(1, 2);
        let a = limits.try_acquire().unwrap();
        assert!(limits.is_full());
        let b = limits.try_acquire().unwrap();
        assert!(limits.try_acquire().is_none());
        assert_eq!(limits.connected(), 2);
        drop(a);
        let _c = limits.try_acquire().unwrap();
        drop(b);
        assert_eq!(limits.connected(), 1);
    }

    #[test]
    fn zero_means_no_limit() {
        let limits = ConnectionLimits::new(0, 0);
        let permits: Vec<_> = (0..10_000).map(|_| limits.try_acquire().unwrap()).collect();
        assert!(!limits.is_full());
        assert_eq!(limits.connected(), permits.len());
    }
}
