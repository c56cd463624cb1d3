//! The controller's policies over the in-memory fake host (`daemon::Controller`, one
//! reconcile at a time, driven by hand): a bad revision is rejected whole and the last
//! good one kept and re-applied at resync (drift repair); a transient failure is held
//! for its backoff while the other resources proceed, then retried; a failure only a
//! person can fix waits for a sync; a driver's event reconciles the resource it names
//! and nothing else. Retries and events go through the controller's scheduler, as in
//! the loop. Time is Tokio's paused clock, so backoffs are exact, not raced.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gitvisor::contract::{
    CancelToken, Change, Driver, DriverError, HostEvent, PlanContext, StepContext, WatchSink,
};
use gitvisor::daemon::scheduler::{Due, QUIET, Scope};
use gitvisor::daemon::{Controller, ControllerStatus, Origin, Reasons, Shared};
use gitvisor::drivers::Drivers;
use gitvisor::drivers::bridge::{BridgeDriver, FakeLinks, LinkRequest, LinkSeam};
use gitvisor::model::{Kind, Resource, ResourceId};
use gitvisor::reconcile::{Reconciler, ReconcilerOptions};
use nix::errno::Errno;

fn bridge(name: &str, address: &str) -> String {
    format!(
        "apiVersion: gitvisor.dev/v1alpha1\nkind: Bridge\nmetadata: {{name: {name}}}\nspec: {{mtu: 1500, addresses: [{address}]}}\n"
    )
}

struct Setup {
    links: Arc<FakeLinks>,
    shared: Arc<Shared>,
    controller: Controller,
    repo: tempfile::TempDir,
    _state: tempfile::TempDir,
}

fn setup() -> Setup {
    let links = Arc::new(FakeLinks::new(Vec::new()));
    setup_with(links.clone(), Box::new(BridgeDriver::new(links)))
}

fn setup_with(links: Arc<FakeLinks>, driver: Box<dyn Driver>) -> Setup {
    let state = tempfile::tempdir().unwrap();
    let repo = tempfile::tempdir().unwrap();
    let options = ReconcilerOptions {
        state_dir: state.path().join("state"),
        run_dir: state.path().join("run"),
        host: "h1".into(),
        concurrency: 4,
    };
    let reconciler = Reconciler::new(options, Drivers::new(vec![driver]));
    let origin = Origin::Dir(repo.path().to_owned());
    let shared = Arc::new(Shared::new(ControllerStatus::starting(
        origin.describe(),
        None,
        "h1".into(),
        Duration::from_secs(300),
        None,
    )));
    let controller = Controller::new(reconciler, origin, shared.clone());
    Setup {
        links,
        shared,
        controller,
        repo,
        _state: state,
    }
}

fn write(dir: &Path, file: &str, text: &str) {
    std::fs::write(dir.join(file), text).unwrap();
}

/// `"source+resync"` → a reconcile of the whole revision for those reasons.
fn reasons(set: &str) -> Due {
    let has = |word: &str| set.split('+').any(|w| w == word);
    Due {
        reasons: Reasons {
            source: has("source"),
            resync: has("resync"),
            retry: has("retry"),
            container: has("container"),
            request: has("sync"),
            reload: false,
            watch: has("watch"),
        },
        scope: Scope::Revision,
    }
}

fn bridge_id(name: &str) -> ResourceId {
    format!("Bridge/{name}").parse().unwrap()
}

/// What the scheduler has due now, as the loop would take it.
fn take_due(controller: &mut Controller) -> Due {
    controller
        .scheduler()
        .take_due(tokio::time::Instant::now())
        .expect("something is due")
}

/// How many requests add `cidr`.
fn adds(links: &FakeLinks, cidr: &str) -> usize {
    links
        .requests()
        .iter()
        .filter(|r| matches!(r, LinkRequest::AddAddress { cidr: c, .. } if c.to_string() == cidr))
        .count()
}

