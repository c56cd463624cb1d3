//! Carrying out one planned volume change as a sequence of [`LvmRequest`]s, from the
//! plan's snapshot, without reading the host again.
//!
//! - **Create**: one `lvcreate` with every tag (marker, id, reclaim policy, filesystem,
//!   and `incomplete` when there is anything to write), or one `lvcreate --snapshot` for
//!   a snapshot (then `lvextend` when a thin snapshot is declared bigger than its
//!   origin); then the image copy (`qemu-img convert`, progress reported) or `mkfs`;
//!   then `incomplete` comes off. A failed copy or `mkfs` removes the new LV again; a
//!   cancel, a deadline or a crash leaves it tagged `incomplete`, and the next plan
//!   replaces it. So no half-written volume ever looks ready.
//! - **Update**: one `lvchange` for the tags (adopted marker, reclaim policy, and
//!   `grow-fs` before a grow of a filesystem gitvisor made), `lvextend`, the filesystem
//!   grow (`fsadm resize`), then `grow-fs` comes off. A crash in between leaves `grow-fs`
//!   and the next plan grows the filesystem.
//! - **Replace**: remove the old LV (refused while open), then create.
//! - **Delete**: with `reclaimPolicy: Retain`, one `lvchange` removing gitvisor's tags (the
//!   LV and its data stay); with `Delete`, `lvremove`, refused while the LV is open or
//!   has classic snapshots (lvm2 would delete them with it).
//!
//! The step's context is checked before every request except the ones that finish what
//! the one before began (taking `incomplete` or `grow-fs` off after a success, removing
//! a volume whose copy failed); long requests run under [`StepContext::wait`].

use std::path::PathBuf;

use super::VolumeError;
use super::device::device_path;
use super::observed::ObservedVolume;
use super::seam::{LvmRequest, LvmSeam};
use super::tags;
use crate::contract::{Action, Change, StepContext};
use crate::drivers::volume::{VolumeSource, VolumeSpec};

/// Carry out `change` on `seam`, stopping between requests when `step` says so.
pub(crate) async fn apply(
    seam: &dyn LvmSeam,
    change: &Change,
    step: &StepContext,
    fetched: Option<&super::FetchedImage>,
) -> Result<(), VolumeError> {
    let host = Host {
        seam,
        volume: change.id.name.as_str(),
        step,
    };
    match change.action {
        Action::Create => {
            let (spec, observed) = planned(change)?;
            create(&host, spec, observed, fetched).await
        }
        Action::Replace => {
            let (spec, observed) = planned(change)?;
            if let Some(old) = &observed.replaced {
                host.check_removable(old, &[])?;
                host.send(LvmRequest::Remove {
                    vg: old.vg.clone(),
                    name: old.name.clone(),
                })
                .await?;
            }
            create(&host, spec, observed, fetched).await
        }
        Action::Update => {
            let (_, observed) = planned(change)?;
            update(&host, observed).await
        }
        Action::Delete => delete(&host, snapshot(change)?).await,
        Action::NoOp | Action::Conflict | Action::Unsupported => Ok(()),
    }
}

/// Where requests go, for which volume, under which step.
struct Host<'a> {
    seam: &'a dyn LvmSeam,
    volume: &'a str,
    step: &'a StepContext,
}

