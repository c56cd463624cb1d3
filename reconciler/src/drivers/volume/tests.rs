//! The volume driver against [`FakeLvm`]: exact requests, refusals in the plan, a second
//! plan after apply that is all no-op, one report however many volumes, interrupted and
//! failed creations that never leave a half-written volume looking ready.

use crate::model::Spec;
use std::collections::BTreeSet;
use std::sync::Arc;

use super::fake::{lv, thin_pool, vg};
use super::*;
use crate::contract::{Action, CancelToken, FailureClass, Interrupted};
use crate::drivers::volume::{Filesystem, VolumeSpec};
use crate::model::{ADOPT_ANNOTATION as ADOPT, Metadata, Name, ResourceId};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

fn declared(name: &str, spec: &str) -> Arc<Resource> {
    let spec: VolumeSpec = serde_yaml::from_str(spec).expect("test spec parses");
    let name = Name::parse(name).expect("test name is valid");
    Arc::new(Resource::new(Metadata::named(name), Spec::new(spec)))
}

fn adopting(name: &str, spec: &str) -> Arc<Resource> {
    let mut resource = (*declared(name, spec)).clone();
    resource
        .metadata
        .annotations
        .insert(ADOPT.to_owned(), "true".to_owned());
    Arc::new(resource)
}

fn id(name: &str) -> ResourceId {
    ResourceId::new(Kind::Volume, Name::parse(name).expect("valid"))
}

/// A host with `vg0` (10 GiB in 4 MiB extents) holding a 2 GiB thin pool `pool`.
fn host() -> Arc<FakeLvm> {
    Arc::new(FakeLvm::new(
        vec![vg("vg0", 10 * GIB, 4 * MIB)],
        vec![thin_pool("vg0", "pool", 2 * GIB, 5.0)],
    ))
}

/// The store's side of a test: what gitvisor recorded as owned.
#[derive(Default)]
struct Store(BTreeSet<ResourceId>);

impl Store {
    fn context(&self, desired: &[Arc<Resource>]) -> PlanContext {
        PlanContext::new(self.0.iter().cloned()).with_revision(desired)
    }
}

async fn plan(driver: &VolumeDriver, desired: &[Arc<Resource>], store: &Store) -> Vec<Change> {
    driver.plan(desired, &store.context(desired)).await.unwrap()
}

