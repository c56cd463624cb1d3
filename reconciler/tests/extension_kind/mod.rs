//! A throwaway kind, `MarkerFile`, defined the way a driver folder defines one: its spec
//! type (`spec.rs`), its driver over a real facility (`driver.rs`: files in a directory),
//! and its registration, below. `extension_kind.rs` adds it with one `register` call and
//! checks that the engine (load, validate, plan, apply, schema, doctor) handles it
//! without naming it anywhere.

mod driver;
mod spec;

use futures::future::BoxFuture;
use gitvisor::drivers::Registration;
use gitvisor::drivers::probe::Facility;

pub use driver::{MARKER, MarkerFileDriver};
pub use spec::{KIND, MarkerFileSpec};

/// The one value the engine knows this folder by.
pub const REGISTRATION: Registration =
    Registration::new::<MarkerFileSpec>(probe, MarkerFileDriver::connect);

/// What this kind needs of the host: a writable run directory (nothing to probe here but
/// that the probe is asked, which `doctor` shows).
fn probe() -> BoxFuture<'static, Vec<Facility>> {
    Box::pin(async {
        vec![Facility::ok(
            "marker-files",
            "files under the run directory",
        )]
    })
}