#[tokio::test(start_paused = true)]
async fn a_bad_revision_is_rejected_whole_and_the_last_good_one_is_kept_and_repaired() {
    let mut s = setup();
    let cancel = CancelToken::new();
    write(s.repo.path(), "a.yaml", &bridge("br-a", "10.0.1.1/24"));
    let first = s.controller.reconcile(reasons("source"), &cancel).await;
    assert!(first.converged, "{first:?}");
    let good = first.revision.clone().unwrap();
    assert!(s.links.link("br-a").is_some());

    // A bad file beside a new good one: nothing of the revision is applied.
    write(s.repo.path(), "b.yaml", &bridge("br-b", "10.0.2.1/24"));
    write(
        s.repo.path(),
        "bad.yaml",
        "apiVersion: gitvisor.dev/v1alpha1\nkind: Bridge\nmetadata: {name: br-c}\nspec: {mtu: lots}\n",
    );
    let rejected = s.controller.reconcile(reasons("source"), &cancel).await;
    assert!(!rejected.converged);
    assert!(
        rejected
            .rejected
            .as_deref()
            .unwrap_or_default()
            .contains("bad.yaml:4:"),
        "{rejected:?}"
    );
    assert!(s.links.link("br-b").is_none());
    let status = s.shared.status();
    assert_eq!(
        status.applied.as_ref().map(|a| a.id.as_str()),
        Some(good.as_str())
    );
    assert!(
        s.shared
            .metrics
            .render()
            .contains("\ngitvisor_revision_rejected 1\n")
    );

    // The host drifts (an MTU changed by hand); the resync puts back the last good
    // revision, not the rejected one, and counts the repair.
    let index = s.links.link("br-a").unwrap().index;
    s.links
        .send(LinkRequest::SetMtu { index, mtu: 1280 })
        .await
        .unwrap();
    let resync = s.controller.reconcile(reasons("resync"), &cancel).await;
    assert_eq!(resync.revision.as_deref(), Some(good.as_str()));
    assert_eq!(s.links.link("br-a").unwrap().mtu, 1500);
    assert!(
        s.links.link("br-b").is_none(),
        "the rejected revision stays unapplied"
    );
    let text = s.shared.metrics.render();
    assert!(
        text.contains("\ngitvisor_drift_repairs_total 1\n"),
        "{text}"
    );

    // Fixing the file: the revision is applied and the rejection cleared.
    std::fs::remove_file(s.repo.path().join("bad.yaml")).unwrap();
    let fixed = s.controller.reconcile(reasons("source"), &cancel).await;
    assert!(fixed.converged, "{fixed:?}");
    assert!(fixed.rejected.is_none());
    assert!(s.links.link("br-b").is_some());
    assert!(
        s.shared
            .metrics
            .render()
            .contains("\ngitvisor_revision_rejected 0\n")
    );
}

