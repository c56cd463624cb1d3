//! Changes a plan leaves out on purpose, with why: deletes nobody confirmed, and changes
//! outside `--target`.
//!
//! The decision is made once, when the plan is made (`crate::reconcile`), and both `plan`
//! and `apply` read it from here, so what `plan` shows is what `apply` does.
//!
//! The deletes withheld for want of a confirmation ([`PruneWithheld`]) are objects that
//! keep running although nothing declares them; the controller reports them in `status`,
//! as an event and as the `gitvisor_prune_withheld` gauge, so that an emptied repository
//! never reads as plain "converged".

use std::fmt;

use serde::Serialize;

use super::{Action, Change, Plan};

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
    /// repository or a wrong path would; a `PrunePolicy` document with
    /// `deleteUndeclared: true` (or `--prune`) confirms it.
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
                "this revision would delete every resource gitvisor manages here ({count}), \
                 as an emptied repository would; to decommission the host, commit a \
                 PrunePolicy with deleteUndeclared: true (or apply --prune)"
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

/// The deletes a plan withholds until someone confirms them: every object kept although
/// the revision does not declare it, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PruneWithheld {
    pub count: usize,
    /// Why they are kept, in a few words (`emptied repository`, ...).
    pub why: String,
    /// How to let them go.
    pub fix: String,
    /// `Kind/name` of each, in plan order.
    pub resources: Vec<String>,
}

impl fmt::Display for PruneWithheld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "prune withheld: {} resource{} kept ({}; {}): {}",
            self.count,
            if self.count == 1 { "" } else { "s" },
            self.why,
            self.fix,
            self.resources.join(", ")
        )
    }
}

impl Plan {
    /// The deletes left out for want of a confirmation (`--no-prune` and `--target` are
    /// confirmations of their own and are not counted); `None` when there are none.
    pub fn prune_withheld(&self) -> Option<PruneWithheld> {
        let withheld: Vec<&Skipped> = self
            .skipped
            .iter()
            .filter(|s| s.is_delete() && s.reason.needs_prune())
            .collect();
        if withheld.is_empty() {
            return None;
        }
        let mut why: Vec<&str> = Vec::new();
        for skipped in &withheld {
            let reason = match skipped.reason {
                SkipReason::DeletesEverything { .. } => {
                    "emptied repository: the revision declares nothing gitvisor manages here"
                }
                SkipReason::OtherSource { .. } => "last declared by another source",
                _ => "the store does not know which source declared them",
            };
            if !why.contains(&reason) {
                why.push(reason);
            }
        }
        Some(PruneWithheld {
            count: withheld.len(),
            why: why.join("; "),
            fix: "commit a PrunePolicy with deleteUndeclared: true to delete them, \
                  or run apply --prune"
                .to_owned(),
            resources: withheld.iter().map(|s| s.change.id.to_string()).collect(),
        })
    }
}
