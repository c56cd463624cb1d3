//! Container logs: the process's stdout and stderr, appended to one file per container
//! under `<state-dir>/containers/logs/`, rotated by size.
//!
//! The container's supervisor ([`shim`](super::shim)) holds the read ends of its stdout
//! and stderr and copies them into the log file ([`copy_output`]); before a write would
//! take the file past [`MAX_LOG_BYTES`] it is renamed to `NAME.log.1` (the older
//! generations shift up to [`KEEP_ROTATED`], the oldest is dropped) and a new one is
//! started. `gitvisor logs NAME [-f]` reads them; a prune removes them.
//!
//! # Why lines are cut
//!
//! The supervisor runs outside the container's cgroup, so its memory is not bounded by
//! the container's `memory` limit: whatever it buffers, the container makes the host pay
//! for. A line is therefore written in pieces of at most [`MAX_LINE_BYTES`]; a piece
//! that is not the end of its line is followed by [`CONTINUED`] (a backslash and a
//! newline, as a shell continues a line). So the supervisor holds at most one piece per
//! stream, however much a container prints without a newline, and a write is never
//! larger than a piece, so rotation by bytes keeps every file within its size and all
//! of a container's logs within `(KEEP_ROTATED + 1) × MAX_LOG_BYTES`.

use std::fs;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Size a log file never passes: it is rotated before a write would.
pub const MAX_LOG_BYTES: u64 = 10 << 20;
/// Rotated generations kept (`NAME.log.1` … `NAME.log.N`).
pub const KEEP_ROTATED: u32 = 3;
/// The longest piece of a line written at once (see the module doc).
pub const MAX_LINE_BYTES: usize = 16 << 10;
/// What follows a piece of a line that goes on in the next piece.
pub const CONTINUED: &[u8] = b"\\\n";

/// The log file and its generations of one container (`log` and `log.1` … `log.N`).
pub fn files(log: &Path) -> impl Iterator<Item = PathBuf> + '_ {
    std::iter::once(log.to_path_buf()).chain((1..=KEEP_ROTATED).map(|n| rotated(log, n)))
}

/// Removes the log file and its rotated generations (a pruned container's); missing
/// files are fine.
pub fn remove(log: &Path) -> std::io::Result<()> {
    for file in files(log) {
        match fs::remove_file(&file) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
    }
    Ok(())
}

/// The supervisor's log file, rotated before it passes [`MAX_LOG_BYTES`].
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    file: fs::File,
    size: u64,
}

impl LogWriter {
    /// Opens (appends to) `path`.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(LogWriter {
            path: path.to_path_buf(),
            file,
            size,
        })
    }

    /// Appends `parts` as one write (one piece of a line and its marker), rotating first
    /// when the file would pass [`MAX_LOG_BYTES`]. A failed write or rotation loses this
    /// piece, never the supervisor: the container's output must keep flowing.
    pub fn write(&mut self, parts: &[&[u8]]) {
        let length: u64 = parts.iter().map(|p| p.len() as u64).sum();
        if self.size > 0
            && self.size + length > MAX_LOG_BYTES
            && rotate(&self.path).is_ok()
            && let Ok(fresh) = LogWriter::open(&self.path)
        {
            *self = fresh;
        }
        let mut bytes = Vec::with_capacity(length as usize);
        for part in parts {
            bytes.extend_from_slice(part);
        }
        if self.file.write_all(&bytes).is_ok() {
            self.size += length;
        }
    }
}

/// What [`read_piece`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    /// The rest of a line (with its newline, unless the stream ended without one).
    End,
    /// [`MAX_LINE_BYTES`] of a line that goes on.
    Continued,
    /// Nothing: the stream has ended.
    Closed,
}

/// Reads into `piece` up to and including the next newline, but at most `limit` bytes.
fn read_piece(reader: &mut impl BufRead, piece: &mut Vec<u8>, limit: usize) -> Piece {
    piece.clear();
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => &[],
        };
        if available.is_empty() {
            return if piece.is_empty() {
                Piece::Closed
            } else {
                Piece::End
            };
        }
        let window = &available[..available.len().min(limit - piece.len())];
        if let Some(newline) = window.iter().position(|b| *b == b'\n') {
            piece.extend_from_slice(&window[..=newline]);
            reader.consume(newline + 1);
            return Piece::End;
        }
        let taken = window.len();
        piece.extend_from_slice(window);
        reader.consume(taken);
        if piece.len() == limit {
            return Piece::Continued;
        }
    }
}

/// Copies one of the container's streams into `log` until it closes, a line at a time
/// (so stdout and stderr interleave by lines), in pieces of at most [`MAX_LINE_BYTES`].
pub fn copy_output(stream: impl std::io::Read, log: &Mutex<LogWriter>) {
    let mut reader = std::io::BufReader::with_capacity(MAX_LINE_BYTES, stream);
    let mut piece = Vec::with_capacity(MAX_LINE_BYTES);
    loop {
        let read = read_piece(&mut reader, &mut piece, MAX_LINE_BYTES);
        let marker = match read {
            Piece::Closed => return,
            Piece::End => &[][..],
            Piece::Continued => CONTINUED,
        };
        if let Ok(mut log) = log.lock() {
            log.write(&[&piece, marker]);
        }
    }
}

/// The log file of container `id` below `dir`.
pub fn log_file(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.log"))
}

