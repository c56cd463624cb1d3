//! [`PlanContext`]: what a driver knows besides the host when it plans.
//!
//! - `owned`: what the state store records as created (or being created) by gitvisor.
//!   Half of the ownership rule (see [`ownership`](super::ownership)); the marker on the
//!   object is the other half.
//! - the revision, resolved for this host: every declared resource of every kind, so a
//!   driver can follow its references. A VirtualMachine driver looks up the Volume a disk
//!   names (`context.referenced(Kind::Volume, &disk.volume)`) for its volume group and
//!   so its device path `/dev/VG/NAME`, and the Bridge a NIC names; a Container driver
//!   its bridge and its mounts. The executor creates what a resource references before
//!   the resource itself (graph order), so what the declaration says is on the host by
//!   the time apply runs; a driver that must read the referenced object's live state
//!   (a device's major:minor) reads it in apply, through its own seam.
//!
//! - the focus of a targeted reconcile ([`PlanContext::in_focus`]): the controller applies
//!   a new revision by planning only what changed in it (and what depends on that).
//!   [`make_plan`](crate::plan::make_plan_focused) does not call a driver whose kind has
//!   nothing in focus; a driver that is called may return a resource out of focus as
//!   [`Change::carried`] instead of diffing it against the host, or plan it as usual.
//!
//! [`make_plan`](crate::plan::make_plan) attaches the revision; callers only give
//! ownership ([`PlanContext::new`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::model::{Kind, Name, Resource, ResourceId};

#[derive(Debug, Clone, Default)]
pub struct PlanContext {
    /// Objects the state store records as created (or being created) by gitvisor.
    pub owned: BTreeSet<ResourceId>,
    /// The revision's resources for this host, every kind.
    declared: BTreeMap<ResourceId, Arc<Resource>>,
    /// A targeted reconcile's resources; `None`: every resource is in focus.
    focus: Option<Arc<BTreeSet<ResourceId>>>,
}

impl PlanContext {
    /// A context knowing what the store records as `owned` and no revision yet.
    pub fn new(owned: impl IntoIterator<Item = ResourceId>) -> Self {
        PlanContext {
            owned: owned.into_iter().collect(),
            declared: BTreeMap::new(),
            focus: None,
        }
    }

    /// The same context, planning only `focus` (see the module docs).
    pub fn with_focus(mut self, focus: Option<Arc<BTreeSet<ResourceId>>>) -> Self {
        self.focus = focus;
        self
    }

    /// Whether the plan must diff `id` against the host: every resource, unless this is
    /// a targeted reconcile that `id` is not part of.
    pub fn in_focus(&self, id: &ResourceId) -> bool {
        self.focus.as_ref().is_none_or(|focus| focus.contains(id))
    }

    /// Whether anything of `kind` is in focus.
    pub fn kind_in_focus(&self, kind: Kind) -> bool {
        self.focus
            .as_ref()
            .is_none_or(|focus| focus.iter().any(|id| id.kind == kind))
    }

    /// The same context, seeing `resources` (the revision, resolved for this host).
    pub fn with_revision(mut self, resources: &[Arc<Resource>]) -> Self {
        self.declared = resources
            .iter()
            .map(|resource| (resource.id(), Arc::clone(resource)))
            .collect();
        self
    }

    /// The declared resource `id`, of any kind.
    pub fn declared(&self, id: &ResourceId) -> Option<&Arc<Resource>> {
        self.declared.get(id)
    }

    /// The declared resource a reference names: `referenced(Kind::Volume, &disk.volume)`.
    pub fn referenced(&self, kind: Kind, name: &Name) -> Option<&Arc<Resource>> {
        self.declared(&ResourceId::new(kind, name.clone()))
    }

    /// Every declared resource of `kind`, by name.
    pub fn declared_of(&self, kind: Kind) -> impl Iterator<Item = &Arc<Resource>> {
        self.declared
            .iter()
            .filter(move |(id, _)| id.kind == kind)
            .map(|(_, resource)| resource)
    }

    /// Whether the store records `id` as gitvisor's.
    pub fn is_recorded(&self, id: &ResourceId) -> bool {
        self.owned.contains(id)
    }
}
