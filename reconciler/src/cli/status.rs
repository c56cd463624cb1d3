//! `status`: what the store says about managed resources and the last revision. Reads
//! only; never creates the store.

use std::process::ExitCode;

use anyhow::Result;

use super::{GlobalArgs, OutputFormat};
use crate::state::ReadOnlyStore;

/// How many of the newest events `status` shows.
const RECENT_EVENTS: usize = 10;

pub fn status(global: &GlobalArgs, output: OutputFormat) -> Result<ExitCode> {
    let store = ReadOnlyStore::open(&global.state_dir)?;
    let statuses = store.statuses()?;
    let last = store.last_revision()?;
    let events = store.events(RECENT_EVENTS)?;
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
                serde_json::json!({ "lastRevision": last, "resources": resources, "events": events })
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
            if !events.is_empty() {
                println!("\nRecent events (newest first):");
                for event in &events {
                    let resource = event
                        .resource
                        .as_ref()
                        .map(|r| format!("{r}: "))
                        .unwrap_or_default();
                    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(event.unix);
                    println!(
                        "  {} {:<7} {resource}{}",
                        humantime::format_rfc3339_seconds(when),
                        event.level.as_str(),
                        event.message
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
