//! LVM end-to-end scenarios, run inside a throwaway guest.
//!
//! device-mapper is absent from the CI host's kernel, so logical volumes cannot be made
//! there. The scenarios therefore run inside one `virtme-ng` guest (`vng
//! --disable-kvm`: Debian's `linux-image-amd64` under QEMU TCG, over the host's own file
//! system, read-only except a shared directory), which has device-mapper as modules.
//!
//! # How
//!
//! 1. The host test ([`GuestRun::prepare`], from `e2e/tests/volumes.rs`; the launcher is
//!    [`crate::vng`], shared with the VLAN scenarios) checks what it
//!    needs (root, `vng`, a kernel image, QEMU, lvm2, qemu-img) and skips loudly when
//!    something is missing; makes the source images with the host's `qemu-img` (native
//!    speed) in a shared temporary directory; and boots **one** guest that runs the
//!    `lvm-guest` binary (`e2e/src/bin/lvm-guest.rs`, built with the tests).
//! 2. In the guest, [`guest::main`] loads `loop`, `dm-mod`, `dm-thin-pool` and
//!    `dm-snapshot`, makes a volume group on a loop file in the guest's memory, and runs
//!    every scenario against the real `gitvisor` binary in turn, one after the other
//!    (they share the volume group and the state dir, as a host would). Each scenario's
//!    outcome is appended to `results.jsonl` in the shared directory as soon as it is
//!    known, so a guest that dies part-way still reports what ran.
//! 3. The host reads the results ([`GuestRun::assert_all_passed`]) and fails with every scenario
//!    that failed or did not report.
//!
//! The checks read the host through lvm2's own tools (`lvs`, `blkid`, `dumpe2fs`,
//! `qemu-img compare`), never through gitvisor. Booting once keeps the cost at one boot
//! (about 45 s here) plus the scenarios.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::Outcome;

/// The scenarios the guest runs, in order; the host expects a result for each.
pub const SCENARIOS: &[&str] = &[
    "create linear, thin, with a filesystem, and from a qcow2 image",
    "a second plan is a no-op",
    "grow in place, filesystem included",
    "shrink refused",
    "unmanaged LV is a conflict and untouched",
    "not enough space: refused, nothing left behind",
    "a thin snapshot holds the data written before it",
    "apply killed during population, re-run completes it",
    "prune: Retain keeps the LV and its data, Delete removes it",
];

/// The volume group the guest makes.
pub const VG: &str = "gvtest";
/// How long the whole guest run may take.
pub const GUEST_DEADLINE: Duration = Duration::from_secs(900);

/// A guest run's shared directory and what it needs (see [`crate::vng`]).
pub struct GuestRun(crate::vng::GuestRun);

impl GuestRun {
    /// Checks the host can boot the guest; `None` (after a loud SKIPPED line) when not.
    pub fn prepare(test: &str) -> Option<GuestRun> {
        crate::vng::GuestRun::prepare(
            test,
            "lvm",
            &[
                ("lvm", ".ci/deps/volume.sh"),
                ("qemu-img", ".ci/deps/volume.sh"),
                ("qemu-io", ".ci/deps/volume.sh"),
                ("mkfs.ext4", ".ci/deps/volume.sh"),
            ],
        )
        .map(GuestRun)
    }

    pub fn shared(&self) -> &Path {
        self.0.shared()
    }

    /// Makes the source images the scenarios write (with the host's tools, at native
    /// speed): `small.qcow2` (64 MiB disk, 8 MiB of data) and `big.qcow2` (128 MiB, all
    /// data, so the copy takes long enough under TCG to be killed in the middle).
    pub fn make_images(&self) {
        for (name, size, data) in [("small.qcow2", "64M", "8M"), ("big.qcow2", "128M", "128M")] {
            let path = self.shared().join(name);
            let path = path.to_string_lossy();
            expect_ok(command(
                "qemu-img",
                &["create", "-q", "-f", "qcow2", &path, size],
            ));
            let write = format!("write -P 0x5a 0 {data}");
            expect_ok(command("qemu-io", &["-f", "qcow2", "-c", &write, &path]));
        }
    }

