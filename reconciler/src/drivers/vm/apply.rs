//! Carrying out one planned VM change as a sequence of [`VmRequest`]s, from the plan's
//! snapshot, without observing again.
//!
//! - **Create**: remove provable leftovers of an interrupted create; make the run dir
//!   with its record (the marker, and the command line about to be launched); create the
//!   taps; then, unless `Stopped`, start: write the cloud-init seed, copy the UEFI
//!   variable store (once: it is the VM's NVRAM from then on), launch.
//! - **Update**: the drift, in this order: when the guest will be launched, check the new
//!   launch (prepared by the plan; its files asked of the host again) before anything
//!   else; stop when the guest must stop or restart; write the new record; fix the taps
//!   (create, enslave, VLANs, up); start when it should run and does not, else pause or
//!   resume; remove surplus taps. A restart whose new launch fails puts the previous
//!   record back and launches the previous command line, and the step fails with the
//!   new configuration's error.
//! - **Delete**: stop; delete the taps; remove the run dir last, so the marker stays until
//!   everything else is gone and an interrupted delete is found again by the next plan.
//!
//! **Stop** is graceful first: resume a paused guest (a frozen one cannot see the power
//! button), ACPI powerdown, wait up to `shutdownTimeout` (default 30 s) for the process
//! to end; then `quit` over the monitor, then SIGKILL, each with a short wait.
//!
//! **A tap** is created under its temporary name, marked, renamed (the three run
//! together, without a cancellation check in between, so a cancel never strands a
//! temporary name), then enslaved to its bridge, put on its VLANs (on a bridge that
//! filters them) and set up. The bridge's index is read
//! in apply: it may have been created by this same run.
//!
//! The record is written *before* what it describes happens (a launch), and a stop
//! happens before the record of the new spec: whatever point a crash stops at, the next
//! plan sees a record and a host that differ and finishes the job.
//!
//! [`StepContext::check`] runs before every request but the tap's marker and rename;
//! waits for a guest to power off go through [`StepContext::wait`].

use std::time::Duration;

use super::diff::{Prepared, VmSnapshot, shutdown_timeout};
use super::drift::{Drift, TapFix};
use super::error::VmError;
use super::monitor::Control;
use super::nic::{tap_alias, tap_name, temporary_tap_name};
use super::observed::{ObservedVm, Runtime};
use super::paths::temporary_dir_name;
use super::preflight;
use super::record::RunRecord;
use super::seam::{Answer, RunFile, VmHost, VmRequest};
use super::seed::seed_image;
use crate::contract::{Action, Change, StepContext};
use crate::drivers::bridge::LinkRequest;
use crate::drivers::vlan_port::VlanDrift;
use crate::drivers::vm::{Firmware, Hypervisor, VirtualMachineSpec, VmState};

/// How long to wait for the process to end after `quit`, and after SIGKILL.
const HARD_STOP_WAIT: Duration = Duration::from_secs(10);

/// One VM's requests, described in its terms.
struct Run<'a> {
    host: &'a dyn VmHost,
    step: &'a StepContext,
    vm: &'a str,
}

impl Run<'_> {
    /// Sends `request` unless the step should stop first.
    async fn send(&self, request: VmRequest) -> Result<Answer, VmError> {
        self.step.check().map_err(|cause| VmError::Interrupted {
            vm: self.vm.to_owned(),
            operation: request.to_string(),
            cause,
        })?;
        self.send_now(request).await
    }

    /// Sends `request` whatever the step says (it must follow the previous one).
    async fn send_now(&self, request: VmRequest) -> Result<Answer, VmError> {
        tracing::debug!(vm = self.vm, ?request, "vm request");
        let operation = request.to_string();
        self.host
            .send(request)
            .await
            .map_err(|cause| VmError::Request {
                vm: self.vm.to_owned(),
                operation,
                cause,
            })
    }

    /// Waits for process `pid` to end, up to `within`, unless the step is cancelled.
    async fn wait_exit(&self, pid: u32, within: Duration) -> Result<bool, VmError> {
        let request = VmRequest::WaitExit {
            vm: self.vm.to_owned(),
            pid,
            within,
        };
        let operation = request.to_string();
        let answer = self
            .step
            .wait(self.send_now(request))
            .await
            .map_err(|cause| VmError::Interrupted {
                vm: self.vm.to_owned(),
                operation,
                cause,
            })??;
        Ok(answer == Answer::Exited(true))
    }

    fn control(&self, hypervisor: Hypervisor, command: Control) -> VmRequest {
        VmRequest::Control {
            vm: self.vm.to_owned(),
            hypervisor,
            command,
        }
    }
}

