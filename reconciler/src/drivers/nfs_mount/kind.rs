//! The NfsMount kind: an NFS share mounted on this host. Listed once in
//! `drivers/registry.rs`.

use futures::future::BoxFuture;

use super::{NfsMountDriver, NfsMountSpec};
use crate::drivers::Registration;
use crate::drivers::probe::Facility;

/// The NfsMount kind's registration.
pub const REGISTRATION: Registration = Registration {
    check: super::validate::check,
    check_revision: super::validate::check_revision,
    ..Registration::new::<NfsMountSpec>(probe, NfsMountDriver::connect_driver)
};

fn probe() -> BoxFuture<'static, Vec<Facility>> {
    Box::pin(super::probe::probe())
}