#[tokio::test(start_paused = true)]
async fn a_transient_failure_waits_for_its_backoff_while_the_rest_proceeds() {
    let mut s = setup();
    let cancel = CancelToken::new();
    let failing = Arc::new(AtomicBool::new(true));
    let flag = failing.clone();
    s.links.fail_when(
        move |r| {
            flag.load(Ordering::SeqCst)
                && matches!(r, LinkRequest::AddAddress { cidr, .. } if cidr.to_string() == "10.0.1.1/24")
        },
        Errno::EBUSY,
    );
    write(s.repo.path(), "a.yaml", &bridge("br-a", "10.0.1.1/24"));
    write(s.repo.path(), "b.yaml", &bridge("br-b", "10.0.2.1/24"));
    let first = s.controller.reconcile(reasons("source"), &cancel).await;
    assert!(!first.converged);
    assert_eq!(adds(&s.links, "10.0.1.1/24"), 1);
    assert!(
        s.links.link("br-b").is_some(),
        "the other resource proceeds"
    );
    let due = s
        .controller
        .scheduler()
        .next_due()
        .expect("a retry is scheduled");
    let wait = due - tokio::time::Instant::now();
    assert!(
        wait >= Duration::from_millis(500) && wait <= Duration::from_secs(1),
        "{wait:?}"
    );

    // Before it is due, another reconcile leaves it out (deferred), changing nothing.
    let early = s.controller.reconcile(reasons("resync"), &cancel).await;

    assert_eq!(
        adds(&s.links, "10.0.1.1/24"),
        1,
        "held back until its retry"
    );
    assert!(!early.converged);
    let status = s.shared.status();
    let a = status.resources.iter().find(|r| r.name == "br-a").unwrap();
    assert_eq!(a.retry.as_ref().map(|r| r.attempts), Some(1));

    // Due, still failing: retried once more (that resource alone), the next wait
    // doubles.
    tokio::time::advance(wait).await;
    let retry = take_due(&mut s.controller);
    assert_eq!(
        retry.scope,
        Scope::Resources([bridge_id("br-a")].into()),
        "a retry reconciles its resource"
    );
    assert!(retry.reasons.retry);
    s.controller.reconcile(retry, &cancel).await;
    assert_eq!(adds(&s.links, "10.0.1.1/24"), 2);
    let wait = s.controller.scheduler().next_due().unwrap() - tokio::time::Instant::now();
    assert!(
        wait >= Duration::from_secs(1) && wait <= Duration::from_secs(2),
        "{wait:?}"
    );

    // The host accepts it now: retried when due, converged, nothing left to retry.
    failing.store(false, Ordering::SeqCst);
    tokio::time::advance(wait).await;
    let retry = take_due(&mut s.controller);
    let done = s.controller.reconcile(retry, &cancel).await;
    assert!(done.converged, "{done:?}");
    assert_eq!(s.controller.scheduler().next_due(), None);
    assert!(
        s.shared
            .metrics
            .render()
            .contains("gitvisor_resource_failures_total{kind=\"Bridge\",class=\"transient\"} 2")
    );
}

#[tokio::test(start_paused = true)]
async fn a_failure_only_a_person_can_fix_waits_for_a_sync() {
    let mut s = setup();
    let cancel = CancelToken::new();
    let failing = Arc::new(AtomicBool::new(true));
    let flag = failing.clone();
    s.links.fail_when(
        move |r| flag.load(Ordering::SeqCst) && matches!(r, LinkRequest::AddAddress { .. }),
        Errno::EPERM,
    );
    write(s.repo.path(), "a.yaml", &bridge("br-a", "10.0.1.1/24"));
    s.controller.reconcile(reasons("source"), &cancel).await;
    assert_eq!(adds(&s.links, "10.0.1.1/24"), 1);
    assert_eq!(
        s.controller.scheduler().next_due(),
        None,
        "no timed retry for a needs-user failure"
    );
    tokio::time::advance(Duration::from_secs(3600)).await;
    s.controller.reconcile(reasons("retry"), &cancel).await;
    assert_eq!(adds(&s.links, "10.0.1.1/24"), 1, "held until someone acts");

    failing.store(false, Ordering::SeqCst);
    let synced = s.controller.reconcile(reasons("sync"), &cancel).await;
    assert_eq!(adds(&s.links, "10.0.1.1/24"), 2);
    assert!(synced.converged, "{synced:?}");
}

