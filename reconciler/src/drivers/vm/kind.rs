//! The VirtualMachine kind: a KVM guest run by QEMU or the builtin VMM.
//!
//! The one value the engine knows this folder by: how the kind's documents read and
//! what their schema is (from the spec type), what the host must offer it (`doctor`),
//! and how its driver connects. Listed once in `drivers/registry.rs`.

use futures::future::BoxFuture;

use super::VmDriver;
use crate::drivers::Registration;
use crate::drivers::probe::Facility;
use crate::drivers::vm::VirtualMachineSpec;

/// The VirtualMachineSpec kind's registration.
pub const REGISTRATION: Registration =
    Registration::new::<VirtualMachineSpec>(probe, VmDriver::connect_driver);

fn probe() -> BoxFuture<'static, Vec<Facility>> {
    Box::pin(super::probe::probe())
}
