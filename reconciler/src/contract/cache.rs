//! A driver's last observation, reused by its next plan while nothing can have changed.
//!
//! # Why
//!
//! A plan observes the whole kind in one batch (a link dump, `nft -j list table`, …).
//! In the controller most plans find nothing to do, and the host told us whether anything
//! changed: a driver that watches ([`super::watch`]) hears of every change it can be told
//! of. So while the watch runs, a plan reuses the last observation unless something
//! said "this may have changed" since:
//!
//! - the driver's watch task, for a change the host announced ([`ObservationCache::invalidate`]);
//! - the driver's own `apply`, which changed the host itself (the same call);
//! - the controller's resync and a person's `sync`/SIGHUP ([`expire_all`]), which look
//!   again at what no watch announces (a process that died without a sound, a sysctl
//!   switch).
//!
//! Until [`ObservationCache::start_watching`] is called (one-shot commands never watch),
//! every plan observes, exactly as before. A cached observation is never older than the
//! last invalidation: the epoch is read *before* observing, so a change announced while
//! the observation was running makes the next plan observe again. Saying "changed" too
//! often costs one observation; too rarely would plan from a stale host, so every doubt
//! invalidates.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Bumped by [`expire_all`]: every cache of the process compares it too.
static GLOBAL_EPOCH: AtomicU64 = AtomicU64::new(0);

/// Makes every cache of this process observe again at its next plan (the resync, a
/// person's `sync` or SIGHUP).
pub fn expire_all() {
    GLOBAL_EPOCH.fetch_add(1, Ordering::SeqCst);
}

/// The last observation of one driver, valid while its epoch is current.
#[derive(Debug, Default)]
pub struct ObservationCache<T> {
    epoch: AtomicU64,
    watching: AtomicBool,
    last: std::sync::Mutex<Option<Cached<T>>>,
}

#[derive(Debug)]
struct Cached<T> {
    epoch: (u64, u64),
    value: Arc<T>,
}

impl<T> ObservationCache<T> {
    pub fn new() -> Self {
        ObservationCache {
            epoch: AtomicU64::new(0),
            watching: AtomicBool::new(false),
            last: std::sync::Mutex::new(None),
        }
    }

    /// The driver's watch runs: from now on a plan may reuse the last observation.
    pub fn start_watching(&self) {
        self.invalidate();
        self.watching.store(true, Ordering::SeqCst);
    }

    /// The driver's watch ended: every plan observes again.
    pub fn stop_watching(&self) {
        self.watching.store(false, Ordering::SeqCst);
        self.invalidate();
    }

    /// The host may have changed (an announcement, or this driver's own apply).
    pub fn invalidate(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    fn current(&self) -> (u64, u64) {
        (
            self.epoch.load(Ordering::SeqCst),
            GLOBAL_EPOCH.load(Ordering::SeqCst),
        )
    }

    /// The last observation when it is still current and the driver watches; otherwise
    /// `observe`'s answer, kept for the next plan. An error is never kept.
    pub async fn get_or_observe<E, F, Fut>(&self, observe: F) -> Result<Arc<T>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let watching = self.watching.load(Ordering::SeqCst);
        let epoch = self.current();
        if watching
            && let Some(hit) = self.with_last(|last| {
                last.as_ref()
                    .filter(|cached| cached.epoch == epoch)
                    .map(|cached| cached.value.clone())
            })
        {
            return Ok(hit);
        }
        let value = Arc::new(observe().await?);
        if watching {
            self.with_last(|last| {
                *last = Some(Cached {
                    epoch,
                    value: value.clone(),
                })
            });
        }
        Ok(value)
    }

    fn with_last<R>(&self, f: impl FnOnce(&mut Option<Cached<T>>) -> R) -> R {
        match self.last.lock() {
            Ok(mut last) => f(&mut last),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }
}

/// What a watch task does to a cache whatever it holds: switch it on, invalidate it.
pub trait Invalidate: Send + Sync {
    fn start_watching(&self);
    fn stop_watching(&self);
    fn invalidate(&self);
}

impl<T: Send + Sync> Invalidate for ObservationCache<T> {
    fn start_watching(&self) {
        ObservationCache::start_watching(self);
    }

    fn stop_watching(&self) {
        ObservationCache::stop_watching(self);
    }

    fn invalidate(&self) {
        ObservationCache::invalidate(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    async fn observe(cache: &ObservationCache<usize>, count: &AtomicUsize) -> usize {
        *cache
            .get_or_observe(|| async { Ok::<_, ()>(count.fetch_add(1, Ordering::SeqCst) + 1) })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn without_a_watch_every_plan_observes() {
        let cache = ObservationCache::new();
        let count = AtomicUsize::new(0);
        observe(&cache, &count).await;
        observe(&cache, &count).await;
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn while_watching_only_an_invalidation_observes_again() {
        let cache = ObservationCache::new();
        let count = AtomicUsize::new(0);
        cache.start_watching();
        assert_eq!(observe(&cache, &count).await, 1);
        assert_eq!(observe(&cache, &count).await, 1, "reused");
        cache.invalidate();
        assert_eq!(observe(&cache, &count).await, 2);
        assert_eq!(observe(&cache, &count).await, 2);
        expire_all();
        assert_eq!(observe(&cache, &count).await, 3, "the resync looks again");
    }

    #[tokio::test]
    async fn a_change_announced_during_the_observation_is_not_lost() {
        let cache = ObservationCache::<usize>::new();
        cache.start_watching();
        let first = cache
            .get_or_observe(|| async {
                cache.invalidate();
                Ok::<_, ()>(1)
            })
            .await
            .unwrap();
        assert_eq!(*first, 1);
        let second = cache
            .get_or_observe(|| async { Ok::<_, ()>(2) })
            .await
            .unwrap();
        assert_eq!(*second, 2);
    }

    #[tokio::test]
    async fn an_error_is_not_kept() {
        let cache = ObservationCache::<usize>::new();
        cache.start_watching();
        assert!(cache.get_or_observe(|| async { Err("no") }).await.is_err());
        let value = cache
            .get_or_observe(|| async { Ok::<_, &str>(7) })
            .await
            .unwrap();
        assert_eq!(*value, 7);
    }
}
