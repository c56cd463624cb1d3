//! The order of deletes: a dependent before what it depends on, across kinds and within
//! one, as the last applied graph said.
//!
//! A pruned object has no node in the new revision's graph, so its edges come from the
//! store: each owned record keeps what the object depended on when it was last applied
//! (`OwnedRecord::depends_on`). A container that declared `dependsOn: [VirtualMachine/vm1]`
//! is therefore deleted before vm1, and vm1 before the Volume its disk is on, even though
//! the kinds alone would say otherwise.
//!
//! Steps:
//! 1. Each delete's dependencies: the recorded ones; for a record that predates recorded
//!    dependencies, the deletes of kinds earlier in [`Kind::all`] (the order gitvisor
//!    used before it recorded edges: Bridges and Volumes last).
//! 2. Their transitive closure, through every owned record (a container on a VM on a
//!    volume waits for the container even when the VM stays).
//! 3. A delete waits for every other delete that (transitively) depends on it, unless it
//!    depends on that one too: a cycle, possible only between records of different
//!    revisions, is not ordered at all, so the executor can never wait in a circle.
//! 4. The plan's deletes are put in an order that respects those waits (ties: the
//!    kind order above, then the name), and [`Plan::delete_after`] lists each delete's
//!    waits for the executor, which runs independent deletes in parallel.

use std::collections::{BTreeMap, BTreeSet};

use super::Plan;
use crate::contract::{Action, Change};
use crate::model::{Kind, ResourceId};

/// What the store recorded each owned object to depend on; `None`: a record from before
/// dependencies were recorded.
pub type RecordedDependencies = BTreeMap<ResourceId, Option<Vec<ResourceId>>>;

/// Orders the deletes of `plan` by `recorded` and fills in [`Plan::delete_after`].
pub fn order_deletes(plan: &mut Plan, recorded: &RecordedDependencies) {
    let (deletes, mut changes): (Vec<Change>, Vec<Change>) = std::mem::take(&mut plan.changes)
        .into_iter()
        .partition(|c| c.action == Action::Delete);
    let ids: Vec<ResourceId> = deletes.iter().map(|c| c.id.clone()).collect();
    let after = waits(&ids, recorded);
    let mut pending: Vec<Change> = deletes;
    pending.sort_by(|a, b| fallback_order(&a.id, &b.id));
    let mut placed: BTreeSet<ResourceId> = BTreeSet::new();
    while !pending.is_empty() {
        // Always found: the waits are acyclic (step 3).
        let next = pending
            .iter()
            .position(|c| {
                after
                    .get(&c.id)
                    .is_none_or(|waits| waits.iter().all(|id| placed.contains(id)))
            })
            .unwrap_or(0);
        let change = pending.remove(next);
        placed.insert(change.id.clone());
        changes.push(change);
    }
    plan.changes = changes;
    plan.delete_after = after
        .into_iter()
        .filter(|(_, waits)| !waits.is_empty())
        .map(|(id, waits)| (id, waits.into_iter().collect()))
        .collect();
}

/// The order without recorded edges: dependents' kinds first, then by name.
fn fallback_order(a: &ResourceId, b: &ResourceId) -> std::cmp::Ordering {
    b.kind.cmp(&a.kind).then(a.name.cmp(&b.name))
}

/// For each of `deletes`, the other deletes that must finish before it.
fn waits(
    deletes: &[ResourceId],
    recorded: &RecordedDependencies,
) -> BTreeMap<ResourceId, BTreeSet<ResourceId>> {
    let deleted: BTreeSet<&ResourceId> = deletes.iter().collect();
    let direct = |id: &ResourceId| -> Vec<ResourceId> {
        match recorded.get(id) {
            Some(Some(known)) => known.clone(),
            // Not known: deletes of the kinds before its own wait for it.
            _ if deleted.contains(id) => deletes
                .iter()
                .filter(|other| earlier(other.kind, id.kind))
                .cloned()
                .collect(),
            _ => Vec::new(),
        }
    };
    let closure: BTreeMap<&ResourceId, BTreeSet<ResourceId>> = deletes
        .iter()
        .map(|id| {
            let mut seen: BTreeSet<ResourceId> = BTreeSet::new();
            let mut stack = direct(id);
            while let Some(next) = stack.pop() {
                if seen.insert(next.clone()) {
                    stack.extend(direct(&next));
                }
            }
            (id, seen)
        })
        .collect();
    deletes
        .iter()
        .map(|id| {
            let waits = deletes
                .iter()
                .filter(|other| {
                    let needs = |a: &ResourceId, b: &ResourceId| {
                        closure.get(a).is_some_and(|deps| deps.contains(b))
                    };
                    *other != id && needs(other, id) && !needs(id, other)
                })
                .cloned()
                .collect();
            (id.clone(), waits)
        })
        .collect()
}