/// A driver's watch announces one bridge changed: after the debounce, only that bridge
/// is reconciled (another drifted one waits for its own event or the resync), and a
/// kind's event covers every declared bridge.
#[tokio::test(start_paused = true)]
async fn a_host_event_reconciles_the_resource_it_names_and_nothing_else() {
    let mut s = setup();
    let cancel = CancelToken::new();
    write(s.repo.path(), "a.yaml", &bridge("br-a", "10.0.1.1/24"));
    write(s.repo.path(), "b.yaml", &bridge("br-b", "10.0.2.1/24"));
    assert!(
        s.controller
            .reconcile(reasons("source"), &cancel)
            .await
            .converged
    );
    for name in ["br-a", "br-b"] {
        let index = s.links.link(name).unwrap().index;
        s.links
            .send(LinkRequest::SetMtu { index, mtu: 1280 })
            .await
            .unwrap();
    }

    let (sink, mut events) = WatchSink::channel();
    // A burst, as netlink announces each step.
    for _ in 0..5 {
        sink.send(HostEvent::Object(bridge_id("br-a")));
    }
    while let Ok(event) = events.try_recv() {
        s.controller.host_event(event, tokio::time::Instant::now());
    }
    assert!(
        s.controller
            .scheduler()
            .take_due(tokio::time::Instant::now())
            .is_none(),
        "debounced"
    );
    tokio::time::advance(QUIET).await;
    let due = take_due(&mut s.controller);
    assert_eq!(due.scope, Scope::Resources([bridge_id("br-a")].into()));
    assert!(due.reasons.watch);
    s.controller.reconcile(due, &cancel).await;
    assert_eq!(s.links.link("br-a").unwrap().mtu, 1500, "repaired");
    assert_eq!(
        s.links.link("br-b").unwrap().mtu,
        1280,
        "not named, not touched"
    );
    assert!(
        s.shared
            .metrics
            .render()
            .contains("\ngitvisor_drift_repairs_total 1\n")
    );
    assert_eq!(s.controller.scheduler().next_due(), None, "served once");

    sink.send(HostEvent::Kind(Kind::Bridge));
    let event = events.try_recv().unwrap();
    s.controller.host_event(event, tokio::time::Instant::now());
    tokio::time::advance(QUIET).await;
    let due = take_due(&mut s.controller);
    assert_eq!(
        due.scope,
        Scope::Resources([bridge_id("br-a"), bridge_id("br-b")].into())
    );
    let run = s.controller.reconcile(due, &cancel).await;
    assert!(run.converged, "{run:?}");
    assert_eq!(s.links.link("br-b").unwrap().mtu, 1500);
}

/// A watch's event (the `watch` reason) reconciles like a resync: drift the host announced
/// is repaired without waiting for the resync timer.
#[tokio::test(start_paused = true)]
async fn a_host_event_repairs_drift_without_waiting_for_the_resync() {
    let mut s = setup();
    let cancel = CancelToken::new();
    write(s.repo.path(), "a.yaml", &bridge("br-a", "10.0.1.1/24"));
    let first = s.controller.reconcile(reasons("source"), &cancel).await;
    assert!(first.converged, "{first:?}");

    let index = s.links.link("br-a").unwrap().index;
    s.links
        .send(LinkRequest::DeleteLink { index })
        .await
        .unwrap();
    let repaired = s.controller.reconcile(reasons("watch"), &cancel).await;
    assert!(repaired.converged, "{repaired:?}");
    assert!(
        s.links.link("br-a").is_some(),
        "the bridge deleted by hand is back"
    );
    assert!(
        s.shared
            .metrics
            .render()
            .contains("\ngitvisor_drift_repairs_total 1\n")
    );

    // The echo of that repair (its own netlink messages): nothing to do, and the last
    // reconcile shown stays the one that repaired.
    let last = s.shared.status().last_reconcile;
    let echo = s.controller.reconcile(reasons("watch"), &cancel).await;
    assert!(echo.converged, "{echo:?}");
    assert_eq!(s.shared.status().last_reconcile, last);
}

/// A bridge `name` with `mtu`, depending on `depends_on` (a `Kind/name`) when given.
fn bridge_with(name: &str, address: &str, mtu: u32, depends_on: Option<&str>) -> String {
    let depends = depends_on.map_or(String::new(), |d| format!(", dependsOn: [{d}]"));
    format!(
        "apiVersion: gitvisor.dev/v1alpha1\nkind: Bridge\nmetadata: {{name: {name}{depends}}}\nspec: {{mtu: {mtu}, addresses: [{address}]}}\n"
    )
}

