//! The Differentiated System Description Table (ACPI 6.5 §5.2.11.1): the devices a stock
//! kernel cannot find on its own, as AML.
//!
//! ```text
//! Scope (\_SB) {
//!     Device (COM1) { _HID PNP0501, _UID 0, _CRS: IO 0x3F8/8, IRQ 4 }
//!     Device (PS2K) { _HID PNP0303, _CRS: IO 0x60/1, IO 0x64/1, IRQ 1 }
//!     Device (PWRB) { _HID PNP0C0C, _UID 0 }
//!     Device (GED0) { _HID "ACPI0013", _UID 0, _CRS: Interrupt (Edge, High) { 3 },
//!                     OperationRegion (GDST, SystemIO, 0x603, 1),
//!                     Field (GDST, ByteAcc) { GDAT, 8 },
//!                     Method (_EVT, 1, Serialized) {
//!                         Store (GDAT, Local0)
//!                         If (And (Local0, 1)) { Notify (\_SB.PWRB, 0x80) } } }
//!     Device (V000) { _HID "LNRO0005", _UID 0, _CCA 1,
//!                     _CRS: Memory32Fixed (RW, base, 0x1000), Interrupt (Edge, High) { irq } }
//!     ...one per virtio-mmio device
//! }
//! Name (\_S5, Package () { 5, 0, 0, 0 })
//! ```
//!
//! `LNRO0005` is the ACPI ID Linux's virtio_mmio driver matches (Firecracker and QEMU's
//! microvm announce their devices the same way); its `_CRS` gives the register window and
//! the interrupt, which the kernel programs into the IOAPIC as edge-triggered, active
//! high. COM1 and the i8042 are listed so PNP-driven probing finds them too. `\_S5`
//! gives the `SLP_TYP` of soft-off for the FADT's sleep control register. `GED0` and
//! `PWRB` are the power button of [`crate::devices::ged`]: the GED's interrupt runs
//! `_EVT`, which reads (and so clears) the event register and notifies the button (0x80:
//! "pressed"), as cloud-hypervisor's and QEMU's `virt` GEDs do.

use super::aml;
use super::fadt::SLP_TYP_S5;
use super::sdt::Sdt;
use crate::boot::MmioAnnouncement;
use crate::devices::ged::EVENT_POWER_BUTTON;
use crate::devices::i8042;
use crate::devices::serial::{COM1_BASE, COM1_LEN};
use crate::layout::{GED_EVENT_PORT, GED_IRQ, I8042_IRQ, SERIAL_IRQ, VIRTIO_MMIO_SIZE};

/// DSDT revision 2: integers are 64 bits wide.
pub const REVISION: u8 = 2;
/// The ACPI hardware ID of a virtio-mmio device.
pub const VIRTIO_MMIO_HID: &str = "LNRO0005";
/// The ACPI hardware ID of a Generic Event Device.
pub const GED_HID: &str = "ACPI0013";
/// `PNP0C0C`: a control-method power button.
const POWER_BUTTON_HID: u32 = aml::eisa_id(b"PNP0C0C");
/// The notify value of a power button press (ACPI 6.5 §5.6.6, Table 5.187).
const NOTIFY_BUTTON_PRESSED: u8 = 0x80;

/// Name prefix of the virtio-mmio devices (`V000`, `V001`, …).
const VIRTIO_NAME_PREFIX: u8 = b'V';

/// `PNP0501`: a 16550-compatible serial port.
const COM1_HID: u32 = aml::eisa_id(b"PNP0501");
/// `PNP0303`: an IBM enhanced (101/102-key) keyboard controller, Linux's i8042 PNP ID.
const I8042_HID: u32 = aml::eisa_id(b"PNP0303");

