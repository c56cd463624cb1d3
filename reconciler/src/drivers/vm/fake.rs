//! A recording, in-memory [`VmHost`] that behaves like QEMU and the kernel: run dirs with
//! their files, processes started from a command line (paused with `-S`), a guest that
//! powers off at the ACPI button (or ignores it, like one without acpid), QEMU's own tap
//! creation when `ifname=` names a missing tap (gitvisor-vmm's `--net tap=` too), the
//! builtin VMM's refusal to pause, a pid-file lock against a second launch,
//! and the kernel's link rules (a taken name, renaming a link that is up, a master that
//! does not exist), the data dirs under the state dir (where the UEFI variable store
//! lives, moved there from the run dir the way `host.rs` does), and dnsmasq's lease
//! files. Every request is recorded; chosen ones can fail.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use async_trait::async_trait;

use super::console::ConsoleTail;
use super::launch::HostFacts;
use super::monitor::{Control, GuestStatus};
use super::paths::{NVRAM_FILE, SERIAL_LOG_FILE};
use super::preflight::{FileFact, FileFacts};
use super::seam::{
    Answer, HostError, HostSnapshot, Process, RecordRead, RunDir, VmHost, VmRequest,
};
use crate::contract::FailureClass;
use crate::drivers::bridge::{LinkKind, LinkRequest, LinkState};
use crate::drivers::network::Leases;
use crate::drivers::vlan_port;
use crate::drivers::vm::Hypervisor;

type Failure = (Box<dyn Fn(&VmRequest) -> bool + Send + Sync>, HostError);
type Hook = Box<dyn Fn(&VmRequest) + Send + Sync>;

#[derive(Debug, Clone, PartialEq)]
pub struct FakeProcess {
    pub pid: u32,
    pub argv: Vec<String>,
    pub paused: bool,
    pub started: SystemTime,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FakeDir {
    pub record: RecordRead,
    pub files: BTreeMap<&'static str, Vec<u8>>,
    pub process: Option<FakeProcess>,
}

#[derive(Default)]
struct State {
    dirs: BTreeMap<String, FakeDir>,
    /// The data dirs under the state dir: their files by name.
    data: BTreeMap<String, BTreeMap<&'static str, Vec<u8>>>,
    /// The directories below `<state dir>/vmm-kernels`, made by gitvisor-vmm's
    /// `--kernel-cache DIR` when it decompresses a kernel there.
    kernel_caches: std::collections::BTreeSet<String>,
    leases: Leases,
    links: Vec<LinkState>,
    facts: HostFacts,
    next_pid: u32,
    requests: Vec<VmRequest>,
    observes: usize,
    failures: Vec<Failure>,
    hooks: Vec<Hook>,
    ignores_powerdown: bool,
    /// The host's files a launch opens (kernels, images), by path; what a launch needs
    /// and does not find here fails it, as QEMU would.
    files: BTreeMap<PathBuf, FileFact>,
}

#[derive(Default)]
pub struct FakeHost {
    state: Mutex<State>,
}

impl std::fmt::Debug for FakeHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("FakeHost")
            .field("dirs", &state.dirs)
            .field("links", &state.links)
            .finish_non_exhaustive()
    }
}

/// The raw files every fake host has: the kernels and images the tests declare.
const STANDARD_FILES: &[&str] = &[
    "/boot/vmlinuz",
    "/boot/vmlinux",
    "/boot/other",
    "/images/web.img",
    "/images/micro.img",
    "/iso/x.iso",
    "/a.img",
];

pub fn bridge(index: u32, name: &str) -> LinkState {
    LinkState {
        index,
        name: name.to_owned(),
        alias: Some("gitvisor:managed".into()),
        kind: Some(LinkKind::Bridge),
        mtu: 1500,
        up: true,
        master: None,
        bridge: Some(Default::default()),
        addresses: Vec::new(),
        vlans: Vec::new(),
        vlan_of: None,
    }
}

