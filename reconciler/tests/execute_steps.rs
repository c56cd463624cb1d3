//! The executor's step contract against a scripted fake driver: cancellation (no new
//! step after it, the report says which were cancelled), deadlines, progress, and
//! failures reported with their whole cause chain and their class.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use gitvisor::contract::{
    CancelToken, Change, Classify, Driver, DriverError, Drivers, FailureClass, Interrupted,
    PlanContext, ProgressEvent, StepContext,
};
use gitvisor::execute::{ExecuteOptions, Report, ResultKind, execute_with};
use gitvisor::load::{Revision, load_revision};
use gitvisor::model::{Kind, Resource};
use gitvisor::plan::{Action, make_plan};

/// What the fake does when asked to apply one resource.
#[derive(Clone, Copy)]
enum Script {
    /// Succeeds at once.
    Succeed,
    /// Cancels the run (SIGTERM arriving while this step runs), then succeeds.
    CancelTheRun,
    /// Says it started, then waits on the host through `StepContext::wait`.
    WaitOnTheHost,
    /// Hangs without ever looking at its context.
    Hang,
    /// Reports progress, then fails with a cause.
    ProgressThenFail,
}

struct Scripted {
    script: fn(&str) -> Script,
    cancel: CancelToken,
    started: Arc<tokio::sync::Notify>,
    log: Arc<Mutex<Vec<String>>>,
}

#[derive(Debug, thiserror::Error)]
#[error("volume {volume}: write the image")]
struct ImageError {
    volume: String,
    #[source]
    cause: std::io::Error,
}

impl Classify for ImageError {
    fn class(&self) -> FailureClass {
        FailureClass::NeedsUser
    }
}

#[async_trait]
impl Driver for Scripted {
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
            .map(|r| Change::new(r.id(), Action::Create).with_desired(r.clone()))
            .collect();
        changes.push(Change::new(
            "Bridge/old".parse().expect("id"),
            Action::Delete,
        ));
        Ok(changes)
    }

    async fn apply(&self, change: &Change, step: &StepContext) -> Result<(), DriverError> {
        self.log
            .lock()
            .expect("not poisoned")
            .push(change.id.to_string());
        match (self.script)(change.id.name.as_str()) {
            Script::Succeed => Ok(()),
            Script::CancelTheRun => {
                self.cancel.cancel();
                Ok(())
            }
            Script::WaitOnTheHost => {
                self.started.notify_one();
                step.wait(std::future::pending::<()>()).await?;
                Ok(())
            }
            Script::Hang => std::future::pending().await,
            Script::ProgressThenFail => {
                step.progress("image 40% written");
                Err(ImageError {
                    volume: change.id.name.to_string(),
                    cause: std::io::Error::other("No space left on device"),
                }
                .into())
            }
        }
    }

    fn step_budget(&self, change: &Change) -> Duration {
        match (self.script)(change.id.name.as_str()) {
            Script::Hang => Duration::from_millis(50),
            _ => gitvisor::contract::DEFAULT_STEP_BUDGET,
        }
    }
}

/// br-a ← br-c ← br-d, br-b ← br-e (each needs the one before it), and a delete.
const MANIFESTS: &str = include_str!("fixtures/five_bridges.yaml");

fn revision() -> Revision {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("m.yaml"), MANIFESTS).expect("write manifests");
    load_revision(dir.path(), "h").expect("valid revision")
}

struct Run {
    report: Report,
    log: Vec<String>,
    progress: Vec<ProgressEvent>,
}

/// Plans and executes the revision with `script`; `during` runs concurrently with the
/// execution, given the run's token and the driver's "started" signal.
async fn run<F, Fut>(script: fn(&str) -> Script, concurrency: usize, during: F) -> Run
where
    F: FnOnce(CancelToken, Arc<tokio::sync::Notify>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let revision = revision();
    let cancel = CancelToken::new();
    let started = Arc::new(tokio::sync::Notify::new());
    let log = Arc::new(Mutex::new(Vec::new()));
    let driver = Scripted {
        script,
        cancel: cancel.clone(),
        started: started.clone(),
        log: log.clone(),
    };
    let drivers = Arc::new(Drivers::new(vec![Box::new(driver)]));
    let plan = make_plan(&revision, "h", &drivers, &PlanContext::default())
        .await
        .expect("plans");
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
    let options = ExecuteOptions::new(concurrency)
        .with_cancel(cancel.clone())
        .with_progress(sender);
    let (report, ()) = tokio::join!(
        execute_with(&plan, &revision.graph, drivers, options),
        during(cancel, started)
    );
    let mut progress = Vec::new();
    while let Ok(event) = receiver.try_recv() {
        progress.push(event);
    }
    let log = log.lock().expect("not poisoned").clone();
    Run {
        report,
        log,
        progress,
    }
}

