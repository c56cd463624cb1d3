//! The state dir is 0700 and every store file 0600, whatever the umask, and a writable
//! open tightens what was left too open, but never a dir that holds other files.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use super::*;

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|err| panic!("stat {}: {err}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The environment variable that makes [`umask_child`] act; it names the state dir.
const CHILD_STATE_DIR: &str = "GITVISOR_TEST_UMASK_CHILD_STATE_DIR";

/// Not a test of its own: [`state_files_are_private_under_umask_000`] runs it in a
/// child process whose umask is 000 (the umask is per process, so it is not changed in
/// this test process, where other tests run in parallel).
#[test]
#[ignore = "run by state_files_are_private_under_umask_000 in a child process"]
fn umask_child() {
    let Some(state_dir) = std::env::var_os(CHILD_STATE_DIR) else {
        return;
    };
    let state_dir = Path::new(&state_dir);
    // A damaged file next to the store: the writable open moves it aside.
    let store = Store::open(state_dir).expect("open under umask 000");
    store
        .record_intents(
            &["Bridge/br0"
                .parse::<crate::model::ResourceId>()
                .expect("id")],
            "r1",
        )
        .expect("write");
    drop(store);
    let view = ReadOnlyStore::open(state_dir).expect("read-only open");
    assert!(view.exists());
    fs::write(
        state_dir.join(STATE_FILE),
        b"garbage, not a redb file at all",
    )
    .expect("damage");
    drop(Store::open(state_dir).expect("open a damaged store"));
}

#[test]
fn state_files_are_private_under_umask_000() {
    let root = tempfile::tempdir().expect("tempdir");
    chmod(root.path(), 0o755);
    let state_dir = root.path().join("var/lib/gitvisor");
    let test_binary = std::env::current_exe().expect("test binary");
    let output = Command::new("sh")
        .arg("-c")
        .arg(r#"umask 000 && exec "$0" --exact state::tests_private::umask_child --ignored --test-threads 1"#)
        .arg(&test_binary)
        .env(CHILD_STATE_DIR, &state_dir)
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(mode(&state_dir), DIR_MODE);
    // The parents gitvisor created are private too (not 0777).
    assert_eq!(mode(&root.path().join("var")) & 0o077, 0);
    let files: Vec<_> = fs::read_dir(&state_dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(
        files.len(),
        2,
        "the store and the damaged one moved aside: {files:?}"
    );
    for file in files {
        assert_eq!(mode(&file), FILE_MODE, "{}", file.display());
    }
}

#[test]
fn a_writable_open_tightens_a_dir_and_files_left_too_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(Store::open(dir.path()).expect("open"));
    let store_file = dir.path().join(STATE_FILE);
    let aside = dir.path().join("state.redb.corrupt-1700000000");
    fs::write(&aside, b"old damaged store").expect("write");
    chmod(dir.path(), 0o777);
    chmod(&store_file, 0o666);
    chmod(&aside, 0o644);

    // Reading changes nothing.
    drop(ReadOnlyStore::open(dir.path()).expect("read-only"));
    assert_eq!(mode(dir.path()), 0o777);
    assert_eq!(mode(&store_file), 0o666);

    drop(Store::open(dir.path()).expect("open"));
    assert_eq!(mode(dir.path()), DIR_MODE);
    assert_eq!(mode(&store_file), FILE_MODE);
    assert_eq!(mode(&aside), FILE_MODE);
}

#[test]
fn a_shared_dir_is_left_alone_but_the_store_in_it_is_private() {
    let dir = tempfile::tempdir().expect("tempdir");
    let other = dir.path().join("someone-elses.conf");
    fs::write(&other, b"x").expect("write");
    chmod(&other, 0o644);
    chmod(dir.path(), 0o755);
    drop(Store::open(dir.path()).expect("open"));
    assert_eq!(
        mode(dir.path()),
        0o755,
        "a dir with other files must not be chmodded"
    );
    assert_eq!(mode(&other), 0o644, "other files must not be touched");
    assert_eq!(mode(&dir.path().join(STATE_FILE)), FILE_MODE);
}

#[test]
fn a_fresh_dir_holding_only_gitvisors_own_subdirectories_is_made_private_without_a_warning() {
    let root = tempfile::tempdir().expect("tempdir");
    let state_dir = root.path().join("gitvisor");
    // What the container driver and a git source make before the store is first opened.
    fs::create_dir_all(state_dir.join("containers/images")).expect("mkdir");
    fs::create_dir_all(state_dir.join("sources/0123abcd")).expect("mkdir");
    chmod(&state_dir, 0o755);
    drop(Store::open(&state_dir).expect("open"));
    assert_eq!(
        mode(&state_dir),
        DIR_MODE,
        "gitvisor's own dirs do not make it shared"
    );
    assert_eq!(mode(&state_dir.join("containers")), 0o755, "left as made");

    // A file of someone else's beside them still keeps the dir as it is.
    let shared = root.path().join("shared");
    fs::create_dir_all(shared.join("containers")).expect("mkdir");
    fs::write(shared.join("notes.txt"), b"x").expect("write");
    chmod(&shared, 0o755);
    drop(Store::open(&shared).expect("open"));
    assert_eq!(mode(&shared), 0o755);
}