/// Carry out `change` on `host`.
pub(crate) async fn apply(
    host: &dyn VmHost,
    change: &Change,
    step: &StepContext,
) -> Result<(), VmError> {
    let vm = change.id.name.as_str();
    let invalid = |reason: &str| VmError::InvalidChange {
        vm: vm.to_owned(),
        reason: reason.to_owned(),
    };
    if !change.action.is_change() {
        return Ok(());
    }
    let snapshot = change
        .observed_as::<VmSnapshot>()
        .ok_or_else(|| invalid("it carries no VM snapshot"))?;
    let run = Run { host, step, vm };
    let spec = match change
        .desired
        .as_deref()
        .map(|r| r.spec.get::<VirtualMachineSpec>())
    {
        Some(Some(spec)) => Some(spec),
        Some(_) => return Err(invalid("the declared resource is not a VirtualMachine")),
        None => None,
    };
    match (change.action, spec) {
        (Action::Create, Some(spec)) => create(&run, spec, snapshot).await,
        (Action::Update, Some(spec)) => update(&run, spec, snapshot).await,
        (Action::Delete, _) => delete(&run, snapshot).await,
        _ => Err(invalid(
            "a VM is never replaced, and creates and updates need a declaration",
        )),
    }?;
    for dir in &snapshot.stale_kernel_caches {
        run.send(VmRequest::RemoveKernelCache { dir: dir.clone() })
            .await?;
    }
    Ok(())
}

/// The launch the plan prepared, unless the plan found it cannot start here.
fn prepared<'a>(run: &Run<'_>, snapshot: &'a VmSnapshot) -> Result<&'a Prepared, VmError> {
    match &snapshot.prepared {
        Some(prepared) if snapshot.problems.is_empty() => Ok(prepared),
        _ => Err(VmError::CannotLaunch {
            vm: run.vm.to_owned(),
            problems: snapshot.problems.join("; "),
        }),
    }
}

fn record(run: &Run<'_>, spec: &VirtualMachineSpec, argv: Vec<String>) -> RunRecord {
    RunRecord::new(run.vm, spec.clone(), argv)
}

async fn create(
    run: &Run<'_>,
    spec: &VirtualMachineSpec,
    snapshot: &VmSnapshot,
) -> Result<(), VmError> {
    let prepared = prepared(run, snapshot)?;
    let observed = &snapshot.observed;
    refuse_squatters(run, observed)?;
    remove_leftovers(run, snapshot).await?;
    run.send(VmRequest::CreateRunDir {
        vm: run.vm.to_owned(),
        record: record(run, spec, prepared.argv.clone()),
    })
    .await?;
    let drift = Drift::between(spec, observed).map_err(|cause| VmError::InvalidChange {
        vm: run.vm.to_owned(),
        reason: cause.to_string(),
    })?;
    fix_taps(run, &drift.taps, observed).await?;
    if spec.state != VmState::Stopped {
        start(run, spec, prepared).await?;
    }
    Ok(())
}

