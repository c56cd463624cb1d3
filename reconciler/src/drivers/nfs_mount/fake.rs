//! [`FakeMounts`]: an in-memory [`NfsSeam`] that behaves like the kernel and
//! `mount.nfs` for the driver's tests: a mount shows in the table with the options it
//! was made with, a server marked down fails mounts, a held mount refuses `umount`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::mountinfo::MountEntry;
use super::seam::{Holder, MountRecord, NfsHost, NfsHostError, NfsRequest, NfsSeam};

#[derive(Debug, Default)]
struct State {
    mounts: Vec<MountEntry>,
    records: BTreeMap<String, MountRecord>,
    down: BTreeMap<String, String>,
    holders: BTreeMap<String, Vec<Holder>>,
    log: Vec<String>,
    next_id: u64,
}

#[derive(Debug, Default)]
pub struct FakeMounts {
    state: Mutex<State>,
}

impl FakeMounts {
    pub fn new() -> Self {
        FakeMounts {
            state: Mutex::new(State {
                next_id: 100,
                ..State::default()
            }),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut state)
    }

    /// What was done, one line per request, in order.
    pub fn log(&self) -> Vec<String> {
        self.with(|s| s.log.clone())
    }

    pub fn mounts(&self) -> Vec<MountEntry> {
        self.with(|s| s.mounts.clone())
    }

    pub fn records(&self) -> BTreeMap<String, MountRecord> {
        self.with(|s| s.records.clone())
    }

    /// The server stops answering (`None`: it answers again).
    pub fn set_down(&self, server: &str, why: Option<&str>) {
        self.with(|s| match why {
            Some(why) => {
                s.down.insert(server.into(), why.into());
            }
            None => {
                s.down.remove(server);
            }
        });
    }

    pub fn set_holders(&self, path: &str, holders: Vec<Holder>) {
        self.with(|s| {
            s.holders.insert(path.into(), holders);
        });
    }

    /// A mount made by someone else (`umount`… by hand: [`FakeMounts::remove_mount`]).
    pub fn add_mount(&self, entry: MountEntry) {
        self.with(|s| s.mounts.push(entry));
    }

    pub fn remove_mount(&self, path: &str) {
        self.with(|s| s.mounts.retain(|m| m.mount_point != path));
    }
}

#[async_trait]
impl NfsSeam for FakeMounts {
    async fn observe(&self) -> Result<NfsHost, NfsHostError> {
        Ok(self.with(|s| NfsHost {
            mounts: s.mounts.clone(),
            records: s.records.clone(),
            no_client: None,
        }))
    }

    async fn reachable(&self, server: &str) -> Result<(), String> {
        self.with(|s| match s.down.get(server) {
            Some(why) => Err(why.clone()),
            None => Ok(()),
        })
    }

    async fn holders(&self, mount: &MountEntry) -> Result<Vec<Holder>, NfsHostError> {
        Ok(self.with(|s| {
            s.holders
                .get(&mount.mount_point)
                .cloned()
                .unwrap_or_default()
        }))
    }

    async fn mount(
        &self,
        source: &str,
        path: &str,
        options: &[String],
    ) -> Result<u64, NfsHostError> {
        self.with(|s| {
            s.log
                .push(format!("mount {source} {path} {}", options.join(",")));
            let server = source.rsplit_once(':').map_or(source, |(server, _)| server);
            if let Some(why) = s.down.get(server) {
                return Err(NfsHostError::Failed {
                    program: "mount".into(),
                    status: "exit status: 32".into(),
                    stderr: format!("mount.nfs: Connection timed out ({why})"),
                });
            }
            s.next_id += 1;
            let read_only = options.iter().any(|o| o == "ro");
            s.mounts.push(MountEntry {
                mount_id: s.next_id,
                device: format!("0:{}", s.next_id),
                mount_point: path.into(),
                mount_options: vec![
                    if read_only { "ro" } else { "rw" }.into(),
                    "relatime".into(),
                ],
                fs_type: "nfs4".into(),
                source: source.into(),
                super_options: options
                    .iter()
                    .filter(|o| !o.starts_with("retry="))
                    .cloned()
                    .collect(),
            });
            Ok(s.next_id)
        })
    }

    async fn send(&self, request: &NfsRequest) -> Result<(), NfsHostError> {
        self.with(|s| {
            s.log.push(request.to_string());
            match request {
                NfsRequest::WriteRecord(record) => {
                    s.records.insert(record.name.clone(), record.clone());
                }
                NfsRequest::RemoveRecord { name } => {
                    s.records.remove(name);
                }
                NfsRequest::Unmount { path } => {
                    if s.holders.get(path).is_some_and(|h| !h.is_empty()) {
                        return Err(NfsHostError::Failed {
                            program: "umount".into(),
                            status: "exit status: 32".into(),
                            stderr: format!("umount: {path}: target is busy."),
                        });
                    }
                    let Some(at) = s.mounts.iter().rposition(|m| m.mount_point == *path) else {
                        return Err(NfsHostError::Failed {
                            program: "umount".into(),
                            status: "exit status: 32".into(),
                            stderr: format!("umount: {path}: not mounted."),
                        });
                    };
                    s.mounts.remove(at);
                }
            }
            Ok(())
        })
    }
}
