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
//!   [`StepContext::wait`], which gives up on cancellation or at the deadline;
//! - a step waiting for work shared with other steps (one transaction joining many
//!   resources' changes) waits through [`StepContext::wait_off_slot`], which lends its
//!   executor slot to another step meanwhile, so the wait does not hold up the run.
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

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
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
    /// The executor slot (bounded concurrency) the step holds, when it runs under one.
    slot: Option<Arc<Slot>>,
}

/// One of the executor's bounded slots, held by a running step.
#[derive(Debug)]
struct Slot {
    semaphore: Arc<Semaphore>,
    permit: std::sync::Mutex<Option<OwnedSemaphorePermit>>,
}

impl Slot {
    fn set(&self, permit: Option<OwnedSemaphorePermit>) {
        // A poisoned lock only means another clone panicked while swapping the permit;
        // the permit inside is still the one to keep or release.
        let mut held = self
            .permit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *held = permit;
    }
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
            slot: None,
        }
    }

    /// The same step, holding `permit` of the executor's `semaphore` (see
    /// [`StepContext::wait_off_slot`]).
    pub fn with_slot(mut self, semaphore: Arc<Semaphore>, permit: OwnedSemaphorePermit) -> Self {
        self.slot = Some(Arc::new(Slot {
            semaphore,
            permit: std::sync::Mutex::new(Some(permit)),
        }));
        self
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

    /// [`StepContext::wait`], lending the step's executor slot to another step while it
    /// waits and taking a slot again before it returns: for waiting on work that other
    /// steps share (one transaction joining many resources' changes), so that the steps
    /// waiting for it do not stop every other step of the run from starting.
    pub async fn wait_off_slot<F: Future>(&self, future: F) -> Result<F::Output, Interrupted> {
        let Some(slot) = &self.slot else {
            return self.wait(future).await;
        };
        slot.set(None);
        let output = self.wait(future).await;
        let permit = self.wait(slot.semaphore.clone().acquire_owned()).await?;
        // Closed only when the executor is gone, and then nobody bounds anything.
        slot.set(permit.ok());
        output
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
    async fn a_step_waiting_off_its_slot_lets_another_step_run_then_takes_a_slot_again() {
        let semaphore = Arc::new(Semaphore::new(1));
        let permit = semaphore.clone().acquire_owned().await.expect("a slot");
        let step = StepContext::new(id(), CancelToken::new(), DEFAULT_STEP_BUDGET, None)
            .with_slot(semaphore.clone(), permit);
        let (done, shared_work) = tokio::sync::oneshot::channel::<u32>();
        let other = {
            let semaphore = semaphore.clone();
            tokio::spawn(async move {
                // Gets the only slot only because the waiting step lent it.
                let _slot = semaphore.acquire().await.expect("a slot");
                done.send(7).expect("the step waits");
            })
        };
        let output = step.wait_off_slot(shared_work).await;
        assert_eq!(output, Ok(Ok(7)));
        other.await.expect("the other step ran");
        // The step holds a slot again: none is free for anyone else.
        assert_eq!(semaphore.available_permits(), 0);
        drop(step);
        assert_eq!(semaphore.available_permits(), 1);
    }

    #[tokio::test]
    async fn waiting_off_a_slot_without_one_is_a_plain_wait_and_still_cancellable() {
        let token = CancelToken::new();
        let step = StepContext::new(id(), token.clone(), DEFAULT_STEP_BUDGET, None);
        assert_eq!(step.wait_off_slot(async { 3 }).await, Ok(3));
        token.cancel();
        assert_eq!(
            step.wait_off_slot(std::future::pending::<()>()).await,
            Err(Interrupted::Cancelled)
        );
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
