//! The command line of `gitvisor-vmm`: what to boot, with which devices, and where the
//! pid file, control socket and console go. Documented for the VM driver in `docs/vmm.md`.

use std::path::PathBuf;

use clap::Parser;

use crate::layout::{MAX_VCPUS, MAX_VIRTIO_DEVICES};

/// The smallest guest: the boot structures, a kernel and some room.
pub const MIN_MEMORY_MIB: u64 = 8;
/// The largest guest.
pub const MAX_MEMORY_MIB: u64 = 1 << 20;

/// gitvisor's builtin microVM monitor: boots one KVM guest and runs it until the guest
/// resets or the control API stops it.
#[derive(Debug, Clone, Parser)]
#[command(name = "gitvisor-vmm", version)]
pub struct Config {
    /// The kernel: an uncompressed ELF vmlinux or a bzImage (64-bit Linux boot protocol).
    #[arg(long, value_name = "PATH")]
    pub kernel: PathBuf,
    /// Decompress a bzImage's kernel on the host once and keep it in this directory,
    /// instead of having the guest decompress it at every boot (see docs/vmm.md).
    #[arg(long, value_name = "DIR")]
    pub kernel_cache: Option<PathBuf>,
    /// An initrd or initramfs.
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,
    /// The kernel command line. The VMM puts its default boot arguments (see
    /// `--no-default-boot-args`) before it, so where the kernel keeps the last value of
    /// a parameter, the one given here wins.
    #[arg(long, value_name = "LINE", default_value = "")]
    pub cmdline: String,
    /// Pass `--cmdline` to the kernel exactly as given, without the default boot
    /// arguments that skip probes this machine has nothing for.
    #[arg(long)]
    pub no_default_boot_args: bool,
    /// Also announce the virtio-mmio devices with `virtio_mmio.device=` command-line
    /// entries, for kernels with CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES but without ACPI. By
    /// default they are announced in the ACPI DSDT only (a kernel with both would see
    /// every device twice).
    #[arg(long)]
    pub mmio_cmdline: bool,
    /// vCPUs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=i64::from(MAX_VCPUS)))]
    pub cpus: u8,
    /// Guest memory in MiB.
    #[arg(long = "memory", value_name = "MIB", default_value_t = 128,
          value_parser = clap::value_parser!(u64).range(MIN_MEMORY_MIB..=MAX_MEMORY_MIB))]
    pub memory_mib: u64,
    /// Start even when --memory is more than the host's RAM and swap together (the host
    /// overcommits on purpose: guest pages are backed only when touched).
    #[arg(long)]
    pub overcommit: bool,
    /// A virtio-mmio disk: a raw image file or a block device. Repeatable; the guest sees
    /// them as /dev/vda, /dev/vdb, … in this order.
    #[arg(long = "disk", value_name = "path=PATH[,readonly=on][,id=SERIAL]", value_parser = parse_disk)]
    pub disks: Vec<DiskConfig>,
    /// A virtio-mmio NIC on an existing tap device. Repeatable.
    #[arg(long = "net", value_name = "tap=NAME[,mac=MAC]", value_parser = parse_net)]
    pub nets: Vec<NetConfig>,
    /// The control socket (JSON lines: status, shutdown, stop).
    #[arg(long, value_name = "PATH")]
    pub api_socket: Option<PathBuf>,
    /// A socket that console clients attach to: the serial output is sent to every
    /// client, and what clients send is the serial input.
    #[arg(long, value_name = "PATH")]
    pub serial_socket: Option<PathBuf>,
    /// A file the serial output is appended to.
    #[arg(long, value_name = "PATH")]
    pub serial_log: Option<PathBuf>,
    /// Copy the serial output to stdout too (foreground use).
    #[arg(long)]
    pub serial_stdout: bool,
    /// A pid file, locked for the VMM's lifetime and removed at exit.
    #[arg(long, value_name = "PATH")]
    pub pid_file: Option<PathBuf>,
    /// A file the VMM appends its own messages to (start, exit reason, errors).
    #[arg(long, value_name = "PATH")]
    pub log_file: Option<PathBuf>,
    /// Detach once the guest is set up; exit 0 then, or 1 with the error.
    #[arg(long)]
    pub daemonize: bool,
}

/// One disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    pub path: PathBuf,
    pub read_only: bool,
    /// The serial the guest reads (`/sys/block/vdX/serial`); default `disk<N>`.
    pub id: Option<String>,
}

/// One NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    pub tap: String,
    pub mac: Option<[u8; 6]>,
}