    /// Boots the guest and runs every scenario; returns `vng`'s outcome (its exit code
    /// says little: the results file is the answer).
    pub fn run(&self, guest_binary: &Path, gitvisor: &Path) -> Outcome {
        self.0.run(guest_binary, gitvisor, "3G", GUEST_DEADLINE)
    }

    /// Panics with every scenario that failed or did not report: see
    /// [`crate::vng::GuestRun::assert_all_passed`].
    #[track_caller]
    pub fn assert_all_passed(&self, expected: &[&str], outcome: &Outcome) {
        self.0.assert_all_passed(expected, outcome);
    }
}

fn command(program: &str, args: &[&str]) -> Command {
    let mut command = Command::new(program);
    command.args(args).env("LVM_SUPPRESS_FD_WARNINGS", "1");
    command
}

#[track_caller]
fn expect_ok(command: Command) -> Outcome {
    let outcome = crate::run_command(command);
    if outcome.code != Some(0) {
        panic!("command failed\n{outcome}");
    }
    outcome
}

/// The guest side: runs inside the guest as root, with device-mapper.
pub mod guest {
    use std::collections::BTreeMap;
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use serde_json::Value;

    use super::{SCENARIOS, VG, command};
    use crate::vng::{Check, code, ensure, stdout_of};
    use crate::{Outcome, run_command};

    /// What every scenario shares: the binary, the directories, the manifests.
    pub struct Guest {
        gitvisor: PathBuf,
        shared: PathBuf,
        manifests: PathBuf,
        state: PathBuf,
        run: PathBuf,
    }

    /// `lvm-guest --gitvisor BIN --shared DIR`: sets up a VG and runs every scenario.
    pub fn main() -> std::process::ExitCode {
        let Some((gitvisor, shared)) = crate::vng::guest_args("lvm-guest") else {
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
            guest.report("setup", &Err(why));
            return std::process::ExitCode::FAILURE;
        }
        let scenarios: [fn(&Guest) -> Check; 9] = [
            Guest::create,
            Guest::noop,
            Guest::grow,
            Guest::shrink,
            Guest::conflict,
            Guest::no_space,
            Guest::snapshot,
            Guest::killed,
            Guest::prune,
        ];
        let named: Vec<crate::vng::Scenario<Guest>> =
            SCENARIOS.iter().copied().zip(scenarios).collect();
        crate::vng::run_scenarios(&guest.shared, &guest, &named)
    }

    impl Guest {
        fn report(&self, name: &str, result: &Check) {
            crate::vng::report(&self.shared, name, result);
        }

