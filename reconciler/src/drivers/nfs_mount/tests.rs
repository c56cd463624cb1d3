//! The NfsMount driver against [`FakeMounts`]: the requests it sends, drift repaired,
//! a mount that is not gitvisor's left alone, a dead server reported and never waited
//! for, and a held mount never unmounted.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use super::*;
use crate::contract::FailureClass;
use crate::drivers::nfs_mount::mountinfo::MountEntry;
use crate::model::{ADOPT_ANNOTATION as ADOPT, Metadata, Name, ResourceId, Spec};

const SPEC: &str = "server: 10.77.0.1\nexport: /srv/media\n";
const PATH: &str = "/var/lib/gitvisor/nfs/media";

fn declared(name: &str, spec: &str) -> Arc<Resource> {
    let spec: NfsMountSpec = serde_yaml::from_str(spec).expect("test spec parses");
    let name = Name::parse(name).expect("test name is valid");
    Arc::new(Resource::new(Metadata::named(name), Spec::new(spec)))
}

fn id(name: &str) -> ResourceId {
    ResourceId::new(Kind::NfsMount, Name::parse(name).expect("valid"))
}

fn driver(fake: &Arc<FakeMounts>) -> NfsMountDriver {
    NfsMountDriver::new(fake.clone(), PathBuf::from("/var/lib/gitvisor"))
}

#[derive(Default)]
struct Store(BTreeSet<ResourceId>);

async fn plan(driver: &NfsMountDriver, desired: &[Arc<Resource>], store: &Store) -> Vec<Change> {
    let context = PlanContext::new(store.0.iter().cloned()).with_revision(desired);
    driver.plan(desired, &context).await.expect("plans")
}

/// Plans and applies every change like the engine; the apply errors, by resource.
async fn converge(
    driver: &NfsMountDriver,
    desired: &[Arc<Resource>],
    store: &mut Store,
) -> (Vec<Change>, Vec<DriverError>) {
    let changes = plan(driver, desired, store).await;
    let mut errors = Vec::new();
    for change in &changes {
        if change.action == Action::Create {
            store.0.insert(change.id.clone());
        }
        match driver
            .apply(change, &StepContext::detached(change.id.clone()))
            .await
        {
            Ok(()) if change.action == Action::Delete => {
                store.0.remove(&change.id);
            }
            Ok(()) => {}
            Err(error) => errors.push(error),
        }
    }
    (changes, errors)
}

fn actions(changes: &[Change]) -> Vec<(String, Action)> {
    changes
        .iter()
        .map(|c| (c.id.name.to_string(), c.action))
        .collect()
}

#[tokio::test]
async fn a_share_is_mounted_with_the_safe_defaults_recorded_and_then_left_alone() {
    let fake = Arc::new(FakeMounts::new());
    let driver = driver(&fake);
    let mut store = Store::default();
    let desired = [declared("media", SPEC)];
    let (changes, errors) = converge(&driver, &desired, &mut store).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(actions(&changes), [("media".into(), Action::Create)]);
    assert_eq!(
        fake.log(),
        [
            format!("record the mount of 10.77.0.1:/srv/media at {PATH}"),
            format!(
                "mount 10.77.0.1:/srv/media {PATH} vers=4.2,rw,soft,timeo=50,retrans=2,retry=0"
            ),
            format!("record the mount of 10.77.0.1:/srv/media at {PATH}"),
        ]
    );
    let mount_id = fake.mounts()[0].mount_id;
    assert_eq!(fake.records()["media"].mount_id, Some(mount_id));
    let again = plan(&driver, &desired, &store).await;
    assert_eq!(actions(&again), [("media".into(), Action::NoOp)]);
}

#[tokio::test]
async fn a_share_unmounted_by_hand_or_remounted_with_other_options_is_mounted_again() {
    let fake = Arc::new(FakeMounts::new());
    let driver = driver(&fake);
    let mut store = Store::default();
    let desired = [declared("media", SPEC)];
    converge(&driver, &desired, &mut store).await;

    fake.remove_mount(PATH);
    let (changes, errors) = converge(&driver, &desired, &mut store).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(changes[0].action, Action::Update, "{:?}", changes[0]);
    assert!(
        changes[0].reasons[0].contains("not mounted any more"),
        "{:?}",
        changes[0].reasons
    );
    assert_eq!(fake.mounts().len(), 1);

    // Declared read-only now, and with hard: unmounted and mounted again.
    let desired = [declared(
        "media",
        &format!("{SPEC}readOnly: true\noptions: [hard]\n"),
    )];
    let (changes, errors) = converge(&driver, &desired, &mut store).await;
    assert!(errors.is_empty(), "{errors:?}");
    let fields: Vec<&str> = changes[0].fields.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(fields, ["readOnly", "options.hard"]);
    let mounts = fake.mounts();
    assert_eq!(mounts.len(), 1);
    assert!(mounts[0].read_only() && mounts[0].super_map().contains_key("hard"));
    assert!(fake.log().contains(&format!("unmount {PATH}")));
    assert_eq!(
        actions(&plan(&driver, &desired, &store).await),
        [("media".into(), Action::NoOp)]
    );
}

fn foreign(mount_id: u64, source: &str) -> MountEntry {
    MountEntry {
        mount_id,
        device: "0:77".into(),
        mount_point: PATH.into(),
        mount_options: vec!["rw".into()],
        fs_type: "nfs4".into(),
        source: source.into(),
        super_options: vec!["vers=4.2".into(), "hard".into()],
    }
}

