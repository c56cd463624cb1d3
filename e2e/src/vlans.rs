//! VLAN end-to-end scenarios, run inside one throwaway guest ([`crate::vng`]).
//!
//! The CI host's kernel has neither bridge VLAN filtering (`CONFIG_BRIDGE_VLAN_FILTERING`)
//! nor 802.1Q (`CONFIG_VLAN_8021Q`); Debian's kernel has both, as modules. So the host
//! test (`e2e/tests/vlans.rs`) boots one guest that runs `vlan-guest`
//! (`e2e/src/bin/vlan-guest.rs`), which loads `bridge` and `8021q` and runs every
//! scenario against the real `gitvisor` binary, each in turn.
//!
//! In the guest, gitvisor runs in a network namespace of its own (`gvh`, the "host"),
//! and three more namespaces stand for guests (`gva`, `gvb`, `gvc`), each joined to the
//! host by a veth pair whose host end (`va-h`, `vb-h`, `vc-h`) is declared as a port of
//! bridge `br0` with its VLANs. The guests share one subnet, so only VLAN membership
//! decides who reaches whom. Checks use `ping` between the namespaces and `ip`/`bridge`
//! for what the kernel holds, never gitvisor's own view. One scenario declares a VM
//! `Stopped` (its tap without a QEMU process, cheap) to check a NIC's VLANs on the tap;
//! another runs a Container with real runc (a busybox root file system made in the
//! guest) to check its veth's VLANs and that it reaches its VLAN only.
//!
//! gitvisor runs as `nsenter --net=/run/netns/gvh`, not `ip netns exec`: the latter
//! mounts a fresh `/sys` in which `/sys/fs/cgroup` is empty, so runc could make no
//! cgroup (the same reason as in [`crate::containers`]).

use std::time::Duration;

/// The scenarios the guest runs, in order; the host expects a result for each.
pub const SCENARIOS: &[&str] = &[
    "ports on the same VLAN reach each other, on different VLANs they do not",
    "a VLAN sub-interface gets its address and reaches its VLAN only",
    "a port moved to another VLAN by a manifest change reaches it",
    "VLANs removed by hand are repaired",
    "an undeclared sub-interface is deleted, an unmarked one is kept",
    "a VM's tap carries its NIC's VLANs, repaired and changed in place",
    "a container's veth carries its VLANs, reaches its VLAN only, repaired in place",
    "prune removes the bridge, its sub-interfaces and its ports' VLANs",
];

/// How long the whole guest run may take.
pub const GUEST_DEADLINE: Duration = Duration::from_secs(600);

/// The guest side: runs inside the guest as root, with the `bridge` and `8021q` modules.
pub mod guest {
    use std::path::PathBuf;
    use std::process::Command;

    use super::SCENARIOS;
    use crate::vng::{Check, code, ensure, in_ns, sh};
    use crate::{Outcome, run_command};

    /// gitvisor's namespace and the three guests': (namespace, guest end, address, host end).
    const HOST_NS: &str = "gvh";
    const GUESTS: [(&str, &str, &str, &str); 3] = [
        ("gva", "va", "10.10.0.2", "va-h"),
        ("gvb", "vb", "10.10.0.3", "vb-h"),
        ("gvc", "vc", "10.10.0.4", "vc-h"),
    ];

    /// Where the container scenario's image (a busybox root file system) is made.
    const CONTAINER_ROOTFS: &str = "/run/gv-rootfs";

    /// What every scenario shares.
    pub struct Guest {
        gitvisor: PathBuf,
        shared: PathBuf,
        manifests: PathBuf,
        state: PathBuf,
        run: PathBuf,
    }

