//! Finding and reading the manifest files below a path.
//!
//! The walk visits every `*.yaml`/`*.yml` below the path (hidden entries skipped) and
//! never leaves it: a symlink that resolves outside the tree is an error naming the link
//! (a link to `/usr/share` would otherwise walk it), one inside is followed once (a file
//! reached twice is read once, a directory loop is cut). A manifest that is not a regular
//! file (a FIFO, a socket, a device) is an error rather than a read that could hang; files
//! are opened non-blocking and checked again after opening, so swapping one in between
//! changes nothing. Sizes are bounded ([`MAX_FILE_BYTES`], [`MAX_REVISION_BYTES`]) and
//! checked before reading. Text must be UTF-8 (a leading byte-order mark is allowed); a bad
//! byte is reported at its line and column.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::Diagnostic;

/// Largest manifest file read (a file of 10 000 bridges is about 1.5 MiB).
pub const MAX_FILE_BYTES: u64 = 16 << 20;
/// Largest total size of the manifests of one revision.
pub const MAX_REVISION_BYTES: u64 = 256 << 20;

pub fn file_error(file: &Path, message: String) -> Diagnostic {
    Diagnostic {
        file: file.to_owned(),
        line: 1,
        column: 1,
        field: None,
        message,
    }
}

fn is_manifest_name(name: &str) -> bool {
    name.ends_with(".yaml") || name.ends_with(".yml")
}

fn describe(file_type: &fs::FileType) -> &'static str {
    if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_block_device() || file_type.is_char_device() {
        "a device"
    } else if file_type.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

fn not_regular(path: &Path, file_type: &fs::FileType) -> Diagnostic {
    file_error(
        path,
        format!(
            "is {}, not a regular file: manifests must be regular files (rename it if it is not a manifest)",
            describe(file_type)
        ),
    )
}

/// Every manifest file below `root` (or `root` itself when it is a file), sorted; problems
/// with entries are appended to `diagnostics`.
pub fn collect(root: &Path, diagnostics: &mut Vec<Diagnostic>) -> Vec<PathBuf> {
    let metadata = match fs::metadata(root) {
        Ok(metadata) => metadata,
        Err(err) => {
            diagnostics.push(file_error(root, format!("cannot read manifests: {err}")));
            return Vec::new();
        }
    };
    if metadata.is_file() {
        return vec![root.to_owned()];
    }
    if !metadata.is_dir() {
        diagnostics.push(not_regular(root, &metadata.file_type()));
        return Vec::new();
    }
    let canonical_root = match fs::canonicalize(root) {
        Ok(path) => path,
        Err(err) => {
            diagnostics.push(file_error(root, format!("cannot resolve the path: {err}")));
            return Vec::new();
        }
    };
    let mut files = Vec::new();
    let mut visited = HashSet::from([canonical_root.clone()]);
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) => {
                diagnostics.push(file_error(&dir, format!("cannot list directory: {err}")));
                continue;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(err) => {
                    diagnostics.push(file_error(&dir, format!("cannot list directory: {err}")));
                    continue;
                }
            };
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            let manifest = is_manifest_name(&name);
            let file_type = match entry.file_type() {
                Ok(file_type) => file_type,
                Err(err) => {
                    diagnostics.push(file_error(&path, format!("cannot stat: {err}")));
                    continue;
                }
            };
            let file_type = if file_type.is_symlink() {
                match follow(&path, &canonical_root, manifest) {
                    Ok(Some((target, file_type))) => {
                        if file_type.is_dir() && !visited.insert(target) {
                            continue;
                        }
                        file_type
                    }
                    Ok(None) => continue,
                    Err(diagnostic) => {
                        diagnostics.push(diagnostic);
                        continue;
                    }
                }
            } else {
                if file_type.is_dir()
                    && let Ok(target) = fs::canonicalize(&path)
                    && !visited.insert(target)
                {
                    continue;
                }
                file_type
            };
            if file_type.is_dir() {
                pending.push(path);
            } else if !manifest {
                continue;
            } else if file_type.is_file() {
                files.push(path);
            } else {
                diagnostics.push(not_regular(&path, &file_type));
            }
        }
    }
    files.sort();
    files
}

