//! Container logs: the process's stdout and stderr, appended to one file per container
//! under `<state-dir>/containers/logs/`, rotated by size.
//!
//! The container's supervisor ([`shim`](super::shim)) holds the read ends of its stdout
//! and stderr and writes every line to the log file; when the file passes
//! [`MAX_LOG_BYTES`] it is renamed to `NAME.log.1` (the older generations shift up to
//! [`KEEP_ROTATED`]) and a new one is started. `gitvisor logs NAME [-f]` reads them.

use std::fs;
use std::path::{Path, PathBuf};

/// Size at which a log file is rotated.
pub const MAX_LOG_BYTES: u64 = 10 << 20;
/// Rotated generations kept (`NAME.log.1` … `NAME.log.N`).
pub const KEEP_ROTATED: u32 = 3;

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
}

/// Why `gitvisor logs` could not print.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error("{0:?} is not a container name: {1}")]
    Name(String, String),
    #[error(
        "container {name} has no log at {} (it was not created with this --state-dir)",
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
        if let Ok(bytes) = fs::read(rotated(&log, n)) {
            if !emit(&bytes) {
                return Ok(());
            }
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
            if meta.ino() != inode || meta.len() < position {
                if let Ok(fresh) = fs::File::open(&log) {
                    file = fresh;
                    inode = meta.ino();
                }
            }
        }
    }
}
