use std::fs;
use std::path::Path;

use super::*;
use crate::model::ResourceId;

fn id(text: &str) -> ResourceId {
    text.parse().expect("valid resource id")
}

fn status(state: ResourceState, revision: &str) -> ResourceStatus {
    ResourceStatus {
        state,
        message: Some(format!("{state} at {revision}")),
        revision: revision.to_owned(),
        updated_unix: 1_700_000_000,
    }
}

fn revision(n: u64) -> RevisionRecord {
    RevisionRecord {
        id: format!("rev-{n}"),
        applied_unix: 1_700_000_000 + n,
        converged: n.is_multiple_of(2),
        summary: format!("{n} created"),
        source: String::new(),
    }
}

fn event(n: u64) -> Event {
    Event {
        unix: 1_700_000_000 + n,
        resource: n.is_multiple_of(2).then(|| id("Bridge/br0")),
        level: EventLevel::Info,
        message: format!("event {n}"),
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read dir")
        .map(|entry| {
            entry
                .expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

#[test]
fn owned_records_round_trip_and_intents_are_pending_until_applied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    assert!(store.owned().expect("owned").is_empty());

    let vm = id("VirtualMachine/vm1");
    let disk = id("Volume/vm1-root");
    store
        .record_intents(&[vm.clone(), disk.clone()], "abc123")
        .expect("intents");
    let owned = store.owned().expect("owned");
    assert_eq!(owned.len(), 2);
    for record in owned.values() {
        assert!(record.pending);
        assert_eq!(record.revision, "abc123");
        assert_eq!(record.spec_hash, "");
        assert!(record.updated_unix > 0);
    }

    store
        .record_outcomes(&[Outcome::Applied {
            id: disk.clone(),
            spec_hash: "sha256:disk".into(),
            revision: "abc123".into(),
            depends_on: Vec::new(),
        }])
        .expect("outcomes");
    let owned = store.owned().expect("owned");
    let record = &owned[&disk];
    assert!(!record.pending);
    assert_eq!(record.spec_hash, "sha256:disk");
    assert_eq!(record.revision, "abc123");
    assert!(owned[&vm].pending, "an outcome touches only its own record");

    // Re-creating an owned object: pending again, last confirmed hash kept.
    store
        .record_intents(std::slice::from_ref(&disk), "def456")
        .expect("intents");
    let record = &store.owned().expect("owned")[&disk];
    assert!(record.pending);
    assert_eq!(record.spec_hash, "sha256:disk");
    assert_eq!(record.revision, "def456");
}

#[test]
fn forgotten_removes_the_owned_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let br = id("Bridge/br0");
    let vol = id("Volume/data");
    store
        .record_outcomes(&[
            Outcome::Applied {
                id: br.clone(),
                spec_hash: "h1".into(),
                revision: "r1".into(),
                depends_on: Vec::new(),
            },
            Outcome::Applied {
                id: vol.clone(),
                spec_hash: "h2".into(),
                revision: "r1".into(),
                depends_on: Vec::new(),
            },
        ])
        .expect("applied");
    store
        .record_outcomes(&[
            Outcome::Forgotten { id: vol.clone() },
            // Forgetting something never recorded is not an error.
            Outcome::Forgotten {
                id: id("Container/web"),
            },
        ])
        .expect("forgotten");
    let owned = store.owned().expect("owned");
    assert_eq!(owned.keys().cloned().collect::<Vec<_>>(), vec![br]);
}

#[test]
fn a_batch_is_applied_in_order_within_one_transaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let c = id("Container/web");
    store
        .record_outcomes(&[
            Outcome::Applied {
                id: c.clone(),
                spec_hash: "h".into(),
                revision: "r".into(),
                depends_on: Vec::new(),
            },
            Outcome::Forgotten { id: c.clone() },
        ])
        .expect("outcomes");
    assert!(store.owned().expect("owned").is_empty());
}

#[test]
fn statuses_round_trip_replace_and_remove() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let br = id("Bridge/br0");
    let vm = id("VirtualMachine/vm1");
    let ready = status(ResourceState::Ready, "r1");
    let blocked = ResourceStatus {
        message: None,
        ..status(ResourceState::Blocked, "r1")
    };
    store
        .set_statuses(&[(br.clone(), ready.clone()), (vm.clone(), blocked.clone())])
        .expect("set");
    let statuses = store.statuses().expect("statuses");
    assert_eq!(statuses[&br], ready);
    assert_eq!(statuses[&vm], blocked);

    let failed = status(ResourceState::Failed, "r2");
    store
        .set_statuses(&[(vm.clone(), failed.clone())])
        .expect("set");
    assert_eq!(store.statuses().expect("statuses")[&vm], failed);

    store
        .remove_statuses(std::slice::from_ref(&br))
        .expect("remove");
    let statuses = store.statuses().expect("statuses");
    assert_eq!(statuses.len(), 1);
    assert_eq!(statuses[&vm], failed);
}

