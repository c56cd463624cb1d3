//! [`StepContext`]: what every driver step gets besides the change: a cancellation
//! token, a deadline, and a place to report progress.
//!
//! # Why
//!
//! A VM boot, an image import or a volume's population take seconds to minutes; SIGTERM
//! (systemd stopping the controller) must not wait for all of them, nor cut one off in
//! the middle of a sequence that has to finish together. So cancellation is cooperative:
//!
//! - the executor never starts a step once the run is cancelled;
//! - a driver calls [`StepContext::check`] between the requests of a step, at points
//!   where stopping leaves the host in a state the next plan repairs (every request is
//!   idempotent, and what is about to be created is recorded in the store before the
//!   step runs), and returns the [`Interrupted`] it answers;
//! - a driver waiting on the host (a guest to boot, a copy to finish) waits through
//!   [`StepContext::wait`], which gives up on cancellation or at the deadline.
//!
//! The deadline is the step's budget ([`Driver::step_budget`](super::Driver::step_budget))
//! from the moment it starts; the executor abandons a step that overruns it as hung.
//!
//! Progress goes to the log and, when the caller asked for them, to a channel of
//! [`ProgressEvent`]s (the daemon's event stream).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use super::error::{Classify, FailureClass};
use crate::model::ResourceId;

/// How long a step may run when its driver does not say otherwise.
pub const DEFAULT_STEP_BUDGET: Duration = Duration::from_secs(300);

/// A cancellation signal shared by every step of a run. Cloning shares it; cancelling
/// any clone cancels them all, once and for good.
#[derive(Debug, Clone, Default)]
pub struct CancelToken {
    inner: Arc<CancelState>,
}

#[derive(Debug, Default)]
struct CancelState {
    cancelled: AtomicBool,
    notify: Notify,
}

impl CancelToken {
    pub fn new() -> Self {
        CancelToken::default()
    }

    /// Cancels: no new step starts, and running ones stop at their next check.
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::SeqCst);
        self.inner.notify.notify_waiters();
    }

    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    /// Resolves once cancelled (at once if it already is).
    pub async fn cancelled(&self) {
        loop {
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            // Registered before the flag is read, so a cancel in between still wakes us.
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

/// Why a step stopped before it finished.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Interrupted {
    #[error("cancelled (gitvisor is stopping); the next run carries on from here")]
    Cancelled,
    #[error("the step ran past its deadline of {}", humantime::format_duration(*budget))]
    DeadlineExceeded { budget: Duration },
}

impl Classify for Interrupted {
    fn class(&self) -> FailureClass {
        FailureClass::Transient
    }
}

/// A step's progress note: "image 40% copied", "waiting for the guest to boot".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressEvent {
    pub id: ResourceId,
    pub message: String,
}

/// The cancellation token, deadline and progress sink of one driver step.
#[derive(Debug, Clone)]
pub struct StepContext {
    id: ResourceId,
    cancel: CancelToken,
    budget: Duration,
    deadline: Instant,
    progress: Option<mpsc::UnboundedSender<ProgressEvent>>,
}

impl StepContext {
    /// A step on `id` that starts now and may take `budget`.
    pub fn new(
        id: ResourceId,
        cancel: CancelToken,
        budget: Duration,
        progress: Option<mpsc::UnboundedSender<ProgressEvent>>,
    ) -> Self {
        StepContext {
            id,
            cancel,
            budget,
            deadline: Instant::now() + budget,
            progress,
        }
    }

    /// A step nobody cancels, with the default budget and progress to the log only: for
    /// tools and tests that run one change by hand.
    pub fn detached(id: ResourceId) -> Self {
        StepContext::new(id, CancelToken::new(), DEFAULT_STEP_BUDGET, None)
    }

    pub fn id(&self) -> &ResourceId {
        &self.id
    }

    pub fn cancel_token(&self) -> &CancelToken {
        &self.cancel
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// When the executor abandons the step.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// `Err` when the step should stop here: cancelled, or past its deadline.
    pub fn check(&self) -> Result<(), Interrupted> {
        if self.is_cancelled() {
            Err(Interrupted::Cancelled)
        } else if Instant::now() >= self.deadline {
            Err(Interrupted::DeadlineExceeded {
                budget: self.budget,
            })
        } else {
            Ok(())
        }
    }

    /// Waits for `future` unless the step is cancelled or its deadline passes first (the
    /// future is dropped then). For waiting on the host, not for a request whose effect
    /// must be known: dropping one in flight leaves its outcome unknown.
    pub async fn wait<F: Future>(&self, future: F) -> Result<F::Output, Interrupted> {
        self.check()?;
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => Err(Interrupted::Cancelled),
            () = tokio::time::sleep_until(self.deadline) => Err(Interrupted::DeadlineExceeded {
                budget: self.budget,
            }),
            output = future => Ok(output),
        }
    }

    /// Reports progress of a long step: logged, and sent to the run's progress channel
    /// when there is one.
    pub fn progress(&self, message: impl Into<String>) {
        let message = message.into();
        tracing::info!(id = %self.id, "{message}");
        if let Some(sender) = &self.progress {
            // The receiver went away: nobody listens any more, the log has it.
            let _ = sender.send(ProgressEvent {
                id: self.id.clone(),
                message,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Kind, Name};

    fn id() -> ResourceId {
        ResourceId::new(Kind::Volume, Name::parse("data").expect("valid"))
    }

    #[tokio::test]
    async fn a_cancel_reaches_every_clone_and_wakes_waiters() {
        let token = CancelToken::new();
        let step = StepContext::new(id(), token.clone(), DEFAULT_STEP_BUDGET, None);
        assert_eq!(step.check(), Ok(()));
        let waiting = {
            let step = step.clone();
            tokio::spawn(async move { step.wait(std::future::pending::<()>()).await })
        };
        tokio::task::yield_now().await;
        token.cancel();
        assert_eq!(waiting.await.unwrap(), Err(Interrupted::Cancelled));
        assert_eq!(step.check(), Err(Interrupted::Cancelled));
        // Already cancelled: resolves at once.
        token.cancelled().await;
    }

    #[tokio::test]
    async fn a_wait_gives_up_at_the_deadline() {
        // The awaited future never resolves: only the deadline can end the wait.
        let budget = Duration::from_millis(20);
        let step = StepContext::new(id(), CancelToken::new(), budget, None);
        let result = step.wait(std::future::pending::<()>()).await;
        assert_eq!(result, Err(Interrupted::DeadlineExceeded { budget }));
        assert_eq!(step.check(), Err(Interrupted::DeadlineExceeded { budget }));
        let fresh = StepContext::detached(id());
        assert_eq!(fresh.wait(async { 7 }).await, Ok(7));
    }

    #[tokio::test]
    async fn progress_reaches_the_runs_channel() {
        let (sender, mut receiver) = mpsc::unbounded_channel();
        let step = StepContext::new(id(), CancelToken::new(), DEFAULT_STEP_BUDGET, Some(sender));
        step.progress("image 40% copied");
        assert_eq!(
            receiver.recv().await,
            Some(ProgressEvent {
                id: id(),
                message: "image 40% copied".into()
            })
        );
    }
}
