//! vCPUs: their initial state and the thread that runs each.
//!
//! Every vCPU gets its CPUID (topology, APIC id), the boot MSRs, an FPU in its reset state
//! and its local APIC's LINT0/LINT1 wired as ExtINT/NMI (what the MP table says). Only the
//! boot vCPU (id 0) gets registers: long mode with the boot GDT and identity page tables,
//! `%rip` at the kernel's 64-bit entry and `%rsi` at the zero page. The others wait in
//! KVM's in-kernel LAPIC for INIT/SIPI from the guest, like real application processors.
//!
//! Each vCPU runs on a thread of its own ([`handle`]): the run loop forwards port and
//! MMIO exits to the [`Bus`](crate::bus::Bus), turns resets, triple faults and failures
//! into an [`ExitReason`](crate::exit::ExitReason), and ends when the VMM exits, kicked out
//! of `KVM_RUN` and joined by its [`VcpuHandle`].

pub mod cpuid;
pub mod handle;

pub use handle::{ExitHandler, VcpuHandle};

use kvm_bindings::{CpuId, Msrs, kvm_fpu, kvm_msr_entry};
use kvm_ioctls::VcpuFd;

use crate::boot::gdt;
use crate::layout::{BOOT_STACK_POINTER, GDT_START, IDT_START, PML4_START, ZERO_PAGE_START};

/// Errors configuring a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    #[error("cannot {operation} of vCPU {vcpu}: {source}")]
    Kvm {
        vcpu: u8,
        operation: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("vCPU {vcpu}: KVM set {set} of {wanted} MSRs; the host KVM lacks some of them")]
    Msrs { vcpu: u8, set: usize, wanted: usize },
    #[error("cannot build the MSR list: {0}")]
    MsrList(String),
}

const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
/// IA32_MISC_ENABLE: fast string operations.
const MISC_ENABLE_FAST_STRING: u64 = 1;

const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// Local APIC register offsets and the delivery modes of the LVT entries.
const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

/// The MSRs every vCPU starts with.
pub fn boot_msrs() -> Vec<kvm_msr_entry> {
    [
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
    ]
    .into_iter()
    .map(|(index, data)| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    })
    .collect()
}

/// Sets an LVT entry's delivery mode (bits 8–10) in a LAPIC register page.
pub fn set_lvt_mode(registers: &mut [std::os::raw::c_char], offset: usize, mode: u32) {
    let mut bytes = [0u8; 4];
    for (byte, register) in bytes.iter_mut().zip(&registers[offset..offset + 4]) {
        *byte = *register as u8;
    }
    let value = (u32::from_le_bytes(bytes) & !0x700) | (mode << 8);
    for (register, byte) in registers[offset..offset + 4]
        .iter_mut()
        .zip(value.to_le_bytes())
    {
        *register = byte as std::os::raw::c_char;
    }
}

/// Puts vCPU `id` of `count` in its initial state; `entry` is the boot vCPU's start.
pub fn configure(
    vcpu: &VcpuFd,
    supported_cpuid: &CpuId,
    id: u8,
    count: u8,
    entry: Option<u64>,
) -> Result<(), VcpuError> {
    let kvm = |operation| {
        move |source| VcpuError::Kvm {
            vcpu: id,
            operation,
            source,
        }
    };
    vcpu.set_cpuid2(&cpuid::for_vcpu(supported_cpuid, id, count))
        .map_err(kvm("set the CPUID"))?;

    let wanted = boot_msrs();
    let msrs = Msrs::from_entries(&wanted).map_err(|e| VcpuError::MsrList(format!("{e:?}")))?;
    let set = vcpu.set_msrs(&msrs).map_err(kvm("set the MSRs"))?;
    if set != wanted.len() {
        return Err(VcpuError::Msrs {
            vcpu: id,
            set,
            wanted: wanted.len(),
        });
    }

    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(kvm("set the FPU"))?;

    let mut lapic = vcpu.get_lapic().map_err(kvm("read the local APIC"))?;
    set_lvt_mode(&mut lapic.regs, APIC_LVT0, APIC_MODE_EXTINT);
    set_lvt_mode(&mut lapic.regs, APIC_LVT1, APIC_MODE_NMI);
    vcpu.set_lapic(&lapic).map_err(kvm("set the local APIC"))?;

    if let Some(entry) = entry {
        let mut sregs = vcpu
            .get_sregs()
            .map_err(kvm("read the special registers"))?;
        let table = gdt::boot_gdt();
        sregs.gdt.base = GDT_START;
        sregs.gdt.limit = (table.len() * 8 - 1) as u16;
        sregs.idt.base = IDT_START;
        sregs.idt.limit = 7;
        let code = gdt::segment(table[usize::from(gdt::BOOT_CS / 8)], gdt::BOOT_CS);
        let data = gdt::segment(table[usize::from(gdt::BOOT_DS / 8)], gdt::BOOT_DS);
        sregs.cs = code;
        sregs.ds = data;
        sregs.es = data;
        sregs.fs = data;
        sregs.gs = data;
        sregs.ss = data;
        sregs.tr = gdt::segment(table[usize::from(gdt::BOOT_TSS / 8)], gdt::BOOT_TSS);
        sregs.cr3 = PML4_START;
        sregs.cr4 |= CR4_PAE;
        sregs.cr0 |= CR0_PE | CR0_ET | CR0_PG;
        sregs.efer |= EFER_LME | EFER_LMA;
        vcpu.set_sregs(&sregs)
            .map_err(kvm("set the special registers"))?;

        let mut regs = vcpu.get_regs().map_err(kvm("read the registers"))?;
        regs.rflags = 0x2;
        regs.rip = entry;
        regs.rsp = BOOT_STACK_POINTER;
        regs.rbp = BOOT_STACK_POINTER;
        regs.rsi = ZERO_PAGE_START;
        vcpu.set_regs(&regs).map_err(kvm("set the registers"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lvt_mode_changes_only_the_delivery_mode_bits() {
        let mut registers = [0 as std::os::raw::c_char; 1024];
        registers[APIC_LVT0] = 0x30; // vector 0x30
        registers[APIC_LVT0 + 2] = 0x01; // masked
        set_lvt_mode(&mut registers, APIC_LVT0, APIC_MODE_EXTINT);
        let read = |registers: &[std::os::raw::c_char], offset: usize| {
            u32::from_le_bytes([
                registers[offset] as u8,
                registers[offset + 1] as u8,
                registers[offset + 2] as u8,
                registers[offset + 3] as u8,
            ])
        };
        assert_eq!(read(&registers, APIC_LVT0), 0x0001_0730);
        set_lvt_mode(&mut registers, APIC_LVT1, APIC_MODE_NMI);
        assert_eq!(read(&registers, APIC_LVT1), 0x400);
    }

    #[test]
    fn boot_msrs_enable_fast_strings_and_clear_syscall_entry_points() {
        let msrs = boot_msrs();
        let misc = msrs
            .iter()
            .find(|msr| msr.index == MSR_IA32_MISC_ENABLE)
            .expect("MISC_ENABLE");
        assert_eq!(misc.data, 1);
        assert!(
            msrs.iter()
                .filter(|msr| msr.index != MSR_IA32_MISC_ENABLE)
                .all(|msr| msr.data == 0)
        );
    }
}
