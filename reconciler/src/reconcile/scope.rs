//! What a plan may do: the prune rules and `--target`, decided once on the full plan so
//! that `plan` shows exactly what `apply` does.
//!
//! Steps, in order:
//! 1. `--target`: keep the targets and everything they depend on (transitively, as
//!    Terraform does: a bridge a targeted VM needs is created first); every other change
//!    is left out as [`SkipReason::OutsideTarget`]. A delete is kept only when it is
//!    itself a target, and naming it is the confirmation it needs.
//! 2. `--no-prune`: every remaining delete is left out.
//! 3. Without `--prune` (or a `PrunePolicy` with `deleteUndeclared: true` in the revision,
//!    which says the same in git: [`PlanOptions::under_policy`]), a delete is carried out only when the object was last declared
//!    by this same source (the store's owned record names the revision that last declared
//!    it, and the revision history names that revision's source), and when the revision
//!    does not delete every resource gitvisor manages here (an emptied repository). The
//!    rest are left out with the reason and how to confirm.
//! 4. `held` (the controller's retry policy): a change to a held resource, or to one that
//!    depends on a held resource (transitively), is left out as
//!    [`SkipReason::Deferred`]; a held resource that needs no change is not held.
//! 5. Dependents' restarts whose disruptive change was left out are dropped: a running
//!    object is stopped only for a change that is carried out. One whose own change was
//!    left out still restarts for a cause that is kept (the cause needs it stopped).

use std::collections::{BTreeMap, BTreeSet};

use super::ReconcileError;
use crate::graph::DependencyGraph;
use crate::model::{PrunePolicy, ResourceId};
use crate::plan::{Action, Change, Plan, SkipReason, Skipped};
use crate::state::{OwnedRecord, RevisionRecord};

/// How deletes of objects no longer declared are handled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PruneMode {
    /// Delete what this same source used to declare, unless that is everything.
    #[default]
    Safe,
    /// `--prune`: delete every owned object that is not declared.
    Confirmed,
    /// `--no-prune`: delete nothing.
    Never,
}

/// What to plan beyond the revision itself.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    pub prune: PruneMode,
    /// `--target KIND/NAME`: only these (and what they depend on). Empty: everything.
    pub targets: Vec<ResourceId>,
    /// Resources whose changes are held back, with why (the controller's retries and
    /// failures waiting for a new revision). Empty: nothing is held.
    pub held: BTreeMap<ResourceId, String>,
    /// A targeted reconcile of a new revision (the controller's): the resources it
    /// changed since the revision last applied ([`super::focus::changed_between`]). Only
    /// these and what [`super::focus::focus`] adds are planned against the host; every
    /// other declared resource is carried as converged. `None`: plan everything.
    pub changed: Option<BTreeSet<ResourceId>>,
}

impl PlanOptions {
    /// These options under the revision's `PrunePolicy`: `deleteUndeclared: true` confirms
    /// every delete as `--prune` does (how a repository decommissions a host), unless
    /// `--no-prune` was given on the host, which still wins.
    pub fn under_policy(&self, policy: Option<&PrunePolicy>) -> PlanOptions {
        let mut options = self.clone();
        if options.prune == PruneMode::Safe && policy.is_some_and(|p| p.spec.delete_undeclared) {
            options.prune = PruneMode::Confirmed;
        }
        options
    }
}

/// What the store knows that the prune rules need.
#[derive(Debug, Clone, Default)]
pub struct Ownership {
    pub owned: BTreeMap<ResourceId, OwnedRecord>,
    /// Applied revisions, oldest first.
    pub revisions: Vec<RevisionRecord>,
}

impl Ownership {
    /// The source of the revision that last declared `id`, if the store knows it.
    fn declared_by(&self, id: &ResourceId) -> Option<&str> {
        let revision = &self.owned.get(id)?.revision;
        self.revisions
            .iter()
            .rev()
            .find(|r| &r.id == revision)
            .map(|r| r.source.as_str())
            .filter(|source| !source.is_empty())
    }
}