/// Plans and applies like the engine: intents recorded before creates, records dropped
/// after deletes. Panics on an apply error.
async fn converge(
    driver: &VolumeDriver,
    desired: &[Arc<Resource>],
    store: &mut Store,
) -> Vec<Change> {
    let changes = plan(driver, desired, store).await;
    for change in &changes {
        if matches!(change.action, Action::Create | Action::Replace) {
            // The write-ahead intent.
            store.0.insert(change.id.clone());
        }
        driver
            .apply(change, &StepContext::detached(change.id.clone()))
            .await
            .unwrap_or_else(|e| panic!("{}: {}", change.id, e.chain()));
        if change.action == Action::Delete {
            store.0.remove(&change.id);
        } else if change.action.is_change() {
            store.0.insert(change.id.clone());
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

fn reason(change: &Change) -> String {
    change.reason().unwrap_or_default()
}

async fn assert_all_noop(driver: &VolumeDriver, desired: &[Arc<Resource>], store: &Store) {
    let again = plan(driver, desired, store).await;
    assert!(
        again.iter().all(|c| c.action == Action::NoOp),
        "{:?}",
        again
            .iter()
            .map(|c| (&c.id, c.action, &c.fields, c.reason()))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn plan_reads_the_host_in_one_report_however_many_volumes() {
    let fake = host();
    let driver = VolumeDriver::new(fake.clone());
    let desired: Vec<_> = (0..200)
        .map(|i| declared(&format!("v{i}"), "volumeGroup: vg0\nsize: 8MiB"))
        .collect();
    let changes = plan(&driver, &desired, &Store::default()).await;
    assert_eq!(changes.len(), 200);
    assert!(changes.iter().all(|c| c.action == Action::Create));
    assert_eq!(fake.reports(), 1);
    assert!(fake.requests().is_empty(), "plan changes nothing");
}

#[tokio::test]
async fn a_create_tags_the_lv_in_the_same_lvcreate_and_makes_its_filesystem() {
    let fake = host();
    let driver = VolumeDriver::new(fake.clone());
    let desired = [declared(
        "data",
        "volumeGroup: vg0\nsize: 1GiB\nfilesystem: ext4",
    )];
    let mut store = Store::default();
    converge(&driver, &desired, &mut store).await;
    assert_eq!(
        fake.requests(),
        [
            LvmRequest::Create {
                vg: "vg0".into(),
                name: "data".into(),
                size: GIB,
                thin_pool: None,
                tags: vec![
                    "gitvisor:managed".into(),
                    "gitvisor:id=Volume/data".into(),
                    "gitvisor:reclaim=Retain".into(),
                    "gitvisor:fs=ext4".into(),
                    "gitvisor:incomplete".into(),
                ],
            },
            LvmRequest::MakeFilesystem {
                device: "/dev/vg0/data".into(),
                filesystem: Filesystem::Ext4,
            },
            LvmRequest::ChangeTags {
                vg: "vg0".into(),
                name: "data".into(),
                add: vec![],
                remove: vec!["gitvisor:incomplete".into()],
            },
        ]
    );
    assert_eq!(
        fake.contents("vg0", "data").filesystem,
        Some((Filesystem::Ext4, GIB))
    );
    assert_all_noop(&driver, &desired, &store).await;
}

#[tokio::test]
async fn thin_and_plain_volumes_converge_and_a_second_plan_is_all_noop() {
    let fake = host();
    fake.add_image("/images/disk.qcow2", "qcow2", 512 * MIB);
    let driver = VolumeDriver::new(fake.clone());
    let desired = [
        declared("plain", "volumeGroup: vg0\nsize: 100MiB"),
        declared(
            "thin",
            "volumeGroup: vg0\nsize: 4GiB\nthinPool: pool\nfilesystem: xfs",
        ),
        declared(
            "root",
            "volumeGroup: vg0\nsize: 1GiB\nsource: /images/disk.qcow2",
        ),
    ];
    let mut store = Store::default();
    let changes = converge(&driver, &desired, &mut store).await;
    assert!(changes.iter().all(|c| c.action == Action::Create));
    assert_eq!(
        fake.lv("vg0", "thin").unwrap().kind,
        LvKind::Thin {
            pool: "pool".into()
        }
    );
    assert_eq!(
        fake.contents("vg0", "root").image.as_deref(),
        Some(std::path::Path::new("/images/disk.qcow2"))
    );
    assert!(!fake.lv("vg0", "root").unwrap().has_tag(tags::INCOMPLETE));
    assert_all_noop(&driver, &desired, &store).await;
}

#[tokio::test]
async fn a_size_between_extents_is_rounded_up_said_and_then_a_noop() {
    let fake = host();
    let driver = VolumeDriver::new(fake.clone());
    let desired = [declared("odd", "volumeGroup: vg0\nsize: 1001MiB")];
    let mut store = Store::default();
    let changes = converge(&driver, &desired, &mut store).await;
    assert!(
        reason(&changes[0]).contains(
            "size 1001MiB is not a whole number of vg0's 4MiB extents: rounded up to 1004MiB"
        ),
        "{}",
        reason(&changes[0])
    );
    assert_eq!(fake.lv("vg0", "odd").unwrap().size, 1004 * MIB);
    assert_all_noop(&driver, &desired, &store).await;
}

#[tokio::test]
async fn growing_extends_in_place_and_grows_the_filesystem_gitvisor_made() {
    let fake = host();
    let driver = VolumeDriver::new(fake.clone());
    let mut store = Store::default();
    converge(
        &driver,
        &[declared(
            "data",
            "volumeGroup: vg0\nsize: 1GiB\nfilesystem: ext4",
        )],
        &mut store,
    )
    .await;
    fake.clear_requests();
    let bigger = [declared(
        "data",
        "volumeGroup: vg0\nsize: 2GiB\nfilesystem: ext4",
    )];
    let changes = converge(&driver, &bigger, &mut store).await;
    assert_eq!(changes[0].action, Action::Update);
    assert_eq!(changes[0].fields[0].path, "size");
    assert_eq!(changes[0].fields[0].old, "1GiB");
    assert_eq!(changes[0].fields[0].new, "2GiB");
    let requests = fake.requests();
    assert_eq!(requests.len(), 4, "{requests:?}");
    assert!(
        matches!(&requests[0], LvmRequest::ChangeTags { add, .. } if add == &["gitvisor:grow-fs"])
    );
    assert!(matches!(&requests[1], LvmRequest::Extend { size, .. } if *size == 2 * GIB));
    assert!(matches!(&requests[2], LvmRequest::GrowFilesystem { .. }));
    assert!(
        matches!(&requests[3], LvmRequest::ChangeTags { remove, .. } if remove == &["gitvisor:grow-fs"])
    );
    assert_eq!(
        fake.contents("vg0", "data").filesystem,
        Some((Filesystem::Ext4, 2 * GIB))
    );
    assert_all_noop(&driver, &bigger, &store).await;
}

#[tokio::test]
async fn a_grow_interrupted_before_the_filesystem_is_finished_by_the_next_run() {
    let fake = host();
    let driver = VolumeDriver::new(fake.clone());
    let mut store = Store::default();
    converge(
        &driver,
        &[declared(
            "data",
            "volumeGroup: vg0\nsize: 1GiB\nfilesystem: xfs",
        )],
        &mut store,
    )
    .await;
    let bigger = [declared(
        "data",
        "volumeGroup: vg0\nsize: 2GiB\nfilesystem: xfs",
    )];
    fake.fail_when(
        |r| matches!(r, LvmRequest::GrowFilesystem { .. }),
        LvmError::Spawn {
            program: "fsadm".into(),
            message: "killed".into(),
        },
    );
    let change = plan(&driver, &bigger, &store).await.remove(0);
    driver
        .apply(&change, &StepContext::detached(change.id.clone()))
        .await
        .unwrap_err();
    assert!(fake.lv("vg0", "data").unwrap().has_tag(tags::GROW_FS));
    let fresh = Arc::new(FakeLvm::new(vec![vg("vg0", 10 * GIB, 4 * MIB)], fake.lvs()));
    // The same host without the injected failure (contents do not matter here).
    let driver = VolumeDriver::new(fresh.clone());
    let again = plan(&driver, &bigger, &store).await.remove(0);
    assert_eq!(again.action, Action::Update);
    assert_eq!(again.fields.len(), 1, "{:?}", again.fields);
    assert_eq!(again.fields[0].path, "filesystem");
}

#[tokio::test]
async fn shrinking_is_refused_in_the_plan_naming_both_sizes() {
    let fake = host();
    let driver = VolumeDriver::new(fake.clone());
    let mut store = Store::default();
    converge(
        &driver,
        &[declared("data", "volumeGroup: vg0\nsize: 2GiB")],
        &mut store,
    )
    .await;
    fake.clear_requests();
    let smaller = [declared("data", "volumeGroup: vg0\nsize: 1GiB")];
    let change = plan(&driver, &smaller, &store).await.remove(0);
    assert_eq!(change.action, Action::Conflict);
    assert!(
        reason(&change)
            .starts_with("shrinking is refused: volume data (vg0/data) is 2GiB and declares 1GiB"),
        "{}",
        reason(&change)
    );
    driver
        .apply(&change, &StepContext::detached(change.id.clone()))
        .await
        .unwrap();
    assert!(fake.requests().is_empty());
    assert_eq!(fake.lv("vg0", "data").unwrap().size, 2 * GIB);
}

#[tokio::test]
async fn another_volume_group_or_pool_is_a_replace_refused_unless_reclaim_delete() {
    let fake = Arc::new(FakeLvm::new(
        vec![vg("vg0", 10 * GIB, 4 * MIB), vg("vg1", 10 * GIB, 4 * MIB)],
        vec![thin_pool("vg0", "pool", 2 * GIB, 5.0)],
    ));
    let driver = VolumeDriver::new(fake.clone());
    let mut store = Store::default();
    converge(
        &driver,
        &[declared("data", "volumeGroup: vg0\nsize: 1GiB")],
        &mut store,
    )
    .await;

    let moved = [declared("data", "volumeGroup: vg1\nsize: 1GiB")];
    let change = plan(&driver, &moved, &store).await.remove(0);
    assert_eq!(change.action, Action::Conflict);
    assert!(
        reason(&change).contains("changing volumeGroup of volume data (vg0 → vg1)"),
        "{}",
        reason(&change)
    );
    assert!(reason(&change).contains("refused because reclaimPolicy is Retain"));

    let thin = [declared(
        "data",
        "volumeGroup: vg0\nsize: 1GiB\nthinPool: pool",
    )];
    let change = plan(&driver, &thin, &store).await.remove(0);
    assert_eq!(change.action, Action::Conflict);
    assert!(
        reason(&change).contains("changing thinPool"),
        "{}",
        reason(&change)
    );

    let allowed = [declared(
        "data",
        "volumeGroup: vg1\nsize: 1GiB\nreclaimPolicy: Delete",
    )];
    let changes = converge(&driver, &allowed, &mut store).await;
    assert_eq!(changes[0].action, Action::Replace);
    assert!(fake.lv("vg0", "data").is_none());
    assert!(fake.lv("vg1", "data").is_some());
    assert_all_noop(&driver, &allowed, &store).await;
}

#[tokio::test]
async fn pruning_with_retain_forgets_and_keeps_the_data_and_with_delete_removes() {
    let fake = host();
    let driver = VolumeDriver::new(fake.clone());
    let mut store = Store::default();
    let both = [
        declared("kept", "volumeGroup: vg0\nsize: 64MiB\nfilesystem: ext4"),
        declared(
            "gone",
            "volumeGroup: vg0\nsize: 64MiB\nreclaimPolicy: Delete",
        ),
    ];
    converge(&driver, &both, &mut store).await;
    let changes = converge(&driver, &[], &mut store).await;
    assert_eq!(
        actions(&changes),
        [
            ("gone".into(), Action::Delete),
            ("kept".into(), Action::Delete)
        ]
    );
    assert!(reason(&changes[1]).contains("the logical volume /dev/vg0/kept and its data stay"));
    assert!(fake.lv("vg0", "gone").is_none());
    let kept = fake.lv("vg0", "kept").expect("retained");
    assert!(
        tags::gitvisor_tags(&kept).next().is_none(),
        "{:?}",
        kept.tags
    );
    assert_eq!(
        fake.contents("vg0", "kept").filesystem,
        Some((Filesystem::Ext4, 64 * MIB))
    );
    assert!(plan(&driver, &[], &store).await.is_empty());
    // Declared again later, it is someone else's LV now: a conflict, never taken silently.
    let change = plan(&driver, &both[..1], &store).await.remove(0);
    assert_eq!(change.action, Action::Conflict);
}

#[tokio::test]
async fn an_open_volume_or_one_with_snapshots_is_not_removed() {
    let fake = host();
    let driver = VolumeDriver::new(fake.clone());
    let mut store = Store::default();
    converge(
        &driver,
        &[declared(
            "db",
            "volumeGroup: vg0\nsize: 64MiB\nreclaimPolicy: Delete",
        )],
        &mut store,
    )
    .await;
    fake.set_open("vg0", "db", true);
    let change = plan(&driver, &[], &store).await.remove(0);
    assert!(
        reason(&change).contains("/dev/vg0/db is open now"),
        "{}",
        reason(&change)
    );
    let error = driver
        .apply(&change, &StepContext::detached(change.id.clone()))
        .await
        .unwrap_err();
    assert_eq!(error.class(), FailureClass::NeedsUser);
    assert!(error.to_string().contains("/dev/vg0/db is open"), "{error}");
    assert!(fake.lv("vg0", "db").is_some());

    fake.set_open("vg0", "db", false);
    let mut snapshot = lv("vg0", "db-snap", 8 * MIB, &[]);
    snapshot.kind = LvKind::Snapshot;
    snapshot.origin = Some("db".into());
    fake.add_lv(snapshot);
    let change = plan(&driver, &[], &store).await.remove(0);
    let error = driver
        .apply(&change, &StepContext::detached(change.id.clone()))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("vg0/db-snap"), "{error}");
    assert!(fake.lv("vg0", "db").is_some() && fake.lv("vg0", "db-snap").is_some());
}

#[tokio::test]
async fn an_unmanaged_lv_is_a_conflict_left_alone_until_adopted() {
    let fake = host();
    fake.add_lv(lv("vg0", "legacy", GIB, &["backup".to_owned()]));
    let driver = VolumeDriver::new(fake.clone());
    let mut store = Store::default();
    let desired = [declared("legacy", "volumeGroup: vg0\nsize: 1GiB")];
    let change = plan(&driver, &desired, &store).await.remove(0);
    assert_eq!(change.action, Action::Conflict);
    assert!(
        reason(&change)
            .starts_with("logical volume vg0/legacy exists but was not created by gitvisor")
    );
    driver
        .apply(&change, &StepContext::detached(change.id.clone()))
        .await
        .unwrap();
    assert!(fake.requests().is_empty());
    // Undeclared, it is not gitvisor's to prune either.
    assert!(plan(&driver, &[], &store).await.is_empty());

    let adopted = [adopting("legacy", "volumeGroup: vg0\nsize: 2GiB")];
    let changes = converge(&driver, &adopted, &mut store).await;
    assert_eq!(changes[0].action, Action::Update);
    let legacy = fake.lv("vg0", "legacy").unwrap();
    assert!(
        legacy.has_tag("backup") && legacy.has_tag(tags::MANAGED),
        "{:?}",
        legacy.tags
    );
    assert_eq!(legacy.size, 2 * GIB);
    let declared_again = [declared("legacy", "volumeGroup: vg0\nsize: 2GiB")];
    assert_all_noop(&driver, &declared_again, &store).await;
}

#[tokio::test]
async fn what_cannot_be_done_is_refused_in_the_plan_and_nothing_is_touched() {
    let fake = Arc::new(FakeLvm::new(
        vec![vg("vg0", GIB, 4 * MIB)],
        vec![thin_pool("vg0", "full", 256 * MIB, 100.0)],
    ));
    fake.add_image("/images/big.qcow2", "qcow2", 4 * GIB);
    let driver = VolumeDriver::new(fake.clone());
    let desired = [
        declared("nogroup", "volumeGroup: vg9\nsize: 1GiB"),
        declared("first", "volumeGroup: vg0\nsize: 500MiB"),
        declared("second", "volumeGroup: vg0\nsize: 500MiB"),
        declared("nopool", "volumeGroup: vg0\nsize: 1GiB\nthinPool: pool"),
        declared("inpool", "volumeGroup: vg0\nsize: 1GiB\nthinPool: full"),
        declared(
            "toobig",
            "volumeGroup: vg0\nsize: 4MiB\nsource: /images/big.qcow2",
        ),
        declared(
            "noimage",
            "volumeGroup: vg0\nsize: 4MiB\nsource: /images/none.raw",
        ),
    ];
    let changes = plan(&driver, &desired, &Store::default()).await;
    let by_name = |name: &str| changes.iter().find(|c| c.id.name.as_str() == name).unwrap();
    assert_eq!(by_name("first").action, Action::Create);
    let expect = [
        (
            "nogroup",
            "volume group vg9 does not exist on this host (it has vg0)",
        ),
        (
            "second",
            "not enough free space in volume group vg0 to create volume second: it needs 500MiB (125 extents of 4MiB), and vg0 has 268MiB free after the other volumes this plan creates or grows there",
        ),
        ("nopool", "thin pool vg0/pool does not exist"),
        ("inpool", "thin pool vg0/full is full (data 100.00%"),
        (
            "toobig",
            "source image /images/big.qcow2 holds a 4GiB disk, larger than the volume (4MiB)",
        ),
        (
            "noimage",
            "source image /images/none.raw cannot be read: qemu-img failed",
        ),
    ];
    for (name, start) in expect {
        let change = by_name(name);
        assert_eq!(change.action, Action::Conflict, "{name}");
        assert!(
            reason(change).starts_with(start),
            "{name}: {}",
            reason(change)
        );
    }
    for change in &changes {
        if change.action == Action::Conflict {
            driver
                .apply(change, &StepContext::detached(change.id.clone()))
                .await
                .unwrap();
        }
    }
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn without_lvm2_a_host_with_no_volumes_plans_nothing_and_one_with_volumes_errs() {
    let fake = host();
    fake.without_lvm2();
    let driver = VolumeDriver::new(fake.clone());
    assert!(plan(&driver, &[], &Store::default()).await.is_empty());
    let desired = [declared("data", "volumeGroup: vg0\nsize: 1GiB")];
    let error = driver
        .plan(&desired, &Store::default().context(&desired))
        .await
        .unwrap_err();
    assert_eq!(error.class(), FailureClass::NeedsUser);
    assert!(
        error.chain().contains("lvm2 is not installed"),
        "{}",
        error.chain()
    );
    let mut recorded = Store::default();
    recorded.0.insert(id("data"));
    assert!(driver.plan(&[], &recorded.context(&[])).await.is_err());
}

#[tokio::test]
async fn a_failed_image_copy_removes_the_new_volume() {
    let fake = host();
    fake.add_image("/images/disk.raw", "raw", 64 * MIB);
    fake.fail_when(
        |r| matches!(r, LvmRequest::WriteImage { .. }),
        LvmError::Failed {
            program: "qemu-img".into(),
            status: "exit status: 1".into(),
            stderr: "error while reading sector 0: Input/output error".into(),
        },
    );
    let driver = VolumeDriver::new(fake.clone());
    let desired = [declared(
        "root",
        "volumeGroup: vg0\nsize: 64MiB\nsource: /images/disk.raw",
    )];
    let change = plan(&driver, &desired, &Store::default()).await.remove(0);
    let error = driver
        .apply(&change, &StepContext::detached(change.id.clone()))
        .await
        .unwrap_err();
    assert!(
        error
            .chain()
            .contains("write image /images/disk.raw (raw) onto /dev/vg0/root"),
        "{}",
        error.chain()
    );
    assert!(
        fake.lv("vg0", "root").is_none(),
        "no half-written volume stays"
    );
}

#[tokio::test]
async fn a_copy_cancelled_midway_leaves_an_incomplete_volume_the_next_run_replaces() {
    let fake = host();
    fake.add_image("/images/disk.raw", "raw", 64 * MIB);
    let cancel = CancelToken::new();
    {
        let cancel = cancel.clone();
        fake.fail_when(
            move |r| {
                if matches!(r, LvmRequest::Create { .. }) {
                    cancel.cancel();
                }
                false
            },
            LvmError::Spawn {
                program: "-".into(),
                message: "-".into(),
            },
        );
    }
    let driver = VolumeDriver::new(fake.clone());
    let desired = [declared(
        "root",
        "volumeGroup: vg0\nsize: 64MiB\nsource: /images/disk.raw",
    )];
    let mut store = Store::default();
    let change = plan(&driver, &desired, &store).await.remove(0);
    store.0.insert(change.id.clone());
    let step = StepContext::new(change.id.clone(), cancel, DEFAULT_STEP_BUDGET, None);
    let error = driver.apply(&change, &step).await.unwrap_err();
    assert_eq!(error.interruption(), Some(&Interrupted::Cancelled));
    let left = fake.lv("vg0", "root").expect("created before the cancel");
    assert!(
        left.has_tag(tags::INCOMPLETE),
        "not marked ready: {:?}",
        left.tags
    );
    assert_eq!(fake.contents("vg0", "root").image, None);

    let changes = converge(&driver, &desired, &mut store).await;
    assert_eq!(
        changes[0].action,
        Action::Replace,
        "{}",
        reason(&changes[0])
    );
    assert!(reason(&changes[0]).contains("stopped before the volume was written completely"));
    assert!(!fake.lv("vg0", "root").unwrap().has_tag(tags::INCOMPLETE));
    assert!(fake.contents("vg0", "root").image.is_some());
    assert_all_noop(&driver, &desired, &store).await;
}

/// A creation that fails at each of its requests in turn: the host never holds a volume
/// that looks ready without its contents, and the next run completes it.
#[tokio::test]
async fn a_creation_failing_at_any_request_is_completed_by_the_next_run() {
    for failing in 0..3 {
        let fake = host();
        let driver = VolumeDriver::new(fake.clone());
        let desired = [declared(
            "data",
            "volumeGroup: vg0\nsize: 64MiB\nfilesystem: ext4",
        )];
        let mut store = Store::default();
        let change = plan(&driver, &desired, &store).await.remove(0);
        store.0.insert(change.id.clone());
        let count = std::sync::atomic::AtomicUsize::new(0);
        fake.fail_when(
            move |_| count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == failing,
            LvmError::Spawn {
                program: "x".into(),
                message: "killed".into(),
            },
        );
        let _ = driver
            .apply(&change, &StepContext::detached(change.id.clone()))
            .await;
        if let Some(lv) = fake.lv("vg0", "data") {
            assert!(
                lv.has_tag(tags::INCOMPLETE) || fake.contents("vg0", "data").filesystem.is_some(),
                "request {failing}: a volume without its filesystem looks ready"
            );
        }
        let driver = VolumeDriver::new(Arc::new(FakeLvm::new(
            vec![vg("vg0", 10 * GIB, 4 * MIB)],
            fake.lvs(),
        )));
        converge(&driver, &desired, &mut store).await;
        assert_all_noop(&driver, &desired, &store).await;
    }
}

#[tokio::test]
async fn snapshots_are_thin_of_thin_origins_and_classic_otherwise() {
    let fake = host();
    let driver = VolumeDriver::new(fake.clone());
    let desired = [
        declared(
            "db",
            "volumeGroup: vg0\nsize: 1GiB\nthinPool: pool\nfilesystem: ext4",
        ),
        declared(
            "db-snap",
            "volumeGroup: vg0\nsize: 1GiB\nsource: {snapshotOf: Volume/db}",
        ),
        declared("logs", "volumeGroup: vg0\nsize: 256MiB\nfilesystem: ext4"),
        declared(
            "logs-snap",
            "volumeGroup: vg0\nsize: 64MiB\nsource: {snapshotOf: Volume/logs}",
        ),
    ];
    let mut store = Store::default();
    converge(&driver, &desired, &mut store).await;
    let thin = fake.lv("vg0", "db-snap").unwrap();
    assert_eq!(
        thin.kind,
        LvKind::Thin {
            pool: "pool".into()
        }
    );
    assert_eq!(thin.origin.as_deref(), Some("db"));
    assert_eq!(
        fake.contents("vg0", "db-snap").filesystem,
        Some((Filesystem::Ext4, GIB))
    );
    let classic = fake.lv("vg0", "logs-snap").unwrap();
    assert_eq!(classic.kind, LvKind::Snapshot);
    assert_eq!(classic.size, 64 * MIB);
    assert!(fake.requests().iter().any(|r| matches!(r,
        LvmRequest::Snapshot { origin, size: Some(size), .. } if origin == "logs" && *size == 64 * MIB)));
    assert_all_noop(&driver, &desired, &store).await;

    let small = [
        desired[0].clone(),
        declared(
            "db-snap2",
            "volumeGroup: vg0\nsize: 512MiB\nsource: {snapshotOf: Volume/db}",
        ),
    ];
    let change = plan(&driver, &small, &store)
        .await
        .into_iter()
        .find(|c| c.id == id("db-snap2"))
        .unwrap();
    assert_eq!(change.action, Action::Conflict);
    assert!(reason(&change).starts_with("a thin snapshot is as big as its origin db (1GiB)"));
}

#[tokio::test]
async fn a_recorded_reclaim_policy_change_is_an_in_place_tag_update() {
    let fake = host();
    let driver = VolumeDriver::new(fake.clone());
    let mut store = Store::default();
    converge(
        &driver,
        &[declared("data", "volumeGroup: vg0\nsize: 64MiB")],
        &mut store,
    )
    .await;
    fake.clear_requests();
    let delete = [declared(
        "data",
        "volumeGroup: vg0\nsize: 64MiB\nreclaimPolicy: Delete",
    )];
    let changes = converge(&driver, &delete, &mut store).await;
    assert_eq!(changes[0].action, Action::Update);
    assert_eq!(
        fake.requests(),
        [LvmRequest::ChangeTags {
            vg: "vg0".into(),
            name: "data".into(),
            add: vec!["gitvisor:reclaim=Delete".into()],
            remove: vec!["gitvisor:reclaim=Retain".into()],
        }]
    );
    assert_all_noop(&driver, &delete, &store).await;
}

#[test]
fn a_source_image_gets_a_long_budget() {
    let driver = VolumeDriver::new(host());
    let create =
        |spec: &str| Change::new(id("x"), Action::Create).with_desired(declared("x", spec));
    assert_eq!(
        driver.step_budget(&create("volumeGroup: vg0\nsize: 1GiB\nsource: /a.raw")),
        IMAGE_STEP_BUDGET
    );
    assert_eq!(
        driver.step_budget(&create("volumeGroup: vg0\nsize: 1GiB")),
        DEFAULT_STEP_BUDGET
    );
}

#[tokio::test]
async fn a_replace_writes_the_source_image_again_and_inspects_only_what_it_writes() {
    let fake = host();
    fake.add_image("/images/disk.raw", "raw", 64 * MIB);
    let driver = VolumeDriver::new(fake.clone());
    let mut store = Store::default();
    let linear = [declared(
        "root",
        "volumeGroup: vg0\nsize: 64MiB\nsource: /images/disk.raw\nreclaimPolicy: Delete",
    )];
    converge(&driver, &linear, &mut store).await;
    let thin = [declared(
        "root",
        "volumeGroup: vg0\nsize: 64MiB\nthinPool: pool\nsource: /images/disk.raw\nreclaimPolicy: Delete",
    )];
    fake.clear_requests();
    let changes = converge(&driver, &thin, &mut store).await;
    assert_eq!(
        changes[0].action,
        Action::Replace,
        "{}",
        reason(&changes[0])
    );
    let written = fake
        .requests()
        .iter()
        .filter(|r| matches!(r, LvmRequest::WriteImage { .. }))
        .count();
    assert_eq!(written, 1);
    assert_eq!(fake.lv("vg0", "root").unwrap().pool(), Some("pool"));
    assert_all_noop(&driver, &thin, &store).await;
}

/// lvm2 lists VGs on a kernel without device-mapper, but `lvcreate` fails there: the
/// plan refuses what needs a new mapping, with the reason, and lets the rest through.
#[tokio::test]
async fn without_device_mapper_creates_and_resizes_are_refused_in_the_plan() {
    let fake = host();
    let driver = VolumeDriver::new(fake.clone());
    let mut store = Store::default();
    converge(
        &driver,
        &[declared("old", "volumeGroup: vg0\nsize: 1GiB")],
        &mut store,
    )
    .await;
    fake.without_device_mapper();
    fake.clear_requests();

    let desired = [
        declared("old", "volumeGroup: vg0\nsize: 1GiB"),
        declared("new", "volumeGroup: vg0\nsize: 1GiB"),
    ];
    let changes = plan(&driver, &desired, &store).await;
    assert_eq!(
        actions(&changes),
        [
            ("old".to_owned(), Action::NoOp),
            ("new".to_owned(), Action::Unsupported)
        ]
    );
    let why = reason(&changes[1]);
    assert!(why.contains("volume new cannot be created"), "{why}");
    assert!(why.contains("device-mapper"), "{why}");
    assert!(why.contains("modprobe dm-mod"), "{why}");

    // A creation that would be refused anyway names device-mapper first.
    let elsewhere = [declared("other", "volumeGroup: vg9\nsize: 1GiB")];
    let changes = plan(&driver, &elsewhere, &store).await;
    assert_eq!(changes[0].action, Action::Unsupported, "{changes:?}");
    assert!(
        changes[0].reasons[0].contains("device-mapper"),
        "{changes:?}"
    );
    assert!(changes[0].reasons.len() > 1, "{changes:?}");

    let grown = [declared("old", "volumeGroup: vg0\nsize: 2GiB")];
    let changes = plan(&driver, &grown, &store).await;
    assert_eq!(changes[0].action, Action::Unsupported, "{changes:?}");
    assert!(fake.requests().is_empty(), "plan changes nothing");
}

/// Volumes are not watched, and say why (the controller logs it and shows it in status).
#[test]
fn volumes_are_not_watched_and_say_why() {
    let driver = VolumeDriver::new(host());
    let (sink, _events) = crate::contract::WatchSink::channel();
    let watching = driver.watch(sink).expect("no watch to start");
    assert!(
        watching
            .describe()
            .starts_with("not watched: LVM announces changes only through udev"),
        "{}",
        watching.describe()
    );
}