impl Host<'_> {
    /// Sends `request` unless the step context says stop.
    async fn send(&self, request: LvmRequest) -> Result<(), VolumeError> {
        if let Err(cause) = self.step.check() {
            return Err(VolumeError::Interrupted {
                volume: self.volume.to_owned(),
                operation: request.to_string(),
                cause,
            });
        }
        self.send_now(request).await
    }

    /// Sends `request` whatever the step context says: it finishes what the request
    /// before it began.
    async fn send_now(&self, request: LvmRequest) -> Result<(), VolumeError> {
        tracing::debug!(volume = self.volume, ?request, "lvm request");
        self.seam
            .send(&request, &|_| {})
            .await
            .map_err(|cause| VolumeError::Request {
                volume: self.volume.to_owned(),
                operation: request.to_string(),
                cause,
            })
    }

    /// Sends a long request (a copy, a `mkfs`, a resize) through the step's wait, which
    /// drops it on cancel or at the deadline; progress goes to the step.
    async fn send_long(&self, request: LvmRequest, what: &str) -> Result<(), VolumeError> {
        let interrupted = |cause| VolumeError::Interrupted {
            volume: self.volume.to_owned(),
            operation: request.to_string(),
            cause,
        };
        self.step.check().map_err(interrupted)?;
        self.step.progress(format!("{what}: started"));
        let step = self.step.clone();
        let what_owned = what.to_owned();
        let report = move |percent: u8| {
            if percent.is_multiple_of(10) {
                step.progress(format!("{what_owned}: {percent}%"));
            }
        };
        let result = self
            .step
            .wait(self.seam.send(&request, &report))
            .await
            .map_err(interrupted)?;
        result.map_err(|cause| VolumeError::Request {
            volume: self.volume.to_owned(),
            operation: request.to_string(),
            cause,
        })?;
        self.step.progress(format!("{what}: done"));
        Ok(())
    }

    fn check_removable(
        &self,
        lv: &super::seam::LvState,
        snapshots: &[String],
    ) -> Result<(), VolumeError> {
        if lv.open {
            return Err(VolumeError::InUse {
                volume: self.volume.to_owned(),
                device: lv.device_path().display().to_string(),
            });
        }
        if lv.has_classic_snapshots || !snapshots.is_empty() {
            return Err(VolumeError::HasSnapshots {
                volume: self.volume.to_owned(),
                lv: lv.full_name(),
                snapshots: if snapshots.is_empty() {
                    "classic snapshots".to_owned()
                } else {
                    snapshots.join(", ")
                },
            });
        }
        Ok(())
    }
}

async fn create(
    host: &Host<'_>,
    spec: &VolumeSpec,
    observed: &ObservedVolume,
    fetched: Option<&super::FetchedImage>,
) -> Result<(), VolumeError> {
    let name = host.volume;
    let vg = &observed.vg;
    let device = device_path(vg, name);
    let image = match fetched {
        Some(fetched) => Some(fetched.path.to_string_lossy().into_owned()),
        None => spec
            .source
            .as_ref()
            .and_then(VolumeSource::image)
            .map(str::to_owned),
    };
    let inspected = fetched.map(|f| &f.info).or(observed.image.as_ref());
    let incomplete = image.is_some() || spec.filesystem.is_some();
    let tags = tags::creation(name, spec.reclaim_policy, spec.filesystem, incomplete);
    match (&spec.source, &observed.origin) {
        (Some(VolumeSource::SnapshotOf(_)), Some(origin)) => {
            host.send(LvmRequest::Snapshot {
                vg: vg.clone(),
                origin: origin.name.clone(),
                name: name.to_owned(),
                size: (!origin.thin).then_some(observed.size),
                tags,
            })
            .await?;
            if origin.thin && observed.size > origin.size {
                host.send(LvmRequest::Extend {
                    vg: vg.clone(),
                    name: name.to_owned(),
                    size: observed.size,
                })
                .await?;
            }
            return Ok(());
        }
        (Some(VolumeSource::SnapshotOf(_)), None) => {
            return Err(invalid(name, "a snapshot change without its origin"));
        }
        _ => {}
    }
    host.send(LvmRequest::Create {
        vg: vg.clone(),
        name: name.to_owned(),
        size: observed.size,
        thin_pool: spec.thin_pool.clone(),
        tags,
    })
    .await?;
    let written = match (image.as_deref(), inspected) {
        (Some(path), Some(info)) => {
            host.send_long(
                LvmRequest::WriteImage {
                    image: PathBuf::from(path),
                    format: info.format.clone(),
                    device: device.clone(),
                },
                &format!("writing {path} onto {}", device.display()),
            )
            .await
        }
        (Some(_), None) => Err(invalid(name, "an image source without its inspection")),
        (None, _) => match spec.filesystem {
            Some(filesystem) => {
                host.send_long(
                    LvmRequest::MakeFilesystem {
                        device: device.clone(),
                        filesystem,
                    },
                    &format!("making a {} filesystem", super::seam::fs_name(filesystem)),
                )
                .await
            }
            None => Ok(()),
        },
    };
    match written {
        Ok(()) if incomplete => {
            host.send_now(LvmRequest::ChangeTags {
                vg: vg.clone(),
                name: name.to_owned(),
                add: Vec::new(),
                remove: vec![tags::INCOMPLETE.to_owned()],
            })
            .await
        }
        Ok(()) => Ok(()),
        Err(error @ VolumeError::Interrupted { .. }) => Err(error),
        Err(error) => {
            // Nothing half-written stays: the new volume goes again. Should that fail
            // too, it keeps `incomplete` and the next plan replaces it.
            if let Err(undo) = host
                .send_now(LvmRequest::Remove {
                    vg: vg.clone(),
                    name: name.to_owned(),
                })
                .await
            {
                tracing::warn!(
                    volume = name,
                    "removing the incompletely written volume failed, the next plan replaces it: {}",
                    crate::contract::chain(&undo)
                );
            }
            Err(error)
        }
    }
}

