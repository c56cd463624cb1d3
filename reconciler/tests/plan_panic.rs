//! A driver that panics while planning (observing the host): its kind's resources fail as
//! bugs naming the driver and what it was doing, the other kinds still plan and apply,
//! the report is not converged (exit code 1), the store records the failures with an
//! event, and the controller's reconcile fails without taking the controller with it.
//! Also when the panic comes in the plan made again after the apply to verify it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use gitvisor::contract::CancelToken;
use gitvisor::daemon::{Controller, ControllerStatus, Origin, Reasons, Shared};
use gitvisor::drivers::bridge::{BridgeDriver, FakeLinks};
use gitvisor::drivers::{Driver, DriverError, Drivers, FailureClass, PlanContext, StepContext};
use gitvisor::execute::{Report, ResultKind, StepResult, silent};
use gitvisor::model::{Kind, Resource, ResourceId};
use gitvisor::plan::{Action, Change, make_plan, panicked_while_planning};
use gitvisor::reconcile::{PlanOptions, Reconciler, ReconcilerOptions, Source};
use gitvisor::state::{EventLevel, ResourceState, Store};

const HEAD: &str = "apiVersion: gitvisor.dev/v1alpha1\n";

/// A Volume driver whose `plan` panics while `panics` is set (and otherwise plans every
/// declared volume as a no-op).
struct VolumesPanicking {
    panics: Arc<AtomicBool>,
}

#[async_trait]
impl Driver for VolumesPanicking {
    fn kind(&self) -> Kind {
        Kind::Volume
    }

    async fn plan(
        &self,
        desired: &[Arc<Resource>],
        _context: &PlanContext,
    ) -> Result<Vec<Change>, DriverError> {
        if self.panics.load(Ordering::SeqCst) {
            panic!("injected panic reading the volume groups");
        }
        Ok(desired
            .iter()
            .map(|r| Change::new(r.id(), Action::NoOp).with_desired(r.clone()))
            .collect())
    }

    async fn apply(&self, _change: &Change, _step: &StepContext) -> Result<(), DriverError> {
        Ok(())
    }
}

/// The fake bridge host, whose `plan` panics from its `panic_from`th call on.
struct BridgesPanickingLater {
    bridges: BridgeDriver,
    calls: AtomicUsize,
    panic_from: usize,
}

#[async_trait]
impl Driver for BridgesPanickingLater {
    fn kind(&self) -> Kind {
        Kind::Bridge
    }

    async fn plan(
        &self,
        desired: &[Arc<Resource>],
        context: &PlanContext,
    ) -> Result<Vec<Change>, DriverError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) + 1 >= self.panic_from {
            panic!("injected panic listing the links");
        }
        self.bridges.plan(desired, context).await
    }

    async fn apply(&self, change: &Change, step: &StepContext) -> Result<(), DriverError> {
        self.bridges.apply(change, step).await
    }
}

fn bridge(name: &str, depends_on: &str) -> String {
    format!(
        "{HEAD}kind: Bridge\nmetadata: {{name: {name}, dependsOn: [{depends_on}]}}\nspec: {{}}\n---\n"
    )
}

fn volume(name: &str) -> String {
    format!(
        "{HEAD}kind: Volume\nmetadata: {{name: {name}}}\nspec: {{volumeGroup: vg0, size: 1GiB}}\n---\n"
    )
}

fn options(state: &std::path::Path) -> ReconcilerOptions {
    ReconcilerOptions {
        state_dir: state.join("state"),
        run_dir: state.join("run"),
        host: "h1".into(),
        concurrency: 4,
    }
}

fn step<'a>(report: &'a Report, id: &str) -> &'a StepResult {
    report
        .results
        .iter()
        .find(|r| r.id.to_string() == id)
        .unwrap_or_else(|| panic!("{id} missing from the report: {:?}", report.results))
}

#[track_caller]
fn assert_bug(report: &Report, id: &str, words: &[&str]) {
    let step = step(report, id);
    assert_eq!(step.class, Some(FailureClass::Bug), "{step:?}");
    match &step.result {
        ResultKind::Failed(gitvisor::execute::Failure { message: why, .. }) => {
            for word in words.iter().chain(&["gitvisor bug"]) {
                assert!(why.contains(word), "{word:?} not in {why}");
            }
        }
        other => panic!("{id}: expected a failure, got {other:?}"),
    }
}