#[test]
fn every_resource_state_round_trips() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let states = [
        ResourceState::Ready,
        ResourceState::Progressing,
        ResourceState::Failed,
        ResourceState::Blocked,
        ResourceState::Conflict,
    ];
    let batch: Vec<_> = states
        .iter()
        .enumerate()
        .map(|(i, state)| (id(&format!("Container/c{i}")), status(*state, "r")))
        .collect();
    store.set_statuses(&batch).expect("set");
    let read: Vec<_> = store.statuses().expect("statuses").into_iter().collect();
    assert_eq!(read, batch);
}

#[test]
fn revision_history_is_bounded_and_newest_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    assert_eq!(store.last_revision().expect("last"), None);
    assert!(store.revisions().expect("revisions").is_empty());

    for n in 1..=101 {
        store.record_revision(&revision(n)).expect("record");
    }
    let revisions = store.revisions().expect("revisions");
    assert_eq!(revisions.len(), MAX_REVISIONS);
    assert_eq!(revisions[0], revision(101));
    assert_eq!(revisions[99], revision(2), "the oldest one was dropped");
    assert!(
        revisions
            .windows(2)
            .all(|w| w[0].applied_unix > w[1].applied_unix)
    );
    assert_eq!(store.last_revision().expect("last"), Some(revision(101)));
}

#[test]
fn event_log_is_bounded_and_newest_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    assert!(store.events(10).expect("events").is_empty());

    let first: Vec<Event> = (1..=600).map(event).collect();
    let second: Vec<Event> = (601..=1005).map(event).collect();
    store.append_events(&first).expect("append");
    assert_eq!(store.events(usize::MAX).expect("events").len(), 600);
    store.append_events(&second).expect("append");

    let all = store.events(usize::MAX).expect("events");
    assert_eq!(all.len(), MAX_EVENTS);
    assert_eq!(all[0], event(1005));
    assert_eq!(all[MAX_EVENTS - 1], event(6));

    let latest = store.events(3).expect("events");
    assert_eq!(latest, vec![event(1005), event(1004), event(1003)]);
    assert!(store.events(0).expect("events").is_empty());

    // A single batch larger than the bound keeps its newest entries.
    let big: Vec<Event> = (2000..3200).map(event).collect();
    store.append_events(&big).expect("append");
    let all = store.events(usize::MAX).expect("events");
    assert_eq!(all.len(), MAX_EVENTS);
    assert_eq!(all[0], event(3199));
    assert_eq!(all[MAX_EVENTS - 1], event(2200));
}

