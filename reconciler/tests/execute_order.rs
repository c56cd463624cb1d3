//! The executor against a recording fake driver: dependency order, parallelism bounded,
//! a failure blocking only its dependents, deletes after everything else.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use gitvisor::drivers::{Driver, DriverError, Drivers, FailureClass, PlanContext, StepContext};
use gitvisor::execute::{ResultKind, execute};
use gitvisor::load::load_revision;
use gitvisor::model::{Kind, Resource};
use gitvisor::plan::{Action, Change, make_plan};

/// Plans every declared resource as a create and `owned_extra` as deletes; records the
/// order of `apply` calls and the peak number running at once.
struct FakeDriver {
    kind: Kind,
    fail: Vec<&'static str>,
    extra_deletes: Vec<&'static str>,
    log: Arc<Mutex<Vec<String>>>,
    running: Arc<Mutex<(usize, usize)>>,
}

#[async_trait]
impl Driver for FakeDriver {
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
            .map(|r| Change::new(r.id(), Action::Create).with_desired(r.clone()))
            .collect();
        for name in &self.extra_deletes {
            let id = format!("{}/{name}", self.kind).parse().unwrap();
            changes.push(Change::new(id, Action::Delete));
        }
        Ok(changes)
    }

    async fn apply(&self, change: &Change, _step: &StepContext) -> Result<(), DriverError> {
        {
            let mut running = self.running.lock().unwrap();
            running.0 += 1;
            running.1 = running.1.max(running.0);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.running.lock().unwrap().0 -= 1;
        self.log
            .lock()
            .unwrap()
            .push(format!("{} {}", change.action, change.id));
        if self.fail.contains(&change.id.name.as_str()) {
            return Err(DriverError::new(
                FailureClass::Transient,
                std::io::Error::other(format!("{}: injected failure", change.id)),
            ));
        }
        Ok(())
    }
}

const MANIFESTS: &str = include_str!("fixtures/five_bridges.yaml");

async fn run(
    fail: Vec<&'static str>,
    concurrency: usize,
) -> (Vec<String>, usize, gitvisor::execute::Report) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.yaml"), MANIFESTS).unwrap();
    let revision = load_revision(dir.path(), "h").unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let running = Arc::new(Mutex::new((0, 0)));
    let driver = FakeDriver {
        kind: Kind::Bridge,
        fail,
        extra_deletes: vec!["old"],
        log: log.clone(),
        running: running.clone(),
    };
    let drivers = Arc::new(Drivers::new(vec![Box::new(driver)]));
    let plan = make_plan(&revision, "h", &drivers, &PlanContext::default())
        .await
        .unwrap();
    let report = execute(&plan, &revision.graph, drivers, concurrency).await;
    let log = log.lock().unwrap().clone();
    let peak = running.lock().unwrap().1;
    (log, peak, report)
}

fn position(log: &[String], entry: &str) -> usize {
    log.iter()
        .position(|l| l == entry)
        .unwrap_or_else(|| panic!("{entry} not in {log:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependencies_first_deletes_last_in_parallel() {
    let (log, peak, report) = run(vec![], 8).await;
    assert!(report.converged());
    assert_eq!(log.len(), 6, "{log:?}");
    assert!(position(&log, "create Bridge/br-a") < position(&log, "create Bridge/br-c"));
    assert!(position(&log, "create Bridge/br-c") < position(&log, "create Bridge/br-d"));
    assert!(position(&log, "create Bridge/br-b") < position(&log, "create Bridge/br-e"));
    assert_eq!(log.last().unwrap(), "delete Bridge/old");
    assert!(
        peak >= 2,
        "independent resources should run in parallel (peak {peak})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_is_bounded() {
    let (_, peak, _) = run(vec![], 1).await;
    assert_eq!(peak, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_blocks_only_its_dependents() {
    let (log, _, report) = run(vec!["br-a"], 8).await;
    assert!(!report.converged());
    let result = |name: &str| {
        report
            .results
            .iter()
            .find(|r| r.id.name.as_str() == name)
            .unwrap()
            .result
            .clone()
    };
    assert!(matches!(result("br-a"), ResultKind::Failed(_)));
    assert_eq!(
        result("br-c"),
        ResultKind::Blocked("Bridge/br-a".parse().unwrap())
    );
    assert_eq!(
        result("br-d"),
        ResultKind::Blocked("Bridge/br-c".parse().unwrap())
    );
    assert_eq!(result("br-b"), ResultKind::Applied);
    assert_eq!(result("br-e"), ResultKind::Applied);
    assert!(
        !log.iter().any(|l| l.contains("br-c") || l.contains("br-d")),
        "{log:?}"
    );
}
