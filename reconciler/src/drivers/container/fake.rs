//! [`FakeHost`]: the container host in memory, for unit tests. It records every request
//! and behaves like runc and the kernel where the driver depends on it: a create under a
//! taken id fails, only a created container starts, a stop records an exit, a delete of
//! a missing container succeeds, a veth needs its bridge, limits change only on a
//! running container. Chosen requests can be made to fail.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use async_trait::async_trait;

use super::image::{ImageDefaults, ImageError, PreparedImage};
use super::seam::{
    Answer, ContainerHost, ExitRecord, HostError, HostRequest, RuntimeContainer, RuntimeStatus,
};
use crate::drivers::vlan_port::DEFAULT_VLAN;
use crate::model::Vlan;

type Failure = Box<dyn Fn(&HostRequest) -> bool + Send + Sync>;

#[derive(Default)]
struct State {
    containers: BTreeMap<String, RuntimeContainer>,
    /// Restart counts survive a delete (the bundle stays), not a remove.
    restarts: BTreeMap<String, u32>,
    /// Host veth names, with the bridge each is enslaved to and its container (a veth
    /// dies with its container's network namespace).
    veths: BTreeMap<String, (String, String)>,
    /// The VLANs of each host veth (read for the veths still there).
    veth_vlans: BTreeMap<String, Vec<Vlan>>,
    requests: Vec<HostRequest>,
    lists: usize,
    next_pid: u32,
    /// The host's resolver configuration.
    host_resolver: String,
}

pub struct FakeHost {
    state: Mutex<State>,
    bridges: BTreeSet<String>,
    missing_images: BTreeSet<String>,
    fail: Mutex<Option<Failure>>,
}

impl FakeHost {
    /// A host with these bridges and every image but `missing_images`.
    pub fn new(bridges: &[&str], missing_images: &[&str]) -> Self {
        FakeHost {
            state: Mutex::new(State {
                next_pid: 100,
                host_resolver: "nameserver 192.0.2.53\n".into(),
                ..State::default()
            }),
            bridges: bridges.iter().map(|b| b.to_string()).collect(),
            missing_images: missing_images.iter().map(|i| i.to_string()).collect(),
            fail: Mutex::new(None),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Requests that match `when` fail (before they change anything).
    pub fn fail_when(&self, when: impl Fn(&HostRequest) -> bool + Send + Sync + 'static) {
        *self.fail.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(when));
    }

    pub fn requests(&self) -> Vec<HostRequest> {
        self.state().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.state().requests.clear();
    }

    pub fn lists(&self) -> usize {
        self.state().lists
    }

    pub fn container(&self, id: &str) -> Option<RuntimeContainer> {
        self.state().containers.get(id).cloned()
    }

    /// The bridge the veth `name` is enslaved to.
    pub fn veth(&self, name: &str) -> Option<String> {
        self.state()
            .veths
            .get(name)
            .map(|(bridge, _)| bridge.clone())
    }

    /// The VLANs of the host veth `name`, while it is there.
    pub fn veth_vlans(&self, name: &str) -> Option<Vec<Vlan>> {
        let state = self.state();
        state
            .veths
            .contains_key(name)
            .then(|| state.veth_vlans.get(name).cloned())
            .flatten()
    }

    /// Changes the VLANs of the host veth `name` behind gitvisor's back.
    pub fn set_veth_vlans(&self, name: &str, vlans: Vec<Vlan>) {
        self.state().veth_vlans.insert(name.to_owned(), vlans);
    }

    /// The host's resolver configuration changes (its DHCP client got other servers).
    pub fn set_host_resolver(&self, text: &str) {
        self.state().host_resolver = text.to_owned();
    }

    /// Puts a container there as someone else (or gitvisor) left it.
    pub fn insert(&self, container: RuntimeContainer) {
        self.state()
            .containers
            .insert(container.id.clone(), container);
    }

    /// The container's process exits on its own with `code` at `at`.
    pub fn exit(&self, id: &str, code: i32, at: SystemTime) {
        if let Some(container) = self.state().containers.get_mut(id) {
            container.status = RuntimeStatus::Stopped;
            container.pid = None;
            container.exit = Some(ExitRecord {
                code,
                at,
                unhealthy: false,
            });
        }
    }

    /// The image the fake prepares for `image`: `sleep` as its command.
    pub fn image_for(image: &str) -> PreparedImage {
        PreparedImage {
            id: super::image::Sha256Digest::of(image.as_bytes()).to_string(),
            lowers: vec![PathBuf::from("/fake/layers").join(image.trim_start_matches('/'))],
            defaults: ImageDefaults {
                cmd: vec!["sleep".into(), "1000".into()],
                ..ImageDefaults::default()
            },
        }
    }
}

fn refused(what: impl Into<String>) -> HostError {
    HostError::Command {
        program: "runc".into(),
        args: String::new(),
        status: "exit status: 1".into(),
        stderr: what.into(),
    }
}

#[async_trait]
impl ContainerHost for FakeHost {
    async fn missing_images(&self, images: Vec<String>) -> Result<BTreeSet<String>, HostError> {
        Ok(images
            .into_iter()
            .filter(|image| image.starts_with('/') && self.missing_images.contains(image))
            .collect())
    }