#[test]
fn reopen_preserves_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let br = id("Bridge/br0");
    let ready = status(ResourceState::Ready, "r1");
    {
        let store = Store::open(dir.path()).expect("open");
        store
            .record_intents(&[id("Volume/data")], "r1")
            .expect("intents");
        store
            .record_outcomes(&[Outcome::Applied {
                id: br.clone(),
                spec_hash: "h".into(),
                revision: "r1".into(),
                depends_on: Vec::new(),
            }])
            .expect("outcomes");
        store
            .set_statuses(&[(br.clone(), ready.clone())])
            .expect("statuses");
        store.record_revision(&revision(1)).expect("revision");
        store.append_events(&[event(1), event(2)]).expect("events");
    }
    let store = Store::open(dir.path()).expect("reopen");
    let owned = store.owned().expect("owned");
    assert_eq!(owned.len(), 2);
    assert!(owned[&id("Volume/data")].pending);
    assert_eq!(owned[&br].spec_hash, "h");
    assert_eq!(store.statuses().expect("statuses")[&br], ready);
    assert_eq!(store.revisions().expect("revisions"), vec![revision(1)]);
    assert_eq!(store.events(10).expect("events"), vec![event(2), event(1)]);

    // Sequence numbers continue after a reopen.
    store.append_events(&[event(3)]).expect("events");
    assert_eq!(store.events(1).expect("events"), vec![event(3)]);
}

#[test]
fn a_missing_state_dir_is_created() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state_dir = dir.path().join("var/lib/gitvisor");
    let store = Store::open(&state_dir).expect("open");
    assert!(state_dir.is_dir());
    assert_eq!(store.path(), state_dir.join(STATE_FILE));
    assert!(store.path().is_file());
}

#[test]
fn a_garbage_file_is_moved_aside_and_the_store_starts_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage: Vec<u8> = (0..20_000u32).map(|i| (i * 7 + 13) as u8).collect();
    fs::write(dir.path().join(STATE_FILE), &garbage).expect("write garbage");

    let store = Store::open(dir.path()).expect("open despite corruption");
    assert!(store.owned().expect("owned").is_empty());
    assert!(store.revisions().expect("revisions").is_empty());

    let names = files_in(dir.path());
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(names[0], STATE_FILE);
    assert!(names[1].starts_with("state.redb.corrupt-"), "{names:?}");
    assert_eq!(
        fs::read(dir.path().join(&names[1])).expect("read aside"),
        garbage,
        "the corrupt file is preserved as it was"
    );

    // The fresh store works and survives a reopen.
    store.record_revision(&revision(1)).expect("record");
    drop(store);
    let store = Store::open(dir.path()).expect("reopen");
    assert_eq!(store.revisions().expect("revisions"), vec![revision(1)]);
}

#[test]
fn a_damaged_store_never_fails_open() {
    // Build a store with some data, then damage a copy of it in several ways: each open
    // must succeed (with the data, if redb could repair it, or empty, with the damaged
    // file moved aside), never fail or panic.
    let template = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(template.path()).expect("open");
        store
            .record_intents(&[id("Volume/data"), id("Bridge/br0")], "r1")
            .expect("intents");
        store
            .append_events(&(1..=200).map(event).collect::<Vec<_>>())
            .expect("events");
    }
    let good = fs::read(template.path().join(STATE_FILE)).expect("read");
    assert!(good.len() > 4096);

    let mut damaged: Vec<(&str, Vec<u8>)> = Vec::new();
    damaged.push(("truncated to 100 bytes", good[..100].to_vec()));
    damaged.push(("truncated to half", good[..good.len() / 2].to_vec()));
    let mut header = good.clone();
    header[..64].iter_mut().for_each(|b| *b ^= 0xff);
    damaged.push(("header flipped", header));
    let mut middle = good.clone();
    let mid = good.len() / 2;
    middle[mid..mid + 512].iter_mut().for_each(|b| *b ^= 0x5a);
    damaged.push(("middle flipped", middle));
    let mut tail = good.clone();
    let end = good.len();
    tail[end - 4096..].iter_mut().for_each(|b| *b ^= 0xa5);
    damaged.push(("tail flipped", tail));

    for (what, bytes) in damaged {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(STATE_FILE), &bytes).expect("write");
        let store =
            Store::open(dir.path()).unwrap_or_else(|err| panic!("{what}: open failed: {err:?}"));
        let owned = store
            .owned()
            .unwrap_or_else(|err| panic!("{what}: read failed: {err:?}"));
        let names = files_in(dir.path());
        if owned.is_empty() {
            assert_eq!(names.len(), 2, "{what}: {names:?}");
        } else {
            assert_eq!(owned.len(), 2, "{what}");
        }
        store
            .record_revision(&revision(1))
            .unwrap_or_else(|err| panic!("{what}: write failed: {err:?}"));
    }
}

