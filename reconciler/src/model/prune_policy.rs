//! `kind: PrunePolicy`: the repository's own word on deleting what it no longer declares.
//!
//! gitvisor deletes an object that a revision stops declaring, unless the revision would
//! delete *everything* it manages on the host: an emptied repository, a wrong `--path`
//! or a bad merge look exactly like that, so those deletes are withheld (and reported).
//! Decommissioning a host is the one time that is what is meant, and it should be said
//! in git, reviewed in a pull request like any other change, rather than typed on the
//! host (`apply --prune`). This document says it:
//!
//! ```yaml
//! apiVersion: gitvisor.dev/v1alpha1
//! kind: PrunePolicy
//! metadata:
//!   name: decommission
//!   host: nuc1            # optional, as for any document
//! spec:
//!   deleteUndeclared: true
//! ```
//!
//! It is a setting of the revision, not a resource on the host: it has no driver, no
//! state and no place in the dependency graph, so it lives here and in the loader only.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Metadata, Origin};

/// The `kind` that names this document.
pub const PRUNE_POLICY_KIND: &str = "PrunePolicy";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PrunePolicySpec {
    /// `true`: delete every object gitvisor manages on this host that the revision does
    /// not declare, even when that is every one of them (decommissioning a host) or they
    /// were last declared by another source: what `apply --prune` does, said in git.
    /// `false`: the default rules (deletes that empty the host are withheld).
    pub delete_undeclared: bool,
}

/// A `PrunePolicy` document as read, and where it was declared.
#[derive(Debug, Clone, PartialEq)]
pub struct PrunePolicy {
    pub metadata: Metadata,
    pub spec: PrunePolicySpec,
    pub origin: Origin,
}

impl PrunePolicy {
    /// `PrunePolicy/name (file:line)`, for messages and the plan.
    pub fn describe(&self) -> String {
        format!(
            "{PRUNE_POLICY_KIND}/{} ({}:{})",
            self.metadata.name,
            self.origin.file.display(),
            self.origin.line
        )
    }
}
