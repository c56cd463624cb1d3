//! No bytes in the store file crash anything: a real store is damaged at every 512-byte
//! step across the whole file (and truncated at many lengths), and every read path of
//! both views runs on each copy. Each must either show the records (all of them, exactly:
//! checksums catch every damaged page that is in use) or report the store as damaged and
//! show it empty; the read-only view and the next writable open must agree; a writable
//! open that finds damage moves the file aside, keeps it private, and starts empty.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::*;
use crate::model::ResourceId;

fn id(text: &str) -> ResourceId {
    text.parse().expect("valid resource id")
}

#[derive(Debug, PartialEq)]
struct Contents {
    owned: std::collections::BTreeMap<ResourceId, OwnedRecord>,
    statuses: std::collections::BTreeMap<ResourceId, ResourceStatus>,
    revisions: Vec<RevisionRecord>,
    last: Option<RevisionRecord>,
    events: Vec<Event>,
}

impl Contents {
    fn is_empty(&self) -> bool {
        self.owned.is_empty()
            && self.statuses.is_empty()
            && self.revisions.is_empty()
            && self.last.is_none()
            && self.events.is_empty()
    }
}

fn view_contents(view: &ReadOnlyStore) -> Result<Contents, StoreError> {
    Ok(Contents {
        owned: view.owned()?,
        statuses: view.statuses()?,
        revisions: view.revisions()?,
        last: view.last_revision()?,
        events: view.events(usize::MAX)?,
    })
}

fn store_contents(store: &Store) -> Result<Contents, StoreError> {
    Ok(Contents {
        owned: store.owned()?,
        statuses: store.statuses()?,
        revisions: store.revisions()?,
        last: store.last_revision()?,
        events: store.events(usize::MAX)?,
    })
}

/// A store like one after a few applies. Returns its bytes and the contents after its
/// last commit and after the one before (redb falls back to the previous commit when the
/// latest commit slot is damaged).
fn template() -> (Vec<u8>, Contents, Contents) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    for round in 0..4u64 {
        let revision = format!("rev-{round}");
        let ids: Vec<ResourceId> = (0..40)
            .map(|i| id(&format!("Bridge/br{}", round * 5 + i)))
            .collect();
        store
            .record_intents(&ids[35..], &revision)
            .expect("intents");
        store
            .record_apply(&ApplyRecord {
                outcomes: ids
                    .iter()
                    .map(|id| Outcome::Applied {
                        id: id.clone(),
                        spec_hash: format!("sha256:{id}:{round}"),
                        revision: revision.clone(),
                        depends_on: Vec::new(),
                    })
                    .collect(),
                statuses: ids
                    .iter()
                    .map(|id| {
                        (
                            id.clone(),
                            ResourceStatus {
                                state: ResourceState::Ready,
                                message: None,
                                revision: revision.clone(),
                                updated_unix: round,
                            },
                        )
                    })
                    .collect(),
                removed_statuses: Vec::new(),
                revision: RevisionRecord {
                    id: revision.clone(),
                    applied_unix: round,
                    converged: true,
                    summary: "40 resources".into(),
                    source: "/srv/manifests".into(),
                },
                events: (0..50)
                    .map(|n| Event {
                        unix: round * 100 + n,
                        resource: Some(ids[usize::try_from(n).expect("small") % 40].clone()),
                        level: EventLevel::Info,
                        message: format!("event {n} of {revision}"),
                    })
                    .collect(),
            })
            .expect("record apply");
    }
    let previous = store_contents(&store).expect("contents");
    store
        .record_intents(&[id("Bridge/last")], "rev-4")
        .expect("intents");
    let last = store_contents(&store).expect("contents");
    drop(store);
    let bytes = fs::read(dir.path().join(STATE_FILE)).expect("read");
    (bytes, last, previous)
}

fn aside_files(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("state.redb.corrupt-"))
        .collect()
}

/// Runs every read path of both views on `bytes` and checks the promises.
fn check(what: &str, bytes: &[u8], last: &Contents, previous: &Contents) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(STATE_FILE);
    fs::write(&path, bytes).expect("write");

    let view = ReadOnlyStore::open(dir.path())
        .unwrap_or_else(|err| panic!("{what}: read-only open failed: {err}"));
    let seen = view_contents(&view).unwrap_or_else(|err| panic!("{what}: view read: {err}"));
    if view.exists() {
        // An empty file is a store created and never written (a writable open
        // initialises it too).
        assert!(
            seen == *last || seen == *previous || (bytes.is_empty() && seen.is_empty()),
            "{what}: the view shows records that were never committed"
        );
    } else {
        assert!(seen.is_empty(), "{what}");
        let damage = view.damage().unwrap_or_else(|| panic!("{what}: no reason"));
        assert!(damage.contains("state.redb"), "{what}: {damage}");
    }
    assert_eq!(
        fs::read(&path).expect("read"),
        bytes,
        "{what}: the read-only open wrote the file"
    );

    let store =
        Store::open(dir.path()).unwrap_or_else(|err| panic!("{what}: writable open failed: {err}"));
    let found = store_contents(&store).unwrap_or_else(|err| panic!("{what}: store read: {err}"));
    assert_eq!(
        found, seen,
        "{what}: the next writable open found other records than the read-only view showed"
    );
    let aside = aside_files(dir.path());
    if view.exists() {
        assert!(aside.is_empty(), "{what}: a readable store was moved aside");
    } else {
        assert_eq!(aside.len(), 1, "{what}: {aside:?}");
        let mode = fs::metadata(dir.path().join(&aside[0]))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            FILE_MODE,
            "{what}: the copy moved aside is not private"
        );
    }
    store
        .record_intents(&[id("Bridge/after")], "rev-after")
        .unwrap_or_else(|err| panic!("{what}: write after open: {err}"));
    drop(store);
    let reopened = Store::open(dir.path()).unwrap_or_else(|err| panic!("{what}: reopen: {err}"));
    assert!(
        reopened
            .owned()
            .expect("owned")
            .contains_key(&id("Bridge/after")),
        "{what}"
    );
}

