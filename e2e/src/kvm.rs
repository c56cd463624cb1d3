//! Stock Linux on KVM end to end: Debian's kernel booted by the real `gitvisor` binary on
//! `hypervisor: builtin` (gitvisor-vmm) and on `hypervisor: qemu` with KVM, inside one
//! throwaway guest ([`crate::vng`]).
//!
//! # Why a guest
//!
//! This machine's `/dev/kvm` is a nested, paravirtualised KVM that hangs stock kernels
//! early in boot. One level down it works: a `vng --disable-kvm` guest started with
//! `-cpu max` sees an emulated AMD CPU with `svm` and `npt`, and Debian's kernel there
//! loads `kvm_amd` and gets a `/dev/kvm` on which Debian's kernel boots. So the host test
//! (`e2e/tests/kvm.rs`) boots one such guest that runs `kvm-guest`
//! (`e2e/src/bin/kvm-guest.rs`), which runs every scenario of [`SCENARIOS`] in turn
//! against gitvisor and the `gitvisor-vmm` beside it. Times are double emulation (a
//! nested boot to `/init` takes tens of seconds): each scenario's time is printed.
//!
//! # The VMs' guest
//!
//! Debian's `/boot/vmlinuz-*` with an initramfs made here ([`linux_initramfs`], the
//! `newc` writer of [`crate::vms`]): a static busybox, the modules [`GUEST_MODULES`] with
//! their dependencies (virtio-mmio for gitvisor-vmm's devices, virtio-pci for QEMU's,
//! virtio-blk, virtio-net, the ACPI `button` driver and `evdev` for the power button),
//! and an `/init` that prints on the serial console:
//!
//! - `GV-BOOT-OK`, then `GV-CPUS <n>` (processors in `/proc/cpuinfo`), `GV-INPUT <names>`
//!   (the input devices a shutdown request can come through);
//! - `GV-DISK <dev> serial=<serial> read=<first 12 bytes>` per virtio disk (its serial
//!   from sysfs); on the disk with serial `disk0` it writes `GV-GUEST-WROTE` at byte 512;
//! - `GV-DHCP-OK <address>` after `udhcpc` (`gv.dhcp=1`), `GV-LISTEN <port>` once a busybox
//!   `nc` server answers `GV-WEB <address>` on `gv.listen=<port>`;
//! - `GV-ECHO <line>` per line typed on its console; the line `gv-deaf` makes it ignore
//!   shutdown requests from then on (`GV-DEAF`);
//! - on the ACPI power button (busybox `acpid`, `/etc/acpi/PWRF/00000080`) or Ctrl+Alt+Del
//!   (SIGINT to PID 1): `GV-SHUTDOWN <how>`, `GV-CLEAN-STOP` written at byte 1024 of disk
//!   `disk0`, `sync`, `poweroff -f` (ACPI S5) — or `GV-IGNORED <how>` when deaf;
//! - `GV-TICK <n>` every second.
//!
//! gitvisor runs in a network namespace of its own (`gvk`), whose uplink `up0`
//! (192.0.2.1) leads to namespace `gvo` (192.0.2.2, the "outside"), from which a
//! published port is reached.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::vms::{Cpio, add_modules, guest_kernel, module_load_order};

/// The scenarios the guest runs, in order; the host expects a result for each.
pub const SCENARIOS: &[&str] = &[
    "builtin: apply killed mid-create, re-applied, boots Debian's kernel to /init through the kernel cache",
    "builtin: 2 vCPUs, its disk read by serial and written, console both ways",
    "builtin: static DHCP lease from a NAT bridge, ping, a published port answers",
    "builtin: a memory change is a restart reusing the cached kernel; a guest ignoring the shutdown is stopped after shutdownTimeout",
    "builtin: Stopped is a clean guest shutdown, its data in the backing file",
    "builtin: a kernel that panics (no virtio_blk, no /init) is reported in status from its console",
    "qemu: accel auto chooses KVM, boots, reads its disk, gets its lease; accel kvm boots the same machine",
    "prune leaves nothing, the kernel cache included",
];

/// How long the whole guest run may take.
pub const GUEST_DEADLINE: Duration = Duration::from_secs(1500);

