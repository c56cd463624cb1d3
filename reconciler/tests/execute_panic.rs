//! A driver that panics: the resource is reported failed as a bug (never dropped from the
//! report, so the run is not converged), its dependents are blocked, the running
//! dependents stopped around it are started again, and the store records the failure
//! with an event. Once through the executor with recording fakes (a replace, a delete, a
//! dependent's stop), once through `Reconciler::apply` with the fake bridge host and the
//! store.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use gitvisor::contract::{CancelToken, RestartSupport};
use gitvisor::drivers::bridge::{BridgeDriver, FakeLinks};
use gitvisor::drivers::{Driver, DriverError, Drivers, FailureClass, PlanContext, StepContext};
use gitvisor::execute::{Report, ResultKind, StepResult, execute, silent};
use gitvisor::load::load_revision;
use gitvisor::model::{Kind, Resource, ResourceId};
use gitvisor::plan::{Action, Change, Effect, FieldChange, make_plan};
use gitvisor::reconcile::{PlanOptions, Reconciler, ReconcilerOptions, Source};
use gitvisor::state::{EventLevel, ResourceState, Store};

type Log = Arc<Mutex<Vec<String>>>;

/// Plans `replace` as replaced, the rest as no-ops, and `delete` as deletes; its objects
/// run (so they are stopped around their dependencies' replaces). `apply` panics for the
/// names in `panic_on`, `stop` for those in `panic_on_stop`.
struct Fake {
    kind: Kind,
    replace: Vec<&'static str>,
    delete: Vec<&'static str>,
    panic_on: Vec<&'static str>,
    panic_on_stop: Vec<&'static str>,
    log: Log,
}

impl Fake {
    fn new(kind: Kind, log: &Log) -> Fake {
        Fake {
            kind,
            replace: Vec::new(),
            delete: Vec::new(),
            panic_on: Vec::new(),
            panic_on_stop: Vec::new(),
            log: log.clone(),
        }
    }

    fn record(&self, what: &str, id: &ResourceId) {
        self.log.lock().unwrap().push(format!("{what} {id}"));
    }
}

#[async_trait]
impl Driver for Fake {
    fn kind(&self) -> Kind {
        self.kind
    }

    async fn plan(
        &self,
        desired: &[Arc<Resource>],
        _context: &PlanContext,
    ) -> Result<Vec<Change>, DriverError> {
        let mut changes: Vec<Change> = desired
            .iter()
            .map(|r| {
                let change = if self.replace.contains(&r.id().name.as_str()) {
                    Change::new(r.id(), Action::Replace).with_fields(vec![FieldChange::new(
                        "spec.volumeGroup",
                        "vg0",
                        "vg1",
                        Effect::Recreate,
                    )])
                } else {
                    Change::new(r.id(), Action::NoOp)
                };
                change.with_desired(r.clone())
            })
            .collect();
        for name in &self.delete {
            let id = format!("{}/{name}", self.kind).parse().unwrap();
            changes.push(Change::new(id, Action::Delete));
        }
        Ok(changes)
    }

    async fn apply(&self, change: &Change, _step: &StepContext) -> Result<(), DriverError> {
        self.record(&change.action.to_string(), &change.id);
        if self.panic_on.contains(&change.id.name.as_str()) {
            panic!("injected panic applying {}", change.id);
        }
        Ok(())
    }

    fn restart_support(&self, _change: &Change) -> RestartSupport {
        RestartSupport::Supported
    }

    async fn stop(&self, change: &Change, _step: &StepContext) -> Result<(), DriverError> {
        self.record("stop", &change.id);
        if self.panic_on_stop.contains(&change.id.name.as_str()) {
            panic!("injected panic stopping {}", change.id);
        }
        Ok(())
    }

    async fn start(&self, change: &Change, _step: &StepContext) -> Result<(), DriverError> {
        self.record("start", &change.id);
        Ok(())
    }
}

const HEAD: &str = "apiVersion: gitvisor.dev/v1alpha1\n";

/// Volumes `data` and `logs`; VM `vm1` runs on `data`, VM `vm2` on `logs`.
fn manifests() -> String {
    [
        "kind: Volume\nmetadata: {name: data}\nspec: {volumeGroup: vg0, size: 1GiB}\n",
        "kind: Volume\nmetadata: {name: logs}\nspec: {volumeGroup: vg0, size: 1GiB}\n",
        "kind: VirtualMachine\nmetadata: {name: vm1}\n\
         spec: {memory: 512MiB, boot: {kernel: /boot/vmlinuz}, disks: [{volume: data}]}\n",
        "kind: VirtualMachine\nmetadata: {name: vm2}\n\
         spec: {memory: 512MiB, boot: {kernel: /boot/vmlinuz}, disks: [{volume: logs}]}\n",
    ]
    .map(|doc| format!("{HEAD}{doc}"))
    .join("---\n")
}