fn result(report: &Report, name: &str) -> ResultKind {
    report
        .results
        .iter()
        .find(|r| r.id.name.as_str() == name)
        .unwrap_or_else(|| panic!("{name} not in the report"))
        .result
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_cancel_no_step_starts_and_the_report_names_every_cancelled_one() {
    let run = run(|_| Script::CancelTheRun, 1, |_, _| async {}).await;
    // One permit: the first step to run cancels the run while it holds the permit.
    assert_eq!(
        run.log.len(),
        1,
        "steps started after the cancel: {:?}",
        run.log
    );
    let first = &run.log[0];
    let applied: Vec<String> = run
        .report
        .results
        .iter()
        .filter(|r| r.result == ResultKind::Applied)
        .map(|r| r.id.to_string())
        .collect();
    assert_eq!(&applied, std::slice::from_ref(first));
    let mut cancelled: Vec<String> = run.report.cancelled().map(|r| r.id.to_string()).collect();
    cancelled.sort();
    let mut expected: Vec<String> = [
        "Bridge/br-a",
        "Bridge/br-b",
        "Bridge/br-c",
        "Bridge/br-d",
        "Bridge/br-e",
        "Bridge/old",
    ]
    .iter()
    .map(|id| id.to_string())
    .filter(|id| id != first)
    .collect();
    expected.sort();
    assert_eq!(cancelled, expected);
    assert!(!run.report.converged());
    let json = serde_json::to_value(&run.report).expect("report serialises");
    assert!(
        json["results"]
            .as_array()
            .expect("results")
            .iter()
            .any(|r| r["result"] == "cancelled"),
        "{json}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_waiting_on_the_host_stops_at_the_cancel_and_its_dependents_never_start() {
    let script = |name: &str| match name {
        "br-a" => Script::WaitOnTheHost,
        _ => Script::Succeed,
    };
    let run = run(script, 8, |cancel, started| async move {
        started.notified().await;
        cancel.cancel();
    })
    .await;
    assert_eq!(result(&run.report, "br-a"), ResultKind::Cancelled);
    assert_eq!(result(&run.report, "br-c"), ResultKind::Cancelled);
    assert_eq!(result(&run.report, "br-d"), ResultKind::Cancelled);
    assert_eq!(result(&run.report, "old"), ResultKind::Cancelled);
    for never in ["Bridge/br-c", "Bridge/br-d", "Bridge/old"] {
        assert!(
            !run.log.iter().any(|l| l == never),
            "{never} started: {:?}",
            run.log
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_past_its_deadline_is_abandoned_as_a_transient_failure() {
    let script = |name: &str| match name {
        "br-b" => Script::Hang,
        _ => Script::Succeed,
    };
    let run = run(script, 8, |_, _| async {}).await;
    let step = run
        .report
        .results
        .iter()
        .find(|r| r.id.name.as_str() == "br-b")
        .expect("br-b reported");
    let ResultKind::Failed(gitvisor::execute::Failure { message: why, .. }) = &step.result else {
        panic!("{:?}", step.result);
    };
    assert!(why.contains("deadline of 50ms"), "{why}");
    assert_eq!(step.class, Some(FailureClass::Transient));
    assert_eq!(
        result(&run.report, "br-e"),
        ResultKind::Blocked("Bridge/br-b".parse().expect("id"))
    );
    assert_eq!(result(&run.report, "br-d"), ResultKind::Applied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_keeps_its_causes_and_class_and_progress_reaches_the_channel() {
    let script = |name: &str| match name {
        "br-a" => Script::ProgressThenFail,
        _ => Script::Succeed,
    };
    let run = run(script, 8, |_, _| async {}).await;
    let step = run
        .report
        .results
        .iter()
        .find(|r| r.id.name.as_str() == "br-a")
        .expect("br-a reported");
    assert_eq!(
        step.result,
        ResultKind::Failed(gitvisor::execute::Failure::new(
            FailureClass::NeedsUser,
            "volume br-a: write the image: No space left on device"
        ))
    );
    assert_eq!(step.class, Some(FailureClass::NeedsUser));
    let json = serde_json::to_value(step).expect("serialises");
    assert_eq!(json["class"], "needsUser");
    assert_eq!(json["result"], "failed");
    assert_eq!(
        run.progress,
        [ProgressEvent {
            id: "Bridge/br-a".parse().expect("id"),
            message: "image 40% written".into(),
        }]
    );
    let applied = run
        .report
        .results
        .iter()
        .find(|r| r.id.name.as_str() == "br-b")
        .expect("br-b reported");
    assert_eq!(applied.class, None);
    assert!(
        serde_json::to_value(applied)
            .expect("serialises")
            .get("class")
            .is_none()
    );
}

#[test]
fn interrupted_is_transient() {
    assert_eq!(Interrupted::Cancelled.class(), FailureClass::Transient);
}