        fn setup(&self) -> Check {
            for module in ["loop", "dm-mod", "dm-thin-pool", "dm-snapshot"] {
                sh("modprobe", &[module])?;
            }
            for dir in [&self.manifests, &self.state, &self.run] {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            sh("truncate", &["-s", "1536M", "/run/gv-pv.img"])?;
            let device = sh("losetup", &["-f", "--show", "/run/gv-pv.img"])?;
            sh("vgcreate", &["-s", "4m", VG, device.trim()])?;
            sh(
                "lvcreate",
                &[
                    "--yes",
                    "--type",
                    "thin-pool",
                    "-n",
                    "pool",
                    "-L",
                    "256m",
                    VG,
                ],
            )?;
            Ok(())
        }

        fn gitvisor(&self, args: &[&str]) -> Outcome {
            let mut command = Command::new(&self.gitvisor);
            command
                .arg("--state-dir")
                .arg(&self.state)
                .arg("--run-dir")
                .arg(&self.run)
                .args(["--host", "lvm-guest"])
                .args(args)
                .env("NO_COLOR", "1");
            run_command(command)
        }

        fn apply(&self, extra: &[&str]) -> Outcome {
            let dir = self.manifests.to_string_lossy().into_owned();
            let mut args = vec!["apply", dir.as_str()];
            args.extend_from_slice(extra);
            self.gitvisor(&args)
        }

        fn plan(&self) -> Outcome {
            let dir = self.manifests.to_string_lossy().into_owned();
            self.gitvisor(&["plan", &dir, "--detailed-exitcode"])
        }

        fn declare(&self, name: &str, spec: &str) {
            let mut text = format!(
                "apiVersion: gitvisor.dev/v1alpha1\nkind: Volume\nmetadata:\n  name: {name}\nspec:\n  volumeGroup: {VG}\n"
            );
            for line in spec.lines() {
                text.push_str("  ");
                text.push_str(line);
                text.push('\n');
            }
            let path = self.manifests.join(format!("{name}.yaml"));
            std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }

        fn undeclare(&self, name: &str) {
            let _ = std::fs::remove_file(self.manifests.join(format!("{name}.yaml")));
        }

        fn image(&self, name: &str) -> String {
            self.shared.join(name).to_string_lossy().into_owned()
        }

        fn create(&self) -> Check {
            self.declare("lin", "size: 64MiB\nfilesystem: ext4");
            self.declare("thin", "size: 64MiB\nthinPool: pool");
            self.declare(
                "img",
                &format!("size: 64MiB\nsource: {}", self.image("small.qcow2")),
            );
            self.declare("del", "size: 8MiB\nreclaimPolicy: Delete");
            code(&self.apply(&[]), 0)?;
            let lvs = lvs()?;
            for name in ["lin", "thin", "img", "del"] {
                let lv = lvs
                    .get(name)
                    .ok_or_else(|| format!("no LV {name}: {lvs:?}"))?;
                ensure(lv.tags.contains(&"gitvisor:managed".to_owned()), || {
                    format!("{name} lacks the marker: {:?}", lv.tags)
                })?;
                ensure(!lv.tags.iter().any(|t| t == "gitvisor:incomplete"), || {
                    format!("{name} is still incomplete: {:?}", lv.tags)
                })?;
            }
            ensure(lvs["thin"].pool == "pool", || {
                format!("thin: {:?}", lvs["thin"])
            })?;
            let blkid = sh("blkid", &["-o", "value", "-s", "TYPE", &dev("lin")])?;
            ensure(blkid.trim() == "ext4", || format!("lin holds {blkid:?}"))?;
            sh(
                "qemu-img",
                &[
                    "compare",
                    "-f",
                    "qcow2",
                    "-F",
                    "raw",
                    &self.image("small.qcow2"),
                    &dev("img"),
                ],
            )
            .map(|_| ())
        }

        fn noop(&self) -> Check {
            code(&self.plan(), 0)
        }

        fn grow(&self) -> Check {
            self.declare("lin", "size: 128MiB\nfilesystem: ext4");
            code(&self.apply(&[]), 0)?;
            let size = lvs()?.get("lin").map(|lv| lv.size);
            ensure(size == Some(128 << 20), || format!("lin is {size:?} bytes"))?;
            let dump = sh("dumpe2fs", &["-h", &dev("lin")])?;
            let field = |name: &str| -> u64 {
                dump.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0)
            };
            let bytes = field("Block count:") * field("Block size:");
            ensure(bytes == 128 << 20, || {
                format!("the filesystem spans {bytes} bytes\n{dump}")
            })?;
            code(&self.plan(), 0)
        }

        fn shrink(&self) -> Check {
            self.declare("lin", "size: 64MiB\nfilesystem: ext4");
            let plan = self.plan();
            code(&plan, 1)?;
            ensure(
                plan.stdout.contains(
                    "shrinking is refused: volume lin (gvtest/lin) is 128MiB and declares 64MiB",
                ),
                || format!("{plan}"),
            )?;
            code(&self.apply(&[]), 1)?;
            let size = lvs()?.get("lin").map(|lv| lv.size);
            self.declare("lin", "size: 128MiB\nfilesystem: ext4");
            ensure(size == Some(128 << 20), || format!("lin is {size:?} bytes"))
        }

