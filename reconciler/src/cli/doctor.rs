//! `doctor [PATH]`: for each kind, whether this build has its driver and whether this
//! host has what the kind needs, with the fix for what is missing.
//!
//! Steps: load PATH when given (with the same loader as `plan`; a revision that does not
//! load is reported like `validate` does, exit 1), pick the kinds it declares for this
//! host (or every kind without PATH), run the drivers' host probes
//! ([`crate::drivers::probe`]) concurrently, print.
//!
//! Exit codes: 1 when PATH does not load, or when a kind it declares has no driver in
//! this build or lacks a facility on this host (`missing`); 0 otherwise. Without PATH
//! nothing is declared, so the report is informative and the exit code is 0.
//!
//! `--output json` prints one object; these keys keep their meaning (more may be added):
//!
//! ```json
//! {
//!   "host": "nuc1",
//!   "path": "manifests/",            // null without PATH
//!   "ready": false,                  // false exactly when the exit code is 1
//!   "kinds": [{
//!     "kind": "Volume",
//!     "declared": true,              // declared in PATH for this host
//!     "driver": false,               // this build has the kind's driver
//!     "hostReady": false,            // no facility is "missing"
//!     "ready": false,                // driver && hostReady
//!     "facilities": [{
//!       "name": "device-mapper",
//!       "status": "missing",         // "ok" | "warn" | "missing"
//!       "detail": "not in this kernel: logical volumes cannot be created",
//!       "fix": "modprobe dm-mod, or boot a kernel with CONFIG_BLK_DEV_DM"   // null when ok
//!     }]
//!   }]
//! }
//! ```

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;

use super::{GlobalArgs, OutputFormat, host_name};
use crate::drivers::probe::{Facility, KindProbe, Status, probe};
use crate::model::Kind;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct KindReport<'a> {
    kind: Kind,
    declared: bool,
    driver: bool,
    host_ready: bool,
    ready: bool,
    facilities: &'a [Facility],
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    host: &'a str,
    path: Option<&'a Path>,
    ready: bool,
    kinds: Vec<KindReport<'a>>,
}

pub fn doctor(global: &GlobalArgs, path: Option<&Path>, output: OutputFormat) -> Result<ExitCode> {
    let host = host_name(global);
    let declared: BTreeSet<Kind> = match path {
        None => BTreeSet::new(),
        Some(path) => match crate::load::load_revision(path, &host) {
            Ok(revision) => revision.resources.iter().map(|r| r.id().kind).collect(),
            Err(errors) => {
                eprint!("{errors}");
                eprintln!(
                    "doctor: {} does not load; fix the errors above (gitvisor validate shows the same)",
                    path.display()
                );
                return Ok(ExitCode::FAILURE);
            }
        },
    };
    let kinds: Vec<Kind> = match path {
        Some(_) => declared.iter().copied().collect(),
        None => Kind::all(),
    };
    let probes = super::runtime()?.block_on(probe(&kinds));
    let report = Report {
        host: &host,
        path,
        ready: probes
            .iter()
            .all(|p| !declared.contains(&p.kind) || p.ready()),
        kinds: probes
            .iter()
            .map(|p| KindReport {
                kind: p.kind,
                declared: declared.contains(&p.kind),
                driver: p.driver,
                host_ready: p.host_ready(),
                ready: p.ready(),
                facilities: &p.facilities,
            })
            .collect(),
    };
    match output {
        OutputFormat::Json => {
            super::output::stdout(&format!("{}\n", serde_json::to_string(&report)?))?
        }
        OutputFormat::Text => super::output::stdout(&render_text(&report, &probes))?,
    }
    Ok(if report.ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn render_text(report: &Report<'_>, probes: &[KindProbe]) -> String {
    let mut out = String::new();
    match report.path {
        Some(path) if probes.is_empty() => out.push_str(&format!(
            "{} declares nothing for host {}.\n",
            path.display(),
            report.host
        )),
        Some(path) => out.push_str(&format!(
            "Kinds {} declares for host {}:\n\n",
            path.display(),
            report.host
        )),
        None => out.push_str(&format!("Every kind, on host {}:\n\n", report.host)),
    }
    for probe in probes {
        out.push_str(&format!("{}: {}\n", probe.kind, summary(probe)));
        for facility in &probe.facilities {
            let status = match facility.status {
                Status::Ok => "ok",
                Status::Warn => "warn",
                Status::Missing => "missing",
            };
            out.push_str(&format!(
                "  {status:<8} {:<14} {}\n",
                facility.name, facility.detail
            ));
            if let Some(fix) = &facility.fix {
                out.push_str(&format!("  {:<8} {:<14} fix: {fix}\n", "", ""));
            }
        }
        out.push('\n');
    }
    if report.path.is_some() && !probes.is_empty() {
        let blocked: Vec<String> = probes
            .iter()
            .filter(|p| !p.ready())
            .map(|p| format!("{} ({})", p.kind, summary(p)))
            .collect();
        if blocked.is_empty() {
            out.push_str("Every declared kind can be applied on this host.\n");
        } else {
            out.push_str(&format!(
                "Cannot apply on this host: {}.\n",
                blocked.join("; ")
            ));
        }
    }
    out
}

/// "ready", "no driver in this build; host lacks device-mapper", ….
fn summary(probe: &KindProbe) -> String {
    let lacks: Vec<&str> = probe
        .facilities
        .iter()
        .filter(|f| f.status == Status::Missing)
        .map(|f| f.name)
        .collect();
    let host = if lacks.is_empty() {
        "host has what it needs".to_owned()
    } else {
        format!("host lacks {}", lacks.join(", "))
    };
    match (probe.driver, lacks.is_empty()) {
        (true, true) => "ready".to_owned(),
        (true, false) => format!("driver built; {host}"),
        (false, _) => format!("no driver in this build; {host}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(kind: Kind, driver: bool, facilities: Vec<Facility>) -> KindProbe {
        KindProbe {
            kind,
            driver,
            facilities,
        }
    }

    #[test]
    fn the_summary_names_the_missing_driver_and_facilities() {
        let ok = Facility::ok("netlink", "fine");
        let dm = Facility::missing("device-mapper", "absent", "modprobe dm-mod");
        let lvm = Facility::missing("lvm2", "absent", "apt install lvm2");
        assert_eq!(
            summary(&kind(Kind::Bridge, true, vec![ok.clone()])),
            "ready"
        );
        assert_eq!(
            summary(&kind(Kind::Bridge, true, vec![ok.clone(), dm.clone()])),
            "driver built; host lacks device-mapper"
        );
        assert_eq!(
            summary(&kind(Kind::Volume, false, vec![lvm, dm])),
            "no driver in this build; host lacks lvm2, device-mapper"
        );
        assert_eq!(
            summary(&kind(Kind::Volume, false, vec![ok])),
            "no driver in this build; host has what it needs"
        );
    }
}