    async fn list(&self) -> Result<Vec<RuntimeContainer>, HostError> {
        let mut state = self.state();
        state.lists += 1;
        Ok(state.containers.values().cloned().collect())
    }

    async fn port_vlans(&self) -> Result<BTreeMap<String, Vec<Vlan>>, HostError> {
        let state = self.state();
        Ok(state
            .veth_vlans
            .iter()
            .filter(|(name, _)| state.veths.contains_key(*name))
            .map(|(name, vlans)| (name.clone(), vlans.clone()))
            .collect())
    }

    async fn host_resolver(&self) -> Result<String, HostError> {
        Ok(self.state().host_resolver.clone())
    }

    async fn send(&self, request: HostRequest) -> Result<Answer, HostError> {
        if let Some(fail) = &*self.fail.lock().unwrap_or_else(|p| p.into_inner())
            && fail(&request)
        {
            let mut state = self.state();
            state.requests.push(request.clone());
            // As on the host: the bundle with its intent marker stays after a failed create.
            if let HostRequest::Create { config, .. } = &request {
                state
                    .containers
                    .entry(config.id.clone())
                    .or_insert_with(|| RuntimeContainer::not_created(&config.id));
            }
            return Err(refused(format!("injected failure of {request}")));
        }
        let mut state = self.state();
        state.requests.push(request.clone());
        match request {
            HostRequest::PrepareImage { image } => {
                if self.missing_images.contains(&image) {
                    return Err(HostError::Image(ImageError::NotFound {
                        image,
                        why: "no such file".into(),
                    }));
                }
                Ok(Answer::Image(FakeHost::image_for(&image)))
            }
            HostRequest::Create {
                config,
                keep_writable_layer,
                start,
                ..
            } => {
                if state
                    .containers
                    .get(&config.id)
                    .is_some_and(|c| c.status != RuntimeStatus::NotCreated)
                {
                    return Err(refused(format!("container with id {} exists", config.id)));
                }
                let restarts = if keep_writable_layer {
                    state.restarts.get(&config.id).copied().unwrap_or(0) + 1
                } else {
                    0
                };
                state.restarts.insert(config.id.clone(), restarts);
                state.next_pid += 1;
                let pid = state.next_pid;
                state.containers.insert(
                    config.id.clone(),
                    RuntimeContainer {
                        id: config.id.clone(),
                        status: if start {
                            RuntimeStatus::Running
                        } else {
                            RuntimeStatus::Created
                        },
                        pid: Some(pid),
                        annotations: config.annotations.clone(),
                        limits: Some(config.limits),
                        exit: None,
                        health: None,
                        restarts,
                        started: start.then(SystemTime::now),
                        stopped_by_gitvisor: false,
                        resolv_conf: Some(config.etc_files.resolv_conf.clone()),
                    },
                );
                Ok(Answer::Pid(pid))
            }
            HostRequest::Connect { id, pid, veth } => {
                let Some(container) = state.containers.get(&id) else {
                    return Err(refused(format!("container {id} does not exist")));
                };
                if container.pid != Some(pid) {
                    return Err(HostError::Unexpected(format!("no process {pid}")));
                }
                if let Some(veth) = veth {
                    if !self.bridges.contains(&veth.bridge) {
                        return Err(HostError::Invalid(format!(
                            "bridge {} does not exist",
                            veth.bridge
                        )));
                    }
                    // The kernel puts a new port on VLAN 1; connect sets the declared.
                    let vlans = veth.vlans.clone().unwrap_or_else(|| vec![DEFAULT_VLAN]);
                    state.veth_vlans.insert(veth.host_name.clone(), vlans);
                    state.veths.insert(veth.host_name, (veth.bridge, id));
                }
                Ok(Answer::Done)
            }
            HostRequest::Start { id } => match state.containers.get_mut(&id) {
                Some(container) if container.status == RuntimeStatus::Created => {
                    container.status = RuntimeStatus::Running;
                    container.started = Some(SystemTime::now());
                    Ok(Answer::Done)
                }
                Some(container) => Err(refused(format!(
                    "cannot start a container that is {}",
                    container.status
                ))),
                None => Err(refused(format!("container {id} does not exist"))),
            },
            HostRequest::Stop { id, .. } => {
                if let Some(container) = state.containers.get_mut(&id)
                    && matches!(
                        container.status,
                        RuntimeStatus::Running | RuntimeStatus::Paused
                    )
                {
                    container.status = RuntimeStatus::Stopped;
                    container.pid = None;
                    container.stopped_by_gitvisor = true;
                    container.exit = Some(ExitRecord {
                        code: 143,
                        at: SystemTime::now(),
                        unhealthy: false,
                    });
                }
                Ok(Answer::Done)
            }
            HostRequest::Delete { id } => {
                state.containers.remove(&id);
                state.veths.retain(|_, (_, owner)| *owner != id);
                Ok(Answer::Done)
            }
            HostRequest::Remove { id, veth, .. } => {
                state.containers.remove(&id);
                state.restarts.remove(&id);
                state.veths.retain(|_, (_, owner)| *owner != id);
                if let Some(veth) = veth {
                    state.veths.remove(&veth);
                }
                Ok(Answer::Done)
            }
            HostRequest::Update { id, limits } => match state.containers.get_mut(&id) {
                Some(container) if container.status == RuntimeStatus::Running => {
                    container.limits = Some(limits);
                    Ok(Answer::Done)
                }
                _ => Err(refused(format!("container {id} is not running"))),
            },
            HostRequest::SetVlans { id, veth, vlans } => {
                let ours = state
                    .veths
                    .get(&veth)
                    .is_some_and(|(_, owner)| *owner == id);
                if !ours {
                    return Err(HostError::Invalid(format!(
                        "the container's veth {veth} is gone"
                    )));
                }
                vlans.fake_apply_to(state.veth_vlans.entry(veth).or_default());
                Ok(Answer::Done)
            }
            HostRequest::WriteResolvConf { id, content } => match state.containers.get_mut(&id) {
                Some(container) => {
                    container.resolv_conf = Some(content);
                    Ok(Answer::Done)
                }
                None => Err(HostError::Io {
                    operation: "write",
                    path: PathBuf::from("/fake/bundles").join(&id).join("resolv.conf"),
                    source: std::io::ErrorKind::NotFound.into(),
                }),
            },
        }
    }

    fn log_path(&self, id: &str) -> PathBuf {
        PathBuf::from("/fake/logs").join(format!("{id}.log"))
    }
}
