//! The Container kind's housekeeping, which the controller runs on its hour (its
//! registration's `maintenance`): the image store is collected, removing what no
//! container has used for the grace period (`gitvisor run --image-gc-after`).

use std::time::Duration;

use super::RuncHost;
use super::image::gc::{GcError, Policy};
use crate::drivers::HostSettings;

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
