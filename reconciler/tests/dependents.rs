//! Dependents around disruptive changes, against recording fake drivers: the plan lists
//! which running objects are stopped and started again around a replace (and which keep
//! running, and why), and the executor orders stop dependents → change → start
//! dependents, never replaces something under a dependent it could not stop, and starts
//! a dependent shared by two changes once, after both.
//!
//! The fakes: a Volume and a Bridge driver that replace what they are told to (their
//! objects do not run: the default contract), a VirtualMachine driver whose VMs run
//! and can be stopped (one can be made to refuse), and a Container driver whose
//! restart support is chosen per test.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use gitvisor::contract::RestartSupport;
use gitvisor::drivers::{Driver, DriverError, Drivers, FailureClass, PlanContext, StepContext};
use gitvisor::execute::{Report, ResultKind, execute};
use gitvisor::load::{Revision, load_revision};
use gitvisor::model::{Kind, Resource, ResourceId};
use gitvisor::plan::{
    Action, Change, Effect, FieldChange, Hold, Plan, make_plan, render_json, render_text,
};

type Log = Arc<Mutex<Vec<String>>>;

/// One fake driver for `kind`: every declared resource is a no-op, except `replace`
/// (replaced) and `restart` (updated in place with a restart).
struct Fake {
    kind: Kind,
    replace: Vec<&'static str>,
    restart: Vec<&'static str>,
    /// What it answers for its objects as dependents.
    support: fn(&Change) -> RestartSupport,
    /// Objects whose stop fails.
    refuse_stop: Vec<&'static str>,
    log: Log,
}

impl Fake {
    fn new(kind: Kind, log: &Log) -> Fake {
        Fake {
            kind,
            replace: Vec::new(),
            restart: Vec::new(),
            support: |change| {
                RestartSupport::Unsupported(format!(
                    "the {} driver cannot stop and start its objects",
                    change.id.kind
                ))
            },
            refuse_stop: Vec::new(),
            log: log.clone(),
        }
    }

    fn running(mut self) -> Fake {
        self.support = |_| RestartSupport::Supported;
        self
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
        Ok(desired
            .iter()
            .map(|r| {
                let name = r.id().name.as_str().to_owned();
                let change = if self.replace.contains(&name.as_str()) {
                    Change::new(r.id(), Action::Replace)
                        .with_fields(vec![FieldChange::new(
                            "spec.volumeGroup",
                            "vg0",
                            "vg1",
                            Effect::Recreate,
                        )])
                        .with_reason("volumeGroup cannot change in place")
                } else if self.restart.contains(&name.as_str()) {
                    Change::new(r.id(), Action::Update).with_fields(vec![FieldChange::new(
                        "spec.cpus",
                        1,
                        2,
                        Effect::Restart,
                    )])
                } else {
                    Change::new(r.id(), Action::NoOp)
                };
                change.with_desired(r.clone())
            })
            .collect())
    }

    async fn apply(&self, change: &Change, _step: &StepContext) -> Result<(), DriverError> {
        self.record(&change.action.to_string(), &change.id);
        Ok(())
    }

    fn restart_support(&self, change: &Change) -> RestartSupport {
        (self.support)(change)
    }

    async fn stop(&self, change: &Change, _step: &StepContext) -> Result<(), DriverError> {
        self.record("stop", &change.id);
        if self.refuse_stop.contains(&change.id.name.as_str()) {
            return Err(DriverError::new(
                FailureClass::Transient,
                std::io::Error::other("the guest did not shut down"),
            ));
        }
        Ok(())
    }

    async fn start(&self, change: &Change, _step: &StepContext) -> Result<(), DriverError> {
        self.record("start", &change.id);
        Ok(())
    }
}

const HEAD: &str = "apiVersion: gitvisor.dev/v1alpha1\n";

/// Volume `data` and Bridge `br0`; VMs `vm1` (disk on `data`) and `vm2` (disk on
/// `data`, NIC on `br0`); container `web` depends on `vm1`; container `lone` on nothing.
fn manifests() -> String {
    [
        "kind: Volume\nmetadata: {name: data}\nspec: {volumeGroup: vg0, size: 1GiB}\n",
        "kind: Bridge\nmetadata: {name: br0}\nspec: {}\n",
        "kind: VirtualMachine\nmetadata: {name: vm1}\n\
         spec: {memory: 512MiB, boot: {kernel: /boot/vmlinuz}, disks: [{volume: data}]}\n",
        "kind: VirtualMachine\nmetadata: {name: vm2}\n\
         spec: {memory: 512MiB, boot: {kernel: /boot/vmlinuz}, disks: [{volume: data}], \
         networks: [{bridge: br0}]}\n",
        "kind: Container\nmetadata: {name: web, dependsOn: [VirtualMachine/vm1]}\n\
         spec: {image: /srv/images/web}\n",
        "kind: Container\nmetadata: {name: lone}\nspec: {image: /srv/images/lone}\n",
    ]
    .map(|doc| format!("{HEAD}{doc}"))
    .join("---\n")
}

