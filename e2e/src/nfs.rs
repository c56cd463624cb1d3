//! NFS end-to-end scenarios, run inside one throwaway guest ([`crate::vng`]).
//!
//! The CI host's kernel has neither the NFS client nor nfsd; Debian's kernel has both,
//! as modules. So the host test (`e2e/tests/nfs.rs`) boots one guest that runs
//! `nfs-guest` (`e2e/src/bin/nfs-guest.rs`), which loads `nfsd` and `nfsv4` and runs
//! every scenario against the real `gitvisor` binary, each in turn.
//!
//! In the guest the NFS server runs in network namespace `gvsrv` (`rpc.mountd` and
//! `rpc.nfsd -N 3`, NFSv4 only, exporting an ext4 loop file: the guest's 9p root cannot
//! be exported, and a tmpfs keeps no user xattrs before Linux 6.6, which file volumes on
//! the share need; it is the NFSv4 root, `fsid=0`, and shares are paths below it).
//! gitvisor runs in namespace `gvcli` (as `nsenter --net`, so the mounts it makes are in
//! the guest's one mount namespace, where the checks see them) and declares a Bridge
//! whose port is the client end of a veth pair to the server: the share is reached over
//! a gitvisor bridge. A dead server is the server's end of that pair taken down (the
//! server stops answering, as a crashed or unplugged NAS does). The checks read the
//! kernel's mount table and the server's files directly, never gitvisor's view.

use std::time::Duration;

/// The scenarios the guest runs, in order; the host expects a result for each.
pub const SCENARIOS: &[&str] = &[
    "mount over a gitvisor bridge (an apply SIGKILLed once its intent is recorded, finished by the next), write, read back on the server; a second plan is a no-op",
    "unmounted by hand or remounted read-only: mounted again as declared",
    "a mount gitvisor did not make is a conflict and is never unmounted",
    "server gone: plan, apply and status answer in time, the share is unreachable, a bridge still converges",
    "server back: the next apply mounts the share again",
    "a container mounts a subdirectory of the share read-only",
    "a qcow2 volume on the share (nfs: media) from an image, on the server; server gone: unreachable, a local volume still made; Retain prune",
    "prune: refused while a process holds the mount (pid named), unmounted once free",
];

/// How long the whole guest run may take.
pub const GUEST_DEADLINE: Duration = Duration::from_secs(600);

/// The guest side: runs inside the guest as root, with `nfsd` and `nfsv4`.
pub mod guest {
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::time::{Duration, Instant};

    use super::SCENARIOS;
    use crate::vng::{Check, code, ensure, in_ns, sh};
    use crate::{Outcome, run_command};

    const SERVER_NS: &str = "gvsrv";
    const CLIENT_NS: &str = "gvcli";
    const SERVER: &str = "10.77.0.1";
    /// The file system the server exports as its NFSv4 root, and its loop file.
    const EXPORT_ROOT: &str = "/run/gv-export";
    const EXPORT_IMAGE: &str = "/run/gv-export.ext4";
    /// A local directory for a file volume, on that ext4 (reached directly, not over
    /// NFS): the guest's tmpfs keeps no user xattrs before Linux 6.6.
    const LOCAL_VOLUMES: &str = "/run/gv-export/local-volumes";
    /// The server's end of the veth pair, and the client's (a port of gitvisor's bridge).
    const SERVER_END: &str = "vsrv";
    const CLIENT_END: &str = "vcli";
    /// Where the container scenario's image (a busybox root file system) is made.
    const CONTAINER_ROOTFS: &str = "/run/gv-rootfs";
    /// What a plan or an apply may take with the server gone: the reachability probe
    /// (3 s), a mount attempt (30 s at most) and a debug binary under TCG.
    const DEAD_SERVER_DEADLINE: Duration = Duration::from_secs(60);

    pub struct Guest {
        gitvisor: PathBuf,
        shared: PathBuf,
        manifests: PathBuf,
        state: PathBuf,
        run: PathBuf,
    }