/// The kernel modules the VMs' initramfs loads, dependencies resolved from `modules.dep`.
pub const GUEST_MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "button",
    "evdev",
];

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /bin /sbin /usr/bin /usr/sbin /etc/acpi/PWRF /var/log
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec 0</dev/console 1>/dev/console 2>&1
for module in $(cat /etc/modules); do insmod "/lib/modules/$module.ko" 2>/dev/null; done
echo GV-BOOT-OK
echo "GV-CPUS $(grep -c ^processor /proc/cpuinfo)"
# The input devices a shutdown request can come through (power button, AT keyboard).
echo "GV-INPUT $(sed -n 's/^N: Name=//p' /proc/bus/input/devices | tr '\n' ' ')"
arg() { tr ' ' '\n' </proc/cmdline | sed -n "s/^$1=//p"; }
for disk in /sys/block/vd*; do
    [ -e "$disk" ] || continue
    serial=$(cat "$disk/serial" 2>/dev/null)
    read=$(dd if="/dev/${disk##*/}" bs=12 count=1 2>/dev/null)
    echo "GV-DISK ${disk##*/} serial=$serial read=$read"
    if [ "$serial" = disk0 ]; then
        echo "/dev/${disk##*/}" >/tmp/data-disk
        printf GV-GUEST-WROTE | dd of="/dev/${disk##*/}" bs=512 seek=1 conv=notrunc 2>/dev/null
    fi
done
if [ "$(arg gv.dhcp)" = 1 ]; then
    ip link set eth0 up
    lease=GV-DHCP-FAIL
    if udhcpc -i eth0 -f -q -n -t 60 -T 2 -s /etc/udhcpc.script >/dev/null 2>&1 \
        && [ -s /tmp/lease ]; then
        lease="GV-DHCP-OK $(cat /tmp/lease)"
    fi
    echo "$lease"
fi
if [ -n "$(arg gv.listen)" ]; then
    nc -ll -p "$(arg gv.listen)" -e echo "GV-WEB $(cat /tmp/lease 2>/dev/null)" </dev/null &
    echo "GV-LISTEN $(arg gv.listen)"
fi
trap '/etc/stop ctrl-alt-del' INT
# In the foreground (daemonized, busybox acpid exits when it cannot open its log).
acpid -f -c /etc/acpi -l /tmp/acpid.log &
(while read -r line; do
    echo "GV-ECHO $line"
    if [ "$line" = gv-deaf ]; then touch /tmp/deaf; echo GV-DEAF; fi
done) </dev/console &
n=0
while true; do
    n=$((n + 1))
    echo "GV-TICK $n"
    sleep 1
done
"#;

/// What the power button and Ctrl+Alt+Del run: a clean power-off with a marker on the
/// data disk, unless the guest was told to ignore shutdowns.
const STOP: &str = r#"#!/bin/sh
# acpid runs its actions with its own output elsewhere: say it on the console.
exec >/dev/console 2>&1
if [ -e /tmp/deaf ]; then echo "GV-IGNORED $1"; exit 0; fi
echo "GV-SHUTDOWN $1"
if [ -s /tmp/data-disk ]; then
    printf GV-CLEAN-STOP | dd of="$(cat /tmp/data-disk)" bs=512 seek=2 conv=notrunc 2>/dev/null
fi
sync
poweroff -f
"#;

const POWER_BUTTON: &str = "#!/bin/sh\nexec /etc/stop power-button\n";

const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
case "$1" in
bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    [ -n "$router" ] && ip route replace default via "${router%% *}"
    echo "$ip" >/tmp/lease
    ;;
esac
exit 0
"#;

/// Writes the VMs' initramfs (see the module docs) to `path`; `modules` are the kernel
/// modules it carries, `init` whether it has an `/init` (without one, the kernel looks
/// for its root file system on the `root=` device).
pub fn linux_initramfs(path: &Path, modules: &[&str], init: bool) -> Result<PathBuf, String> {
    let (kernel, modules_dir) = guest_kernel()?;
    let busybox = crate::vms::static_busybox()?;
    let order = module_load_order(&modules_dir, modules)?;
    let mut cpio = Cpio::default();
    for dir in ["bin", "dev", "etc", "etc/acpi", "etc/acpi/PWRF", "lib"] {
        cpio.dir(dir);
    }
    cpio.dir("lib/modules");
    cpio.char_device("dev/console", 5, 1);
    if init {
        cpio.file(
            "bin/busybox",
            0o755,
            &std::fs::read(&busybox).map_err(|e| format!("{}: {e}", busybox.display()))?,
        );
        cpio.file("init", 0o755, INIT.as_bytes());
        cpio.file("etc/stop", 0o755, STOP.as_bytes());
        cpio.file("etc/acpi/PWRF/00000080", 0o755, POWER_BUTTON.as_bytes());
        cpio.file("etc/udhcpc.script", 0o755, UDHCPC_SCRIPT.as_bytes());
    }
    add_modules(&mut cpio, &modules_dir, &order)?;
    std::fs::write(path, cpio.finish()).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(kernel)
}

