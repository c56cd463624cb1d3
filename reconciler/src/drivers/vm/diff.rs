//! The decision table for one declared VM, and the deletes for pruned ones. Pure: from
//! the indexed snapshot and the plan context, no I/O.
//!
//! | host                                               | store records it | decision |
//! |----------------------------------------------------|------------------|----------|
//! | nothing (or only leftovers of an interrupted create) | any            | Create   |
//! | run dir with gitvisor's record for this VM         | yes              | Update (drift) or NoOp |
//! | run dir with gitvisor's record                     | no               | Conflict (Update with the adopt annotation) |
//! | run dir without gitvisor's record                  | any              | Conflict (never adopted: gitvisor cannot tell what runs there) |
//! | taps marked for this VM, no run dir                | yes: Create (the taps are reused); no: Conflict |
//!
//! A hypervisor this build has no backend for, or a feature the backend lacks, plans as
//! `unsupported`; so does a create or update that would launch the guest from a declared
//! file the host lacks or holds in another format (`preflight.rs`), pointing at the
//! manifest's `file:line:col: field`. What else the host lacks to launch the VM (KVM,
//! OVMF, a socket path that fits) does not change the decision; it is the first reason,
//! and apply refuses before it touches anything (before the stop of a restart too).

use crate::drivers::bridge::BridgeSpec;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::backend::Backends;
use super::drift::Drift;
use super::launch::Launch;
use super::nic::mac_address;
use super::observed::{HostVms, ObservedVm, Runtime};
use super::paths::VmRoots;
use super::preflight::{self, FileFacts};
use super::seam::RecordRead;
use crate::contract::{
    Action, Change, Effect, Evidence, FieldChange, FieldValueError, Leftover, Marker, Ownership,
    PlanContext, Prune,
};
use crate::drivers::vm::{VirtualMachineSpec, VmState};
use crate::model::{Kind, Name, OVERCOMMIT_ANNOTATION, Resource, ResourceId};

/// What a change carries from plan to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct VmSnapshot {
    pub observed: ObservedVm,
    /// The launch and its command line, when the VM can be launched here.
    pub prepared: Option<Prepared>,
    /// Why it cannot, otherwise.
    pub problems: Vec<String>,
    /// Leftovers of an interrupted create (a temporary run dir, temporary taps) are
    /// provably gitvisor's and may be removed.
    pub leftovers_removable: bool,
    /// Kernel cache directories no declared VM boots from, removed after the change's
    /// own steps (`kernel_cache.rs`).
    pub stale_kernel_caches: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub launch: Launch,
    pub argv: Vec<String>,
}

/// What one plan read of the host, once for every VM it plans.
#[derive(Clone, Copy)]
pub struct HostRead<'a> {
    /// The batch observe.
    pub vms: &'a HostVms,
    /// The files the declared launches would open ([`preflight`]).
    pub files: &'a FileFacts,
    /// When: it dates the note of a VM in sync (its uptime, its leases still valid).
    pub now: SystemTime,
    /// The kernel cache directories no declared VM boots from.
    pub stale_kernel_caches: &'a [String],
}

