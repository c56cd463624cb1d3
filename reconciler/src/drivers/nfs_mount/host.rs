//! [`HostMounts`]: the real [`NfsSeam`], over `/proc`, `mount.nfs` (nfs-common) and
//! `umount`.
//!
//! Every call that may touch the share runs off the async runtime under a deadline:
//! `mount` and `umount` as `tokio::process` children killed when the deadline passes
//! (NFS waits are killable), making the mount point as a blocking task under a deadline
//! (its parent may itself be on a share). The mount table and `/proc` are read on
//! blocking threads under a deadline too. Nothing ever `stat`s a mount point.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tokio::process::Command;

use super::holders;
use super::mountinfo::{self, MountEntry};
use super::seam::{Holder, MountRecord, NfsHost, NfsHostError, NfsRequest, NfsSeam};

/// How long `mount` may take: with `retry=0` and `timeo=50`, a server that does not
/// answer fails sooner; one that answers slowly gets this long.
pub const MOUNT_DEADLINE: Duration = Duration::from_secs(30);
/// How long `umount` may take (an NFSv4 unmount tells the server; a dead one is waited
/// for at most this long).
pub const UNMOUNT_DEADLINE: Duration = Duration::from_secs(30);
/// How long the server has to accept a TCP connection on the NFS port.
pub const REACH_DEADLINE: Duration = Duration::from_secs(3);
/// How long reading `/proc` (mount table, holders) may take.
pub const READ_DEADLINE: Duration = Duration::from_secs(10);
/// The NFS port (NFSv4 needs no other).
pub const NFS_PORT: u16 = 2049;

/// The host's mounts; records under `records` (`<run dir>/nfs`).
#[derive(Debug, Clone)]
pub struct HostMounts {
    records: PathBuf,
}

impl HostMounts {
    pub fn new(run_dir: &Path) -> Self {
        HostMounts {
            records: run_dir.join("nfs"),
        }
    }
}

/// Runs `work` on a blocking thread, giving up after `deadline` (the thread finishes
/// on its own; nothing waits for it).
async fn off_runtime<T: Send + 'static>(
    what: &str,
    deadline: Duration,
    work: impl FnOnce() -> Result<T, NfsHostError> + Send + 'static,
) -> Result<T, NfsHostError> {
    match tokio::time::timeout(deadline, tokio::task::spawn_blocking(work)).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(NfsHostError::Read {
            what: what.to_owned(),
            message: join.to_string(),
        }),
        Err(_) => Err(NfsHostError::TimedOut {
            what: what.to_owned(),
            deadline,
        }),
    }
}

fn read_mounts() -> Result<Vec<MountEntry>, NfsHostError> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|text| mountinfo::parse(&text))
        .map_err(|e| NfsHostError::Read {
            what: "/proc/self/mountinfo".into(),
            message: e.to_string(),
        })
}

fn read_records(dir: &Path) -> Result<BTreeMap<String, MountRecord>, NfsHostError> {
    let mut records = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(records),
        Err(e) => {
            return Err(NfsHostError::Read {
                what: dir.display().to_string(),
                message: e.to_string(),
            });
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|e| NfsHostError::Read {
            what: path.display().to_string(),
            message: e.to_string(),
        })?;
        // A torn or foreign file is no record: the mount it might describe is not
        // provably gitvisor's.
        if let Ok(record) = serde_json::from_str::<MountRecord>(&text) {
            records.insert(record.name.clone(), record);
        }
    }
    Ok(records)
}

/// Why this host cannot mount NFS shares, or `None`.
pub fn lacks_client() -> Option<String> {
    let found = ["/sbin/mount.nfs", "/usr/sbin/mount.nfs"]
        .iter()
        .any(|p| Path::new(p).exists());
    (!found).then(|| "mount.nfs is not installed (nfs-common)".to_owned())
}

async fn run(program: &str, args: &[&str], deadline: Duration) -> Result<(), NfsHostError> {
    let mut command = Command::new(program);
    command
        .args(args)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = match tokio::time::timeout(deadline, command.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => {
            return Err(NfsHostError::Spawn {
                program: program.to_owned(),
                message: e.to_string(),
            });
        }
        Err(_) => {
            return Err(NfsHostError::TimedOut {
                what: format!("{program} {}", args.join(" ")),
                deadline,
            });
        }
    };
    if output.status.success() {
        return Ok(());
    }
    Err(NfsHostError::Failed {
        program: program.to_owned(),
        status: output.status.to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    })
}