async fn update(host: &Host<'_>, observed: &ObservedVolume) -> Result<(), VolumeError> {
    let name = host.volume;
    let vg = &observed.vg;
    let drift = &observed.drift;
    let lv = observed
        .lv
        .as_ref()
        .ok_or_else(|| invalid(name, "an update without the volume"))?;
    let mut add = Vec::new();
    let mut remove = Vec::new();
    if drift.adopt {
        add.push(tags::MANAGED.to_owned());
        add.push(tags::id(name));
    }
    if let Some((_, policy)) = drift.reclaim {
        remove.extend(
            tags::gitvisor_tags(lv)
                .filter(|tag| tag.starts_with("gitvisor:reclaim="))
                .map(str::to_owned),
        );
        remove.retain(|tag| tag != &tags::reclaim(policy));
        add.push(tags::reclaim(policy));
    }
    let grow_fs = drift.grow_filesystem;
    if grow_fs.is_some() && !lv.has_tag(tags::GROW_FS) {
        add.push(tags::GROW_FS.to_owned());
    }
    add.retain(|tag| !lv.has_tag(tag));
    if !add.is_empty() || !remove.is_empty() {
        host.send(LvmRequest::ChangeTags {
            vg: vg.clone(),
            name: name.to_owned(),
            add,
            remove,
        })
        .await?;
    }
    if let Some((_, size)) = drift.grow {
        host.send(LvmRequest::Extend {
            vg: vg.clone(),
            name: name.to_owned(),
            size,
        })
        .await?;
    }
    if let Some(filesystem) = grow_fs {
        host.send_long(
            LvmRequest::GrowFilesystem {
                device: device_path(vg, name),
                filesystem,
            },
            &format!(
                "growing the {} filesystem",
                super::seam::fs_name(filesystem)
            ),
        )
        .await?;
        host.send_now(LvmRequest::ChangeTags {
            vg: vg.clone(),
            name: name.to_owned(),
            add: Vec::new(),
            remove: vec![tags::GROW_FS.to_owned()],
        })
        .await?;
    }
    Ok(())
}

async fn delete(host: &Host<'_>, observed: &ObservedVolume) -> Result<(), VolumeError> {
    let lv = observed
        .lv
        .as_ref()
        .ok_or_else(|| invalid(host.volume, "a delete without the volume"))?;
    if observed.retain {
        let remove: Vec<String> = tags::gitvisor_tags(lv).map(str::to_owned).collect();
        host.step.progress(format!(
            "forgetting the volume: {} and its data stay",
            lv.device_path().display()
        ));
        return host
            .send(LvmRequest::ChangeTags {
                vg: lv.vg.clone(),
                name: lv.name.clone(),
                add: Vec::new(),
                remove,
            })
            .await;
    }
    host.check_removable(lv, &observed.snapshots)?;
    host.send(LvmRequest::Remove {
        vg: lv.vg.clone(),
        name: lv.name.clone(),
    })
    .await
}

fn planned(change: &Change) -> Result<(&VolumeSpec, &ObservedVolume), VolumeError> {
    let volume = change.id.name.as_str();
    let spec = match change
        .desired
        .as_deref()
        .and_then(|r| r.spec.get::<VolumeSpec>())
    {
        Some(spec) => spec,
        _ => return Err(invalid(volume, "no declared Volume")),
    };
    Ok((spec, snapshot(change)?))
}

fn snapshot(change: &Change) -> Result<&ObservedVolume, VolumeError> {
    change.observed_as::<ObservedVolume>().ok_or_else(|| {
        invalid(
            change.id.name.as_str(),
            "no snapshot of the volume from the plan",
        )
    })
}

fn invalid(volume: &str, reason: &str) -> VolumeError {
    VolumeError::InvalidChange {
        volume: volume.to_owned(),
        reason: reason.to_owned(),
    }
}