/// The change for one declared VM.
pub fn declared(
    resource: &Arc<Resource>,
    spec: &VirtualMachineSpec,
    read: HostRead<'_>,
    context: &PlanContext,
    backends: &Backends,
    roots: &VmRoots,
) -> Result<Change, FieldValueError> {
    let HostRead {
        vms: host,
        files,
        now,
        stale_kernel_caches,
    } = read;
    let id = resource.id();
    let name = resource.metadata.name.as_str();
    let change = |action| Change::new(id.clone(), action).with_desired(Arc::clone(resource));
    let Some(backend) = backends.get(spec.hypervisor) else {
        return Ok(change(Action::Unsupported).with_reason(format!(
            "hypervisor: {} is not in this build (it has: {})",
            spec.hypervisor.as_str(),
            backends.names().join(", ")
        )));
    };
    let unsupported = backend.unsupported(spec);
    if !unsupported.is_empty() {
        let mut planned = change(Action::Unsupported);
        planned.reasons = unsupported;
        return Ok(planned);
    }
    let bridges: Vec<&str> = spec.networks.iter().map(|n| n.bridge.as_str()).collect();
    let mut observed = host.vm(name, &bridges, spec.networks.len());
    observed.vlan_filtering = spec
        .networks
        .iter()
        .filter(|nic| {
            context
                .referenced(Kind::Bridge, &nic.bridge)
                .is_some_and(|bridge| {
                    bridge
                        .spec
                        .get::<BridgeSpec>()
                        .is_some_and(|b| b.vlan_filtering)
                })
        })
        .map(|nic| nic.bridge.to_string())
        .collect();
    let recorded = context.is_recorded(&id);
    let overcommit = resource
        .metadata
        .annotations
        .get(OVERCOMMIT_ANNOTATION)
        .is_some_and(|value| value == "true");
    let (prepared, mut problems) = match Launch::resolve(name, spec, context, host.facts(), roots) {
        Ok(mut launch) => {
            launch.overcommit = overcommit;
            let argv = backend.command_line(&launch);
            let problems = backend.problems(&launch);
            (Some(Prepared { launch, argv }), problems)
        }
        Err(problems) => (None, problems),
    };
    problems.extend(host.facts().memory_problem(spec.memory.bytes(), overcommit));
    let leftovers_removable = leftovers_removable(&observed, recorded);
    let mut reasons: Vec<String> = problems
        .iter()
        .map(|problem| format!("apply will fail: {problem}"))
        .collect();
    for squatter in &observed.squatters {
        reasons.push(format!(
            "apply will fail: interface {} holds the name of this VM's tap for spec.networks[{}] and is not gitvisor's",
            squatter.name, squatter.nic
        ));
    }
    let snapshot = VmSnapshot {
        observed: observed.clone(),
        prepared,
        problems,
        leftovers_removable,
        stale_kernel_caches: stale_kernel_caches.to_vec(),
    };
    // What the host's files say against the launch, on the fields that declare them:
    // refused at plan when the change would launch the guest.
    let refusals: Vec<String> = preflight::refusals(spec, files)
        .into_iter()
        .map(|refusal| {
            format!(
                "{}: {}",
                resource.origin.place(&refusal.field),
                refusal.message
            )
        })
        .collect();
    let with = |action: Action, extra: Vec<String>| {
        let mut planned = change(action).with_observed(snapshot.clone());
        planned.reasons = extra.into_iter().chain(reasons.iter().cloned()).collect();
        planned
    };
    let Some(dir) = &observed.dir else {
        if !observed.taps.is_empty() && !recorded {
            let Ownership::Conflict(reason) =
                Evidence::new(Marker::Ours, false).declared(format!("vm {name}: its taps"), false)
            else {
                return Ok(with(Action::Create, Vec::new()));
            };
            return Ok(with(Action::Conflict, vec![reason]));
        }
        let mut notes = Vec::new();
        if (observed.leftover_dir.is_some() || !observed.leftover_taps.is_empty())
            && leftovers_removable
        {
            notes.push("removes the leftovers of an interrupted create first".to_owned());
        }
        if spec.state == VmState::Stopped {
            notes.push("created stopped: run dir and taps only, no process".to_owned());
        } else if !refusals.is_empty() {
            return Ok(with(Action::Unsupported, refusals));
        }
        return Ok(with(Action::Create, notes).with_fields(creation_fields(spec)?));
    };
    let marker = observed.marker();
    let ownership = Evidence::new(marker.clone(), recorded)
        .declared(format!("vm {name}: its run dir"), resource.metadata.adopt());
    let adopting = match ownership {
        Ownership::Ours => false,
        Ownership::Adopt if marker == Marker::Ours => true,
        Ownership::Adopt => {
            return Ok(with(
                Action::Conflict,
                vec![format!(
                    "vm {name}: its run dir has no gitvisor record ({}), so gitvisor cannot tell what runs there and will not adopt it; remove the directory",
                    match &dir.record {
                        RecordRead::Foreign(why) => why.clone(),
                        _ => "no gitvisor.json".to_owned(),
                    }
                )],
            ));
        }
        Ownership::Conflict(reason) => return Ok(with(Action::Conflict, vec![reason])),
    };
    let drift = Drift::between(spec, &observed)?;
    let runtime = observed.runtime();
    if drift.is_empty() && !adopting {
        let mut noop = with(Action::NoOp, Vec::new());
        noop.reasons
            .push(in_sync_note(name, spec, dir, &runtime, host, now));
        return Ok(noop);
    }
    let mut notes = Vec::new();
    if adopting {
        notes.push("adopted: the state store records it again".to_owned());
    }
    if drift.died && spec.state != VmState::Stopped {
        let why = match observed.last_words() {
            Some(words) => format!("its console ended with: {words}"),
            None => "the guest crashed or powered itself off".to_owned(),
        };
        notes.push(format!(
            "its process ended although it should run ({why}); it will be started again"
        ));
    }
    let timeout = humantime::format_duration(shutdown_timeout(spec));
    // The process that runs now is the recorded hypervisor's.
    let running = dir
        .record()
        .map(|record| record.spec.hypervisor)
        .unwrap_or(spec.hypervisor);
    let graceful = super::monitor::Control::Powerdown.name_for(running);
    let launches = spec.state != VmState::Stopped
        && (!runtime.has_process() || drift.restarts(&runtime, spec.state));
    if launches && !refusals.is_empty() {
        let mut refused = refusals;
        if runtime.has_process() {
            refused.push(
                "refused before anything is touched: the guest keeps running on its previous configuration until this is fixed"
                    .to_owned(),
            );
        }
        return Ok(with(Action::Unsupported, refused));
    }
    if drift.restarts(&runtime, spec.state) {
        notes.push(format!(
            "restarts the guest: {graceful} (up to {timeout}, then a hard stop), then a start with the new settings"
        ));
    } else if !drift.restart_fields.is_empty() {
        notes.push("the new settings take effect when the guest next starts".to_owned());
    }
    if spec.state == VmState::Stopped && runtime.has_process() {
        notes.push(format!(
            "stops the guest: {graceful}, up to {timeout}, then a hard stop"
        ));
    }
    Ok(with(Action::Update, notes).with_fields(drift.fields()))
}

