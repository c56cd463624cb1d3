//! The GDT the boot vCPU starts with, and the segment registers KVM takes, derived from
//! the same descriptors so the two never disagree.
//!
//! The Linux 64-bit boot protocol (Documentation/arch/x86/boot.rst, "64-bit Boot
//! Protocol") asks for a GDT with `__BOOT_CS` (selector 0x10) a 64-bit code segment with
//! execute/read permission and `__BOOT_DS` (0x18) a read/write data segment, both flat.
//! Slot 4 is a TSS: VMX refuses to enter a guest whose task register is unusable.

use kvm_bindings::kvm_segment;

/// Access/flags of a flat 64-bit code segment (G, L, P, S, type execute/read accessed).
pub const CODE64_FLAGS: u16 = 0xa09b;
/// Access/flags of a flat data segment (G, D/B, P, S, type read/write accessed).
pub const DATA_FLAGS: u16 = 0xc093;
/// Access/flags of a 64-bit busy TSS.
pub const TSS_FLAGS: u16 = 0x808b;

/// `__BOOT_CS`.
pub const BOOT_CS: u16 = 0x10;
/// `__BOOT_DS`.
pub const BOOT_DS: u16 = 0x18;
/// The task register's selector.
pub const BOOT_TSS: u16 = 0x20;

/// One GDT descriptor from its flags (the access byte in bits 0–7, the flags nibble in
/// 12–15), base and limit, laid out as the CPU reads it.
pub fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let base = u64::from(base);
    let limit = u64::from(limit);
    ((base & 0xff00_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0x0000_ffff)
        | ((limit & 0x000f_0000) << 32)
        | ((u64::from(flags) & 0xf0ff) << 40)
}

/// The boot GDT: null, null, code, data, TSS.
pub fn boot_gdt() -> [u64; 5] {
    [
        0,
        0,
        gdt_entry(CODE64_FLAGS, 0, 0xfffff),
        gdt_entry(DATA_FLAGS, 0, 0xfffff),
        gdt_entry(TSS_FLAGS, 0, 0xfffff),
    ]
}

/// The segment register that loading `selector` with descriptor `entry` gives.
pub fn segment(entry: u64, selector: u16) -> kvm_segment {
    let field = |shift: u32, mask: u64| ((entry >> shift) & mask) as u8;
    let granular = field(55, 1);
    let raw_limit = ((entry & 0xffff) | ((entry >> 32) & 0xf_0000)) as u32;
    let present = field(47, 1);
    kvm_segment {
        base: ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000),
        limit: if granular == 1 {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        },
        selector,
        type_: field(40, 0xf),
        present,
        dpl: field(45, 3),
        db: field(54, 1),
        s: field(44, 1),
        l: field(53, 1),
        g: granular,
        avl: field(52, 1),
        unusable: u8::from(present == 0),
        padding: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_match_the_well_known_encodings() {
        // The flat 64-bit code and data descriptors every boot loader writes.
        assert_eq!(gdt_entry(CODE64_FLAGS, 0, 0xfffff), 0x00af_9b00_0000_ffff);
        assert_eq!(gdt_entry(DATA_FLAGS, 0, 0xfffff), 0x00cf_9300_0000_ffff);
        assert_eq!(
            gdt_entry(0x0093, 0x1234_5678, 0xabcde),
            0x120a_9334_5678_bcde
        );
    }

    #[test]
    fn segments_decode_what_the_descriptors_say() {
        let gdt = boot_gdt();
        let cs = segment(gdt[usize::from(BOOT_CS / 8)], BOOT_CS);
        assert_eq!(
            (cs.type_, cs.l, cs.db, cs.present, cs.s, cs.g),
            (0xb, 1, 0, 1, 1, 1)
        );
        assert_eq!((cs.base, cs.limit, cs.selector), (0, 0xffff_ffff, 0x10));
        let ds = segment(gdt[usize::from(BOOT_DS / 8)], BOOT_DS);
        assert_eq!((ds.type_, ds.l, ds.db, ds.unusable), (0x3, 0, 1, 0));
        let tss = segment(gdt[usize::from(BOOT_TSS / 8)], BOOT_TSS);
        assert_eq!((tss.type_, tss.s, tss.present), (0xb, 0, 1));
        assert_eq!(segment(0, 0).unusable, 1);
    }
}