fn tap(index: u32, name: &str) -> LinkState {
    LinkState {
        index,
        name: name.to_owned(),
        alias: None,
        kind: Some(LinkKind::Other("tun".into())),
        mtu: 1500,
        up: false,
        master: None,
        bridge: None,
        addresses: Vec::new(),
        vlans: Vec::new(),
        vlan_of: None,
    }
}

fn refused(message: &str) -> HostError {
    HostError::new(message, FailureClass::NeedsUser)
}

impl FakeHost {
    pub fn new(links: Vec<LinkState>) -> Self {
        let host = FakeHost::default();
        {
            let mut state = host.lock();
            state.links = links;
            state.next_pid = 1000;
            for path in STANDARD_FILES {
                state
                    .files
                    .insert(PathBuf::from(path), FileFact::File { qcow2: false });
            }
        }
        host
    }

    /// Put (or replace) a file on the host: a qcow2 image or not.
    pub fn put_file(&self, path: &str, qcow2: bool) {
        self.lock()
            .files
            .insert(PathBuf::from(path), FileFact::File { qcow2 });
    }

    /// Remove a file from the host.
    pub fn remove_file(&self, path: &str) {
        self.lock().files.remove(Path::new(path));
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn set_facts(&self, facts: HostFacts) {
        self.lock().facts = facts;
    }

    /// The guest ignores the ACPI power button (no acpid): a stop needs the hard way.
    pub fn ignore_powerdown(&self) {
        self.lock().ignores_powerdown = true;
    }

    pub fn requests(&self) -> Vec<VmRequest> {
        self.lock().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// The kernel cache directories on the host.
    pub fn kernel_caches(&self) -> Vec<String> {
        self.lock().kernel_caches.iter().cloned().collect()
    }

    /// Puts a kernel cache directory on the host, as an earlier launch would have.
    pub fn put_kernel_cache(&self, name: &str) {
        self.lock().kernel_caches.insert(name.to_owned());
    }

    pub fn observes(&self) -> usize {
        self.lock().observes
    }

    pub fn dir(&self, name: &str) -> Option<FakeDir> {
        self.lock().dirs.get(name).cloned()
    }

    /// Writes VM `name`'s console log, as its guest would have.
    pub fn set_console(&self, name: &str, text: &str) {
        if let Some(dir) = self.lock().dirs.get_mut(name) {
            dir.files.insert(SERIAL_LOG_FILE, text.as_bytes().to_vec());
        }
    }

    pub fn dir_names(&self) -> Vec<String> {
        self.lock().dirs.keys().cloned().collect()
    }

    pub fn insert_dir(&self, name: &str, dir: FakeDir) {
        self.lock().dirs.insert(name.to_owned(), dir);
    }

    /// The files of VM `name`'s data dir, if it has one.
    pub fn data_dir(&self, name: &str) -> Option<BTreeMap<&'static str, Vec<u8>>> {
        self.lock().data.get(name).cloned()
    }

    /// The host reboots: the run dirs (a tmpfs) and the processes and taps are gone; the
    /// data dirs stay.
    pub fn reboot(&self) {
        let mut state = self.lock();
        state.dirs.clear();
        state.links.retain(|link| link.is_bridge());
    }

    /// The guest writes its variable store.
    pub fn set_nvram(&self, name: &str, content: Vec<u8>) {
        self.lock()
            .data
            .entry(name.to_owned())
            .or_default()
            .insert(NVRAM_FILE, content);
    }

    /// What dnsmasq's lease files hold.
    pub fn set_leases(&self, leases: Leases) {
        self.lock().leases = leases;
    }

    /// The process of VM `name` started at `when`.
    pub fn set_started(&self, name: &str, when: SystemTime) {
        if let Some(process) = self
            .lock()
            .dirs
            .get_mut(name)
            .and_then(|dir| dir.process.as_mut())
        {
            process.started = when;
        }
    }

    pub fn links(&self) -> Vec<LinkState> {
        self.lock().links.clone()
    }

    pub fn link(&self, name: &str) -> Option<LinkState> {
        self.lock().links.iter().find(|l| l.name == name).cloned()
    }

    pub fn add_link(&self, link: LinkState) {
        self.lock().links.push(link);
    }

    pub fn remove_link(&self, name: &str) {
        self.lock().links.retain(|l| l.name != name);
    }

    /// The guest's process ends on its own (a crash, a poweroff from inside).
    pub fn end_process(&self, vm: &str) {
        if let Some(dir) = self.lock().dirs.get_mut(vm) {
            dir.process = None;
        }
    }

    /// Answer `error` to every request matching `predicate` (recorded, not applied).
    pub fn fail_when(
        &self,
        predicate: impl Fn(&VmRequest) -> bool + Send + Sync + 'static,
        error: HostError,
    ) {
        self.lock().failures.push((Box::new(predicate), error));
    }

    /// Run `hook` on every request as it arrives (to cancel a run at a chosen point).
    pub fn on_request(&self, hook: impl Fn(&VmRequest) + Send + Sync + 'static) {
        self.lock().hooks.push(Box::new(hook));
    }
}

impl State {
    fn next_index(&self) -> u32 {
        self.links.iter().map(|l| l.index).max().unwrap_or(0) + 1
    }

