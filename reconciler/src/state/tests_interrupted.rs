//! A writer interrupted at any commit: the read-only view shows the last commit without
//! writing the file, and the writable open repairs (never moves aside) and finds the same.
//!
//! The crash image of an interrupted writer is taken without killing anything: the bytes
//! of the file while a [`Store`] still holds it are exactly what `kill -9` at that instant
//! leaves on disk (every commit is written and `fsync`ed before it returns, and the file
//! stays marked "in use" until the store is dropped).

use std::fs;
use std::path::Path;

use super::*;
use crate::model::ResourceId;

fn id(text: &str) -> ResourceId {
    text.parse().expect("valid resource id")
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Everything a store holds, as one comparable value.
#[derive(Debug, PartialEq)]
struct Contents {
    owned: std::collections::BTreeMap<ResourceId, OwnedRecord>,
    statuses: std::collections::BTreeMap<ResourceId, ResourceStatus>,
    revisions: Vec<RevisionRecord>,
    events: Vec<Event>,
}

fn view_contents(view: &ReadOnlyStore) -> Contents {
    Contents {
        owned: view.owned().expect("owned"),
        statuses: view.statuses().expect("statuses"),
        revisions: view.revisions().expect("revisions"),
        events: view.events(usize::MAX).expect("events"),
    }
}

fn store_contents(store: &Store) -> Contents {
    Contents {
        owned: store.owned().expect("owned"),
        statuses: store.statuses().expect("statuses"),
        revisions: store.revisions().expect("revisions"),
        events: store.events(usize::MAX).expect("events"),
    }
}

fn ready(revision: &str) -> ResourceStatus {
    ResourceStatus {
        state: ResourceState::Ready,
        message: None,
        revision: revision.to_owned(),
        updated_unix: 1,
    }
}

fn apply_record(revision: &str, applied: &[ResourceId], forgotten: &[ResourceId]) -> ApplyRecord {
    ApplyRecord {
        outcomes: applied
            .iter()
            .map(|id| Outcome::Applied {
                id: id.clone(),
                spec_hash: format!("hash-{id}-{revision}"),
                revision: revision.to_owned(),
                depends_on: Vec::new(),
            })
            .chain(
                forgotten
                    .iter()
                    .map(|id| Outcome::Forgotten { id: id.clone() }),
            )
            .collect(),
        statuses: applied
            .iter()
            .map(|id| (id.clone(), ready(revision)))
            .collect(),
        removed_statuses: forgotten.to_vec(),
        revision: RevisionRecord {
            id: revision.to_owned(),
            applied_unix: 1,
            converged: true,
            summary: format!("{} changed", applied.len() + forgotten.len()),
            source: "/manifests".to_owned(),
        },
        events: applied
            .iter()
            .map(|id| Event {
                unix: 1,
                resource: Some(id.clone()),
                level: EventLevel::Info,
                message: format!("applied at {revision}"),
            })
            .collect(),
    }
}

/// Writes `image` as the store of a fresh state dir.
fn state_dir_with(image: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join(STATE_FILE), image).expect("write image");
    dir
}

#[test]
fn an_interrupted_apply_is_read_as_its_last_commit_without_writing_the_file() {
    let live = tempfile::tempdir().expect("tempdir");
    let path = live.path().join(STATE_FILE);
    let a: Vec<ResourceId> = (0..40).map(|i| id(&format!("Bridge/a{i}"))).collect();
    let b: Vec<ResourceId> = (20..60).map(|i| id(&format!("Bridge/a{i}"))).collect();
    let store = Store::open(live.path()).expect("open");
    store
        .record_apply(&apply_record("rev-a", &a, &[]))
        .expect("record A");
    // Apply of B starts: write-ahead intents for what it creates, then it is killed.
    store.record_intents(&b[20..], "rev-b").expect("intents");
    let image = fs::read(&path).expect("crash image");
    let expected = store_contents(&store);

    let crashed = state_dir_with(&image);
    let crashed_file = crashed.path().join(STATE_FILE);
    // This is the file redb itself refuses to open read-only (it needs a repair)...
    let refused = redb::Builder::new()
        .set_concurrency_mode(redb::ConcurrencyMode::SingleWriter)
        .open_read_only(&crashed_file);
    assert!(
        matches!(refused, Err(redb::DatabaseError::RepairAborted)),
        "the image is not an interrupted writer's: {:?}",
        refused.err()
    );

    // ...and the read-only view still shows the last commit: A's records and B's intents.
    let view = ReadOnlyStore::open(crashed.path()).expect("read-only open");
    assert!(view.exists());
    assert_eq!(view.damage(), None);
    let seen = view_contents(&view);
    assert_eq!(seen, expected);
    assert_eq!(seen.revisions[0].id, "rev-a");
    assert_eq!(seen.owned.len(), 60);
    assert!(seen.owned[&id("Bridge/a59")].pending);
    drop(view);
    assert_eq!(
        fs::read(&crashed_file).expect("read"),
        image,
        "a read-only open must not write the store file"
    );
    assert_eq!(names(crashed.path()), vec![STATE_FILE.to_owned()]);

    // The writable open repairs the file in place, moves nothing aside, and finds the same.
    let repaired = Store::open(crashed.path()).expect("writable open repairs");
    assert_eq!(store_contents(&repaired), expected);
    assert_eq!(names(crashed.path()), vec![STATE_FILE.to_owned()]);
    drop(repaired);
    drop(store);
}