impl Config {
    /// Checks what the argument parser cannot: the device count.
    pub fn validate(&self) -> Result<(), String> {
        let devices = self.disks.len() + self.nets.len();
        if devices > MAX_VIRTIO_DEVICES {
            return Err(format!(
                "{devices} disks and NICs given; a guest has room for {MAX_VIRTIO_DEVICES}"
            ));
        }
        Ok(())
    }

    pub fn memory_bytes(&self) -> u64 {
        self.memory_mib << 20
    }

    /// The command line the kernel gets: [`DEFAULT_BOOT_ARGS`], then `--cmdline`.
    pub fn kernel_cmdline(&self) -> String {
        let given = self.cmdline.trim();
        match (self.no_default_boot_args, given.is_empty()) {
            (true, _) => given.to_string(),
            (false, true) => DEFAULT_BOOT_ARGS.to_string(),
            (false, false) => format!("{DEFAULT_BOOT_ARGS} {given}"),
        }
    }
}

/// The boot arguments every guest gets unless `--no-default-boot-args` is given: what
/// Firecracker passes by default, for the same reason: a Linux kernel probes for
/// hardware a microVM does not have, and on KVM every probe is a VM exit to this
/// process (several hundred microseconds each in a nested guest). Measured on a
/// stock Debian kernel (docs/vmm.md has the numbers):
/// - `pci=off`: there is no PCI bus; without it the kernel scans PCI configuration space
///   through ports 0xcf8/0xcfc twice before the console is up (the AGP aperture checks)
///   and again to enumerate buses;
/// - `8250.nr_uarts=1`: one UART, COM1; the other three legacy ports are not probed;
/// - `i8042.noaux i8042.nomux i8042.dumbkbd`: the i8042 has a keyboard port only (it
///   carries Ctrl+Alt+Del and the reset line); the mouse port, multiplexer and keyboard
///   state (LEDs) are not probed. Unlike Firecracker's, not `i8042.nopnp`: on
///   hardware-reduced ACPI Linux has no legacy PIC and so no ISA IRQ 1 of its own; the
///   keyboard's interrupt is the one the DSDT's `PS2K` device gives through PNP, and
///   without PNP the i8042 probe fails (EINVAL), Ctrl+Alt+Del with it.
pub const DEFAULT_BOOT_ARGS: &str = "pci=off 8250.nr_uarts=1 i8042.noaux i8042.nomux i8042.dumbkbd";

/// `key=value` pairs separated by commas; a value may not contain a comma.
fn pairs(spec: &str) -> Result<Vec<(&str, &str)>, String> {
    spec.split(',')
        .map(|pair| {
            pair.split_once('=')
                .ok_or_else(|| format!("{pair:?} is not key=value"))
        })
        .collect()
}

fn on_off(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        _ => Err(format!("{key}={value}: say on or off")),
    }
}

/// Parses `path=PATH[,readonly=on|off][,id=SERIAL]`.
pub fn parse_disk(spec: &str) -> Result<DiskConfig, String> {
    let mut path = None;
    let mut read_only = false;
    let mut id = None;
    for (key, value) in pairs(spec)? {
        match key {
            "path" if !value.is_empty() => path = Some(PathBuf::from(value)),
            "readonly" => read_only = on_off(key, value)?,
            "id" if value.len() <= crate::devices::virtio::block::ID_BYTES => {
                id = Some(value.to_string())
            }
            "id" => return Err(format!("id={value}: at most 20 bytes")),
            _ => return Err(format!("unknown or empty disk option {key}={value}")),
        }
    }
    let path = path.ok_or_else(|| format!("disk {spec:?} has no path="))?;
    Ok(DiskConfig {
        path,
        read_only,
        id,
    })
}

/// Parses a MAC address `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Result<[u8; 6], String> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|part| {
            (part.len() == 2)
                .then(|| u8::from_str_radix(part, 16).ok())
                .flatten()
        })
        .collect::<Option<_>>()
        .ok_or_else(|| format!("{text:?} is not a MAC address like 52:54:00:12:34:56"))?;
    let mac: [u8; 6] = bytes
        .try_into()
        .map_err(|_| format!("{text:?} is not a MAC address like 52:54:00:12:34:56"))?;
    if mac[0] & 1 == 1 {
        return Err(format!(
            "{text:?} is a multicast address; a NIC needs a unicast one"
        ));
    }
    Ok(mac)
}

/// Parses `tap=NAME[,mac=MAC]`.
pub fn parse_net(spec: &str) -> Result<NetConfig, String> {
    let mut tap = None;
    let mut mac = None;
    for (key, value) in pairs(spec)? {
        match key {
            "tap" if gitvisor_tap::valid_name(value) => tap = Some(value.to_string()),
            "tap" => return Err(format!("tap={value}: not a valid interface name")),
            "mac" => mac = Some(parse_mac(value)?),
            _ => return Err(format!("unknown net option {key}={value}")),
        }
    }
    let tap = tap.ok_or_else(|| format!("net {spec:?} has no tap="))?;
    Ok(NetConfig { tap, mac })
}

