//! A VirtualMachine's validation, reached through its registration: the rules of one VM
//! on its own ([`check`]: cpus and memory a guest can have, one boot method, one source
//! per disk, the spec's own problems), and across the revision ([`check_revision`]: a MAC
//! address is on one NIC of the host).

use std::collections::HashMap;

use super::{MAX_VM_MEMORY, VirtualMachineSpec};
use crate::manifest::{Diagnostic, LoadedResource};
use crate::model::{ByteSize, MacAddress};

/// The rules of one VM on its own; every finding goes to `diagnostics`.
pub(crate) fn check(item: &LoadedResource, diagnostics: &mut Vec<Diagnostic>) {
    let mut error =
        |field: &str, message: String| diagnostics.push(item.diagnostic(field, message));
    let Some(vm) = item.resource.spec.get::<VirtualMachineSpec>() else {
        return;
    };
    if vm.cpus == 0 || vm.cpus > 255 {
        error("spec.cpus", format!("cpus must be 1-255, not {}", vm.cpus));
    }
    if vm.memory.bytes() < (16 << 20) {
        error("spec.memory", "memory must be at least 16MiB".into());
    } else if vm.memory.bytes() > MAX_VM_MEMORY {
        error(
            "spec.memory",
            format!(
                "{} is more than a guest may have, {}",
                vm.memory,
                ByteSize(MAX_VM_MEMORY)
            ),
        );
    }
    let boot = &vm.boot;
    if boot.kernel.is_some() == boot.firmware.is_some() {
        error(
            "spec.boot",
            "exactly one of `kernel` (direct boot) and `firmware` is required".into(),
        );
    }
    if boot.firmware.is_some() && (boot.initrd.is_some() || boot.cmdline.is_some()) {
        error(
            "spec.boot",
            "`initrd` and `cmdline` need direct kernel boot (`kernel`)".into(),
        );
    }
    for (i, disk) in vm.disks.iter().enumerate() {
        if disk.volume.is_some() == disk.path.is_some() {
            error(
                &format!("spec.disks[{i}]"),
                "exactly one of `volume` and `path` is required".into(),
            );
        }
    }
    for (field, message) in vm.problems() {
        error(&field, message);
    }
}

/// Every NIC's MAC address (where one is declared) is its own among the VMs `selected`
/// for this host; a repeat is reported at the later one, naming the earlier one's place.
pub(crate) fn check_revision(selected: &[&LoadedResource], diagnostics: &mut Vec<Diagnostic>) {
    let mut macs: HashMap<MacAddress, (&LoadedResource, String)> = HashMap::new();
    for &item in selected {
        let Some(vm) = item.resource.spec.get::<VirtualMachineSpec>() else {
            continue;
        };
        for (i, nic) in vm.networks.iter().enumerate() {
            let Some(mac) = nic.mac else { continue };
            let field = format!("spec.networks[{i}].mac");
            match macs.get(&mac) {
                Some((first, first_field)) => diagnostics.push(item.diagnostic(
                    &field,
                    format!(
                        "MAC address {mac} is already used by {} {first_field} at {}; every NIC needs its own",
                        first.resource.id(),
                        first.place(first_field)
                    ),
                )),
                None => {
                    macs.insert(mac, (item, field));
                }
            }
        }
    }
}
