//! The Volume driver (LVM logical volumes, DESIGN §2). This build does not have the
//! driver yet; its host probe is here so `gitvisor doctor` can already tell whether a
//! host could run it.

pub mod probe;