/// Sets `name`'s MTU by hand, as a person would, without any watch hearing of it.
async fn drift_mtu(links: &FakeLinks, name: &str, mtu: u32) {
    let index = links.link(name).unwrap().index;
    links
        .send(LinkRequest::SetMtu { index, mtu })
        .await
        .unwrap();
}

/// The store's owned records, by resource.
fn owned(s: &Setup) -> std::collections::BTreeMap<ResourceId, gitvisor::state::OwnedRecord> {
    gitvisor::state::ReadOnlyStore::open(&s._state.path().join("state"))
        .unwrap()
        .owned()
        .unwrap()
}

/// A saved change to one resource of a revision already applied is a targeted
/// reconcile: that resource and what depends on it are planned against the host, and
/// nothing else is looked at (drift made by hand elsewhere, which no watch announced,
/// stays until the resync). The store ends as a full reconcile leaves it: every
/// resource recorded and Ready under the new revision.
#[tokio::test(start_paused = true)]
async fn a_saved_change_reconciles_only_what_changed_and_what_depends_on_it() {
    let mut s = setup();
    let cancel = CancelToken::new();
    write(
        s.repo.path(),
        "a.yaml",
        &bridge_with("br-a", "10.0.1.1/24", 1500, None),
    );
    write(
        s.repo.path(),
        "b.yaml",
        &bridge_with("br-b", "10.0.2.1/24", 1500, None),
    );
    write(
        s.repo.path(),
        "c.yaml",
        &bridge_with("br-c", "10.0.3.1/24", 1500, Some("Bridge/br-a")),
    );
    let first = s.controller.reconcile(reasons("source"), &cancel).await;
    assert!(first.converged, "{first:?}");
    drift_mtu(&s.links, "br-b", 1280).await;
    drift_mtu(&s.links, "br-c", 1280).await;
    let dumps = s.links.dumps();

    write(
        s.repo.path(),
        "a.yaml",
        &bridge_with("br-a", "10.0.1.1/24", 1400, None),
    );
    let saved = s.controller.reconcile(reasons("source"), &cancel).await;
    assert!(saved.converged, "{saved:?}");
    assert_eq!(
        s.links.link("br-a").unwrap().mtu,
        1400,
        "the change is applied"
    );
    assert_eq!(
        s.links.link("br-c").unwrap().mtu,
        1500,
        "a dependent of the change is planned with it (and its drift repaired)"
    );
    assert_eq!(
        s.links.link("br-b").unwrap().mtu,
        1280,
        "what the revision did not change is not looked at"
    );
    assert!(s.links.dumps() > dumps, "the host was observed for br-a");

    let revision = saved.revision.clone().unwrap();
    let status = s.shared.status();
    assert_eq!(
        status
            .applied
            .as_ref()
            .map(|a| (a.id.as_str(), a.summary.as_str(), a.converged)),
        Some((
            revision.as_str(),
            "3 resources, 2 changed, 0 not converged",
            true
        ))
    );
    assert_eq!(status.resources.len(), 3);
    for resource in &status.resources {
        assert_eq!(resource.revision, revision, "{resource:?}");
        assert_eq!(resource.state, gitvisor::state::ResourceState::Ready);
    }
    let records = owned(&s);
    assert_eq!(records.len(), 3);
    for (id, record) in &records {
        assert_eq!(record.revision, revision, "{id}");
        assert!(!record.spec_hash.is_empty() && !record.pending, "{id}");
    }

    // The resync looks at everything again.
    let resync = s.controller.reconcile(reasons("resync"), &cancel).await;
    assert!(resync.converged, "{resync:?}");
    assert_eq!(s.links.link("br-b").unwrap().mtu, 1500);
}