        fn conflict(&self) -> Check {
            sh(
                "lvcreate",
                &["--yes", "-n", "manual", "-L", "8m", "--addtag", "mine", VG],
            )?;
            self.declare("manual", "size: 16MiB");
            let plan = self.plan();
            let applied = self.apply(&[]);
            self.undeclare("manual");
            code(&plan, 1)?;
            ensure(plan.stdout.contains("was not created by gitvisor"), || {
                format!("{plan}")
            })?;
            code(&applied, 1)?;
            let lv = lvs()?.remove("manual").ok_or("manual is gone")?;
            ensure(lv.tags == ["mine"] && lv.size == 8 << 20, || {
                format!("manual changed: {lv:?}")
            })
        }

        fn no_space(&self) -> Check {
            self.declare("huge", "size: 4GiB");
            let plan = self.plan();
            let applied = self.apply(&[]);
            self.undeclare("huge");
            code(&plan, 1)?;
            ensure(
                plan.stdout
                    .contains("not enough free space in volume group gvtest"),
                || format!("{plan}"),
            )?;
            code(&applied, 1)?;
            ensure(!lvs()?.contains_key("huge"), || {
                "an LV huge was left".to_owned()
            })
        }

        fn snapshot(&self) -> Check {
            write_pattern(&dev("thin"), 0xab)?;
            self.declare(
                "thin-snap",
                "size: 64MiB\nsource: {snapshotOf: Volume/thin}",
            );
            code(&self.apply(&[]), 0)?;
            write_pattern(&dev("thin"), 0xcd)?;
            let snap = read_start(&dev("thin-snap"))?;
            ensure(snap.iter().all(|b| *b == 0xab), || {
                format!(
                    "the snapshot does not hold the data written before it: {:x?}",
                    &snap[..16]
                )
            })?;
            let origin = read_start(&dev("thin"))?;
            ensure(origin.iter().all(|b| *b == 0xcd), || {
                "the origin lost its new data".into()
            })?;
            let lv = lvs()?.remove("thin-snap").ok_or("no thin-snap")?;
            ensure(lv.origin == "thin" && lv.pool == "pool", || {
                format!("{lv:?}")
            })?;
            code(&self.plan(), 0)
        }

