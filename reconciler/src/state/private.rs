//! The state dir is private: the dir 0700 and every file of the store 0600, whatever the
//! umask. A writable store is deletion authority (it says which objects gitvisor may
//! change or delete), and its records name everything gitvisor manages.
//!
//! Modes are set explicitly after creating (the umask only ever removes bits from the
//! mode asked for, so a file or dir is created with the private mode and then set to it
//! exactly), and a writable open tightens what an older gitvisor left too open. The dir
//! is only changed while everything in it is gitvisor's (the store and the copies of it
//! moved aside): `--state-dir` pointed at a shared dir must not chmod that dir.

use std::fs::{self, File, OpenOptions, Permissions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::error::StoreError;
use super::records::now_unix;
use super::store::STATE_FILE;

/// Mode of the state dir.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file in the state dir.
pub const FILE_MODE: u32 = 0o600;

/// Whether `name` is one of the store's files: the store itself, a copy moved aside, or
/// a controller's claim.
fn is_store_file(name: &str) -> bool {
    name == STATE_FILE
        || name == super::CONTROLLER_LOCK_FILE
        || name
            .strip_prefix(STATE_FILE)
            .is_some_and(|rest| rest.starts_with(".corrupt-"))
}

/// The subdirectories of the state dir that gitvisor itself makes: the containers'
/// images, writable layers and logs (`drivers::container`), the VMs' data dirs (their
/// UEFI variable stores, `drivers::vm`), and the git checkouts of `run --source`
/// (`source::git`). A fresh state dir often holds them before the store
/// is first opened (their `create_dir_all` made it, with the umask's mode), so they do
/// not make the dir "shared"; what is inside them is theirs to keep private.
const GITVISOR_DIRS: &[&str] = &["containers", "sources", "vm"];

/// Creates `state_dir` (and missing parents) with [`DIR_MODE`] and sets every store file
/// in it to [`FILE_MODE`]. An existing dir that is more open than [`DIR_MODE`] is set to
/// it only when it holds nothing but store files and gitvisor's own subdirectories
/// ([`GITVISOR_DIRS`]); otherwise it is left as it is, with a
/// warning (the store files themselves are still private).
pub(super) fn prepare_dir(state_dir: &Path) -> Result<(), StoreError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(state_dir)
        .map_err(|source| StoreError::CreateDir {
            path: state_dir.to_path_buf(),
            source,
        })?;
    let mut only_store_files = true;
    let entries = fs::read_dir(state_dir).map_err(|source| StoreError::ListDir {
        path: state_dir.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| StoreError::ListDir {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let name = entry.file_name();
        let file_type = entry.file_type().ok();
        let is_file = file_type.is_some_and(|t| t.is_file());
        let is_dir = file_type.is_some_and(|t| t.is_dir());
        if is_file && name.to_str().is_some_and(is_store_file) {
            set_mode(&entry.path(), FILE_MODE)?;
        } else if is_dir && name.to_str().is_some_and(|n| GITVISOR_DIRS.contains(&n)) {
            // gitvisor's own: the dir may still be made private.
        } else {
            only_store_files = false;
        }
    }
    let mode = mode_of(state_dir)?;
    if mode != DIR_MODE {
        if only_store_files {
            set_mode(state_dir, DIR_MODE)?;
        } else if mode & 0o077 != 0 {
            tracing::warn!(
                path = %state_dir.display(),
                mode = %format!("{mode:o}"),
                "the state dir holds files that are not gitvisor's and other users can open it; \
                 leaving its mode alone (the store file is still private): use a dedicated state dir"
            );
        }
    }
    Ok(())
}

/// Opens (or creates) the store file for reading and writing, with [`FILE_MODE`].
pub(super) fn open_file(path: &Path) -> Result<File, StoreError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(path)
        .map_err(|source| open_error(path, source))?;
    let mode = file
        .metadata()
        .map(|meta| meta.permissions().mode() & 0o7777)
        .map_err(|source| open_error(path, source))?;
    if mode != FILE_MODE {
        file.set_permissions(Permissions::from_mode(FILE_MODE))
            .map_err(|source| StoreError::Permissions {
                path: path.to_path_buf(),
                mode: FILE_MODE,
                source,
            })?;
    }
    Ok(file)
}

fn open_error(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Open {
        path: path.to_path_buf(),
        source: Box::new(redb::DatabaseError::Storage(redb::StorageError::Io(source))),
    }
}

/// Renames a corrupt store to `<file>.corrupt-<unix-seconds>` (with `-<n>` appended if
/// that name is taken), keeping it, private, for inspection.
pub(super) fn move_aside(path: &Path) -> Result<PathBuf, StoreError> {
    let stem = format!("{}.corrupt-{}", path.display(), now_unix());
    let mut aside = PathBuf::from(&stem);
    let mut n = 1u32;
    while fs::symlink_metadata(&aside).is_ok() {
        aside = PathBuf::from(format!("{stem}-{n}"));
        n += 1;
    }
    fs::rename(path, &aside).map_err(|source| StoreError::MoveAside {
        path: path.to_path_buf(),
        to: aside.clone(),
        source,
    })?;
    set_mode(&aside, FILE_MODE)?;
    Ok(aside)
}

fn mode_of(path: &Path) -> Result<u32, StoreError> {
    fs::metadata(path)
        .map(|meta| meta.permissions().mode() & 0o7777)
        .map_err(|source| StoreError::Read {
            path: path.to_path_buf(),
            source,
        })
}

/// Sets `path` to exactly `mode`, unless it already has it.
fn set_mode(path: &Path, mode: u32) -> Result<(), StoreError> {
    if mode_of(path)? == mode {
        return Ok(());
    }
    fs::set_permissions(path, Permissions::from_mode(mode)).map_err(|source| {
        StoreError::Permissions {
            path: path.to_path_buf(),
            mode,
            source,
        }
    })
}