async fn update(
    run: &Run<'_>,
    spec: &VirtualMachineSpec,
    snapshot: &VmSnapshot,
) -> Result<(), VmError> {
    let observed = &snapshot.observed;
    let old = observed
        .dir
        .as_ref()
        .and_then(|dir| dir.record())
        .ok_or_else(|| VmError::InvalidChange {
            vm: run.vm.to_owned(),
            reason: "an update of a VM without gitvisor's record".into(),
        })?;
    let drift = Drift::between(spec, observed).map_err(|cause| VmError::InvalidChange {
        vm: run.vm.to_owned(),
        reason: cause.to_string(),
    })?;
    let runtime = observed.runtime();
    refuse_squatters(run, observed)?;
    remove_leftovers(run, snapshot).await?;
    let mut alive = runtime.has_process();
    let stops = alive && (spec.state == VmState::Stopped || drift.restarts(&runtime, spec.state));
    let launch = spec.state != VmState::Stopped && (!alive || stops);
    // The new launch is prepared and its files checked before a running guest is
    // stopped for it: a restart never stops what it cannot start again.
    let new_launch = if launch {
        let prepared = prepared(run, snapshot)?;
        check_files(run, spec).await?;
        Some(prepared)
    } else {
        None
    };
    if stops {
        stop(run, observed, old.spec.hypervisor, shutdown_timeout(spec)).await?;
        alive = false;
    }
    let argv = match new_launch {
        Some(prepared) => prepared.argv.clone(),
        None => old.argv.clone(),
    };
    let new = record(run, spec, argv);
    if new != *old {
        run.send(VmRequest::WriteRecord {
            vm: run.vm.to_owned(),
            record: new,
        })
        .await?;
    }
    fix_taps(run, &drift.taps, observed).await?;
    if let Some(prepared) = new_launch {
        if let Err(error) = start(run, spec, prepared).await {
            return Err(if stops && !matches!(error, VmError::Interrupted { .. }) {
                restore(run, old, error).await
            } else {
                error
            });
        }
    } else if alive {
        let command = match (spec.state, &runtime) {
            (VmState::Running, Runtime::Paused) => Some(Control::Resume),
            (VmState::Paused, Runtime::Running) => Some(Control::Pause),
            _ => None,
        };
        if let Some(command) = command {
            run.send(run.control(old.spec.hypervisor, command)).await?;
        }
    }
    // After the start: until the new guest runs, the previous one may need its taps back.
    for tap in &drift.surplus_taps {
        run.send(VmRequest::Link(LinkRequest::DeleteLink {
            index: tap.index,
        }))
        .await?;
    }
    Ok(())
}

/// Asks the host again, just before a guest is stopped for it, whether the files the new
/// launch opens are there as declared (the plan checked; the host may have changed).
async fn check_files(run: &Run<'_>, spec: &VirtualMachineSpec) -> Result<(), VmError> {
    let operation = "inspect the declared files";
    let facts = run
        .host
        .inspect(preflight::paths(spec))
        .await
        .map_err(|cause| VmError::Request {
            vm: run.vm.to_owned(),
            operation: operation.to_owned(),
            cause,
        })?;
    let refusals = preflight::refusals(spec, &facts);
    if refusals.is_empty() {
        return Ok(());
    }
    Err(VmError::CannotLaunch {
        vm: run.vm.to_owned(),
        problems: refusals
            .iter()
            .map(|r| format!("{}: {}", r.field, r.message))
            .collect::<Vec<_>>()
            .join("; "),
    })
}

/// The new configuration of a restarted guest did not start: put the previous record
/// back (before the launch it describes, as always), then launch the previous command
/// line, so the guest runs as it did. Answers the step's error, which names the new
/// configuration's failure and whether the previous one runs again.
async fn restore(run: &Run<'_>, old: &RunRecord, failure: VmError) -> VmError {
    run.step
        .progress("the new configuration did not start; starting the previous one again");
    let restored = async {
        run.send_now(VmRequest::WriteRecord {
            vm: run.vm.to_owned(),
            record: old.clone(),
        })
        .await?;
        if let Some(seed) = write_seed(run, &old.spec)? {
            run.send_now(seed).await?;
        }
        run.send_now(VmRequest::Launch {
            vm: run.vm.to_owned(),
            argv: old.argv.clone(),
        })
        .await
    }
    .await;
    VmError::RestartFailed {
        vm: run.vm.to_owned(),
        restored: match restored {
            Ok(_) => "the guest runs again on its previous configuration".to_owned(),
            Err(error) => format!(
                "starting the previous configuration again failed too ({}); the guest is down",
                crate::contract::chain(&error)
            ),
        },
        cause: Box::new(failure),
    }
}

