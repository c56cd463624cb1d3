//! Carrying out one container change: the snapshot's [`Work`] in order, each as host
//! requests, without listing again.
//!
//! - **Create**: prepare the image (imported into the store unless there) → create (bundle,
//!   root file system, `config.json` with the marker annotations, `runc create`) → connect
//!   (the veth onto the bridge, its inside configured) → start, when declared `Running`.
//!   A container without a veth has nothing to set up between create and start (runc
//!   brings up the loopback of the namespace it makes), so it is created and started by
//!   one `runc run --detach`.
//! - **Restart**: delete the exited container, then create, connect and start again with
//!   its writable layer kept.
//! - **Remove** (after a Stop): `runc delete --force`, unmount, remove the bundle,
//!   writable layer and host veth; when pruned (not replaced), its log files too.
//! - **Stop**: SIGTERM, SIGKILL after `stopTimeout`. **Update**: one `runc update`.
//!   **WriteResolvConf**: the bundle's `resolv.conf` rewritten in place.
//!
//! The step's context is checked before every request. Stopping between any two leaves
//! a state the next plan repairs: a container created but not started is restarted (or
//! is already what `Stopped` asks for); a removed one is created again. Preparing the
//! image is the one request that is also stopped while it runs (on cancellation or at
//! the step's deadline): it only fills the image store, which keeps nothing unfinished.

use super::config::container_config;
use super::error::ContainerError;
use super::observed::{Declaration, ObservedContainer, Work, veth_name};
use super::seam::{Answer, ContainerHost, HostRequest};
use crate::contract::{Change, StepContext};

pub(crate) async fn apply(
    host: &dyn ContainerHost,
    change: &Change,
    step: &StepContext,
) -> Result<(), ContainerError> {
    if !change.action.is_change() {
        return Ok(());
    }
    let name = change.id.name.as_str();
    let invalid = |reason: &str| ContainerError::InvalidChange {
        container: name.to_owned(),
        reason: reason.to_owned(),
    };
    let observed = change
        .observed_as::<ObservedContainer>()
        .ok_or_else(|| invalid("the plan attached no container snapshot"))?;
    let run = Run { host, name, step };
    for work in &observed.work {
        match work {
            Work::Remove => {
                run.send(HostRequest::Remove {
                    id: name.to_owned(),
                    veth: Some(veth_name(name)),
                    // No declaration: pruned, not replaced.
                    logs: observed.declaration.is_none(),
                })
                .await?;
            }
            Work::Create { start } => {
                let declaration = observed
                    .declaration
                    .as_ref()
                    .ok_or_else(|| invalid("a create without a declaration"))?;
                run.create(declaration, *start, false).await?;
            }
            Work::Restart => {
                let declaration = observed
                    .declaration
                    .as_ref()
                    .ok_or_else(|| invalid("a restart without a declaration"))?;
                run.send(HostRequest::Delete {
                    id: name.to_owned(),
                })
                .await?;
                run.create(declaration, true, true).await?;
            }
            Work::Stop => {
                let grace = match &observed.declaration {
                    Some(declaration) => declaration.grace,
                    None => observed.recorded_grace(),
                };
                run.send(HostRequest::Stop {
                    id: name.to_owned(),
                    grace,
                })
                .await?;
            }
            Work::UpdateLimits(limits) => {
                run.send(HostRequest::Update {
                    id: name.to_owned(),
                    limits: *limits,
                })
                .await?;
            }
            Work::WriteResolvConf(content) => {
                run.send(HostRequest::WriteResolvConf {
                    id: name.to_owned(),
                    content: content.clone(),
                })
                .await?;
            }
            Work::SetVlans(vlans) => {
                run.send(HostRequest::SetVlans {
                    id: name.to_owned(),
                    veth: veth_name(name),
                    vlans: vlans.clone(),
                })
                .await?;
            }
        }
    }
    Ok(())
}

struct Run<'a> {
    host: &'a dyn ContainerHost,
    name: &'a str,
    step: &'a StepContext,
}

impl Run<'_> {
    async fn send(&self, request: HostRequest) -> Result<Answer, ContainerError> {
        let operation = request.to_string();
        self.step
            .check()
            .map_err(|cause| ContainerError::Interrupted {
                container: self.name.to_owned(),
                operation: operation.clone(),
                cause,
            })?;
        tracing::debug!(container = self.name, "{operation}");
        let sent = if matches!(request, HostRequest::PrepareImage { .. }) {
            // An import (a download, minutes of unpacking) is only waited for: stopping
            // it leaves nothing behind that the next apply does not redo (the store
            // renames a layer into place only once it is whole and verified).
            self.step
                .wait(self.host.send(request))
                .await
                .map_err(|cause| ContainerError::Interrupted {
                    container: self.name.to_owned(),
                    operation: operation.clone(),
                    cause,
                })?
        } else {
            self.host.send(request).await
        };
        sent.map_err(|cause| ContainerError::Request {
            container: self.name.to_owned(),
            operation,
            cause,
        })
    }

    fn unexpected(&self, answer: &Answer, request: &str) -> ContainerError {
        ContainerError::InvalidChange {
            container: self.name.to_owned(),
            reason: format!("the host answered {answer:?} to {request}"),
        }
    }

    async fn create(
        &self,
        declaration: &Declaration,
        start: bool,
        restart: bool,
    ) -> Result<(), ContainerError> {
        self.step
            .progress(format!("preparing image {}", declaration.spec.image));
        let image = match self
            .send(HostRequest::PrepareImage {
                image: declaration.spec.image.clone(),
            })
            .await?
        {
            Answer::Image(image) => image,
            other => return Err(self.unexpected(&other, "prepare image")),
        };
        let config = container_config(self.name, declaration, &image).map_err(|why| {
            ContainerError::Declaration {
                container: self.name.to_owned(),
                why,
            }
        })?;
        // Without a veth nothing happens between create and start: one `runc run`.
        let at_once = declaration.veth.is_none();
        let pid = match self
            .send(HostRequest::Create {
                config: Box::new(config),
                image: Box::new(image),
                keep_writable_layer: restart,
                start: start && at_once,
            })
            .await?
        {
            Answer::Pid(pid) => pid,
            other => return Err(self.unexpected(&other, "create")),
        };
        if at_once {
            return Ok(());
        }
        self.send(HostRequest::Connect {
            id: self.name.to_owned(),
            pid,
            veth: declaration.veth.clone(),
        })
        .await?;
        if start {
            self.send(HostRequest::Start {
                id: self.name.to_owned(),
            })
            .await?;
        }
        Ok(())
    }
}
