//! The Container kind: an OCI container run by runc under a gitvisor supervisor.
//!
//! The one value the engine knows this folder by: how the kind's documents read and
//! what their schema is (from the spec type), what the host must offer it (`doctor`),
//! and how its driver connects. Listed once in `drivers/registry.rs`.

use futures::future::BoxFuture;

use super::ContainerDriver;
use crate::drivers::container::ContainerSpec;
use crate::drivers::probe::Facility;
use crate::drivers::{Helper, Registration};

/// The Container kind's registration.
pub const REGISTRATION: Registration = Registration {
    check: super::validate::check,
    maintenance: Some(super::collect_images),
    collect: Some(super::collect_now),
    logs: Some(super::logs::print_logs),
    exec: Some(super::exec::prepare),
    helper: Some(Helper {
        command: "container-shim",
        run: super::shim::run_command,
    }),
    ..Registration::new::<ContainerSpec>(probe, ContainerDriver::connect_driver)
};

fn probe() -> BoxFuture<'static, Vec<Facility>> {
    Box::pin(super::probe::probe())
}
