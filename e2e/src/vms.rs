//! What the VM scenarios need: a Linux guest that boots fast under QEMU TCG and reports
//! what it sees on its serial console, and a guard that leaves no QEMU behind.
//!
//! # The guest
//!
//! Debian's own kernel (`linux-image-amd64`, `/boot/vmlinuz-*`) with an initramfs built
//! here, in Rust, as a `newc` cpio archive (uncompressed; the kernel takes it as is):
//! the static busybox (`busybox-static`), the kernel modules the guest needs with their
//! dependencies from `modules.dep` (virtio PCI, block and net; FAT for the cloud-init
//! seed), and an `/init` script that prints, on the serial console:
//!
//! - `GV-BOOT-OK` once the modules are loaded;
//! - `GV-DISK <dev> serial=<serial>` per virtio disk;
//! - `GV-SEED-BEGIN`, the seed's `meta-data`, `GV-SEED-END`, when a disk with serial
//!   `cidata` is attached (mounted as FAT, read-only);
//! - `GV-PING-OK` (or `GV-PING-FAIL`) after pinging `gv.ping=` from `gv.ip=` (both on the
//!   kernel command line) on `eth0`;
//! - `GV-DHCP-OK <address>` (or `GV-DHCP-FAIL`) after `udhcpc` on `eth0`, with
//!   `gv.dhcp=1` on the kernel command line: the lease's address and default route are
//!   configured;
//! - `GV-LISTEN <port>` with `gv.listen=<port>`, once a busybox `nc` server on that TCP
//!   port is started in the background: it answers every connection with one line,
//!   `GV-WEB <leased address>`, and closes it;
//! - then `GV-TICK <n> <uptime>` every second, forever: a paused guest prints none, and
//!   the uptime shows the guest's clock;
//! - `GV-ECHO <line>` for every line typed on its console;
//! - with `gv.write=<serial>`, before the ticks: `GV-READ <first 16 bytes>` of that
//!   disk, then `GV-WROTE` once `GV-GUEST-WROTE-THIS` is written at its start and
//!   synced (a file volume's clone, `file_volumes.rs`).
//!
//! The guest ignores the ACPI power button (no acpid), so `state: Stopped` exercises the
//! hard stop after `shutdownTimeout`.
//!
//! Stock kernels hang on this machine's nested KVM (a Linux boot never finishes), so the manifests say
//! `accel: tcg`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{TestEnv, workspace_root};

/// The kernel modules the guest loads, dependencies resolved from `modules.dep`.
pub const GUEST_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "vfat",
    "nls_cp437",
    "nls_utf8",
    "nls_ascii",
];

/// Where a static busybox is looked for.
const BUSYBOX: &[&str] = &["/bin/busybox", "/usr/bin/busybox"];

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /mnt /tmp /bin /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec 0</dev/console 1>/dev/console 2>&1
for module in $(cat /etc/modules); do insmod "/lib/modules/$module.ko"; done
echo GV-BOOT-OK
arg() { tr ' ' '\n' </proc/cmdline | sed -n "s/^$1=//p"; }
for disk in /sys/block/vd*; do
    [ -e "$disk" ] || continue
    serial=$(cat "$disk/serial")
    echo "GV-DISK ${disk##*/} serial=$serial"
    if [ "$serial" = cidata ]; then
        if mount -t vfat -o ro "/dev/${disk##*/}" /mnt; then
            echo GV-SEED-BEGIN; cat /mnt/meta-data; echo; echo GV-SEED-END
            umount /mnt
        fi
    fi
done
if [ -n "$(arg gv.ip)" ]; then
    ip link set eth0 up
    ip addr add "$(arg gv.ip)" dev eth0
    result=GV-PING-FAIL
    for try in 1 2 3 4 5; do
        if ping -c 1 -W 2 "$(arg gv.ping)" >/dev/null 2>&1; then result=GV-PING-OK; break; fi
    done
    echo $result
fi
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
    # Every connection is answered with one line, then closed.
    nc -ll -p "$(arg gv.listen)" -e echo "GV-WEB $(cat /tmp/lease 2>/dev/null)" </dev/null &
    echo "GV-LISTEN $(arg gv.listen)"
