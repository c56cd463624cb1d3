//! Tap devices for gitvisor's virtual machines: create a persistent tap, or attach to one.
//!
//! # Why a crate of its own
//!
//! A tap is made by the `TUNSETIFF` ioctl on `/dev/net/tun`; the kernel offers no netlink
//! request for it (`RTM_NEWLINK` with kind `tun` answers `EOPNOTSUPP`). An ioctl is an
//! `unsafe` call, and the workspace forbids `unsafe` everywhere except in a crate whose
//! whole job needs it. This crate is that place for taps: two ioctls, each `unsafe` block
//! documented (`// SAFETY:`, enforced by `clippy::undocumented_unsafe_blocks`), behind a
//! safe API. The VM driver (QEMU backend) creates persistent taps with it and QEMU opens
//! them by name; the builtin VMM attaches to the same taps with [`open`].
//!
//! Everything else about a tap (its `ifalias` marker, its name, its bridge, up/down,
//! deletion) is ordinary netlink and stays in the driver.
//!
//! The tap is created in the network namespace of the calling thread (the kernel takes
//! the namespace of the process that opens `/dev/net/tun`).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::libc;

/// The kernel's limit for an interface name, without the terminating NUL.
pub const IFNAME_MAX: usize = libc::IFNAMSIZ - 1;

const TUN_DEVICE: &str = "/dev/net/tun";

nix::ioctl_write_ptr_bad!(tun_set_iff, libc::TUNSETIFF, libc::ifreq);
nix::ioctl_write_int_bad!(tun_set_persist, libc::TUNSETPERSIST);

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error(
        "{name:?} is not a valid interface name (1-{IFNAME_MAX} bytes, no '/', ':', NUL or whitespace)"
    )]
    InvalidName { name: String },
    #[error("cannot open {TUN_DEVICE} (is the tun module loaded, and are we root?)")]
    OpenDevice {
        #[source]
        cause: std::io::Error,
    },
    #[error("an interface named {name} exists already")]
    Exists { name: String },
    #[error("TUNSETIFF for tap {name}")]
    SetIff {
        name: String,
        #[source]
        cause: Errno,
    },
    #[error("TUNSETPERSIST for tap {name}")]
    SetPersist {
        name: String,
        #[source]
        cause: Errno,
    },
}

impl TapError {
    /// The errno the kernel answered, when it answered one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            TapError::SetIff { cause, .. } | TapError::SetPersist { cause, .. } => Some(*cause),
            TapError::Exists { .. } => Some(Errno::EBUSY),
            TapError::OpenDevice { cause } => cause.raw_os_error().map(Errno::from_raw),
            TapError::InvalidName { .. } => Some(Errno::EINVAL),
        }
    }
}

/// Creates the tap `name`, persistent (it stays when the creating process closes it, until
/// it is deleted), without packet information headers. Fails with [`TapError::Exists`]
/// when any interface of that name exists: an existing tap is never silently taken over.
pub fn create_persistent(name: &str) -> Result<(), TapError> {
    let flags = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_TUN_EXCL;
    let file = set_iff(name, flags).map_err(|error| match error {
        TapError::SetIff {
            cause: Errno::EBUSY,
            name,
        } => TapError::Exists { name },
        other => other,
    })?;
    // SAFETY: `file` is an open /dev/net/tun descriptor attached to a tap by the
    // TUNSETIFF above; TUNSETPERSIST takes its argument by value (an int), so no memory
    // is shared with the kernel.
    unsafe { tun_set_persist(file.as_raw_fd(), 1) }.map_err(|cause| TapError::SetPersist {
        name: name.to_owned(),
        cause,
    })?;
    Ok(())
}

/// Attaches to the existing tap `name` (made with [`create_persistent`]) and returns its
/// queue: frames the guest sends are written to it, frames for the guest are read from
/// it. With `vnet_hdr` each frame carries a `virtio_net_hdr` first.
pub fn open(name: &str, vnet_hdr: bool) -> Result<File, TapError> {
    let mut flags = libc::IFF_TAP | libc::IFF_NO_PI;
    if vnet_hdr {
        flags |= libc::IFF_VNET_HDR;
    }
    set_iff(name, flags)
}

/// Opens /dev/net/tun and binds the descriptor to tap `name` with `flags`.
fn set_iff(name: &str, flags: libc::c_int) -> Result<File, TapError> {
    let request = ifreq(name, flags)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(TUN_DEVICE)
        .map_err(|cause| TapError::OpenDevice { cause })?;
    // SAFETY: `file` is an open descriptor for /dev/net/tun; `request` is a fully
    // initialised `ifreq` that lives across the call, and TUNSETIFF reads (and may write
    // back the chosen name into) exactly `size_of::<ifreq>()` bytes of it.
    unsafe { tun_set_iff(file.as_raw_fd(), &request) }.map_err(|cause| TapError::SetIff {
        name: name.to_owned(),
        cause,
    })?;
    Ok(file)
}

/// An `ifreq` naming `name`, with `flags`.
fn ifreq(name: &str, flags: libc::c_int) -> Result<libc::ifreq, TapError> {
    if !valid_name(name) {
        return Err(TapError::InvalidName {
            name: name.to_owned(),
        });
    }
    let mut ifr_name = [0 as libc::c_char; libc::IFNAMSIZ];
    for (slot, byte) in ifr_name.iter_mut().zip(name.bytes()) {
        *slot = byte as libc::c_char;
    }
    // `ifr_flags` is a C `short`; IFF_TUN_EXCL (0x8000) is its sign bit, so the flags
    // are reinterpreted as the kernel reads them, not range-checked.
    let flags = flags as u16 as libc::c_short;
    Ok(libc::ifreq {
        ifr_name,
        ifr_ifru: libc::__c_anonymous_ifr_ifru { ifru_flags: flags },
    })
}

/// The kernel's rule for an interface name (`dev_valid_name`).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= IFNAME_MAX
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_kernels_rule() {
        assert!(valid_name("vm_1a2b3c4d_0"));
        assert!(valid_name("tap0"));
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "0123456789abcdef"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        assert!(matches!(
            create_persistent("a b"),
            Err(TapError::InvalidName { .. })
        ));
    }

    #[test]
    fn the_flags_fit_ifreq() {
        let request = ifreq("tap0", libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_TUN_EXCL)
            .expect("valid request");
        assert_eq!(
            request.ifr_name[..4],
            [116, 97, 112, 48].map(|b| b as libc::c_char)
        );
        assert_eq!(request.ifr_name[4], 0);
        // SAFETY: the union was built with `ifru_flags`; reading it back reads that field.
        let flags = unsafe { request.ifr_ifru.ifru_flags };
        assert_eq!(flags as u16, 0x9002, "IFF_TUN_EXCL | IFF_NO_PI | IFF_TAP");
    }
}
