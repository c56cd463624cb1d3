//! Bridge expectations: what a manifest declares, read independently of gitvisor's
//! loader, compared with what the kernel shows; and a copy of examples/quickstart that
//! this kernel can realise.

use std::path::{Path, PathBuf};

use crate::env::TestEnv;
use crate::host::{Link, MARKER};
use crate::manifests::Manifests;
use crate::report::loud;

/// The file of examples/quickstart.
pub const QUICKSTART_FILE: &str = "bridges.yaml";

impl TestEnv {
    /// A copy of examples/quickstart that this kernel can realise: a
    /// `vlanFiltering: true` line is removed when the kernel cannot filter VLANs (see
    /// [`kernel_supports_vlan_filtering`](Self::kernel_supports_vlan_filtering)).
    /// Tests check the result against [`declared_bridges`] of the copy, so the example
    /// may change without breaking them.
    pub fn quickstart(&self) -> Manifests {
        let manifests = Manifests::from_example("quickstart");
        let original = manifests.read(QUICKSTART_FILE);
        if original.contains("vlanFiltering: true") && !self.kernel_supports_vlan_filtering() {
            loud("NOTE: dropping `vlanFiltering: true` from the quickstart copy for this kernel");
            manifests.write(
                QUICKSTART_FILE,
                &original.replace("  vlanFiltering: true\n", ""),
            );
        }
        manifests
    }
}

/// A Bridge as a manifest declares it: what the kernel must show after `apply`. Fields
/// the manifest leaves out are `None` (not checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredBridge {
    pub name: String,
    pub mtu: Option<u64>,
    /// Sorted `addr/prefix`.
    pub addresses: Vec<String>,
    pub stp: Option<bool>,
    pub vlan_filtering: Option<bool>,
    /// `spec.up`, default true.
    pub up: bool,
}

impl DeclaredBridge {
    /// Panics, naming every difference, unless `link` is this bridge as declared and
    /// carries gitvisor's marker.
    #[track_caller]
    pub fn assert_realised_by(&self, link: &Link) {
        let mut wrong = Vec::new();
        if !link.is_bridge() {
            wrong.push(format!("kind {:?}, not bridge", link.kind));
        }
        if !link.is_marked() {
            wrong.push(format!("ifalias {:?}, not {MARKER:?}", link.alias));
        }
        if self.mtu.is_some_and(|mtu| mtu != link.mtu) {
            wrong.push(format!("mtu {} != {:?}", link.mtu, self.mtu));
        }
        if link.addresses != self.addresses {
            wrong.push(format!(
                "addresses {:?} != {:?}",
                link.addresses, self.addresses
            ));
        }
        let stp_on = link.stp_state.map(|s| s != 0);
        if self.stp.is_some_and(|stp| stp_on != Some(stp)) {
            wrong.push(format!(
                "stp_state {:?}, declared stp {:?}",
                link.stp_state, self.stp
            ));
        }
        let vlan_on = link.vlan_filtering.map(|v| v != 0);
        if self
            .vlan_filtering
            .is_some_and(|vlan| vlan_on != Some(vlan))
        {
            wrong.push(format!(
                "vlan_filtering {:?}, declared {:?}",
                link.vlan_filtering, self.vlan_filtering
            ));
        }
        if link.is_up() != self.up {
            wrong.push(format!("up {}, declared {}", link.is_up(), self.up));
        }
        assert!(
            wrong.is_empty(),
            "bridge {} does not match its manifest: {}\nkernel: {link:?}\ndeclared: {self:?}",
            self.name,
            wrong.join("; ")
        );
    }
}

/// Every Bridge declared by the `*.yaml`/`*.yml` files directly in `dir` (multi-document
/// files included), read with a plain YAML parser independent of gitvisor's loader.
pub fn declared_bridges(dir: &Path) -> Vec<DeclaredBridge> {
    use serde::Deserialize;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let mut bridges = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|err| panic!("cannot read {}: {err}", file.display()));
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(document)
                .unwrap_or_else(|err| panic!("{}: not YAML: {err}", file.display()));
            if value["kind"].as_str() != Some("Bridge") {
                continue;
            }
            let spec = &value["spec"];
            let mut addresses: Vec<String> = spec["addresses"]
                .as_sequence()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect();
            addresses.sort();
            bridges.push(DeclaredBridge {
                name: value["metadata"]["name"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{}: a Bridge without a name", file.display()))
                    .to_owned(),
                mtu: spec["mtu"].as_u64(),
                addresses,
                stp: spec["stp"].as_bool(),
                vlan_filtering: spec["vlanFiltering"].as_bool(),
                up: spec["up"].as_bool().unwrap_or(true),
            });
        }
    }
    bridges
}