/// What `status` shows of a VM in sync: its power state, process and uptime, and the
/// addresses dnsmasq leased to its NICs: `power: running (pid 42, up 3m 12s); addresses:
/// 10.0.0.10 on br0`.
fn in_sync_note(
    name: &str,
    spec: &VirtualMachineSpec,
    dir: &super::observed::ObservedDir,
    runtime: &Runtime,
    host: &HostVms,
    now: SystemTime,
) -> String {
    let process = dir.process.as_ref();
    let uptime = process
        .and_then(|process| process.started)
        .and_then(|started| now.duration_since(started).ok())
        .map(|up| {
            format!(
                ", up {}",
                humantime::format_duration(Duration::from_secs(up.as_secs()))
            )
        })
        .unwrap_or_default();
    let mut note = match (runtime, process) {
        (Runtime::Unresponsive(why), process) => format!(
            "power: running (pid {}{uptime}), but its monitor did not answer: {why}",
            process.map(|p| p.pid).unwrap_or_default()
        ),
        (runtime, Some(process)) => format!(
            "power: {} (pid {}{uptime})",
            runtime.describe().to_lowercase(),
            process.pid
        ),
        (runtime, None) => format!("power: {}", runtime.describe().to_lowercase()),
    };
    // A guest that runs but does not come up says so from its console.
    if let Some(process) = process
        && let Some(console) = &dir.console
    {
        if let Some(words) = dir.last_words() {
            note.push_str(&format!("; console: {words}"));
        } else if let Some(silent) = process
            .started
            .and_then(|started| super::console::silence(console, started, now))
        {
            note.push_str(&format!("; console: {silent}"));
        }
    }
    let nics: Vec<(&str, crate::model::MacAddress)> = spec
        .networks
        .iter()
        .enumerate()
        .map(|(index, nic)| (nic.bridge.as_str(), mac_address(name, index, nic.mac)))
        .collect();
    let addresses = host.addresses(&nics, now);
    if !addresses.is_empty() {
        let listed: Vec<String> = addresses
            .iter()
            .map(|leased| format!("{} on {}", leased.address, leased.bridge))
            .collect();
        note.push_str(&format!(
            "; address{}: {}",
            if listed.len() == 1 { "" } else { "es" },
            listed.join(", ")
        ));
    }
    note
}

