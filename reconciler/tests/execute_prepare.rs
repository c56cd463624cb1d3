//! The executor tells each driver, once and before any step, the changes of its kind the
//! run carries out (`Driver::prepare_apply`): not those the plan left out, not those that
//! need nothing or cannot be done, not those already known to be blocked.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use gitvisor::contract::{Change, Driver, DriverError, Drivers, PlanContext, StepContext};
use gitvisor::execute::{ExecuteOptions, execute_with};
use gitvisor::load::load_revision;
use gitvisor::model::{Kind, Resource};
use gitvisor::plan::{Action, SkipReason, Skipped, make_plan};

/// Plans each bridge as its name says, and logs what it is told.
struct Recording {
    log: Arc<Mutex<Vec<String>>>,
}

impl Recording {
    fn log(&self, line: String) {
        self.log.lock().expect("not poisoned").push(line);
    }
}

#[async_trait]
impl Driver for Recording {
    fn kind(&self) -> Kind {
        Kind::Bridge
    }

    async fn plan(
        &self,
        desired: &[Arc<Resource>],
        _: &PlanContext,
    ) -> Result<Vec<Change>, DriverError> {
        let mut changes: Vec<Change> = desired
            .iter()
            .map(|r| {
                let action = match r.metadata.name.as_str() {
                    "conflict" => Action::Conflict,
                    "same" => Action::NoOp,
                    "update" | "left-out" => Action::Update,
                    _ => Action::Create,
                };
                Change::new(r.id(), action).with_desired(r.clone())
            })
            .collect();
        changes.push(Change::new(
            "Bridge/old".parse().expect("id"),
            Action::Delete,
        ));
        Ok(changes)
    }

    fn prepare_apply(&self, changes: &[&Change]) {
        let mut names: Vec<&str> = changes.iter().map(|c| c.id.name.as_str()).collect();
        names.sort_unstable();
        self.log(format!("prepare {}", names.join(" ")));
    }

    async fn apply(&self, change: &Change, _: &StepContext) -> Result<(), DriverError> {
        self.log(format!("apply {}", change.id.name));
        Ok(())
    }
}

const MANIFESTS: &str = "\
apiVersion: gitvisor.dev/v1alpha1
kind: Bridge
metadata: {name: new}
spec: {}
---
apiVersion: gitvisor.dev/v1alpha1
kind: Bridge
metadata: {name: update}
spec: {}
---
apiVersion: gitvisor.dev/v1alpha1
kind: Bridge
metadata: {name: same}
spec: {}
---
apiVersion: gitvisor.dev/v1alpha1
kind: Bridge
metadata: {name: conflict}
spec: {}
---
apiVersion: gitvisor.dev/v1alpha1
kind: Bridge
metadata: {name: behind-conflict, dependsOn: [Bridge/conflict]}
spec: {}
---
apiVersion: gitvisor.dev/v1alpha1
kind: Bridge
metadata: {name: left-out}
spec: {}
";

#[tokio::test]
async fn each_driver_is_told_once_before_any_step_what_the_run_carries_out() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("m.yaml"), MANIFESTS).expect("write manifests");
    let revision = load_revision(dir.path(), "h").expect("valid revision");
    let log = Arc::new(Mutex::new(Vec::new()));
    let drivers = Arc::new(Drivers::new(vec![Box::new(Recording { log: log.clone() })]));
    let mut plan = make_plan(&revision, "h", &drivers, &PlanContext::default())
        .await
        .expect("plans");
    // What `--target` does to a change outside the targets.
    let position = plan
        .changes
        .iter()
        .position(|c| c.id.name.as_str() == "left-out")
        .expect("planned");
    let change = plan.changes.remove(position);
    plan.skipped.push(Skipped {
        change,
        reason: SkipReason::OutsideTarget,
    });

    execute_with(&plan, &revision.graph, drivers, ExecuteOptions::new(4)).await;

    let log = log.lock().expect("not poisoned").clone();
    assert_eq!(log[0], "prepare new old update", "{log:?}");
    assert_eq!(
        log.iter().filter(|l| l.starts_with("prepare")).count(),
        1,
        "{log:?}"
    );
    let mut applied: Vec<&str> = log[1..].iter().map(String::as_str).collect();
    applied.sort_unstable();
    assert_eq!(applied, ["apply new", "apply old", "apply update"]);
}