/// A stable locally administered MAC for a NIC without one: QEMU's `52:54:00` prefix and
/// three bytes of an FNV-1a hash of the tap name.
pub fn default_mac(tap: &str) -> [u8; 6] {
    let hash = tap.bytes().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let [a, b, c, ..] = hash.to_le_bytes();
    [0x52, 0x54, 0x00, a, b, c]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("gitvisor-vmm").chain(args.iter().copied()))
    }

    #[test]
    fn a_full_command_line_parses() {
        let config = parse(&[
            "--kernel",
            "/boot/vmlinux",
            "--initrd",
            "/boot/initrd",
            "--cmdline",
            "console=ttyS0",
            "--cpus",
            "2",
            "--memory",
            "512",
            "--disk",
            "path=/dev/vg/root",
            "--disk",
            "path=/srv/seed.img,readonly=on,id=cidata",
            "--net",
            "tap=vm_0a1b2c3d_0,mac=52:54:00:aa:bb:cc",
            "--api-socket",
            "/run/gitvisor/vm/a/api.sock",
            "--serial-socket",
            "/run/gitvisor/vm/a/serial.sock",
            "--serial-log",
            "/run/gitvisor/vm/a/serial.log",
            "--pid-file",
            "/run/gitvisor/vm/a/pid",
            "--daemonize",
        ])
        .expect("parses");
        assert_eq!(config.cpus, 2);
        assert_eq!(config.memory_bytes(), 512 << 20);
        assert_eq!(
            config.disks[1],
            DiskConfig {
                path: "/srv/seed.img".into(),
                read_only: true,
                id: Some("cidata".into())
            }
        );
        assert_eq!(config.nets[0].mac, Some([0x52, 0x54, 0, 0xaa, 0xbb, 0xcc]));
        assert!(config.daemonize);
        assert!(!config.mmio_cmdline, "ACPI only unless asked");
        assert!(config.validate().is_ok());
        let config = parse(&["--kernel", "k", "--mmio-cmdline"]).expect("parses");
        assert!(config.mmio_cmdline);
    }

    #[test]
    fn the_default_boot_args_come_first_unless_refused() {
        let config =
            parse(&["--kernel", "k", "--cmdline", " console=ttyS0 pci=on "]).expect("parses");
        assert_eq!(
            config.kernel_cmdline(),
            format!("{DEFAULT_BOOT_ARGS} console=ttyS0 pci=on")
        );
        assert!(config.kernel_cmdline().starts_with("pci=off "));
        let config = parse(&["--kernel", "k"]).expect("parses");
        assert_eq!(config.kernel_cmdline(), DEFAULT_BOOT_ARGS);
        let config = parse(&[
            "--kernel",
            "k",
            "--cmdline",
            "console=ttyS0",
            "--no-default-boot-args",
        ])
        .expect("parses");
        assert_eq!(config.kernel_cmdline(), "console=ttyS0");
    }

    #[test]
    fn bad_values_are_refused_with_the_reason() {
        assert!(parse(&["--kernel", "k", "--cpus", "0"]).is_err());
        assert!(parse(&["--kernel", "k", "--cpus", "33"]).is_err());
        assert!(parse(&["--kernel", "k", "--memory", "4"]).is_err());
        assert!(
            parse_disk("readonly=on")
                .expect_err("no path")
                .contains("no path")
        );
        assert!(parse_disk("path=x,readonly=maybe").is_err());
        assert!(parse_disk("path=x,cache=none").is_err());
        assert!(parse_net("tap=a/b").is_err());
        assert!(
            parse_mac("01:00:5e:00:00:01")
                .expect_err("multicast")
                .contains("multicast")
        );
        assert!(parse_mac("52:54:00:12:34").is_err());
        let many: Vec<String> = (0..20).map(|i| format!("path=/d{i}")).collect();
        let mut args = vec!["--kernel", "k"];
        for disk in &many {
            args.extend(["--disk", disk.as_str()]);
        }
        let config = parse(&args).expect("parses");
        assert!(config.validate().is_err());
    }

    #[test]
    fn default_macs_are_stable_unicast_and_local() {
        let mac = default_mac("vm_0a1b2c3d_0");
        assert_eq!(mac, default_mac("vm_0a1b2c3d_0"));
        assert_ne!(mac, default_mac("vm_0a1b2c3d_1"));
        assert_eq!(&mac[..3], &[0x52, 0x54, 0x00]);
    }
}