async fn delete(run: &Run<'_>, snapshot: &VmSnapshot) -> Result<(), VmError> {
    let observed = &snapshot.observed;
    if let Some(dir) = &observed.dir
        && dir.process.is_some()
    {
        let (hypervisor, timeout) = match dir.record() {
            Some(record) => (record.spec.hypervisor, shutdown_timeout(&record.spec)),
            None => (Hypervisor::Qemu, super::DEFAULT_SHUTDOWN_TIMEOUT),
        };
        stop(run, observed, hypervisor, timeout).await?;
    }
    for tap in &observed.taps {
        run.send(VmRequest::Link(LinkRequest::DeleteLink {
            index: tap.index,
        }))
        .await?;
    }
    remove_leftovers(run, snapshot).await?;
    if observed.dir.is_some() {
        run.send(VmRequest::RemoveRunDir {
            dir: run.vm.to_owned(),
        })
        .await?;
    }
    if observed.data {
        run.send(VmRequest::RemoveDataDir {
            vm: run.vm.to_owned(),
        })
        .await?;
    }
    Ok(())
}

/// A link that is not ours under one of the VM's tap names: refused before anything.
fn refuse_squatters(run: &Run<'_>, observed: &ObservedVm) -> Result<(), VmError> {
    match observed.squatters.first() {
        Some(squatter) => Err(VmError::TapNameTaken {
            vm: run.vm.to_owned(),
            tap: squatter.name.clone(),
            nic: squatter.nic,
            alias: squatter.alias.clone(),
        }),
        None => Ok(()),
    }
}

async fn remove_leftovers(run: &Run<'_>, snapshot: &VmSnapshot) -> Result<(), VmError> {
    if !snapshot.leftovers_removable {
        return Ok(());
    }
    for tap in &snapshot.observed.leftover_taps {
        run.send(VmRequest::Link(LinkRequest::DeleteLink {
            index: tap.index,
        }))
        .await?;
    }
    if snapshot.observed.leftover_dir.is_some() {
        run.send(VmRequest::RemoveRunDir {
            dir: temporary_dir_name(run.vm),
        })
        .await?;
    }
    Ok(())
}

/// The bridge's index: as the plan saw it, or read now when the plan did not see the
/// bridge (it is created by this same run).
async fn bridge_index(
    run: &Run<'_>,
    observed: &ObservedVm,
    nic: usize,
    bridge: &str,
) -> Result<u32, VmError> {
    if let Some(index) = observed.bridges.get(bridge) {
        return Ok(*index);
    }
    match run
        .send(VmRequest::FindLink {
            name: bridge.to_owned(),
        })
        .await?
    {
        Answer::Index(index) => Ok(index),
        _ => Err(VmError::BridgeMissing {
            vm: run.vm.to_owned(),
            bridge: bridge.to_owned(),
            nic,
        }),
    }
}

async fn fix_taps(run: &Run<'_>, fixes: &[TapFix], observed: &ObservedVm) -> Result<(), VmError> {
    for fix in fixes {
        match fix {
            TapFix::Create { nic, bridge, vlans } => {
                let master = bridge_index(run, observed, *nic, bridge).await?;
                let answer = run
                    .send(VmRequest::CreateTap {
                        name: temporary_tap_name(run.vm, *nic),
                    })
                    .await?;
                let Answer::Index(index) = answer else {
                    return Err(VmError::InvalidChange {
                        vm: run.vm.to_owned(),
                        reason: format!("creating a tap answered {answer:?}, not its index"),
                    });
                };
                run.send_now(VmRequest::Link(LinkRequest::SetAlias {
                    index,
                    alias: tap_alias(run.vm, *nic),
                }))
                .await?;
                run.send_now(VmRequest::Link(LinkRequest::SetName {
                    index,
                    name: tap_name(run.vm, *nic),
                }))
                .await?;
                attach(run, index, master, true, vlans.as_ref(), true).await?;
            }
            TapFix::Attach {
                nic,
                index,
                bridge,
                enslave,
                up,
                vlans,
            } => {
                let master = bridge_index(run, observed, *nic, bridge).await?;
                attach(run, *index, master, *enslave, vlans.as_ref(), *up).await?;
            }
        }
    }
    Ok(())
}