fn com1() -> Vec<u8> {
    let body = [
        aml::name(b"_HID", &aml::dword(COM1_HID)),
        aml::name(b"_UID", &aml::integer(0)),
        aml::name(
            b"_CRS",
            &aml::resource_template(&[
                aml::io_ports(COM1_BASE, COM1_LEN as u8),
                aml::isa_irq(SERIAL_IRQ as u8),
            ]),
        ),
    ]
    .concat();
    aml::device(b"COM1", &body)
}

fn i8042_device() -> Vec<u8> {
    let body = [
        aml::name(b"_HID", &aml::dword(I8042_HID)),
        aml::name(
            b"_CRS",
            &aml::resource_template(&[
                aml::io_ports(i8042::DATA_PORT, 1),
                aml::io_ports(i8042::COMMAND_PORT, 1),
                aml::isa_irq(I8042_IRQ as u8),
            ]),
        ),
    ]
    .concat();
    aml::device(b"PS2K", &body)
}

fn power_button() -> Vec<u8> {
    let body = [
        aml::name(b"_HID", &aml::dword(POWER_BUTTON_HID)),
        aml::name(b"_UID", &aml::integer(0)),
    ]
    .concat();
    aml::device(b"PWRB", &body)
}

fn generic_event_device() -> Vec<u8> {
    let pressed = aml::and(&[aml::LOCAL0], &aml::integer(u64::from(EVENT_POWER_BUTTON)));
    let notify = aml::notify(&aml::root_path(b"_SB_", b"PWRB"), NOTIFY_BUTTON_PRESSED);
    let evt = [
        aml::store(b"GDAT", &[aml::LOCAL0]),
        aml::if_then(&pressed, &notify),
    ]
    .concat();
    let body = [
        aml::name(b"_HID", &aml::string(GED_HID)),
        aml::name(b"_UID", &aml::integer(0)),
        aml::name(
            b"_CRS",
            &aml::resource_template(&[aml::edge_interrupt(GED_IRQ)]),
        ),
        aml::operation_region(b"GDST", aml::REGION_SYSTEM_IO, u64::from(GED_EVENT_PORT), 1),
        aml::field(b"GDST", aml::FIELD_BYTE_ACCESS, b"GDAT", 8),
        aml::serialized_method(b"_EVT", 1, &evt),
    ]
    .concat();
    aml::device(b"GED0", &body)
}

fn virtio_mmio(index: u16, device: &MmioAnnouncement) -> Vec<u8> {
    let body = [
        aml::name(b"_HID", &aml::string(VIRTIO_MMIO_HID)),
        aml::name(b"_UID", &aml::integer(u64::from(index))),
        aml::name(b"_CCA", &aml::integer(1)),
        aml::name(
            b"_CRS",
            &aml::resource_template(&[
                aml::memory32_fixed(device.base as u32, VIRTIO_MMIO_SIZE as u32),
                aml::edge_interrupt(device.irq),
            ]),
        ),
    ]
    .concat();
    aml::device(&aml::numbered_name(VIRTIO_NAME_PREFIX, index), &body)
}

