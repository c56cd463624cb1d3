//! `gitvisor status` while a controller runs: its snapshot from the API (the source, the
//! revision applied and any rejected one, the last reconcile, each resource with its
//! retry, and the DHCP leases), instead of reading the store; and the host as this
//! command observes it now (the LIVE column, as without a controller), since the
//! snapshot is only as fresh as the last reconcile.

use std::fmt::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use serde_json::Value;

use super::table::{self, Column, short_revision};
use super::{OutputFormat, output};
use crate::daemon::api::ApiClient;
use crate::drivers::status_tables;
use crate::model::{Kind, Name, ResourceId};
use crate::reconcile::{HostView, Live};

/// What `events` and `sync` say when no controller answers.
pub fn not_running(run_dir: &Path) -> String {
    format!(
        "no controller is running with run dir {} (no one answers on {}); start one with `gitvisor run --source …`, or use `gitvisor status` and `gitvisor apply` without it",
        run_dir.display(),
        crate::daemon::api::socket_path(run_dir).display()
    )
}

/// `host`: the host observed now by this command, as `status` without a controller
/// does (or why it could not be): the controller's snapshot is as of its last
/// reconcile, so a deleted bridge or nft table would read `Ready` until the next resync.
pub async fn status(
    client: &ApiClient,
    format: OutputFormat,
    host: Result<HostView, String>,
) -> Result<ExitCode> {
    let body = client.request("GET", "/v1/status").await?;
    let mut snapshot: Value = serde_json::from_str(&body)?;
    merge_observed(&mut snapshot, host);
    match format {
        OutputFormat::Json => output::stdout(&format!("{snapshot}\n"))?,
        OutputFormat::Text => {
            output::stdout(&format!("{}{}", render(&snapshot), tables(&snapshot)?))?
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The kinds' status tables the snapshot carries (the DHCP leases), as text, or why the
/// controller could not read one.
fn tables(snapshot: &Value) -> Result<String> {
    let mut text = String::new();
    for table in status_tables() {
        if let Some(error) = snapshot[format!("{}Error", table.key)].as_str() {
            text.push_str(&format!("\n{}: {error}\n", table.title));
            continue;
        }
        text.push_str(
            &super::status::table_text(table, &snapshot[table.key]).with_context(|| {
                format!("the controller's status has no readable {}", table.key)
            })?,
        );
    }
    Ok(text)
}

/// Puts the host observed now on the snapshot's resources (`observed`: the same words
/// as `live` in `status` without a controller; `observedMessage`; `observedNote`, what
/// the driver says of an object in sync; `drift`), adding those the snapshot lacks; or
/// `observedError` when the host could not be observed.
fn merge_observed(snapshot: &mut Value, host: Result<HostView, String>) {
    let host = match host {
        Ok(host) => host,
        Err(why) => {
            snapshot["observedError"] = Value::from(why);
            return;
        }
    };
    let id_of = |resource: &Value| -> Option<ResourceId> {
        let kind: Kind = serde_json::from_value(resource["kind"].clone()).ok()?;
        let name = Name::parse(resource["name"].as_str()?).ok()?;
        Some(ResourceId::new(kind, name))
    };
    let mut resources = snapshot["resources"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let listed: Vec<Option<ResourceId>> = resources.iter().map(id_of).collect();
    for id in host.resources.keys() {
        if !listed.iter().flatten().any(|known| known == id) {
            resources.push(serde_json::json!({"kind": id.kind, "name": id.name}));
        }
    }
    for resource in &mut resources {
        let Some(id) = id_of(resource) else { continue };
        let Some(live) = host.resources.get(&id) else {
            continue;
        };
        resource["observed"] = Value::from(live.as_str());
        resource["observedMessage"] = Value::from(live.describe());
        if let Some(note) = host.notes.get(&id) {
            resource["observedNote"] = Value::from(note.as_str());
        }
        if let Live::Drifted { fields, .. } = live {
            resource["drift"] = fields
                .iter()
                .map(|f| serde_json::json!({"path": f.path, "declared": f.new, "host": f.old}))
                .collect();
        }
    }
    snapshot["resources"] = Value::from(resources);
}

fn when(unix: &Value) -> String {
    unix.as_u64()
        .map(|unix| {
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix),
            )
            .to_string()
        })
        .unwrap_or_else(|| "-".to_owned())
}

fn seconds(value: &Value) -> String {
    value
        .as_f64()
        .map(|s| {
            humantime::format_duration(std::time::Duration::from_secs(s.round() as u64)).to_string()
        })
        .unwrap_or_else(|| "-".to_owned())
}

/// The store's message, and how the resource is doing now when the controller watches
/// it (containers); what the host has now instead when it differs.
fn message_and_live(resource: &Value) -> String {
    let drifted = matches!(
        resource["observed"].as_str(),
        Some("drifted" | "missing" | "conflict" | "absent" | "undeclared")
    );
    if drifted {
        return resource["observedMessage"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
    }
    let stored = resource["message"].as_str().unwrap_or_default();
    let message = match resource["observedNote"].as_str() {
        Some(note) if stored.is_empty() => note.to_owned(),
        Some(note) => format!("{stored}; {note}"),
        None => stored.to_owned(),
    };
    let message = message.as_str();
    match resource["live"].as_str() {
        Some(live) if message.is_empty() => format!("now: {live}"),
        Some(live) => format!("{message} (now: {live})"),
        None => message.to_owned(),
    }
}

fn render(status: &Value) -> String {
    let mut out = String::new();
    let reference = status["reference"]
        .as_str()
        .map(|r| format!(" (ref {r})"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "Controller: running (pid {}) for host {}, source {}{reference}{}",
        status["pid"],
        status["host"].as_str().unwrap_or("-"),
        status["source"].as_str().unwrap_or("-"),
        if status["reconciling"].as_bool() == Some(true) {
            "; reconciling now"
        } else {
            ""
        }
    );
    let mut schedule = format!("resync every {}", seconds(&status["resyncSeconds"]));
    if !status["pollSeconds"].is_null() {
        schedule.push_str(&format!(", poll every {}", seconds(&status["pollSeconds"])));
    }
    let _ = writeln!(out, "Schedule: {schedule}");
    if let Some(watching) = status["watching"].as_object() {
        // How each kind's drift is noticed: at once (watched) or at the resync.
        for (kind, how) in watching {
            let _ = writeln!(out, "  {kind}: {}", how.as_str().unwrap_or("-"));
        }
    }
    let applied = &status["applied"];
    if applied.is_object() {
        let _ = writeln!(
            out,
            "Applied revision: {} ({}; {}) at {}",
            applied["id"].as_str().unwrap_or("-"),
            if applied["converged"].as_bool() == Some(true) {
                "converged"
            } else {
                "not converged"
            },
            applied["summary"].as_str().unwrap_or_default(),
            when(&applied["appliedUnix"])
        );
    } else {
        out.push_str("Applied revision: none yet\n");
    }
    let rejected = &status["rejected"];
    if rejected.is_object() {
        let _ = writeln!(
            out,
            "Rejected revision: {} at {}; the host stays at the applied revision:",
            rejected["revision"].as_str().unwrap_or("(directory)"),
            when(&rejected["unix"])
        );
        for error in rejected["errors"].as_array().into_iter().flatten() {
            let _ = writeln!(out, "  {}", error.as_str().unwrap_or_default());
        }
    }
    let withheld = &status["pruneWithheld"];
    if withheld.is_object() {
        let count = withheld["count"].as_u64().unwrap_or_default();
        let _ = writeln!(
            out,
            "Prune withheld: {count} resource{} kept although not declared ({}; {}):",
            if count == 1 { "" } else { "s" },
            withheld["why"].as_str().unwrap_or_default(),
            withheld["fix"].as_str().unwrap_or_default()
        );
        for id in withheld["resources"].as_array().into_iter().flatten() {
            let _ = writeln!(out, "  {}", id.as_str().unwrap_or_default());
        }
    }
    let problem = &status["sourceError"];
    if problem.is_object() {
        let _ = writeln!(
            out,
            "Source error at {}: {}",
            when(&problem["unix"]),
            problem["message"].as_str().unwrap_or_default()
        );
    }
    let run = &status["lastReconcile"];
    if run.is_object() {
        let reasons: Vec<&str> = run["reasons"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, set)| set.as_bool() == Some(true))
            .map(|(name, _)| name.as_str())
            .collect();
        let _ = write!(
            out,
            "Last reconcile: {} ({}), {:.2} s: ",
            when(&run["startedUnix"]),
            reasons.join("+"),
            run["seconds"].as_f64().unwrap_or_default()
        );
        match run["error"].as_str() {
            Some(error) => {
                let _ = writeln!(out, "not applied: {error}");
            }
            None => {
                let _ = writeln!(
                    out,
                    "{} changed, {} not converged, {} deferred",
                    run["changed"], run["failed"], run["deferred"]
                );
            }
        }
    }
    if let Some(error) = status["observedError"].as_str() {
        let _ = writeln!(out, "Host: not observed: {error}");
    }
    let resources = status["resources"].as_array().cloned().unwrap_or_default();
    if !resources.is_empty() {
        out.push('\n');
        out.push_str(&resource_table(&resources));
    }
    out
}

/// One row per resource; the columns fit their widest cell, so a commit SHA or a long
/// name never pushes the retry under MESSAGE.
fn resource_table(resources: &[Value]) -> String {
    let columns = [
        Column::new("KIND", 16),
        Column::new("NAME", 24),
        Column::new("STATE", 12),
        Column::new("LIVE", 11),
        Column::new("REVISION", 12),
        Column::new("RETRY", 10),
        Column::new("MESSAGE", 0),
    ];
    let rows: Vec<Vec<String>> = resources
        .iter()
        .map(|resource| {
            let retry = &resource["retry"];
            let retry = if !retry.is_object() {
                "-".to_owned()
            } else {
                match retry["retryInSeconds"].as_f64() {
                    Some(s) => format!(
                        "#{} in {}",
                        retry["attempts"],
                        seconds(&Value::from(s.ceil()))
                    ),
                    None => "waits for a sync".to_owned(),
                }
            };
            vec![
                resource["kind"].as_str().unwrap_or("-").to_owned(),
                resource["name"].as_str().unwrap_or("-").to_owned(),
                resource["state"].as_str().unwrap_or("-").to_owned(),
                resource["observed"].as_str().unwrap_or("-").to_owned(),
                short_revision(resource["revision"].as_str().unwrap_or("-")).to_owned(),
                retry,
                message_and_live(resource),
            ]
        })
        .collect();
    table::render(&columns, &rows)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_host_observed_now_goes_on_the_snapshots_resources_and_in_the_table() {
        use std::collections::BTreeMap;
        let id = |name: &str| ResourceId::new(Kind::Bridge, Name::parse(name).unwrap());
        let mut snapshot = json!({"resources": [
            {"kind": "Bridge", "name": "gone", "state": "Ready"},
            {"kind": "Bridge", "name": "fine", "state": "Ready"},
        ]});
        let host = HostView {
            basis: crate::reconcile::Basis::Presence { why: "test".into() },
            resources: BTreeMap::from([
                (id("gone"), Live::Missing),
                (id("fine"), Live::InSync),
                (id("kept"), Live::Undeclared),
            ]),
            notes: BTreeMap::from([(id("fine"), "3 leases".to_owned())]),
        };
        merge_observed(&mut snapshot, Ok(host));
        let resources = snapshot["resources"].as_array().unwrap();
        assert_eq!(resources[0]["observed"], "missing");
        assert_eq!(resources[1]["observed"], "inSync");
        assert_eq!(resources[1]["observedNote"], "3 leases");
        assert_eq!(
            resources[2]["name"], "kept",
            "the host's extra resources are listed"
        );
        let text = render(&snapshot);
        let gone = text.lines().find(|l| l.contains("gone")).unwrap();
        assert!(
            gone.contains("missing") && gone.contains("Missing: not on the host"),
            "{text}"
        );
        let fine = text.lines().find(|l| l.contains("fine")).unwrap();
        assert!(
            fine.contains("inSync") && fine.contains("3 leases"),
            "{text}"
        );

        let mut unobserved = json!({"resources": []});
        merge_observed(&mut unobserved, Err("no store".into()));
        assert!(render(&unobserved).contains("Host: not observed: no store"));
    }

    #[test]
    fn the_snapshots_leases_are_listed_or_why_they_are_not() {
        let snapshot = json!({"dhcpLeases": {"br0": [{
            "mac": "52:54:00:00:00:10",
            "address": "10.0.0.10",
            "hostname": "web",
            "expiresUnix": 0,
        }]}});
        let text = tables(&snapshot).expect("readable leases");
        assert!(text.contains("br0"), "{text}");
        assert!(text.contains("10.0.0.10"), "{text}");
        assert!(text.contains("web"), "{text}");
        assert!(text.contains("never"), "{text}");

        let failed = json!({"dhcpLeasesError": "cannot read /run/gitvisor/network/dhcp"});
        assert_eq!(
            tables(&failed).expect("the error, as text"),
            "\nDHCP leases: cannot read /run/gitvisor/network/dhcp\n"
        );
        assert!(tables(&json!({})).is_err());
    }

    #[test]
    fn a_commit_sha_and_a_retry_stay_in_their_columns() {
        let sha = "4f9c2b7e1d3a5c6b8e0f1a2b3c4d5e6f7a8b9c0d";
        let resources = vec![
            json!({"kind": "Container", "name": "web", "state": "Failed", "revision": sha,
                   "retry": {"attempts": 3, "retryInSeconds": 37.2}, "message": "start failed"}),
            json!({"kind": "Bridge", "name": "br-a-rather-long-bridge-name", "state": "Ready",
                   "revision": sha, "message": null}),
        ];
        let text = resource_table(&resources);
        let lines: Vec<&str> = text.lines().collect();
        let header = lines[0];
        let at = |line: &str, word: &str| {
            line.find(word)
                .unwrap_or_else(|| panic!("{word} in {line}"))
        };
        for (line, retry, message) in [(lines[1], "#3 in 38s", "start failed"), (lines[2], "-", "")]
        {
            assert_eq!(at(line, "4f9c2b7e1d3a"), at(header, "REVISION"), "{text}");
            assert!(!line.contains(sha), "the SHA is cut to 12 digits: {text}");
            assert_eq!(
                line[at(header, "RETRY")..]
                    .split("  ")
                    .next()
                    .unwrap()
                    .trim(),
                retry,
                "{text}"
            );
            if !message.is_empty() {
                assert_eq!(at(line, message), at(header, "MESSAGE"), "{text}");
            }
        }
        assert_eq!(at(lines[2], "Ready"), at(header, "STATE"), "{text}");
    }
}