/// Enslave, set the VLANs (before the tap is up, so no frame crosses on the wrong
/// VLAN), up: each only where the drift says.
async fn attach(
    run: &Run<'_>,
    index: u32,
    master: u32,
    enslave: bool,
    vlans: Option<&VlanDrift>,
    up: bool,
) -> Result<(), VmError> {
    if enslave {
        run.send(VmRequest::Link(LinkRequest::SetMaster {
            port_index: index,
            master: Some(master),
        }))
        .await?;
    }
    for request in vlans.map(|v| v.requests(index, false)).unwrap_or_default() {
        run.send(VmRequest::Link(request)).await?;
    }
    if up {
        run.send(VmRequest::Link(LinkRequest::SetUp { index, up: true }))
            .await?;
    }
    Ok(())
}

/// The request that writes `spec`'s cloud-init seed image, when it has cloud-init.
fn write_seed(run: &Run<'_>, spec: &VirtualMachineSpec) -> Result<Option<VmRequest>, VmError> {
    let Some(cloud) = &spec.cloud_init else {
        return Ok(None);
    };
    let content = seed_image(run.vm, cloud).map_err(|cause| VmError::Seed {
        vm: run.vm.to_owned(),
        cause,
    })?;
    Ok(Some(VmRequest::WriteFile {
        vm: run.vm.to_owned(),
        file: RunFile::Seed,
        content,
    }))
}

/// Seed, NVRAM, launch.
async fn start(
    run: &Run<'_>,
    spec: &VirtualMachineSpec,
    prepared: &Prepared,
) -> Result<(), VmError> {
    if let Some(seed) = write_seed(run, spec)? {
        run.send(seed).await?;
    }
    if spec.boot.firmware == Some(Firmware::Uefi)
        && let Some(template) = snapshot_uefi(prepared)
    {
        run.send(VmRequest::KeepNvram {
            vm: run.vm.to_owned(),
            template,
        })
        .await?;
    }
    run.step.progress("launching the guest");
    run.send(VmRequest::Launch {
        vm: run.vm.to_owned(),
        argv: prepared.argv.clone(),
    })
    .await?;
    Ok(())
}

/// The UEFI variable store template the launch was resolved with.
fn snapshot_uefi(prepared: &Prepared) -> Option<std::path::PathBuf> {
    match &prepared.launch.boot {
        super::launch::LaunchBoot::Uefi { vars, .. } => Some(vars.clone()),
        _ => None,
    }
}

/// Graceful, then hard: resume if paused, ACPI powerdown (the builtin VMM's power
/// button), wait; quit (`stop`), wait; SIGKILL, wait.
async fn stop(
    run: &Run<'_>,
    observed: &ObservedVm,
    hypervisor: Hypervisor,
    timeout: Duration,
) -> Result<(), VmError> {
    let Some(process) = observed.dir.as_ref().and_then(|dir| dir.process.as_ref()) else {
        return Ok(());
    };
    let pid = process.pid;
    if observed.runtime() == Runtime::Paused
        && let Err(error) = run.send(run.control(hypervisor, Control::Resume)).await
    {
        tracing::warn!(
            vm = run.vm,
            "resuming before the powerdown failed: {}",
            crate::contract::chain(&error)
        );
    }
    let waited = match run.send(run.control(hypervisor, Control::Powerdown)).await {
        Ok(_) => {
            run.step.progress(format!(
                "{} sent; waiting up to {} for the guest to power off",
                Control::Powerdown.name_for(hypervisor),
                humantime::format_duration(timeout)
            ));
            run.wait_exit(pid, timeout).await?
        }
        Err(error @ VmError::Interrupted { .. }) => return Err(error),
        Err(error) => {
            tracing::warn!(
                vm = run.vm,
                "{} failed: {}",
                Control::Powerdown.name_for(hypervisor),
                crate::contract::chain(&error)
            );
            false
        }
    };
    if waited {
        return Ok(());
    }
    run.step.progress(format!(
        "the guest did not power off within {}; stopping it hard",
        humantime::format_duration(timeout)
    ));
    let quit = run.send_now(run.control(hypervisor, Control::Quit)).await;
    if quit.is_ok() && run.wait_exit(pid, HARD_STOP_WAIT).await? {
        return Ok(());
    }
    run.send_now(VmRequest::Kill {
        vm: run.vm.to_owned(),
        pid,
    })
    .await?;
    if run.wait_exit(pid, HARD_STOP_WAIT).await? {
        Ok(())
    } else {
        Err(VmError::StillRunning {
            vm: run.vm.to_owned(),
            pid,
        })
    }
}