    /// `vlan-guest --gitvisor BIN --shared DIR`: sets up the namespaces and runs every
    /// scenario.
    pub fn main() -> std::process::ExitCode {
        let Some((gitvisor, shared)) = crate::vng::guest_args("vlan-guest") else {
            return std::process::ExitCode::from(64);
        };
        let local = match crate::vng::copy_into_guest(&gitvisor) {
            Ok(local) => local,
            Err(why) => {
                eprintln!("{why}");
                return std::process::ExitCode::FAILURE;
            }
        };
        let guest = Guest {
            gitvisor: local,
            shared,
            manifests: PathBuf::from("/run/gv-manifests"),
            state: PathBuf::from("/run/gv-state"),
            run: PathBuf::from("/run/gv-run"),
        };
        if let Err(why) = guest.setup() {
            crate::vng::report(&guest.shared, "setup", &Err(why));
            return std::process::ExitCode::FAILURE;
        }
        let scenarios: [fn(&Guest) -> Check; 8] = [
            Guest::same_and_different_vlans,
            Guest::sub_interface,
            Guest::moved_port,
            Guest::repaired,
            Guest::undeclared_sub_interface,
            Guest::vm_tap,
            Guest::container_veth,
            Guest::prune,
        ];
        let named: Vec<crate::vng::Scenario<Guest>> =
            SCENARIOS.iter().copied().zip(scenarios).collect();
        crate::vng::run_scenarios(&guest.shared, &guest, &named)
    }

    /// Whether `from` answers a ping to `to` (three tries, one second each).
    fn pings(from: &str, to: &str) -> bool {
        in_ns(from, "ping", &["-c", "1", "-W", "1", to]).is_ok()
            || in_ns(from, "ping", &["-c", "2", "-W", "1", to]).is_ok()
    }

    fn reaches(from: &str, to: &str) -> Check {
        ensure(pings(from, to), || format!("{from} cannot reach {to}"))
    }

    fn isolated(from: &str, to: &str) -> Check {
        ensure(!pings(from, to), || {
            format!("{from} reaches {to}, which is on another VLAN")
        })
    }