        fn killed(&self) -> Check {
            self.declare(
                "big",
                &format!("size: 128MiB\nsource: {}", self.image("big.qcow2")),
            );
            let dir = self.manifests.to_string_lossy().into_owned();
            let mut apply = Command::new(&self.gitvisor);
            apply
                .arg("--state-dir")
                .arg(&self.state)
                .arg("--run-dir")
                .arg(&self.run)
                .args(["--host", "lvm-guest", "apply", &dir])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let mut child = apply
                .spawn()
                .map_err(|e| format!("cannot start apply: {e}"))?;
            let copier = wait_for_copy(&mut child, &dev("big"));
            let _ = child.kill();
            let _ = child.wait();
            let copier = copier?;
            // The copy dies with gitvisor (setpriv --pdeathsig), not writing on.
            let start = Instant::now();
            while Path::new(&format!("/proc/{copier}")).exists() {
                if start.elapsed() > Duration::from_secs(20) {
                    return Err(format!("qemu-img ({copier}) outlived the killed gitvisor"));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if let Some(lv) = lvs()?.get("big") {
                ensure(lv.tags.iter().any(|t| t == "gitvisor:incomplete"), || {
                    format!("a half-written volume looks ready: {lv:?}")
                })?;
            }
            code(&self.apply(&[]), 0)?;
            let lv = lvs()?.remove("big").ok_or("no LV big after the re-run")?;
            ensure(!lv.tags.iter().any(|t| t == "gitvisor:incomplete"), || {
                format!("{lv:?}")
            })?;
            sh(
                "qemu-img",
                &[
                    "compare",
                    "-f",
                    "qcow2",
                    "-F",
                    "raw",
                    &self.image("big.qcow2"),
                    &dev("big"),
                ],
            )?;
            code(&self.plan(), 0)
        }

        fn prune(&self) -> Check {
            for name in ["lin", "del", "big", "img", "thin-snap", "thin"] {
                self.undeclare(name);
            }
            self.declare("keep", "size: 8MiB");
            let applied = self.apply(&["--prune"]);
            code(&applied, 0)?;
            let lvs = lvs()?;
            let lin = lvs.get("lin").ok_or("the retained LV lin is gone")?;
            ensure(!lin.tags.iter().any(|t| t.starts_with("gitvisor:")), || {
                format!("lin keeps gitvisor's tags: {lin:?}")
            })?;
            let blkid = sh("blkid", &["-o", "value", "-s", "TYPE", &dev("lin")])?;
            ensure(blkid.trim() == "ext4", || {
                format!("lin's data changed: {blkid:?}")
            })?;
            ensure(!lvs.contains_key("del"), || {
                "del (reclaimPolicy Delete) is still there".into()
            })?;
            code(&self.plan(), 0)
        }
    }

    /// Waits until `qemu-img convert` writes onto `device`; its pid. Fails when apply
    /// ends first.
    fn wait_for_copy(child: &mut Child, device: &str) -> Result<u32, String> {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "apply ended ({status}) before the copy could be interrupted"
                ));
            }
            if start.elapsed() > Duration::from_secs(120) {
                return Err("no qemu-img convert started within 120s".into());
            }
            for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                    continue;
                };
                let args: Vec<String> = cmdline
                    .split(|b| *b == 0)
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                let is_copy = args.first().is_some_and(|a| a.ends_with("qemu-img"))
                    && args.iter().any(|a| a == "convert")
                    && args.iter().any(|a| a == device);
                if is_copy {
                    return Ok(pid);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn dev(name: &str) -> String {
        format!("/dev/{VG}/{name}")
    }

    const PATTERN_LEN: usize = 1 << 20;

    fn write_pattern(device: &str, byte: u8) -> Check {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(device)
            .map_err(|e| format!("{device}: {e}"))?;
        file.write_all(&vec![byte; PATTERN_LEN])
            .and_then(|()| file.sync_all())
            .map_err(|e| format!("writing {device}: {e}"))
    }

    fn read_start(device: &str) -> Result<Vec<u8>, String> {
        use std::io::Read;
        let mut buffer = vec![0u8; PATTERN_LEN];
        std::fs::File::open(device)
            .and_then(|mut file| file.read_exact(&mut buffer))
            .map_err(|e| format!("reading {device}: {e}"))?;
        Ok(buffer)
    }

    /// Runs an LVM (or other) tool the LVM way; its stdout, or the whole outcome as the error.
    fn sh(program: &str, args: &[&str]) -> Result<String, String> {
        stdout_of(command(program, args))
    }

    #[derive(Debug)]
    pub struct Lv {
        pub size: u64,
        pub tags: Vec<String>,
        pub pool: String,
        pub origin: String,
    }

    /// The test VG's LVs, read with `lvs` (never through gitvisor).
    fn lvs() -> Result<BTreeMap<String, Lv>, String> {
        let json = sh(
            "lvs",
            &[
                "--reportformat",
                "json",
                "--units",
                "b",
                "--nosuffix",
                "-o",
                "lv_name,lv_size,lv_tags,pool_lv,origin",
                VG,
            ],
        )?;
        let value: Value = serde_json::from_str(&json).map_err(|e| format!("lvs: {e}: {json}"))?;
        let text = |lv: &Value, key: &str| lv[key].as_str().unwrap_or_default().to_owned();
        Ok(value["report"][0]["lv"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|lv| {
                (
                    text(lv, "lv_name"),
                    Lv {
                        size: text(lv, "lv_size").parse().unwrap_or(0),
                        tags: text(lv, "lv_tags")
                            .split(',')
                            .filter(|t| !t.is_empty())
                            .map(str::to_owned)
                            .collect(),
                        pool: text(lv, "pool_lv"),
                        origin: text(lv, "origin"),
                    },
                )
            })
            .collect())
    }
}