#[test]
fn bytes_overwritten_anywhere_never_panic_and_views_agree() {
    let (good, last, previous) = template();
    eprintln!("template store: {} bytes", good.len());
    assert!(good.len() > 16 * 1024, "template too small: {}", good.len());
    check("intact", &good, &last, &previous);
    let mut damaged_views = 0;
    for offset in (0..good.len()).step_by(512) {
        let mut bytes = good.clone();
        let end = (offset + 8).min(bytes.len());
        bytes[offset..end].iter_mut().for_each(|b| *b = !*b);
        check(
            &format!("8 bytes inverted at {offset}"),
            &bytes,
            &last,
            &previous,
        );
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(STATE_FILE), &bytes).expect("write");
        if !ReadOnlyStore::open(dir.path()).expect("open").exists() {
            damaged_views += 1;
        }
    }
    // The issue's reproduction: 8 bytes overwritten at offset 4096.
    let mut bytes = good.clone();
    bytes[4096..4104].copy_from_slice(b"DAMAGED!");
    check("8 bytes written at 4096", &bytes, &last, &previous);
    eprintln!("{damaged_views} damaged copies detected");
    assert!(
        damaged_views > 0,
        "no damage was ever detected: the test damaged nothing"
    );
}

#[test]
fn truncated_and_extended_files_never_panic_and_views_agree() {
    let (good, last, previous) = template();
    let mut lengths: Vec<usize> = vec![0, 1, 8, 64, 511, 512, 4095, 4096, 4097];
    lengths.extend((1..16).map(|k| good.len() * k / 16));
    lengths.push(good.len() - 1);
    for len in lengths {
        check(
            &format!("truncated to {len}"),
            &good[..len],
            &last,
            &previous,
        );
    }
    let mut longer = good.clone();
    longer.extend(std::iter::repeat_n(0xa5u8, 10_000));
    check("extended with garbage", &longer, &last, &previous);
}

#[test]
fn a_store_damaged_while_open_is_an_error_not_a_panic() {
    let (good, ..) = template();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(STATE_FILE);
    fs::write(&path, &good).expect("write");
    let store = Store::open(dir.path()).expect("open");
    // Damage every page but the header while the store is open (a stray write): redb
    // trusts an open file's pages, and panics on these (in debug builds `unreachable`).
    let mut bytes = fs::read(&path).expect("read");
    for byte in bytes.iter_mut().skip(4096) {
        *byte = 0xee;
    }
    fs::write(&path, &bytes).expect("write");
    let mut damaged = 0;
    for _ in 0..3 {
        let results = [
            store.owned().map(drop),
            store.statuses().map(drop),
            store.events(usize::MAX).map(drop),
            store.last_revision().map(drop),
            store.record_intents(&[id("Bridge/x")], "r"),
        ];
        for result in results {
            match result {
                Err(StoreError::Damaged { ref path, .. }) if path.ends_with(STATE_FILE) => {
                    damaged += 1;
                }
                // A page redb still has cached, or an error it detects itself.
                Ok(()) | Err(StoreError::Database { .. }) => {}
                Err(other) => panic!("unexpected error: {other:?}"),
            }
        }
    }
    assert!(
        damaged > 0,
        "no read hit the damage: the test damaged nothing"
    );
    let message = store.owned().expect_err("damaged").to_string();
    assert!(message.contains("is damaged"), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");
}

#[test]
fn a_panic_inside_redb_becomes_a_damaged_error() {
    let path = Path::new("/var/lib/gitvisor/state.redb");
    let result: Result<(), StoreError> =
        super::contain::contain(path, "read owned records", || unreachable!());
    match result {
        Err(StoreError::Damaged {
            path: reported,
            operation,
            detail,
        }) => {
            assert_eq!(reported, path);
            assert_eq!(operation, "read owned records");
            assert!(detail.contains("unreachable"), "{detail}");
        }
        other => panic!("not contained: {other:?}"),
    }
    // Errors and values pass through unchanged.
    let ok: Result<u8, StoreError> = super::contain::contain(path, "x", || Ok(7));
    assert_eq!(ok.expect("value"), 7);
}
