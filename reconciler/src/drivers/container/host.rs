//! [`RuncHost`]: the real [`ContainerHost`]: runc under gitvisor's runtime root, the image
//! store, overlayfs, netlink, and one supervisor process ([`shim`](super::shim)) per
//! container.
//!
//! ```text
//! <run-dir>/runc/                   runc's state root (`runc --root`): gitvisor's marker
//! <run-dir>/containers/<id>/        the bundle: config.json, rootfs/ (the overlay mount),
//!                                   hosts, hostname and resolv.conf (bind-mounted on
//!                                   the container's /etc), pid, runc.log, shim.log, and
//!                                   what the supervisor and
//!                                   gitvisor record: supervisor.pid, exit.json,
//!                                   health.json, health-check.pid, restarts, stopped
//!                                   (gitvisor stopped it), managed (the intent marker:
//!                                   the container's name, written before anything else),
//!                                   image.json (the image mounted: what image GC keeps)
//! <state-dir>/containers/images/    the image store
//! <state-dir>/containers/rw/<id>/   the writable layer (upper, work)
//! <state-dir>/containers/logs/      the log files
//! ```
//!
//! Blocking work (imports, mounts, file writes) runs on Tokio's blocking pool; runc runs
//! as a child process with a timeout; netlink shares one socket, opened on first use.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::io::AsyncBufReadExt;
use tokio::sync::OnceCell;

use super::bundle;
use super::cgroup;
use super::etc_files;
use super::image::{self, ImageStore};
use super::logs;
use super::network;
use super::rootfs;
use super::runc::{Runc, runc_message};
use super::seam::{
    Answer, ContainerConfig, ContainerHost, ExitRecord, HealthRecord, HostError, HostRequest,
    Limits, RuntimeContainer, RuntimeStatus,
};
use super::shim;
use crate::model::Vlan;

/// The runtime and the directories of one gitvisor.
pub struct RuncHost {
    runc: Runc,
    bundles: PathBuf,
    writable: PathBuf,
    logs: PathBuf,
    store: ImageStore,
    /// The program run as each container's supervisor (`gitvisor container-shim`).
    shim_binary: Option<PathBuf>,
    netlink: OnceCell<(rtnetlink::Handle, tokio::task::JoinHandle<()>)>,
}

impl std::fmt::Debug for RuncHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuncHost")
            .field("root", &self.runc.root)
            .field("bundles", &self.bundles)
            .finish_non_exhaustive()
    }
}

/// gitvisor's runtime root under the run dir (`runc --root <run-dir>/runc`).
pub const RUNTIME_ROOT_SUBDIR: &str = "runc";

/// File names in a bundle.
pub const EXIT_FILE: &str = "exit.json";
pub const HEALTH_FILE: &str = "health.json";
/// The exit before the last restart, kept for `status`.
const LAST_EXIT_FILE: &str = "last-exit.json";
pub const RESTARTS_FILE: &str = "restarts";
pub const STOPPED_FILE: &str = "stopped";
pub const PID_FILE: &str = "pid";
/// The intent marker: written (holding the container's name) before anything else of a
/// create, so a create that fails before or in `runc create` (which the runtime then
/// never lists) is still found, as [`RuntimeStatus::NotCreated`], and cleaned on prune.
pub const INTENT_FILE: &str = "managed";

/// The host's resolver configuration, and systemd-resolved's list of the upstream
/// servers behind its stub ([`etc_files`]).
const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";
const SYSTEMD_UPSTREAM_RESOLV_CONF: &str = "/run/systemd/resolve/resolv.conf";

impl RuncHost {
    pub fn new(run_dir: &Path, state_dir: &Path) -> Self {
        let containers = state_dir.join("containers");
        let mut runc = Runc::new(run_dir.join(RUNTIME_ROOT_SUBDIR));
        runc.binary = pick_runtime();
        RuncHost {
            runc,
            bundles: run_dir.join("containers"),
            writable: containers.join("rw"),
            logs: containers.join("logs"),
            store: ImageStore::configured(containers.join("images")),
            shim_binary: std::env::current_exe().ok(),
            netlink: OnceCell::new(),
        }
    }