fn revision() -> Revision {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.yaml"), manifests()).unwrap();
    load_revision(dir.path(), "h").unwrap()
}

fn id(text: &str) -> ResourceId {
    text.parse().unwrap()
}

async fn plan_with(drivers: &Drivers, revision: &Revision) -> Plan {
    make_plan(revision, "h", drivers, &PlanContext::default())
        .await
        .unwrap()
}

async fn run(drivers: Vec<Fake>) -> (Plan, Report, Vec<String>, Log) {
    let log = drivers[0].log.clone();
    let revision = revision();
    let drivers = Arc::new(Drivers::new(
        drivers
            .into_iter()
            .map(|d| Box::new(d) as Box<dyn Driver>)
            .collect(),
    ));
    let plan = plan_with(&drivers, &revision).await;
    let report = execute(&plan, &revision.graph, drivers, 8).await;
    let entries = log.lock().unwrap().clone();
    (plan, report, entries, log)
}

fn at(log: &[String], entry: &str) -> usize {
    log.iter()
        .position(|l| l == entry)
        .unwrap_or_else(|| panic!("{entry} not in {log:?}"))
}

fn count(log: &[String], entry: &str) -> usize {
    log.iter().filter(|l| *l == entry).count()
}

fn result(report: &Report, name: &str) -> ResultKind {
    report
        .results
        .iter()
        .find(|r| r.id == id(name))
        .unwrap_or_else(|| panic!("{name} not in {:?}", report.results))
        .result
        .clone()
}

