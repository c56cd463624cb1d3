//! The controller's malloc arenas: `gitvisor run` starts itself again with
//! `MALLOC_ARENA_MAX=2` unless the variable is already set.
//!
//! # Why
//!
//! glibc's malloc gives every thread that allocates an arena of its own (up to eight per
//! core) and keeps what is freed in it for that arena's next allocations. The
//! controller's threads (the runtime's workers, its blocking pool) all take part in a
//! reconcile, so after a thousand bridges were applied each arena holds its share of
//! the freed peak: measured with 1000 bridges, the idle controller held 85 MiB resident
//! with the default arenas and 50–54 MiB with one or two, the same work done.
//!
//! The limit can only be set before malloc starts: `mallopt` needs `unsafe` (forbidden
//! in this workspace), another allocator a C dependency. So the controller sets the
//! environment variable glibc reads at start and executes itself again, the same
//! process (same pid, arguments and descriptors; `exec` returns only on failure, and
//! then the controller carries on with the default arenas). Two, not one: the runtime's
//! workers allocate at the same time, and one arena would make them wait on its lock.
//! An administrator's own `MALLOC_ARENA_MAX` (or one left by this exec) is kept. Other
//! allocators ignore the variable; children (nft, dnsmasq, runc, QEMU) inherit it,
//! which bounds their arenas the same harmless way.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// The variable glibc reads when its malloc starts.
pub const VARIABLE: &str = "MALLOC_ARENA_MAX";
/// The controller's arenas.
pub const ARENAS: &str = "2";

/// Executes this program again with [`VARIABLE`] set, unless it already is; returns only
/// when it is set or the exec failed (logged).
pub fn limit_malloc_arenas() {
    if std::env::var_os(VARIABLE).is_some() {
        return;
    }
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| OsString::from("gitvisor"));
    let error = Command::new("/proc/self/exe")
        .arg0(arg0)
        .args(args)
        .env(VARIABLE, ARENAS)
        .exec();
    tracing::warn!(
        "cannot execute /proc/self/exe again with {VARIABLE}={ARENAS}: {error}; the controller runs with glibc's default malloc arenas (more memory held after a large reconcile)"
    );
}