/// The guest side: runs inside the `-cpu max` guest as root.
pub mod guest {
    use std::io::{BufRead, BufReader, Write};
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use super::SCENARIOS;
    use crate::vms::SerialLog;
    use crate::vng::{Check, code, ensure, in_ns, sh};
    use crate::{Outcome, run_command_within};

    /// gitvisor's namespace and the outside's.
    const HOST_NS: &str = "gvk";
    const OUTSIDE_NS: &str = "gvo";
    const UPLINK_ADDRESS: &str = "192.0.2.1";
    const BRIDGE: &str = "brk";
    const BUILTIN_MAC: &str = "52:54:00:00:00:10";
    const BUILTIN_LEASE: &str = "10.0.0.10";
    const QEMU_MAC: &str = "52:54:00:00:00:11";
    const QEMU_LEASE: &str = "10.0.0.11";
    /// What the host wrote at the start of each data disk, read back by the guest.
    const HOST_DATA: &str = "GV-HOST-DATA";
    /// A nested boot to a marker, double emulation on a loaded 2-core machine.
    const BOOT: Duration = Duration::from_secs(240);
    /// The shutdown timeout of the VMs: long enough for a nested guest's clean power-off.
    const SHUTDOWN_TIMEOUT_S: u64 = 30;
    /// The forced stop's timeout, for the guest that ignores it.
    const DEAF_TIMEOUT_S: u64 = 5;
    /// gitvisor's commands that boot nothing themselves may still wait on a guest's
    /// shutdown: past this they count as hung.
    const APPLY_DEADLINE: Duration = Duration::from_secs(300);

    /// What every scenario shares.
    pub struct Guest {
        gitvisor: PathBuf,
        shared: PathBuf,
        manifests: PathBuf,
        state: PathBuf,
        run: PathBuf,
        kernel: PathBuf,
        initrd: PathBuf,
        broken_initrd: PathBuf,
        builtin_disk: PathBuf,
        qemu_disk: PathBuf,
    }

    /// `kvm-guest --gitvisor BIN --shared DIR`: loads `kvm_amd`, makes the namespaces and
    /// the VMs' images, and runs every scenario.
    pub fn main() -> std::process::ExitCode {
        let Some((gitvisor, shared)) = crate::vng::guest_args("kvm-guest") else {
            return std::process::ExitCode::from(64);
        };
        let guest = match Guest::setup(&gitvisor, shared.clone()) {
            Ok(guest) => guest,
            Err(why) => {
                crate::vng::report(&shared, "setup", &Err(why));
                return std::process::ExitCode::FAILURE;
            }
        };
        let scenarios: [fn(&Guest) -> Check; 8] = [
            Guest::builtin_boots,
            Guest::builtin_cpus_disk_console,
            Guest::builtin_network,
            Guest::builtin_restart_and_forced_stop,
            Guest::builtin_clean_stop,
            Guest::builtin_panic_reported,
            Guest::qemu_kvm,
            Guest::prune,
        ];
        let named: Vec<crate::vng::Scenario<Guest>> =
            SCENARIOS.iter().copied().zip(scenarios).collect();
        crate::vng::run_scenarios(&guest.shared, &guest, &named)
    }

