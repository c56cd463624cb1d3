//! How a run is executed: its concurrency bound, its cancellation token and where step
//! progress goes.

use tokio::sync::mpsc;

use super::{DEFAULT_CONCURRENCY, Progress, silent};
use crate::contract::{CancelToken, ProgressEvent};

#[derive(Clone)]
pub struct ExecuteOptions {
    /// At most this many driver steps at once (at least one).
    pub concurrency: usize,
    /// Cancelling it (SIGTERM in the daemon) starts no further step; running steps stop
    /// at their next safe point, and the report marks them and the rest `cancelled`.
    pub cancel: CancelToken,
    /// Where long steps report progress, besides the log.
    pub progress: Option<mpsc::UnboundedSender<ProgressEvent>>,
    /// Told when the run starts and as each change finishes (the CLI's per-resource lines).
    pub events: Progress,
}

impl ExecuteOptions {
    pub fn new(concurrency: usize) -> Self {
        ExecuteOptions {
            concurrency,
            cancel: CancelToken::new(),
            progress: None,
            events: silent(),
        }
    }

    pub fn with_cancel(mut self, cancel: CancelToken) -> Self {
        self.cancel = cancel;
        self
    }

    /// Tells `events` when the run starts and as each change finishes.
    pub fn with_events(mut self, events: Progress) -> Self {
        self.events = events;
        self
    }

    pub fn with_progress(mut self, progress: mpsc::UnboundedSender<ProgressEvent>) -> Self {
        self.progress = Some(progress);
        self
    }
}

impl std::fmt::Debug for ExecuteOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecuteOptions")
            .field("concurrency", &self.concurrency)
            .field("cancel", &self.cancel)
            .field("progress", &self.progress)
            .finish_non_exhaustive()
    }
}

impl Default for ExecuteOptions {
    fn default() -> Self {
        ExecuteOptions::new(DEFAULT_CONCURRENCY)
    }
}
