//! `doctor`: what this host supports, so an operator knows which kinds can run here
//! before applying. Every probe is read-only.

use std::path::Path;
use std::process::{Command, ExitCode};

use anyhow::Result;
use serde::Serialize;

use super::OutputFormat;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Verdict {
    Ok,
    Warn,
    Missing,
}

#[derive(Debug, Serialize)]
struct Check {
    name: &'static str,
    verdict: Verdict,
    detail: String,
}

fn check(name: &'static str, verdict: Verdict, detail: impl Into<String>) -> Check {
    Check {
        name,
        verdict,
        detail: detail.into(),
    }
}

/// First line of `program args…`'s output, if it runs and succeeds.
fn version_of(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_owned)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CgroupLayout {
    Unified,
    Hybrid,
    Legacy,
}

fn cgroup_layout() -> Option<CgroupLayout> {
    use nix::sys::statfs::{CGROUP2_SUPER_MAGIC, statfs};
    let root = statfs("/sys/fs/cgroup").ok()?;
    if root.filesystem_type() == CGROUP2_SUPER_MAGIC {
        return Some(CgroupLayout::Unified);
    }
    match statfs("/sys/fs/cgroup/unified") {
        Ok(unified) if unified.filesystem_type() == CGROUP2_SUPER_MAGIC => {
            Some(CgroupLayout::Hybrid)
        }
        _ => Some(CgroupLayout::Legacy),
    }
}

async fn netlink_check() -> Check {
    match crate::drivers::bridge::probe().await {
        Ok(links) => check(
            "netlink",
            Verdict::Ok,
            format!("rtnetlink dump: {links} links"),
        ),
        Err(err) => check(
            "netlink",
            Verdict::Missing,
            format!("cannot dump links: {err}"),
        ),
    }
}

pub async fn doctor(output: OutputFormat) -> Result<ExitCode> {
    let mut checks = Vec::new();
    checks.push(
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
        {
            Ok(_) => check("kvm", Verdict::Ok, "/dev/kvm opens read-write"),
            Err(err) => check(
                "kvm",
                Verdict::Missing,
                format!("/dev/kvm: {err}; VMs need accel: tcg"),
            ),
        },
    );
    checks.push(netlink_check().await);
    let misc = std::fs::read_to_string("/proc/misc").unwrap_or_default();
    checks.push(
        if misc.contains("device-mapper") || Path::new("/dev/mapper/control").exists() {
            check("device-mapper", Verdict::Ok, "present")
        } else {
            check(
                "device-mapper",
                Verdict::Missing,
                "not in this kernel (modprobe dm-mod?): LVM logical volumes cannot be created",
            )
        },
    );
    checks.push(match version_of("lvm", &["version"]) {
        Some(v) => check("lvm2", Verdict::Ok, v),
        None => check("lvm2", Verdict::Missing, "lvm tools not installed"),
    });
    let layout = cgroup_layout();
    checks.push(match layout {
        Some(CgroupLayout::Unified) => check("cgroups", Verdict::Ok, "v2 (unified)"),
        Some(CgroupLayout::Hybrid) => check(
            "cgroups",
            Verdict::Warn,
            "hybrid v1/v2: runc works, crun refuses",
        ),
        Some(CgroupLayout::Legacy) => check("cgroups", Verdict::Warn, "v1 (legacy)"),
        None => check("cgroups", Verdict::Missing, "/sys/fs/cgroup not mounted"),
    });
    checks.push(match version_of("runc", &["--version"]) {
        Some(v) => check("runc", Verdict::Ok, format!("{v} (preferred)")),
        None => check("runc", Verdict::Missing, "not installed"),
    });
    checks.push(match (version_of("crun", &["--version"]), layout) {
        (Some(v), Some(CgroupLayout::Hybrid)) => check(
            "crun",
            Verdict::Warn,
            format!("{v}: refuses hybrid cgroups here, runc is used"),
        ),
        (Some(v), _) => check("crun", Verdict::Ok, v),
        (None, _) => check("crun", Verdict::Missing, "not installed"),
    });
    checks.push(match version_of("qemu-system-x86_64", &["--version"]) {
        Some(v) => check("qemu", Verdict::Ok, v),
        None => check("qemu", Verdict::Missing, "qemu-system-x86_64 not installed"),
    });
    match output {
        OutputFormat::Json => println!("{}", serde_json::json!({ "checks": checks })),
        OutputFormat::Text => {
            for c in &checks {
                let mark = match c.verdict {
                    Verdict::Ok => "ok     ",
                    Verdict::Warn => "warn   ",
                    Verdict::Missing => "missing",
                };
                println!("{mark}  {:<14} {}", c.name, c.detail);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