/// What a create sets, for the plan: the fields people check before a VM starts.
fn creation_fields(spec: &VirtualMachineSpec) -> Result<Vec<FieldChange>, FieldValueError> {
    let null = serde_json::Value::Null;
    let mut fields = vec![
        FieldChange::new("cpus", null.clone(), spec.cpus, Effect::Hot),
        FieldChange::serialized("memory", &null, spec.memory, Effect::Hot)?,
        FieldChange::serialized("boot", &null, &spec.boot, Effect::Hot)?,
    ];
    if !spec.disks.is_empty() {
        fields.push(FieldChange::serialized(
            "disks",
            &null,
            &spec.disks,
            Effect::Hot,
        )?);
    }
    if !spec.networks.is_empty() {
        fields.push(FieldChange::serialized(
            "networks",
            &null,
            &spec.networks,
            Effect::Hot,
        )?);
    }
    fields.push(FieldChange::new(
        "state",
        null,
        spec.state.as_str(),
        Effect::Hot,
    ));
    Ok(fields)
}

/// How long a graceful shutdown of `spec` may take.
pub fn shutdown_timeout(spec: &VirtualMachineSpec) -> std::time::Duration {
    spec.shutdown_timeout
        .map(|d| d.0)
        .unwrap_or(super::DEFAULT_SHUTDOWN_TIMEOUT)
}

/// Whether the leftovers of an interrupted create are provably gitvisor's: the store
/// records the VM (the write-ahead intent precedes the create), and the temporary run
/// dir holds gitvisor's record for it or nothing.
fn leftovers_removable(observed: &ObservedVm, recorded: bool) -> bool {
    let marker = match &observed.leftover_dir {
        Some(RecordRead::Present(record)) if record.name == observed.name => Marker::Ours,
        Some(RecordRead::Present(_)) | Some(RecordRead::Foreign(_)) => {
            Marker::Foreign("another record".into())
        }
        Some(RecordRead::Missing) | None => Marker::Absent,
    };
    Evidence::new(marker, recorded).leftover() == Leftover::Remove
}

/// Deletes for VMs gitvisor owns that are no longer declared.
pub fn pruned(
    declared: &BTreeSet<&str>,
    host: &HostVms,
    context: &PlanContext,
    stale_kernel_caches: &[String],
) -> Vec<Change> {
    let mut changes = Vec::new();
    for name in host.names() {
        if declared.contains(name.as_str()) {
            continue;
        }
        let Ok(parsed) = Name::parse(&name) else {
            continue;
        };
        let id = ResourceId::new(Kind::VirtualMachine, parsed);
        let recorded = context.is_recorded(&id);
        let observed = host.vm(&name, &[], 0);
        let marker = if observed.dir.is_some() {
            observed.marker()
        } else if !observed.taps.is_empty() || observed.data {
            // Taps marked for it, or a data dir in gitvisor's own state dir (the host
            // rebooted, emptying the run dir, since it was last applied).
            Marker::Ours
        } else if leftovers_removable(&observed, recorded) {
            // Only a temporary run dir: the leftover of a create that never finished.
            Marker::Ours
        } else {
            continue;
        };
        match Evidence::new(marker, recorded).undeclared() {
            Prune::Delete => {
                let leftovers_removable = leftovers_removable(&observed, recorded);
                changes.push(
                    Change::new(id, Action::Delete)
                        .with_reason(
                            "no longer declared: stopped, its taps, run dir and data dir (UEFI variables) removed",
                        )
                        .with_observed(VmSnapshot {
                            observed,
                            prepared: None,
                            problems: Vec::new(),
                            leftovers_removable,
                            stale_kernel_caches: stale_kernel_caches.to_vec(),
                        }),
                );
            }
            Prune::KeepAndWarn(why) => tracing::warn!(vm = %name, "{why}"),
            Prune::Keep => {}
        }
    }
    changes
}