#[test]
fn a_second_writer_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = Store::open(dir.path()).expect("open");
    let err = Store::open(dir.path()).expect_err("second writer must be refused");
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    assert!(err.to_string().contains("another gitvisor"), "{err}");
    // Refused means untouched: nothing moved aside.
    assert_eq!(files_in(dir.path()), vec![STATE_FILE.to_owned()]);
    drop(first);
    Store::open(dir.path()).expect("open after the first is dropped");
}

#[test]
fn read_only_view_of_a_missing_store_is_empty_and_creates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state_dir = dir.path().join("absent");
    let view = ReadOnlyStore::open(&state_dir).expect("open read-only");
    assert!(!view.exists());
    assert!(view.owned().expect("owned").is_empty());
    assert!(view.statuses().expect("statuses").is_empty());
    assert!(view.revisions().expect("revisions").is_empty());
    assert_eq!(view.last_revision().expect("last"), None);
    assert!(view.events(10).expect("events").is_empty());
    assert!(
        !state_dir.exists(),
        "a read-only open must not create the state dir"
    );
}

#[test]
fn read_only_view_reads_beside_a_writer_and_each_view_is_one_instant() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let br = id("Bridge/br0");
    store
        .record_outcomes(&[Outcome::Applied {
            id: br.clone(),
            spec_hash: "h".into(),
            revision: "r1".into(),
            depends_on: Vec::new(),
        }])
        .expect("outcomes");
    store.record_revision(&revision(1)).expect("revision");

    let view = ReadOnlyStore::open(dir.path()).expect("read-only beside the writer");
    assert!(view.exists());
    assert_eq!(view.damage(), None);
    assert_eq!(view.owned().expect("owned"), store.owned().expect("owned"));
    assert_eq!(view.last_revision().expect("last"), Some(revision(1)));

    store.record_revision(&revision(2)).expect("revision");
    store
        .set_statuses(&[(br.clone(), status(ResourceState::Ready, "r2"))])
        .expect("statuses");
    store.append_events(&[event(1)]).expect("events");

    // A view is one instant: every read of `view` sees what was committed at its open,
    // so `status` never mixes the statuses of one apply with the revision of another.
    assert_eq!(view.last_revision().expect("last"), Some(revision(1)));
    assert!(view.statuses().expect("statuses").is_empty());
    assert!(view.events(5).expect("events").is_empty());

    // A view opened later sees every commit before it, while the writer still holds
    // the file.
    let later = ReadOnlyStore::open(dir.path()).expect("read-only beside the writer");
    assert_eq!(later.last_revision().expect("last"), Some(revision(2)));
    assert_eq!(later.revisions().expect("revisions").len(), 2);
    assert_eq!(
        later.statuses().expect("statuses")[&br].state,
        ResourceState::Ready
    );
    assert_eq!(later.events(5).expect("events"), vec![event(1)]);
}

#[test]
fn read_only_view_of_a_corrupt_store_is_empty_and_leaves_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(STATE_FILE);
    fs::write(
        &path,
        b"definitely not a redb file, but long enough to look at",
    )
    .expect("write");
    let view = ReadOnlyStore::open(dir.path()).expect("open read-only");
    assert!(!view.exists());
    let damage = view.damage().expect("the view says why it is empty");
    assert!(damage.contains(STATE_FILE), "{damage}");
    assert!(view.owned().expect("owned").is_empty());
    assert_eq!(files_in(dir.path()), vec![STATE_FILE.to_owned()]);
    assert_eq!(
        fs::read(&path).expect("read"),
        b"definitely not a redb file, but long enough to look at"
    );
}