    /// Runs `binary` as the supervisor (tests point it at the built `gitvisor`).
    pub fn with_shim_binary(mut self, binary: impl Into<PathBuf>) -> Self {
        self.shim_binary = Some(binary.into());
        self
    }

    /// Another runc binary than `runc` on `PATH`.
    pub fn with_runc_binary(mut self, binary: impl Into<PathBuf>) -> Self {
        self.runc.binary = binary.into();
        self
    }

    pub fn runc(&self) -> &Runc {
        &self.runc
    }

    pub fn store(&self) -> &ImageStore {
        &self.store
    }

    /// Collects the image store: removes what no container on this host uses
    /// ([`image::gc`]); blocking.
    pub fn prune_images(
        &self,
        policy: image::gc::Policy,
        dry_run: bool,
    ) -> Result<image::gc::Report, image::gc::GcError> {
        image::gc::collect(
            self.store.root(),
            &self.bundles,
            policy,
            dry_run,
            SystemTime::now(),
        )
    }

    pub fn bundle(&self, id: &str) -> PathBuf {
        self.bundles.join(id)
    }

    fn writable_layer(&self, id: &str) -> PathBuf {
        self.writable.join(id)
    }

    fn layout(&self) -> Layout {
        Layout {
            bundles: self.bundles.clone(),
            writable: self.writable.clone(),
            logs: self.logs.clone(),
            runtime_root: self.runc.root.clone(),
        }
    }

    async fn netlink(&self) -> Result<&rtnetlink::Handle, HostError> {
        let (handle, _) = self
            .netlink
            .get_or_try_init(|| async {
                let (connection, handle, _) = rtnetlink::new_connection().map_err(
                    HostError::io("open a netlink socket for", "container networking"),
                )?;
                Ok::<_, HostError>((handle, tokio::spawn(connection)))
            })
            .await?;
        Ok(handle)
    }
}

/// Where a container's files go, cheap to move onto the blocking pool.
struct Layout {
    bundles: PathBuf,
    writable: PathBuf,
    logs: PathBuf,
    runtime_root: PathBuf,
}

impl Layout {
    /// Makes the bundle and the root file system; blocking.
    fn prepare_bundle(
        &self,
        config: &ContainerConfig,
        image: &image::PreparedImage,
        keep_writable_layer: bool,
    ) -> Result<(), HostError> {
        let bundle = self.bundles.join(&config.id);
        let rootfs_dir = bundle.join("rootfs");
        let writable = self.writable.join(&config.id);
        let restarts = read_number(&bundle.join(RESTARTS_FILE));
        if !keep_writable_layer {
            rootfs::unmount(&rootfs_dir)?;
            remove_dir(&bundle)?;
            remove_dir(&writable)?;
        }
        let (upper, work) = (writable.join("upper"), writable.join("work"));
        // Modes set, not left to the caller's umask: under `umask 077` the upper
        // directory (the container's `/`, as overlayfs shows it) would shut a non-root
        // container out of its own root file system. The intent marker goes in first.
        make_dir(&bundle, PRIVATE_DIR)?;
        write_file(&bundle.join(INTENT_FILE), config.id.as_bytes())?;
        for (dir, mode) in [
            (&rootfs_dir, PUBLIC_DIR),
            (&writable, PRIVATE_DIR),
            (&upper, PUBLIC_DIR),
            (&work, PRIVATE_DIR),
            (&self.logs, PRIVATE_DIR),
        ] {
            make_dir(dir, mode)?;
        }
        if keep_writable_layer && bundle.join(EXIT_FILE).exists() {
            fs::rename(bundle.join(EXIT_FILE), bundle.join(LAST_EXIT_FILE))
                .map_err(HostError::io("keep the last exit record in", &bundle))?;
        }
        for stale in [
            EXIT_FILE,
            HEALTH_FILE,
            STOPPED_FILE,
            PID_FILE,
            shim::SUPERVISOR_PID_FILE,
        ] {
            remove_file(&bundle.join(stale))?;
        }
        let restarts = if keep_writable_layer { restarts + 1 } else { 0 };
        write_file(&bundle.join(RESTARTS_FILE), restarts.to_string().as_bytes())?;
        write_file(
            &bundle.join(image::gc::BUNDLE_IMAGE_FILE),
            &serde_json::to_vec(image).map_err(|e| {
                HostError::Unexpected(format!("cannot record the container's image: {e}"))
            })?,
        )?;
        if let Some(gone) = image.lowers.iter().find(|lower| !lower.is_dir()) {
            return Err(HostError::Unexpected(format!(
                "the image's layer {} was removed (an image prune ran after the import); the next apply imports the image again",
                gone.display()
            )));
        }
        rootfs::mount_overlay(&image.lowers, &upper, &work, &rootfs_dir)?;
        let user = rootfs::resolve_user(&rootfs_dir, config.user.as_deref())?;
        let cgroup = bundle::cgroup_path(&self.runtime_root, &config.id);
        // Readable by every user of the container (the mounted file keeps its mode).
        for (file, content) in config.etc_files.by_bundle_name() {
            write_file_mode(&bundle.join(file), content.as_bytes(), PUBLIC_FILE)?;
        }
        let spec = bundle::render(config, user, &cgroup, &bundle).map_err(HostError::Invalid)?;
        let json = serde_json::to_vec_pretty(&spec)
            .map_err(|e| HostError::Unexpected(format!("cannot write config.json: {e}")))?;
        write_file(&bundle.join("config.json"), &json)?;
        let health = match &config.health {
            Some(health) => serde_json::to_vec(health).map_err(|e| {
                HostError::Unexpected(format!("cannot write the health check: {e}"))
            })?,
            None => Vec::new(),
        };
        write_file(&bundle.join(shim::HEALTH_CONFIG_FILE), &health)?;
        Ok(())
    }
}

