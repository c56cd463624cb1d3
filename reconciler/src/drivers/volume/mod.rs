//! The Volume driver: LVM logical volumes through the lvm2 tools, and disk image files
//! in a directory (`spec.directory`, `docs/volumes.md`).
//!
//! File volumes have their own seam ([`FileSeam`], `files.rs`: the marker is a pair of
//! user xattrs, a file is written under a temporary name and published complete),
//! decision table (`file_diff.rs`) and apply (`file_apply.rs`); what follows describes
//! LVM volumes, and both share the spec, the plan's one batch per backing, the image
//! inspection, the ownership rules and the step budgets. lvm2 is needed only when an
//! LVM volume is declared or recorded.
//!
//! # Why it looks like this
//!
//! Volumes hold data, so the defaults protect it: pruning a Volume forgets it and leaves
//! the LV and its data (`reclaimPolicy: Retain`); growing is in place (the filesystem
//! gitvisor made grows too); shrinking is refused; what would recreate a volume (another
//! volume group, thin pool or filesystem) is refused unless `reclaimPolicy: Delete`.
//! The lvm2 tools are the interface, as Proxmox and Ansible use them: their JSON
//! reports to read, their commands to change, arguments as a vector (never a shell), and
//! names validated before they reach a command line (`validate`: LVM's characters and
//! reserved names; the manifest's name rules besides).
//!
//! # Ownership
//!
//! The marker is a pair of LV tags, `gitvisor:managed` and `gitvisor:id=Volume/NAME`,
//! put on by the same `lvcreate` that makes the LV, so no unmarked LV of gitvisor's ever
//! exists (`tags.rs`, which lists the other tags gitvisor keeps: reclaim policy,
//! filesystem made, `incomplete` while a creation writes, `grow-fs` while a grow is
//! under way). The rules are the shared ones of [`crate::contract::ownership`]: an LV is
//! gitvisor's when it carries the marker *and* the state store records it; anything else
//! under a declared name is a `Conflict` unless the manifest says
//! `gitvisor.dev/adopt: "true"`. The decision table is in `diff.rs`.
//!
//! # Order of steps
//!
//! 1. **plan**: [`LvmSeam::report`] once (one `vgs`, one `lvs`), index it
//!    (`observed.rs`); inspect the source images of volumes about to be created
//!    (`qemu-img info`, only for those); then per declared volume decide (`diff.rs`),
//!    spending each volume group's free extents across the plan so the third volume
//!    that does not fit is refused in the plan, not half-way through apply; add deletes
//!    for pruned volumes. Each change carries an [`ObservedVolume`] snapshot.
//! 2. **apply** (`apply.rs`): from that snapshot, without reading the host again:
//!    create (`lvcreate` with the tags) → write the image or make the filesystem → take
//!    `incomplete` off; updates send only what differs; deletes forget or remove.
//!
//! lvm2 missing from the host is an error of `plan` when Volumes are declared or
//! recorded, and nothing otherwise: a host without LVM can still run the other kinds.
//! A kernel without device-mapper (read with the report, `probe.rs`) makes every create,
//! replace or resize `Unsupported` in the plan, with the reason, the same verdict
//! `gitvisor doctor` gives; what needs no new mapping (no-ops, tags, forgetting) passes.
//!
//! # Watching
//!
//! Not watched ([`Driver::watch`]): LVM announces changes only through udev, which the
//! hosts and test guests gitvisor runs on may not have, and polling would mean one
//! `vgs` and one `lvs` (two processes, tens of milliseconds of CPU) every interval on a
//! controller that should cost nothing between events. It would buy little: what a poll
//! could find early (an LV removed, renamed or shrunk by hand) is data gone, which no
//! quick repair gives back; an LV created again empty is no better at once than at the
//! resync. So volumes are looked at by the resync (and every change of the revision),
//! and the driver keeps no observation cache: each plan reads the report.
//!
//! # Seam
//!
//! The host is reached only through [`LvmSeam`]: [`LvmTools`] for real, [`FakeLvm`]
//! (recording, in memory, behaving like lvm2) for tests. Other drivers find a Volume's
//! device through [`device::volume_device`].

mod apply;
pub mod device;
mod diff;
pub mod download;
mod drift;
mod error;
pub mod fake;
mod file_apply;
mod file_diff;
#[cfg(test)]
mod file_tests;
pub mod file_tools;
pub mod files;
mod kind;
pub mod lvm;
mod observed;
pub mod probe;
mod report;
pub mod seam;
pub mod share;
mod size;
mod spec;
mod tags;
#[cfg(test)]
mod tests;
pub(crate) mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::contract::{
    Action, Change, ContractViolation, DEFAULT_STEP_BUDGET, Driver, DriverError, PlanContext,
    StepContext, WatchSink, Watching,
};
use crate::model::{Kind, Resource};

