//! `image prune [--dry-run]`: collects the container image store at once
//! ([`crate::drivers::container::image::gc`]), keeping what every container gitvisor has
//! on this host uses, and prints what went and the bytes freed.
//!
//! The controller collects the same store by itself, after a grace period
//! (`gitvisor run --image-gc-after`); this command is for reclaiming space now.

use std::process::ExitCode;

use anyhow::Result;

use super::{GlobalArgs, OutputFormat};
use crate::drivers::container::RuncHost;
use crate::drivers::container::image::gc::{Policy, Report};

pub fn prune(global: &GlobalArgs, dry_run: bool, output: OutputFormat) -> Result<ExitCode> {
    let host = RuncHost::new(&global.run_dir, &global.state_dir);
    let report = host.prune_images(Policy::Now, dry_run)?;
    let text = match output {
        OutputFormat::Json => {
            let mut json = serde_json::to_value(&report)?;
            json["bytesFreed"] = report.bytes().into();
            format!("{json}\n")
        }
        OutputFormat::Text => render_text(&report),
    };
    super::output::stdout(&text)?;
    Ok(ExitCode::SUCCESS)
}

fn render_text(report: &Report) -> String {
    let verb = if report.dry_run {
        "would remove"
    } else {
        "removed"
    };
    let mut text = String::new();
    for removed in &report.removed {
        text.push_str(&format!(
            "{verb} {} {} ({})\n",
            removed.kind,
            removed.name,
            size(removed.bytes)
        ));
    }
    text.push_str(&format!(
        "{} {} item{}, {} {}; {} layer{} in use kept\n",
        verb,
        report.removed.len(),
        if report.removed.len() == 1 { "" } else { "s" },
        size_exact(report.bytes()),
        if report.dry_run {
            "would be freed"
        } else {
            "freed"
        },
        report.layers_in_use,
        if report.layers_in_use == 1 { "" } else { "s" },
    ));
    text
}

/// `1234 bytes` below a KiB, else one decimal in the binary unit that fits.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// [`size`], with the exact count when it is rounded.
fn size_exact(bytes: u64) -> String {
    if bytes < 1024 {
        size(bytes)
    } else {
        format!("{} ({bytes} bytes)", size(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::container::image::gc::Removed;

    #[test]
    fn the_text_lists_each_removal_and_the_bytes_freed() {
        let report = Report {
            dry_run: false,
            removed: vec![Removed {
                kind: "layer",
                name: "ab12".into(),
                bytes: 3 << 20,
            }],
            layers_in_use: 2,
            waiting: 0,
        };
        assert_eq!(
            render_text(&report),
            "removed layer ab12 (3.0 MiB)\nremoved 1 item, 3.0 MiB (3145728 bytes) freed; 2 layers in use kept\n"
        );
        assert_eq!(size(100), "100 bytes");
    }
}
