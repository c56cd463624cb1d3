//! The VirtualMachine driver (KVM guests through QEMU or the builtin VMM, DESIGN §2).
//! This build does not have the driver yet; its host probe is here so `gitvisor doctor`
//! can already tell whether a host could run it.

pub mod probe;