pub use device::{device_path, volume_device};
pub use error::VolumeError;
pub use fake::FakeLvm;
pub use file_diff::ObservedFile;
pub use file_tools::FileTools;
pub use files::{FileSeam, FileState};
pub use kind::REGISTRATION;
pub use lvm::LvmTools;
pub use observed::ObservedVolume;
pub use seam::{ImageInfo, LvKind, LvState, LvmError, LvmReport, LvmRequest, LvmSeam, VgState};
pub use spec::{
    Backing, FileFormat, Filesystem, MAX_VOLUME_SIZE, ReclaimPolicy, VolumeSource, VolumeSpec,
};

/// How long writing a source image may take.
pub const IMAGE_STEP_BUDGET: Duration = Duration::from_secs(4 * 3600);
/// How long making a filesystem (or a create that makes one) may take.
pub const FILESYSTEM_STEP_BUDGET: Duration = Duration::from_secs(1800);

/// Plans and applies `kind: Volume` resources through an [`LvmSeam`].
#[derive(Clone)]
pub struct VolumeDriver {
    seam: Arc<dyn LvmSeam>,
    /// File volumes (`spec.directory`); `None`: this driver has none (LVM-only tests).
    files: Option<Arc<dyn FileSeam>>,
    /// Where images from a URL are cached (`<state>/images`); `None`: no URL sources.
    cache: Option<std::path::PathBuf>,
    /// gitvisor's state dir, under which an NfsMount without `spec.path` is mounted
    /// (where a `spec.nfs` volume's file lives: `share.rs`).
    state_dir: std::path::PathBuf,
}

/// A URL source's image, downloaded (or found in the cache) and inspected at apply.
#[derive(Debug, Clone)]
pub(crate) struct FetchedImage {
    pub path: std::path::PathBuf,
    pub info: ImageInfo,
}

impl std::fmt::Debug for VolumeDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeDriver").finish_non_exhaustive()
    }
}

impl VolumeDriver {
    /// A driver over any seam (a [`FakeLvm`] in tests).
    pub fn new(seam: Arc<dyn LvmSeam>) -> Self {
        VolumeDriver {
            seam,
            files: None,
            cache: None,
            state_dir: crate::drivers::nfs_mount::DEFAULT_STATE_DIR.into(),
        }
    }

    /// The same driver, finding default NfsMount paths under `state_dir`.
    pub fn with_state_dir(mut self, state_dir: std::path::PathBuf) -> Self {
        self.state_dir = state_dir;
        self
    }

    /// The same driver, caching images from a URL under `cache`.
    pub fn with_image_cache(mut self, cache: std::path::PathBuf) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The image of a URL source: from the cache, or downloaded into it (on a blocking
    /// thread, progress to the step, stopped when the step is), then inspected and
    /// checked against the volume's size.
    async fn fetch(
        &self,
        change: &Change,
        spec: &VolumeSpec,
        step: &StepContext,
    ) -> Result<Option<FetchedImage>, VolumeError> {
        let Some(VolumeSource::Url { url, sha256 }) = &spec.source else {
            return Ok(None);
        };
        let volume = change.id.name.to_string();
        let cache = self.cache.clone().ok_or(VolumeError::NoImageCache)?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let _stop_on_drop = download::StopOnDrop(Arc::clone(&stop));
        let (url_owned, digest) = (url.clone(), sha256.clone());
        let progress_step = step.clone();
        let transfer = tokio::task::spawn_blocking(move || {
            download::fetch(
                &cache,
                &url_owned,
                digest.as_deref(),
                &|message| {
                    tracing::info!("{message}");
                    progress_step.progress(message);
                },
                &stop,
            )
        });
        let path = step
            .wait(transfer)
            .await
            .map_err(|cause| VolumeError::Interrupted {
                volume: volume.clone(),
                operation: format!("download {url}"),
                cause,
            })?
            .map_err(|join| VolumeError::InvalidChange {
                volume: volume.clone(),
                reason: format!("the download task failed: {join}"),
            })?
            .map_err(|cause| VolumeError::Download {
                volume: volume.clone(),
                cause: Box::new(cause),
            })?;
        let info = self
            .seam
            .inspect_image(&path)
            .await
            .map_err(|cause| VolumeError::Request {
                volume: volume.clone(),
                operation: format!("inspect the image downloaded from {url}"),
                cause,
            })?;
        if info.virtual_size > spec.size.bytes() {
            return Err(VolumeError::ImageTooLarge {
                volume,
                url: url.clone(),
                image: info.virtual_size,
                size: spec.size.bytes(),
            });
        }
        Ok(Some(FetchedImage { path, info }))
    }

    /// The same driver, keeping file volumes through `files`.
    pub fn with_files(mut self, files: Arc<dyn FileSeam>) -> Self {
        self.files = Some(files);
        self
    }

    /// The registry's constructor: the lvm2 tools of this host. Connecting checks
    /// nothing (a host without lvm2 can run the other kinds); `plan` says when they are
    /// missing and Volumes need them.
    pub(crate) fn connect_driver(
        settings: &crate::drivers::HostSettings,
    ) -> Result<Box<dyn Driver>, DriverError> {
        Ok(Box::new(
            VolumeDriver::new(Arc::new(LvmTools::new()))
                .with_files(Arc::new(FileTools::new(settings.state_dir.clone())))
                .with_image_cache(settings.state_dir.join("images"))
                .with_state_dir(settings.state_dir.clone()),
        ))
    }
}

/// A change that needs the kernel's device-mapper (making an LV, or growing one) on a
/// host without it: refused in the plan with the reason, instead of failing in
/// `lvcreate` half-way through an apply. A creation already refused for another reason
/// (`absent`: no LV of that name yet) says device-mapper first, the root cause. Others
/// (no-ops, tag edits, forgetting, conflicts over existing LVs) pass unchanged.
fn without_device_mapper(change: Change, absent: bool, why: &str) -> Change {
    let needs_device_mapper = match change.action {
        Action::Create | Action::Replace => true,
        Action::Update => change.fields.iter().any(|field| field.path == "size"),
        Action::Conflict => absent,
        _ => false,
    };
    if !needs_device_mapper {
        return change;
    }
    let name = change.id.name.to_string();
    let mut refused = Change {
        action: Action::Unsupported,
        ..change
    };
    refused.reasons.insert(
        0,
        format!(
            "volume {name} cannot be created or resized on this host: {why}. Fix: {}; or remove the Volume from the revision",
            probe::DEVICE_MAPPER_FIX
        ),
    );
    refused
}

#[async_trait]
impl Driver for VolumeDriver {
    fn kind(&self) -> Kind {
        Kind::Volume
    }