fi
if [ -n "$(arg gv.write)" ]; then
    for disk in /sys/block/vd*; do
        [ "$(cat "$disk/serial")" = "$(arg gv.write)" ] || continue
        echo "GV-READ $(head -c 16 "/dev/${disk##*/}")"
        printf GV-GUEST-WROTE-THIS | dd of="/dev/${disk##*/}" conv=notrunc,fsync 2>/dev/null && sync && echo GV-WROTE
    done
fi
# What arrives on the console (`gitvisor console`) is echoed back, marked.
(while read -r line; do echo "GV-ECHO $line"; done) </dev/console &
n=0
while true; do
    n=$((n + 1))
    echo "GV-TICK $n $(cut -d' ' -f1 /proc/uptime)"
    sleep 1
done
"#;

/// What `udhcpc` runs on a lease (`gv.dhcp=1`): the address, the default route, and the
/// address in `/tmp/lease` for `/init` to report.
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

/// A kernel and an initramfs to boot it with.
#[derive(Debug, Clone)]
pub struct GuestImage {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

/// Why VM scenarios cannot run here, if they cannot: no QEMU, no readable kernel, no
/// modules, no static busybox, no `/dev/net/tun`.
/// Runs `gitvisor apply DIR` and SIGKILLs it as soon as VM `name`'s run dir appears
/// (under its final or its `_new.` name: before the taps, seed and launch are all done).
/// Returns whether it was killed (`false`: apply finished first); panics when apply makes
/// no progress within `patience`.
pub fn apply_killed_when_run_dir_appears(
    env: &TestEnv,
    dir: &str,
    name: &str,
    patience: Duration,
) -> bool {
    let mut child = env.spawn_apply(dir);
    let vm_root = env.run_dir().join("vm");
    let started = Instant::now();
    loop {
        if vm_root.join(name).exists() || vm_root.join(format!("_new.{name}")).exists() {
            child.kill().expect("SIGKILL");
            let _ = child.wait();
            return true;
        }
        if child.try_wait().expect("wait").is_some() {
            return false;
        }
        assert!(started.elapsed() < patience, "apply made no progress");
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Whether `gitvisor console NAME` reaches the guest's serial console both ways: types
/// `hello-console` (again every few seconds, until `patience` runs out) and waits for the
/// guest's `GV-ECHO hello-console` (the test guests echo each line typed on their console).
pub fn console_echoes(env: &TestEnv, name: &str, patience: Duration) -> bool {
    let mut console = env
        .gitvisor_command(["console", name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start gitvisor console");
    let mut input = console.stdin.take().expect("piped stdin");
    let output = console.stdout.take().expect("piped stdout");
    let (lines, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let echoed = (|| {
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            let _ = input.write_all(b"hello-console\n");
            let _ = input.flush();
            while let Ok(line) = seen.recv_timeout(Duration::from_millis(500)) {
                if line.trim_end().ends_with("GV-ECHO hello-console") {
                    return true;
                }
            }
        }
        false
    })();
    let _ = console.kill();
    let _ = console.wait();
    echoed
}

pub fn missing_facility() -> Option<String> {
    let qemu = Command::new("qemu-system-x86_64").arg("--version").output();
    if !qemu.is_ok_and(|o| o.status.success()) {
        return Some("qemu-system-x86_64 is not installed (apt install qemu-system-x86)".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun is missing".into());
    }
    if let Err(why) = guest_kernel() {
        return Some(why);
    }
    if let Err(why) = static_busybox() {
        return Some(why);
    }
    None
}

/// The newest `/boot/vmlinuz-*` with its modules directory.
pub fn guest_kernel() -> Result<(PathBuf, PathBuf), String> {
    let mut kernels: Vec<(String, PathBuf)> = std::fs::read_dir("/boot")
        .map_err(|e| format!("/boot: {e}"))?
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version = name.strip_prefix("vmlinuz-")?.to_owned();
            Some((version, entry.path()))
        })
        .filter(|(version, _)| {
            Path::new("/lib/modules")
                .join(version)
                .join("modules.dep")
                .is_file()
        })
        .collect();
    kernels.sort();
    let (version, kernel) = kernels.pop().ok_or_else(|| {
        "no /boot/vmlinuz-* with modules in /lib/modules (apt install linux-image-amd64)".to_owned()
    })?;
    std::fs::File::open(&kernel).map_err(|e| format!("{}: {e}", kernel.display()))?;
    Ok((kernel, Path::new("/lib/modules").join(version)))
}

/// A busybox without a dynamic loader (`busybox-static`).
pub fn static_busybox() -> Result<PathBuf, String> {
    for candidate in BUSYBOX {
        if let Ok(bytes) = std::fs::read(candidate)
            && is_static_elf(&bytes)
        {
            return Ok(PathBuf::from(candidate));
        }
    }
    Err("no static busybox (apt install busybox-static)".into())
}

/// An ELF64 executable without a `PT_INTERP` program header.
fn is_static_elf(bytes: &[u8]) -> bool {
    let read = |at: usize, len: usize| -> Option<u64> {
        let slice = bytes.get(at..at + len)?;
        Some(
            slice
                .iter()
                .rev()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)),
        )
    };
    if bytes.get(..5) != Some(b"\x7fELF\x02") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (read(0x20, 8), read(0x36, 2), read(0x38, 2))
    else {
        return false;
    };
    (0..phnum).all(|i| {
        let at = (phoff + i * phentsize) as usize;
        read(at, 4).is_some_and(|kind| kind != 3)
    })
}

/// The modules to load, dependencies first, as paths below the modules directory.
pub fn module_load_order(modules_dir: &Path, wanted: &[&str]) -> Result<Vec<String>, String> {
    let dep = std::fs::read_to_string(modules_dir.join("modules.dep"))
        .map_err(|e| format!("{}/modules.dep: {e}", modules_dir.display()))?;
    let mut deps = std::collections::BTreeMap::new();
    for line in dep.lines() {
        let Some((module, rest)) = line.split_once(':') else {
            continue;
        };
        deps.insert(
            module.to_owned(),
            rest.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>(),
        );
    }
    let by_name = |name: &str| {
        deps.keys()
            .find(|path| module_name(path) == name.replace('-', "_"))
            .cloned()
    };
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    fn visit(
        path: &str,
        deps: &std::collections::BTreeMap<String, Vec<String>>,
        seen: &mut BTreeSet<String>,
        order: &mut Vec<String>,
    ) {
        if !seen.insert(path.to_owned()) {
            return;
        }
        for dep in deps.get(path).into_iter().flatten() {
            visit(dep, deps, seen, order);
        }
        order.push(path.to_owned());
    }
    for name in wanted {
        match by_name(name) {
            Some(path) => visit(&path, &deps, &mut seen, &mut order),
            // Built into this kernel (or absent): nothing to load.
            None => continue,
        }
    }
    Ok(order)
}

/// Puts the modules `order` names (paths under `modules_dir`, in load order) into the
/// initramfs as `lib/modules/NAME.ko`, and their names in load order in `etc/modules`,
/// which the init loads one by one.
pub fn add_modules(cpio: &mut Cpio, modules_dir: &Path, order: &[String]) -> Result<(), String> {
    let mut list = String::new();
    for path in order {
        let name = module_name(path);
        cpio.file(
            &format!("lib/modules/{name}.ko"),
            0o644,
            &module_bytes(&modules_dir.join(path))?,
        );
        let _ = writeln!(list, "{name}");
    }
    cpio.file("etc/modules", 0o644, list.as_bytes());
    Ok(())
}

/// `kernel/drivers/virtio/virtio_pci.ko.xz` → `virtio_pci`.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.split(".ko").next().unwrap_or(file).replace('-', "_")
}

/// A module's bytes, decompressed when the distribution compresses them.
pub fn module_bytes(path: &Path) -> Result<Vec<u8>, String> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        Some("xz")
    } else if name.ends_with(".zst") {
        Some("zstd")
    } else if name.ends_with(".gz") {
        Some("gzip")
    } else {
        None
    };
    match tool {
        None => std::fs::read(path).map_err(|e| format!("{}: {e}", path.display())),
        Some(tool) => {
            let out = Command::new(tool)
                .args(["-dc"])
                .arg(path)
                .output()
                .map_err(|e| format!("{tool} -dc {}: {e}", path.display()))?;
            if !out.status.success() {
                return Err(format!("{tool} -dc {} failed", path.display()));
            }
            Ok(out.stdout)
        }
    }
}

