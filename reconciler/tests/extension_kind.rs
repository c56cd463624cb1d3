//! A kind defined outside the engine — a folder (`extension_kind/`: spec, driver,
//! registration) plus one `register` line — is handled by every engine place: load
//! (and its errors' positions), validate, plan, apply, prune, schema, doctor, and the
//! `Kind/name` parsing of `dependsOn`, `--target` and store keys. Each test fails if that
//! place still lists the built-in kinds instead of asking the registry.

#[path = "extension_kind/mod.rs"]
mod marker_file;

use std::sync::Once;

use gitvisor::contract::CancelToken;
use gitvisor::drivers::{Drivers, HostSettings};
use gitvisor::execute::silent;
use gitvisor::model::{Kind, ResourceId};
use gitvisor::plan::Action;
use gitvisor::reconcile::{PlanOptions, Reconciler, ReconcilerOptions, Source};
use marker_file::{KIND, MARKER, MarkerFileSpec};

/// The one line: this process now has the MarkerFile kind.
fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| gitvisor::drivers::register(marker_file::REGISTRATION).unwrap());
}

const HEAD: &str = "apiVersion: gitvisor.dev/v1alpha1\nkind: MarkerFile\n";

struct Setup {
    state: tempfile::TempDir,
    repo: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        register();
        Setup {
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

    /// The reconciler with the drivers the registry connects for this kind (the built-in
    /// ones would observe the real host).
    fn reconciler(&self) -> Reconciler {
        let options = self.options();
        let settings = HostSettings {
            run_dir: options.run_dir.clone(),
            state_dir: options.state_dir.clone(),
        };
        let registration = gitvisor::drivers::registration(KIND).expect("registered");
        let driver = (registration.connect)(&settings).expect("connects");
        Reconciler::new(options, Drivers::new(vec![driver]))
    }

    fn source(&self, manifests: &str) -> Source {
        std::fs::write(self.repo.path().join("m.yaml"), manifests).unwrap();
        Source::from_paths(&[self.repo.path().to_path_buf()])
    }

    fn marker(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.state.path().join("run/markers").join(name)).ok()
    }

    async fn plan(&self, manifests: &str) -> Vec<(String, Action)> {
        let source = self.source(manifests);
        let reconciler = self.reconciler();
        let revision = reconciler.load(&source).expect("loads");
        let plan = reconciler
            .plan(&revision, &source, &PlanOptions::default())
            .await
            .expect("plans");
        plan.changes
            .iter()
            .map(|c| (c.id.to_string(), c.action))
            .collect()
    }

    async fn apply(&self, manifests: &str) {
        let source = self.source(manifests);
        let reconciler = self.reconciler();
        let revision = reconciler.load(&source).expect("loads");
        let outcome = reconciler
            .apply(
                &revision,
                &source,
                &PlanOptions::default(),
                silent(),
                CancelToken::new(),
            )
            .await
            .expect("applies");
        assert!(outcome.report.converged(), "{:?}", outcome.report.results);
    }
}

fn marker(name: &str, spec: &str) -> String {
    format!("{HEAD}metadata: {{name: {name}}}\nspec: {spec}\n")
}

#[test]
fn load_reads_the_kind_and_points_at_a_bad_field() {
    let setup = Setup::new();
    let source = setup.source(&marker("a", "{text: hello}"));
    let revision = setup.reconciler().load(&source).expect("loads");
    let [resource] = revision.resources.as_slice() else {
        panic!("{:?}", revision.resources)
    };
    assert_eq!(resource.id().to_string(), "MarkerFile/a");
    assert_eq!(
        resource
            .spec
            .get::<MarkerFileSpec>()
            .map(|s| s.text.as_str()),
        Some("hello")
    );

    let source = setup.source(&format!(
        "{HEAD}metadata: {{name: b}}\nspec:\n  text: hi\n  colour: red\n"
    ));
    let errors = setup.reconciler().load(&source).unwrap_err();
    let shown: Vec<String> = errors.diagnostics.iter().map(ToString::to_string).collect();
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert!(
        shown[0].ends_with(
            "m.yaml:6:3: spec.colour: unknown field `colour`, expected `text` or `after`"
        ),
        "{shown:?}"
    );
}