/// Volume `data` replaced; VMs run and stop; containers as `containers` says.
fn volume_replaced(log: &Log, containers: fn(Kind, &Log) -> Fake) -> Vec<Fake> {
    let mut volumes = Fake::new(Kind::Volume, log);
    volumes.replace = vec!["data"];
    vec![
        volumes,
        Fake::new(Kind::Bridge, log),
        Fake::new(Kind::VirtualMachine, log).running(),
        containers(Kind::Container, log),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_lists_each_running_dependent_with_why() {
    let log = Log::default();
    let (plan, _, _, _) = run(volume_replaced(&log, Fake::new)).await;
    let listed: Vec<(String, bool)> = plan
        .restarts
        .iter()
        .map(|r| (r.id.to_string(), r.restarts()))
        .collect();
    // Dependencies first; `web` only through vm1; `lone` and br0 depend on nothing
    // that changes.
    assert_eq!(
        listed,
        [
            ("VirtualMachine/vm1".to_owned(), true),
            ("VirtualMachine/vm2".to_owned(), true),
            ("Container/web".to_owned(), false),
        ]
    );
    assert_eq!(
        plan.restarts[0].reason(),
        "stopped while Volume/data is replaced, then started again"
    );
    assert_eq!(
        plan.restarts[2].hold,
        Hold::KeepsRunning("the Container driver cannot stop and start its objects".into())
    );

    let text = render_text(&plan, false, false);
    assert!(
        text.contains(
            "Dependents of disruptive changes: 2 to stop and start again, 1 kept running:\n  \
             ↻ VirtualMachine/vm1\n      # stopped while Volume/data is replaced, then started again\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "  = Container/web\n      # keeps running while Volume/data is replaced: \
             the Container driver cannot stop and start its objects\n"
        ),
        "{text}"
    );
    let json = render_json(&plan);
    assert_eq!(json["restarts"][0]["kind"], "VirtualMachine");
    assert_eq!(json["restarts"][0]["name"], "vm1");
    assert_eq!(json["restarts"][0]["restart"], true);
    assert_eq!(
        json["restarts"][0]["because"],
        serde_json::json!([{"kind": "Volume", "name": "data", "action": "replace"}])
    );
    assert_eq!(json["restarts"][2]["restart"], false);
    // The keys docs/cli.md promises are all still there.
    for key in ["revision", "changes", "skipped", "summary"] {
        assert!(json.get(key).is_some(), "{key} missing from {json}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependents_stop_before_the_change_and_start_after_it() {
    let log = Log::default();
    let (_, report, log, _) = run(volume_replaced(&log, |kind, log| {
        Fake::new(kind, log).running()
    }))
    .await;
    assert!(report.converged(), "{:?}", report.results);
    let replace = at(&log, "replace Volume/data");
    for vm in ["VirtualMachine/vm1", "VirtualMachine/vm2"] {
        assert!(at(&log, &format!("stop {vm}")) < replace, "{log:?}");
        assert!(at(&log, &format!("start {vm}")) > replace, "{log:?}");
    }
    // web runs on vm1: it stops before vm1 and starts after it.
    assert!(at(&log, "stop Container/web") < at(&log, "stop VirtualMachine/vm1"));
    assert!(at(&log, "start Container/web") > at(&log, "start VirtualMachine/vm1"));
    assert!(
        !log.iter().any(|l| l.ends_with("Container/lone")),
        "{log:?}"
    );
    assert_eq!(log.len(), 7, "{log:?}");
    let restarted: Vec<String> = report.restarts.iter().map(|r| r.id.to_string()).collect();
    assert_eq!(restarted.len(), 3, "{restarted:?}");
    assert!(
        report
            .restarts
            .iter()
            .all(|r| r.result == ResultKind::Applied && r.because == [id("Volume/data")])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependent_that_cannot_be_stopped_holds_the_change_back() {
    let log = Log::default();
    let mut drivers = volume_replaced(&log, Fake::new);
    drivers[2].refuse_stop = vec!["vm1"];
    let (_, report, log, _) = run(drivers).await;
    assert!(
        !log.contains(&"replace Volume/data".to_owned()),
        "the volume was replaced under a running VM: {log:?}"
    );
    assert!(
        matches!(result(&report, "Volume/data"),
            ResultKind::Failed(gitvisor::execute::Failure { message: why, .. }) if why.starts_with("not attempted: dependent VirtualMachine/vm1 could not be stopped")
                && why.contains("the guest did not shut down")),
        "{:?}",
        report.results
    );
    // Whatever was stopped (or tried to be) is started again, and vm1 is not as declared.
    assert_eq!(count(&log, "start VirtualMachine/vm1"), 1, "{log:?}");
    assert!(matches!(
        result(&report, "VirtualMachine/vm1"),
        ResultKind::Failed(_)
    ));
    assert!(!report.converged());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependent_of_two_changes_stops_once_and_starts_after_both() {
    let log = Log::default();
    let mut drivers = volume_replaced(&log, Fake::new);
    drivers[1].replace = vec!["br0"];
    let (plan, report, log, _) = run(drivers).await;
    assert!(report.converged(), "{:?}", report.results);
    let vm2 = plan
        .restarts
        .iter()
        .find(|r| r.id == id("VirtualMachine/vm2"))
        .unwrap();
    assert_eq!(
        vm2.reason(),
        "stopped while Bridge/br0 is replaced and Volume/data is replaced, then started again"
    );
    assert_eq!(count(&log, "stop VirtualMachine/vm2"), 1, "{log:?}");
    assert_eq!(count(&log, "start VirtualMachine/vm2"), 1, "{log:?}");
    let start = at(&log, "start VirtualMachine/vm2");
    assert!(start > at(&log, "replace Volume/data"), "{log:?}");
    assert!(start > at(&log, "replace Bridge/br0"), "{log:?}");
    assert!(at(&log, "stop VirtualMachine/vm2") < at(&log, "replace Bridge/br0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarting_vm_stops_what_runs_on_it() {
    let log = Log::default();
    let mut vms = Fake::new(Kind::VirtualMachine, &log).running();
    vms.restart = vec!["vm1"];
    let drivers = vec![
        Fake::new(Kind::Volume, &log),
        Fake::new(Kind::Bridge, &log),
        vms,
        Fake::new(Kind::Container, &log).running(),
    ];
    let (plan, report, log, _) = run(drivers).await;
    assert!(report.converged(), "{:?}", report.results);
    let listed: Vec<String> = plan.restarts.iter().map(|r| r.id.to_string()).collect();
    assert_eq!(listed, ["Container/web"]);
    assert_eq!(
        plan.restarts[0].reason(),
        "stopped while VirtualMachine/vm1 is restarted, then started again"
    );
    assert_eq!(
        log,
        [
            "stop Container/web",
            "update VirtualMachine/vm1",
            "start Container/web"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_dependent_and_a_hot_update_restart_nothing() {
    let log = Log::default();
    let mut drivers = volume_replaced(&log, Fake::new);
    drivers[2].support = |_| RestartSupport::NotRunning;
    let (plan, _, log, _) = run(drivers).await;
    let listed: Vec<String> = plan.restarts.iter().map(|r| r.id.to_string()).collect();
    // The VMs do not run, so nothing of theirs is stopped; web still depends on data
    // through vm1 and its driver cannot stop it.
    assert_eq!(listed, ["Container/web"]);
    assert!(!log.iter().any(|l| l.starts_with("stop")), "{log:?}");

    // A hot update disrupts nothing.
    let hot = Change::new(id("Volume/data"), Action::Update).with_fields(vec![FieldChange::new(
        "spec.size",
        "1GiB",
        "2GiB",
        Effect::Hot,
    )]);
    assert!(!hot.is_disruptive());
}