#[tokio::test]
async fn a_mount_gitvisor_did_not_make_is_a_conflict_never_unmounted_and_adopted_only_when_asked() {
    let fake = Arc::new(FakeMounts::new());
    fake.add_mount(foreign(7, "nas:/media"));
    let driver = driver(&fake);
    let mut store = Store::default();
    let desired = [declared("media", SPEC)];
    let (changes, _) = converge(&driver, &desired, &mut store).await;
    assert_eq!(changes[0].action, Action::Conflict);
    assert!(
        changes[0].reasons[0].contains("was not created by gitvisor"),
        "{:?}",
        changes[0].reasons
    );
    assert!(fake.log().is_empty(), "{:?}", fake.log());

    // Made again by hand after gitvisor's own: another mount ID, not gitvisor's.
    let fake = Arc::new(FakeMounts::new());
    let driver = self::driver(&fake);
    let mut store = Store::default();
    converge(&driver, &desired, &mut store).await;
    fake.remove_mount(PATH);
    fake.add_mount(foreign(999, "10.77.0.1:/srv/media"));
    let changes = plan(&driver, &desired, &store).await;
    assert_eq!(changes[0].action, Action::Conflict, "{:?}", changes[0]);

    // Adopted: recorded as it is; its options then differ, so it is mounted again.
    let mut adopted = (*declared("media", SPEC)).clone();
    adopted
        .metadata
        .annotations
        .insert(ADOPT.to_owned(), "true".to_owned());
    let adopted = [Arc::new(adopted)];
    let (changes, errors) = converge(&driver, &adopted, &mut store).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(changes[0].action, Action::Update);
    assert!(
        changes[0].reasons[0].starts_with("adopting the mount"),
        "{:?}",
        changes[0].reasons
    );
    assert_eq!(
        actions(&plan(&driver, &desired, &store).await),
        [("media".into(), Action::NoOp)]
    );
}

#[tokio::test]
async fn a_dead_server_is_reported_in_the_plan_and_its_mount_fails_at_once_while_others_converge() {
    let fake = Arc::new(FakeMounts::new());
    let driver = driver(&fake);
    let mut store = Store::default();
    let desired = [
        declared("media", SPEC),
        declared("backup", "server: nas2\nexport: /b\n"),
    ];
    fake.set_down("10.77.0.1", Some("10.77.0.1:2049 did not answer within 3s"));
    let (changes, errors) = converge(&driver, &desired, &mut store).await;
    let media = changes
        .iter()
        .find(|c| c.id == id("media"))
        .expect("planned");
    assert!(
        media
            .reasons
            .iter()
            .any(|r| r.starts_with("share unreachable: server 10.77.0.1 does not answer")),
        "{:?}",
        media.reasons
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].class(), FailureClass::Transient);
    let message = errors[0].chain();
    assert!(
        message.contains("NfsMount media: cannot mount 10.77.0.1:/srv/media")
            && message.contains("the server is unreachable"),
        "{message}"
    );
    // The other share is mounted.
    assert_eq!(fake.mounts().len(), 1);
    assert_eq!(fake.mounts()[0].source, "nas2:/b");

    // Back: the next reconcile mounts it.
    fake.set_down("10.77.0.1", None);
    let (_, errors) = converge(&driver, &desired, &mut store).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(fake.mounts().len(), 2);
}

#[tokio::test]
async fn a_pruned_share_is_unmounted_only_when_nothing_holds_it_and_the_plan_names_the_holder() {
    let fake = Arc::new(FakeMounts::new());
    let driver = driver(&fake);
    let mut store = Store::default();
    converge(&driver, &[declared("media", SPEC)], &mut store).await;
    fake.set_holders(
        PATH,
        vec![Holder {
            pid: 4242,
            command: "sleep".into(),
            how: format!("works in {PATH}"),
        }],
    );
    let (changes, errors) = converge(&driver, &[], &mut store).await;
    assert_eq!(actions(&changes), [("media".into(), Action::Delete)]);
    assert!(
        changes[0].reasons[0].contains(&format!("pid 4242 (sleep) works in {PATH}")),
        "{:?}",
        changes[0].reasons
    );
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].class(), FailureClass::NeedsUser);
    assert!(
        errors[0]
            .chain()
            .contains("is in use, so it is not unmounted: pid 4242 (sleep)")
    );
    assert_eq!(fake.mounts().len(), 1, "still mounted");
    assert!(!fake.log().iter().any(|l| l.starts_with("unmount")));

    fake.set_holders(PATH, Vec::new());
    let (_, errors) = converge(&driver, &[], &mut store).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert!(fake.mounts().is_empty());
    assert!(fake.records().is_empty());
    assert!(plan(&driver, &[], &store).await.is_empty());
}

#[tokio::test]
async fn a_pruned_share_whose_path_someone_else_mounted_keeps_that_mount() {
    let fake = Arc::new(FakeMounts::new());
    let driver = driver(&fake);
    let mut store = Store::default();
    converge(&driver, &[declared("media", SPEC)], &mut store).await;
    fake.remove_mount(PATH);
    fake.add_mount(foreign(999, "nas:/other"));
    let (changes, errors) = converge(&driver, &[], &mut store).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert!(
        changes[0].reasons[0].contains("is not the one gitvisor made"),
        "{:?}",
        changes[0].reasons
    );
    assert_eq!(fake.mounts().len(), 1, "the foreign mount stays");
    assert!(fake.records().is_empty());
}