    /// The VLAN ids `dev` carries, as `bridge -j vlan show dev DEV` reports them, with
    /// the flags (`10 PVID Egress Untagged` → `10 pvid untagged`).
    fn vlans_of(dev: &str) -> Result<Vec<String>, String> {
        let json = in_ns(HOST_NS, "bridge", &["-j", "vlan", "show", "dev", dev])?;
        let value: serde_json::Value =
            serde_json::from_str(&json).map_err(|e| format!("bridge -j vlan show: {e}: {json}"))?;
        let mut vlans = Vec::new();
        for entry in value.as_array().into_iter().flatten() {
            if entry["ifname"].as_str() != Some(dev) {
                continue;
            }
            for vlan in entry["vlans"].as_array().into_iter().flatten() {
                let mut text = vlan["vlan"].to_string();
                let flags: Vec<&str> = vlan["flags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|f| f.as_str())
                    .collect();
                if flags.contains(&"PVID") {
                    text.push_str(" pvid");
                }
                if flags.contains(&"Egress Untagged") {
                    text.push_str(" untagged");
                }
                vlans.push(text);
            }
        }
        Ok(vlans)
    }

    fn expect_vlans(dev: &str, expected: &[&str]) -> Check {
        let found = vlans_of(dev)?;
        ensure(found == expected, || {
            format!("{dev} carries VLANs {found:?}, expected {expected:?}")
        })
    }

    /// The name of the link whose alias is `alias`, in gitvisor's namespace.
    fn link_with_alias(alias: &str) -> Result<Option<(String, u64)>, String> {
        let json = in_ns(HOST_NS, "ip", &["-j", "link", "show"])?;
        let value: serde_json::Value =
            serde_json::from_str(&json).map_err(|e| format!("ip -j link show: {e}: {json}"))?;
        Ok(value.as_array().into_iter().flatten().find_map(|link| {
            (link["ifalias"].as_str() == Some(alias)).then(|| {
                (
                    link["ifname"].as_str().unwrap_or_default().to_owned(),
                    link["ifindex"].as_u64().unwrap_or_default(),
                )
            })
        }))
    }

    fn link_exists(name: &str) -> bool {
        in_ns(HOST_NS, "ip", &["link", "show", "dev", name]).is_ok()
    }

    impl Guest {
        fn setup(&self) -> Check {
            for module in ["bridge", "8021q", "tun"] {
                sh("modprobe", &[module])?;
            }
            for dir in [&self.manifests, &self.state, &self.run] {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            sh("ip", &["netns", "add", HOST_NS])?;
            in_ns(HOST_NS, "ip", &["link", "set", "lo", "up"])?;
            for (ns, end, address, host_end) in GUESTS {
                sh("ip", &["netns", "add", ns])?;
                in_ns(
                    HOST_NS,
                    "ip",
                    &[
                        "link", "add", host_end, "type", "veth", "peer", "name", end, "netns", ns,
                    ],
                )?;
                in_ns(HOST_NS, "ip", &["link", "set", host_end, "up"])?;
                in_ns(ns, "ip", &["link", "set", "lo", "up"])?;
                in_ns(
                    ns,
                    "ip",
                    &["addr", "add", &format!("{address}/24"), "dev", end],
                )?;
                in_ns(ns, "ip", &["link", "set", end, "up"])?;
            }
            Ok(())
        }

        fn gitvisor(&self, args: &[&str]) -> Outcome {
            let mut command = Command::new("nsenter");
            command
                .arg(format!("--net=/run/netns/{HOST_NS}"))
                .arg(&self.gitvisor)
                .arg("--state-dir")
                .arg(&self.state)
                .arg("--run-dir")
                .arg(&self.run)
                .args(["--host", "vlan-guest"])
                .args(args)
                .env("NO_COLOR", "1");
            run_command(command)
        }

        fn apply(&self) -> Check {
            let dir = self.manifests.to_string_lossy().into_owned();
            code(&self.gitvisor(&["apply", &dir]), 0)
        }

        /// `plan --detailed-exitcode` answers 0: nothing to do.
        fn noop(&self) -> Check {
            let dir = self.manifests.to_string_lossy().into_owned();
            code(&self.gitvisor(&["plan", &dir, "--detailed-exitcode"]), 0)
        }

        /// Declares `br0` with `spec` (YAML under `spec:`).
        fn declare(&self, spec: &str) {
            let mut text =
                "apiVersion: gitvisor.dev/v1alpha1\nkind: Bridge\nmetadata:\n  name: br0\nspec:\n"
                    .to_owned();
            for line in spec.lines() {
                text.push_str("  ");
                text.push_str(line);
                text.push('\n');
            }
            let path = self.manifests.join("br0.yaml");
            std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }

        fn trunk(&self, c_vlan: u16, sub_interfaces: &str) {
            self.declare(&format!(
                "vlanFiltering: true
ports:
  - name: va-h
    vlans: [{{id: 10, pvid: true, untagged: true}}]
  - name: vb-h
    vlans: [{{id: 10, pvid: true, untagged: true}}]
  - name: vc-h
    vlans: [{{id: {c_vlan}, pvid: true, untagged: true}}]
{sub_interfaces}"
            ));
        }

        fn same_and_different_vlans(&self) -> Check {
            self.trunk(20, "");
            self.apply()?;
            expect_vlans("va-h", &["10 pvid untagged"])?;
            expect_vlans("vc-h", &["20 pvid untagged"])?;
            reaches("gva", "10.10.0.3")?;
            isolated("gva", "10.10.0.4")?;
            isolated("gvb", "10.10.0.4")?;
            self.noop()
        }

        fn sub_interface(&self) -> Check {
            self.trunk(
                20,
                "vlanInterfaces:\n  - {id: 10, addresses: [10.10.0.1/24]}",
            );
            self.apply()?;
            let link = in_ns(HOST_NS, "ip", &["-d", "link", "show", "dev", "br0.10"])?;
            ensure(
                link.contains("vlan protocol 802.1Q id 10")
                    && link.contains("alias gitvisor:managed"),
                || format!("br0.10 is not gitvisor's VLAN 10 sub-interface:\n{link}"),
            )?;
            let addresses = in_ns(HOST_NS, "ip", &["-4", "addr", "show", "dev", "br0.10"])?;
            ensure(addresses.contains("10.10.0.1/24"), || {
                format!("br0.10 lacks 10.10.0.1/24:\n{addresses}")
            })?;
            reaches(HOST_NS, "10.10.0.2")?;
            reaches("gvb", "10.10.0.1")?;
            isolated(HOST_NS, "10.10.0.4")?;
            self.noop()
        }

        fn moved_port(&self) -> Check {
            self.trunk(
                10,
                "vlanInterfaces:\n  - {id: 10, addresses: [10.10.0.1/24]}",
            );
            self.apply()?;
            expect_vlans("vc-h", &["10 pvid untagged"])?;
            reaches("gva", "10.10.0.4")?;
            reaches(HOST_NS, "10.10.0.4")?;
            self.noop()
        }

        fn repaired(&self) -> Check {
            in_ns(
                HOST_NS,
                "bridge",
                &["vlan", "del", "dev", "va-h", "vid", "10"],
            )?;
            in_ns(
                HOST_NS,
                "bridge",
                &["vlan", "del", "dev", "br0", "vid", "10", "self"],
            )?;
            isolated("gva", "10.10.0.3")?;
            let dir = self.manifests.to_string_lossy().into_owned();
            code(&self.gitvisor(&["plan", &dir, "--detailed-exitcode"]), 2)?;
            self.apply()?;
            expect_vlans("va-h", &["10 pvid untagged"])?;
            reaches("gva", "10.10.0.3")?;
            reaches(HOST_NS, "10.10.0.2")?;
            self.noop()
        }

        fn undeclared_sub_interface(&self) -> Check {
            // An administrator's own VLAN link on the bridge, without the marker.
            in_ns(
                HOST_NS,
                "ip",
                &[
                    "link", "add", "link", "br0", "name", "br0.30", "type", "vlan", "id", "30",
                ],
            )?;
            self.trunk(10, "");
            self.apply()?;
            ensure(!link_exists("br0.10"), || {
                "br0.10 is still there after it was undeclared".to_owned()
            })?;
            ensure(link_exists("br0.30"), || {
                "br0.30, which gitvisor did not make, was deleted".to_owned()
            })?;
            isolated(HOST_NS, "10.10.0.2")?;
            self.noop()?;
            in_ns(HOST_NS, "ip", &["link", "del", "br0.30"]).map(drop)
        }

        /// Declares VM `web`, created `Stopped` (its run dir and tap, no process), with one
        /// NIC on `br0` carrying `vlans`.
        fn declare_vm(&self, vlans: &str) -> Check {
            for file in ["/run/gv-vmlinuz", "/run/gv-disk.img"] {
                std::fs::write(file, b"").map_err(|e| format!("{file}: {e}"))?;
            }
            let text = format!(
                "apiVersion: gitvisor.dev/v1alpha1\nkind: VirtualMachine\nmetadata:\n  name: web\nspec:\n  \
                 state: Stopped\n  hypervisor: qemu\n  accel: tcg\n  memory: 64MiB\n  \
                 boot: {{kernel: /run/gv-vmlinuz}}\n  disks: [{{path: /run/gv-disk.img}}]\n  \
                 networks: [{{bridge: br0, vlans: {vlans}}}]\n"
            );
            let path = self.manifests.join("vm.yaml");
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
        }

        fn vm_tap(&self) -> Check {
            self.trunk(10, "");
            self.declare_vm("[{id: 20, pvid: true, untagged: true}, {id: 30}]")?;
            self.apply()?;
            let alias = "gitvisor:vm/web/0";
            let (tap, index) =
                link_with_alias(alias)?.ok_or_else(|| format!("no link with alias {alias}"))?;
            expect_vlans(&tap, &["20 pvid untagged", "30"])?;
            self.noop()?;
            // By hand: VLAN 30 taken off, the kernel's default put back.
            in_ns(
                HOST_NS,
                "bridge",
                &["vlan", "del", "dev", &tap, "vid", "30"],
            )?;
            in_ns(
                HOST_NS,
                "bridge",
                &["vlan", "add", "dev", &tap, "vid", "1", "pvid", "untagged"],
            )?;
            let dir = self.manifests.to_string_lossy().into_owned();
            code(&self.gitvisor(&["plan", &dir, "--detailed-exitcode"]), 2)?;
            self.apply()?;
            expect_vlans(&tap, &["20 pvid untagged", "30"])?;
            self.noop()?;
            // A changed list: the same tap, moved in place.
            self.declare_vm("[{id: 10, pvid: true, untagged: true}]")?;
            self.apply()?;
            expect_vlans(&tap, &["10 pvid untagged"])?;
            let now = link_with_alias(alias)?;
            ensure(now == Some((tap.clone(), index)), || {
                format!("the tap {tap} (#{index}) was replaced: {now:?}")
            })?;
            self.noop()?;
            // Undeclared: the VM and its tap go.
            let path = self.manifests.join("vm.yaml");
            std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            self.apply()?;
            ensure(!link_exists(&tap), || format!("tap {tap} survived the VM"))?;
            self.noop()
        }

        /// Declares container `web` (a busybox `sleep`) on `br0` at 10.10.0.5 with `vlans`.
        fn declare_container(&self, vlans: &str) -> Check {
            let rootfs = std::path::Path::new(CONTAINER_ROOTFS);
            if !rootfs.join("bin/busybox").is_file() {
                crate::containers::busybox_rootfs(rootfs);
            }
            let text = format!(
                "apiVersion: gitvisor.dev/v1alpha1\nkind: Container\nmetadata:\n  name: web\nspec:\n  \
                 image: {CONTAINER_ROOTFS}\n  command: [sleep, '1000']\n  stopTimeout: 1s\n  \
                 network: {{bridge: br0, address: 10.10.0.5/24, vlans: {vlans}}}\n"
            );
            let path = self.manifests.join("container.yaml");
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
        }

        /// `runc`'s status and init pid of container `web`, under gitvisor's runtime root.
        fn container_pid(&self) -> Result<Option<(String, u64)>, String> {
            let root = self.run.join("runc").to_string_lossy().into_owned();
            let json = sh("runc", &["--root", &root, "list", "--format", "json"])?;
            let value: serde_json::Value =
                serde_json::from_str(json.trim()).map_err(|e| format!("runc list: {e}: {json}"))?;
            Ok(value.as_array().into_iter().flatten().find_map(|c| {
                (c["id"].as_str() == Some("web")).then(|| {
                    (
                        c["status"].as_str().unwrap_or_default().to_owned(),
                        c["pid"].as_u64().unwrap_or_default(),
                    )
                })
            }))
        }

        /// Whether container `web` gets an answer to a ping to `to`: two tries where an
        /// answer is expected (the first may wait for ARP), one where none is.
        fn container_pings(&self, to: &str, expected: bool) -> bool {
            let root = self.run.join("runc").to_string_lossy().into_owned();
            let ping = |count: &str| {
                sh(
                    "runc",
                    &[
                        "--root", &root, "exec", "web", "ping", "-c", count, "-W", "1", to,
                    ],
                )
                .is_ok()
            };
            ping("1") || (expected && ping("2"))
        }

        fn container_veth(&self) -> Check {
            // gva on VLAN 20 with the container, gvb on VLAN 30, gvc on VLAN 10.
            self.declare(
                "vlanFiltering: true
ports:
  - name: va-h
    vlans: [{id: 20, pvid: true, untagged: true}]
  - name: vb-h
    vlans: [{id: 30, pvid: true, untagged: true}]
  - name: vc-h
    vlans: [{id: 10, pvid: true, untagged: true}]",
            );
            self.declare_container("[{id: 20, pvid: true, untagged: true}]")?;
            self.apply()?;
            let alias = "gitvisor:container/web";
            let (veth, index) =
                link_with_alias(alias)?.ok_or_else(|| format!("no link with alias {alias}"))?;
            expect_vlans(&veth, &["20 pvid untagged"])?;
            let running = self.container_pid()?;
            let pid = match &running {
                Some((status, pid)) if status == "running" && *pid > 0 => *pid,
                _ => return Err(format!("container web is not running: {running:?}")),
            };
            ensure(self.container_pings("10.10.0.2", true), || {
                "container web cannot reach gva (10.10.0.2) on its VLAN 20".to_owned()
            })?;
            ensure(!self.container_pings("10.10.0.3", false), || {
                "container web reaches gvb (10.10.0.3), which is on VLAN 30".to_owned()
            })?;
            // By hand: VLAN 20 taken off the veth, the kernel's default put back.
            in_ns(
                HOST_NS,
                "bridge",
                &["vlan", "del", "dev", &veth, "vid", "20"],
            )?;
            in_ns(
                HOST_NS,
                "bridge",
                &["vlan", "add", "dev", &veth, "vid", "1", "pvid", "untagged"],
            )?;
            ensure(!self.container_pings("10.10.0.2", false), || {
                "container web still reaches gva with VLAN 20 taken off its veth".to_owned()
            })?;
            // Seen as drift and set back (a plan would show `network.vlans`, as for the
            // VM's tap above): the veth and the container's process stay the same.
            self.apply()?;
            expect_vlans(&veth, &["20 pvid untagged"])?;
            let now = (link_with_alias(alias)?, self.container_pid()?);
            ensure(
                now == (
                    Some((veth.clone(), index)),
                    Some(("running".to_owned(), pid)),
                ),
                || {
                    format!(
                        "the repair recreated container web (veth {veth} #{index}, pid {pid}): {now:?}"
                    )
                },
            )?;
            ensure(self.container_pings("10.10.0.2", true), || {
                "container web cannot reach gva (10.10.0.2) after the repair".to_owned()
            })?;
            self.noop()?;
            // Undeclared: the container and its veth go.
            let path = self.manifests.join("container.yaml");
            std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            self.apply()?;
            ensure(!link_exists(&veth), || {
                format!("veth {veth} survived the container")
            })?;
            let left = self.container_pid()?;
            ensure(left.is_none(), || {
                format!("container web survived its removal: {left:?}")
            })
        }

        fn prune(&self) -> Check {
            self.trunk(
                10,
                "vlanInterfaces:\n  - {id: 10, addresses: [10.10.0.1/24]}",
            );
            self.apply()?;
            // The last resource goes: an emptied repository is pruned only when confirmed.
            let _ = std::fs::remove_file(self.manifests.join("br0.yaml"));
            let keep = self.manifests.join("keep.yaml");
            std::fs::write(&keep, "# nothing declared\n")
                .map_err(|e| format!("{}: {e}", keep.display()))?;
            let dir = self.manifests.to_string_lossy().into_owned();
            code(&self.gitvisor(&["apply", &dir, "--prune"]), 0)?;
            for gone in ["br0", "br0.10"] {
                ensure(!link_exists(gone), || format!("{gone} survived the prune"))?;
            }
            for (_, _, _, port) in GUESTS {
                expect_vlans(port, &[])?;
                ensure(link_exists(port), || format!("port {port} was deleted"))?;
            }
            self.noop()
        }
    }
}