/// Moves out of `plan.changes` what `options` and the prune rules leave out.
pub fn scope(
    mut plan: Plan,
    graph: &DependencyGraph,
    ownership: &Ownership,
    source: &str,
    options: &PlanOptions,
) -> Result<Plan, ReconcileError> {
    let changes = std::mem::take(&mut plan.changes);
    let mut kept: Vec<Change> = Vec::with_capacity(changes.len());
    let mut skipped: Vec<Skipped> = Vec::new();
    let skip = |skipped: &mut Vec<Skipped>, change: Change, reason: SkipReason| {
        skipped.push(Skipped { change, reason })
    };

    let targets: BTreeSet<&ResourceId> = options.targets.iter().collect();
    for target in &targets {
        if !changes.iter().any(|c| &c.id == *target) {
            return Err(ReconcileError::UnknownTarget {
                id: (*target).clone(),
                host: plan.host.clone(),
            });
        }
    }
    let in_target = closure(&targets, graph);

    // Deletes that still need the prune rules, in plan order.
    let mut deletes: Vec<Change> = Vec::new();
    for change in changes {
        let targeted = targets.contains(&change.id);
        if !targets.is_empty() && !in_target.contains(&change.id) {
            skip(&mut skipped, change, SkipReason::OutsideTarget);
        } else if change.action != Action::Delete {
            kept.push(change);
        } else if options.prune == PruneMode::Never {
            skip(&mut skipped, change, SkipReason::NoPrune);
        } else if targeted || options.prune == PruneMode::Confirmed {
            kept.push(change);
        } else {
            match ownership.declared_by(&change.id) {
                Some(by) if by == source => deletes.push(change),
                Some(by) => skip(
                    &mut skipped,
                    change,
                    SkipReason::OtherSource {
                        declared_by: by.to_owned(),
                    },
                ),
                None => skip(&mut skipped, change, SkipReason::UnknownSource),
            }
        }
    }

    // An emptied repository: nothing gitvisor manages would stay.
    let stays = kept
        .iter()
        .any(|c| matches!(c.action, Action::NoOp | Action::Update | Action::Replace))
        || skipped.iter().any(Skipped::is_delete);
    if !deletes.is_empty() && !stays {
        let count = deletes.len();
        for change in deletes.drain(..) {
            skip(
                &mut skipped,
                change,
                SkipReason::DeletesEverything { count },
            );
        }
    }
    // Deletes keep their place: after every create and update, as make_plan ordered them.
    kept.extend(deletes);
    if !options.held.is_empty() {
        kept = hold(kept, &mut skipped, graph, &options.held);
    }
    kept.sort_by_key(|c| c.action == Action::Delete);
    plan.changes = kept;
    plan.skipped = skipped;
    plan.settle_restarts();
    Ok(plan)
}

/// Leaves out the changes of held resources and of everything that depends on one.
fn hold(
    kept: Vec<Change>,
    skipped: &mut Vec<Skipped>,
    graph: &DependencyGraph,
    held: &BTreeMap<ResourceId, String>,
) -> Vec<Change> {
    let changing: BTreeSet<&ResourceId> = kept
        .iter()
        .filter(|c| c.action.is_change())
        .map(|c| &c.id)
        .collect();
    // Why each resource waits: its own hold, or the first held resource it depends on.
    let mut waits: BTreeMap<ResourceId, String> = held
        .iter()
        .filter(|(id, _)| changing.contains(id))
        .map(|(id, why)| (id.clone(), why.clone()))
        .collect();
    let mut pending: Vec<ResourceId> = waits.keys().cloned().collect();
    while let Some(id) = pending.pop() {
        for dependent in graph.dependents(&id) {
            if changing.contains(&dependent) && !waits.contains_key(&dependent) {
                waits.insert(
                    dependent.clone(),
                    format!("waiting for {id}, which is held back"),
                );
                pending.push(dependent);
            }
        }
    }
    let mut out = Vec::with_capacity(kept.len());
    for change in kept {
        match waits.get(&change.id) {
            Some(why) => skipped.push(Skipped {
                change,
                reason: SkipReason::Deferred { why: why.clone() },
            }),
            _ => out.push(change),
        }
    }
    out
}

