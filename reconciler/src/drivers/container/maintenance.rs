//! The Container kind's housekeeping: the image store is collected, removing what no
//! container has used for the grace period, by the controller on its hour (the
//! registration's `maintenance`, `gitvisor run --image-gc-after`), or at once by
//! `gitvisor image prune` (the registration's `collect`), which prints what went.

use std::time::Duration;

use super::RuncHost;
use super::image::gc::{GcError, Policy, Report};
use crate::drivers::{Collected, ExtraError, HostSettings};

/// Collects the container image store on a blocking thread, removing what no container
/// has used for `grace` ([`super::image::gc`]); never waits for it. A collection that
/// finds an import under way is skipped (the next hour's runs).
pub(crate) fn collect_images(settings: &HostSettings, grace: Duration) {
    let host = RuncHost::new(&settings.run_dir, &settings.state_dir);
    tokio::task::spawn_blocking(
        move || match host.prune_images(Policy::After(grace), false) {
            Ok(report) if !report.removed.is_empty() => tracing::info!(
                removed = report.removed.len(),
                bytes = report.bytes(),
                waiting = report.waiting,
                "image store: removed what no container used for {}",
                humantime::format_duration(grace)
            ),
            Ok(_) => {}
            Err(error @ GcError::Busy { .. }) => tracing::debug!("{error}"),
            Err(error) => {
                tracing::warn!(error = %crate::contract::chain(&error), "image store collection")
            }
        },
    );
}

/// `gitvisor image prune [--dry-run]`: collects the image store at once, keeping what
/// every container gitvisor has on this host uses, and says what went (or would go) and
/// the bytes freed, as text and as JSON.
pub(crate) fn collect_now(settings: &HostSettings, dry_run: bool) -> Result<Collected, ExtraError> {
    let host = RuncHost::new(&settings.run_dir, &settings.state_dir);
    let report = host.prune_images(Policy::Now, dry_run)?;
    let mut json = serde_json::to_value(&report)?;
    json["bytesFreed"] = report.bytes().into();
    Ok(Collected {
        text: render_text(&report),
        json,
    })
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