#[test]
fn after_every_commit_of_a_sequence_of_applies_reader_and_next_writer_agree() {
    let live = tempfile::tempdir().expect("tempdir");
    let path = live.path().join(STATE_FILE);
    let store = Store::open(live.path()).expect("open");
    let mut images = vec![("opened", fs::read(&path).expect("image"))];
    for round in 0..6u32 {
        let revision = format!("rev-{round}");
        let declared: Vec<ResourceId> = (round * 10..round * 10 + 30)
            .map(|i| id(&format!("Bridge/br{i}")))
            .collect();
        let gone: Vec<ResourceId> = (round.saturating_sub(1) * 10..round * 10)
            .map(|i| id(&format!("Bridge/br{i}")))
            .collect();
        store
            .record_intents(&declared[20..], &revision)
            .expect("intents");
        images.push(("after intents", fs::read(&path).expect("image")));
        store
            .record_apply(&apply_record(&revision, &declared, &gone))
            .expect("record apply");
        images.push(("after the report", fs::read(&path).expect("image")));
    }
    drop(store);
    images.push(("closed cleanly", fs::read(&path).expect("image")));

    for (n, (when, image)) in images.iter().enumerate() {
        let dir = state_dir_with(image);
        let view = ReadOnlyStore::open(dir.path())
            .unwrap_or_else(|err| panic!("image {n} ({when}): {err}"));
        assert_eq!(view.damage(), None, "image {n} ({when})");
        let seen = view_contents(&view);
        let store = Store::open(dir.path())
            .unwrap_or_else(|err| panic!("image {n} ({when}): writable open: {err}"));
        assert_eq!(
            store_contents(&store),
            seen,
            "image {n} ({when}): the writable open found other records than the view showed"
        );
        assert_eq!(
            names(dir.path()),
            vec![STATE_FILE.to_owned()],
            "image {n} ({when}) was moved aside"
        );
    }
}

#[test]
fn one_apply_is_recorded_in_one_transaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(STATE_FILE);
    let store = Store::open(dir.path()).expect("open");
    let old = id("Bridge/old");
    let kept = id("Bridge/kept");
    store
        .record_apply(&apply_record("rev-1", &[old.clone(), kept.clone()], &[]))
        .expect("first");
    let before = fs::read(&path).expect("image");
    store
        .record_apply(&apply_record(
            "rev-2",
            std::slice::from_ref(&kept),
            std::slice::from_ref(&old),
        ))
        .expect("second");
    let after = fs::read(&path).expect("image");

    let contents = store_contents(&store);
    assert!(!contents.owned.contains_key(&old));
    assert_eq!(contents.owned[&kept].revision, "rev-2");
    assert!(!contents.statuses.contains_key(&old));
    assert_eq!(contents.statuses[&kept].revision, "rev-2");
    assert_eq!(contents.revisions[0].id, "rev-2");
    assert_eq!(contents.events.len(), 3);

    // One commit: the image just before it has none of rev-2, the one after all of it.
    let view_before = ReadOnlyStore::open(state_dir_with(&before).path()).expect("view");
    let view_after = ReadOnlyStore::open(state_dir_with(&after).path()).expect("view");
    assert_eq!(view_before.revisions().expect("revisions").len(), 1);
    assert!(view_before.owned().expect("owned").contains_key(&old));
    assert_eq!(view_contents(&view_after), contents);
}
