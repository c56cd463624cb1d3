//! `/proc/self/mountinfo`, read as text: the only way the driver looks at a mount.
//!
//! Reading this file asks the kernel's mount table, never the file system behind a
//! mount, so it answers at once even when an NFS server is gone (a `stat` of the mount
//! point would wait for the server, for ever on a `hard` mount). Format: `proc(5)`.

use std::collections::BTreeMap;

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Unique while the mount exists (reused after it is gone).
    pub mount_id: u64,
    /// `major:minor` of the file system: the same for every bind of one NFS mount.
    pub device: String,
    /// Where it is mounted, unescaped.
    pub mount_point: String,
    /// Per-mount options (`rw,relatime`).
    pub mount_options: Vec<String>,
    /// `nfs4`, `nfs`, `tmpfs`, …
    pub fs_type: String,
    /// `server:/export` for NFS.
    pub source: String,
    /// The file system's own options (`vers=4.2,soft,timeo=50,…`).
    pub super_options: Vec<String>,
}

impl MountEntry {
    pub fn is_nfs(&self) -> bool {
        self.fs_type == "nfs" || self.fs_type == "nfs4"
    }

    pub fn read_only(&self) -> bool {
        self.mount_options.iter().any(|o| o == "ro")
    }

    /// The file system options as `key → value` (`soft → ""`).
    pub fn super_map(&self) -> BTreeMap<&str, &str> {
        self.super_options
            .iter()
            .map(|o| o.split_once('=').unwrap_or((o.as_str(), "")))
            .collect()
    }
}

/// Every mount in `text`; lines that do not parse are skipped (the kernel writes them,
/// so none should be).
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    let (before, after) = line.split_once(" - ")?;
    let fields: Vec<&str> = before.split(' ').collect();
    let after: Vec<&str> = after.split(' ').collect();
    let list = |s: &str| s.split(',').map(str::to_owned).collect::<Vec<_>>();
    Some(MountEntry {
        mount_id: fields.first()?.parse().ok()?,
        device: (*fields.get(2)?).to_owned(),
        mount_point: unescape(fields.get(4)?),
        mount_options: list(fields.get(5)?),
        fs_type: (*after.first()?).to_owned(),
        source: unescape(after.get(1)?),
        super_options: after.get(2).map(|s| list(s)).unwrap_or_default(),
    })
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 4 <= bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value = bytes[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            out.push(u8::try_from(value).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_nfs4_line_reads_with_its_options_and_escaped_path() {
        let text = "22 1 0:21 / /proc rw,nosuid - proc proc rw\n\
            95 30 0:53 / /var/lib/gitvisor/nfs/my\\040share rw,relatime shared:60 - nfs4 10.77.0.1:/srv/share rw,vers=4.2,rsize=131072,soft,proto=tcp,timeo=50,retrans=2,sec=sys,local_lock=none,addr=10.77.0.1\n";
        let mounts = parse(text);
        assert_eq!(mounts.len(), 2);
        let nfs = &mounts[1];
        assert!(nfs.is_nfs() && !nfs.read_only());
        assert_eq!(nfs.mount_id, 95);
        assert_eq!(nfs.device, "0:53");
        assert_eq!(nfs.mount_point, "/var/lib/gitvisor/nfs/my share");
        assert_eq!(nfs.source, "10.77.0.1:/srv/share");
        assert_eq!(nfs.super_map()["timeo"], "50");
        assert_eq!(nfs.super_map()["soft"], "");
        assert_eq!(unescape("a\\134b\\011"), "a\\b\t");
    }
}