/// A file removed from a revision already applied deletes its resource (under the
/// usual prune rules: this source declared it) in a targeted reconcile.
#[tokio::test(start_paused = true)]
async fn a_removed_file_deletes_its_resource_in_a_targeted_reconcile() {
    let mut s = setup();
    let cancel = CancelToken::new();
    write(s.repo.path(), "a.yaml", &bridge("br-a", "10.0.1.1/24"));
    write(s.repo.path(), "b.yaml", &bridge("br-b", "10.0.2.1/24"));
    assert!(
        s.controller
            .reconcile(reasons("source"), &cancel)
            .await
            .converged
    );
    drift_mtu(&s.links, "br-a", 1280).await;

    std::fs::remove_file(s.repo.path().join("b.yaml")).unwrap();
    let removed = s.controller.reconcile(reasons("source"), &cancel).await;
    assert!(removed.converged, "{removed:?}");
    assert!(s.links.link("br-b").is_none(), "deleted");
    assert_eq!(s.links.link("br-a").unwrap().mtu, 1280, "not looked at");
    let records = owned(&s);
    assert_eq!(
        records.keys().cloned().collect::<Vec<_>>(),
        vec![bridge_id("br-a")]
    );
    assert_eq!(
        records[&bridge_id("br-a")].revision,
        removed.revision.unwrap()
    );
}

/// A revision with an error is rejected whole, targeted reconciles or not: nothing of
/// it runs and everything stays as it was; once fixed, what changed since the last good
/// revision is applied.
#[tokio::test(start_paused = true)]
async fn a_rejected_revision_leaves_everything_running_and_its_fix_is_applied() {
    let mut s = setup();
    let cancel = CancelToken::new();
    write(
        s.repo.path(),
        "a.yaml",
        &bridge_with("br-a", "10.0.1.1/24", 1500, None),
    );
    write(
        s.repo.path(),
        "b.yaml",
        &bridge_with("br-b", "10.0.2.1/24", 1500, None),
    );
    let first = s.controller.reconcile(reasons("source"), &cancel).await;
    assert!(first.converged, "{first:?}");

    // br-a edited and br-b removed, beside a file with an error.
    write(
        s.repo.path(),
        "a.yaml",
        &bridge_with("br-a", "10.0.1.1/24", 1400, None),
    );
    std::fs::remove_file(s.repo.path().join("b.yaml")).unwrap();
    write(
        s.repo.path(),
        "bad.yaml",
        "apiVersion: gitvisor.dev/v1alpha1\nkind: Bridge\nmetadata: {name: br-c}\nspec: {mtu: lots}\n",
    );
    let rejected = s.controller.reconcile(reasons("source"), &cancel).await;
    assert!(rejected.rejected.is_some(), "{rejected:?}");
    assert_eq!(rejected.revision, first.revision);
    assert_eq!(s.links.link("br-a").unwrap().mtu, 1500);
    assert!(s.links.link("br-b").is_some(), "still running");
    assert!(s.links.link("br-c").is_none());
    assert_eq!(owned(&s).len(), 2);

    write(
        s.repo.path(),
        "bad.yaml",
        &bridge_with("br-c", "10.0.3.1/24", 1500, None),
    );
    let fixed = s.controller.reconcile(reasons("source"), &cancel).await;
    assert!(fixed.converged && fixed.rejected.is_none(), "{fixed:?}");
    assert_eq!(s.links.link("br-a").unwrap().mtu, 1400);
    assert!(s.links.link("br-b").is_none());
    assert!(s.links.link("br-c").is_some());
    assert_eq!(
        owned(&s).keys().cloned().collect::<Vec<_>>(),
        vec![bridge_id("br-a"), bridge_id("br-c")]
    );
}

/// The bridge driver, counting the bridges each of its plans compares with the host (the
/// rest a targeted plan carries without looking): one entry per plan, the bridges in it.
struct CountingBridges {
    inner: BridgeDriver,
    compared: Arc<std::sync::Mutex<Vec<Vec<String>>>>,
}

