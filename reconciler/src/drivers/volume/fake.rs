//! A recording, in-memory [`LvmSeam`] for tests.
//!
//! [`FakeLvm`] holds volume groups and logical volumes, records every [`LvmRequest`] and
//! carries it out the way lvm2 and the tools would, refusals included: a missing VG or
//! thin pool, a taken name, a size that is not a whole number of sectors, not enough
//! free extents (sizes are rounded up to whole extents, as `lvcreate` does), an open LV
//! that cannot be removed, an image larger than its volume. Like lvm2, removing the
//! origin of classic snapshots removes them too (the driver must refuse that first).
//! Each LV's contents are modelled (the filesystem made on it and its size, the image
//! written), so tests can check what a volume holds, and chosen requests can fail.
//!
//! Public (not `cfg(test)`) so other modules' tests can build a driver over it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use super::seam::{
    ImageInfo, LvKind, LvState, LvmError, LvmReport, LvmRequest, LvmSeam, ProgressSink, VgState,
};
use super::size::{extents, round_up};
use crate::drivers::volume::Filesystem;

type FailurePredicate = Box<dyn Fn(&LvmRequest) -> bool + Send + Sync>;

/// What a fake LV holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contents {
    /// The filesystem made on it and the size it spans.
    pub filesystem: Option<(Filesystem, u64)>,
    /// The image written onto it.
    pub image: Option<PathBuf>,
}

#[derive(Default)]
struct FakeHost {
    vgs: Vec<VgState>,
    lvs: Vec<LvState>,
    contents: BTreeMap<(String, String), Contents>,
    images: BTreeMap<PathBuf, ImageInfo>,
    requests: Vec<LvmRequest>,
    reports: usize,
    failures: Vec<(FailurePredicate, LvmError)>,
    missing_tools: bool,
    no_device_mapper: bool,
}

/// A fake host: VGs and LVs in memory, every request recorded.
#[derive(Default)]
pub struct FakeLvm {
    host: Mutex<FakeHost>,
}

impl std::fmt::Debug for FakeLvm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = self.lock();
        f.debug_struct("FakeLvm")
            .field("vgs", &host.vgs)
            .field("lvs", &host.lvs)
            .field("requests", &host.requests)
            .finish_non_exhaustive()
    }
}

/// A volume group of `size` bytes in extents of `extent` bytes, all free.
pub fn vg(name: &str, size: u64, extent: u64) -> VgState {
    VgState {
        name: name.to_owned(),
        size,
        free: size,
        extent_size: extent,
        free_extents: size / extent,
    }
}

/// A plain LV with `tags`.
pub fn lv(vg: &str, name: &str, size: u64, tags: &[String]) -> LvState {
    LvState {
        vg: vg.to_owned(),
        name: name.to_owned(),
        size,
        tags: tags.to_vec(),
        kind: LvKind::Plain,
        origin: None,
        has_classic_snapshots: false,
        open: false,
        data_percent: None,
        metadata_percent: None,
    }
}

/// A thin pool of `size`, `data_percent` full.
pub fn thin_pool(vg: &str, name: &str, size: u64, data_percent: f64) -> LvState {
    LvState {
        kind: LvKind::ThinPool,
        data_percent: Some(data_percent),
        metadata_percent: Some(10.0),
        ..lv(vg, name, size, &[])
    }
}

fn failed(program: &str, stderr: impl Into<String>) -> LvmError {
    LvmError::Failed {
        program: program.to_owned(),
        status: "exit status: 5".to_owned(),
        stderr: stderr.into(),
    }
}

