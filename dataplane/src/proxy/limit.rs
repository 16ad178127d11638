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
//! where the `limit_hit` and `limit_miss` notifications come from. The
//! last client leaving wakes whoever waits in [`ConnectionLimits::all_gone`]
//! (the drain at shutdown).
//!
//! The per-address limit (`maxperclient`) counts the permits of each client
//! address in a map, under a lock taken on connect and on disconnect only;
//! a permit that passes it but not the hard limit gives its place back at
//! once. Addresses are always counted, so a reload that sets the limit
//! counts the clients already connected.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, Notify};

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
    /// Per client address; 0 = no limit.
    per_client: AtomicUsize,
    /// Permits held by each client address.
    clients: Mutex<HashMap<IpAddr, usize>>,
    events: Option<mpsc::Sender<LimitEvent>>,
    /// Notified when the count drops to zero.
    all_gone: Notify,
}

/// Which limit refused a new client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `maxconnections`.
    Max,
    /// `maxperclient`.
    PerClient,
}

impl Refused {
    /// As logged (`reason`): the key of the limit.
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::Max => "maxconnections",
            Refused::PerClient => "maxperclient",
        }
    }
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
    /// The address counted for `maxperclient`, if any.
    client: Option<IpAddr>,
}

impl State {
    /// Gives back one place of `client`'s.
    fn release_client(&self, client: IpAddr) {
        let mut clients = self.clients.lock().unwrap();
        if let Some(count) = clients.get_mut(&client) {
            *count -= 1;
            if *count == 0 {
                clients.remove(&client);
            }
        }
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        if let Some(client) = self.client {
            self.state.release_client(client);
        }
        let before = self.state.connected.fetch_sub(1, Ordering::AcqRel);
        if before == 1 {
            self.state.all_gone.notify_waiters();
        }
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
                per_client: AtomicUsize::new(0),
                clients: Mutex::new(HashMap::new()),
                events,
                all_gone: Notify::new(),
            }),
        }
    }

    /// Changes the limits; clients already connected stay connected.
    pub fn set(&self, soft: usize, max: usize) {
        self.state.soft.store(soft, Ordering::Relaxed);
        self.state.max.store(max, Ordering::Relaxed);
    }

    /// Changes the per-address limit (0 = none); clients already connected
    /// stay connected.
    pub fn set_per_client(&self, per_client: usize) {
        self.state.per_client.store(per_client, Ordering::Relaxed);
    }

    /// A place for one more stream client from `client`, unless that
    /// address already holds `maxperclient` places or the hard limit is
    /// reached.
    pub fn try_acquire_for(&self, client: IpAddr) -> Result<ConnectionPermit, Refused> {
        {
            let per_client = self.state.per_client.load(Ordering::Relaxed);
            let mut clients = self.state.clients.lock().unwrap();
            let count = clients.entry(client).or_insert(0);
            if per_client > 0 && *count >= per_client {
                if *count == 0 {
                    clients.remove(&client);
                }
                return Err(Refused::PerClient);
            }
            *count += 1;
        }
        match self.try_acquire() {
            Some(mut permit) => {
                permit.client = Some(client);
                Ok(permit)
            }
            None => {
                self.state.release_client(client);
                Err(Refused::Max)
            }
        }
    }

    /// What `try_acquire_for(client)` would answer now, without taking a
    /// place (for `HEAD`, which must get what a `GET` would).
    pub fn would_refuse(&self, client: IpAddr) -> Option<Refused> {
        let per_client = self.state.per_client.load(Ordering::Relaxed);
        if per_client > 0 && self.connected_from(client) >= per_client {
            Some(Refused::PerClient)
        } else if self.is_at_max() {
            Some(Refused::Max)
        } else {
            None
        }
    }

    /// Stream clients connected now from `client`.
    pub fn connected_from(&self, client: IpAddr) -> usize {
        let clients = self.state.clients.lock().unwrap();
        clients.get(&client).copied().unwrap_or(0)
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
            client: None,
        })
    }

    /// Completes once no stream client is connected.
    pub async fn all_gone(&self) {
        loop {
            let notified = self.state.all_gone.notified();
            tokio::pin!(notified);
            // Registered before the count is read: a client leaving in
            // between still wakes us.
            notified.as_mut().enable();
            if self.connected() == 0 {
                return;
            }
            notified.await;
        }
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
    fn each_address_gets_its_share_and_places_come_back() {
        let limits = ConnectionLimits::new(0, 5, None);
        limits.set_per_client(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let a1 = limits.try_acquire_for(a).unwrap();
        let _a2 = limits.try_acquire_for(a).unwrap();
        assert_eq!(limits.try_acquire_for(a).unwrap_err(), Refused::PerClient);
        let b_permits: Vec<_> = (0..2).map(|_| limits.try_acquire_for(b).unwrap()).collect();
        assert_eq!(limits.connected(), 4);
        drop(a1);
        assert_eq!(limits.connected_from(a), 1);
        let _a3 = limits.try_acquire_for(a).unwrap();
        // The hard limit still holds, and a refusal by it keeps no place.
        let c: IpAddr = "192.0.2.3".parse().unwrap();
        let _c1 = limits.try_acquire_for(c).unwrap();
        assert_eq!(limits.try_acquire_for(c).unwrap_err(), Refused::Max);
        assert_eq!(limits.connected_from(c), 1);
        drop(b_permits);
        assert_eq!(limits.connected_from(b), 0);
        limits.set_per_client(0);
        assert!(limits.try_acquire_for(c).is_ok());
    }

    #[test]
    fn would_refuse_tells_what_a_new_client_would_get_and_takes_nothing() {
        let limits = ConnectionLimits::new(0, 3, None);
        limits.set_per_client(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(limits.would_refuse(a), None);
        let _first = limits.try_acquire_for(a).unwrap();
        let _second = limits.try_acquire_for(a).unwrap();
        assert_eq!(limits.would_refuse(a), Some(Refused::PerClient));
        assert_eq!(limits.would_refuse(b), None);
        let _third = limits.try_acquire_for(b).unwrap();
        assert_eq!(limits.would_refuse(b), Some(Refused::Max));
        assert_eq!(limits.connected(), 3, "asking took no place");
    }

    #[test]
    fn zero_means_no_limit() {
        let limits = ConnectionLimits::new(0, 0, None);
        let permits: Vec<_> = (0..10_000).map(|_| limits.try_acquire().unwrap()).collect();
        assert!(!limits.is_full());
        assert_eq!(limits.utilization(), 0.0);
        assert_eq!(limits.connected(), permits.len());
    }

    #[tokio::test]
    async fn waiting_for_all_to_go_ends_when_the_last_client_leaves() {
        let limits = Arc::new(ConnectionLimits::new(0, 0, None));
        limits.all_gone().await; // nobody connected: at once
        let clients: Vec<_> = (0..3).map(|_| limits.try_acquire().unwrap()).collect();
        let waiter = tokio::spawn({
            let limits = Arc::clone(&limits);
            async move { limits.all_gone().await }
        });
        let mut clients = clients.into_iter();
        drop(clients.next());
        drop(clients.next());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "one client is still connected");
        drop(clients.next());
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken when the last client left")
            .unwrap();
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
