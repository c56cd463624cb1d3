//! Whether this host can back the guest memory asked for.
//!
//! Guest RAM is mapped with `MAP_NORESERVE` and backed only when the guest touches it, so
//! the kernel never refuses a mapping larger than the host: a 1 TiB guest on a 24 GiB
//! host would start and be OOM-killed (or take the host down with it) once it used its
//! memory. QEMU's mapping is refused by the kernel's default overcommit heuristic, which
//! refuses an allocation larger than RAM and swap together; gitvisor-vmm refuses the same:
//! more than `MemTotal + SwapTotal` of `/proc/meminfo`. Total rather than available
//! memory: what is free changes from minute to minute, and a guest that fits the host
//! must not be refused because of a busy moment. `--overcommit` skips the check, for
//! hosts that overcommit on purpose (guests that never touch most of their memory).

use std::fmt;

/// RAM and swap of the host, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostMemory {
    pub ram: u64,
    pub swap: u64,
}

impl HostMemory {
    /// Reads `/proc/meminfo`.
    pub fn read() -> Result<HostMemory, String> {
        let text = std::fs::read_to_string("/proc/meminfo")
            .map_err(|error| format!("cannot read /proc/meminfo: {error}"))?;
        HostMemory::parse(&text)
            .ok_or_else(|| "/proc/meminfo has no MemTotal and SwapTotal lines in kB".to_owned())
    }

    /// The `MemTotal` and `SwapTotal` lines of a `/proc/meminfo` text.
    pub fn parse(text: &str) -> Option<HostMemory> {
        let field = |name: &str| {
            text.lines().find_map(|line| {
                let value = line.strip_prefix(name)?.strip_prefix(':')?;
                let kib: u64 = value.trim().strip_suffix("kB")?.trim().parse().ok()?;
                kib.checked_mul(1024)
            })
        };
        Some(HostMemory {
            ram: field("MemTotal")?,
            swap: field("SwapTotal")?,
        })
    }

    /// Why a guest of `bytes` cannot be backed here, if it cannot.
    pub fn refuses(&self, bytes: u64) -> Option<String> {
        let backing = self.ram.saturating_add(self.swap);
        (bytes > backing).then(|| {
            format!(
                "{} MiB of guest memory is more than this host can back ({self}); lower --memory, or pass --overcommit if the host overcommits on purpose",
                bytes >> 20
            )
        })
    }
}

impl fmt::Display for HostMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} MiB of RAM and {} MiB of swap",
            self.ram >> 20,
            self.swap >> 20
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_totals_bound_the_guest() {
        let text =
            "MemTotal:       24576000 kB\nMemFree:         1000 kB\nSwapTotal:       1024 kB\n";
        let host = HostMemory::parse(text).unwrap();
        assert_eq!(host.ram, 24_576_000 * 1024);
        assert_eq!(host.swap, 1024 * 1024);
        assert_eq!(host.refuses(host.ram + host.swap), None);
        let refusal = host.refuses(1 << 40).unwrap();
        assert!(refusal.contains("1048576 MiB of guest memory"), "{refusal}");
        assert!(refusal.contains("--overcommit"), "{refusal}");
        assert_eq!(HostMemory::parse("MemTotal: 1 kB\n"), None);
    }
}