async fn run(drivers: Vec<Fake>) -> (Report, Vec<String>) {
    let log = drivers[0].log.clone();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.yaml"), manifests()).unwrap();
    let revision = load_revision(dir.path(), "h").unwrap();
    let drivers = Arc::new(Drivers::new(
        drivers
            .into_iter()
            .map(|d| Box::new(d) as Box<dyn Driver>)
            .collect(),
    ));
    let plan = make_plan(&revision, "h", &drivers, &PlanContext::default())
        .await
        .unwrap();
    let report = execute(&plan, &revision.graph, drivers, 8).await;
    let entries = log.lock().unwrap().clone();
    (report, entries)
}

fn step<'a>(report: &'a Report, id: &str) -> &'a StepResult {
    report
        .results
        .iter()
        .find(|r| r.id.to_string() == id)
        .unwrap_or_else(|| panic!("{id} missing from the report: {:?}", report.results))
}

#[track_caller]
fn assert_failed_as_bug(report: &Report, id: &str, call: &str) {
    let step = step(report, id);
    assert_eq!(step.class, Some(FailureClass::Bug), "{step:?}");
    match &step.result {
        ResultKind::Failed(gitvisor::execute::Failure { message: why, .. }) => {
            assert!(
                why.contains(&format!("panicked during {call} of {id}"))
                    && why.contains("injected panic")
                    && why.contains("gitvisor bug"),
                "{why}"
            );
        }
        other => panic!("{id}: expected a failure, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_replace_fails_as_a_bug_and_its_stopped_dependent_starts_again() {
    let log = Log::default();
    let mut volumes = Fake::new(Kind::Volume, &log);
    volumes.replace = vec!["data", "logs"];
    volumes.panic_on = vec!["data"];
    let mut bridges = Fake::new(Kind::Bridge, &log);
    bridges.delete = vec!["old"];
    bridges.panic_on = vec!["old"];
    let (report, log) = run(vec![
        volumes,
        bridges,
        Fake::new(Kind::VirtualMachine, &log),
    ])
    .await;

    assert!(!report.converged(), "{:?}", report.results);
    assert_failed_as_bug(&report, "Volume/data", "replace apply");
    assert_failed_as_bug(&report, "Bridge/old", "delete apply");
    // The other replace, untouched by the panic, went through.
    assert_eq!(step(&report, "Volume/logs").result, ResultKind::Applied);
    // vm1 was stopped for the replace of data; the panic did not leave it stopped.
    let stop = log.iter().position(|l| l == "stop VirtualMachine/vm1");
    let start = log.iter().position(|l| l == "start VirtualMachine/vm1");
    assert!(
        stop.is_some() && start > stop,
        "vm1 left stopped after the panic: {log:?}"
    );
    let restart = report
        .restarts
        .iter()
        .find(|r| r.id.to_string() == "VirtualMachine/vm1")
        .expect("vm1's restart is reported");
    assert_eq!(restart.result, ResultKind::Applied, "{restart:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependent_whose_stop_panics_holds_the_change_back_and_fails_as_a_bug() {
    let log = Log::default();
    let mut volumes = Fake::new(Kind::Volume, &log);
    volumes.replace = vec!["data"];
    let mut vms = Fake::new(Kind::VirtualMachine, &log);
    vms.panic_on_stop = vec!["vm1"];
    let (report, log) = run(vec![volumes, Fake::new(Kind::Bridge, &log), vms]).await;

    assert!(!report.converged(), "{:?}", report.results);
    assert!(
        !log.contains(&"replace Volume/data".to_owned()),
        "replaced under a VM that was not stopped: {log:?}"
    );
    assert_failed_as_bug(&report, "VirtualMachine/vm1", "stop");
    assert!(
        matches!(&step(&report, "Volume/data").result,
            ResultKind::Failed(gitvisor::execute::Failure { message: why, .. }) if why.starts_with("not attempted: dependent VirtualMachine/vm1")),
        "{:?}",
        report.results
    );
    assert!(
        log.contains(&"start VirtualMachine/vm1".to_owned()),
        "{log:?}"
    );
}

/// A driver whose `prepare_apply` panics: its steps still run, unprepared.
struct PanicsPreparing(Fake);

#[async_trait]
impl Driver for PanicsPreparing {
    fn kind(&self) -> Kind {
        self.0.kind
    }

    async fn plan(
        &self,
        desired: &[Arc<Resource>],
        context: &PlanContext,
    ) -> Result<Vec<Change>, DriverError> {
        self.0.plan(desired, context).await
    }

    fn prepare_apply(&self, _changes: &[&Change]) {
        panic!("injected panic preparing");
    }

    async fn apply(&self, change: &Change, step: &StepContext) -> Result<(), DriverError> {
        self.0.apply(change, step).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_that_panics_preparing_still_applies_its_changes() {
    let log = Log::default();
    let mut volumes = Fake::new(Kind::Volume, &log);
    volumes.replace = vec!["data"];
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.yaml"), manifests()).unwrap();
    let revision = load_revision(dir.path(), "h").unwrap();
    let drivers = Arc::new(Drivers::new(vec![
        Box::new(PanicsPreparing(volumes)) as Box<dyn Driver>,
        Box::new(Fake::new(Kind::VirtualMachine, &log)),
    ]));
    let plan = make_plan(&revision, "h", &drivers, &PlanContext::default())
        .await
        .unwrap();
    let report = execute(&plan, &revision.graph, drivers, 8).await;
    assert_eq!(step(&report, "Volume/data").result, ResultKind::Applied);
    assert!(report.converged(), "{:?}", report.results);
    assert!(
        log.lock()
            .unwrap()
            .contains(&"replace Volume/data".to_owned())
    );
}

/// The fake bridge host, except that applying `Bridge/br-boom` panics.
struct Panicking(BridgeDriver);

#[async_trait]
impl Driver for Panicking {
    fn kind(&self) -> Kind {
        self.0.kind()
    }

    async fn plan(
        &self,
        desired: &[Arc<Resource>],
        context: &PlanContext,
    ) -> Result<Vec<Change>, DriverError> {
        self.0.plan(desired, context).await
    }

    async fn apply(&self, change: &Change, step: &StepContext) -> Result<(), DriverError> {
        if change.id.name.as_str() == "br-boom" {
            panic!("injected panic applying {}", change.id);
        }
        self.0.apply(change, step).await
    }
}

fn bridge(name: &str, depends_on: &str) -> String {
    format!(
        "{HEAD}kind: Bridge\nmetadata: {{name: {name}, dependsOn: [{depends_on}]}}\nspec: {{}}\n---\n"
    )
}

#[tokio::test]
async fn apply_reports_a_panicking_driver_not_converged_and_records_it() {
    let state = tempfile::tempdir().unwrap();
    let repo = tempfile::tempdir().unwrap();
    std::fs::write(
        repo.path().join("m.yaml"),
        bridge("br-ok", "") + &bridge("br-boom", "") + &bridge("br-after", "Bridge/br-boom"),
    )
    .unwrap();
    let options = ReconcilerOptions {
        state_dir: state.path().join("state"),
        run_dir: state.path().join("run"),
        host: "h1".into(),
        concurrency: 4,
    };
    let links = Arc::new(FakeLinks::new(Vec::new()));
    let reconciler = Reconciler::new(
        options.clone(),
        Drivers::new(vec![Box::new(Panicking(BridgeDriver::new(links.clone())))]),
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
        .unwrap();
    let report = &outcome.report;

    // `gitvisor apply` exits 1 exactly when the report is not converged.
    assert!(!report.converged(), "{:?}", report.results);
    assert_failed_as_bug(report, "Bridge/br-boom", "create apply");
    assert_eq!(step(report, "Bridge/br-ok").result, ResultKind::Applied);
    assert_eq!(
        step(report, "Bridge/br-after").result,
        ResultKind::Blocked("Bridge/br-boom".parse().unwrap())
    );

    let store = Store::open(&options.state_dir).unwrap();
    let statuses = store.statuses().unwrap();
    let boom: ResourceId = "Bridge/br-boom".parse().unwrap();
    assert_eq!(statuses[&boom].state, ResourceState::Failed);
    assert!(!store.last_revision().unwrap().unwrap().converged);
    let events = store.events(20).unwrap();
    assert!(
        events.iter().any(|e| e.resource.as_ref() == Some(&boom)
            && e.level == EventLevel::Error
            && e.message.contains("panicked")),
        "{events:?}"
    );
}