impl FakeLvm {
    pub fn new(vgs: Vec<VgState>, lvs: Vec<LvState>) -> Self {
        FakeLvm {
            host: Mutex::new(FakeHost {
                vgs,
                lvs,
                ..FakeHost::default()
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, FakeHost> {
        // A test that panicked while holding the lock has failed already.
        self.host
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// An image file `qemu-img info` would describe.
    pub fn add_image(&self, path: &str, format: &str, virtual_size: u64) {
        self.lock().images.insert(
            PathBuf::from(path),
            ImageInfo {
                format: format.to_owned(),
                virtual_size,
            },
        );
    }

    /// lvm2 is not installed: every call fails as the real seam would.
    pub fn without_lvm2(&self) {
        self.lock().missing_tools = true;
    }

    /// The kernel has no device-mapper: the report says so, and creating or resizing an
    /// LV fails as `lvcreate` does there.
    pub fn without_device_mapper(&self) {
        self.lock().no_device_mapper = true;
    }

    /// Requests for which `predicate` holds fail with `error` (they are still recorded).
    pub fn fail_when(
        &self,
        predicate: impl Fn(&LvmRequest) -> bool + Send + Sync + 'static,
        error: LvmError,
    ) {
        self.lock().failures.push((Box::new(predicate), error));
    }

    pub fn requests(&self) -> Vec<LvmRequest> {
        self.lock().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// How many times [`LvmSeam::report`] was called.
    pub fn reports(&self) -> usize {
        self.lock().reports
    }

    pub fn lv(&self, vg: &str, name: &str) -> Option<LvState> {
        self.lock()
            .lvs
            .iter()
            .find(|lv| lv.vg == vg && lv.name == name)
            .cloned()
    }

    pub fn lvs(&self) -> Vec<LvState> {
        self.lock().lvs.clone()
    }

    pub fn contents(&self, vg: &str, name: &str) -> Contents {
        self.lock()
            .contents
            .get(&(vg.to_owned(), name.to_owned()))
            .cloned()
            .unwrap_or_default()
    }

    /// Marks an LV's device open (mounted, used by a guest) or closed.
    pub fn set_open(&self, vg: &str, name: &str, open: bool) {
        if let Some(lv) = self
            .lock()
            .lvs
            .iter_mut()
            .find(|lv| lv.vg == vg && lv.name == name)
        {
            lv.open = open;
        }
    }

    /// Puts an LV on the host as someone else would (a test's setup).
    pub fn add_lv(&self, lv: LvState) {
        self.lock().lvs.push(lv);
    }
}

impl FakeHost {
    fn vg(&self, name: &str) -> Option<&VgState> {
        self.vgs.iter().find(|vg| vg.name == name)
    }

    fn lv_index(&self, vg: &str, name: &str) -> Option<usize> {
        self.lvs
            .iter()
            .position(|lv| lv.vg == vg && lv.name == name)
    }

    /// Free extents of `vg`: its size less every LV that takes extents.
    fn free_extents(&self, vg: &VgState) -> u64 {
        let used: u64 = self
            .lvs
            .iter()
            .filter(|lv| lv.vg == vg.name && !matches!(lv.kind, LvKind::Thin { .. }))
            .map(|lv| extents(lv.size, vg.extent_size))
            .sum();
        (vg.size / vg.extent_size).saturating_sub(used)
    }

    fn allocate(&self, vg_name: &str, size: u64) -> Result<u64, LvmError> {
        let vg = self
            .vg(vg_name)
            .ok_or_else(|| failed("lvcreate", format!("Volume group \"{vg_name}\" not found")))?;
        if !size.is_multiple_of(512) {
            return Err(failed(
                "lvcreate",
                format!(
                    "Size is not a multiple of 512. Try using {}",
                    size / 512 * 512
                ),
            ));
        }
        let rounded = round_up(size, vg.extent_size);
        let needed = extents(rounded, vg.extent_size);
        let free = self.free_extents(vg);
        if needed > free {
            return Err(failed(
                "lvcreate",
                format!(
                    "Volume group \"{vg_name}\" has insufficient free space ({free} extents): {needed} required."
                ),
            ));
        }
        Ok(rounded)
    }

    fn device(&self, device: &Path) -> Result<usize, LvmError> {
        let mut parts = device.strip_prefix("/dev").ok().into_iter().flat_map(|p| {
            p.iter()
                .map(|part| part.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        });
        let (Some(vg), Some(name)) = (parts.next(), parts.next()) else {
            return Err(failed(
                "open",
                format!("{}: not a device", device.display()),
            ));
        };
        self.lv_index(&vg, &name).ok_or_else(|| {
            failed(
                "open",
                format!("{}: No such file or directory", device.display()),
            )
        })
    }

    fn carry_out(
        &mut self,
        request: &LvmRequest,
        progress: ProgressSink<'_>,
    ) -> Result<(), LvmError> {
        match request {
            LvmRequest::Create {
                vg,
                name,
                size,
                thin_pool,
                tags,
            } => {
                if self.lv_index(vg, name).is_some() {
                    return Err(failed(
                        "lvcreate",
                        format!(
                            "Logical Volume \"{name}\" already exists in volume group \"{vg}\""
                        ),
                    ));
                }
                let (size, kind) = match thin_pool {
                    Some(pool) => {
                        let extent = self
                            .vg(vg)
                            .ok_or_else(|| {
                                failed("lvcreate", format!("Volume group \"{vg}\" not found"))
                            })?
                            .extent_size;
                        let is_pool = self
                            .lv_index(vg, pool)
                            .is_some_and(|i| self.lvs[i].kind == LvKind::ThinPool);
                        if !is_pool {
                            return Err(failed(
                                "lvcreate",
                                format!("Thin pool {vg}/{pool} not found."),
                            ));
                        }
                        (round_up(*size, extent), LvKind::Thin { pool: pool.clone() })
                    }
                    None => (self.allocate(vg, *size)?, LvKind::Plain),
                };
                self.lvs.push(LvState {
                    kind,
                    ..lv(vg, name, size, tags)
                });
                Ok(())
            }
            LvmRequest::Snapshot {
                vg,
                origin,
                name,
                size,
                tags,
            } => {
                let Some(at) = self.lv_index(vg, origin) else {
                    return Err(failed(
                        "lvcreate",
                        format!("Snapshot origin LV {origin} not found in Volume group {vg}."),
                    ));
                };
                if self.lv_index(vg, name).is_some() {
                    return Err(failed(
                        "lvcreate",
                        format!("Logical Volume \"{name}\" already exists"),
                    ));
                }
                let source = self.lvs[at].clone();
                let mut lv_size = source.size;
                let kind = match (size, &source.kind) {
                    (None, LvKind::Thin { pool }) => LvKind::Thin { pool: pool.clone() },
                    (Some(size), _) => {
                        lv_size = self.allocate(vg, *size)?;
                        LvKind::Snapshot
                    }
                    (None, _) => {
                        return Err(failed(
                            "lvcreate",
                            "Please specify either size or extents with snapshots.",
                        ));
                    }
                };
                if kind == LvKind::Snapshot {
                    self.lvs[at].has_classic_snapshots = true;
                }
                let contents = self
                    .contents
                    .get(&(vg.clone(), origin.clone()))
                    .cloned()
                    .unwrap_or_default();
                self.contents.insert((vg.clone(), name.clone()), contents);
                self.lvs.push(LvState {
                    kind,
                    origin: Some(origin.clone()),
                    ..lv(vg, name, lv_size, tags)
                });
                Ok(())
            }
            LvmRequest::ChangeTags {
                vg,
                name,
                add,
                remove,
            } => {
                let at = self.lv_index(vg, name).ok_or_else(|| {
                    failed(
                        "lvchange",
                        format!("Failed to find logical volume \"{vg}/{name}\""),
                    )
                })?;
                let lv = &mut self.lvs[at];
                lv.tags.retain(|tag| !remove.contains(tag));
                for tag in add {
                    if !lv.has_tag(tag) {
                        lv.tags.push(tag.clone());
                    }
                }
                Ok(())
            }
            LvmRequest::Extend { vg, name, size } => {
                let at = self.lv_index(vg, name).ok_or_else(|| {
                    failed(
                        "lvextend",
                        format!("Failed to find logical volume \"{vg}/{name}\""),
                    )
                })?;
                let current = self.lvs[at].size;
                let extent = self.vg(vg).map_or(1, |vg| vg.extent_size);
                let rounded = round_up(*size, extent);
                if rounded <= current {
                    // The real seam checks the report: at least this big is done.
                    return Ok(());
                }
                if !matches!(self.lvs[at].kind, LvKind::Thin { .. }) {
                    self.allocate(vg, rounded - current)?;
                }
                self.lvs[at].size = rounded;
                Ok(())
            }
            LvmRequest::Remove { vg, name } => {
                let Some(at) = self.lv_index(vg, name) else {
                    // Already gone: the real seam checks the report and agrees.
                    return Ok(());
                };
                if self.lvs[at].open {
                    return Err(failed(
                        "lvremove",
                        format!("Logical volume {vg}/{name} in use."),
                    ));
                }
                let removed = self.lvs.remove(at);
                // As lvm2 does with --yes: the origin's classic snapshots go with it.
                self.lvs.retain(|lv| {
                    !(lv.vg == removed.vg
                        && lv.kind == LvKind::Snapshot
                        && lv.origin.as_deref() == Some(removed.name.as_str()))
                });
                self.contents.remove(&(vg.clone(), name.clone()));
                Ok(())
            }
            LvmRequest::MakeFilesystem { device, filesystem } => {
                let at = self.device(device)?;
                let key = (self.lvs[at].vg.clone(), self.lvs[at].name.clone());
                let size = self.lvs[at].size;
                self.contents.entry(key).or_default().filesystem = Some((*filesystem, size));
                Ok(())
            }
            LvmRequest::GrowFilesystem { device, filesystem } => {
                let at = self.device(device)?;
                let key = (self.lvs[at].vg.clone(), self.lvs[at].name.clone());
                let size = self.lvs[at].size;
                let contents = self.contents.entry(key).or_default();
                match &mut contents.filesystem {
                    Some((made, spans)) if made == filesystem => {
                        *spans = size;
                        Ok(())
                    }
                    _ => Err(failed(
                        "fsadm",
                        format!("{}: no {filesystem:?} filesystem found", device.display()),
                    )),
                }
            }
            LvmRequest::WriteImage { image, device, .. } => {
                let info = self.images.get(image).cloned().ok_or_else(|| {
                    failed(
                        "qemu-img",
                        format!(
                            "Could not open '{}': No such file or directory",
                            image.display()
                        ),
                    )
                })?;
                let at = self.device(device)?;
                if info.virtual_size > self.lvs[at].size {
                    return Err(failed(
                        "qemu-img",
                        "error while writing at byte 0: No space left on device",
                    ));
                }
                progress(50);
                progress(100);
                let key = (self.lvs[at].vg.clone(), self.lvs[at].name.clone());
                self.contents.entry(key).or_default().image = Some(image.clone());
                Ok(())
            }
        }
    }
}

#[async_trait]
impl LvmSeam for FakeLvm {
    async fn report(&self) -> Result<LvmReport, LvmError> {
        let mut host = self.lock();
        if host.missing_tools {
            return Err(LvmError::NotInstalled {
                program: "vgs".into(),
            });
        }
        host.reports += 1;
        let vgs = host
            .vgs
            .iter()
            .map(|vg| {
                let free_extents = host.free_extents(vg);
                VgState {
                    free_extents,
                    free: free_extents * vg.extent_size,
                    ..vg.clone()
                }
            })
            .collect();
        Ok(LvmReport {
            vgs,
            lvs: host.lvs.clone(),
            no_device_mapper: host
                .no_device_mapper
                .then(|| "the kernel has no device-mapper (fake)".to_owned()),
        })
    }

    async fn inspect_image(&self, path: &Path) -> Result<ImageInfo, LvmError> {
        self.lock().images.get(path).cloned().ok_or_else(|| {
            failed(
                "qemu-img",
                format!(
                    "Could not open '{}': No such file or directory",
                    path.display()
                ),
            )
        })
    }

    async fn send(&self, request: &LvmRequest, progress: ProgressSink<'_>) -> Result<(), LvmError> {
        let mut host = self.lock();
        host.requests.push(request.clone());
        if host.missing_tools {
            return Err(LvmError::NotInstalled {
                program: "lvm".into(),
            });
        }
        if let Some((_, error)) = host.failures.iter().find(|(when, _)| when(request)) {
            return Err(error.clone());
        }
        if host.no_device_mapper && matches!(request, LvmRequest::Create { .. }) {
            return Err(failed(
                "lvcreate",
                "/dev/mapper/control: open failed: No such device",
            ));
        }
        host.carry_out(request, progress)
    }
}