    fn dir_mut(&mut self, vm: &str) -> Result<&mut FakeDir, HostError> {
        self.dirs
            .get_mut(vm)
            .ok_or_else(|| refused(&format!("run dir {vm}: No such file or directory")))
    }

    fn link_mut(&mut self, index: u32) -> Result<&mut LinkState, HostError> {
        self.links
            .iter_mut()
            .find(|l| l.index == index)
            .ok_or_else(|| HostError::new("No such device", FailureClass::Transient))
    }

    fn apply(&mut self, request: VmRequest) -> Result<Answer, HostError> {
        match request {
            VmRequest::CreateRunDir { vm, record } => {
                if self.dirs.contains_key(&vm) {
                    return Err(HostError::new("exists already", FailureClass::Transient));
                }
                self.dirs.insert(
                    vm,
                    FakeDir {
                        record: RecordRead::Present(Box::new(record)),
                        files: BTreeMap::new(),
                        process: None,
                    },
                );
            }
            VmRequest::WriteRecord { vm, record } => {
                self.dir_mut(&vm)?.record = RecordRead::Present(Box::new(record));
            }
            VmRequest::RemoveRunDir { dir } => {
                self.dirs.remove(&dir);
            }
            VmRequest::WriteFile { vm, file, content } => {
                self.dir_mut(&vm)?.files.insert(file.file_name(), content);
            }
            VmRequest::KeepNvram { vm, template } => {
                // The template's content is its path, so a test can tell a copy from a
                // move.
                let moved = self.dirs.get_mut(&vm).and_then(|dir| {
                    if self
                        .data
                        .get(&vm)
                        .is_some_and(|d| d.contains_key(NVRAM_FILE))
                    {
                        None
                    } else {
                        dir.files.remove(NVRAM_FILE)
                    }
                });
                self.data
                    .entry(vm)
                    .or_default()
                    .entry(NVRAM_FILE)
                    .or_insert_with(|| {
                        moved
                            .unwrap_or_else(|| template.to_string_lossy().into_owned().into_bytes())
                    });
            }
            VmRequest::RemoveDataDir { vm } => {
                self.data.remove(&vm);
            }
            VmRequest::RemoveKernelCache { dir } => {
                self.kernel_caches.remove(&dir);
            }
            VmRequest::CreateTap { name } => {
                if self.links.iter().any(|l| l.name == name) {
                    return Err(HostError::new("exists already", FailureClass::Transient));
                }
                let index = self.next_index();
                self.links.push(tap(index, &name));
                return Ok(Answer::Index(index));
            }
            VmRequest::FindLink { name } => {
                return Ok(self
                    .links
                    .iter()
                    .find(|l| l.name == name)
                    .map(|l| Answer::Index(l.index))
                    .unwrap_or(Answer::Absent));
            }
            VmRequest::Link(request) => self.link(request)?,
            VmRequest::Launch { vm, argv } => {
                // QEMU creates a tap it is told to open and does not find: unmarked and
                // on no bridge. The driver must never let that happen.
                // gitvisor-vmm's `--net tap=NAME` does the same.
                for value in argv.iter() {
                    let options = value
                        .strip_prefix("tap,")
                        .map(|rest| (rest, "ifname="))
                        .or_else(|| {
                            value
                                .starts_with("tap=")
                                .then_some((value.as_str(), "tap="))
                        });
                    if let Some((options, key)) = options
                        && let Some(name) = options
                            .split(',')
                            .find_map(|option| option.strip_prefix(key))
                        && !self.links.iter().any(|l| l.name == name)
                    {
                        let index = self.next_index();
                        let mut created = tap(index, name);
                        created.up = true;
                        self.links.push(created);
                    }
                }
                // gitvisor-vmm makes its kernel cache directory and fills it at the start.
                let cache = argv
                    .iter()
                    .position(|arg| arg == "--kernel-cache")
                    .and_then(|at| argv.get(at + 1));
                // QEMU opens the kernel, initrd, images and ISO it is given; one that is
                // not there fails the launch.
                if let Some(missing) = argv
                    .iter()
                    .filter(|arg| Some(*arg) != cache)
                    .find_map(|arg| self.missing_file(arg))
                {
                    return Err(refused(&format!(
                        "could not open {}: No such file or directory",
                        missing.display()
                    )));
                }
                let cache = cache
                    .and_then(|path| Path::new(path).file_name())
                    .map(|name| name.to_string_lossy().into_owned());
                let pid = self.next_pid;
                let dir = self.dir_mut(&vm)?;
                if dir.process.is_some() {
                    return Err(refused("Cannot lock pid file"));
                }

                dir.process = Some(FakeProcess {
                    pid,
                    paused: argv.iter().any(|a| a == "-S"),
                    argv,
                    started: SystemTime::now(),
                });
                self.next_pid += 1;
                self.kernel_caches.extend(cache);
            }
            VmRequest::Control {
                vm,
                command,
                hypervisor,
            } => {
                if hypervisor == Hypervisor::Builtin
                    && matches!(command, Control::Pause | Control::Resume)
                {
                    return Err(refused("gitvisor-vmm cannot pause a guest"));
                }
                let ignores = self.ignores_powerdown;
                let dir = self.dir_mut(&vm)?;
                let Some(process) = dir.process.as_mut() else {
                    return Err(HostError::new(
                        "QMP: cannot connect: Connection refused",
                        FailureClass::Transient,
                    ));
                };
                match command {
                    Control::Powerdown if !ignores && !process.paused => dir.process = None,
                    Control::Powerdown => {}
                    Control::Pause => process.paused = true,
                    Control::Resume => process.paused = false,
                    Control::Quit => dir.process = None,
                }
            }
            VmRequest::WaitExit { vm, pid, .. } => {
                let running = self
                    .dirs
                    .get(&vm)
                    .and_then(|d| d.process.as_ref())
                    .is_some_and(|p| p.pid == pid);
                return Ok(Answer::Exited(!running));
            }
            VmRequest::Kill { vm, pid } => {
                if let Some(dir) = self.dirs.get_mut(&vm)
                    && dir.process.as_ref().is_some_and(|p| p.pid == pid)
                {
                    dir.process = None;
                }
            }
        }
        Ok(Answer::Done)
    }

