//! Why the controller should reconcile, collected until it does.
//!
//! Triggers arrive from the source (a file event, a poll), the resync timer, a retry
//! falling due, a container that died and that its `restartPolicy` restarts
//! ([`super::supervision`]), the API (`gitvisor sync`) and SIGHUP. Each sets a flag and wakes the loop;
//! the loop takes every flag set so far at once, so a burst of triggers (a `git checkout`
//! touching fifty files, a sync during a resync) collapses into one reconcile, and only
//! one reconcile ever runs at a time. A `sync` request also leaves a reply channel, which
//! the reconcile that takes it answers.

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
    /// A driver's watch heard the host announce a change (`daemon/watches.rs`).
    pub host: bool,
    /// Someone asked (`gitvisor sync`): fetch, forget every hold, apply.
    pub request: bool,
    /// SIGHUP: as a request.
    pub reload: bool,
}

impl Reasons {
    pub fn any(&self) -> bool {
        self.source
            || self.resync
            || self.retry
            || self.container
            || self.host
            || self.request
            || self.reload
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
            (self.host, "host"),
            (self.request, "sync"),
            (self.reload, "reload"),
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
    Source,
    Resync,
    Retry,
    Container,
    /// A watch's event (debounced).
    Host,
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

#[derive(Default)]
struct Pending {
    reasons: Reasons,
    replies: Vec<oneshot::Sender<SyncOutcome>>,
}

/// The flags and reply channels gathered so far, and the loop's wake-up.
#[derive(Default)]
pub struct Triggers {
    pending: Mutex<Pending>,
    wake: Notify,
    /// Woken on every source trigger, for debouncing a burst of file events.
    source: Notify,
}

impl Triggers {
    pub fn fire(&self, trigger: Trigger) {
        self.update(|pending| match trigger {
            Trigger::Source => pending.reasons.source = true,
            Trigger::Resync => pending.reasons.resync = true,
            Trigger::Retry => pending.reasons.retry = true,
            Trigger::Container => pending.reasons.container = true,
            Trigger::Host => pending.reasons.host = true,
            Trigger::Reload => pending.reasons.reload = true,
        });
        if trigger == Trigger::Source {
            self.source.notify_one();
        }
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

    fn update(&self, change: impl FnOnce(&mut Pending)) {
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

    /// Waits for the next source trigger (for debouncing).
    pub async fn next_source_event(&self) {
        self.source.notified().await;
    }

    /// The reasons gathered so far, without taking them.
    pub fn peek(&self) -> Reasons {
        match self.pending.lock() {
            Ok(pending) => pending.reasons,
            Err(poisoned) => poisoned.into_inner().reasons,
        }
    }

    /// Everything fired so far; the flags are cleared.
    pub fn take(&self) -> (Reasons, Vec<oneshot::Sender<SyncOutcome>>) {
        let taken = match self.pending.lock() {
            Ok(mut pending) => std::mem::take(&mut *pending),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        (taken.reasons, taken.replies)
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
        let (reasons, replies) = triggers.take();
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
        let (again, replies) = triggers.take();
        assert!(!again.any() && replies.is_empty());
        drop(reply);
    }
}