    async fn plan(
        &self,
        desired: &[Arc<Resource>],
        context: &PlanContext,
    ) -> Result<Vec<Change>, DriverError> {
        let mut specs = Vec::with_capacity(desired.len());
        // Volumes that cannot be planned against the host: their NfsMount is not
        // declared, or their share does not answer. Refused, never pruned.
        let mut refused = Vec::new();
        for resource in desired {
            let Some(spec) = resource.spec.get::<VolumeSpec>() else {
                return Err(ContractViolation {
                    id: resource.id(),
                    message: "the volume driver was handed a resource of another kind".into(),
                }
                .into());
            };
            match share::on_share(spec, context, &self.state_dir) {
                Ok(spec) => specs.push((resource, spec)),
                Err(reason) => refused.push(
                    Change::new(resource.id(), Action::Conflict)
                        .with_desired(Arc::clone(resource))
                        .with_first_reason(format!("volume {}: {reason}", resource.metadata.name)),
                ),
            }
        }
        let is_file = |spec: &VolumeSpec| matches!(spec.backing(), Backing::File { .. });
        let directories: Vec<std::path::PathBuf> = specs
            .iter()
            .filter_map(|(_, spec)| match spec.backing() {
                Backing::File { directory, .. } => Some(std::path::PathBuf::from(directory)),
                Backing::Lvm { .. } => None,
            })
            .collect();
        let observation = match &self.files {
            Some(seam) => seam
                .observe(&directories)
                .await
                .map_err(|cause| VolumeError::ObserveFiles { cause })?,
            None if directories.is_empty() => files::FileObservation::default(),
            None => {
                return Err(VolumeError::NoFileVolumes.into());
            }
        };
        let files = observation.files;
        specs.retain(|(resource, spec)| {
            let Backing::File { directory, .. } = spec.backing() else {
                return true;
            };
            let Some(why) = observation.unreachable.get(Path::new(directory)) else {
                return true;
            };
            // The declared spec, not the resolved one: that says which share it is.
            let share = resource
                .spec
                .get::<VolumeSpec>()
                .and_then(|declared| declared.nfs.as_ref())
                .map(|mount| format!(" (the share of NfsMount/{mount})"))
                .unwrap_or_default();
            refused.push(
                Change::new(resource.id(), Action::Conflict)
                    .with_desired(Arc::clone(resource))
                    .with_first_reason(format!(
                        "volume {}: directory {directory}{share} is unreachable: {why}; gitvisor does not wait for it, and what does not use it carries on. Fix: bring the server (or the disk) back, then apply again",
                        resource.metadata.name
                    )),
            );
            false
        });
        let file_owners: BTreeSet<String> = files
            .iter()
            .filter_map(|f| {
                f.owner
                    .as_deref()?
                    .strip_prefix("Volume/")
                    .map(str::to_owned)
            })
            .collect();
        let host_files = file_diff::HostFiles::new(files);
        let declared: BTreeSet<&str> = desired
            .iter()
            .map(|resource| resource.metadata.name.as_str())
            .collect();

        let report = match self.seam.report().await {
            Ok(report) => report,
            Err(cause @ LvmError::NotInstalled { .. }) => {
                // Only LVM volumes need lvm2: declared ones, or recorded ones that are
                // neither declared nor found as files (to prune them).
                let lvm_declared = specs.iter().any(|(_, spec)| !is_file(spec));
                let lvm_recorded = context.owned.iter().any(|id| {
                    id.kind == Kind::Volume
                        && !declared.contains(id.name.as_str())
                        && !file_owners.contains(id.name.as_str())
                });
                if lvm_declared || lvm_recorded {
                    return Err(VolumeError::Lvm2Missing { cause }.into());
                }
                LvmReport::default()
            }
            Err(cause) => return Err(VolumeError::Observe { cause }.into()),
        };
        let no_device_mapper = report.no_device_mapper.clone();
        let host = observed::HostVolumes::new(report);

        // Decide once without images; inspect the images that creations need (only
        // those: `qemu-img info` per volume about to be written), then decide again.
        let mut images = BTreeMap::new();
        loop {
            let mut planning = diff::Planning {
                host: &host,
                context,
                images: &images,
                free: host.free_extents(),
                uninspected: BTreeSet::new(),
            };
            let mut file_uninspected = BTreeSet::new();
            let changes: Vec<Change> = specs
                .iter()
                .map(|(resource, spec)| {
                    if is_file(spec) {
                        return file_diff::declared(
                            resource,
                            spec,
                            &host_files,
                            context,
                            &images,
                            &mut file_uninspected,
                        );
                    }
                    let change = diff::declared(resource, spec, &mut planning);
                    match &no_device_mapper {
                        Some(why) => {
                            let absent = host
                                .lv(spec.lvm_group(), resource.metadata.name.as_str())
                                .is_none();
                            without_device_mapper(change, absent, why)
                        }
                        None => change,
                    }
                })
                .collect();
            let mut wanted = std::mem::take(&mut planning.uninspected);
            wanted.extend(file_uninspected);
            if wanted.is_empty() {
                let mut changes = changes;
                changes.append(&mut refused);
                changes.extend(diff::pruned(&declared, &planning));
                changes.extend(file_diff::pruned(&declared, &host_files, context));
                return Ok(changes);
            }
            for image in wanted {
                let info = self
                    .seam
                    .inspect_image(Path::new(&image))
                    .await
                    .map_err(|cause| crate::contract::chain(&cause));
                images.insert(image, info);
            }
        }
    }

