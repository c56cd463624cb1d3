//! The VirtualMachine kind: a KVM guest run by QEMU or the builtin VMM.
//!
//! The one value the engine knows this folder by: how the kind's documents read and
//! what their schema is (from the spec type), what the host must offer it (`doctor`),
//! and how its driver connects. Listed once in `drivers/registry.rs`.

use futures::future::BoxFuture;

use super::VmDriver;
use crate::drivers::probe::Facility;
use crate::drivers::vm::VirtualMachineSpec;
use crate::drivers::{KindAnnotation, Registration};
use crate::model::OVERCOMMIT_ANNOTATION;

/// The VirtualMachine kind's registration.
pub const REGISTRATION: Registration = Registration {
    check: super::validate::check,
    check_revision: super::validate::check_revision,
    annotations: &[KindAnnotation {
        key: OVERCOMMIT_ANNOTATION,
        about: "a guest's memory",
    }],
    console: Some(super::paths::console),
    ..Registration::new::<VirtualMachineSpec>(probe, VmDriver::connect_driver)
};

fn probe() -> BoxFuture<'static, Vec<Facility>> {
    Box::pin(super::probe::probe())
}