#[test]
fn validate_follows_the_kinds_references_and_ids() {
    let setup = Setup::new();
    let two = [
        marker("a", "{text: one}"),
        marker("b", "{text: two, after: a}"),
    ]
    .join("---\n");
    setup.reconciler().load(&setup.source(&two)).expect("valid");

    let dangling = marker("b", "{text: two, after: gone}");
    let errors = setup
        .reconciler()
        .load(&setup.source(&dangling))
        .unwrap_err();
    let shown = errors.to_string();
    assert!(
        shown.contains("spec.after") && shown.contains("MarkerFile/gone"),
        "{shown}"
    );

    let depends = format!(
        "{HEAD}metadata: {{name: c, dependsOn: [MarkerFile/missing]}}\nspec: {{text: x}}\n"
    );
    let errors = setup
        .reconciler()
        .load(&setup.source(&depends))
        .unwrap_err();
    assert!(
        errors.to_string().contains("MarkerFile/missing"),
        "{errors}"
    );

    let twice = [marker("a", "{text: one}"), marker("a", "{text: two}")].join("---\n");
    let errors = setup.reconciler().load(&setup.source(&twice)).unwrap_err();
    assert!(errors.to_string().contains("MarkerFile/a"), "{errors}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_and_apply_create_then_leave_then_prune_it() {
    let setup = Setup::new();
    let revision = [
        marker("a", "{text: one}"),
        marker("b", "{text: two, after: a}"),
    ]
    .join("---\n");
    assert_eq!(
        setup.plan(&revision).await,
        [
            ("MarkerFile/a".to_owned(), Action::Create),
            ("MarkerFile/b".to_owned(), Action::Create)
        ]
    );
    setup.apply(&revision).await;
    assert_eq!(
        setup.marker("a").as_deref(),
        Some(&*format!("{MARKER}\none"))
    );
    assert_eq!(
        setup.marker("b").as_deref(),
        Some(&*format!("{MARKER}\ntwo"))
    );
    assert!(
        setup
            .plan(&revision)
            .await
            .iter()
            .all(|(_, action)| *action == Action::NoOp)
    );

    // Changed by hand: planned back, as the driver's own diff says.
    std::fs::write(
        setup.state.path().join("run/markers/a"),
        format!("{MARKER}\nedited"),
    )
    .unwrap();
    assert_eq!(
        setup.plan(&revision).await[0],
        ("MarkerFile/a".to_owned(), Action::Update)
    );

    // b removed from the revision: pruned (it is ours: marker and record).
    let only_a = marker("a", "{text: one}");
    assert_eq!(
        setup.plan(&only_a).await,
        [
            ("MarkerFile/a".to_owned(), Action::Update),
            ("MarkerFile/b".to_owned(), Action::Delete)
        ]
    );
    setup.apply(&only_a).await;
    assert_eq!(setup.marker("b"), None);
    assert_eq!(
        setup.marker("a").as_deref(),
        Some(&*format!("{MARKER}\none"))
    );

    // A file gitvisor did not write is a conflict, and never pruned.
    std::fs::write(setup.state.path().join("run/markers/c"), "someone else's").unwrap();
    let with_c = [only_a.clone(), marker("c", "{text: mine}")].join("---\n");
    assert_eq!(
        setup.plan(&with_c).await[1],
        ("MarkerFile/c".to_owned(), Action::Conflict)
    );
    assert!(
        !setup
            .plan(&only_a)
            .await
            .iter()
            .any(|(id, _)| id == "MarkerFile/c")
    );
}

#[test]
fn schema_lists_the_kind() {
    register();
    let kind = gitvisor::schema::schema(Some(KIND));
    assert_eq!(kind["properties"]["kind"]["const"], "MarkerFile");
    assert_eq!(kind["properties"]["spec"]["$ref"], "#/$defs/MarkerFileSpec");
    let any = gitvisor::schema::schema(None);
    assert!(any["$defs"]["MarkerFile"].is_object(), "{any}");
    assert!(
        any["properties"]["kind"]["enum"]
            .as_array()
            .unwrap()
            .contains(&"MarkerFile".into())
    );
    let depends_on = &any["$defs"]["MarkerFile"]["$defs"]["ResourceRef"]["pattern"];
    assert!(
        depends_on.as_str().unwrap().contains("|MarkerFile)/"),
        "{depends_on}"
    );
    let files: Vec<String> = gitvisor::schema::all_files()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert!(files.contains(&"markerfile.json".to_owned()), "{files:?}");
}

#[tokio::test]
async fn doctor_probes_the_kind() {
    register();
    let kinds = Kind::all();
    assert_eq!(kinds.last(), Some(&KIND), "ranked after the built-in kinds");
    let probes = gitvisor::drivers::probe::probe(&[KIND]).await;
    assert_eq!(probes.len(), 1);
    assert!(probes[0].driver, "the registry has its driver");
    assert_eq!(probes[0].facilities[0].name, "marker-files");
}

#[test]
fn its_ids_parse_where_any_kind_is_named() {
    register();
    let id: ResourceId = "MarkerFile/a".parse().expect("a registered kind");
    assert_eq!(id.kind, KIND);
    assert_eq!(Kind::parse_any_case("markerfile"), Ok(KIND));
    let error = "Markerfile/a".parse::<ResourceId>().unwrap_err();
    assert!(
        error.ends_with(
            "expected one of Bridge, NfsMount, Volume, Container, VirtualMachine, MarkerFile"
        ),
        "{error}"
    );
}