#[test]
fn a_newer_schema_version_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(STATE_FILE);
    drop(Store::open(dir.path()).expect("open"));
    {
        let db = redb::Database::open(&path).expect("raw open");
        let txn = db.begin_write().expect("begin");
        {
            let mut meta = txn
                .open_table(redb::TableDefinition::<&str, u64>::new("meta"))
                .expect("meta");
            meta.insert("schemaVersion", SCHEMA_VERSION + 1)
                .expect("insert");
        }
        txn.commit().expect("commit");
    }
    let err = Store::open(dir.path()).expect_err("newer schema");
    assert!(
        matches!(err, StoreError::UnsupportedSchema { found, .. } if found == SCHEMA_VERSION + 1),
        "{err:?}"
    );
    let err = ReadOnlyStore::open(dir.path()).expect_err("newer schema");
    assert!(
        matches!(err, StoreError::UnsupportedSchema { .. }),
        "{err:?}"
    );
    assert_eq!(files_in(dir.path()), vec![STATE_FILE.to_owned()]);
}

#[test]
fn an_undecodable_record_is_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(STATE_FILE);
    drop(Store::open(dir.path()).expect("open"));
    {
        let db = redb::Database::open(&path).expect("raw open");
        let txn = db.begin_write().expect("begin");
        {
            let mut owned = txn
                .open_table(redb::TableDefinition::<&str, &[u8]>::new("owned"))
                .expect("owned");
            owned
                .insert("Bridge/br0", b"{not json".as_slice())
                .expect("insert");
        }
        txn.commit().expect("commit");
    }
    let store = Store::open(dir.path()).expect("open");
    let err = store.owned().expect_err("undecodable");
    assert!(
        matches!(&err, StoreError::Decode { key, table: "owned", .. } if key == "Bridge/br0"),
        "{err:?}"
    );
}

#[test]
fn records_serialise_as_camel_case_json() {
    let owned = OwnedRecord {
        spec_hash: "h".into(),
        revision: "r".into(),
        updated_unix: 5,
        pending: true,
        depends_on: None,
    };
    assert_eq!(
        serde_json::to_value(&owned).expect("json"),
        serde_json::json!({"specHash": "h", "revision": "r", "updatedUnix": 5, "pending": true})
    );
    let status = status(ResourceState::Conflict, "r");
    assert_eq!(
        serde_json::to_value(&status).expect("json"),
        serde_json::json!({
            "state": "Conflict",
            "message": "Conflict at r",
            "revision": "r",
            "updatedUnix": 1_700_000_000u64,
        })
    );
    assert_eq!(
        serde_json::to_value(revision(2)).expect("json"),
        serde_json::json!({
            "id": "rev-2",
            "appliedUnix": 1_700_000_002u64,
            "converged": true,
            "summary": "2 created",
            "source": "",
        })
    );
    let warning = Event {
        level: EventLevel::Warning,
        ..event(2)
    };
    assert_eq!(
        serde_json::to_value(&warning).expect("json"),
        serde_json::json!({
            "unix": 1_700_000_002u64,
            "resource": "Bridge/br0",
            "level": "Warning",
            "message": "event 2",
        })
    );
    for value in [
        serde_json::to_value(&owned).expect("json"),
        serde_json::to_value(&status).expect("json"),
    ] {
        assert!(value.is_object());
    }
    let back: Event =
        serde_json::from_value(serde_json::to_value(&warning).expect("json")).expect("from json");
    assert_eq!(back, warning);
    assert_eq!(ResourceState::Progressing.to_string(), "Progressing");
    assert_eq!(EventLevel::Error.to_string(), "Error");
}

