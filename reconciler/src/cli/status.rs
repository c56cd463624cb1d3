//! `status`: what the store says about managed resources and the last revision, how
//! the host compares with it now, and the DHCP leases each managed bridge's dnsmasq has
//! handed out (the host parts unless `--offline`). Reads only; never creates or writes
//! the store.
//!
//! The leases are the Bridge kind's status table ([`crate::drivers::StatusTable`]): this
//! command reads every registered table and shows it under its title, knowing no kind.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::process::ExitCode;

use anyhow::Result;
use serde_json::{Value, json};

use super::table::{self, Column, short_revision};
use super::{OutputFormat, output};
use crate::drivers::{Rows, StatusTable, status_tables};
use crate::model::ResourceId;
use crate::reconcile::{Basis, Live, Reconciler, StatusReport};

pub async fn status(
    reconciler: &Reconciler,
    format: OutputFormat,
    offline: bool,
) -> Result<ExitCode> {
    let report = reconciler.status(offline).await?;
    // The kinds' status tables (the DHCP leases), read now; none offline.
    let mut tables = Vec::new();
    if !offline {
        for table in status_tables() {
            let value = (table.read)(&reconciler.options().run_dir)
                .await
                .map_err(|error| anyhow::anyhow!(error))?;
            tables.push((table, value));
        }
    }
    let text = match format {
        OutputFormat::Json => {
            let mut out = render_json(&report);
            for (table, value) in tables {
                out[table.key] = value;
            }
            format!("{out}\n")
        }
        OutputFormat::Text => {
            let mut out = render_text(&report, &reconciler.options().state_dir);
            for (table, value) in &tables {
                out.push_str(&table_text(table, value)?);
            }
            out
        }
    };
    output::stdout(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// A kind's status table as text: a blank line, its title and its rows under their
/// headers, in columns that fit their cells (a guest's hostname can be long); nothing
/// when it has no rows. An error says why `value` is not the table's JSON form.
pub(super) fn table_text(table: &StatusTable, value: &Value) -> Result<String, serde_json::Error> {
    let Rows { columns, rows } = (table.rows)(value)?;
    if rows.is_empty() {
        return Ok(String::new());
    }
    let columns: Vec<Column> = columns
        .iter()
        .map(|&(header, width)| Column::new(header, width))
        .collect();
    Ok(format!(
        "\n{}:\n{}",
        table.title,
        table::render(&columns, &rows)
    ))
}

/// Every resource the store or the host view mentions, in order.
fn ids(report: &StatusReport) -> BTreeSet<&ResourceId> {
    let mut ids: BTreeSet<&ResourceId> = report.statuses.keys().collect();
    if let Some(host) = &report.host {
        ids.extend(host.resources.keys());
    }
    ids
}

fn live<'a>(report: &'a StatusReport, id: &ResourceId) -> Option<&'a Live> {
    report.host.as_ref()?.resources.get(id)
}

/// What the driver notes about a resource that needs no change.
fn note<'a>(report: &'a StatusReport, id: &ResourceId) -> Option<&'a str> {
    report.host.as_ref()?.notes.get(id).map(String::as_str)
}

fn render_json(report: &StatusReport) -> Value {
    let resources: Vec<Value> = ids(report)
        .into_iter()
        .map(|id| {
            let status = report.statuses.get(id);
            let mut object = json!({
                "kind": id.kind,
                "name": id.name,
                "state": status.map(|s| s.state),
                "message": status.and_then(|s| s.message.clone()),
                "revision": status.map(|s| s.revision.clone()),
                "updatedUnix": status.map(|s| s.updated_unix),
            });
            if let Some(live) = live(report, id) {
                object["live"] = json!(live.as_str());
                object["liveMessage"] = json!(live.describe());
                if let Some(note) = note(report, id) {
                    object["liveNote"] = json!(note);
                }
                if let Live::Drifted { fields, .. } = live {
                    object["drift"] = fields
                        .iter()
                        .map(|f| json!({"path": f.path, "declared": f.new, "host": f.old}))
                        .collect();
                }
            }
            object
        })
        .collect();
    let observed = match &report.host {
        None => json!({"basis": "offline"}),
        Some(host) => match &host.basis {
            Basis::LastRevision { revision } => {
                json!({"basis": "lastRevision", "revision": revision})
            }
            Basis::Presence { why } => json!({"basis": "presence", "why": why}),
        },
    };
    let mut out = json!({
        "lastRevision": report.last,
        "observed": observed,
        "resources": resources,
        "events": report.events,
    });
    if let Some(damage) = &report.damage {
        out["storeDamage"] = json!(damage);
    }
    out
}

