//! The library's `Reconciler` against the in-memory fake host: what `plan` shows is what
//! `apply` does, deletes nobody confirmed never happen, `--target` stays inside its
//! targets, an apply the host does not reflect is never reported converged, and `status`
//! shows drift without writing the store.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use gitvisor::contract::CancelToken;
use gitvisor::drivers::bridge::{BridgeDriver, FakeLinks};
use gitvisor::drivers::{Driver, DriverError, Drivers, PlanContext, StepContext};
use gitvisor::execute::{ResultKind, silent};
use gitvisor::model::{Kind, Resource, ResourceId};
use gitvisor::plan::{Action, Change, Plan, SkipReason};
use gitvisor::reconcile::{
    ApplyOutcome, Basis, Live, PlanOptions, PruneMode, Reconciler, ReconcilerOptions, Source,
};

fn bridge(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: gitvisor.dev/v1alpha1\nkind: Bridge\nmetadata: {{name: {name}}}\nspec: {spec}\n---\n"
    )
}

struct Host {
    links: Arc<FakeLinks>,
    state: tempfile::TempDir,
    repo: tempfile::TempDir,
}

impl Host {
    fn new() -> Host {
        Host {
            links: Arc::new(FakeLinks::new(Vec::new())),
            state: tempfile::tempdir().unwrap(),
            repo: tempfile::tempdir().unwrap(),
        }
    }

    fn options(&self) -> ReconcilerOptions {
        ReconcilerOptions {
            state_dir: self.state.path().join("state"),
            run_dir: self.state.path().join("run"),
            host: "h1".into(),
            concurrency: 4,
        }
    }

    fn reconciler(&self) -> Reconciler {
        let driver = BridgeDriver::new(self.links.clone());
        Reconciler::new(self.options(), Drivers::new(vec![Box::new(driver)]))
    }

    /// Writes `file` under the repository and returns its path.
    fn write(&self, file: &str, text: &str) -> PathBuf {
        let path = self.repo.path().join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.links.links().into_iter().map(|l| l.name).collect();
        names.sort();
        names
    }

    async fn plan(&self, paths: &[&Path], options: &PlanOptions) -> Plan {
        let source = source(paths);
        let reconciler = self.reconciler();
        let revision = reconciler.load(&source).unwrap();
        reconciler.plan(&revision, &source, options).await.unwrap()
    }

    async fn apply(&self, paths: &[&Path], options: &PlanOptions) -> ApplyOutcome {
        let source = source(paths);
        let reconciler = self.reconciler();
        let revision = reconciler.load(&source).unwrap();
        reconciler
            .apply(&revision, &source, options, silent(), CancelToken::new())
            .await
            .unwrap()
    }
}

fn source(paths: &[&Path]) -> Source {
    Source::from_paths(&paths.iter().map(|p| p.to_path_buf()).collect::<Vec<_>>())
}

/// What a plan carries out and what it leaves out, with why.
type Decisions = (Vec<(String, Action)>, Vec<(String, SkipReason)>);

fn decisions(plan: &Plan) -> Decisions {
    (
        plan.changes
            .iter()
            .map(|c| (c.id.to_string(), c.action))
            .collect(),
        plan.skipped
            .iter()
            .map(|s| (s.change.id.to_string(), s.reason.clone()))
            .collect(),
    )
}

fn prune(mode: PruneMode) -> PlanOptions {
    PlanOptions {
        prune: mode,
        ..PlanOptions::default()
    }
}

#[tokio::test]
async fn applying_another_file_deletes_nothing_unless_confirmed() {
    let host = Host::new();
    host.write(
        "network.yaml",
        &(bridge("br-a", "{}") + &bridge("br-b", "{}")),
    );
    host.apply(&[host.repo.path()], &PlanOptions::default())
        .await;
    assert_eq!(host.names(), ["br-a", "br-b"]);

    // `apply storage.yaml`: a file of its own, declaring one new bridge.
    let storage = host.write("elsewhere/storage.yaml", &bridge("br-st", "{}"));
    let plan = host.plan(&[&storage], &PlanOptions::default()).await;
    let outcome = host.apply(&[&storage], &PlanOptions::default()).await;
    assert_eq!(
        decisions(&plan),
        decisions(&outcome.plan),
        "plan and apply decided differently"
    );
    assert_eq!(host.names(), ["br-a", "br-b", "br-st"]);
    assert!(outcome.report.converged(), "{:?}", outcome.report);
    let (_, skipped) = decisions(&plan);
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(
        skipped
            .iter()
            .all(|(_, why)| matches!(why, SkipReason::OtherSource { declared_by } if declared_by.contains(host.repo.path().to_str().unwrap()))),
        "{skipped:?}"
    );

    // Applying the same file again still keeps them: they were never declared by it.
    host.apply(&[&storage], &PlanOptions::default()).await;
    assert_eq!(host.names(), ["br-a", "br-b", "br-st"]);

    // --no-prune keeps them even from their own source, where br-st is the stranger.
    let plan = host
        .plan(
            &[&host.repo.path().join("network.yaml")],
            &prune(PruneMode::Never),
        )
        .await;
    assert!(plan.changes.iter().all(|c| c.action != Action::Delete));

    // --prune confirms.
    let outcome = host.apply(&[&storage], &prune(PruneMode::Confirmed)).await;
    assert!(outcome.report.converged());
    assert_eq!(host.names(), ["br-st"]);
}