/// Builds (once per test process) the guest's initramfs under `target/e2e-vm/`.
pub fn guest_image() -> Result<GuestImage, String> {
    static IMAGE: std::sync::OnceLock<Result<GuestImage, String>> = std::sync::OnceLock::new();
    IMAGE.get_or_init(build_guest_image).clone()
}

fn build_guest_image() -> Result<GuestImage, String> {
    let (kernel, modules_dir) = guest_kernel()?;
    let busybox = static_busybox()?;
    let order = module_load_order(&modules_dir, GUEST_MODULES)?;
    let mut cpio = Cpio::default();
    for dir in [
        "bin",
        "dev",
        "etc",
        "lib",
        "lib/modules",
        "mnt",
        "proc",
        "sys",
        "tmp",
    ] {
        cpio.dir(dir);
    }
    cpio.char_device("dev/console", 5, 1);
    cpio.file(
        "bin/busybox",
        0o755,
        &std::fs::read(&busybox).map_err(|e| format!("{}: {e}", busybox.display()))?,
    );
    cpio.file("init", 0o755, INIT.as_bytes());
    cpio.file("etc/udhcpc.script", 0o755, UDHCPC_SCRIPT.as_bytes());
    add_modules(&mut cpio, &modules_dir, &order)?;
    let dir = workspace_root().join("target").join("e2e-vm");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // One file per kernel, replaced atomically: test processes running at once each
    // write their own copy and rename it into place, and nothing piles up.
    let version = modules_dir
        .file_name()
        .map(|v| v.to_string_lossy().into_owned())
        .unwrap_or_default();
    let initrd = dir.join(format!("initramfs-{version}.cpio"));
    let partial = dir.join(format!(".initramfs-{version}.{}", std::process::id()));
    std::fs::write(&partial, cpio.finish()).map_err(|e| format!("{}: {e}", partial.display()))?;
    std::fs::rename(&partial, &initrd).map_err(|e| format!("{}: {e}", initrd.display()))?;
    Ok(GuestImage { kernel, initrd })
}

