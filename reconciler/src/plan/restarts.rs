//! Which running objects a plan stops and starts again around its disruptive changes
//! (see [`crate::contract::restart`] for why and for the drivers' side).
//!
//! Steps, in order:
//! 1. Every disruptive change ([`Change::is_disruptive`]: a replace, or an update that
//!    restarts or recreates the object) is a cause.
//! 2. Its dependents, transitively (a container that `dependsOn` a VM whose Volume is
//!    replaced loses the VM too), that exist on the host as gitvisor's (their own change
//!    is a no-op, an update or a replace) are candidates; one that is created, deleted,
//!    in conflict or without a driver has nothing running to stop.
//! 3. Each candidate's driver says whether it stops it ([`RestartSupport`]); an object
//!    that does not run is left out, one that its driver cannot stop is listed as
//!    keeping running, with why.
//!
//! The list is in dependency order (what a dependent needs comes first), once per
//! dependent, with every cause it waits for.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::contract::{Action, Change, Drivers, RestartSupport};
use crate::graph::DependencyGraph;
use crate::model::ResourceId;

/// What happens to a dependent while its causes are changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// Stopped before the first cause, started again after the last.
    Restart,
    /// Its driver cannot stop it: it keeps running through the change, and why.
    KeepsRunning(String),
}

/// A running dependent of one or more disruptive changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DependentRestart {
    pub id: ResourceId,
    /// The disruptive changes it waits for, with their action (`replace` or `update`),
    /// in plan order.
    pub causes: Vec<(ResourceId, Action)>,
    pub hold: Hold,
}

impl DependentRestart {
    /// Whether the executor stops and starts it.
    pub fn restarts(&self) -> bool {
        self.hold == Hold::Restart
    }

    /// One sentence for people: `stopped while Volume/data is replaced, then started
    /// again`, or why it keeps running.
    pub fn reason(&self) -> String {
        let mut causes = String::new();
        for (i, (id, action)) in self.causes.iter().enumerate() {
            let sep = match i {
                0 => "",
                i if i + 1 == self.causes.len() => " and ",
                _ => ", ",
            };
            let what = if *action == Action::Replace {
                "replaced"
            } else {
                "restarted"
            };
            let _ = write!(causes, "{sep}{id} is {what}");
        }
        match &self.hold {
            Hold::Restart => format!("stopped while {causes}, then started again"),
            Hold::KeepsRunning(why) => format!("keeps running while {causes}: {why}"),
        }
    }
}

/// The dependents of the disruptive changes in `changes` (in plan order), in dependency
/// order. See the module docs.
pub fn dependent_restarts(
    changes: &[Change],
    graph: &DependencyGraph,
    drivers: &Drivers,
) -> Vec<DependentRestart> {
    let by_id: BTreeMap<&ResourceId, &Change> = changes.iter().map(|c| (&c.id, c)).collect();
    let mut causes: BTreeMap<ResourceId, Vec<(ResourceId, Action)>> = BTreeMap::new();
    for cause in changes.iter().filter(|c| c.is_disruptive()) {
        for dependent in graph.transitive_dependents(&cause.id) {
            causes
                .entry(dependent)
                .or_default()
                .push((cause.id.clone(), cause.action));
        }
    }
    let mut restarts = Vec::new();
    for id in graph.topological_order() {
        let Some(causes) = causes.remove(&id) else {
            continue;
        };
        let Some(change) = by_id.get(&id) else {
            continue;
        };
        if !matches!(
            change.action,
            Action::NoOp | Action::Update | Action::Replace
        ) {
            continue;
        }
        let Some(driver) = drivers.get(id.kind) else {
            continue;
        };
        let hold = match driver.restart_support(change) {
            RestartSupport::Supported => Hold::Restart,
            RestartSupport::NotRunning => continue,
            RestartSupport::Unsupported(why) => Hold::KeepsRunning(why),
        };
        restarts.push(DependentRestart { id, causes, hold });
    }
    restarts
}
