//! Progress of an execution, reported as each resource finishes, for a live display (the
//! CLI's per-resource lines) or a controller's events.

use std::sync::Arc;

use super::StepResult;
use crate::plan::Plan;

/// One thing that happened during an execution.
#[derive(Debug, Clone, Copy)]
pub enum RunEvent<'a> {
    /// Execution of `plan` starts.
    Started { plan: &'a Plan },
    /// One resource's change finished (or was blocked), in completion order.
    Finished(&'a StepResult),
}

/// Called from the executor's tasks as things happen; must be cheap and never block.
pub type Progress = Arc<dyn Fn(RunEvent<'_>) + Send + Sync>;

/// A progress sink that ignores everything.
pub fn silent() -> Progress {
    Arc::new(|_| {})
}
