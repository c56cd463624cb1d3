//! The builtin VMM's kernel cache: where `hypervisor: builtin` guests keep their kernel
//! decompressed, and when an entry goes.
//!
//! gitvisor-vmm's `--kernel-cache DIR` decompresses a bzImage's kernel once and boots the
//! ELF from `DIR` at every later start (`vmm/src/boot/kernel_cache.rs`): on a nested guest
//! that is 2-3x faster to `/init` than decompressing in the guest at every boot
//! (`docs/vmm.md`). The driver passes it to every builtin guest booted from a kernel,
//! with one directory per declared kernel path below `<state dir>/vmm-kernels/`, named by
//! a hash of the path ([`cache_dir_name`]). The VMM names the files inside (by the
//! compressed payload); gitvisor never has to read a kernel to know which directory a VM
//! uses, and a directory is in use exactly when a declared builtin VM boots that path.
//!
//! # Collection, and why at prune
//!
//! A directory no declared builtin VM boots from is removed by the first apply of a VM
//! change (a delete above all: the prune of the last VM using a kernel; an update that
//! moves a VM to another kernel or hypervisor) after the plan that found it stale. The
//! plan computes the stale directories from the observed ones and the revision's VMs
//! (pure, like the rest of the diff) and each change carries them; apply removes them
//! after the VM's own steps (gone is done, so two changes carrying the same directory
//! agree). Not the kind's hourly housekeeping: that hook runs only with `gitvisor run
//! --image-gc-after`, not in the CLI's `apply`, and sees no revision, so it could only
//! guess which kernels are still declared; a stale directory only appears when a VM
//! change is applied, which is exactly when it is collected.
//!
//! Removing a directory never harms a running guest: the VMM copies the kernel into guest
//! memory at start and does not read the file again. A kernel file replaced in place (the
//! same path, another image) leaves the old image's entry next to the new one until no
//! VM boots that path; distributions install each kernel under its own versioned path.
//!
//! A guest launched before the driver passed the option keeps running: drift compares a
//! process's command line with the one recorded at its launch, not with the one a launch
//! would use now (`drift.rs`); the option appears at its next (re)start.

use std::collections::BTreeSet;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use crate::drivers::vm::{Hypervisor, VirtualMachineSpec};
use crate::model::Resource;

/// The subdirectory of gitvisor's state dir that holds the kernel cache.
pub const KERNEL_CACHE_SUBDIR: &str = "vmm-kernels";

/// How many hex digits of the path's SHA-256 name its directory.
const NAME_DIGITS: usize = 16;

/// The cache directory's name for the kernel at `kernel` (as declared).
pub fn cache_dir_name(kernel: &str) -> String {
    let digest = Sha256::digest(kernel.as_bytes());
    digest
        .iter()
        .take(NAME_DIGITS / 2)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Whether `name` is one of the names [`cache_dir_name`] makes: only those are ever
/// removed.
pub fn is_cache_dir_name(name: &str) -> bool {
    name.len() == NAME_DIGITS
        && name
            .bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
}

/// The kernel a builtin guest of `spec` boots through the cache, if any.
pub fn cached_kernel(spec: &VirtualMachineSpec) -> Option<&str> {
    (spec.hypervisor == Hypervisor::Builtin)
        .then_some(spec.boot.kernel.as_deref())
        .flatten()
}

/// The observed cache directories that no VM of `declared` boots from.
pub fn stale<'a>(
    observed: &[String],
    declared: impl IntoIterator<Item = &'a Arc<Resource>>,
) -> Vec<String> {
    let in_use: BTreeSet<String> = declared
        .into_iter()
        .filter_map(|resource| resource.spec.get::<VirtualMachineSpec>())
        .filter_map(cached_kernel)
        .map(cache_dir_name)
        .collect();
    observed
        .iter()
        .filter(|name| is_cache_dir_name(name) && !in_use.contains(*name))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Metadata, Name, Spec};

    fn vm(name: &str, spec: &str) -> Arc<Resource> {
        let spec: VirtualMachineSpec = serde_yaml::from_str(spec).expect("test spec parses");
        Arc::new(Resource::new(
            Metadata::named(Name::parse(name).expect("valid")),
            Spec::new(spec),
        ))
    }

    #[test]
    fn a_directory_is_stale_when_no_declared_builtin_vm_boots_its_kernel() {
        let a = cache_dir_name("/boot/a");
        let b = cache_dir_name("/boot/b");
        assert_ne!(a, b);
        assert!(is_cache_dir_name(&a), "{a}");
        let declared = [
            vm(
                "one",
                "hypervisor: builtin\nmemory: 64MiB\nboot: {kernel: /boot/a}",
            ),
            // QEMU does not use the cache: its kernel's directory is not kept for it.
            vm("two", "memory: 64MiB\nboot: {kernel: /boot/b}"),
        ];
        let observed = vec![a.clone(), b.clone(), "not-ours".to_owned()];
        assert_eq!(stale(&observed, &declared), [b]);
        assert_eq!(
            stale(&observed, &[]).len(),
            2,
            "a foreign name is left alone"
        );
    }
}
