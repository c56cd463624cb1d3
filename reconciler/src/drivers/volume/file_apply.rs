//! Carrying out one planned file-volume change as [`FileRequest`]s, from the plan's
//! snapshot ([`ObservedFile`]), without reading the host again.
//!
//! - **Create**: remove the leftovers the plan named (its own `.partial`, the old-format
//!   file of a replace); make the marked `.partial` and write it (empty, an image copy
//!   with progress, or a clone's overlay); then publish it under the real name. A failed
//!   write removes the `.partial`; a cancel, a deadline or a crash leaves it, marked,
//!   and the next plan removes it and starts again. So no half-written file ever has a
//!   volume's name.
//! - **Update**: a leftover `.partial` removed, the xattrs (adoption, reclaim policy),
//!   then the grow.
//! - **Delete**: Retain takes the xattrs off (the file stays); Delete removes the file.

use super::VolumeError;
use super::file_diff::ObservedFile;
use super::files::{FileContent, FileRequest, FileSeam, marker_value};
use crate::contract::{Action, Change, StepContext};
use crate::drivers::volume::VolumeSpec;

/// Carry out `change` (whose snapshot is an [`ObservedFile`]) on `seam`.
pub(crate) async fn apply(
    seam: &dyn FileSeam,
    change: &Change,
    observed: &ObservedFile,
    step: &StepContext,
    fetched: Option<&super::FetchedImage>,
) -> Result<(), VolumeError> {
    let host = Host {
        seam,
        volume: change.id.name.as_str(),
        step,
    };
    let name = change.id.name.as_str();
    match change.action {
        Action::Create | Action::Replace => {
            let spec = declared_after_leftovers(&host, change, observed).await?;
            let written = host
                .send_long(FileRequest::Create {
                    directory: observed.directory.clone(),
                    partial: observed.partial.clone(),
                    format: observed.format,
                    size: observed.size,
                    content: match fetched {
                        Some(fetched) => FileContent::Image {
                            image: fetched.path.clone(),
                            format: fetched.info.format.clone(),
                        },
                        None => observed.content.clone(),
                    },
                    id: marker_value(name),
                    reclaim: spec.reclaim_policy,
                })
                .await;
            match written {
                Ok(()) => {}
                Err(error @ VolumeError::Interrupted { .. }) => return Err(error),
                Err(error) => {
                    // A refused or failed write: nothing half-written stays. (The create
                    // itself never makes a file it did not mark.)
                    if let Err(undo) = host
                        .send_now(FileRequest::Remove {
                            path: observed.partial.clone(),
                        })
                        .await
                    {
                        tracing::warn!(
                            volume = name,
                            "removing the incompletely written file failed, the next plan removes it: {}",
                            crate::contract::chain(&undo)
                        );
                    }
                    return Err(error);
                }
            }
            host.send_now(FileRequest::Publish {
                partial: observed.partial.clone(),
                path: observed.path.clone(),
            })
            .await
        }
        Action::Update => {
            let spec = declared_after_leftovers(&host, change, observed).await?;
            if observed.mark {
                host.send(FileRequest::Mark {
                    path: observed.path.clone(),
                    id: marker_value(name),
                    reclaim: spec.reclaim_policy,
                })
                .await?;
            }
            if let Some((_, size)) = observed.grow {
                host.send(FileRequest::Grow {
                    path: observed.path.clone(),
                    format: observed.format,
                    size,
                })
                .await?;
            }
            Ok(())
        }
        Action::Delete if observed.retain => {
            host.step.progress(format!(
                "forgetting the volume: {} and its data stay",
                observed.path.display()
            ));
            host.send(FileRequest::Unmark {
                path: observed.path.clone(),
            })
            .await
        }
        Action::Delete => {
            host.send(FileRequest::Remove {
                path: observed.path.clone(),
            })
            .await
        }
        Action::NoOp | Action::Conflict | Action::Unsupported => Ok(()),
    }
}

struct Host<'a> {
    seam: &'a dyn FileSeam,
    volume: &'a str,
    step: &'a StepContext,
}

impl Host<'_> {
    async fn send(&self, request: FileRequest) -> Result<(), VolumeError> {
        if let Err(cause) = self.step.check() {
            return Err(VolumeError::Interrupted {
                volume: self.volume.to_owned(),
                operation: request.to_string(),
                cause,
            });
        }
        self.send_now(request).await
    }

    async fn send_now(&self, request: FileRequest) -> Result<(), VolumeError> {
        tracing::debug!(volume = self.volume, ?request, "file volume request");
        self.seam
            .send(&request, &|_| {})
            .await
            .map_err(|cause| VolumeError::Request {
                volume: self.volume.to_owned(),
                operation: request.to_string(),
                cause,
            })
    }

    /// A long request under the step's wait (dropped on cancel or at the deadline),
    /// its progress told to the step.
    async fn send_long(&self, request: FileRequest) -> Result<(), VolumeError> {
        let interrupted = |cause| VolumeError::Interrupted {
            volume: self.volume.to_owned(),
            operation: request.to_string(),
            cause,
        };
        self.step.check().map_err(interrupted)?;
        let what = request.to_string();
        self.step.progress(format!("{what}: started"));
        let step = self.step.clone();
        let report = move |percent: u8| {
            if percent.is_multiple_of(10) {
                step.progress(format!("{what}: {percent}%"));
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
        })
    }
}

/// The declared spec of a create or an update, once the leftovers the plan named (its
/// own `.partial`, the old-format file of a replace) are removed.
async fn declared_after_leftovers<'c>(
    host: &Host<'_>,
    change: &'c Change,
    observed: &ObservedFile,
) -> Result<&'c VolumeSpec, VolumeError> {
    let spec = change
        .desired
        .as_deref()
        .and_then(|r| r.spec.get::<VolumeSpec>())
        .ok_or_else(|| invalid(host.volume, "no declared Volume"))?;
    for path in &observed.remove_first {
        host.send(FileRequest::Remove { path: path.clone() })
            .await?;
    }
    Ok(spec)
}

fn invalid(volume: &str, reason: &str) -> VolumeError {
    VolumeError::InvalidChange {
        volume: volume.to_owned(),
        reason: reason.to_owned(),
    }
}