#[track_caller]
fn assert_recorded(options: &ReconcilerOptions, id: &str) {
    let store = Store::open(&options.state_dir).unwrap();
    let id: ResourceId = id.parse().unwrap();
    assert_eq!(store.statuses().unwrap()[&id].state, ResourceState::Failed);
    assert!(!store.last_revision().unwrap().unwrap().converged);
    let events = store.events(20).unwrap();
    assert!(
        events.iter().any(|e| e.resource.as_ref() == Some(&id)
            && e.level == EventLevel::Error
            && e.message.contains("panicked")),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_driver_that_panics_planning_fails_its_kind_as_a_bug_and_the_others_apply() {
    let state = tempfile::tempdir().unwrap();
    let repo = tempfile::tempdir().unwrap();
    std::fs::write(
        repo.path().join("m.yaml"),
        bridge("br-ok", "") + &volume("data") + &bridge("br-after", "Volume/data"),
    )
    .unwrap();
    let options = options(state.path());
    let links = Arc::new(FakeLinks::new(Vec::new()));
    let reconciler = Reconciler::new(
        options.clone(),
        Drivers::new(vec![
            Box::new(BridgeDriver::new(links.clone())),
            Box::new(VolumesPanicking {
                panics: Arc::new(AtomicBool::new(true)),
            }),
        ]),
    );
    let source = Source::from_paths(&[repo.path().to_path_buf()]);
    let revision = reconciler.load(&source).unwrap();
    let outcome = reconciler
        .apply(
            &revision,
            &source,
            &PlanOptions::default(),
            silent(),
            CancelToken::new(),
        )
        .await
        .expect("a panicking driver is a failed resource, not a failed command");
    let report = &outcome.report;

    // `gitvisor apply` exits 1 exactly when the report is not converged.
    assert!(!report.converged(), "{:?}", report.results);
    assert_bug(
        report,
        "Volume/data",
        &[
            "the Volume driver panicked while observing the host to plan Volume/data",
            "injected panic reading the volume groups",
        ],
    );
    assert_eq!(step(report, "Bridge/br-ok").result, ResultKind::Applied);
    assert!(links.link("br-ok").is_some());
    assert_eq!(
        step(report, "Bridge/br-after").result,
        ResultKind::Blocked("Volume/data".parse().unwrap())
    );
    assert_recorded(&options, "Volume/data");

    // A volume the store records and the revision no longer declares is not deleted
    // while its driver cannot see the host: it fails the same way.
    let old: ResourceId = "Volume/old".parse().unwrap();
    let drivers = Drivers::new(vec![
        Box::new(BridgeDriver::new(links.clone())),
        Box::new(VolumesPanicking {
            panics: Arc::new(AtomicBool::new(true)),
        }),
    ]);
    let plan = make_plan(&revision, "h1", &drivers, &PlanContext::new([old.clone()]))
        .await
        .unwrap();
    let change = plan
        .changes
        .iter()
        .find(|c| c.id == old)
        .expect("a change for the recorded volume");
    assert_eq!(change.action, Action::Unsupported);
    assert!(panicked_while_planning(change), "{change:?}");
}

#[tokio::test]
async fn a_panic_in_the_plan_that_verifies_an_apply_fails_its_steps_as_bugs() {
    let state = tempfile::tempdir().unwrap();
    let repo = tempfile::tempdir().unwrap();
    std::fs::write(repo.path().join("m.yaml"), bridge("br-ok", "")).unwrap();
    let options = options(state.path());
    let links = Arc::new(FakeLinks::new(Vec::new()));
    let reconciler = Reconciler::new(
        options.clone(),
        Drivers::new(vec![Box::new(BridgesPanickingLater {
            bridges: BridgeDriver::new(links.clone()),
            calls: AtomicUsize::new(0),
            panic_from: 2,
        })]),
    );
    let source = Source::from_paths(&[repo.path().to_path_buf()]);
    let revision = reconciler.load(&source).unwrap();
    let outcome = reconciler
        .apply(
            &revision,
            &source,
            &PlanOptions::default(),
            silent(),
            CancelToken::new(),
        )
        .await
        .expect("a panic while verifying is a failed resource, not a failed command");
    let report = &outcome.report;
    assert!(links.link("br-ok").is_some(), "the create itself ran");
    assert!(!report.converged(), "{:?}", report.results);
    assert_bug(
        report,
        "Bridge/br-ok",
        &[
            "cannot confirm the change",
            "the Bridge driver panicked while observing the host again after the apply",
            "injected panic listing the links",
        ],
    );
    assert_recorded(&options, "Bridge/br-ok");
}

#[tokio::test(start_paused = true)]
async fn the_controllers_reconcile_fails_on_a_panicking_plan_and_the_controller_lives_on() {
    let state = tempfile::tempdir().unwrap();
    let repo = tempfile::tempdir().unwrap();
    std::fs::write(
        repo.path().join("m.yaml"),
        bridge("br-ok", "") + &volume("data"),
    )
    .unwrap();
    let links = Arc::new(FakeLinks::new(Vec::new()));
    let panics = Arc::new(AtomicBool::new(true));
    let reconciler = Reconciler::new(
        options(state.path()),
        Drivers::new(vec![
            Box::new(BridgeDriver::new(links.clone())),
            Box::new(VolumesPanicking {
                panics: panics.clone(),
            }),
        ]),
    );
    let origin = Origin::Dir(repo.path().to_owned());
    let shared = Arc::new(Shared::new(ControllerStatus::starting(
        origin.describe(),
        None,
        "h1".into(),
        Duration::from_secs(300),
        None,
    )));
    let mut controller = Controller::new(reconciler, origin, shared);
    let cancel = CancelToken::new();
    let source = Reasons {
        source: true,
        ..Reasons::default()
    };
    let failed = controller.reconcile(source, &cancel).await;
    assert!(!failed.converged, "{failed:?}");
    assert!(links.link("br-ok").is_some(), "the other kind applied");

    // The bug fixed (a new build, here the flag), the next reconcile converges.
    panics.store(false, Ordering::SeqCst);
    let synced = controller
        .reconcile(
            Reasons {
                request: true,
                ..Reasons::default()
            },
            &cancel,
        )
        .await;
    assert!(synced.converged, "{synced:?}");
}