#[tokio::test]
async fn the_same_source_prunes_what_it_no_longer_declares() {
    let host = Host::new();
    let file = host.write("net.yaml", &(bridge("br-a", "{}") + &bridge("br-b", "{}")));
    host.apply(&[host.repo.path()], &PlanOptions::default())
        .await;
    std::fs::write(&file, bridge("br-a", "{}")).unwrap();
    let outcome = host
        .apply(&[host.repo.path()], &PlanOptions::default())
        .await;
    assert_eq!(
        decisions(&outcome.plan).0,
        [
            ("Bridge/br-a".to_owned(), Action::NoOp),
            ("Bridge/br-b".to_owned(), Action::Delete)
        ]
    );
    assert_eq!(host.names(), ["br-a"]);
}

#[tokio::test]
async fn an_emptied_repository_deletes_nothing_unless_confirmed() {
    let host = Host::new();
    let file = host.write("net.yaml", &(bridge("br-a", "{}") + &bridge("br-b", "{}")));
    host.apply(&[host.repo.path()], &PlanOptions::default())
        .await;
    std::fs::write(&file, "# everything moved elsewhere\n").unwrap();
    let outcome = host
        .apply(&[host.repo.path()], &PlanOptions::default())
        .await;
    assert_eq!(host.names(), ["br-a", "br-b"]);
    assert!(
        outcome
            .plan
            .skipped
            .iter()
            .all(|s| s.reason == SkipReason::DeletesEverything { count: 2 }),
        "{:?}",
        outcome.plan.skipped
    );
    host.apply(&[host.repo.path()], &prune(PruneMode::Confirmed))
        .await;
    assert!(host.names().is_empty());
}

#[tokio::test]
async fn several_paths_are_one_source() {
    let host = Host::new();
    let a = host.write("a.yaml", &bridge("br-a", "{}"));
    let b = host.write("b.yaml", &bridge("br-b", "{}"));
    host.apply(&[&a, &b], &PlanOptions::default()).await;
    assert_eq!(host.names(), ["br-a", "br-b"]);
    std::fs::write(&b, "# br-b removed\n").unwrap();
    // The same two paths in the other order: the same source, so br-b is pruned.
    host.apply(&[&b, &a], &PlanOptions::default()).await;
    assert_eq!(host.names(), ["br-a"]);
}

#[tokio::test]
async fn a_target_applies_it_and_its_dependencies_only() {
    let host = Host::new();
    let file = host.write(
        "net.yaml",
        &(bridge("br-base", "{}")
            + "apiVersion: gitvisor.dev/v1alpha1\nkind: Bridge\nmetadata: {name: br-top, dependsOn: [Bridge/br-base]}\nspec: {}\n---\n"
            + &bridge("br-other", "{}")
            + &bridge("br-old", "{}")),
    );
    host.apply(&[host.repo.path()], &prune(PruneMode::Never))
        .await;
    let other_before = host.links.link("br-other").unwrap();
    std::fs::write(
        &file,
        bridge("br-base", "{}")
            + "apiVersion: gitvisor.dev/v1alpha1\nkind: Bridge\nmetadata: {name: br-top, dependsOn: [Bridge/br-base]}\nspec: {mtu: 1400}\n---\n"
            + &bridge("br-other", "{mtu: 1400}"),
    )
    .unwrap();
    let target = PlanOptions {
        targets: vec!["Bridge/br-top".parse::<ResourceId>().unwrap()],
        ..PlanOptions::default()
    };
    let outcome = host.apply(&[host.repo.path()], &target).await;
    assert_eq!(host.links.link("br-top").unwrap().mtu, 1400);
    assert_eq!(
        host.links.link("br-other").unwrap(),
        other_before,
        "br-other is outside the target"
    );
    assert!(
        host.links.link("br-old").is_some(),
        "pruned outside the target"
    );
    assert!(
        outcome
            .report
            .results
            .iter()
            .any(|r| r.id.name.as_str() == "br-old" && matches!(r.result, ResultKind::Skipped(_)))
    );

    // Left out is not forgotten: the next full apply still knows br-old is ours.
    let outcome = host
        .apply(&[host.repo.path()], &PlanOptions::default())
        .await;
    assert!(outcome.report.converged(), "{:?}", outcome.report);
    assert_eq!(host.names(), ["br-base", "br-other", "br-top"]);
    assert_eq!(host.links.link("br-other").unwrap().mtu, 1400);
}