    /// Not watched: see the module docs (# Watching).
    fn watch(&self, _sink: WatchSink) -> Result<Watching, DriverError> {
        Ok(Watching::NotWatched {
            why: "LVM announces changes only through udev, and polling lvs/vgs would cost CPU between events for drift (an LV removed or shrunk by hand) that no quick repair gives back; the resync looks".into(),
        })
    }

    async fn apply(&self, change: &Change, step: &StepContext) -> Result<(), DriverError> {
        let fetched = match (
            change.action,
            change
                .desired
                .as_deref()
                .and_then(|r| r.spec.get::<VolumeSpec>()),
        ) {
            (Action::Create | Action::Replace, Some(spec)) => {
                self.fetch(change, spec, step).await?
            }
            _ => None,
        };
        if let Some(observed) = change.observed_as::<ObservedFile>() {
            let files = self.files.as_ref().ok_or(VolumeError::NoFileVolumes)?;
            return Ok(
                file_apply::apply(files.as_ref(), change, observed, step, fetched.as_ref()).await?,
            );
        }
        Ok(apply::apply(self.seam.as_ref(), change, step, fetched.as_ref()).await?)
    }

    fn step_budget(&self, change: &Change) -> Duration {
        let Some(spec) = change
            .desired
            .as_deref()
            .and_then(|r| r.spec.get::<VolumeSpec>())
        else {
            return DEFAULT_STEP_BUDGET;
        };
        match change.action {
            Action::Create | Action::Replace
                if matches!(
                    spec.source,
                    Some(VolumeSource::Image(_) | VolumeSource::Url { .. })
                ) =>
            {
                IMAGE_STEP_BUDGET
            }
            Action::Create | Action::Replace | Action::Update if spec.filesystem.is_some() => {
                FILESYSTEM_STEP_BUDGET
            }
            _ => DEFAULT_STEP_BUDGET,
        }
    }
}
