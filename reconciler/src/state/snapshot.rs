//! A consistent, private, in-memory copy of the store file, opened and verified the way
//! a writable open verifies the file itself.
//!
//! Why a copy: redb leaves a file that a writer had open (a killed or crashed `apply`, or
//! one that hit a full disk) marked as needing repair, and its read-only open refuses such
//! a file; repairing it means writing it, which `status` and `plan` must not do. It also
//! trusts a file it opens read-only, so damaged bytes could panic inside it. Repairing
//! and verifying a copy in memory gives the read-only commands exactly the records that
//! the next writable open (which repairs and verifies the file itself, the same way) will
//! find, and touches neither the file nor the disk.
//!
//! Steps:
//! 1. Read the whole file, then read it again and compare. Equal reads are a snapshot of
//!    the file at one instant (a write between the two would have changed the second), so
//!    a writer committing meanwhile costs a retry, never a torn copy. An instant in the
//!    middle of a commit is what a crash at that instant leaves, which redb repairs.
//! 2. Open the bytes as a redb database over an in-memory backend with the integrity check
//!    on: every page checksum is verified and an unclean file is repaired, in memory.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use redb::backends::InMemoryBackend;
use redb::{Builder, Database, DatabaseError, StorageBackend};

use super::error::StoreError;

/// How often a copy is retried while a writer keeps changing the file.
pub const ATTEMPTS: u32 = 50;
/// The largest store a read-only command copies. gitvisor's store holds a few hundred
/// bytes per resource and bounded logs, so this is far beyond any real one.
pub const MAX_BYTES: u64 = 1 << 30;

/// The state is small; redb's 1 GiB default cache ceiling is not needed for it.
const CACHE_BYTES: usize = 16 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

/// The bytes of `path` at one instant, or `None` if it does not exist.
pub(super) fn read_consistent(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    let read_error = |source| StoreError::Read {
        path: path.to_path_buf(),
        source,
    };
    for _ in 0..ATTEMPTS {
        let first = match read_all(path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) if err.kind() == io::ErrorKind::FileTooLarge => {
                return Err(StoreError::TooLarge {
                    path: path.to_path_buf(),
                    size: file_len(path).map_err(read_error)?,
                    limit: MAX_BYTES,
                });
            }
            Err(err) => return Err(read_error(err)),
        };
        match still_equal(path, &first) {
            Ok(true) => return Ok(Some(first)),
            Ok(false) => continue,
            // Moved aside by a writable open between the two reads.
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(read_error(err)),
        }
    }
    Err(StoreError::Unstable {
        path: path.to_path_buf(),
        attempts: ATTEMPTS,
    })
}

fn file_len(path: &Path) -> io::Result<u64> {
    Ok(std::fs::metadata(path)?.len())
}

fn read_all(path: &Path) -> io::Result<Vec<u8>> {
    let file = File::open(path)?;
    let mut bytes = Vec::new();
    // One byte past the limit tells a file at the limit from a larger one.
    file.take(MAX_BYTES + 1).read_to_end(&mut bytes)?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > MAX_BYTES {
        return Err(io::Error::from(io::ErrorKind::FileTooLarge));
    }
    Ok(bytes)
}

/// Whether reading `path` again yields exactly `expected`, without a second full copy.
fn still_equal(path: &Path, expected: &[u8]) -> io::Result<bool> {
    let mut file = File::open(path)?;
    let mut chunk = vec![0u8; CHUNK];
    let mut offset = 0usize;
    loop {
        let n = file.read(&mut chunk)?;
        if n == 0 {
            return Ok(offset == expected.len());
        }
        let Some(want) = expected.get(offset..offset + n) else {
            return Ok(false);
        };
        if want != &chunk[..n] {
            return Ok(false);
        }
        offset += n;
    }
}

/// Opens `bytes` as a redb database in memory, verified and (if unclean) repaired there.
/// Any error is the copy's content: there is no I/O and no lock in memory.
pub(super) fn open_in_memory(bytes: &[u8]) -> Result<Database, DatabaseError> {
    let backend = InMemoryBackend::new();
    let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    backend.set_len(len)?;
    backend.write(0, bytes)?;
    let mut builder = Builder::new();
    builder
        .set_cache_size(CACHE_BYTES)
        .set_check_integrity_on_open(true);
    builder.create_with_backend(backend)
}
