//! `make_plan` against a fake driver: what the driver is handed.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::make_plan;
use crate::contract::{Action, Change, Driver, DriverError, Drivers, PlanContext, StepContext};
use crate::load::Revision;
use crate::model::{Kind, KindSpec, Metadata, Name, Resource, ResourceId, Spec};

/// Two kinds' specs as the planner sees them: opaque values of their kind (the engine
/// names no kind's driver folder, its tests included).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
struct Linked;

impl KindSpec for Linked {
    const KIND: Kind = Kind::Bridge;
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
struct Stored {
    group: String,
}

impl KindSpec for Stored {
    const KIND: Kind = Kind::Volume;
}

/// Records the context it was planned with.
struct Recorder {
    seen: Arc<Mutex<Option<PlanContext>>>,
}

#[async_trait]
impl Driver for Recorder {
    fn kind(&self) -> Kind {
        Kind::Bridge
    }

    async fn plan(
        &self,
        desired: &[Arc<Resource>],
        context: &PlanContext,
    ) -> Result<Vec<Change>, DriverError> {
        *self.seen.lock().expect("not poisoned") = Some(context.clone());
        Ok(desired
            .iter()
            .map(|r| Change::new(r.id(), Action::NoOp))
            .collect())
    }

    async fn apply(&self, _: &Change, _: &StepContext) -> Result<(), DriverError> {
        Ok(())
    }
}

fn resource(name: &str, spec: Spec) -> Arc<Resource> {
    let name = Name::parse(name).expect("valid name");
    Arc::new(Resource::new(Metadata::named(name), spec))
}

#[tokio::test]
async fn drivers_see_the_whole_revision_and_the_owned_set() {
    let resources = vec![
        resource("br0", Spec::new(Linked)),
        resource(
            "data",
            Spec::new(Stored {
                group: "vg0".into(),
            }),
        ),
    ];
    let revision = Revision {
        id: "test".into(),
        resources: resources.clone(),
        graph: crate::graph::DependencyGraph::default(),
        prune_policy: None,
    };
    let seen = Arc::new(Mutex::new(None));
    let drivers = Drivers::new(vec![Box::new(Recorder { seen: seen.clone() })]);
    let owned: ResourceId = "Bridge/br-old".parse().expect("id");
    make_plan(&revision, "h", &drivers, &PlanContext::new([owned.clone()]))
        .await
        .expect("plans");
    let context = seen.lock().expect("not poisoned").clone().expect("planned");
    assert!(context.is_recorded(&owned));
    let data = Name::parse("data").expect("valid name");
    let found = context
        .referenced(Kind::Volume, &data)
        .expect("a Bridge driver sees the revision's Volume");
    assert!(found.spec.get::<Stored>().is_some_and(|v| v.group == "vg0"));
    assert_eq!(context.declared_of(Kind::Bridge).count(), 1);
}

#[test]
fn a_restart_keeps_only_the_causes_the_plan_still_carries_out() {
    use super::{DependentRestart, Hold, Plan, SkipReason, Skipped};
    let id = |text: &str| -> ResourceId { text.parse().expect("id") };
    let replace = |text: &str| Change::new(id(text), Action::Replace);
    let restart = |causes: &[&str]| DependentRestart {
        id: id("VirtualMachine/vm1"),
        causes: causes
            .iter()
            .map(|cause| (id(cause), Action::Replace))
            .collect(),
        hold: Hold::Restart,
    };
    let mut plan = Plan {
        revision: "r".into(),
        host: "h".into(),
        changes: vec![replace("Bridge/br0")],
        // `--target` left the volume's replace out.
        skipped: vec![Skipped {
            change: replace("Volume/data"),
            reason: SkipReason::OutsideTarget,
        }],
        restarts: vec![restart(&["Bridge/br0", "Volume/data"])],
        delete_after: Default::default(),
    };
    plan.settle_restarts();
    assert_eq!(plan.restarts, [restart(&["Bridge/br0"])]);

    plan.changes.clear();
    plan.settle_restarts();
    assert!(plan.restarts.is_empty(), "{:?}", plan.restarts);
}