/// The DSDT for the virtio-mmio `devices`, in their order (`_UID` = position). The caller
/// bounds the count (at most [`crate::layout::MAX_VIRTIO_DEVICES`]); the windows are
/// below 4 GiB by the layout.
pub fn dsdt(devices: &[MmioAnnouncement]) -> Vec<u8> {
    let mut bus = com1();
    bus.extend(i8042_device());
    bus.extend(power_button());
    bus.extend(generic_event_device());
    for (index, device) in devices.iter().enumerate() {
        bus.extend(virtio_mmio(index as u16, device));
    }
    let mut sb = vec![aml::ROOT_PREFIX];
    sb.extend_from_slice(b"_SB_");

    let mut table = Sdt::new(*b"DSDT", REVISION, *b"GVMMDSDT");
    table.extend(&aml::scope(&sb, &bus));
    let s5 = aml::package(&[
        aml::integer(u64::from(SLP_TYP_S5)),
        aml::integer(0),
        aml::integer(0),
        aml::integer(0),
    ]);
    table.extend(&aml::name(b"_S5_", &s5));
    table.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
        haystack
            .windows(needle.len())
            .enumerate()
            .filter(|(_, window)| *window == needle)
            .map(|(at, _)| at)
            .collect()
    }

    #[test]
    fn com1_and_the_i8042_carry_their_pnp_ids() {
        let bytes = dsdt(&[]);
        assert_eq!(find(&bytes, b"\x08_HID\x0c\x41\xd0\x05\x01").len(), 1);
        assert_eq!(find(&bytes, b"\x08_HID\x0c\x41\xd0\x03\x03").len(), 1);
        assert_eq!(find(&bytes, b"LNRO0005").len(), 0);
    }

    #[test]
    fn one_lnro0005_device_per_window_with_its_resources() {
        let devices = [
            MmioAnnouncement {
                base: 0xd000_0000,
                irq: 5,
            },
            MmioAnnouncement {
                base: 0xd000_1000,
                irq: 6,
            },
        ];
        let bytes = dsdt(&devices);
        assert_eq!(&bytes[0..4], b"DSDT");
        assert_eq!(
            u32::from_le_bytes(bytes[4..8].try_into().expect("4")) as usize,
            bytes.len()
        );
        assert_eq!(bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b)), 0);
        assert_eq!(find(&bytes, b"\x0dLNRO0005\x00").len(), 2);
        assert_eq!(find(&bytes, b"V000").len(), 1);
        assert_eq!(find(&bytes, b"V001").len(), 1);
        // Memory32Fixed of the second window and its interrupt, back to back.
        let second = [
            aml::memory32_fixed(0xd000_1000, 0x1000),
            aml::edge_interrupt(6),
        ]
        .concat();
        assert_eq!(find(&bytes, &second).len(), 1);
        // \_S5 at the root: NameOp "_S5_" Package(4) { 5, 0, 0, 0 }.
        assert!(bytes.ends_with(b"\x08_S5_\x12\x07\x04\x0a\x05\x00\x00\x00"));
        // The bus scope opens the body.
        assert_eq!(bytes[36], 0x10);
    }

    #[test]
    fn the_ged_notifies_the_power_button_on_its_interrupt() {
        let bytes = dsdt(&[]);
        // PWRB with EisaId ("PNP0C0C") = 0x0c0cd041.
        assert_eq!(find(&bytes, b"PWRB\x08_HID\x0c\x41\xd0\x0c\x0c").len(), 1);
        assert_eq!(find(&bytes, b"\x0dACPI0013\x00").len(), 1);
        // Its interrupt: GSI 3, edge, active high.
        assert_eq!(find(&bytes, &aml::edge_interrupt(3)).len(), 1);
        // The event register at port 0x603, one byte.
        assert_eq!(find(&bytes, b"\x5b\x80GDST\x01\x0b\x03\x06\x01").len(), 1);
        // _EVT: Store (GDAT, Local0); If (And (Local0, 1)) { Notify (\_SB.PWRB, 0x80) }.
        let evt = b"_EVT\x09\x70GDAT\x60\xa0\x12\x7b\x60\x01\x00\x86\\\x2e_SB_PWRB\x0a\x80";
        assert_eq!(find(&bytes, evt).len(), 1);
    }

    #[test]
    fn the_largest_device_set_still_encodes() {
        let devices: Vec<MmioAnnouncement> = (0..crate::layout::MAX_VIRTIO_DEVICES)
            .map(|index| {
                let (base, irq) = crate::layout::virtio_mmio_slot(index);
                MmioAnnouncement { base, irq }
            })
            .collect();
        let bytes = dsdt(&devices);
        assert_eq!(find(&bytes, b"LNRO0005").len(), devices.len());
        assert_eq!(find(&bytes, b"V012").len(), 1);
        assert_eq!(bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b)), 0);
    }
}
