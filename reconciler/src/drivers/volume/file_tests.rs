//! File volumes through the driver against the real facility: [`FileTools`] on a
//! temporary directory (plain files, xattrs and `qemu-img`; no root or device needed),
//! with the LVM side a [`FakeLvm`] without lvm2: plan, apply, a second plan all no-op;
//! an interrupted creation's leftover is removed when provably gitvisor's and blocks the
//! create otherwise; a base is kept while a clone's file names it.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::contract::Action;
use crate::model::{Metadata, Name, ResourceId, Spec};

fn declared(name: &str, spec: &str) -> Arc<Resource> {
    let spec: VolumeSpec = serde_yaml::from_str(spec).expect("test spec parses");
    Arc::new(Resource::new(
        Metadata::named(Name::parse(name).expect("valid")),
        Spec::new(spec),
    ))
}

fn id(name: &str) -> ResourceId {
    ResourceId::new(Kind::Volume, Name::parse(name).expect("valid"))
}

/// A driver over a temporary state dir, on a host without lvm2.
fn driver(state: &Path) -> VolumeDriver {
    let lvm = Arc::new(FakeLvm::new(Vec::new(), Vec::new()));
    lvm.without_lvm2();
    VolumeDriver::new(lvm).with_files(Arc::new(FileTools::new(state.to_owned())))
}

async fn plan(
    driver: &VolumeDriver,
    desired: &[Arc<Resource>],
    owned: &BTreeSet<ResourceId>,
) -> Vec<Change> {
    let context = PlanContext::new(owned.iter().cloned()).with_revision(desired);
    driver.plan(desired, &context).await.expect("plan")
}

/// Plans and applies like the engine (intents before creates); every step succeeds.
async fn converge(
    driver: &VolumeDriver,
    desired: &[Arc<Resource>],
    owned: &mut BTreeSet<ResourceId>,
) -> Vec<Change> {
    let changes = plan(driver, desired, owned).await;
    for change in &changes {
        if matches!(change.action, Action::Create | Action::Replace) {
            owned.insert(change.id.clone());
        }
        driver
            .apply(change, &StepContext::detached(change.id.clone()))
            .await
            .unwrap_or_else(|e| panic!("{}: {}", change.id, e.chain()));
        if change.action == Action::Delete {
            owned.remove(&change.id);
        } else if change.action.is_change() {
            owned.insert(change.id.clone());
        }
    }
    changes
}

fn actions(changes: &[Change]) -> Vec<(String, Action)> {
    changes
        .iter()
        .map(|c| (c.id.name.to_string(), c.action))
        .collect()
}

#[tokio::test]
async fn file_volumes_converge_on_a_host_without_lvm2_and_a_second_plan_is_all_noop() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let dir = scratch.path().join("volumes");
    let driver = driver(&scratch.path().join("state"));
    let d = dir.display();
    let desired = [
        declared("base", &format!("directory: {d}\nsize: 8MiB")),
        declared(
            "scratch",
            &format!("directory: {d}\nformat: raw\nsize: 1000"),
        ),
        declared(
            "clone",
            &format!("directory: {d}\nsize: 16MiB\nsource: {{cloneOf: Volume/base}}"),
        ),
    ];
    let mut owned = BTreeSet::new();
    let changes = converge(&driver, &desired[..2], &mut owned).await;
    assert_eq!(
        actions(&changes),
        [
            ("base".into(), Action::Create),
            ("scratch".into(), Action::Create)
        ]
    );
    converge(&driver, &desired, &mut owned).await;
    // A raw size is whole sectors.
    assert_eq!(
        std::fs::metadata(dir.join("scratch.raw")).unwrap().len(),
        1024
    );
    let again = plan(&driver, &desired, &owned).await;
    assert!(
        again.iter().all(|c| c.action == Action::NoOp),
        "{:?}",
        actions(&again)
    );
    let clone = again
        .iter()
        .find(|c| c.id == id("clone"))
        .and_then(|c| c.observed_as::<ObservedFile>())
        .and_then(|o| o.file.clone())
        .expect("the clone is observed");
    assert_eq!(clone.format, FileFormat::Qcow2);
    assert_eq!(clone.virtual_size, 16 << 20);
    assert_eq!(
        clone.backing.as_deref(),
        Some(dir.join("base.qcow2").to_str().unwrap())
    );
    assert_eq!(clone.owner.as_deref(), Some("Volume/clone"));
}

#[tokio::test]
async fn a_leftover_of_gitvisors_is_removed_and_a_foreign_one_blocks_the_create() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let dir = scratch.path().join("volumes");
    std::fs::create_dir_all(&dir).unwrap();
    let driver = driver(&scratch.path().join("state"));
    let d = dir.display();
    // An interrupted creation of `v`: marked, and the store has the intent.
    let ours = dir.join(".v.qcow2.partial");
    std::fs::write(&ours, b"half").unwrap();
    xattr::set(&ours, files::ID_XATTR, b"Volume/v").unwrap();
    // Someone else's file under `w`'s temporary name.
    let foreign = dir.join(".w.qcow2.partial");
    std::fs::write(&foreign, b"not ours").unwrap();
    let desired = [
        declared("v", &format!("directory: {d}\nsize: 1MiB")),
        declared("w", &format!("directory: {d}\nsize: 1MiB")),
    ];
    let mut owned: BTreeSet<ResourceId> = [id("v")].into();
    let changes = converge(&driver, &desired, &mut owned).await;
    assert_eq!(
        actions(&changes),
        [("v".into(), Action::Create), ("w".into(), Action::Conflict)]
    );
    assert!(
        changes[1]
            .reason()
            .unwrap_or_default()
            .contains("not provably gitvisor's"),
        "{:?}",
        changes[1].reason()
    );
    assert!(!ours.exists());
    assert!(dir.join("v.qcow2").exists());
    assert_eq!(std::fs::read(&foreign).unwrap(), b"not ours");
    assert!(!dir.join("w.qcow2").exists());

    // A crash between the link and the unlink of the publish: the second name goes.
    std::fs::hard_link(dir.join("v.qcow2"), &ours).unwrap();
    let changes = converge(&driver, &desired[..1], &mut owned).await;
    assert_eq!(actions(&changes), [("v".into(), Action::Update)]);
    assert!(!ours.exists());
    assert!(dir.join("v.qcow2").exists());
    let again = plan(&driver, &desired[..1], &owned).await;
    assert_eq!(actions(&again), [("v".into(), Action::NoOp)]);
}

