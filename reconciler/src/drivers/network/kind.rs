//! The Bridge kind: a Linux bridge with its addresses, DHCP and published ports, applied by the network driver (links through `bridge/`, rules and DHCP here).
//!
//! The one value the engine knows this folder by: how the kind's documents read and
//! what their schema is (from the spec type), what the host must offer it (`doctor`),
//! and how its driver connects. Listed once in `drivers/registry.rs`.

use futures::future::BoxFuture;

use super::ManagedBridgeDriver;
use crate::drivers::Registration;
use crate::drivers::bridge::BridgeSpec;
use crate::drivers::probe::Facility;

/// The Bridge kind's registration.
pub const REGISTRATION: Registration = Registration {
    check: super::validate::check,
    check_revision: super::validate::check_revision,
    status_tables: &[super::LEASES_TABLE],
    ..Registration::new::<BridgeSpec>(probe, ManagedBridgeDriver::connect_driver)
};

fn probe() -> BoxFuture<'static, Vec<Facility>> {
    Box::pin(async {
        let (mut links, network) = futures::join!(
            crate::drivers::bridge::probe::probe(),
            super::probe::probe()
        );
        links.extend(network);
        links
    })
}
