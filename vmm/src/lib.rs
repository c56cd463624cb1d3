//! gitvisor's builtin microVM monitor: one process per KVM guest, in the spirit of
//! Firecracker and rust-vmm's vmm-reference, built on the rust-vmm crates.
//!
//! The only crate of the workspace allowed `unsafe`: every block holds one call and says
//! why it is sound (`clippy::undocumented_unsafe_blocks` and
//! `clippy::multiple_unsafe_ops_per_block` are denied).
//!
//! How a guest comes up (see [`vm`] for what runs concurrently):
//! 1. the KVM VM and its in-kernel interrupt controllers (PIC, IOAPIC, LAPICs) are
//!    created, guest memory is mapped ([`memory`]);
//! 2. the memory is registered with KVM and the PIT created, while another thread wires
//!    the devices ([`devices`]: 16550 serial, i8042, ACPI power registers, the ACPI power
//!    button, virtio-mmio block and net), writes the kernel, initrd, command line, zero
//!    page, ACPI tables ([`acpi`]) and MP table ([`boot`]), and creates the vCPUs;
//! 3. the queue threads start (disk I/O and NIC transmission, off the vCPUs), then one
//!    thread per vCPU ([`vcpu`]); the main thread runs the event loop ([`event_loop`]):
//!    control API, console socket, tap input, signals.
//!
//! The process ends when the guest resets (i8042, ACPI reset register, triple fault or a
//! KVM system event) or powers off (ACPI S5), on `stop` over the control API, or on
//! SIGTERM, SIGINT or SIGHUP; the vCPU threads are kicked out of `KVM_RUN` and joined
//! first. The control API's `shutdown` presses the ACPI power button and waits for the
//! guest to power off. The command line and control API are documented in `docs/vmm.md`.

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
