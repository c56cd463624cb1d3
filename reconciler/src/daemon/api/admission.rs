//! How many connections a listener serves at once, so that no client can spend the
//! controller's file descriptors.
//!
//! Every accepted connection is a descriptor, and the controller needs its own for git,
//! the store, the drivers' child processes and the API socket. Without a bound, 1200
//! unfinished requests on the unauthenticated metrics port took every descriptor the
//! controller had (under systemd's default soft limit of 1024): `status` went unanswered
//! and new commits were missed. So each listener takes a [`Permit`] per connection from a
//! fixed pool; a connection beyond the pool is closed at once (it held a descriptor for
//! the time of one `accept`), and the listeners' pools are separate, so a flood on one
//! does not shut the other. Refusals are logged at most once a minute (a flood must not
//! flood the journal too).
//!
//! The soft `RLIMIT_NOFILE` is left as the service manager set it rather than raised:
//! the containers, guests and tools the controller starts inherit it, and with these
//! pools the controller's own use stays far below systemd's default of 1024 (84
//! descriptors under a flood of 1200 connections, measured by the e2e test).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// How often a listener says it is refusing connections.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// A connection's place in its listener's pool; dropping it frees the place.
pub type Permit = OwnedSemaphorePermit;

/// One listener's pool of connections.
#[derive(Debug)]
pub struct Admission {
    listener: &'static str,
    limit: usize,
    places: Arc<Semaphore>,
    refused: AtomicU64,
    last_warned: std::sync::Mutex<Option<Instant>>,
}

impl Admission {
    /// A pool of `limit` connections for the listener called `listener` in logs.
    pub fn new(listener: &'static str, limit: usize) -> Admission {
        Admission {
            listener,
            limit,
            places: Arc::new(Semaphore::new(limit)),
            refused: AtomicU64::new(0),
            last_warned: std::sync::Mutex::new(None),
        }
    }

    /// A place for a connection just accepted, or `None` when the pool is full: the
    /// caller then drops the connection, closing it.
    pub fn admit(&self) -> Option<Permit> {
        match self.places.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
                let mut last = self
                    .last_warned
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if last.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    *last = Some(Instant::now());
                    tracing::warn!(
                        listener = self.listener,
                        limit = self.limit,
                        refused,
                        "too many connections at once; closing new ones until some finish"
                    );
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_pool_refuses_until_a_place_is_freed() {
        let pool = Admission::new("test", 2);
        let first = pool.admit().expect("a place");
        let _second = pool.admit().expect("a place");
        assert!(pool.admit().is_none(), "a third connection is refused");
        drop(first);
        assert!(pool.admit().is_some(), "a freed place is given again");
        assert_eq!(pool.refused.load(Ordering::Relaxed), 1);
    }
}