/// Resolves a symlink found in the tree: `Ok(None)` to skip it, its target and type to
/// follow it, an error when it leaves the tree (or is broken) and would have been read.
fn follow(
    link: &Path,
    root: &Path,
    manifest: bool,
) -> Result<Option<(PathBuf, fs::FileType)>, Diagnostic> {
    let target = match fs::canonicalize(link) {
        Ok(target) => target,
        Err(err) if manifest => {
            return Err(file_error(
                link,
                format!("is a symlink that cannot be followed: {err}"),
            ));
        }
        Err(_) => return Ok(None),
    };
    let file_type = match fs::metadata(&target) {
        Ok(metadata) => metadata.file_type(),
        Err(_) => return Ok(None),
    };
    if !manifest && !file_type.is_dir() {
        return Ok(None);
    }
    if !target.starts_with(root) {
        return Err(file_error(
            link,
            format!(
                "is a symlink to {}, outside the manifest tree {}: not followed (copy the file into the tree, or point gitvisor at the target)",
                target.display(),
                root.display()
            ),
        ));
    }
    Ok(Some((target, file_type)))
}

/// A file's identity, so that one reached twice (through a symlink) is read once.
pub type FileId = (u64, u64);

/// Reads one manifest file: opened non-blocking (a FIFO swapped in cannot hang the
/// read), checked to be a regular file within the size limit, decoded as UTF-8.
pub fn read(path: &Path) -> Result<(FileId, String), Diagnostic> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(|err| file_error(path, format!("cannot open: {err}")))?;
    let metadata = file
        .metadata()
        .map_err(|err| file_error(path, format!("cannot stat: {err}")))?;
    if !metadata.is_file() {
        return Err(not_regular(path, &metadata.file_type()));
    }
    if metadata.len() > MAX_FILE_BYTES {
        return Err(too_big(path, metadata.len()));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    let read = File::take(file, MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| file_error(path, format!("cannot read: {err}")))?;
    if read as u64 > MAX_FILE_BYTES {
        return Err(too_big(path, read as u64));
    }
    let text = decode(path, bytes)?;
    Ok(((metadata.dev(), metadata.ino()), text))
}

fn too_big(path: &Path, size: u64) -> Diagnostic {
    file_error(
        path,
        format!(
            "is {size} bytes, over the limit of {} MiB per manifest file: split it into several files",
            MAX_FILE_BYTES >> 20
        ),
    )
}

/// UTF-8 text without a leading byte-order mark; a bad byte is reported where it is.
fn decode(path: &Path, mut bytes: Vec<u8>) -> Result<String, Diagnostic> {
    const BOM: &[u8] = b"\xEF\xBB\xBF";
    let skipped = if bytes.starts_with(BOM) {
        bytes.drain(..BOM.len());
        BOM.len()
    } else {
        0
    };
    String::from_utf8(bytes).map_err(|err| {
        let offset = err.utf8_error().valid_up_to();
        let valid = &err.as_bytes()[..offset];
        let line_start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let line = 1 + valid.iter().filter(|&&b| b == b'\n').count();
        // Characters before the bad byte on its line (they are valid UTF-8).
        let column = 1 + String::from_utf8_lossy(&valid[line_start..])
            .chars()
            .count();
        Diagnostic {
            file: path.to_owned(),
            line,
            column,
            field: None,
            message: format!(
                "not valid UTF-8 (byte offset {}): manifests must be UTF-8 text",
                offset + skipped
            ),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bom_is_dropped_and_bad_bytes_are_located() {
        let path = Path::new("x.yaml");
        assert_eq!(
            decode(path, b"\xEF\xBB\xBFa: 1\n".to_vec()).unwrap(),
            "a: 1\n"
        );
        let err = decode(path, b"a: 1\nb: \xC3x\n".to_vec()).unwrap_err();
        assert_eq!((err.line, err.column), (2, 4));
        assert!(err.message.contains("byte offset 8"), "{}", err.message);
    }
}
