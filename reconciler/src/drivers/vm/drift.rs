//! How a VM that gitvisor runs differs from its declaration, computed once per VM from
//! the declared spec and the planning snapshot; the diff renders it as [`FieldChange`]s,
//! apply carries it out, so both always agree.
//!
//! Three sources, three effects:
//! - **The record** (what was last applied) against the declaration: every field that
//!   shapes the guest's hardware or boot (`cpus`, `memory`, `boot`, `disks`,
//!   `networks`, `cloudInit`, `console`, `accel`, `hypervisor`, `cdrom`, `graphics`)
//!   takes effect only by restarting the guest ([`Effect::Restart`]): stop (ACPI
//!   powerdown with the timeout, then a hard stop), start with the new command line.
//!   `shutdownTimeout` is gitvisor's own setting and changes the record only, and a
//!   NIC's `publish` is its bridge's rules (`drivers/network/publish.rs`), so it is not
//!   compared and never restarts the guest. Nothing is
//!   left out: a field this list forgets would be silently ignored, so the unit tests
//!   change every field of the spec and expect each to show.
//! - **The process** against the record and the declared `state`: pause, resume, start,
//!   stop ([`Effect::Hot`]). A process whose command line is not the recorded one, or
//!   whose monitor reports a failed guest, is relaunched.
//! - **The taps** against the NICs: a tap missing (created; a running guest lost its
//!   link with it, so that is a restart), not enslaved to its bridge or down (fixed in
//!   place), surplus (removed). On a bridge the revision declares with `vlanFiltering:
//!   true`, a tap carries exactly its NIC's `vlans` (none declared: the kernel's
//!   default, VLAN 1 pvid untagged, as for the bridge's own ports; see
//!   `drivers/vlan_port.rs`), fixed in place like the rest of the tap: the guest does not
//!   see a port's VLANs, so the NIC's `vlans` is not compared with the record and never
//!   restarts it.

use serde::Serialize;

use super::observed::{ObservedTap, ObservedVm, Runtime};
use crate::contract::{Effect, FieldChange, FieldValueError};
use crate::drivers::vlan_port::{VlanDrift, declared_or_default, vlan_list};
use crate::drivers::vm::{Nic, VirtualMachineSpec, VmState};

/// Monitor statuses of a guest that will not run again by itself.
const DEAD_STATUSES: [&str; 3] = ["shutdown", "guest-panicked", "internal-error"];

/// One tap that must change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TapFix {
    /// NIC `nic` has no tap: create it on `bridge`, then give it `vlans`.
    Create {
        nic: usize,
        bridge: String,
        vlans: Option<VlanDrift>,
    },
    /// The tap is not enslaved to `bridge`, is down, or carries other VLANs.
    Attach {
        nic: usize,
        index: u32,
        bridge: String,
        enslave: bool,
        up: bool,
        vlans: Option<VlanDrift>,
    },
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Drift {
    /// Declared fields that differ from the record and need a restart.
    pub restart_fields: Vec<FieldChange>,
    /// Fields that only the record keeps (`shutdownTimeout`).
    pub record_fields: Vec<FieldChange>,
    /// The run state, when the process does not match the declared `state`.
    pub state: Option<FieldChange>,
    /// Why the running process must be relaunched even where no declared field changed.
    pub relaunch: Vec<FieldChange>,
    /// The record says the guest should run, but its process is gone.
    pub died: bool,
    pub taps: Vec<TapFix>,
    /// Taps of NICs no longer declared.
    pub surplus_taps: Vec<ObservedTap>,
}

fn differs<T: PartialEq + Serialize>(
    path: &str,
    old: &T,
    new: &T,
    effect: Effect,
) -> Result<Option<FieldChange>, FieldValueError> {
    if old == new {
        return Ok(None);
    }
    FieldChange::serialized(path, old, new, effect).map(Some)
}