#[test]
fn empty_batches_are_no_ops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    store
        .record_intents::<ResourceId>(&[], "r")
        .expect("intents");
    store.record_outcomes(&[]).expect("outcomes");
    store.set_statuses(&[]).expect("statuses");
    store.remove_statuses(&[]).expect("remove");
    store.append_events(&[]).expect("events");
    assert!(store.owned().expect("owned").is_empty());
    assert!(store.events(10).expect("events").is_empty());
}

#[tokio::test]
async fn async_callers_run_store_work_on_a_blocking_thread() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime_thread = std::thread::current().id();
    let store = Store::open_async(dir.path()).await.expect("open");
    let worker = store
        .run_blocking("record revision", |store| {
            store.record_revision(&revision(1))?;
            Ok(std::thread::current().id())
        })
        .await
        .expect("run");
    assert_ne!(
        worker, runtime_thread,
        "redb work ran on the runtime thread"
    );

    let view = ReadOnlyStore::open_async(dir.path()).await.expect("view");
    let (last, worker) = view
        .run_blocking("read last revision", |view| {
            Ok((view.last_revision()?, std::thread::current().id()))
        })
        .await
        .expect("read");
    assert_eq!(last, Some(revision(1)));
    assert_ne!(worker, runtime_thread);
}

#[test]
fn owned_records_keep_their_dependencies_and_older_records_read_as_unknown() {
    let older: OwnedRecord = serde_json::from_value(serde_json::json!({
        "specHash": "h", "revision": "r", "updatedUnix": 5, "pending": false
    }))
    .expect("a record written before dependencies were recorded");
    assert_eq!(older.depends_on, None);

    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let (web, vm, data) = (
        id("Container/web"),
        id("VirtualMachine/vm1"),
        id("Volume/data"),
    );
    let depends_on = |store: &Store| store.owned().expect("owned")[&web].depends_on.clone();
    store
        .record_intents(
            &[Intent {
                id: web.clone(),
                depends_on: Some(vec![vm.clone()]),
            }],
            "r1",
        )
        .expect("intent");
    assert_eq!(depends_on(&store), Some(vec![vm.clone()]));
    // Re-created under r2: until confirmed, the object may be either, so both edges.
    store
        .record_intents(
            &[Intent {
                id: web.clone(),
                depends_on: Some(vec![data.clone()]),
            }],
            "r2",
        )
        .expect("intent");
    assert_eq!(depends_on(&store), Some(vec![data.clone(), vm.clone()]));
    // A plain id keeps what is known.
    store
        .record_intents(std::slice::from_ref(&web), "r3")
        .expect("intent");
    assert_eq!(depends_on(&store), Some(vec![data.clone(), vm]));
    store
        .record_outcomes(&[Outcome::Applied {
            id: web.clone(),
            spec_hash: "h2".into(),
            revision: "r3".into(),
            depends_on: vec![data.clone()],
        }])
        .expect("outcome");
    assert_eq!(depends_on(&store), Some(vec![data]));
    assert_eq!(
        serde_json::to_value(&store.owned().expect("owned")[&web]).expect("json")["dependsOn"],
        serde_json::json!(["Volume/data"])
    );
}

#[test]
fn a_store_this_process_closed_opens_without_the_full_check_until_another_writes_it() {
    let dir = tempfile::tempdir().unwrap();
    let first = Store::open(dir.path()).unwrap();
    assert!(
        first.verified_on_open(),
        "the first open in a process checks it"
    );
    first.record_revision(&revision(1)).unwrap();
    drop(first);
    let second = Store::open(dir.path()).unwrap();
    assert!(
        !second.verified_on_open(),
        "closed by this process and untouched since"
    );
    assert_eq!(second.revisions().unwrap(), [revision(1)]);
    drop(second);
    // Written by someone else: its modification time moves.
    let file = fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join(STATE_FILE))
        .unwrap();
    file.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .unwrap();
    drop(file);
    let third = Store::open(dir.path()).unwrap();
    assert!(third.verified_on_open(), "changed since: checked again");
    assert_eq!(third.revisions().unwrap(), [revision(1)]);
}
