//! The CPUID a vCPU reports: what KVM supports, with the topology filled in so the guest
//! sees `count` single-threaded cores, each with its own APIC id, and the hypervisor bit.

use kvm_bindings::{CpuId, kvm_cpuid_entry2};

/// Leaf 1 ECX: running under a hypervisor.
const HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 EDX: more than one logical processor per package.
const HTT: u32 = 1 << 28;
/// Leaf 0xB ECX level types.
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;

/// Adjusts one entry for vCPU `id` of `count`.
pub fn adjust(entry: &mut kvm_cpuid_entry2, id: u8, count: u8) {
    let id = u32::from(id);
    let count = u32::from(count);
    match entry.function {
        1 => {
            // EBX: APIC id (31:24), logical processors (23:16), CLFLUSH line size in
            // 8-byte units (15:8), brand index (7:0).
            entry.ebx = (id << 24) | (count << 16) | (8 << 8) | (entry.ebx & 0xff);
            entry.ecx |= HYPERVISOR;
            if count > 1 {
                entry.edx |= HTT;
            } else {
                entry.edx &= !HTT;
            }
        }
        0xb => {
            // Extended topology: one thread per core, `count` cores per package.
            let (shift, processors, level) = match entry.index {
                0 => (0, 1, LEVEL_SMT),
                1 => (
                    u32::BITS - (count.max(1) - 1).leading_zeros(),
                    count,
                    LEVEL_CORE,
                ),
                _ => (0, 0, 0),
            };
            entry.eax = shift;
            entry.ebx = processors;
            entry.ecx = (level << 8) | (entry.index & 0xff);
            entry.edx = id;
        }
        _ => {}
    }
}

/// The CPUID for vCPU `id` of `count`, from what KVM supports.
pub fn for_vcpu(supported: &CpuId, id: u8, count: u8) -> CpuId {
    let mut cpuid = supported.clone();
    for entry in cpuid.as_mut_slice() {
        adjust(entry, id, count);
    }
    cpuid
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ebx: 0xffff_ff07,
            edx: HTT,
            ..Default::default()
        }
    }

    #[test]
    fn leaf_one_carries_the_apic_id_and_the_processor_count() {
        let mut leaf = entry(1, 0);
        adjust(&mut leaf, 3, 4);
        assert_eq!(leaf.ebx, 0x0304_0807);
        assert_ne!(leaf.ecx & HYPERVISOR, 0);
        assert_ne!(leaf.edx & HTT, 0);
        let mut single = entry(1, 0);
        adjust(&mut single, 0, 1);
        assert_eq!(single.edx & HTT, 0);
    }

    #[test]
    fn extended_topology_says_one_thread_per_core() {
        let mut smt = entry(0xb, 0);
        adjust(&mut smt, 2, 3);
        assert_eq!((smt.eax, smt.ebx, smt.ecx, smt.edx), (0, 1, 0x100, 2));
        let mut core = entry(0xb, 1);
        adjust(&mut core, 2, 3);
        // 3 cores need 2 bits of APIC id.
        assert_eq!((core.eax, core.ebx, core.ecx, core.edx), (2, 3, 0x201, 2));
        let mut end = entry(0xb, 2);
        adjust(&mut end, 2, 3);
        assert_eq!((end.eax, end.ebx, end.ecx & 0xff00), (0, 0, 0));
    }
}