/// Plans like the bridge driver, but its applies do nothing: a host that accepts every
/// request and keeps none.
struct Forgetful(BridgeDriver);

#[async_trait]
impl Driver for Forgetful {
    fn kind(&self) -> Kind {
        Kind::Bridge
    }

    async fn plan(
        &self,
        desired: &[Arc<Resource>],
        context: &PlanContext,
    ) -> Result<Vec<Change>, DriverError> {
        self.0.plan(desired, context).await
    }

    async fn apply(&self, _change: &Change, _step: &StepContext) -> Result<(), DriverError> {
        Ok(())
    }
}

#[tokio::test]
async fn an_apply_the_host_does_not_show_is_not_converged() {
    let host = Host::new();
    host.write("net.yaml", &bridge("br-a", "{mtu: 1400}"));
    let driver = Forgetful(BridgeDriver::new(host.links.clone()));
    let reconciler = Reconciler::new(host.options(), Drivers::new(vec![Box::new(driver)]));
    let source = source(&[host.repo.path()]);
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
    assert!(!outcome.report.converged());
    assert!(
        matches!(&outcome.report.results[0].result,
            ResultKind::Failed(gitvisor::execute::Failure { message: why, .. }) if why.contains("host does not match after apply")),
        "{:?}",
        outcome.report.results
    );
}

#[tokio::test]
async fn status_shows_drift_and_never_writes_the_store() {
    let host = Host::new();
    // Nothing applied yet: no store is created by looking.
    let report = host.reconciler().status(false).await.unwrap();
    assert!(report.last.is_none());
    assert!(
        !host.options().state_dir.exists(),
        "status created the state dir"
    );

    host.write(
        "net.yaml",
        &(bridge("br-a", "{mtu: 1400}") + &bridge("br-b", "{}")),
    );
    host.apply(&[host.repo.path()], &PlanOptions::default())
        .await;
    // Someone changes br-a's MTU by hand, and deletes br-b.
    let mut links = host.links.links();
    links.retain(|l| l.name != "br-b");
    for link in &mut links {
        link.mtu = 1280;
    }
    let drifted = Host {
        links: Arc::new(FakeLinks::new(links)),
        state: host.state,
        repo: host.repo,
    };
    let store = drifted.options().state_dir.join("state.redb");
    let before = std::fs::read(&store).unwrap();
    let report = drifted.reconciler().status(false).await.unwrap();
    assert_eq!(
        std::fs::read(&store).unwrap(),
        before,
        "status wrote the store"
    );
    let view = report.host.expect("observed");
    assert!(
        matches!(view.basis, Basis::LastRevision { .. }),
        "{:?}",
        view.basis
    );
    let a = &view.resources[&"Bridge/br-a".parse::<ResourceId>().unwrap()];
    assert_eq!(a.describe(), "Drifted: mtu 1400 → 1280 on the host");
    let b = &view.resources[&"Bridge/br-b".parse::<ResourceId>().unwrap()];
    assert_eq!(*b, Live::Missing);

    // The manifests changed since: presence only, and why.
    drifted.write("net.yaml", &bridge("br-a", "{mtu: 9000}"));
    let report = drifted.reconciler().status(false).await.unwrap();
    let view = report.host.expect("observed");
    assert!(
        matches!(&view.basis, Basis::Presence { why } if why.contains("changed since")),
        "{:?}",
        view.basis
    );
    assert_eq!(
        view.resources[&"Bridge/br-a".parse::<ResourceId>().unwrap()],
        Live::Present
    );
    assert_eq!(
        view.resources[&"Bridge/br-b".parse::<ResourceId>().unwrap()],
        Live::Absent
    );

    let offline = drifted.reconciler().status(true).await.unwrap();
    assert!(offline.host.is_none());
    assert_eq!(offline.statuses.len(), 2);
}

#[tokio::test]
async fn status_says_when_the_store_is_damaged() {
    let host = Host::new();
    host.write("net.yaml", &bridge("br-a", "{}"));
    host.apply(&[host.repo.path()], &PlanOptions::default())
        .await;
    let report = host.reconciler().status(true).await.unwrap();
    assert_eq!(report.damage, None);

    let store = host.options().state_dir.join("state.redb");
    let bytes = std::fs::read(&store).unwrap();
    std::fs::write(&store, vec![0x5a; bytes.len()]).unwrap();
    let report = host.reconciler().status(true).await.unwrap();
    let damage = report.damage.expect("the damage is reported");
    assert!(damage.contains("state.redb"), "{damage}");
    assert!(report.last.is_none() && report.statuses.is_empty());
}