    /// The first complete line (ended by a newline: the guest may be writing it) of
    /// `serial` that starts with `prefix`, after the first `skip` such lines.
    fn complete_line(serial: &SerialLog, prefix: &str, skip: usize) -> Result<String, String> {
        let deadline = Instant::now() + BOOT;
        loop {
            let text = serial.text();
            let finished = text.rsplit_once('\n').map_or("", |(done, _)| done);
            if let Some(line) = finished
                .lines()
                .map(|line| line.trim_end_matches('\r'))
                .filter(|line| line.starts_with(prefix))
                .nth(skip)
            {
                return Ok(line.to_owned());
            }
            if Instant::now() > deadline {
                return Err(format!("no {prefix:?} line (after {skip}) in:\n{text}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Copies `binary` into the guest's memory as `/run/<name>` (9p reads are slow).
    fn copy_as(binary: &Path, name: &str) -> Result<PathBuf, String> {
        let local = Path::new("/run").join(name);
        std::fs::copy(binary, &local)
            .map_err(|e| format!("cannot copy {} into the guest: {e}", binary.display()))?;
        Ok(local)
    }

    /// A data disk of 16 MiB with [`HOST_DATA`] at its start.
    fn data_disk(path: &Path) -> Check {
        let mut bytes = vec![0u8; 16 << 20];
        bytes[..HOST_DATA.len()].copy_from_slice(HOST_DATA.as_bytes());
        std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The bytes of `path` at `offset`, as text, `len` long.
    fn bytes_at(path: &Path, offset: usize, len: usize) -> String {
        let bytes = std::fs::read(path).unwrap_or_default();
        String::from_utf8_lossy(bytes.get(offset..offset + len).unwrap_or_default()).into_owned()
    }

    impl Guest {
        fn setup(gitvisor: &Path, shared: PathBuf) -> Result<Guest, String> {
            sh("modprobe", &["kvm_amd"])?;
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
                .map_err(|e| format!("/dev/kvm after modprobe kvm_amd: {e}"))?;
            for module in ["bridge", "tun", "veth"] {
                sh("modprobe", &[module])?;
            }
            // gitvisor finds gitvisor-vmm next to itself.
            let local = copy_as(gitvisor, "gitvisor")?;
            copy_as(&gitvisor.with_file_name("gitvisor-vmm"), "gitvisor-vmm")?;
            let work = PathBuf::from("/run/gv-kvm");
            let guest = Guest {
                gitvisor: local,
                shared,
                manifests: work.join("manifests"),
                state: work.join("state"),
                run: work.join("run"),
                kernel: PathBuf::new(),
                initrd: work.join("initramfs.cpio"),
                broken_initrd: work.join("initramfs-no-virtio-blk.cpio"),
                builtin_disk: work.join("builtin.img"),
                qemu_disk: work.join("qemu.img"),
            };
            for dir in [&guest.manifests, &guest.state, &guest.run] {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            let kernel = super::linux_initramfs(&guest.initrd, super::GUEST_MODULES, true)?;
            super::linux_initramfs(&guest.broken_initrd, &["virtio_mmio", "virtio_net"], false)?;
            data_disk(&guest.builtin_disk)?;
            data_disk(&guest.qemu_disk)?;
            sh("ip", &["netns", "add", HOST_NS])?;
            sh("ip", &["netns", "add", OUTSIDE_NS])?;
            in_ns(HOST_NS, "ip", &["link", "set", "lo", "up"])?;
            in_ns(OUTSIDE_NS, "ip", &["link", "set", "lo", "up"])?;
            in_ns(
                HOST_NS,
                "ip",
                &[
                    "link", "add", "up0", "type", "veth", "peer", "name", "out0", "netns",
                    OUTSIDE_NS,
                ],
            )?;
            in_ns(
                HOST_NS,
                "ip",
                &["addr", "add", &format!("{UPLINK_ADDRESS}/24"), "dev", "up0"],
            )?;
            in_ns(HOST_NS, "ip", &["link", "set", "up0", "up"])?;
            in_ns(
                HOST_NS,
                "ip",
                &["route", "add", "default", "via", "192.0.2.2"],
            )?;
            in_ns(
                OUTSIDE_NS,
                "ip",
                &["addr", "add", "192.0.2.2/24", "dev", "out0"],
            )?;
            in_ns(OUTSIDE_NS, "ip", &["link", "set", "out0", "up"])?;
            Ok(Guest { kernel, ..guest })
        }

        fn gitvisor_command(&self, args: &[&str]) -> Command {
            let mut command = Command::new("nsenter");
            command
                .arg(format!("--net=/run/netns/{HOST_NS}"))
                .arg(&self.gitvisor)
                .arg("--state-dir")
                .arg(&self.state)
                .arg("--run-dir")
                .arg(&self.run)
                .args(["--host", "kvm-guest"])
                .args(args)
                .env("NO_COLOR", "1");
            command
        }

        fn gitvisor(&self, args: &[&str]) -> Outcome {
            run_command_within(self.gitvisor_command(args), APPLY_DEADLINE)
        }

        fn dir(&self) -> String {
            self.manifests.to_string_lossy().into_owned()
        }

        fn apply(&self) -> Check {
            code(&self.gitvisor(&["apply", &self.dir()]), 0)
        }

        fn noop(&self) -> Check {
            code(
                &self.gitvisor(&["plan", &self.dir(), "--detailed-exitcode"]),
                0,
            )
        }

        fn write(&self, file: &str, text: &str) -> Check {
            let path = self.manifests.join(file);
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
        }

        fn declare_bridge(&self) -> Check {
            self.write(
                "bridge.yaml",
                &crate::bridge_manifest(
                    BRIDGE,
                    &[],
                    &format!(
                        "  addresses: [10.0.0.1/24]\n  nat: true\n  dhcp:\n    range: 10.0.0.100-10.0.0.199\n    static:\n      - {{mac: '{BUILTIN_MAC}', address: {BUILTIN_LEASE}, name: micro}}\n      - {{mac: '{QEMU_MAC}', address: {QEMU_LEASE}, name: qk}}\n"
                    ),
                ),
            )
        }

        /// Declares the builtin VM `micro`.
        fn declare_micro(&self, memory: &str, state: &str, timeout_s: u64) -> Check {
            self.write(
                "micro.yaml",
                &crate::vms::vm_manifest(
                    "micro",
                    &format!(
                        "hypervisor: builtin\ncpus: 2\nmemory: {memory}\nstate: {state}\nshutdownTimeout: {timeout_s}s\n\
                         boot:\n  kernel: {}\n  initrd: {}\n  cmdline: quiet gv.dhcp=1 gv.listen=80\n\
                         disks:\n  - path: {}\n\
                         networks:\n  - bridge: {BRIDGE}\n    mac: '{BUILTIN_MAC}'\n    publish:\n      - {{hostPort: 8080, port: 80}}\n",
                        self.kernel.display(),
                        self.initrd.display(),
                        self.builtin_disk.display()
                    ),
                ),
            )
        }

        fn vm_dir(&self, name: &str) -> PathBuf {
            self.run.join("vm").join(name)
        }

        fn serial(&self, name: &str) -> SerialLog {
            SerialLog {
                path: self.vm_dir(name).join("serial.log"),
            }
        }

        /// The pid of VM `name`'s live process, from its pid file.
        fn pid(&self, name: &str) -> Option<u32> {
            let pid: u32 = std::fs::read_to_string(self.vm_dir(name).join("pid"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            (!cmdline.is_empty()).then_some(pid)
        }

        fn cmdline(&self, name: &str) -> Vec<String> {
            self.pid(name)
                .and_then(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
                .unwrap_or_default()
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        }

        /// The kernel cache VM `name` was launched with (`--kernel-cache DIR`), and the
        /// decompressed kernels in it with their inode numbers: a file written again is
        /// a new inode (the VMM writes a temporary file and renames it).
        fn kernel_cache(&self, name: &str) -> Result<(PathBuf, Vec<(String, u64)>), String> {
            use std::os::unix::fs::MetadataExt;
            let argv = self.cmdline(name);
            let dir = argv
                .windows(2)
                .find(|w| w[0] == "--kernel-cache")
                .map(|w| PathBuf::from(&w[1]))
                .ok_or_else(|| {
                    format!("VM {name} was launched without --kernel-cache: {argv:?}")
                })?;
            ensure(dir.starts_with(self.state.join("vmm-kernels")), || {
                format!(
                    "the kernel cache {} is not under the state dir",
                    dir.display()
                )
            })?;
            let mut entries: Vec<(String, u64)> = std::fs::read_dir(&dir)
                .map_err(|e| format!("{}: {e}", dir.display()))?
                .flatten()
                .filter_map(|entry| {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let inode = entry.metadata().ok()?.ino();
                    name.starts_with("vmlinux-").then_some((name, inode))
                })
                .collect();
            entries.sort();
            Ok((dir, entries))
        }

        fn status_json(&self) -> Result<serde_json::Value, String> {
            let outcome = self.gitvisor(&["status", "--output", "json"]);
            code(&outcome, 0)?;
            serde_json::from_str(&outcome.stdout)
                .map_err(|e| format!("status --output json: {e}\n{outcome}"))
        }

        /// VM `name` in `status --output json`.
        fn vm_status(&self, name: &str) -> Result<serde_json::Value, String> {
            let status = self.status_json()?;
            status["resources"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["kind"] == "VirtualMachine" && r["name"] == name)
                .cloned()
                .ok_or_else(|| format!("no VM {name} in status: {status:#}"))
        }

        /// Types `line` on VM `name`'s console (again every few seconds) until the guest
        /// echoes it back.
        fn console_echoes(&self, name: &str, line: &str) -> Check {
            let mut console = self
                .gitvisor_command(&["console", name])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("gitvisor console: {e}"))?;
            let mut input = console.stdin.take().ok_or("no stdin")?;
            let output = console.stdout.take().ok_or("no stdout")?;
            let (lines, seen) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(output).lines().map_while(Result::ok) {
                    if lines.send(line).is_err() {
                        break;
                    }
                }
            });
            let expected = format!("GV-ECHO {line}");
            let deadline = Instant::now() + BOOT;
            let mut echoed = false;
            'typing: while Instant::now() < deadline {
                let _ = input.write_all(format!("{line}\n").as_bytes());
                let _ = input.flush();
                let until = Instant::now() + Duration::from_secs(5);
                while let Ok(got) = seen.recv_timeout(Duration::from_millis(500)) {
                    if got.trim_end().ends_with(&expected) {
                        echoed = true;
                        break 'typing;
                    }
                    if Instant::now() > until {
                        break;
                    }
                }
            }
            let _ = console.kill();
            let _ = console.wait();
            ensure(echoed, || {
                format!("the guest never echoed {line:?} typed on gitvisor console")
            })
        }

        fn builtin_boots(&self) -> Check {
            self.declare_bridge()?;
            self.declare_micro("256MiB", "Running", DEAF_TIMEOUT_S)?;
            // apply, SIGKILLed as soon as the VM's run dir appears (before the tap and
            // the launch are done), then finished by the next apply.
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
            let vm_root = self.run.join("vm");
            let killed = loop {
                if vm_root.join("micro").exists() || vm_root.join("_new.micro").exists() {
                    let _ = child.kill();
                    let _ = child.wait();
                    break true;
                }
                if child.try_wait().ok().flatten().is_some() {
                    break false;
                }
                if started.elapsed() > Duration::from_secs(120) {
                    let _ = child.kill();
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
            self.apply()?;
            self.noop()?;
            let pid = self.pid("micro").ok_or("no gitvisor-vmm runs VM micro")?;
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
            ensure(exe.ends_with("gitvisor-vmm"), || {
                format!("VM micro runs {exe:?}, not gitvisor-vmm")
            })?;
            // `/init` runs: the kernel found its initramfs and loaded the modules.
            self.serial("micro").wait_for("GV-BOOT-OK", 0, BOOT);
            // It booted through the kernel cache, which now holds Debian's kernel
            // decompressed.
            let (dir, entries) = self.kernel_cache("micro")?;
            ensure(entries.len() == 1, || {
                format!(
                    "{} holds {entries:?}, not one decompressed kernel",
                    dir.display()
                )
            })
        }

        /// Fails at once when VM `name` has no process (an earlier step failed).
        fn running(&self, name: &str) -> Check {
            ensure(self.pid(name).is_some(), || {
                format!(
                    "VM {name} does not run; its console:\n{}",
                    self.serial(name).text()
                )
            })
        }

        fn builtin_cpus_disk_console(&self) -> Check {
            self.running("micro")?;
            let serial = self.serial("micro");
            let cpus = complete_line(&serial, "GV-CPUS ", 0)?;
            ensure(cpus == "GV-CPUS 2", || format!("the guest saw {cpus}"))?;
            let disk = complete_line(&serial, "GV-DISK ", 0)?;
            ensure(
                disk == format!("GV-DISK vda serial=disk0 read={HOST_DATA}"),
                || format!("the guest's disk: {disk}\n{}", serial.text()),
            )?;
            self.console_echoes("micro", "hello-console")
        }

        fn builtin_network(&self) -> Check {
            self.running("micro")?;
            let serial = self.serial("micro");
            let lease = complete_line(&serial, "GV-DHCP-", 0)?;
            ensure(lease == format!("GV-DHCP-OK {BUILTIN_LEASE}"), || {
                format!("{lease}\n{}", serial.text())
            })?;
            serial.wait_for("GV-LISTEN 80", 0, BOOT);
            in_ns(HOST_NS, "ping", &["-c", "2", "-W", "5", BUILTIN_LEASE])?;
            // From the outside, to the host's uplink address: DNAT to the guest's port 80.
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let answer = crate::network::tcp_read(OUTSIDE_NS, UPLINK_ADDRESS, 8080);
                if answer.code == Some(0)
                    && answer.stdout.trim() == format!("GV-WEB {BUILTIN_LEASE}")
                {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("the published port 8080 never answered\n{answer}"));
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            let note = self.vm_status("micro")?["liveNote"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            ensure(
                note.ends_with(&format!("address: {BUILTIN_LEASE} on {BRIDGE}")),
                || format!("status does not show the lease: {note}"),
            )
        }

        fn builtin_restart_and_forced_stop(&self) -> Check {
            let serial = self.serial("micro");
            let first = self.pid("micro").ok_or("VM micro does not run")?;
            // The guest now ignores shutdown requests.
            self.console_echoes("micro", "gv-deaf")?;
            serial.wait_for("GV-DEAF", 0, BOOT);
            self.declare_micro("320MiB", "Running", DEAF_TIMEOUT_S)?;
            let plan = self.gitvisor(&["plan", &self.dir(), "--output", "json"]);
            code(&plan, 0)?;
            let json: serde_json::Value =
                serde_json::from_str(&plan.stdout).map_err(|e| format!("{e}\n{plan}"))?;
            let change = crate::change(&json, "VirtualMachine", "micro");
            let memory = crate::field(change, "memory").ok_or("no memory field in the plan")?;
            ensure(memory["effect"] == "restart", || {
                format!("a memory change is not a restart: {json:#}")
            })?;
            let cached = self.kernel_cache("micro")?;
            let started = Instant::now();
            self.apply()?;
            let took = started.elapsed();
            ensure(took >= Duration::from_secs(DEAF_TIMEOUT_S), || {
                format!("the restart did not wait the {DEAF_TIMEOUT_S}s shutdownTimeout: {took:?}")
            })?;
            let second = self.pid("micro").ok_or("VM micro was not started again")?;
            ensure(second != first, || "the same process runs".into())?;
            ensure(
                self.cmdline("micro")
                    .windows(2)
                    .any(|w| w[0] == "--memory" && w[1] == "320"),
                || format!("not relaunched with 320 MiB: {:?}", self.cmdline("micro")),
            )?;
            ensure(serial.lines_starting("GV-SHUTDOWN").is_empty(), || {
                format!("the deaf guest shut down:\n{}", serial.text())
            })?;
            serial.wait_for("GV-BOOT-OK", 1, BOOT);
            // The second boot used the decompressed kernel the first one left: the same
            // file, not written again.
            let again = self.kernel_cache("micro")?;
            ensure(again == cached, || {
                format!("the relaunch did not reuse the kernel cache: {cached:?} then {again:?}")
            })?;
            self.noop()
        }

        fn builtin_clean_stop(&self) -> Check {
            self.running("micro")?;
            let serial = self.serial("micro");
            serial.wait_for("GV-DISK ", 1, BOOT);
            self.declare_micro("320MiB", "Stopped", SHUTDOWN_TIMEOUT_S)?;
            self.apply()?;
            ensure(self.pid("micro").is_none(), || {
                "VM micro still runs after state: Stopped".into()
            })?;
            let how = serial
                .lines_starting("GV-SHUTDOWN ")
                .pop()
                .ok_or_else(|| {
                    format!(
                        "the guest got no shutdown request (neither the ACPI power button nor Ctrl+Alt+Del reached its init; GV-INPUT lists its input devices) and was stopped hard after {SHUTDOWN_TIMEOUT_S}s:\n{}",
                        serial.text()
                    )
                })?;
            let vmm_log =
                std::fs::read_to_string(self.vm_dir("micro").join("vmm.log")).unwrap_or_default();
            ensure(vmm_log.contains("powered off (ACPI S5)"), || {
                format!("the guest did not power off ({how}); vmm.log:\n{vmm_log}")
            })?;
            let wrote = bytes_at(&self.builtin_disk, 512, 14);
            let stopped = bytes_at(&self.builtin_disk, 1024, 13);
            ensure(
                wrote == "GV-GUEST-WROTE" && stopped == "GV-CLEAN-STOP",
                || format!("the backing file holds {wrote:?} and {stopped:?}"),
            )?;
            self.noop()
        }

        fn builtin_panic_reported(&self) -> Check {
            self.write(
                "broken.yaml",
                &crate::vms::vm_manifest(
                    "broken",
                    &format!(
                        "hypervisor: builtin\nmemory: 256MiB\nshutdownTimeout: 1s\n\
                         boot:\n  kernel: {}\n  initrd: {}\n  cmdline: quiet root=/dev/vda\n\
                         disks:\n  - path: {}\n",
                        self.kernel.display(),
                        self.broken_initrd.display(),
                        self.qemu_disk.display()
                    ),
                ),
            )?;
            let reported = self.panic_in_status();
            // Whatever happened, VM broken goes, so the next scenarios see only theirs.
            let _ = std::fs::remove_file(self.manifests.join("broken.yaml"));
            code(&self.gitvisor(&["apply", &self.dir(), "--prune"]), 0)?;
            reported
        }

        fn panic_in_status(&self) -> Check {
            self.apply()?;
            // The kernel panics, reboots (panic=1) and the VMM exits: status says why.
            let serial = self.serial("broken");
            let deadline = Instant::now() + BOOT;
            while !serial.text().contains("Kernel panic - not syncing") {
                if Instant::now() > deadline {
                    return Err(format!("the kernel did not panic:\n{}", serial.text()));
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            let expected = "VFS: Unable to mount root fs";
            loop {
                let listed = self.vm_status("broken")?;
                let text = listed.to_string();
                if text.contains(expected) {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("status never showed {expected:?}: {listed:#}"));
                }
                std::thread::sleep(Duration::from_secs(2));
            }
            Ok(())
        }

        /// Declares QEMU VM `name` with `accel` on the suite's kernel and initramfs,
        /// its kernel `cmdline`, then `devices` (YAML lines: disks, networks) after the boot.
        fn declare_qemu(&self, name: &str, accel: &str, cmdline: &str, devices: &str) -> Check {
            self.write(
                &format!("{name}.yaml"),
                &crate::vms::vm_manifest(
                    name,
                    &format!(
                        "hypervisor: qemu\naccel: {accel}\ncpus: 1\nmemory: 256MiB\nshutdownTimeout: 1s\n\
                         boot:\n  kernel: {}\n  initrd: {}\n  cmdline: {cmdline}\n{devices}",
                        self.kernel.display(),
                        self.initrd.display(),
                    ),
                ),
            )
        }

        /// QEMU VM `name` runs as a KVM q35 machine with the host's CPU.
        fn on_kvm(&self, name: &str, accel: &str) -> Check {
            let argv = self.cmdline(name);
            ensure(
                argv.iter().any(|a| a == "q35,accel=kvm") && argv.iter().any(|a| a == "host"),
                || format!("accel: {accel} did not launch KVM: {argv:?}"),
            )
        }

        fn qemu_kvm(&self) -> Check {
            self.declare_qemu(
                "qk",
                "auto",
                "console=ttyS0 quiet gv.dhcp=1",
                &format!(
                    "disks:\n  - path: {}\n\
                     networks:\n  - bridge: {BRIDGE}\n    mac: '{QEMU_MAC}'\n",
                    self.qemu_disk.display()
                ),
            )?;
            self.apply()?;
            self.on_kvm("qk", "auto")?;
            let serial = self.serial("qk");
            serial.wait_for("GV-BOOT-OK", 0, BOOT);
            let disk = complete_line(&serial, "GV-DISK ", 0)?;
            ensure(
                disk == format!("GV-DISK vda serial=disk0 read={HOST_DATA}"),
                || format!("the guest's disk: {disk}\n{}", serial.text()),
            )?;
            let lease = complete_line(&serial, "GV-DHCP-", 0)?;
            ensure(lease == format!("GV-DHCP-OK {QEMU_LEASE}"), || {
                format!("{lease}\n{}", serial.text())
            })?;
            in_ns(HOST_NS, "ping", &["-c", "2", "-W", "5", QEMU_LEASE])?;
            self.noop()?;
            // `accel: kvm` declared outright launches the same machine as `auto` chose
            // (so the disk and network checks above hold for it) and boots.
            self.declare_qemu("qx", "kvm", "console=ttyS0 quiet", "")?;
            self.apply()?;
            self.on_kvm("qx", "kvm")?;
            complete_line(&self.serial("qx"), "GV-BOOT-OK", 0)?;
            self.noop()
        }

        fn prune(&self) -> Check {
            for file in [
                "micro.yaml",
                "qk.yaml",
                "qx.yaml",
                "broken.yaml",
                "bridge.yaml",
            ] {
                let _ = std::fs::remove_file(self.manifests.join(file));
            }
            self.write("keep.yaml", "# nothing declared\n")?;
            code(&self.gitvisor(&["apply", &self.dir(), "--prune"]), 0)?;
            let links = in_ns(HOST_NS, "ip", &["-o", "link", "show"])?;
            let left: Vec<&str> = links
                .lines()
                .filter(|l| !l.contains(": lo:") && !l.contains(": up0@"))
                .collect();
            ensure(left.is_empty(), || format!("links left: {left:?}"))?;
            let vms: Vec<String> = std::fs::read_dir(self.run.join("vm"))
                .map(|dir| {
                    dir.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            ensure(vms.is_empty(), || format!("run dirs left: {vms:?}"))?;
            let caches: Vec<String> = std::fs::read_dir(self.state.join("vmm-kernels"))
                .map(|dir| {
                    dir.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            ensure(caches.is_empty(), || {
                format!("kernel cache directories left: {caches:?}")
            })?;
            for name in ["micro", "qk", "qx"] {
                ensure(self.pid(name).is_none(), || format!("VM {name} still runs"))?;
            }
            let tables = in_ns(HOST_NS, "nft", &["list", "tables"])?;
            ensure(!tables.contains("gitvisor"), || {
                format!("nftables left: {tables}")
            })?;
            self.noop()
        }
    }
}
