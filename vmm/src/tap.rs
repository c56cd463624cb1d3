//! Tap devices, the safe way: open an existing (persistent) tap by name, or create one,
//! for a virtio-net backend. The VM driver creates, marks and enslaves persistent taps
//! (see `docs/vmm.md`); the VMM only attaches to them by name, as QEMU does with
//! `ifname=`. `set_persistent` is here so a caller without `unsafe` can create one.
//!
//! Taps are opened with `IFF_TAP | IFF_NO_PI` (Ethernet frames, no packet-info prefix)
//! and without `IFF_VNET_HDR`: the virtio-net device adds and strips the virtio header.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

/// The longest interface name (IFNAMSIZ minus the NUL).
pub const NAME_MAX: usize = 15;

/// Errors opening a tap.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error(
        "the tap name {name:?} is not a valid interface name (1 to {NAME_MAX} bytes, no '/', ':', whitespace or NUL)"
    )]
    InvalidName { name: String },
    #[error(
        "cannot open /dev/net/tun for tap {name}: {source}; load the tun module (modprobe tun)"
    )]
    OpenTun {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot attach to tap {name} (TUNSETIFF): {source}; check that it is a tap (not a tun) and that no other process holds it"
    )]
    Attach {
        name: String,
        #[source]
        source: nix::Error,
    },
    #[error("cannot make tap {name} persistent={persistent} (TUNSETPERSIST): {source}")]
    Persist {
        name: String,
        persistent: bool,
        #[source]
        source: nix::Error,
    },
}

nix::ioctl_write_ptr_bad!(tun_set_iff, libc::TUNSETIFF, libc::ifreq);
nix::ioctl_write_int_bad!(tun_set_persist, libc::TUNSETPERSIST);

/// Whether `name` can name a network interface.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_MAX
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|byte| byte == b'/' || byte == b':' || byte == 0 || byte.is_ascii_whitespace())
}

/// An open tap: reads and writes one Ethernet frame per call.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Attaches to the tap `name`, creating a (non-persistent) one if none exists.
    /// Non-blocking: a read with no frame waiting fails with `WouldBlock`.
    pub fn open(name: &str) -> Result<Self, TapError> {
        if !valid_name(name) {
            return Err(TapError::InvalidName {
                name: name.to_string(),
            });
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|source| TapError::OpenTun {
                name: name.to_string(),
                source,
            })?;
        let mut ifr_name = [0 as libc::c_char; libc::IFNAMSIZ];
        for (slot, byte) in ifr_name.iter_mut().zip(name.bytes()) {
            *slot = byte as libc::c_char;
        }
        let request = libc::ifreq {
            ifr_name,
            ifr_ifru: libc::__c_anonymous_ifr_ifru {
                ifru_flags: (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short,
            },
        };
        // SAFETY: `file` is an open /dev/net/tun descriptor and `request` a fully
        // initialised ifreq that lives across the call; TUNSETIFF only reads it (and may
        // write the name back into it).
        unsafe { tun_set_iff(file.as_raw_fd(), &request) }.map_err(|source| TapError::Attach {
            name: name.to_string(),
            source,
        })?;
        Ok(Tap {
            file,
            name: name.to_string(),
        })
    }

    /// Keeps the tap after this process closes it (`true`), or lets it go (`false`).
    pub fn set_persistent(&self, persistent: bool) -> Result<(), TapError> {
        // SAFETY: `self.file` is a tun descriptor attached to a tap; TUNSETPERSIST takes
        // an integer by value and touches no memory of ours.
        unsafe { tun_set_persist(self.file.as_raw_fd(), libc::c_int::from(persistent)) }
            .map(drop)
            .map_err(|source| TapError::Persist {
                name: self.name.clone(),
                persistent,
                source,
            })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The descriptor, for the event loop.
    pub fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.file.as_raw_fd()
    }

    /// Another handle on the same tap queue.
    pub fn try_clone(&self) -> std::io::Result<Tap> {
        Ok(Tap {
            file: self.file.try_clone()?,
            name: self.name.clone(),
        })
    }
}

impl std::os::fd::AsFd for Tap {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl Read for Tap {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.file.read(buf)
    }
}

impl Write for Tap {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_follow_the_kernels_rules() {
        assert!(valid_name("vm_0a1b2c3d_0"));
        assert!(valid_name("tap0"));
        for bad in ["", "a/b", "a:b", "a b", "sixteen-chars-xx", ".", ".."] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        assert!(matches!(
            Tap::open("bad/name"),
            Err(TapError::InvalidName { .. })
        ));
    }
}