#[async_trait]
impl NfsSeam for HostMounts {
    async fn observe(&self) -> Result<NfsHost, NfsHostError> {
        let records = self.records.clone();
        off_runtime("the mount table", READ_DEADLINE, move || {
            Ok(NfsHost {
                mounts: read_mounts()?,
                records: read_records(&records)?,
                no_client: lacks_client(),
            })
        })
        .await
    }

    async fn reachable(&self, server: &str) -> Result<(), String> {
        let target = if server.contains(':') && !server.starts_with('[') {
            format!("[{server}]:{NFS_PORT}")
        } else {
            format!("{server}:{NFS_PORT}")
        };
        let attempt = async {
            let addresses: Vec<_> = tokio::net::lookup_host(&target)
                .await
                .map_err(|e| format!("cannot resolve {server}: {e}"))?
                .collect();
            let mut last = format!("{server} has no address");
            for address in addresses {
                match tokio::net::TcpStream::connect(address).await {
                    Ok(_) => return Ok(()),
                    Err(e) => last = format!("{address}: {e}"),
                }
            }
            Err(last)
        };
        match tokio::time::timeout(REACH_DEADLINE, attempt).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "{target} did not answer within {}s",
                REACH_DEADLINE.as_secs()
            )),
        }
    }

    async fn holders(&self, mount: &MountEntry) -> Result<Vec<Holder>, NfsHostError> {
        let mount = mount.clone();
        off_runtime("/proc (who holds the mount)", READ_DEADLINE, move || {
            Ok(holders::scan(
                Path::new("/proc"),
                &mount,
                std::process::id(),
            ))
        })
        .await
    }

    async fn mount(
        &self,
        source: &str,
        path: &str,
        options: &[String],
    ) -> Result<u64, NfsHostError> {
        let dir = PathBuf::from(path);
        off_runtime(&format!("making {path}"), MOUNT_DEADLINE, move || {
            std::fs::create_dir_all(&dir).map_err(|e| NfsHostError::Write {
                what: dir.display().to_string(),
                message: e.to_string(),
            })
        })
        .await?;
        let options = options.join(",");
        run(
            "mount",
            &["-t", "nfs", "-o", &options, source, path],
            MOUNT_DEADLINE,
        )
        .await?;
        let mounts = off_runtime("the mount table", READ_DEADLINE, read_mounts).await?;
        mounts
            .iter()
            .rev()
            .find(|m| m.mount_point == path && m.is_nfs())
            .map(|m| m.mount_id)
            .ok_or_else(|| NfsHostError::Vanished {
                path: path.to_owned(),
            })
    }

    async fn send(&self, request: &NfsRequest) -> Result<(), NfsHostError> {
        match request {
            // `-c` (no canonicalization): umount would otherwise `stat` the mount point,
            // which waits for a dead server; the path is the mount table's own.
            NfsRequest::Unmount { path } => run("umount", &["-c", path], UNMOUNT_DEADLINE).await,
            NfsRequest::WriteRecord(record) => {
                let dir = self.records.clone();
                let record = record.clone();
                off_runtime("a mount record", READ_DEADLINE, move || {
                    write_record(&dir, &record)
                })
                .await
            }
            NfsRequest::RemoveRecord { name } => {
                let path = self.records.join(format!("{name}.json"));
                off_runtime(
                    "a mount record",
                    READ_DEADLINE,
                    move || match std::fs::remove_file(&path) {
                        Ok(()) => Ok(()),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                        Err(e) => Err(NfsHostError::Write {
                            what: path.display().to_string(),
                            message: e.to_string(),
                        }),
                    },
                )
                .await
            }
        }
    }
}

/// Writes `record` whole or not at all (a temporary file renamed over the old one).
fn write_record(dir: &Path, record: &MountRecord) -> Result<(), NfsHostError> {
    let error = |what: &Path, e: &dyn std::fmt::Display| NfsHostError::Write {
        what: what.display().to_string(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|e| error(dir, &e))?;
    let path = dir.join(format!("{}.json", record.name));
    let temporary = dir.join(format!(".{}.json.tmp", record.name));
    let text = serde_json::to_string(record).map_err(|e| error(&path, &e))?;
    std::fs::write(&temporary, text).map_err(|e| error(&temporary, &e))?;
    std::fs::rename(&temporary, &path).map_err(|e| error(&path, &e))
}
