//! Pruning follows the last applied graph, not the kinds: through `Reconciler::apply` and
//! the store, with fake drivers over one in-memory host. Revision 1 declares a Volume, a
//! VM on it, a container that depends on both and a second container on the first;
//! revision 2 keeps only a bridge, so all four are pruned together. Each delete must
//! finish before what it depended on starts being deleted, a delete that fails keeps
//! what it depends on, and `plan` shows the order `apply` follows.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use gitvisor::contract::CancelToken;
use gitvisor::drivers::{Driver, DriverError, Drivers, FailureClass, PlanContext, StepContext};
use gitvisor::execute::{ResultKind, silent};
use gitvisor::model::{Kind, Resource, ResourceId};
use gitvisor::plan::{Action, Change};
use gitvisor::reconcile::{ApplyOutcome, PlanOptions, Reconciler, ReconcilerOptions, Source};
use gitvisor::state::Store;

/// The objects on the fake host, and what happened to them, in order.
#[derive(Default)]
struct Host {
    objects: Mutex<BTreeSet<ResourceId>>,
    log: Mutex<Vec<String>>,
    /// Deletes that fail.
    refuse_delete: Mutex<Vec<String>>,
}

impl Host {
    fn record(&self, entry: String) {
        self.log.lock().unwrap().push(entry);
    }
}

/// Plans creates for declared objects the host lacks, no-ops for those it has, and
/// deletes for owned objects of its kind no longer declared; deletes take a while, so a
/// wrong order overlaps.
struct Fake {
    kind: Kind,
    host: Arc<Host>,
}

#[async_trait]
impl Driver for Fake {
    fn kind(&self) -> Kind {
        self.kind
    }

    async fn plan(
        &self,
        desired: &[Arc<Resource>],
        context: &PlanContext,
    ) -> Result<Vec<Change>, DriverError> {
        let objects = self.host.objects.lock().unwrap().clone();
        let declared: BTreeSet<ResourceId> = desired.iter().map(|r| r.id()).collect();
        let mut changes: Vec<Change> = desired
            .iter()
            .map(|r| {
                let action = if objects.contains(&r.id()) {
                    Action::NoOp
                } else {
                    Action::Create
                };
                Change::new(r.id(), action).with_desired(r.clone())
            })
            .collect();
        for id in &context.owned {
            if id.kind == self.kind && !declared.contains(id) && objects.contains(id) {
                changes.push(Change::new(id.clone(), Action::Delete));
            }
        }
        Ok(changes)
    }

    async fn apply(&self, change: &Change, _step: &StepContext) -> Result<(), DriverError> {
        let id = change.id.clone();
        match change.action {
            Action::Create => {
                self.host.objects.lock().unwrap().insert(id);
            }
            Action::Delete => {
                self.host.record(format!("start {id}"));
                tokio::time::sleep(Duration::from_millis(40)).await;
                if self
                    .host
                    .refuse_delete
                    .lock()
                    .unwrap()
                    .contains(&id.to_string())
                {
                    self.host.record(format!("failed {id}"));
                    return Err(DriverError::new(
                        FailureClass::Transient,
                        std::io::Error::other(format!("{id} is busy")),
                    ));
                }
                self.host.objects.lock().unwrap().remove(&id);
                self.host.record(format!("end {id}"));
            }
            _ => {}
        }
        Ok(())
    }
}

const HEAD: &str = "apiVersion: gitvisor.dev/v1alpha1\n";

fn revision_1() -> String {
    [
        "kind: Bridge\nmetadata: {name: keep}\nspec: {}\n",
        "kind: Volume\nmetadata: {name: data}\nspec: {volumeGroup: vg0, size: 1GiB}\n",
        "kind: VirtualMachine\nmetadata: {name: vm1}\n\
         spec: {memory: 512MiB, boot: {kernel: /boot/vmlinuz}, disks: [{volume: data}]}\n",
        "kind: Container\nmetadata: {name: web, dependsOn: [VirtualMachine/vm1, Volume/data]}\n\
         spec: {image: /srv/images/web}\n",
        "kind: Container\nmetadata: {name: proxy, dependsOn: [Container/web]}\n\
         spec: {image: /srv/images/proxy}\n",
    ]
    .map(|doc| format!("{HEAD}{doc}"))
    .join("---\n")
}

fn revision_2() -> String {
    format!("{HEAD}kind: Bridge\nmetadata: {{name: keep}}\nspec: {{}}\n")
}