impl RuncHost {
    /// Starts the container's supervisor, which runs `runc create`; answers the
    /// container's init pid once it is created.
    async fn create(&self, id: &str, start: bool) -> Result<u32, HostError> {
        let bundle = self.bundle(id);
        let Some(binary) = &self.shim_binary else {
            return Err(HostError::Unexpected(
                "cannot find the gitvisor binary to run as the container's supervisor".into(),
            ));
        };
        let shim_log = bundle.join("shim.log");
        let stderr = fs::File::create(&shim_log).map_err(HostError::io("create", &shim_log))?;
        let mut command = tokio::process::Command::new(binary);
        command
            .arg("container-shim")
            .arg("--runc")
            .arg(&self.runc.binary)
            .arg("--root")
            .arg(&self.runc.root)
            .arg("--bundle")
            .arg(&bundle)
            .arg("--log")
            .arg(logs::log_file(&self.logs, id))
            .arg("--id")
            .arg(id)
            .arg("--parent")
            .arg(std::process::id().to_string())
            .args(start.then_some("--start"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            // It makes a session of its own (no signal meant for gitvisor's process group
            // reaches it) and outlives gitvisor by design.
            .stderr(stderr);
        // Neither it nor the runc it runs is systemd's service (see the list).
        for variable in super::runc::SERVICE_VARIABLES {
            command.env_remove(variable);
        }
        let mut child = command.spawn().map_err(|source| HostError::Spawn {
            program: binary.display().to_string(),
            source,
        })?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| HostError::Unexpected("the supervisor has no stdout".into()))?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = tokio::time::timeout(super::runc::RUNC_TIMEOUT, lines.next_line())
            .await
            .map_err(|_| HostError::Timeout {
                program: "gitvisor container-shim".into(),
                args: format!("(runc create {id})"),
                after: super::runc::RUNC_TIMEOUT,
            })?
            .map_err(HostError::io("read the supervisor's answer for", &bundle))?;
        // The supervisor lives on by itself; tokio must not wait for it.
        drop(child);
        match line.as_deref().and_then(shim::parse_answer) {
            Some(Ok(pid)) => Ok(pid),
            Some(Err(message)) => Err(HostError::Command {
                program: self.runc.binary.display().to_string(),
                args: format!("{} {id}", if start { "run" } else { "create" }),
                status: "failed".into(),
                stderr: message,
            }),
            None => {
                let log = fs::read_to_string(&shim_log).unwrap_or_default();
                Err(HostError::Unexpected(format!(
                    "the container's supervisor ended without creating it: {}",
                    runc_message(&log)
                )))
            }
        }
    }

    /// The bundle and root file system, then the supervisor's `runc create`.
    async fn prepare_and_create(
        &self,
        config: &ContainerConfig,
        image: &image::PreparedImage,
        keep_writable_layer: bool,
        start: bool,
    ) -> Result<u32, HostError> {
        let id = config.id.as_str();
        let prepare = || {
            let (layout, config, image) = (self.layout(), config.clone(), image.clone());
            blocking(move || layout.prepare_bundle(&config, &image, keep_writable_layer))
        };
        let began = std::time::Instant::now();
        prepare().await?;
        tracing::debug!(container = %id, elapsed = ?began.elapsed(), "bundle and root file system ready");
        let created = self.create(id, start).await;
        tracing::debug!(container = %id, elapsed = ?began.elapsed(), "the supervisor answered");
        match created {
            Err(HostError::Command { stderr, .. }) if stderr.contains("already exists") => {
                // The runtime has the id although the plan did not see it: what a
                // gitvisor killed during its create left. Cleared (when it is
                // gitvisor's), then the create runs again on a fresh bundle.
                self.clear_interrupted_create(id).await?;
                prepare().await?;
                self.create(id, start).await
            }
            other => other,
        }
    }

    /// A container the plan did not see but the runtime has now, with gitvisor's marker
    /// for this id: what a gitvisor killed during its create left behind (runc
    /// finished the create after it). Removed, so the create can run again.
    async fn clear_interrupted_create(&self, id: &str) -> Result<(), HostError> {
        let stdout = match self.runc.run(["state", id]).await {
            Ok(stdout) => stdout,
            Err(HostError::Command { stderr, .. }) if stderr.contains("does not exist") => {
                return Ok(());
            }
            Err(error) => return Err(error),
        };
        let state: super::runc::ListEntry = serde_json::from_str(&stdout).map_err(|e| {
            HostError::Unexpected(format!("runc state printed what is not its JSON: {e}"))
        })?;
        let ours = state
            .annotations
            .as_ref()
            .and_then(|a| a.get(super::seam::MANAGED_ANNOTATION))
            .is_some_and(|name| name == id);
        if !ours {
            return Err(HostError::Invalid(format!(
                "a container {id} without gitvisor's marker appeared under gitvisor's runtime root; remove it (runc --root {} delete --force {id})",
                self.runc.root.display()
            )));
        }
        tracing::info!(container = id, "removing what an interrupted create left");
        self.runc.delete(id).await
    }

    /// SIGTERM, then SIGKILL after `grace`; waits for the process to be gone.
    async fn stop(&self, id: &str, grace: Duration) -> Result<(), HostError> {
        let bundle = self.bundle(id);
        if bundle.is_dir() {
            write_file(&bundle.join(STOPPED_FILE), b"")?;
        }
        if !self.running(id).await? {
            return Ok(());
        }
        self.runc.kill(id, "TERM").await?;
        if self.wait_stopped(id, grace).await? {
            return Ok(());
        }
        self.runc.kill(id, "KILL").await?;
        if self.wait_stopped(id, Duration::from_secs(10)).await? {
            Ok(())
        } else {
            Err(HostError::Unexpected(format!(
                "container {id} still runs 10s after SIGKILL"
            )))
        }
    }

    async fn running(&self, id: &str) -> Result<bool, HostError> {
        Ok(matches!(
            self.runc.status(id).await?,
            Some(RuntimeStatus::Running | RuntimeStatus::Paused | RuntimeStatus::Created)
        ))
    }

    async fn wait_stopped(&self, id: &str, within: Duration) -> Result<bool, HostError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if !self.running(id).await? {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn update(&self, id: &str, limits: Limits) -> Result<(), HostError> {
        let memory = limits
            .memory
            .map(|m| m.to_string())
            .unwrap_or_else(|| "-1".into());
        let quota = limits
            .cpus
            .map(|c| bundle::cpu_quota(c).to_string())
            .unwrap_or_else(|| "-1".into());
        let pids = limits
            .pids
            .map(|p| p.to_string())
            .unwrap_or_else(|| "-1".into());
        let period = bundle::CPU_PERIOD_US.to_string();
        self.runc
            .run([
                "update",
                "--memory",
                &memory,
                "--cpu-period",
                &period,
                "--cpu-quota",
                &quota,
                "--pids-limit",
                &pids,
                id,
            ])
            .await
            .map(drop)
    }

    async fn remove(&self, id: &str, veth: Option<&str>, logs: bool) -> Result<(), HostError> {
        self.runc.delete(id).await?;
        let bundle = self.bundle(id);
        let writable = self.writable_layer(id);
        let log = logs.then(|| self.log_path(id));
        let group = bundle::cgroup_path(&self.runc.root, id);
        blocking(move || {
            cgroup::remove_dirs(&group);
            rootfs::unmount(&bundle.join("rootfs"))?;
            remove_dir(&bundle)?;
            remove_dir(&writable)?;
            match log {
                Some(log) => logs::remove(&log).map_err(HostError::io("remove the log files", log)),
                None => Ok(()),
            }
        })
        .await?;
        if let Some(veth) = veth {
            let alias = super::observed::veth_alias(id);
            let handle = self.netlink().await?;
            network::remove_leftover(handle, veth, &alias).await?;
            network::remove_leftover(handle, &network::peer_name(veth), &alias).await?;
        }
        Ok(())
    }
}

/// The OCI runtime to use: `GITVISOR_OCI_RUNTIME` (a name on `PATH` or a path) when set;
/// else `runc` when installed; else `crun` on a host with cgroup v2 only (crun refuses
/// hybrid layouts); else `runc` (whose absence the first create reports).
pub fn pick_runtime() -> PathBuf {
    if let Some(chosen) = std::env::var_os("GITVISOR_OCI_RUNTIME").filter(|v| !v.is_empty()) {
        return PathBuf::from(chosen);
    }
    let on_path = |name: &str| {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
    };
    if !on_path("runc")
        && on_path("crun")
        && super::probe::cgroup_layout() == Some(super::probe::CgroupLayout::Unified)
    {
        return PathBuf::from("crun");
    }
    PathBuf::from("runc")
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, HostError> + Send + 'static,
) -> Result<T, HostError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| HostError::Unexpected(format!("a blocking task failed: {e}")))?
}

