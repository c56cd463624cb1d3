//! How a run is executed: its concurrency bound, its cancellation token and where step
//! progress goes.

use tokio::sync::mpsc;

use super::DEFAULT_CONCURRENCY;
use crate::contract::{CancelToken, ProgressEvent};

#[derive(Debug, Clone)]
pub struct ExecuteOptions {
    /// At most this many driver steps at once (at least one).
    pub concurrency: usize,
    /// Cancelling it (SIGTERM in the daemon) starts no further step; running steps stop
    /// at their next safe point, and the report marks them and the rest `cancelled`.
    pub cancel: CancelToken,
    /// Where long steps report progress, besides the log.
    pub progress: Option<mpsc::UnboundedSender<ProgressEvent>>,
}

impl ExecuteOptions {
    pub fn new(concurrency: usize) -> Self {
        ExecuteOptions {
            concurrency,
            cancel: CancelToken::new(),
            progress: None,
        }
    }

    pub fn with_cancel(mut self, cancel: CancelToken) -> Self {
        self.cancel = cancel;
        self
    }

    pub fn with_progress(mut self, progress: mpsc::UnboundedSender<ProgressEvent>) -> Self {
        self.progress = Some(progress);
        self
    }
}

impl Default for ExecuteOptions {
    fn default() -> Self {
        ExecuteOptions::new(DEFAULT_CONCURRENCY)
    }
}
