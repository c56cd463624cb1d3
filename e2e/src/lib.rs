//! End-to-end harness for gitvisor: runs the real `gitvisor` binary against the real
//! kernel, each test inside a network namespace of its own, never the host's own network.
//!
//! # How a test uses it
//!
//! ```no_run
//! use gitvisor_e2e::{Manifests, TestEnv};
//!
//! let Some(env) = TestEnv::new("my_test") else { return }; // prints SKIPPED when not root
//! let manifests = Manifests::from_example("quickstart");
//! env.gitvisor(&["apply", manifests.path_str()]).expect_code(0);
//! let link = env.link("br-lab").expect("br-lab exists");
//! assert!(link.is_up());
//! ```
//!
//! # The harness, one concern per module (every name is re-exported here)
//!
//! - `process`: **no hangs.** [`run_command`] runs a command to completion with a
//!   deadline ([`COMMAND_TIMEOUT`], or [`run_command_within`] for a guest boot); past it
//!   the process's whole group is killed and the test fails with whatever output it had,
//!   as an [`Outcome`]; a process it left behind cannot keep the test waiting on its
//!   pipes.
//! - `netns`: **isolation and cleanup.** [`Netns`] creates `gv-e2e-<test>-<n>-<pid>`
//!   (unique per test and per test process, so tests run in parallel) and deletes it in
//!   `Drop`, which also runs when the test panics (dumping the namespace's links first);
//!   deleting a namespace destroys what is inside. Namespaces left by a test process
//!   that was itself killed are removed the next time the suite starts one.
//! - `env`: [`TestEnv`], one test's world: a namespace, a temporary `--state-dir` and
//!   `--run-dir`. gitvisor runs as `ip netns exec NS gitvisor --state-dir … --run-dir …
//!   --host e2e-host …` with the `GITVISOR_*` environment cleared and `NO_COLOR=1`.
//!   [`gitvisor_offline`] runs commands that never touch the host without root.
//! - `locate`: **which binary.** `$GITVISOR_BIN` when set, else
//!   `<workspace>/target/debug/gitvisor` (honouring `$CARGO_TARGET_DIR`). The suite does
//!   not build it: run `cargo build -p gitvisor` first. A missing binary is a panic that
//!   says so; one older than the newest file under `reconciler/src` is reported loudly.
//! - `host`: **independent observation.** Kernel state is read with iproute2's JSON
//!   (`ip -n NS -d -j addr show`), never through gitvisor, into [`Link`]; kernel
//!   features are probed, not assumed ([`TestEnv::kernel_supports_vlan_filtering`]: the
//!   CI kernel lacks `CONFIG_BRIDGE_VLAN_FILTERING`); [`TestEnv::monitor_links`] streams
//!   link events.
//! - `manifests`: manifest builders: [`Manifests`] (a temporary revision, or a copy of an
//!   example), [`resource_manifest`] for any kind, [`bridge_manifest`].
//! - `bridges`: **expectations come from the manifests.** [`declared_bridges`] reads a
//!   revision with a plain YAML parser (not gitvisor's loader) and
//!   [`DeclaredBridge::assert_realised_by`] compares it with the kernel;
//!   [`TestEnv::quickstart`] is a copy of examples/quickstart this kernel can realise.
//! - `output`: reading `plan`/`status --output json` ([`change`], [`field`],
//!   [`non_noop_actions`], [`status_states`]) and [`assert_contains`].
//! - `report`: **skips are loud.** Without root, [`TestEnv::new`] prints
//!   `SKIPPED (needs root): <test>` past libtest's output capture ([`loud`]) and returns
//!   `None`; the test returns early. Being root but unable to create a namespace is a
//!   failure, not a skip. In CI (`CI=true`) every [`skip`] is a failure naming what is
//!   missing.
//!
//! # The suite (`e2e/tests/`), one file per driver plus the engine's cross-cutting tests
//!
//! - `bridges.rs`: create from examples/quickstart, in-place update, drift repair, prune,
//!   a lost store never deletes, conflict then adoption, vlan filtering vs the kernel.
//! - `ownership.rs`: marker and store rules, interrupted creations, adoption.
//! - `rejected.rs`: a bad file next to a good one rejects the whole revision, with
//!   `file:line:col` pointing at the bad line (syntax, unknown field, dangling
//!   references, cycle).
//! - `crash.rs`: `apply` killed with SIGKILL part-way (timed by `ip monitor link`), the
//!   next `apply` converges exactly; after an apply killed (SIGKILL, SIGTERM) at many
//!   points or stopped by a full disk, `status` shows the last recorded revision and
//!   `plan` exactly the changes of the next `apply`.
//! - `shutdown.rs`: SIGTERM part-way cancels safely; the next apply finishes.
//! - `store_damage.rs`: a state store damaged in many ways crashes no command, is
//!   reported (by `status` too) and moved aside, and never leads to a delete.
//! - `cli.rs`, `doctor.rs`, `logging.rs`, `graph.rs`: the command-line contract.
//! - `skip_policy.rs`: a skip fails the test with `CI=true` and is a loud line elsewhere.
//! - `controller.rs`: `gitvisor run` ([`controller`] helpers): the watch, git polling,
//!   drift at resync, rejected revisions, SIGTERM, `NOTIFY_SOCKET`, the API, metrics,
//!   signed commits, the unit file and flake.nix.
//! - `network.rs`: NAT, published ports, DHCP/DNS, host-only isolation, drift of the
//!   nftables table, an admin's table left byte-identical, a SIGKILL mid-apply (helpers
//!   in [`network`]).
//! - `file_volumes.rs`: Volumes as image files in a directory (no guest): lifecycle, a
//!   SIGKILL mid-copy, ten clones in one apply, a TCG guest writing to a clone, images
//!   from a URL over HTTPS with a test CA.
//! - `vms.rs`: VirtualMachines under QEMU TCG (guest built by [`vms`]): lifecycle with a
//!   kill -9 mid-create, console, pause, restart, forced stop, prune; firmware boot.
//! - `systemd_unit.rs`: an apply with a container, a DHCP bridge and a VM under the
//!   restrictions of the shipped unit, read from `contrib/systemd/gitvisor.service`
//!   and reproduced with `setpriv` and libseccomp ([`unit`]).
//! - `builtin.rs`: VirtualMachines with `hypervisor: builtin` on the real KVM (guest and
//!   VMM client in [`builtin`]): kill -9 mid-create, status, console, the ACPI power button and
//!   hard stop, prune.
//! - `kvm.rs`: stock Linux (Debian's kernel) on `hypervisor: builtin` and on QEMU with
//!   KVM, through the real gitvisor, inside one `-cpu max` guest ([`kvm`], [`vng`]):
//!   boot, vCPUs, disk, DHCP, ping, published port, console, clean and forced stops, a
//!   restart, a panic reported by `status`, prune.
//!
//! A driver's tests go in `e2e/tests/<kind>.rs`; what they need from the host beyond
//! links (LVM inside a throwaway guest, runc state, a QEMU monitor) goes in a module of
//! its own here, added to the list below and re-exported.
//!
//! Run with `cargo build -p gitvisor && cargo test -p gitvisor-e2e`. One thing to know
//! about timing: the kernel tears a namespace down asynchronously, ~15-25 ms per bridge
//! on the CI machine, and creating the next namespace waits for it, so the test binary
//! that runs after `crash.rs` (200 bridges) starts a few seconds late.

mod bridges;
pub mod builtin;
pub mod containers;
pub mod controller;
mod env;
mod host;
pub mod kvm;
mod locate;
pub mod lvm;
mod manifests;
mod netns;
pub mod network;
pub mod nfs;
mod output;
mod process;
mod report;
pub mod unit;
pub mod vlans;
pub mod vms;
pub mod vng;

pub use bridges::{DeclaredBridge, QUICKSTART_FILE, declared_bridges};
pub use env::{TEST_HOST, TestEnv, gitvisor_offline};
pub use host::{Link, MARKER, cidrs, ip};
pub use locate::{example_dir, gitvisor_bin, workspace_root};
pub use manifests::{Manifests, bridge_manifest, nth_address, resource_manifest};
pub use netns::Netns;
pub use output::{assert_contains, change, field, non_noop_actions, status_states};
pub use process::{COMMAND_TIMEOUT, Outcome, run_command, run_command_within};
pub use report::{current_test_name, in_ci, is_root, loud, skip};