struct Setup {
    host: Arc<Host>,
    state: tempfile::TempDir,
    repo: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        Setup {
            host: Arc::new(Host::default()),
            state: tempfile::tempdir().unwrap(),
            repo: tempfile::tempdir().unwrap(),
        }
    }

    fn options(&self) -> ReconcilerOptions {
        ReconcilerOptions {
            state_dir: self.state.path().join("state"),
            run_dir: self.state.path().join("run"),
            host: "h1".into(),
            concurrency: 8,
        }
    }

    fn reconciler(&self) -> Reconciler {
        let drivers = Kind::BUILT_IN
            .iter()
            .map(|&kind| {
                Box::new(Fake {
                    kind,
                    host: self.host.clone(),
                }) as Box<dyn Driver>
            })
            .collect();
        Reconciler::new(self.options(), Drivers::new(drivers))
    }

    fn source(&self, manifests: &str) -> Source {
        std::fs::write(self.repo.path().join("m.yaml"), manifests).unwrap();
        Source::from_paths(&[self.repo.path().to_path_buf()])
    }

    async fn apply(&self, manifests: &str) -> ApplyOutcome {
        let source = self.source(manifests);
        let reconciler = self.reconciler();
        let revision = reconciler.load(&source).unwrap();
        reconciler
            .apply(
                &revision,
                &source,
                &PlanOptions::default(),
                silent(),
                CancelToken::new(),
            )
            .await
            .unwrap()
    }

    async fn plan_deletes(&self, manifests: &str) -> Vec<String> {
        let source = self.source(manifests);
        let reconciler = self.reconciler();
        let revision = reconciler.load(&source).unwrap();
        let plan = reconciler
            .plan(&revision, &source, &PlanOptions::default())
            .await
            .unwrap();
        plan.changes
            .iter()
            .filter(|c| c.action == Action::Delete)
            .map(|c| c.id.to_string())
            .collect()
    }

    fn log(&self) -> Vec<String> {
        self.host.log.lock().unwrap().clone()
    }
}

fn at(log: &[String], entry: &str) -> usize {
    log.iter()
        .position(|l| l == entry)
        .unwrap_or_else(|| panic!("{entry} not in {log:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_deletes_each_dependent_before_what_it_depends_on_across_kinds() {
    let setup = Setup::new();
    let first = setup.apply(&revision_1()).await;
    assert!(first.report.converged(), "{:?}", first.report.results);

    let planned = setup.plan_deletes(&revision_2()).await;
    assert_eq!(
        planned,
        [
            "Container/proxy",
            "Container/web",
            "VirtualMachine/vm1",
            "Volume/data"
        ],
        "plan's delete order"
    );

    let second = setup.apply(&revision_2()).await;
    assert!(second.report.converged(), "{:?}", second.report.results);
    let log = setup.log();
    assert_eq!(log.len(), 8, "{log:?}");
    // proxy depends on web, web on vm1 (and data), vm1 on data: each delete finished
    // before the next one started.
    for (dependent, dependency) in [
        ("Container/proxy", "Container/web"),
        ("Container/web", "VirtualMachine/vm1"),
        ("Container/web", "Volume/data"),
        ("VirtualMachine/vm1", "Volume/data"),
    ] {
        assert!(
            at(&log, &format!("end {dependent}")) < at(&log, &format!("start {dependency}")),
            "{dependency} deleted while {dependent} still existed: {log:?}"
        );
    }
    let store = Store::open(&setup.options().state_dir).unwrap();
    let owned: Vec<String> = store
        .owned()
        .unwrap()
        .keys()
        .map(ToString::to_string)
        .collect();
    assert_eq!(owned, ["Bridge/keep"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependent_that_could_not_be_deleted_keeps_what_it_depends_on() {
    let setup = Setup::new();
    setup.apply(&revision_1()).await;
    setup
        .host
        .refuse_delete
        .lock()
        .unwrap()
        .push("Container/web".into());

    let outcome = setup.apply(&revision_2()).await;
    let report = &outcome.report;
    assert!(!report.converged(), "{:?}", report.results);
    let result = |id: &str| {
        report
            .results
            .iter()
            .find(|r| r.id.to_string() == id)
            .unwrap_or_else(|| panic!("{id} not in {:?}", report.results))
            .clone()
    };
    assert_eq!(result("Container/proxy").result, ResultKind::Applied);
    assert!(matches!(
        result("Container/web").result,
        ResultKind::Failed(_)
    ));
    let web: ResourceId = "Container/web".parse().unwrap();
    for kept in ["VirtualMachine/vm1", "Volume/data"] {
        let step = result(kept);
        assert_eq!(step.result, ResultKind::Blocked(web.clone()), "{kept}");
        assert_eq!(
            step.failure().as_deref(),
            Some("blocked: dependent Container/web was not deleted, so what it depends on stays")
        );
    }
    let log = setup.log();
    assert!(
        !log.iter()
            .any(|l| l == "start VirtualMachine/vm1" || l == "start Volume/data"),
        "{log:?}"
    );
    // They stay owned, so the next run deletes them once web is gone.
    let store = Store::open(&setup.options().state_dir).unwrap();
    let owned = store.owned().unwrap();
    assert!(owned.contains_key(&"VirtualMachine/vm1".parse::<ResourceId>().unwrap()));
    assert!(owned.contains_key(&"Volume/data".parse::<ResourceId>().unwrap()));
    drop(store);

    setup.host.refuse_delete.lock().unwrap().clear();
    let again = setup.apply(&revision_2()).await;
    assert!(again.report.converged(), "{:?}", again.report.results);
    let log = setup.log();
    assert!(at(&log, "end Container/web") < at(&log, "start VirtualMachine/vm1"));
}