/// Whether `a` comes before `b` in the kinds' rank order ([`Kind::all`]).
fn earlier(a: Kind, b: Kind) -> bool {
    a < b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> ResourceId {
        text.parse().expect("valid id")
    }

    fn plan_deleting(deletes: &[&str]) -> Plan {
        let mut changes = vec![Change::new(id("Bridge/stays"), Action::NoOp)];
        changes.extend(deletes.iter().map(|d| Change::new(id(d), Action::Delete)));
        Plan {
            revision: "r2".into(),
            host: "h".into(),
            changes,
            skipped: Vec::new(),
            restarts: Vec::new(),
            delete_after: BTreeMap::new(),
        }
    }

    fn recorded(edges: &[(&str, Option<&[&str]>)]) -> RecordedDependencies {
        edges
            .iter()
            .map(|(from, to)| (id(from), to.map(|to| to.iter().map(|t| id(t)).collect())))
            .collect()
    }

    fn order(plan: &Plan) -> Vec<String> {
        plan.changes.iter().map(|c| c.id.to_string()).collect()
    }

    fn after(plan: &Plan, of: &str) -> Vec<String> {
        plan.delete_after
            .get(&id(of))
            .map(|ids| ids.iter().map(ToString::to_string).collect())
            .unwrap_or_default()
    }

    #[test]
    fn dependents_are_deleted_first_across_kinds_and_within_one() {
        let mut plan = plan_deleting(&[
            "Volume/data",
            "VirtualMachine/vm1",
            "Container/web",
            "Container/proxy",
        ]);
        let edges = recorded(&[
            ("Volume/data", Some(&[])),
            ("VirtualMachine/vm1", Some(&["Volume/data"])),
            (
                "Container/web",
                Some(&["VirtualMachine/vm1", "Volume/data"]),
            ),
            ("Container/proxy", Some(&["Container/web"])),
        ]);
        order_deletes(&mut plan, &edges);
        assert_eq!(
            order(&plan),
            [
                "Bridge/stays",
                "Container/proxy",
                "Container/web",
                "VirtualMachine/vm1",
                "Volume/data"
            ]
        );
        assert_eq!(after(&plan, "Container/proxy"), Vec::<String>::new());
        assert_eq!(after(&plan, "Container/web"), ["Container/proxy"]);
        assert_eq!(
            after(&plan, "VirtualMachine/vm1"),
            ["Container/proxy", "Container/web"]
        );
        assert_eq!(
            after(&plan, "Volume/data"),
            ["Container/proxy", "Container/web", "VirtualMachine/vm1"]
        );
    }

    #[test]
    fn independent_deletes_wait_for_nothing() {
        let mut plan = plan_deleting(&["Volume/a", "VirtualMachine/b", "Bridge/c"]);
        let edges = recorded(&[
            ("Volume/a", Some(&[])),
            ("VirtualMachine/b", Some(&[])),
            ("Bridge/c", Some(&[])),
        ]);
        order_deletes(&mut plan, &edges);
        assert!(plan.delete_after.is_empty(), "{:?}", plan.delete_after);
        // Shown (and started) dependents' kinds first, as without records.
        assert_eq!(
            order(&plan),
            ["Bridge/stays", "VirtualMachine/b", "Volume/a", "Bridge/c"]
        );
    }

    #[test]
    fn an_edge_through_an_object_that_stays_still_orders() {
        // web runs on vm1 (which stays), vm1 on data: web goes before data.
        let mut plan = plan_deleting(&["Volume/data", "Container/web"]);
        let edges = recorded(&[
            ("Container/web", Some(&["VirtualMachine/vm1"])),
            ("VirtualMachine/vm1", Some(&["Volume/data"])),
            ("Volume/data", Some(&[])),
        ]);
        order_deletes(&mut plan, &edges);
        assert_eq!(after(&plan, "Volume/data"), ["Container/web"]);
    }

    #[test]
    fn records_without_dependencies_keep_the_kind_order() {
        let mut plan = plan_deleting(&["Bridge/br1", "Volume/data", "VirtualMachine/vm1"]);
        let edges = recorded(&[
            ("Bridge/br1", None),
            ("Volume/data", None),
            ("VirtualMachine/vm1", None),
        ]);
        order_deletes(&mut plan, &edges);
        assert_eq!(
            order(&plan),
            [
                "Bridge/stays",
                "VirtualMachine/vm1",
                "Volume/data",
                "Bridge/br1"
            ]
        );
        assert_eq!(
            after(&plan, "Bridge/br1"),
            ["Volume/data", "VirtualMachine/vm1"]
        );
        // Unknown records in a plan nobody ordered from the store behave the same.
        let mut unordered = plan_deleting(&["Bridge/br1", "VirtualMachine/vm1"]);
        order_deletes(&mut unordered, &RecordedDependencies::new());
        assert_eq!(after(&unordered, "Bridge/br1"), ["VirtualMachine/vm1"]);
    }

    #[test]
    fn a_recorded_cycle_is_not_ordered_and_cannot_deadlock() {
        let mut plan = plan_deleting(&["Container/a", "Container/b", "Container/c"]);
        let edges = recorded(&[
            ("Container/a", Some(&["Container/b"])),
            ("Container/b", Some(&["Container/a"])),
            ("Container/c", Some(&["Container/a"])),
        ]);
        order_deletes(&mut plan, &edges);
        assert_eq!(after(&plan, "Container/a"), ["Container/c"]);
        assert_eq!(after(&plan, "Container/b"), ["Container/c"]);
        assert_eq!(after(&plan, "Container/c"), Vec::<String>::new());
        assert_eq!(plan.changes.len(), 4);
    }
}
