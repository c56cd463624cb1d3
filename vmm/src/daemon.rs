//! Running detached, the way QEMU's `-pidfile` and `-daemonize` do, so the VM driver can
//! launch either the same way:
//!
//! 1. with `--daemonize` the process forks *before* it creates anything KVM (a VM belongs
//!    to the process that created it) or starts a thread; the parent waits on a pipe and
//!    exits 0 once the child says the guest is set up, or prints the child's error and
//!    exits 1: a zero exit status means a running VM;
//! 2. the child starts a new session, points stdin/stdout/stderr at /dev/null and changes
//!    to `/`;
//! 3. the VM process opens and locks (`flock`) the pid file: a second VMM given the same
//!    pid file fails at once, and the lock lives exactly as long as the VMM process (it is
//!    taken after the fork because a parent exiting with a lock it shares would release
//!    it); it builds the VM, writes its pid, then reports ready.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use nix::unistd::ForkResult;

/// Errors of the pid file and daemonizing.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot open the pid file {path}: {source}; check that its directory exists")]
    OpenPidFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the pid file {path} is locked by another running gitvisor-vmm{holder}; stop that VM first or use another pid file"
    )]
    PidFileLocked { path: PathBuf, holder: String },
    #[error("cannot write the pid file {path}: {source}")]
    WritePidFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot {operation} while daemonizing: {source}")]
    Daemonize {
        operation: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("cannot open /dev/null for the daemon's standard streams: {source}")]
    DevNull {
        #[source]
        source: std::io::Error,
    },
}

/// A locked pid file.
pub struct PidFile {
    file: Flock<File>,
    path: PathBuf,
}

impl PidFile {
    /// Opens and locks `path`; fails if another process holds the lock.
    pub fn lock(path: &Path) -> Result<Self, DaemonError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)
            .map_err(|source| DaemonError::OpenPidFile {
                path: path.to_path_buf(),
                source,
            })?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(file) => Ok(PidFile {
                file,
                path: path.to_path_buf(),
            }),
            Err((mut file, _)) => {
                let mut contents = String::new();
                let holder = match file.read_to_string(&mut contents) {
                    Ok(_) if !contents.trim().is_empty() => {
                        format!(" (pid {})", contents.trim())
                    }
                    _ => String::new(),
                };
                Err(DaemonError::PidFileLocked {
                    path: path.to_path_buf(),
                    holder,
                })
            }
        }
    }

    /// Replaces the contents with `pid`.
    pub fn write_pid(&mut self, pid: u32) -> Result<(), DaemonError> {
        let io = |source| DaemonError::WritePidFile {
            path: self.path.clone(),
            source,
        };
        self.file.set_len(0).map_err(io)?;
        (&*self.file)
            .write_all_at_start(format!("{pid}\n").as_bytes())
            .map_err(io)
    }

    /// Removes the file; the lock goes with the process.
    pub fn remove(&self) {
        // Only ever our own file: we hold its lock. A missing file is fine.
        let _ = std::fs::remove_file(&self.path);
    }
}

trait WriteAtStart {
    fn write_all_at_start(&self, bytes: &[u8]) -> std::io::Result<()>;
}

impl WriteAtStart for &File {
    fn write_all_at_start(&self, bytes: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.write_all_at(bytes, 0)
    }
}

/// How the daemon's child tells its parent it is up.
pub struct Readiness {
    pipe: Option<File>,
}

impl Readiness {
    /// For a process that did not daemonize: nothing to tell.
    pub fn foreground() -> Self {
        Readiness { pipe: None }
    }

    /// The VM runs: the parent exits 0.
    pub fn ready(&mut self) {
        if let Some(mut pipe) = self.pipe.take() {
            let _ = pipe.write_all(&[0]);
        }
    }

    /// The VM could not be set up: the parent prints `message` and exits 1.
    pub fn failed(&mut self, message: &str) {
        if let Some(mut pipe) = self.pipe.take() {
            let _ = pipe.write_all(message.as_bytes());
        }
    }
}

/// Which side of the fork this is.
pub enum Role {
    /// The parent: exit with this status.
    Parent(i32),
    /// The detached child: go on and build the VM.
    Child(Readiness),
}

/// Forks; the parent waits for the child's readiness.
///
/// # Safety
///
/// The process must have one thread when this is called: the child of a `fork` in a
/// multi-threaded process may only call async-signal-safe functions (another thread may
/// have held the allocator's lock at the fork), and the child here runs the whole VMM.
pub unsafe fn daemonize() -> Result<Role, DaemonError> {
    let (read_end, write_end) = nix::unistd::pipe().map_err(|source| DaemonError::Daemonize {
        operation: "create the readiness pipe",
        source,
    })?;
    // SAFETY: the caller guarantees the process is single-threaded (this function's
    // contract), so the child may run any code.
    let fork = unsafe { nix::unistd::fork() };
    match fork.map_err(|source| DaemonError::Daemonize {
        operation: "fork",
        source,
    })? {
        ForkResult::Parent { .. } => {
            drop(write_end);
            let mut message = Vec::new();
            let _ = File::from(read_end).read_to_end(&mut message);
            Ok(Role::Parent(match message.first() {
                Some(0) => 0,
                Some(_) => {
                    eprintln!("gitvisor-vmm: {}", String::from_utf8_lossy(&message));
                    1
                }
                None => {
                    eprintln!("gitvisor-vmm: the VMM exited while it was starting");
                    1
                }
            }))
        }
        ForkResult::Child => {
            drop(read_end);
            nix::unistd::setsid().map_err(|source| DaemonError::Daemonize {
                operation: "start a new session",
                source,
            })?;
            let null = OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
                .map_err(|source| DaemonError::DevNull { source })?;
            let redirect = |source| DaemonError::Daemonize {
                operation: "redirect the standard streams",
                source,
            };
            nix::unistd::dup2_stdin(&null).map_err(redirect)?;
            nix::unistd::dup2_stdout(&null).map_err(redirect)?;
            nix::unistd::dup2_stderr(&null).map_err(redirect)?;
            nix::unistd::chdir("/").map_err(|source| DaemonError::Daemonize {
                operation: "change to /",
                source,
            })?;
            Ok(Role::Child(Readiness {
                pipe: Some(File::from(write_end)),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locked_pid_file_refuses_a_second_holder_and_names_the_first() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("pid");
        let mut first = PidFile::lock(&path).expect("first lock");
        first.write_pid(4242).expect("write");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "4242\n");
        let error = PidFile::lock(&path).err().expect("second lock refused");
        assert!(error.to_string().contains("pid 4242"), "{error}");
        first.write_pid(7).expect("rewrite");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "7\n");
        first.remove();
        drop(first);
        assert!(!path.exists());
        assert!(PidFile::lock(&path).is_ok());
    }
}