fn read_number(path: &Path) -> u32 {
    fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// A directory only gitvisor (root) reads: bundles, writable layers, logs.
const PRIVATE_DIR: u32 = 0o700;
/// A directory the container's users see (its root): `rwxr-xr-x`, as images have `/`.
const PUBLIC_DIR: u32 = 0o755;
/// A file the container's users read (`/etc/hosts`, `/etc/resolv.conf`).
const PUBLIC_FILE: u32 = 0o644;

/// Creates `dir` (and its parents) with `mode` whatever the umask; an existing one is
/// left as it is (a kept writable layer's `/` keeps what the container made of it).
fn make_dir(dir: &Path, mode: u32) -> Result<(), HostError> {
    use std::os::unix::fs::PermissionsExt;
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(HostError::io("create", dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
        .map_err(HostError::io("set the mode of", dir))
}

/// [`write_file`] with `mode`, whatever the umask.
fn write_file_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), HostError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("/"));
    let mut file =
        tempfile::NamedTempFile::new_in(dir).map_err(HostError::io("create a file in", dir))?;
    std::io::Write::write_all(&mut file, bytes).map_err(HostError::io("write", path))?;
    file.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .map_err(HostError::io("set the mode of", path))?;
    file.persist(path)
        .map_err(|e| HostError::io("write", path)(e.error))?;
    Ok(())
}

