//! The Volume kind: an LVM logical volume.
//!
//! The one value the engine knows this folder by: how the kind's documents read and
//! what their schema is (from the spec type), what the host must offer it (`doctor`),
//! and how its driver connects. Listed once in `drivers/registry.rs`.

use futures::future::BoxFuture;

use super::VolumeDriver;
use crate::drivers::Registration;
use crate::drivers::probe::Facility;
use crate::drivers::volume::VolumeSpec;

/// The Volume kind's registration.
pub const REGISTRATION: Registration = Registration {
    check: super::validate::check,
    ..Registration::new::<VolumeSpec>(probe, VolumeDriver::connect_driver)
};

fn probe() -> BoxFuture<'static, Vec<Facility>> {
    Box::pin(super::probe::probe())
}