    /// A host file an argument names (`/path`, or `file=/path,…` as in `-drive`) that is
    /// not on this host. Run-dir files and device nodes are the driver's own; a file of a
    /// VM's data dir (`…/vm/<name>/<file>`) is there when that data dir holds it.
    fn missing_file(&self, arg: &str) -> Option<PathBuf> {
        let path = arg
            .split(',')
            .find_map(|option| option.strip_prefix("file="))
            .unwrap_or(arg);
        let path = Path::new(path);
        let host_file = path.is_absolute()
            && !path.starts_with("/dev")
            && !path.starts_with("/run")
            && !path.starts_with("/usr")
            && path.components().count() > 2;
        (host_file && !self.files.contains_key(path) && !self.in_data_dir(path))
            .then(|| path.to_owned())
    }

    /// Whether `path` names a file a VM's data dir holds.
    fn in_data_dir(&self, path: &Path) -> bool {
        let (Some(file), Some(dir)) = (path.file_name(), path.parent()) else {
            return false;
        };
        let under_data_root = dir
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|root| root == super::paths::DATA_SUBDIR);
        under_data_root
            && dir
                .file_name()
                .and_then(|vm| self.data.get(vm.to_str()?))
                .is_some_and(|files| files.keys().any(|name| file == *name))
    }