/// The NICs as the guest sees them: without `publish`, which is the bridge's, and
/// without `vlans`, which are the tap's on the bridge.
fn links(nics: &[Nic]) -> Vec<Nic> {
    nics.iter()
        .map(|nic| Nic {
            publish: Vec::new(),
            vlans: Vec::new(),
            ..nic.clone()
        })
        .collect()
}

impl Drift {
    /// How `observed` (whose record is gitvisor's) differs from `desired`.
    pub fn between(
        desired: &VirtualMachineSpec,
        observed: &ObservedVm,
    ) -> Result<Self, FieldValueError> {
        let mut drift = Drift::default();
        let runtime = observed.runtime();
        if let Some(record) = observed.dir.as_ref().and_then(|dir| dir.record()) {
            let old = &record.spec;
            let new = desired;
            let restart = Effect::Restart;
            drift.restart_fields = [
                differs("hypervisor", &old.hypervisor, &new.hypervisor, restart)?,
                differs("cpus", &old.cpus, &new.cpus, restart)?,
                differs("memory", &old.memory, &new.memory, restart)?,
                differs("boot", &old.boot, &new.boot, restart)?,
                differs("disks", &old.disks, &new.disks, restart)?,
                differs(
                    "networks",
                    &links(&old.networks),
                    &links(&new.networks),
                    restart,
                )?,
                differs("cloudInit", &old.cloud_init, &new.cloud_init, restart)?,
                differs("console", &old.console, &new.console, restart)?,
                differs("cdrom", &old.cdrom, &new.cdrom, restart)?,
                differs("graphics", &old.graphics, &new.graphics, restart)?,
                differs("accel", &old.accel, &new.accel, restart)?,
            ]
            .into_iter()
            .flatten()
            .collect();
            drift.record_fields = differs(
                "shutdownTimeout",
                &old.shutdown_timeout,
                &new.shutdown_timeout,
                Effect::Hot,
            )?
            .into_iter()
            .collect();
            drift.died = old.state != VmState::Stopped && runtime == Runtime::Stopped;
            if let Some(process) = observed.dir.as_ref().and_then(|d| d.process.as_ref())
                && process.argv != record.argv
            {
                drift.relaunch.push(FieldChange::new(
                    "process",
                    "a command line other than the one gitvisor launched",
                    "relaunched from the declaration",
                    Effect::Restart,
                ));
            }
        }
        drift.state = state_change(&runtime, desired.state);
        // A guest that ended by itself: the console says why, when the kernel panicked.
        if drift.died
            && let Some(state) = drift.state.as_mut()
            && let Some(words) = observed.last_words()
        {
            state.old = format!("Stopped (the guest's console ended with: {words})").into();
        }
        if drift.state.is_none()
            && let Some(record) = observed.dir.as_ref().and_then(|dir| dir.record())
            && record.spec.state != desired.state
        {
            // The process already is as declared (a guest that ended on its own is now
            // declared Stopped): only the record changes.
            drift.record_fields.push(FieldChange::new(
                "state",
                record.spec.state.as_str(),
                desired.state.as_str(),
                Effect::Hot,
            ));
        }
        // A guest that is over (powered off with the process kept, panicked, or stopped by
        // an emulation error) is relaunched; transient states (migration, an I/O error
        // pause waiting for the disk) are left alone.
        if let Runtime::Other(status) = &runtime
            && DEAD_STATUSES.contains(&status.as_str())
            && desired.state != VmState::Stopped
        {
            drift.relaunch.push(FieldChange::new(
                "state",
                format!("Running ({status})"),
                desired.state.as_str(),
                Effect::Restart,
            ));
        }
        for (nic, declared) in desired.networks.iter().enumerate() {
            let bridge = declared.bridge.to_string();
            let filtering = observed.vlan_filtering.contains(&bridge);
            match observed.tap(nic) {
                None => {
                    drift.taps.push(TapFix::Create {
                        nic,
                        bridge: bridge.clone(),
                        vlans: filtering
                            .then(|| VlanDrift::after_enslave(&declared.vlans))
                            .flatten(),
                    });
                    if runtime.has_process() {
                        drift.relaunch.push(FieldChange::new(
                            format!("networks[{nic}].tap"),
                            "missing (the guest lost its link)",
                            format!("created on {bridge}"),
                            Effect::Restart,
                        ));
                    }
                }
                Some(tap) => {
                    let enslave = observed
                        .bridges
                        .get(&bridge)
                        .is_none_or(|index| tap.master != Some(*index));
                    // A tap about to be enslaved gets the kernel's default on the way in.
                    let vlans = match (filtering, enslave) {
                        (false, _) => None,
                        (true, true) => VlanDrift::after_enslave(&declared.vlans),
                        (true, false) => VlanDrift::between(
                            tap.vlans.clone(),
                            declared_or_default(&declared.vlans),
                        ),
                    };
                    if enslave || !tap.up || vlans.is_some() {
                        drift.taps.push(TapFix::Attach {
                            nic,
                            index: tap.index,
                            bridge: bridge.clone(),
                            enslave,
                            up: !tap.up,
                            vlans,
                        });
                    }
                }
            }
        }
        // Marked for this VM but not one of its declared NICs' taps (a NIC removed, or a
        // tap renamed by hand): removed.
        drift.surplus_taps = observed
            .taps
            .iter()
            .filter(|tap| observed.tap(tap.nic) != Some(*tap) || tap.nic >= desired.networks.len())
            .cloned()
            .collect();
        Ok(drift)
    }