/// `targets` and everything they depend on, transitively.
fn closure(targets: &BTreeSet<&ResourceId>, graph: &DependencyGraph) -> BTreeSet<ResourceId> {
    let mut seen: BTreeSet<ResourceId> = BTreeSet::new();
    let mut pending: Vec<ResourceId> = targets.iter().map(|id| (*id).clone()).collect();
    while let Some(id) = pending.pop() {
        if seen.insert(id.clone()) {
            pending.extend(graph.dependencies(&id));
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Kind, Name};

    fn id(name: &str) -> ResourceId {
        ResourceId::new(Kind::Bridge, Name::parse(name).unwrap())
    }

    fn plan(changes: &[(&str, Action)]) -> Plan {
        Plan {
            revision: "sha256:new".into(),
            host: "h".into(),
            changes: changes
                .iter()
                .map(|(name, action)| Change::new(id(name), *action))
                .collect(),
            skipped: Vec::new(),
            restarts: Vec::new(),
            delete_after: Default::default(),
        }
    }

    /// The store: `declared` maps each owned name to the source that last declared it.
    fn ownership(declared: &[(&str, &str)]) -> Ownership {
        let mut ownership = Ownership::default();
        for (i, (name, source)) in declared.iter().enumerate() {
            let revision = format!("sha256:{i}");
            ownership.owned.insert(
                id(name),
                OwnedRecord {
                    spec_hash: String::new(),
                    revision: revision.clone(),
                    updated_unix: 0,
                    pending: false,
                    depends_on: None,
                },
            );
            ownership.revisions.push(RevisionRecord {
                id: revision,
                applied_unix: 0,
                converged: true,
                summary: String::new(),
                source: (*source).to_owned(),
            });
        }
        ownership
    }

    fn actions(plan: &Plan) -> Vec<(String, Action)> {
        plan.changes
            .iter()
            .map(|c| (c.id.name.to_string(), c.action))
            .collect()
    }

    fn skips(plan: &Plan) -> Vec<(String, SkipReason)> {
        plan.skipped
            .iter()
            .map(|s| (s.change.id.name.to_string(), s.reason.clone()))
            .collect()
    }

    const GRAPH: fn() -> DependencyGraph = DependencyGraph::default;

    #[test]
    fn same_source_prunes() {
        let planned = plan(&[("a", Action::NoOp), ("old", Action::Delete)]);
        let store = ownership(&[("a", "/repo"), ("old", "/repo")]);
        let scoped = scope(planned, &GRAPH(), &store, "/repo", &PlanOptions::default()).unwrap();
        assert_eq!(
            actions(&scoped),
            [("a".into(), Action::NoOp), ("old".into(), Action::Delete)]
        );
        assert!(scoped.skipped.is_empty());
    }

    #[test]
    fn another_source_deletes_nothing_without_prune() {
        let planned = plan(&[("vol", Action::Create), ("br", Action::Delete)]);
        let store = ownership(&[("br", "/repo")]);
        let scoped = scope(
            planned.clone(),
            &GRAPH(),
            &store,
            "/repo/storage.yaml",
            &PlanOptions::default(),
        )
        .unwrap();
        assert_eq!(actions(&scoped), [("vol".into(), Action::Create)]);
        assert_eq!(
            skips(&scoped),
            [(
                "br".into(),
                SkipReason::OtherSource {
                    declared_by: "/repo".into()
                }
            )]
        );
        let confirmed = PlanOptions {
            prune: PruneMode::Confirmed,
            ..PlanOptions::default()
        };
        let scoped = scope(planned, &GRAPH(), &store, "/repo/storage.yaml", &confirmed).unwrap();
        assert_eq!(scoped.changes.len(), 2);
    }

    #[test]
    fn unknown_source_deletes_nothing_without_prune() {
        let planned = plan(&[("a", Action::NoOp), ("old", Action::Delete)]);
        let mut store = ownership(&[("a", "/repo"), ("old", "")]);
        store.revisions.retain(|r| !r.source.is_empty());
        let scoped = scope(planned, &GRAPH(), &store, "/repo", &PlanOptions::default()).unwrap();
        assert_eq!(skips(&scoped), [("old".into(), SkipReason::UnknownSource)]);
    }

    #[test]
    fn an_emptied_repository_deletes_nothing_without_prune() {
        let planned = plan(&[("a", Action::Delete), ("b", Action::Delete)]);
        let store = ownership(&[("a", "/repo"), ("b", "/repo")]);
        let scoped = scope(planned, &GRAPH(), &store, "/repo", &PlanOptions::default()).unwrap();
        assert!(scoped.changes.is_empty());
        assert_eq!(
            skips(&scoped),
            [
                ("a".into(), SkipReason::DeletesEverything { count: 2 }),
                ("b".into(), SkipReason::DeletesEverything { count: 2 })
            ]
        );
        assert!(!scoped.has_changes());
    }

    /// Each kind of change that keeps a managed object counts as "something stays", and
    /// a create does not (it is not managed yet): the emptied-repository guard holds
    /// back deletes only when nothing gitvisor manages would be left.
    #[test]
    fn the_emptied_repository_guard_counts_only_what_stays_managed() {
        let store = ownership(&[("a", "/repo"), ("old", "/repo"), ("theirs", "/other")]);
        let prunes = |kept: Action| {
            let planned = plan(&[("a", kept), ("old", Action::Delete)]);
            let scoped =
                scope(planned, &GRAPH(), &store, "/repo", &PlanOptions::default()).unwrap();
            scoped
                .changes
                .iter()
                .any(|c| c.id == id("old") && c.action == Action::Delete)
        };
        for stays in [Action::NoOp, Action::Update, Action::Replace] {
            assert!(prunes(stays), "{stays:?}: old should be pruned");
        }
        // Everything managed goes, new objects come: still an emptied repository.
        assert!(!prunes(Action::Create), "create: old should be held back");

        // Another source's object is left in place (not pruned): it stays, so this
        // source's own delete goes through.
        let planned = plan(&[("old", Action::Delete), ("theirs", Action::Delete)]);
        let scoped = scope(planned, &GRAPH(), &store, "/repo", &PlanOptions::default()).unwrap();
        assert_eq!(actions(&scoped), [("old".into(), Action::Delete)]);
        assert_eq!(
            skips(&scoped),
            [(
                "theirs".into(),
                SkipReason::OtherSource {
                    declared_by: "/other".into()
                }
            )]
        );

        // With only creates beside them, every delete is held back, and says how many.
        let planned = plan(&[
            ("new", Action::Create),
            ("a", Action::Delete),
            ("old", Action::Delete),
        ]);
        let scoped = scope(planned, &GRAPH(), &store, "/repo", &PlanOptions::default()).unwrap();
        assert_eq!(actions(&scoped), [("new".into(), Action::Create)]);
        assert_eq!(
            skips(&scoped),
            [
                ("a".into(), SkipReason::DeletesEverything { count: 2 }),
                ("old".into(), SkipReason::DeletesEverything { count: 2 })
            ]
        );
    }

    /// A `PrunePolicy` with `deleteUndeclared: true` passes the emptied-repository guard
    /// (a decommission said in git); `deleteUndeclared: false` does not, and `--no-prune`
    /// on the host still wins over the policy.
    #[test]
    fn a_prune_policy_confirms_the_deletes_of_an_emptied_repository() {
        let store = ownership(&[("a", "/repo"), ("b", "/repo")]);
        let planned = plan(&[("a", Action::Delete), ("b", Action::Delete)]);
        let policy = |delete_undeclared: bool| PrunePolicy {
            metadata: crate::model::Metadata::named(Name::parse("retire").unwrap()),
            spec: crate::model::PrunePolicySpec { delete_undeclared },
            origin: crate::model::Origin::default(),
        };
        let under = |options: &PlanOptions, policy: Option<&PrunePolicy>| {
            let options = options.under_policy(policy);
            scope(planned.clone(), &GRAPH(), &store, "/repo", &options).unwrap()
        };
        let safe = PlanOptions::default();
        assert!(under(&safe, None).changes.is_empty());
        assert!(under(&safe, Some(&policy(false))).changes.is_empty());
        let decommissioned = under(&safe, Some(&policy(true)));
        assert_eq!(
            actions(&decommissioned),
            [("a".into(), Action::Delete), ("b".into(), Action::Delete)]
        );
        assert!(decommissioned.prune_withheld().is_none());
        let never = PlanOptions {
            prune: PruneMode::Never,
            ..PlanOptions::default()
        };
        assert!(under(&never, Some(&policy(true))).changes.is_empty());
    }

    /// What the controller reports: each withheld delete, why, and the way through.
    #[test]
    fn withheld_deletes_are_summarised_with_why_and_the_way_through() {
        let store = ownership(&[("a", "/repo"), ("b", "/repo")]);
        let planned = plan(&[("a", Action::Delete), ("b", Action::Delete)]);
        let scoped = scope(planned, &GRAPH(), &store, "/repo", &PlanOptions::default()).unwrap();
        let withheld = scoped.prune_withheld().expect("withheld");
        assert_eq!(withheld.count, 2);
        assert_eq!(withheld.resources, ["Bridge/a", "Bridge/b"]);
        let text = withheld.to_string();
        assert!(
            text.starts_with("prune withheld: 2 resources kept (emptied repository"),
            "{text}"
        );
        assert!(
            text.contains("PrunePolicy with deleteUndeclared: true"),
            "{text}"
        );
        // `--no-prune` is a confirmation of its own: nothing is withheld waiting for one.
        let options = PlanOptions {
            prune: PruneMode::Never,
            ..PlanOptions::default()
        };
        let planned = plan(&[("a", Action::Delete)]);
        let scoped = scope(planned, &GRAPH(), &store, "/repo", &options).unwrap();
        assert!(scoped.prune_withheld().is_none());
    }

    #[test]
    fn no_prune_deletes_nothing() {
        let planned = plan(&[("a", Action::NoOp), ("old", Action::Delete)]);
        let store = ownership(&[("a", "/repo"), ("old", "/repo")]);
        let options = PlanOptions {
            prune: PruneMode::Never,
            ..PlanOptions::default()
        };
        let scoped = scope(planned, &GRAPH(), &store, "/repo", &options).unwrap();
        assert_eq!(skips(&scoped), [("old".into(), SkipReason::NoPrune)]);
    }

    #[test]
    fn targets_take_their_dependencies_and_never_prune_outside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("m.yaml"),
            "apiVersion: gitvisor.dev/v1alpha1\nkind: Bridge\nmetadata: {name: base}\nspec: {}\n---\n\
             apiVersion: gitvisor.dev/v1alpha1\nkind: Bridge\nmetadata: {name: top, dependsOn: [Bridge/base]}\nspec: {}\n---\n\
             apiVersion: gitvisor.dev/v1alpha1\nkind: Bridge\nmetadata: {name: other}\nspec: {}\n",
        )
        .unwrap();
        let revision = crate::load::load_revision(dir.path(), "h").unwrap();
        let planned = plan(&[
            ("base", Action::Create),
            ("top", Action::Create),
            ("other", Action::Update),
            ("old", Action::Delete),
            ("gone", Action::Delete),
        ]);
        let store = ownership(&[("old", "/repo"), ("gone", "/elsewhere")]);
        let options = PlanOptions {
            targets: vec![id("top"), id("gone")],
            ..PlanOptions::default()
        };
        let scoped = scope(planned, &revision.graph, &store, "/repo", &options).unwrap();
        assert_eq!(
            actions(&scoped),
            [
                ("base".into(), Action::Create),
                ("top".into(), Action::Create),
                ("gone".into(), Action::Delete)
            ]
        );
        assert_eq!(
            skips(&scoped),
            [
                ("other".into(), SkipReason::OutsideTarget),
                ("old".into(), SkipReason::OutsideTarget)
            ]
        );
    }

    #[test]
    fn held_resources_and_their_dependents_wait_and_the_rest_proceeds() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("m.yaml"),
            "apiVersion: gitvisor.dev/v1alpha1\nkind: Bridge\nmetadata: {name: base}\nspec: {}\n---\n\
             apiVersion: gitvisor.dev/v1alpha1\nkind: Bridge\nmetadata: {name: top, dependsOn: [Bridge/base]}\nspec: {}\n---\n\
             apiVersion: gitvisor.dev/v1alpha1\nkind: Bridge\nmetadata: {name: other}\nspec: {}\n---\n\
             apiVersion: gitvisor.dev/v1alpha1\nkind: Bridge\nmetadata: {name: fine}\nspec: {}\n",
        )
        .unwrap();
        let revision = crate::load::load_revision(dir.path(), "h").unwrap();
        let planned = plan(&[
            ("base", Action::Create),
            ("top", Action::Create),
            ("other", Action::Create),
            ("fine", Action::NoOp),
        ]);
        let options = PlanOptions {
            held: [
                (id("base"), "retrying in 4s".to_owned()),
                (id("fine"), "retrying in 2s".to_owned()),
            ]
            .into(),
            ..PlanOptions::default()
        };
        let scoped = scope(
            planned,
            &revision.graph,
            &Ownership::default(),
            "/r",
            &options,
        )
        .unwrap();
        // A held resource that needs nothing now is not held.
        assert_eq!(
            actions(&scoped),
            [
                ("other".into(), Action::Create),
                ("fine".into(), Action::NoOp)
            ]
        );
        assert_eq!(
            skips(&scoped),
            [
                (
                    "base".into(),
                    SkipReason::Deferred {
                        why: "retrying in 4s".into()
                    }
                ),
                (
                    "top".into(),
                    SkipReason::Deferred {
                        why: "waiting for Bridge/base, which is held back".into()
                    }
                )
            ]
        );
    }

    #[test]
    fn a_dependent_of_a_held_resource_that_needs_no_change_is_not_held() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("m.yaml"),
            "apiVersion: gitvisor.dev/v1alpha1\nkind: Bridge\nmetadata: {name: base}\nspec: {}\n---\n\
             apiVersion: gitvisor.dev/v1alpha1\nkind: Bridge\nmetadata: {name: same, dependsOn: [Bridge/base]}\nspec: {}\n---\n\
             apiVersion: gitvisor.dev/v1alpha1\nkind: Bridge\nmetadata: {name: next, dependsOn: [Bridge/base]}\nspec: {}\n",
        )
        .unwrap();
        let revision = crate::load::load_revision(dir.path(), "h").unwrap();
        let planned = plan(&[
            ("base", Action::Update),
            ("same", Action::NoOp),
            ("next", Action::Update),
        ]);
        let options = PlanOptions {
            held: [(id("base"), "retrying in 4s".to_owned())].into(),
            ..PlanOptions::default()
        };
        let scoped = scope(
            planned,
            &revision.graph,
            &Ownership::default(),
            "/r",
            &options,
        )
        .unwrap();
        // `same` needs nothing: it is reported unchanged, not deferred (a deferred result
        // would read as not converged and hold the controller's retries on it).
        assert_eq!(actions(&scoped), [("same".into(), Action::NoOp)]);
        assert_eq!(
            skips(&scoped),
            [
                (
                    "base".into(),
                    SkipReason::Deferred {
                        why: "retrying in 4s".into()
                    }
                ),
                (
                    "next".into(),
                    SkipReason::Deferred {
                        why: "waiting for Bridge/base, which is held back".into()
                    }
                )
            ]
        );
    }

    #[test]
    fn an_unknown_target_is_an_error() {
        let planned = plan(&[("a", Action::NoOp)]);
        let options = PlanOptions {
            targets: vec![id("typo")],
            ..PlanOptions::default()
        };
        let err = scope(planned, &GRAPH(), &Ownership::default(), "/repo", &options).unwrap_err();
        assert!(err.to_string().contains("--target Bridge/typo"), "{err}");
    }
}