#[tokio::test]
async fn a_base_with_reclaim_delete_is_kept_while_a_retained_clone_names_it() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let dir = scratch.path().join("volumes");
    let driver = driver(&scratch.path().join("state"));
    let d = dir.display();
    let base = declared(
        "base",
        &format!("directory: {d}\nsize: 4MiB\nreclaimPolicy: Delete"),
    );
    let clone = declared(
        "clone",
        &format!("directory: {d}\nsize: 4MiB\nsource: {{cloneOf: Volume/base}}"),
    );
    let mut owned = BTreeSet::new();
    converge(&driver, &[base.clone(), clone], &mut owned).await;
    // Both pruned: the clone is retained (forgotten), the base refused.
    let changes = plan(&driver, &[], &owned).await;
    let mut found = actions(&changes);
    found.sort();
    assert_eq!(
        found,
        [
            ("base".into(), Action::Conflict),
            ("clone".into(), Action::Delete)
        ]
    );
    let refused = changes.iter().find(|c| c.id == id("base")).unwrap();
    assert!(
        refused
            .reason()
            .unwrap_or_default()
            .contains("is the backing file of"),
        "{:?}",
        refused.reason()
    );
    // Declared again while the other goes: the base stays declared, nothing is lost.
    let changes = converge(&driver, &[base], &mut owned).await;
    assert_eq!(
        actions(&changes),
        [
            ("base".into(), Action::NoOp),
            ("clone".into(), Action::Delete)
        ]
    );
    assert!(
        dir.join("clone.qcow2").exists(),
        "Retain keeps the clone's file"
    );
    assert!(dir.join("base.qcow2").exists());
}

fn nfs_mount(name: &str, path: &Path) -> Arc<Resource> {
    let spec: crate::drivers::nfs_mount::NfsMountSpec = serde_yaml::from_str(&format!(
        "{{server: 10.77.0.1, export: /srv/vms, path: {}}}",
        path.display()
    ))
    .expect("test spec parses");
    Arc::new(Resource::new(
        Metadata::named(Name::parse(name).expect("valid")),
        Spec::new(spec),
    ))
}

/// A `spec.nfs` volume is a file in its NfsMount's mount path (here a plain directory
/// standing in for the mounted share: the guest suite mounts a real one), made and
/// kept exactly like a `directory` volume; a second plan is a no-op.
#[tokio::test]
async fn an_nfs_volume_is_a_file_in_its_mounts_path() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let share = scratch.path().join("share");
    std::fs::create_dir(&share).expect("share dir");
    let driver = driver(&scratch.path().join("state"));
    let volume = declared("disk", "{nfs: nas, format: raw, size: 4MiB}");
    let revision = [nfs_mount("nas", &share), Arc::clone(&volume)];
    let context = PlanContext::new([]).with_revision(&revision);
    let mut owned = BTreeSet::new();
    let changes = driver
        .plan(&[Arc::clone(&volume)], &context)
        .await
        .expect("plan");
    assert_eq!(actions(&changes), [("disk".into(), Action::Create)]);
    for change in &changes {
        owned.insert(change.id.clone());
        driver
            .apply(change, &StepContext::detached(change.id.clone()))
            .await
            .unwrap_or_else(|e| panic!("{}: {}", change.id, e.chain()));
    }
    let file = share.join("disk.raw");
    assert_eq!(std::fs::metadata(&file).expect("made").len(), 4 << 20);
    let context = PlanContext::new(owned.iter().cloned()).with_revision(&revision);
    let again = driver.plan(&[volume], &context).await.expect("plan");
    assert_eq!(actions(&again), [("disk".into(), Action::NoOp)]);
}

/// A volume naming an NfsMount the revision does not declare is refused in the plan
/// with the field to fix; the other volumes are planned as usual, and nothing is pruned.
#[tokio::test]
async fn an_nfs_volume_without_its_mount_is_refused_and_others_carry_on() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let driver = driver(&scratch.path().join("state"));
    let local = scratch.path().join("volumes");
    let desired = [
        declared("orphan", "{nfs: gone, size: 4MiB}"),
        declared(
            "local",
            &format!("{{directory: {}, size: 4MiB}}", local.display()),
        ),
    ];
    let changes = plan(&driver, &desired, &BTreeSet::from([id("orphan")])).await;
    let mut found = actions(&changes);
    found.sort();
    assert_eq!(
        found,
        [
            ("local".into(), Action::Create),
            ("orphan".into(), Action::Conflict)
        ]
    );
    let orphan = changes
        .iter()
        .find(|c| c.id == id("orphan"))
        .expect("planned");
    assert!(
        orphan.reasons[0].contains("NfsMount/gone") && orphan.reasons[0].contains("spec.nfs"),
        "{:?}",
        orphan.reasons
    );
}
