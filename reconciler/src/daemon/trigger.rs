//! Why the controller should reconcile, as other tasks tell the loop, and the reasons a
//! reconcile ran for.
//!
//! Triggers arrive from tasks outside the loop: the directory watch (a file event), the
//! API (`gitvisor sync`) and SIGHUP. Each sets a flag and wakes the loop, which turns
//! what it takes into entries of its one queue ([`super::scheduler`]), where timers,
//! retries, restart backoffs and drivers' watches wait too. A `sync` request also
//! leaves a reply channel, which the reconcile that serves it answers.

use std::sync::Mutex;

use serde::Serialize;
use tokio::sync::{Notify, oneshot};

/// The reasons gathered for the next reconcile.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reasons {
    /// The source may have a new revision (file event, poll tick).
    pub source: bool,
    /// The resync timer: look for drift and repair it.
    pub resync: bool,
    /// A held-back resource's retry fell due.
    pub retry: bool,
    /// A container died and its `restartPolicy` restarts it now.
    pub container: bool,
    /// Someone asked (`gitvisor sync`): fetch, forget every hold, apply.
    pub request: bool,
    /// SIGHUP: as a request.
    pub reload: bool,
    /// A driver's watch said a resource may have changed.
    pub watch: bool,
}

impl Reasons {
    pub fn any(&self) -> bool {
        self.source
            || self.resync
            || self.retry
            || self.container
            || self.request
            || self.reload
            || self.watch
    }

    /// Both sets of reasons.
    pub fn with(self, other: Reasons) -> Reasons {
        Reasons {
            source: self.source || other.source,
            resync: self.resync || other.resync,
            retry: self.retry || other.retry,
            container: self.container || other.container,
            request: self.request || other.request,
            reload: self.reload || other.reload,
            watch: self.watch || other.watch,
        }
    }

    /// Whether a person asked for this reconcile (holds are forgotten).
    pub fn asked(&self) -> bool {
        self.request || self.reload
    }

    /// The reasons in words, for logs and status: `source+resync`.
    pub fn describe(&self) -> String {
        let names = [
            (self.source, "source"),
            (self.resync, "resync"),
            (self.retry, "retry"),
            (self.container, "container"),
            (self.request, "sync"),
            (self.reload, "reload"),
            (self.watch, "watch"),
        ];
        let words: Vec<&str> = names
            .iter()
            .filter(|(set, _)| *set)
            .map(|(_, name)| *name)
            .collect();
        if words.is_empty() {
            "none".to_owned()
        } else {
            words.join("+")
        }
    }
}

/// One kind of trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A file event that may be the middle of a write.
    Source,
    /// A file closed after writing: the source may have a new revision, and that
    /// writer is done (a shorter debounce, [`super::scheduler::WRITTEN_QUIET`]).
    Written,
    Resync,
    Reload,
}

/// The outcome of the reconcile that answered a sync request.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncOutcome {
    /// The revision applied (the last good one when the source's is rejected).
    pub revision: Option<String>,
    /// Every resource is as declared.
    pub converged: bool,
    /// Why the source's newest revision was rejected, if it was.
    pub rejected: Option<String>,
    /// Why the source could not be read, if it could not.
    pub source_error: Option<String>,
    /// What the reconcile did, in one line.
    pub summary: String,
}

/// What was fired since the last [`Triggers::take`].
#[derive(Default)]
pub struct Fired {
    pub reasons: Reasons,
    /// The last file event was a file closed after writing ([`Trigger::Written`]), not
    /// one that may be the middle of a write.
    pub written: bool,
    pub replies: Vec<oneshot::Sender<SyncOutcome>>,
}

/// The flags and reply channels gathered so far, and the loop's wake-up.
#[derive(Default)]
pub struct Triggers {
    pending: Mutex<Fired>,
    wake: Notify,
}

impl Triggers {
    pub fn fire(&self, trigger: Trigger) {
        self.update(|pending| match trigger {
            Trigger::Source => {
                pending.reasons.source = true;
                pending.written = false;
            }
            Trigger::Written => {
                pending.reasons.source = true;
                pending.written = true;
            }
            Trigger::Resync => pending.reasons.resync = true,
            Trigger::Reload => pending.reasons.reload = true,
        });
    }

    /// A sync request: answered through the returned channel by the reconcile that
    /// takes it.
    pub fn request(&self) -> oneshot::Receiver<SyncOutcome> {
        let (sender, receiver) = oneshot::channel();
        self.update(|pending| {
            pending.reasons.request = true;
            pending.replies.push(sender);
        });
        receiver
    }

    fn update(&self, change: impl FnOnce(&mut Fired)) {
        match self.pending.lock() {
            Ok(mut pending) => change(&mut pending),
            Err(poisoned) => change(&mut poisoned.into_inner()),
        }
        self.wake.notify_one();
    }

    /// Waits until something was fired since the last [`Triggers::take`].
    pub async fn wait(&self) {
        self.wake.notified().await;
    }

    /// Everything fired so far; the flags are cleared.
    pub fn take(&self) -> Fired {
        match self.pending.lock() {
            Ok(mut pending) => std::mem::take(&mut *pending),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_collapses_into_one_set_of_reasons() {
        let triggers = Triggers::default();
        for _ in 0..50 {
            triggers.fire(Trigger::Source);
        }
        triggers.fire(Trigger::Resync);
        let reply = triggers.request();
        triggers.wait().await;
        let Fired {
            reasons,
            written,
            replies,
        } = triggers.take();
        assert!(!written);
        assert_eq!(
            reasons,
            Reasons {
                source: true,
                resync: true,
                request: true,
                ..Reasons::default()
            }
        );
        assert_eq!(reasons.describe(), "source+resync+sync");
        assert_eq!(replies.len(), 1);
        let again = triggers.take();
        assert!(!again.reasons.any() && again.replies.is_empty());
        drop(reply);
    }

    #[tokio::test]
    async fn a_write_is_over_only_when_the_last_file_event_closed_a_file() {
        let triggers = Triggers::default();
        triggers.fire(Trigger::Source);
        triggers.fire(Trigger::Written);
        let fired = triggers.take();
        assert!(fired.reasons.source && fired.written);
        triggers.fire(Trigger::Written);
        triggers.fire(Trigger::Source);
        let fired = triggers.take();
        assert!(fired.reasons.source && !fired.written);
    }
}
