//! Changes a plan leaves out on purpose, with why: deletes nobody confirmed, and changes
//! outside `--target`.
//!
//! The decision is made once, when the plan is made (`crate::reconcile`), and both `plan`
//! and `apply` read it from here, so what `plan` shows is what `apply` does.

use std::fmt;

use serde::Serialize;

use super::{Action, Change};

/// Why a change is not carried out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "skip")]
pub enum SkipReason {
    /// `--no-prune`: no delete at all.
    NoPrune,
    /// Neither a `--target` nor something a target depends on.
    OutsideTarget,
    /// The object was last declared by another source than this revision's (another
    /// manifest path, or another set of paths); `--prune` confirms the delete.
    #[serde(rename_all = "camelCase")]
    OtherSource { declared_by: String },
    /// The store cannot tell which source last declared the object (an interrupted first
    /// apply, or a record older than source tracking); `--prune` confirms the delete.
    UnknownSource,
    /// The revision would delete every resource gitvisor manages here, as an emptied
    /// repository or a wrong path would; `--prune` confirms it.
    DeletesEverything { count: usize },
    /// The controller holds the change back: it failed and waits for its retry (with
    /// backoff), for a new revision (a failure only a person can fix), or for a
    /// dependency that is itself held back.
    #[serde(rename_all = "camelCase")]
    Deferred { why: String },
}

impl SkipReason {
    /// Whether `--prune` turns this skip into a delete.
    pub fn needs_prune(&self) -> bool {
        matches!(
            self,
            SkipReason::OtherSource { .. }
                | SkipReason::UnknownSource
                | SkipReason::DeletesEverything { .. }
        )
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::NoPrune => f.write_str("--no-prune: nothing is deleted"),
            SkipReason::OutsideTarget => f.write_str("outside --target"),
            SkipReason::OtherSource { declared_by } => write!(
                f,
                "last declared by another source ({}); apply --prune to delete it",
                declared_by.replace('\n', " ")
            ),
            SkipReason::UnknownSource => f.write_str(
                "the store does not know which source declared it; apply --prune to delete it",
            ),
            SkipReason::Deferred { why } => write!(f, "deferred: {why}"),
            SkipReason::DeletesEverything { count } => write!(
                f,
                "this revision would delete every resource gitvisor manages here ({count}); \
                 apply --prune to confirm"
            ),
        }
    }
}

/// A change the plan does not carry out.
#[derive(Debug, Clone)]
pub struct Skipped {
    pub change: Change,
    pub reason: SkipReason,
}

impl Skipped {
    /// A delete left out, i.e. an object gitvisor keeps although it is not declared.
    pub fn is_delete(&self) -> bool {
        self.change.action == Action::Delete
    }
}