    fn link(&mut self, request: LinkRequest) -> Result<(), HostError> {
        match request {
            LinkRequest::SetAlias { index, alias } => {
                self.link_mut(index)?.alias = Some(alias);
            }
            LinkRequest::SetName { index, name } => {
                if self
                    .links
                    .iter()
                    .any(|l| l.name == name && l.index != index)
                {
                    return Err(HostError::new("File exists", FailureClass::Transient));
                }
                let link = self.link_mut(index)?;
                if link.up {
                    return Err(HostError::new(
                        "Device or resource busy",
                        FailureClass::Transient,
                    ));
                }
                link.name = name;
            }
            LinkRequest::SetMaster { port_index, master } => {
                if let Some(master) = master
                    && !self
                        .links
                        .iter()
                        .any(|l| l.index == master && l.is_bridge())
                {
                    return Err(HostError::new("No such device", FailureClass::Transient));
                }
                vlan_port::fake_enslave(self.link_mut(port_index)?, master, true);
            }
            request @ (LinkRequest::AddBridgeVlan { .. } | LinkRequest::DelBridgeVlan { .. }) => {
                if let Some(result) = vlan_port::fake_apply(&mut self.links, &request) {
                    result?;
                }
            }
            LinkRequest::SetUp { index, up } => self.link_mut(index)?.up = up,
            LinkRequest::DeleteLink { index } => self.links.retain(|l| l.index != index),
            other => return Err(refused(&format!("the VM driver never sends {other:?}"))),
        }
        Ok(())
    }
}

#[async_trait]
impl VmHost for FakeHost {
    async fn observe(&self) -> Result<HostSnapshot, HostError> {
        let mut state = self.lock();
        state.observes += 1;
        let run_dirs = state
            .dirs
            .iter()
            .map(|(name, dir)| RunDir {
                name: name.clone(),
                record: dir.record.clone(),
                process: dir.process.as_ref().map(|p| Process {
                    pid: p.pid,
                    argv: p.argv.clone(),
                    started: Some(p.started),
                }),
                status: dir.process.as_ref().map(|p| {
                    Ok(if p.paused {
                        GuestStatus::Paused
                    } else {
                        GuestStatus::Running
                    })
                }),
                console: dir.files.get(SERIAL_LOG_FILE).map(|bytes| ConsoleTail {
                    size: bytes.len() as u64,
                    tail: String::from_utf8_lossy(bytes).into_owned(),
                }),
            })
            .collect();
        Ok(HostSnapshot {
            run_dirs,
            data_dirs: state.data.keys().cloned().collect(),
            kernel_caches: state.kernel_caches.iter().cloned().collect(),
            links: state.links.clone(),
            leases: state.leases.clone(),
            facts: state.facts.clone(),
        })
    }

    async fn inspect(&self, paths: Vec<PathBuf>) -> Result<FileFacts, HostError> {
        let state = self.lock();
        Ok(paths
            .into_iter()
            .map(|path| {
                let fact = state.files.get(&path).cloned().unwrap_or(FileFact::Missing);
                (path, fact)
            })
            .collect())
    }

    async fn send(&self, request: VmRequest) -> Result<Answer, HostError> {
        let mut state = self.lock();
        state.requests.push(request.clone());
        for hook in &state.hooks {
            hook(&request);
        }
        if let Some((_, error)) = state.failures.iter().find(|(matches, _)| matches(&request)) {
            return Err(error.clone());
        }
        state.apply(request)
    }
}