    /// `nfs-guest --gitvisor BIN --shared DIR`: sets up the server and the namespaces and
    /// runs every scenario.
    pub fn main() -> std::process::ExitCode {
        let Some((gitvisor, shared)) = crate::vng::guest_args("nfs-guest") else {
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
            Guest::mount_write_read,
            Guest::drift,
            Guest::foreign,
            Guest::server_gone,
            Guest::server_back,
            Guest::container,
            Guest::volume_on_share,
            Guest::prune,
        ];
        let named: Vec<crate::vng::Scenario<Guest>> =
            SCENARIOS.iter().copied().zip(scenarios).collect();
        crate::vng::run_scenarios(&guest.shared, &guest, &named)
    }

    /// The kernel's NFS mount at `path`, as its mountinfo line.
    fn nfs_mount_at(path: &Path) -> Option<String> {
        let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let path = path.to_string_lossy();
        table
            .lines()
            .rev()
            .find(|line| line.split(' ').nth(4) == Some(path.as_ref()) && line.contains(" - nfs"))
            .map(str::to_owned)
    }

    fn write(path: &Path, text: &str) -> Check {
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn read(path: &Path) -> Result<String, String> {
        std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
    }

    impl Guest {
        fn setup(&self) -> Check {
            for module in ["bridge", "nfsd", "nfsv4", "loop", "ext4"] {
                sh("modprobe", &[module])?;
            }
            for dir in [&self.manifests, &self.state, &self.run] {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            for ns in [SERVER_NS, CLIENT_NS] {
                sh("ip", &["netns", "add", ns])?;
                in_ns(ns, "ip", &["link", "set", "lo", "up"])?;
            }
            in_ns(
                SERVER_NS,
                "ip",
                &[
                    "link", "add", SERVER_END, "type", "veth", "peer", "name", CLIENT_END, "netns",
                    CLIENT_NS,
                ],
            )?;
            in_ns(
                SERVER_NS,
                "ip",
                &["addr", "add", &format!("{SERVER}/24"), "dev", SERVER_END],
            )?;
            in_ns(SERVER_NS, "ip", &["link", "set", SERVER_END, "up"])?;
            in_ns(CLIENT_NS, "ip", &["link", "set", CLIENT_END, "up"])?;
            // The exported tmpfs, and nfs-utils' state on tmpfs (the root is read-only).
            std::fs::create_dir_all(EXPORT_ROOT).map_err(|e| format!("{EXPORT_ROOT}: {e}"))?;
            // An ext4 file system (a loop file on the guest's tmpfs), not a tmpfs: file
            // volumes on the share need user xattrs, which tmpfs keeps only from Linux 6.6.
            sh("truncate", &["-s", "256M", EXPORT_IMAGE])?;
            sh("mkfs.ext4", &["-q", "-F", EXPORT_IMAGE])?;
            sh("mount", &["-o", "loop", EXPORT_IMAGE, EXPORT_ROOT])?;
            std::fs::create_dir_all(format!("{EXPORT_ROOT}/media/sub"))
                .map_err(|e| format!("{EXPORT_ROOT}/media/sub: {e}"))?;
            write(
                Path::new(&format!("{EXPORT_ROOT}/media/sub/hello")),
                "from the server\n",
            )?;
            sh("mount", &["-t", "tmpfs", "gv-nfs-state", "/var/lib/nfs"])?;
            std::fs::create_dir_all("/var/lib/nfs/v4recovery")
                .map_err(|e| format!("/var/lib/nfs/v4recovery: {e}"))?;
            for table in ["etab", "rmtab"] {
                write(Path::new(&format!("/var/lib/nfs/{table}")), "")?;
            }
            // nfsd is per network namespace: its control file system, mountd and the
            // threads all start in the server's. A 10 s grace period (the shortest) instead
            // of 90 s: during it the server refuses to open files.
            in_ns(
                SERVER_NS,
                "sh",
                &[
                    "-c",
                    &format!(
                        "mount -t nfsd nfsd /proc/fs/nfsd && \
                         exportfs -o rw,no_root_squash,fsid=0,no_subtree_check,insecure 10.77.0.0/24:{EXPORT_ROOT} && \
                         rpc.mountd -N 2 -N 3 && rpc.nfsd -N 3 --grace-time 10 --lease-time 10 4"
                    ),
                ],
            )?;
            Ok(())
        }

        fn gitvisor_command(&self, args: &[&str]) -> Command {
            let mut command = Command::new("nsenter");
            command
                .arg(format!("--net=/run/netns/{CLIENT_NS}"))
                .arg(&self.gitvisor)
                .arg("--state-dir")
                .arg(&self.state)
                .arg("--run-dir")
                .arg(&self.run)
                .args(["--host", "nfs-guest"])
                .args(args)
                .env("NO_COLOR", "1");
            command
        }

        fn gitvisor(&self, args: &[&str]) -> Outcome {
            let started = Instant::now();
            let outcome = run_command(self.gitvisor_command(args));
            eprintln!(
                "  gitvisor {}: exit {:?} in {:.1?}",
                args.first().copied().unwrap_or_default(),
                outcome.code,
                started.elapsed()
            );
            outcome
        }

        fn dir(&self) -> String {
            self.manifests.to_string_lossy().into_owned()
        }

        fn apply(&self) -> Outcome {
            self.gitvisor(&["apply", &self.dir()])
        }

        fn plan(&self) -> Outcome {
            self.gitvisor(&["plan", &self.dir(), "--detailed-exitcode"])
        }

        fn declare(&self, kind: &str, name: &str, metadata: &str, spec: &str) {
            let mut text = format!(
                "apiVersion: gitvisor.dev/v1alpha1\nkind: {kind}\nmetadata:\n  name: {name}\n{metadata}spec:\n"
            );
            for line in spec.lines() {
                text.push_str("  ");
                text.push_str(line);
                text.push('\n');
            }
            let path = self.manifests.join(format!("{kind}-{name}.yaml"));
            std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }

        fn undeclare(&self, kind: &str, name: &str) {
            let _ = std::fs::remove_file(self.manifests.join(format!("{kind}-{name}.yaml")));
        }

        /// The share `media`: the server's `/media`, over bridge `brnfs`.
        fn declare_media(&self, extra: &str) {
            self.declare(
                "NfsMount",
                "media",
                "  dependsOn: [Bridge/brnfs]\n",
                &format!("server: {SERVER}\nexport: /media\n{extra}"),
            );
        }

        /// Where gitvisor mounts `name` by default (under its state dir).
        fn mount_path(&self, name: &str) -> PathBuf {
            self.state.join("nfs").join(name)
        }

        fn mount_write_read(&self) -> Check {
            self.declare(
                "Bridge",
                "brnfs",
                "",
                &format!("addresses: [10.77.0.2/24]\nports: [{CLIENT_END}]"),
            );
            self.declare_media("");
            // An apply SIGKILLed as soon as the mount's intent is recorded (before or
            // while `mount` runs), then finished by the next apply: one mount, no
            // conflict with the half-made one.
            let record = self.run.join("nfs/media.json");
            let output = self.run.join("killed-apply.log");
            let log =
                std::fs::File::create(&output).map_err(|e| format!("{}: {e}", output.display()))?;
            let log2 = log.try_clone().map_err(|e| e.to_string())?;
            let mut child = self
                .gitvisor_command(&["apply", &self.dir()])
                .stdout(log)
                .stderr(log2)
                .spawn()
                .map_err(|e| format!("gitvisor apply: {e}"))?;
            let started = Instant::now();
            let killed = loop {
                if record.exists() {
                    let _ = child.kill();
                    let _ = child.wait();
                    break true;
                }
                if child.try_wait().ok().flatten().is_some() {
                    break false;
                }
                if started.elapsed() > Duration::from_secs(120) {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err("apply made no progress".into());
                }
                std::thread::sleep(Duration::from_micros(200));
            };
            ensure(killed, || {
                format!(
                    "apply finished before it could be killed part-way:\n{}",
                    std::fs::read_to_string(&output).unwrap_or_default()
                )
            })?;
            code(&self.apply(), 0)?;
            let path = self.mount_path("media");
            let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            let mounts = table
                .lines()
                .filter(|line| line.split(' ').nth(4) == Some(path.to_string_lossy().as_ref()))
                .count();
            ensure(mounts == 1, || {
                format!(
                    "{mounts} mounts at {} after the re-apply:\n{table}",
                    path.display()
                )
            })?;
            let line = nfs_mount_at(&path)
                .ok_or_else(|| format!("nothing mounted at {}", path.display()))?;
            for option in [
                "10.77.0.1:/media",
                "vers=4.2",
                "soft",
                "timeo=50",
                "retrans=2",
                " rw,",
            ] {
                ensure(line.contains(option), || {
                    format!("the mount lacks {option:?}: {line}")
                })?;
            }
            let hello = read(&path.join("sub/hello"))?;
            ensure(hello == "from the server\n", || format!("read {hello:?}"))?;
            write(&path.join("written-by-client"), "over NFS\n")?;
            sh("sync", &[])?;
            let back = read(Path::new(&format!("{EXPORT_ROOT}/media/written-by-client")))?;
            ensure(back == "over NFS\n", || format!("the server has {back:?}"))?;
            code(&self.plan(), 0)?;
            // doctor, on a kernel with both: the client and nfsd are there.
            let doctor = self.gitvisor(&["doctor", "--output", "json"]);
            let report: serde_json::Value = serde_json::from_str(&doctor.stdout)
                .map_err(|e| format!("doctor --output json: {e}\n{doctor}"))?;
            let facilities = report["kinds"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|kind| kind["kind"] == "NfsMount")
                .map(|kind| kind["facilities"].clone())
                .ok_or_else(|| format!("doctor lists no NfsMount\n{doctor}"))?;
            for name in ["nfs-client", "nfsd", "nfs-common", "nfs-kernel-server"] {
                let status = facilities
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|f| f["name"] == name)
                    .map(|f| f["status"].clone());
                ensure(status == Some(serde_json::json!("ok")), || {
                    format!("doctor says {name}: {status:?}\n{facilities:#}")
                })?;
            }
            Ok(())
        }

        fn drift(&self) -> Check {
            let path = self.mount_path("media");
            sh("umount", &[&path.to_string_lossy()])?;
            let plan = self.plan();
            code(&plan, 2)?;
            ensure(plan.stdout.contains("not mounted any more"), || {
                format!("the plan does not say why\n{plan}")
            })?;
            code(&self.apply(), 0)?;
            ensure(nfs_mount_at(&path).is_some(), || "not mounted again".into())?;
            // Remounted read-only by hand: mounted again read-write, as declared.
            sh("mount", &["-o", "remount,ro", &path.to_string_lossy()])?;
            let line = nfs_mount_at(&path).unwrap_or_default();
            ensure(line.contains(" ro,"), || {
                format!("remount ro did not take: {line}")
            })?;
            code(&self.apply(), 0)?;
            let line = nfs_mount_at(&path).unwrap_or_default();
            ensure(line.contains(" rw,"), || {
                format!("not read-write again: {line}")
            })?;
            code(&self.plan(), 0)
        }

        fn foreign(&self) -> Check {
            let path = self.mount_path("other");
            std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let path_text = path.to_string_lossy().into_owned();
            // `nsenter --net`, not `ip netns exec`: the mount must be in the guest's mount
            // namespace, where gitvisor looks.
            sh(
                "nsenter",
                &[
                    &format!("--net=/run/netns/{CLIENT_NS}"),
                    "mount",
                    "-t",
                    "nfs",
                    "-o",
                    "vers=4.2,soft",
                    "10.77.0.1:/media",
                    &path_text,
                ],
            )?;
            self.declare(
                "NfsMount",
                "other",
                "",
                &format!("server: {SERVER}\nexport: /media"),
            );
            let plan = self.plan();
            code(&plan, 1)?;
            ensure(plan.stdout.contains("was not created by gitvisor"), || {
                format!("no conflict in the plan\n{plan}")
            })?;
            self.undeclare("NfsMount", "other");
            code(&self.gitvisor(&["apply", &self.dir(), "--prune"]), 0)?;
            ensure(nfs_mount_at(&path).is_some(), || {
                "gitvisor unmounted a mount it did not make".into()
            })?;
            sh("umount", &[&path_text]).map(|_| ())
        }

        fn server_gone(&self) -> Check {
            in_ns(SERVER_NS, "ip", &["link", "set", SERVER_END, "down"])?;
            // Mounted, the server gone: the plan answers from the mount table and says
            // the share is unreachable (on the unchanged mount: the JSON lists it).
            let timed = |args: &[&str]| {
                let started = Instant::now();
                let outcome = self.gitvisor(args);
                let took = started.elapsed();
                // Shaped like a scenario's verdict, so the host's log shows it.
                eprintln!(
                    "  with the server gone, `gitvisor {}`: ok in {took:.1?}",
                    args[0]
                );
                ensure(took < DEAD_SERVER_DEADLINE, || {
                    format!("`{}` took {took:?}\n{outcome}", args[0])
                })
                .map(|()| outcome)
            };
            let dir = self.dir();
            let plan = timed(&["plan", &dir, "--output", "json"])?;
            ensure(
                plan.stdout
                    .contains("share unreachable: server 10.77.0.1 does not answer"),
                || format!("the plan does not say the share is unreachable\n{plan}"),
            )?;
            let status = timed(&["status"])?;
            ensure(status.stdout.contains("share unreachable"), || {
                format!("status does not say the share is unreachable\n{status}")
            })?;
            // Unmounted meanwhile (lazily, and `-c`: umount would otherwise stat the mount
            // point and wait for the server), and a
            // new bridge declared: apply fails the share in time and makes the bridge.
            sh(
                "umount",
                &["-l", "-c", &self.mount_path("media").to_string_lossy()],
            )?;
            self.declare("Bridge", "brother", "", "addresses: [10.78.0.1/24]");
            let apply = timed(&["apply", &dir])?;
            code(&apply, 1)?;
            let all = format!("{}{}", apply.stdout, apply.stderr);
            ensure(
                all.contains("NfsMount media: cannot mount 10.77.0.1:/media"),
                || format!("apply does not say the share failed\n{apply}"),
            )?;
            in_ns(CLIENT_NS, "ip", &["link", "show", "dev", "brother"])
                .map_err(|e| format!("bridge brother was not made while the share failed: {e}"))
                .map(|_| ())
        }

        fn server_back(&self) -> Check {
            in_ns(SERVER_NS, "ip", &["link", "set", SERVER_END, "up"])?;
            code(&self.apply(), 0)?;
            let path = self.mount_path("media");
            ensure(nfs_mount_at(&path).is_some(), || "not mounted again".into())?;
            let back = read(&path.join("written-by-client"))?;
            ensure(back == "over NFS\n", || format!("read {back:?}"))?;
            code(&self.plan(), 0)
        }

        /// Container `reader` (a busybox `sleep`) mounts `sub` of share `media` read-only.
        fn container(&self) -> Check {
            let rootfs = Path::new(CONTAINER_ROOTFS);
            if !rootfs.join("bin/busybox").is_file() {
                crate::containers::busybox_rootfs(rootfs);
            }
            self.declare(
                "Container",
                "reader",
                "",
                &format!(
                    "image: {CONTAINER_ROOTFS}\ncommand: [sleep, '1000']\nstopTimeout: 1s\n\
                     mounts: [{{target: /data, nfs: media, subPath: sub, readOnly: true}}]"
                ),
            );
            let applied = self.apply();
            let root = self.run.join("runc").to_string_lossy().into_owned();
            let exec = |args: &[&str]| {
                let mut all = vec!["--root", root.as_str(), "exec", "reader"];
                all.extend_from_slice(args);
                sh("runc", &all)
            };
            let outcome = (|| {
                code(&applied, 0)?;
                let hello = exec(&["cat", "/data/hello"])?;
                ensure(hello == "from the server\n", || {
                    format!("the container reads {hello:?} from the share")
                })?;
                ensure(exec(&["touch", "/data/new"]).is_err(), || {
                    "the container wrote to a read-only mount of the share".into()
                })?;
                code(&self.plan(), 0)
            })();
            self.undeclare("Container", "reader");
            code(&self.apply(), 0)?;
            outcome
        }

        /// Volume `disk` with `nfs: media`: a qcow2 file in the share's mount path, made
        /// from a raw image; read back on the server side (its own tmpfs, not the mount)
        /// with the image's bytes; pruned with Retain, the file stays on the server.
        fn volume_on_share(&self) -> Check {
            let image = Path::new("/run/gv-image.raw");
            let mut bytes = vec![0_u8; 1 << 20];
            bytes[..16].copy_from_slice(b"gitvisor-on-nfs!");
            std::fs::write(image, &bytes).map_err(|e| format!("{}: {e}", image.display()))?;
            self.declare(
                "Volume",
                "disk",
                "",
                &format!(
                    "nfs: media\nformat: qcow2\nsize: 4MiB\nsource: {}",
                    image.display()
                ),
            );
            let outcome = self.volume_on_share_checks(&bytes);
            self.undeclare("Volume", "disk");
            let pruned = self.gitvisor(&["apply", &self.dir(), "--prune"]);
            outcome?;
            code(&pruned, 0)?;
            let on_server = format!("{EXPORT_ROOT}/media/disk.qcow2");
            ensure(Path::new(&on_server).is_file(), || {
                format!("{on_server} is gone after a prune with Retain")
            })?;
            let _ = std::fs::remove_file(&on_server);
            code(&self.plan(), 0)
        }

        fn volume_on_share_checks(&self, bytes: &[u8]) -> Check {
            let applied = self.apply();
            code(&applied, 0)?;
            let on_server = format!("{EXPORT_ROOT}/media/disk.qcow2");
            let info = sh("qemu-img", &["info", "--output", "json", &on_server])?;
            ensure(info.contains("\"format\": \"qcow2\""), || {
                format!("the server's {on_server} is not qcow2: {info}\n{applied}")
            })?;
            let back = "/run/gv-disk-back.raw";
            sh("qemu-img", &["convert", "-O", "raw", &on_server, back])?;
            let written = std::fs::read(back).map_err(|e| format!("{back}: {e}"))?;
            let _ = std::fs::remove_file(back);
            ensure(
                written.len() == 4 << 20 && written[..bytes.len()] == bytes[..],
                || {
                    format!(
                        "the server's disk holds {} bytes, not the image",
                        written.len()
                    )
                },
            )?;
            code(&self.plan(), 0)?;
            // The server gone: an apply answers in time (the share's directory is read
            // under its own short deadline, or from the client's cache), and a volume in
            // a local directory is still made.
            in_ns(SERVER_NS, "ip", &["link", "set", SERVER_END, "down"])?;
            self.declare(
                "Volume",
                "local",
                "",
                &format!("directory: {LOCAL_VOLUMES}\nformat: raw\nsize: 1MiB"),
            );
            let started = Instant::now();
            let apply = self.apply();
            let took = started.elapsed();
            in_ns(SERVER_NS, "ip", &["link", "set", SERVER_END, "up"])?;
            self.undeclare("Volume", "local");
            eprintln!(
                "  with the server gone, `gitvisor apply` with a volume on the share: {took:.1?}"
            );
            ensure(took < DEAD_SERVER_DEADLINE, || {
                format!("apply took {took:?} with the server gone\n{apply}")
            })?;
            ensure(
                Path::new(&format!("{LOCAL_VOLUMES}/local.raw")).is_file(),
                || format!("the local volume was not made while the share was gone\n{apply}"),
            )?;
            ensure(
                apply
                    .stdout
                    .contains("(the share of NfsMount/media) is unreachable"),
                || format!("apply does not say the volume's share is unreachable\n{apply}"),
            )?;
            code(&self.apply(), 0)
        }

        fn prune(&self) -> Check {
            let path = self.mount_path("media");
            let mut holder = Command::new("sleep");
            holder.arg("300").current_dir(&path);
            let mut holder = holder
                .spawn()
                .map_err(|e| format!("cannot start a holder in {}: {e}", path.display()))?;
            let pid = holder.id();
            self.undeclare("NfsMount", "media");
            let plan = self.gitvisor(&["plan", &self.dir(), "--prune"]);
            let named = plan.stdout.contains(&format!("pid {pid} (sleep)"));
            let apply = self.gitvisor(&["apply", &self.dir(), "--prune"]);
            let still = nfs_mount_at(&path).is_some();
            let _ = holder.kill();
            let _ = holder.wait();
            ensure(named, || {
                format!("the plan does not name pid {pid}\n{plan}")
            })?;
            code(&apply, 1)?;
            ensure(still, || "unmounted while held".into())?;
            let all = format!("{}{}", apply.stdout, apply.stderr);
            ensure(all.contains(&format!("pid {pid} (sleep)")), || {
                format!("apply does not name pid {pid}\n{apply}")
            })?;
            code(&self.gitvisor(&["apply", &self.dir(), "--prune"]), 0)?;
            ensure(nfs_mount_at(&path).is_none(), || {
                "still mounted after the prune".into()
            })?;
            let kept = read(Path::new(&format!("{EXPORT_ROOT}/media/written-by-client")))?;
            ensure(kept == "over NFS\n", || {
                format!("the server's data: {kept:?}")
            })?;
            code(&self.plan(), 0)
        }
    }
}