fn render_text(report: &StatusReport, state_dir: &std::path::Path) -> String {
    let mut out = String::new();
    if let Some(damage) = &report.damage {
        let _ = writeln!(
            out,
            "State store damaged, shown as empty: {damage}\n\
             The next apply moves it aside and starts an empty store; objects gitvisor created \
             show as conflicts until adopted, and nothing is pruned."
        );
    }
    match &report.last {
        Some(rev) => {
            let _ = writeln!(
                out,
                "Last revision: {} ({}; {})",
                rev.id,
                if rev.converged {
                    "converged"
                } else {
                    "not converged"
                },
                rev.summary
            );
            if !rev.source.is_empty() {
                let _ = writeln!(out, "Applied from: {}", rev.source.replace('\n', " "));
            }
        }
        None => {
            let _ = writeln!(
                out,
                "No revision applied yet (state dir {}).",
                state_dir.display()
            );
        }
    }
    match &report.host {
        None => out.push_str("Host: not observed (--offline); states are as last recorded.\n"),
        Some(host) => {
            let drifted = host.resources.values().filter(|l| l.is_drift()).count();
            match &host.basis {
                Basis::LastRevision { .. } => {
                    let _ = writeln!(
                        out,
                        "Host: observed now; {drifted} of {} resource{} differ{} from the last applied revision.",
                        host.resources.len(),
                        if host.resources.len() == 1 { "" } else { "s" },
                        if drifted == 1 { "s" } else { "" }
                    );
                }
                Basis::Presence { why } => {
                    let _ = writeln!(out, "Host: observed now, presence only: {why}.");
                }
            }
        }
    }
    let ids = ids(report);
    if !ids.is_empty() {
        let columns = [
            Column::new("KIND", 16),
            Column::new("NAME", 24),
            Column::new("STATE", 12),
            Column::new("LIVE", 11),
            Column::new("REVISION", 12),
            Column::new("MESSAGE", 0),
        ];
        let mut rows = Vec::new();
        for id in ids {
            let status = report.statuses.get(id);
            let live = live(report, id);
            let message = match live {
                Some(live)
                    if live.is_drift() || status.and_then(|s| s.message.as_ref()).is_none() =>
                {
                    match live {
                        Live::InSync | Live::Present => {
                            note(report, id).unwrap_or_default().to_owned()
                        }
                        other => other.describe(),
                    }
                }
                _ => status.and_then(|s| s.message.clone()).unwrap_or_default(),
            };
            rows.push(vec![
                id.kind.as_str().to_owned(),
                id.name.as_str().to_owned(),
                status.map_or("-", |s| s.state.as_str()).to_owned(),
                live.map_or("-", Live::as_str).to_owned(),
                short_revision(status.map_or("-", |s| s.revision.as_str())).to_owned(),
                message,
            ]);
        }
        out.push('\n');
        out.push_str(&table::render(&columns, &rows));
    }
    if !report.events.is_empty() {
        out.push_str("\nRecent events (newest first):\n");
        for event in &report.events {
            let resource = event
                .resource
                .as_ref()
                .map(|r| format!("{r}: "))
                .unwrap_or_default();
            let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(event.unix);
            let _ = writeln!(
                out,
                "  {} {:<7} {resource}{}",
                humantime::format_rfc3339_seconds(when),
                event.level.as_str(),
                event.message
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This build's DHCP leases table, found the way the command finds it.
    fn leases_table() -> &'static StatusTable {
        status_tables()
            .find(|table| table.key == "dhcpLeases")
            .expect("a registered dhcpLeases table")
    }

    #[test]
    fn leases_are_listed_per_bridge_in_text() {
        let leases = json!({
            "br0": [
                {"mac": "52:54:00:00:00:10", "address": "10.0.0.10", "hostname": "vm1", "expiresUnix": 1700000000u64},
                {"mac": "52:54:00:00:00:11", "address": "10.0.0.150", "hostname": null, "expiresUnix": 0},
            ],
            // A bridge whose dnsmasq has not written its lease file yet.
            "br1": [],
        });
        let text = table_text(leases_table(), &leases).unwrap();
        let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
        assert_eq!(lines[1], "DHCP leases:");
        assert!(lines[2].starts_with("BRIDGE") && lines[2].ends_with("EXPIRES"));
        let words: Vec<Vec<&str>> = lines[3..]
            .iter()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            words,
            [
                vec![
                    "br0",
                    "52:54:00:00:00:10",
                    "10.0.0.10",
                    "vm1",
                    "2023-11-14T22:13:20Z"
                ],
                vec!["br0", "52:54:00:00:00:11", "10.0.0.150", "-", "never"],
                vec!["br1", "(none", "yet)"],
            ]
        );

        assert_eq!(
            lines[2],
            "BRIDGE           MAC                ADDRESS          HOSTNAME                 EXPIRES",
            "short cells keep the familiar widths"
        );
        assert_eq!(table_text(leases_table(), &json!({})).unwrap(), "");
    }

    #[test]
    fn a_long_hostname_widens_its_column_and_keeps_the_expiry_under_its_header() {
        let hostname = "a-guest-with-a-rather-long-hostname.example.internal";
        let leases = json!({"br0": [
            {"mac": "52:54:00:00:00:10", "address": "10.0.0.10", "hostname": hostname, "expiresUnix": 0},
            {"mac": "52:54:00:00:00:11", "address": "10.0.0.11", "hostname": "short", "expiresUnix": 0},
        ]});
        let text = table_text(leases_table(), &leases).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let column = lines[2].find("EXPIRES").unwrap();
        for row in &lines[3..] {
            assert_eq!(row.find("never"), Some(column), "{text}");
        }
        assert_eq!(lines[3].find(hostname), lines[2].find("HOSTNAME"), "{text}");
    }
}
