//! The record in every VM's run dir (`gitvisor.json`): gitvisor's marker on the host, and
//! what it last applied there.
//!
//! It says which VM the directory belongs to, the spec last applied (with the desired
//! run state, so a guest whose process is gone while its record says `Running` is known
//! to have died rather than been stopped), and the exact command line gitvisor launched.
//! Observe compares that command line with the one the live process has
//! (`/proc/PID/cmdline`), so a process that is not the one gitvisor launched is never
//! taken for it.
//!
//! It is written before the action it describes (create: with the directory; restart:
//! before the new launch), so a crash between the two leaves a record that the next plan
//! compares against a host that does not match it yet, and repairs.

use serde::{Deserialize, Serialize};

use crate::drivers::vm::VirtualMachineSpec;

/// `managedBy` of every record gitvisor writes.
pub const MANAGED_BY: &str = "gitvisor";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunRecord {
    pub managed_by: String,
    /// The VM's name; must equal the directory's.
    pub name: String,
    /// The spec last applied.
    pub spec: VirtualMachineSpec,
    /// The command line last launched (program first); empty before the first launch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub argv: Vec<String>,
}

impl RunRecord {
    pub fn new(name: &str, spec: VirtualMachineSpec, argv: Vec<String>) -> Self {
        RunRecord {
            managed_by: MANAGED_BY.to_owned(),
            name: name.to_owned(),
            spec,
            argv,
        }
    }

    /// The record as written to disk (pretty JSON, so people can read it).
    pub fn to_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut bytes = serde_json::to_vec_pretty(self)?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    /// A record read from disk, or why it is not one of gitvisor's.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let record: RunRecord =
            serde_json::from_slice(bytes).map_err(|e| format!("not a gitvisor run record: {e}"))?;
        if record.managed_by != MANAGED_BY {
            return Err(format!("managed by {:?}, not gitvisor", record.managed_by));
        }
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_a_foreign_one_is_refused() {
        let spec: VirtualMachineSpec =
            serde_yaml::from_str("memory: 256MiB\nboot: {kernel: /k}\nshutdownTimeout: 5s")
                .unwrap();
        let record = RunRecord::new("vm1", spec, vec!["qemu".into(), "-S".into()]);
        let bytes = record.to_bytes().unwrap();
        assert_eq!(RunRecord::parse(&bytes).unwrap(), record);
        let foreign = String::from_utf8(bytes)
            .unwrap()
            .replace("\"gitvisor\"", "\"libvirt\"");
        assert!(
            RunRecord::parse(foreign.as_bytes())
                .unwrap_err()
                .contains("libvirt")
        );
        assert!(RunRecord::parse(b"{}").is_err());
    }
}