/// Rewrites the file at `path` in place: the same inode, so a bind mount of it (the
/// container's `/etc/resolv.conf`) shows the new text. A rename would leave the mount
/// on the old file. The file must be there: it is the container's.
fn rewrite_in_place(path: &Path, bytes: &[u8]) -> Result<(), HostError> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(HostError::io("open", path))?;
    std::io::Write::write_all(&mut file, bytes).map_err(HostError::io("write", path))?;
    file.sync_all().map_err(HostError::io("write", path))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), HostError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let mut file =
        tempfile::NamedTempFile::new_in(dir).map_err(HostError::io("create a file in", dir))?;
    std::io::Write::write_all(&mut file, bytes).map_err(HostError::io("write", path))?;
    file.persist(path)
        .map_err(|e| HostError::io("write", path)(e.error))?;
    Ok(())
}

fn remove_file(path: &Path) -> Result<(), HostError> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(HostError::io("remove", path)(error))
        }
        _ => Ok(()),
    }
}

fn remove_dir(path: &Path) -> Result<(), HostError> {
    match fs::remove_dir_all(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(HostError::io("remove", path)(error))
        }
        _ => Ok(()),
    }
}

/// The bundles under `bundles` that carry gitvisor's intent marker for their own name but
/// that the runtime did not list (`listed`): creates that failed. Blocking.
fn not_created(
    bundles: &Path,
    listed: &std::collections::BTreeSet<String>,
) -> Vec<RuntimeContainer> {
    let Ok(entries) = fs::read_dir(bundles) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let id = entry.file_name().to_str()?.to_owned();
            let marker = fs::read_to_string(entry.path().join(INTENT_FILE)).ok()?;
            (marker.trim() == id && !listed.contains(&id))
                .then(|| RuntimeContainer::not_created(&id))
        })
        .collect()
}

