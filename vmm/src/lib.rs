//! gitvisor's builtin microVM monitor: one process per KVM guest, in the spirit of
//! Firecracker and rust-vmm's vmm-reference, built on the rust-vmm crates.
//!
//! The only crate of the workspace allowed `unsafe`: every block holds one call and says
//! why it is sound (`clippy::undocumented_unsafe_blocks` and
//! `clippy::multiple_unsafe_ops_per_block` are denied).
//!
//! How a guest comes up (see [`vm::Vm::new`]):
//! 1. guest memory is mapped ([`memory`]) and handed to KVM;
//! 2. the in-kernel interrupt controllers (PIC, IOAPIC, LAPICs) and PIT are created;
//! 3. the devices are wired: 16550 serial, i8042, ACPI power registers, virtio-mmio block
//!    and net ([`devices`]);
//! 4. the kernel, initrd, command line, zero page, ACPI tables ([`acpi`]) and MP table are
//!    written ([`boot`]);
//! 5. one thread per vCPU ([`vcpu`]) runs the guest; the main thread runs the event loop
//!    ([`event_loop`]): control API, console socket, tap input, signals.
//!
//! The process ends when the guest resets (i8042, ACPI reset register or triple fault) or
//! powers off (ACPI S5), on `stop` over the control API, or on SIGTERM/SIGINT. The
//! command line and control API are documented in `docs/vmm.md`.

pub mod acpi;
pub mod boot;
pub mod bus;
pub mod config;
pub mod control;
pub mod daemon;
pub mod devices;
pub mod event_loop;
pub mod exit;
pub mod host_memory;
pub mod layout;
pub mod memory;
pub mod vcpu;
pub mod vm;
