//! The focus of a targeted reconcile: what a new revision changed, and everything whose
//! state a plan of only that could get wrong.
//!
//! The controller applies a new revision by planning only the resources it changed
//! (added, edited, removed: [`changed_between`]) instead of observing and diffing every
//! resource of every kind again. What it leaves out is *carried*: planned as a no-op
//! and recorded under the new revision, exactly as a full reconcile that found nothing
//! to do records it, so the store ends the same either way. That is sound only for a
//! resource whose last apply of the same spec converged and that nothing announced a
//! change to since (a watch's event is its own reconcile). So [`focus`] adds to what
//! changed:
//!
//! - everything that depends on it, transitively (a bridge's subnet used by a
//!   container's address), as
//!   [`transitive_dependents`](crate::graph::DependencyGraph::transitive_dependents)
//!   finds it;
//! - every declared resource the store does not show converged at its declared spec
//!   (no record, a pending create, another spec hash, a state other than `Ready`: a
//!   failure, a hold, a conflict);
//! - every object the store owns that the revision does not declare, so the prune rules
//!   decide about each as in a full reconcile (the resource removed by this revision
//!   among them).
//!
//! Validation is not narrowed: the whole revision is loaded and checked before any of
//! this, and a revision with an error is rejected whole.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::load::Revision;
use crate::model::{Resource, ResourceId};
use crate::state::{OwnedRecord, ResourceState, ResourceStatus};

/// The resources `new` adds or changes (spec, metadata or where it is declared) and
/// those `old` declared that `new` no longer does.
pub fn changed_between(old: &Revision, new: &Revision) -> BTreeSet<ResourceId> {
    let before: BTreeMap<ResourceId, &Arc<Resource>> =
        old.resources.iter().map(|r| (r.id(), r)).collect();
    let mut changed = BTreeSet::new();
    let mut declared = BTreeSet::new();
    for resource in &new.resources {
        let id = resource.id();
        if before.get(&id).is_none_or(|old| **old != *resource) {
            changed.insert(id.clone());
        }
        declared.insert(id);
    }
    changed.extend(before.into_keys().filter(|id| !declared.contains(id)));
    changed
}

/// What a targeted reconcile of `revision` for `changed` must plan (see the module
/// docs), given the store's records and statuses.
pub fn focus(
    revision: &Revision,
    changed: &BTreeSet<ResourceId>,
    owned: &BTreeMap<ResourceId, OwnedRecord>,
    statuses: &BTreeMap<ResourceId, ResourceStatus>,
) -> BTreeSet<ResourceId> {
    let mut focus: BTreeSet<ResourceId> = changed.clone();
    for id in changed {
        focus.extend(revision.graph.transitive_dependents(id));
    }
    let mut declared = BTreeSet::new();
    for resource in &revision.resources {
        let id = resource.id();
        if !converged(resource, owned.get(&id), statuses.get(&id)) {
            focus.extend(revision.graph.transitive_dependents(&id));
            focus.insert(id.clone());
        }
        declared.insert(id);
    }
    focus.extend(owned.keys().filter(|id| !declared.contains(*id)).cloned());
    focus
}

/// Whether the store shows `resource` converged at its declared spec.
fn converged(
    resource: &Resource,
    owned: Option<&OwnedRecord>,
    status: Option<&ResourceStatus>,
) -> bool {
    let Some(owned) = owned.filter(|o| !o.pending) else {
        return false;
    };
    status.is_some_and(|s| s.state == ResourceState::Ready)
        && resource
            .spec_hash()
            .is_ok_and(|hash| !owned.spec_hash.is_empty() && hash == owned.spec_hash)
}