/// What the files of one bundle say; blocking.
fn read_records(
    bundle: &Path,
    live: bool,
) -> (Option<ExitRecord>, Option<HealthRecord>, u32, bool) {
    // A stopped container's own exit; a live one's exit before its last restart.
    let exit_file = if live { LAST_EXIT_FILE } else { EXIT_FILE };
    let exit = fs::read(bundle.join(exit_file))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let health = fs::read(bundle.join(HEALTH_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    (
        exit,
        health,
        read_number(&bundle.join(RESTARTS_FILE)),
        bundle.join(STOPPED_FILE).exists(),
    )
}

#[async_trait]
impl ContainerHost for RuncHost {
    async fn missing_images(
        &self,
        images: Vec<String>,
    ) -> Result<std::collections::BTreeSet<String>, HostError> {
        blocking(move || {
            Ok(images
                .into_iter()
                .filter(|text| {
                    matches!(
                        image::ImageRef::parse(text),
                        Ok(image::ImageRef::Local { path, .. }) if !path.exists()
                    )
                })
                .collect())
        })
        .await
    }

    async fn list(&self) -> Result<Vec<RuntimeContainer>, HostError> {
        let entries = self.runc.list().await?;
        let bundles: Vec<PathBuf> = entries.iter().map(|e| self.bundle(&e.id)).collect();
        let root = self.runc.root.clone();
        let bundles_dir = self.bundles.clone();
        blocking(move || {
            let listed: std::collections::BTreeSet<String> =
                entries.iter().map(|e| e.id.clone()).collect();
            let not_created = not_created(&bundles_dir, &listed);
            Ok(entries
                .into_iter()
                .zip(bundles)
                .map(|(entry, bundle)| {
                    let status = entry.status().unwrap_or(RuntimeStatus::Creating);
                    let live = matches!(
                        status,
                        RuntimeStatus::Running | RuntimeStatus::Paused | RuntimeStatus::Created
                    );
                    let (exit, health, restarts, stopped) = read_records(&bundle, live);
                    let resolv_conf =
                        fs::read_to_string(bundle.join(etc_files::RESOLV_CONF_FILE)).ok();
                    let started = fs::metadata(bundle.join(PID_FILE))
                        .and_then(|m| m.modified())
                        .ok()
                        .filter(|_| live);
                    RuntimeContainer {
                        limits: if live {
                            cgroup::limits(&bundle::cgroup_path(&root, &entry.id))
                        } else {
                            None
                        },
                        id: entry.id,
                        status,
                        pid: (entry.pid > 0).then_some(entry.pid),
                        annotations: entry.annotations.unwrap_or_default(),
                        exit,
                        health,
                        restarts,
                        started,
                        stopped_by_gitvisor: stopped && !live,
                        resolv_conf,
                    }
                })
                .chain(not_created)
                .collect())
        })
        .await
    }

    async fn port_vlans(&self) -> Result<BTreeMap<String, Vec<Vlan>>, HostError> {
        network::port_vlans(self.netlink().await?).await
    }

    async fn host_resolver(&self) -> Result<String, HostError> {
        blocking(|| {
            let read = |path: &str| match fs::read_to_string(path) {
                Ok(text) => Ok(Some(text)),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(error) => Err(HostError::io("read", path)(error)),
            };
            let etc = read(HOST_RESOLV_CONF)?.unwrap_or_default();
            let upstream = read(SYSTEMD_UPSTREAM_RESOLV_CONF)?;
            Ok(etc_files::host_resolver_text(&etc, upstream.as_deref()))
        })
        .await
    }

    async fn send(&self, request: HostRequest) -> Result<Answer, HostError> {
        match request {
            HostRequest::PrepareImage { image } => {
                // Dropping this future (the step cancelled or abandoned) gives the import
                // up at its next read, so its blocking thread does not outlive the step.
                let abandon = image::abandon::Abandon::new();
                let _abandon_on_drop = abandon.on_drop();
                let store = self.store.abandoned_by(&abandon);
                let prepared = blocking(move || Ok(image::prepare(&store, &image)?)).await?;
                Ok(Answer::Image(prepared))
            }
            HostRequest::Create {
                config,
                image,
                keep_writable_layer,
                start,
            } => {
                let id = config.id.clone();
                let created = self.prepare_and_create(&config, &image, keep_writable_layer, start);
                match created.await {
                    Ok(pid) => Ok(Answer::Pid(pid)),
                    // runc may still be creating it from the mounted root file system.
                    Err(error @ HostError::Timeout { .. }) => Err(error),
                    Err(error) => {
                        // No container uses the root file system: a failed create leaves
                        // nothing mounted (the next create mounts it again).
                        let rootfs_dir = self.bundle(&id).join("rootfs");
                        if let Err(leftover) = blocking(move || rootfs::unmount(&rootfs_dir)).await
                        {
                            tracing::warn!(container = %id, "after a failed create: {leftover}");
                        }
                        Err(error)
                    }
                }
            }
            HostRequest::Connect { pid, veth, .. } => {
                let handle = self.netlink().await?;
                network::connect(handle, pid, veth.as_ref()).await?;
                Ok(Answer::Done)
            }
            HostRequest::Start { id } => {
                self.runc.start(&id).await?;
                Ok(Answer::Done)
            }
            HostRequest::Stop { id, grace } => {
                self.stop(&id, grace).await?;
                Ok(Answer::Done)
            }
            HostRequest::Delete { id } => {
                self.runc.delete(&id).await?;
                Ok(Answer::Done)
            }
            HostRequest::Remove { id, veth, logs } => {
                self.remove(&id, veth.as_deref(), logs).await?;
                Ok(Answer::Done)
            }
            HostRequest::Update { id, limits } => {
                self.update(&id, limits).await?;
                Ok(Answer::Done)
            }
            HostRequest::WriteResolvConf { id, content } => {
                let path = self.bundle(&id).join(etc_files::RESOLV_CONF_FILE);
                blocking(move || rewrite_in_place(&path, content.as_bytes())).await?;
                Ok(Answer::Done)
            }
            HostRequest::SetVlans { id, veth, vlans } => {
                let handle = self.netlink().await?;
                let alias = super::observed::veth_alias(&id);
                network::set_vlans(handle, &veth, &alias, &vlans).await?;
                Ok(Answer::Done)
            }
        }
    }

    fn log_path(&self, id: &str) -> PathBuf {
        logs::log_file(&self.logs, id)
    }
}

/// When `time` was, for status lines.
pub fn since(time: SystemTime) -> Duration {
    SystemTime::now().duration_since(time).unwrap_or_default()
}