/// The rotated generation `n` of `log`.
pub fn rotated(log: &Path, n: u32) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Shifts `log` to `log.1` (and older generations up, the oldest dropped).
pub fn rotate(log: &Path) -> std::io::Result<()> {
    for n in (1..KEEP_ROTATED).rev() {
        let from = rotated(log, n);
        if from.exists() {
            fs::rename(&from, rotated(log, n + 1))?;
        }
    }
    if log.exists() {
        fs::rename(log, rotated(log, 1))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_shifts_generations_and_drops_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let log = log_file(dir.path(), "web");
        for generation in 0..5 {
            fs::write(&log, format!("gen {generation}")).unwrap();
            rotate(&log).unwrap();
        }
        assert!(!log.exists());
        assert_eq!(fs::read_to_string(rotated(&log, 1)).unwrap(), "gen 4");
        assert_eq!(fs::read_to_string(rotated(&log, 3)).unwrap(), "gen 2");
        assert!(!rotated(&log, 4).exists());
    }

    #[test]
    fn a_long_line_is_written_in_marked_pieces_and_the_files_stay_within_their_size() {
        let dir = tempfile::tempdir().unwrap();
        let log = log_file(dir.path(), "web");
        let writer = Mutex::new(LogWriter::open(&log).unwrap());
        // 45 MiB without a newline, then a short line: more than every generation holds.
        let long = MAX_LINE_BYTES * 2880 + 100;
        let mut output = vec![b'a'; long];
        output.extend_from_slice(b"\nshort\nend");
        copy_output(&output[..], &writer);
        drop(writer);
        for file in files(&log) {
            let size = fs::metadata(&file).unwrap().len();
            assert!(size <= MAX_LOG_BYTES, "{} has {size} bytes", file.display());
        }
        assert!(!rotated(&log, KEEP_ROTATED + 1).exists());
        let current = fs::read(&log).unwrap();
        assert!(
            current.ends_with(b"a\nshort\nend"),
            "the line's end, then the rest"
        );
        let lines: Vec<&[u8]> = current.split(|b| *b == b'\n').collect();
        // Every piece but the line's last is full and marked as continued.
        let piece = lines[0];
        assert_eq!(piece.len(), MAX_LINE_BYTES + 1);
        assert_eq!(piece.last(), Some(&b'\\'));
        assert_eq!(
            lines[lines.len() - 3],
            b"a".repeat(lines[lines.len() - 3].len())
        );
        remove(&log).unwrap();
        assert_eq!(files(&log).filter(|f| f.exists()).count(), 0);
        remove(&log).unwrap();
    }

    #[test]
    fn pieces_end_at_newlines_and_at_the_limit() {
        let mut piece = Vec::new();
        let mut reader = std::io::BufReader::with_capacity(4, &b"abcdefg\nhi"[..]);
        assert_eq!(read_piece(&mut reader, &mut piece, 5), Piece::Continued);
        assert_eq!(piece, b"abcde");
        assert_eq!(read_piece(&mut reader, &mut piece, 5), Piece::End);
        assert_eq!(piece, b"fg\n");
        assert_eq!(read_piece(&mut reader, &mut piece, 5), Piece::End);
        assert_eq!(piece, b"hi");
        assert_eq!(read_piece(&mut reader, &mut piece, 5), Piece::Closed);
    }
}

/// Why `gitvisor logs` could not print.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error("{0:?} is not a container name: {1}")]
    Name(String, String),
    #[error(
        "container {name} has no log at {} (it was pruned, or not created with this --state-dir)",
        path.display()
    )]
    Missing { name: String, path: PathBuf },
    #[error("container {name}: reading {}", path.display())]
    Read {
        name: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The log directory below a state dir.
pub fn log_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("containers").join("logs")
}

/// `gitvisor logs NAME [-f]` as the Container kind's `logs` (its registration): [`print`]
/// below the state dir.
pub(crate) fn print_logs(
    settings: &crate::drivers::HostSettings,
    name: &str,
    follow: bool,
) -> Result<(), crate::drivers::ExtraError> {
    Ok(print(&settings.state_dir, name, follow)?)
}

/// `gitvisor logs NAME [-f]`: the rotated generations oldest first, then the current
/// file; with `follow`, what is appended afterwards (a rotation is followed to the new
/// file). A closed stdout ends it quietly.
pub fn print(state_dir: &Path, name: &str, follow: bool) -> Result<(), LogsError> {
    use std::io::{Read, Seek, Write};
    use std::os::unix::fs::MetadataExt;

    crate::model::Name::parse(name).map_err(|why| LogsError::Name(name.to_owned(), why))?;
    let log = log_file(&log_dir(state_dir), name);
    if !log.exists() {
        return Err(LogsError::Missing {
            name: name.to_owned(),
            path: log,
        });
    }
    let read_error = |path: &Path| {
        let (name, path) = (name.to_owned(), path.to_path_buf());
        move |source| LogsError::Read { name, path, source }
    };
    let mut out = std::io::stdout().lock();
    let mut emit = |bytes: &[u8]| -> bool {
        // A reader that went away (`| head`) is the end, not an error.
        out.write_all(bytes).and_then(|()| out.flush()).is_ok()
    };
    for n in (1..=KEEP_ROTATED).rev() {
        if let Ok(bytes) = fs::read(rotated(&log, n))
            && !emit(&bytes)
        {
            return Ok(());
        }
    }
    let mut file = fs::File::open(&log).map_err(read_error(&log))?;
    let mut inode = file.metadata().map_err(read_error(&log))?.ino();
    let mut buffer = vec![0u8; 64 << 10];
    loop {
        let n = file.read(&mut buffer).map_err(read_error(&log))?;
        if n > 0 {
            if !emit(&buffer[..n]) {
                return Ok(());
            }
            continue;
        }
        if !follow {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        // Rotated: finish nothing more from the old file, go on with the new one.
        if let Ok(meta) = fs::metadata(&log) {
            let position = file.stream_position().map_err(read_error(&log))?;
            if (meta.ino() != inode || meta.len() < position)
                && let Ok(fresh) = fs::File::open(&log)
            {
                file = fresh;
                inode = meta.ino();
            }
        }
    }
}
