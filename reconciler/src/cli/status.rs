//! `status`: what the store says about managed resources and the last revision. Reads
//! only; never creates the store.

use std::process::ExitCode;

use anyhow::Result;

use super::{GlobalArgs, OutputFormat};
use crate::state::ReadOnlyStore;

pub fn status(global: &GlobalArgs, output: OutputFormat) -> Result<ExitCode> {
    let store = ReadOnlyStore::open(&global.state_dir)?;
    let statuses = store.statuses()?;
    let last = store.last_revision()?;
    match output {
        OutputFormat::Json => {
            let resources: Vec<serde_json::Value> = statuses
                .iter()
                .map(|(id, status)| {
                    serde_json::json!({
                        "kind": id.kind,
                        "name": id.name,
                        "state": status.state,
                        "message": status.message,
                        "revision": status.revision,
                        "updatedUnix": status.updated_unix,
                    })
                })
                .collect();
            println!(
                "{}",
                serde_json::json!({ "lastRevision": last, "resources": resources })
            );
        }
        OutputFormat::Text => {
            match &last {
                Some(rev) => println!(
                    "Last revision: {} ({}; {})",
                    rev.id,
                    if rev.converged {
                        "converged"
                    } else {
                        "not converged"
                    },
                    rev.summary
                ),
                None => println!(
                    "No revision applied yet (state dir {}).",
                    global.state_dir.display()
                ),
            }
            if !statuses.is_empty() {
                println!(
                    "\n{:<16} {:<24} {:<12} {:<25} MESSAGE",
                    "KIND", "NAME", "STATE", "REVISION"
                );
                for (id, status) in &statuses {
                    println!(
                        "{:<16} {:<24} {:<12} {:<25} {}",
                        id.kind.as_str(),
                        id.name.as_str(),
                        status.state.as_str(),
                        status.revision,
                        status.message.as_deref().unwrap_or("")
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