/// A `newc` cpio archive in memory.
#[derive(Default)]
pub struct Cpio {
    bytes: Vec<u8>,
    inode: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.inode += 1;
        let fields = [
            self.inode,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        self.bytes.extend_from_slice(b"070701");
        for field in fields {
            self.bytes
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }

    pub fn dir(&mut self, name: &str) {
        self.entry(name, 0o040_755, (0, 0), &[]);
    }

    pub fn file(&mut self, name: &str, permissions: u32, data: &[u8]) {
        self.entry(name, 0o100_000 | permissions, (0, 0), data);
    }

    pub fn char_device(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020_600, (major, minor), &[]);
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.bytes
    }
}

/// A VirtualMachine manifest.
pub fn vm_manifest(name: &str, spec: &str) -> String {
    let mut text = format!(
        "apiVersion: gitvisor.dev/v1alpha1\nkind: VirtualMachine\nmetadata:\n  name: {name}\nspec:\n"
    );
    for line in spec.lines() {
        let _ = writeln!(text, "  {line}");
    }
    text
}

/// A guest's serial log, read as it grows.
#[derive(Debug, Clone)]
pub struct SerialLog {
    pub path: PathBuf,
}

impl SerialLog {
    pub fn text(&self) -> String {
        std::fs::read(&self.path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// The lines that start with `prefix`.
    pub fn lines_starting(&self, prefix: &str) -> Vec<String> {
        self.text()
            .lines()
            .map(|line| line.trim_end_matches('\r'))
            .filter(|line| line.starts_with(prefix))
            .map(str::to_owned)
            .collect()
    }

    /// Waits until a line starting with `prefix` appears after the first `skip` such
    /// lines; returns it. Panics with the log past `within`.
    #[track_caller]
    pub fn wait_for(&self, prefix: &str, skip: usize, within: Duration) -> String {
        let started = Instant::now();
        loop {
            if let Some(line) = self.lines_starting(prefix).into_iter().nth(skip) {
                return line;
            }
            if started.elapsed() > within {
                panic!(
                    "no {prefix:?} line (after {skip}) in {} within {within:?}; the log:\n{}",
                    self.path.display(),
                    self.text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The newest tick a guest printed: its number and the guest's uptime.
pub fn last_tick(log: &SerialLog) -> Option<(u64, f64)> {
    log.lines_starting("GV-TICK ").last().and_then(|line| {
        let mut parts = line.split_whitespace().skip(1);
        Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
    })
}

/// Kills every hypervisor process whose pid file is in the test's run dir, when dropped
/// (so a failing test leaves no guest behind; the taps go with the namespace).
#[derive(Debug)]
pub struct VmGuard {
    vm_root: PathBuf,
}

impl VmGuard {
    pub fn new(env: &TestEnv) -> Self {
        VmGuard {
            vm_root: env.run_dir().join("vm"),
        }
    }

    /// The pid of VM `name`'s process, when its pid file names a live one.
    pub fn pid(&self, name: &str) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.vm_root.join(name).join("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        (!cmdline.is_empty()).then_some(pid)
    }

    /// Its command line.
    pub fn cmdline(&self, name: &str) -> Option<Vec<String>> {
        let pid = self.pid(name)?;
        let bytes = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        Some(
            bytes
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect(),
        )
    }

    pub fn serial(&self, name: &str) -> SerialLog {
        SerialLog {
            path: self.vm_root.join(name).join("serial.log"),
        }
    }

    pub fn run_dir(&self, name: &str) -> PathBuf {
        self.vm_root.join(name)
    }
}

impl Drop for VmGuard {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(&self.vm_root) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = self.pid(&name) {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
    }
}

/// A raw disk image whose boot sector prints `GV-BIOS-BOOT-OK` on the first serial port
/// and halts: proof that the firmware booted the first disk.
pub fn boot_sector_image(path: &Path) {
    #[rustfmt::skip]
    let code: [u8; 22] = [
        0x31, 0xc0,             // xor ax, ax
        0x8e, 0xd8,             // mov ds, ax
        0xba, 0xf8, 0x03,       // mov dx, 0x3f8 (COM1)
        0xbe, 0x16, 0x7c,       // mov si, 0x7c16 (the message)
        0xac,                   // next: lodsb
        0x08, 0xc0,             // or al, al
        0x74, 0x03,             // jz done
        0xee,                   // out dx, al
        0xeb, 0xf8,             // jmp next
        0xfa,                   // done: cli
        0xf4,                   // hlt
        0xeb, 0xfc,             // jmp done
    ];
    let mut sector = vec![0u8; 1 << 20];
    sector[..code.len()].copy_from_slice(&code);
    let message = b"GV-BIOS-BOOT-OK\r\n\0";
    sector[code.len()..code.len() + message.len()].copy_from_slice(message);
    sector[510] = 0x55;
    sector[511] = 0xaa;
    std::fs::write(path, sector).expect("cannot write the boot sector image");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cpio_entry_is_newc_and_padded() {
        let mut cpio = Cpio::default();
        cpio.file("init", 0o755, b"#!/bin/sh\n");
        let bytes = cpio.finish();
        assert!(bytes.starts_with(b"070701"));
        assert_eq!(bytes.len() % 4, 0);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("init\0"));
        assert!(text.contains("TRAILER!!!"));
    }

    #[test]
    fn module_names_drop_the_extension_and_dashes() {
        assert_eq!(
            module_name("kernel/drivers/virtio/virtio_pci.ko"),
            "virtio_pci"
        );
        assert_eq!(module_name("kernel/fs/nls/nls-cp437.ko.xz"), "nls_cp437");
    }
}
