//! What a VM's serial console says about a guest that does not come up: the kernel's
//! last words, or its silence.
//!
//! A guest kernel without what it needs (a missing virtio module, no root file system)
//! panics, and with gitvisor's `panic=1` resets: the hypervisor process ends and the VM
//! looks merely stopped. A kernel that cannot reach the console at all (built without
//! the serial driver, or hanging before it) looks running. Neither shows in the process
//! table; both show on the console. So the observer reads the end of each VM's console
//! log ([`ConsoleTail`], its last [`TAIL_BYTES`]) in the same pass as the run dir, and
//! the plan and `status` carry:
//! - for a guest that ended although declared running, or runs after a panic, the
//!   kernel's panic line ([`last_words`]);
//! - for a guest whose process has run [`SILENT_AFTER`] with nothing on its console,
//!   that it printed nothing ([`silence`]).
//!
//! Pure: the tail is read by the host seam; this only reads the text.

use std::time::{Duration, SystemTime};

/// How much of the end of a console log the observer reads.
pub const TAIL_BYTES: u64 = 4096;

/// How long a guest may print nothing on its console before `status` says so: a Linux
/// kernel with `console=ttyS0` prints its banner within a second on KVM (tens of
/// seconds under nested emulation).
pub const SILENT_AFTER: Duration = Duration::from_secs(120);

/// The end of a VM's console log, as the observer read it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConsoleTail {
    /// The log's whole size in bytes.
    pub size: u64,
    /// Its last [`TAIL_BYTES`] at most, decoded lossily.
    pub tail: String,
}

/// The kernel's last panic line in `tail`, without its timestamp:
/// `Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)`;
/// only after the last kernel banner (`Linux version …`) in it, since the log is kept
/// across boots and a panic of an earlier boot says nothing about this one.
pub fn last_words(console: &ConsoleTail) -> Option<String> {
    let tail = console.tail.as_str();
    let this_boot = tail.rfind("Linux version ").map_or(tail, |at| &tail[at..]);
    this_boot.lines().rev().find_map(|line| {
        let at = line.find("Kernel panic - ")?;
        let words = line[at..].trim_end_matches(['\r', ' ']);
        Some(words.trim_end_matches(" ]---").to_owned())
    })
}

/// Why a guest whose process started at `started` looks hung at `now`: nothing on its
/// console for longer than [`SILENT_AFTER`].
pub fn silence(console: &ConsoleTail, started: SystemTime, now: SystemTime) -> Option<String> {
    let up = now.duration_since(started).ok()?;
    (console.size == 0 && up > SILENT_AFTER).then(|| {
        format!(
            "the guest has printed nothing on its console in {} since it started (a kernel without console=ttyS0 or its serial driver, or one that hangs before its console)",
            humantime::format_duration(Duration::from_secs(up.as_secs()))
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail(text: &str) -> ConsoleTail {
        ConsoleTail {
            size: text.len() as u64,
            tail: text.to_owned(),
        }
    }

    #[test]
    fn the_last_panic_line_is_found_without_its_timestamp() {
        let log = "[    1.20] VFS: Cannot open root device \"vda\" or unknown-block(0,0): error -6\n\
                   [    1.21] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\r\n\
                   [    1.22] CPU: 0 PID: 1 Comm: swapper/0 Not tainted 6.1.0-57-amd64\n\
                   [    1.30] ---[ end Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0) ]---\n";
        assert_eq!(
            last_words(&tail(log)).as_deref(),
            Some("Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)")
        );
        assert_eq!(last_words(&tail("GV-TICK 3\nGV-TICK 4\n")), None);
        let rebooted = format!("{log}[    0.00] Linux version 6.1.0-57-amd64\nGV-BOOT-OK\n");
        assert_eq!(
            last_words(&tail(&rebooted)),
            None,
            "an earlier boot's panic"
        );
    }

    #[test]
    fn silence_is_reported_only_past_the_limit_and_only_when_nothing_was_printed() {
        let started = SystemTime::UNIX_EPOCH;
        let later = started + SILENT_AFTER + Duration::from_secs(5);
        let note = silence(&tail(""), started, later).expect("silent");
        assert!(
            note.contains("printed nothing on its console in 2m 5s"),
            "{note}"
        );
        assert_eq!(silence(&tail(""), started, started + SILENT_AFTER), None);
        assert_eq!(silence(&tail("Linux version"), started, later), None);
    }
}
