//! Carries out one NfsMount change from the plan's snapshot ([`ObservedMount`]).
//!
//! - create, or mount again: record the mount (without its ID) → mount → record it with
//!   the kernel's mount ID. A crash between leaves a record that still claims the mount
//!   at that path from that source, so the next plan knows it for gitvisor's.
//! - remount (drift, a new path): the old mount is taken away first, unless something
//!   holds it (looked up again here, not trusted from the plan): then nothing changes
//!   and the error names the holders.
//! - adopt: record the mount found there.
//! - delete: unmount gitvisor's mount (held: refused, as above), then forget the record.

use super::diff::ObservedMount;
use super::error::NfsMountError;
use super::seam::{MountRecord, NfsRequest, NfsSeam};
use crate::contract::{Action, Change, ContractViolation, DriverError, StepContext};

pub async fn apply(
    seam: &dyn NfsSeam,
    change: &Change,
    step: &StepContext,
) -> Result<(), DriverError> {
    if !change.action.is_change() {
        return Ok(());
    }
    let Some(observed) = change.observed_as::<ObservedMount>() else {
        return Err(ContractViolation {
            id: change.id.clone(),
            message: "an NfsMount change without the plan's snapshot".into(),
        }
        .into());
    };
    let name = observed.name.clone();
    let interrupted = |cause| NfsMountError::Interrupted {
        name: name.clone(),
        cause,
    };
    let request = |operation: String| {
        let name = name.clone();
        move |cause| NfsMountError::Request {
            name,
            operation,
            cause,
        }
    };

    if let Some(current) = &observed.current
        && (observed.mount || change.action == Action::Delete)
    {
        let holders = seam
            .holders(current)
            .await
            .map_err(request(format!("find who holds {}", current.mount_point)))?;
        if !holders.is_empty() {
            return Err(NfsMountError::Held {
                name: name.clone(),
                path: current.mount_point.clone(),
                holders,
            }
            .into());
        }
        step.check().map_err(interrupted)?;
        let unmount = NfsRequest::Unmount {
            path: current.mount_point.clone(),
        };
        seam.send(&unmount)
            .await
            .map_err(request(unmount.to_string()))?;
    }
    if change.action == Action::Delete {
        let forget = NfsRequest::RemoveRecord { name: name.clone() };
        seam.send(&forget)
            .await
            .map_err(request(forget.to_string()))?;
        return Ok(());
    }
    if !observed.mount {
        // Adopted as it is: its record, with its ID.
        let Some(current) = &observed.current else {
            return Ok(());
        };
        let record = NfsRequest::WriteRecord(MountRecord {
            name: name.clone(),
            source: current.source.clone(),
            path: current.mount_point.clone(),
            mount_id: Some(current.mount_id),
        });
        seam.send(&record)
            .await
            .map_err(request(record.to_string()))?;
        return Ok(());
    }
    step.check().map_err(interrupted)?;
    let mut record = MountRecord {
        name: name.clone(),
        source: observed.source.clone(),
        path: observed.path.clone(),
        mount_id: None,
    };
    let intent = NfsRequest::WriteRecord(record.clone());
    seam.send(&intent)
        .await
        .map_err(request(intent.to_string()))?;
    step.progress(format!("mounting {} at {}", observed.source, observed.path));
    let mount_id = seam
        .mount(&observed.source, &observed.path, &observed.options)
        .await
        .map_err(|cause| NfsMountError::Mount {
            name: name.clone(),
            source_path: observed.source.clone(),
            path: observed.path.clone(),
            unreachable: observed
                .unreachable
                .as_ref()
                .map(|why| format!(": the server is unreachable ({why})"))
                .unwrap_or_default(),
            cause,
        })?;
    record.mount_id = Some(mount_id);
    let done = NfsRequest::WriteRecord(record);
    seam.send(&done).await.map_err(request(done.to_string()))?;
    Ok(())
}