#[async_trait::async_trait]
impl Driver for CountingBridges {
    fn kind(&self) -> Kind {
        Kind::Bridge
    }

    async fn plan(
        &self,
        desired: &[Arc<Resource>],
        context: &PlanContext,
    ) -> Result<Vec<Change>, DriverError> {
        let compared = desired
            .iter()
            .filter(|resource| context.in_focus(&resource.id()))
            .map(|resource| resource.metadata.name.to_string())
            .collect();
        self.compared.lock().unwrap().push(compared);
        self.inner.plan(desired, context).await
    }

    async fn apply(&self, change: &Change, step: &StepContext) -> Result<(), DriverError> {
        self.inner.apply(change, step).await
    }
}

/// A controller over [`CountingBridges`] on a fake host, and the driver's count.
fn counting_setup() -> (Setup, Arc<std::sync::Mutex<Vec<Vec<String>>>>) {
    let links = Arc::new(FakeLinks::new(Vec::new()));
    let compared = Arc::new(std::sync::Mutex::new(Vec::new()));
    let driver = CountingBridges {
        inner: BridgeDriver::new(links.clone()),
        compared: compared.clone(),
    };
    (setup_with(links, Box::new(driver)), compared)
}

/// After an apply, only what was applied is compared with the host again: a resync that
/// repairs one drifted bridge of three plans all three, then looks at that one alone.
#[tokio::test(start_paused = true)]
async fn after_an_apply_only_the_applied_bridges_are_observed_again() {
    let (mut s, compared) = counting_setup();
    let cancel = CancelToken::new();
    for (name, net) in [("br-a", 1), ("br-b", 2), ("br-c", 3)] {
        write(
            s.repo.path(),
            &format!("{name}.yaml"),
            &bridge(name, &format!("10.0.{net}.1/24")),
        );
    }
    assert!(
        s.controller
            .reconcile(reasons("source"), &cancel)
            .await
            .converged
    );
    drift_mtu(&s.links, "br-b", 1280).await;
    compared.lock().unwrap().clear();

    let run = s.controller.reconcile(reasons("resync"), &cancel).await;
    assert!(run.converged, "{run:?}");
    assert_eq!(s.links.link("br-b").unwrap().mtu, 1500, "repaired");
    assert_eq!(
        *compared.lock().unwrap(),
        [vec!["br-a", "br-b", "br-c"], vec!["br-b"]],
        "the plan, then the check of the one bridge applied"
    );
}

/// A watch's event is a targeted reconcile, as a saved change is: only the bridge it
/// names is compared with the host, the others are carried.
#[tokio::test(start_paused = true)]
async fn a_host_event_compares_only_the_bridge_it_names_with_the_host() {
    let (mut s, compared) = counting_setup();
    let cancel = CancelToken::new();
    for (name, net) in [("br-a", 1), ("br-b", 2), ("br-c", 3)] {
        write(
            s.repo.path(),
            &format!("{name}.yaml"),
            &bridge(name, &format!("10.0.{net}.1/24")),
        );
    }
    assert!(
        s.controller
            .reconcile(reasons("source"), &cancel)
            .await
            .converged
    );
    drift_mtu(&s.links, "br-a", 1280).await;
    compared.lock().unwrap().clear();

    let (sink, mut events) = WatchSink::channel();
    sink.send(HostEvent::Object(bridge_id("br-a")));
    let event = events.try_recv().unwrap();
    s.controller.host_event(event, tokio::time::Instant::now());
    tokio::time::advance(QUIET).await;
    let due = take_due(&mut s.controller);
    let run = s.controller.reconcile(due, &cancel).await;
    assert!(run.converged, "{run:?}");
    assert_eq!(s.links.link("br-a").unwrap().mtu, 1500, "repaired");
    assert_eq!(
        *compared.lock().unwrap(),
        [vec!["br-a"], vec!["br-a"]],
        "the plan and the check after the apply, of br-a alone"
    );
}