    /// Whether the running guest must be stopped and started again.
    pub fn restarts(&self, runtime: &Runtime, desired: VmState) -> bool {
        runtime.has_process()
            && desired != VmState::Stopped
            && !(self.restart_fields.is_empty() && self.relaunch.is_empty())
    }

    pub fn is_empty(&self) -> bool {
        self.restart_fields.is_empty()
            && self.record_fields.is_empty()
            && self.state.is_none()
            && self.relaunch.is_empty()
            && !self.died
            && self.taps.is_empty()
            && self.surplus_taps.is_empty()
    }

    /// The drift as the plan shows it.
    pub fn fields(&self) -> Vec<FieldChange> {
        let mut fields = self.restart_fields.clone();
        fields.extend(self.relaunch.iter().cloned());
        fields.extend(self.state.iter().cloned());
        fields.extend(self.record_fields.iter().cloned());
        for fix in &self.taps {
            match fix {
                TapFix::Create { .. } => {} // shown by the relaunch, or part of the start
                TapFix::Attach {
                    nic,
                    bridge,
                    enslave,
                    up,
                    vlans,
                    ..
                } => {
                    let mut old = Vec::new();
                    if *enslave {
                        old.push(format!("not enslaved to {bridge}"));
                    }
                    if *up {
                        old.push("down".to_owned());
                    }
                    if !old.is_empty() {
                        fields.push(FieldChange::new(
                            format!("networks[{nic}].tap"),
                            old.join(", "),
                            format!("on {bridge}, up"),
                            Effect::Hot,
                        ));
                    }
                    if let Some(vlans) = vlans {
                        fields.push(FieldChange::new(
                            format!("networks[{nic}].vlans"),
                            vlan_list(&vlans.old),
                            vlan_list(&vlans.new),
                            Effect::Hot,
                        ));
                    }
                }
            }
        }
        for tap in &self.surplus_taps {
            fields.push(FieldChange::new(
                format!("networks[{}].tap", tap.nic),
                tap.name.clone(),
                serde_json::Value::Null,
                Effect::Hot,
            ));
        }
        fields
    }
}

/// The state change the process needs, if any.
fn state_change(runtime: &Runtime, desired: VmState) -> Option<FieldChange> {
    let matches = match desired {
        VmState::Running => !matches!(runtime, Runtime::Stopped | Runtime::Paused),
        VmState::Paused => matches!(runtime, Runtime::Paused | Runtime::Unresponsive(_)),
        VmState::Stopped => *runtime == Runtime::Stopped,
    };
    (!matches).then(|| FieldChange::new("state", runtime.describe(), desired.as_str(), Effect::Hot))
}
