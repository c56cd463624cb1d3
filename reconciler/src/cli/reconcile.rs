//! `plan` and `apply`: load, observe, diff, and (apply) execute.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};

use super::{EXIT_CHANGES, GlobalArgs, OutputFormat, color_stdout, host_name, load_or_report};
use crate::drivers::{Drivers, PlanContext};
use crate::execute::{self, Report, ResultKind};
use crate::load::Revision;
use crate::model::ResourceId;
use crate::plan::{self, Plan};
use crate::state::{ReadOnlyStore, Store};

/// The drivers of this host: every driver of the registry, connected.
pub async fn host_drivers(global: &GlobalArgs) -> Result<Drivers> {
    let settings = crate::drivers::HostSettings {
        run_dir: global.run_dir.clone(),
    };
    crate::drivers::connect_all(&settings).context("cannot connect this host's drivers")
}

/// Connects the host's drivers and plans `revision` against what they observe.
async fn observe_and_plan(
    global: &GlobalArgs,
    revision: &Revision,
    host: &str,
    owned: impl Iterator<Item = ResourceId>,
) -> Result<(Arc<Drivers>, Plan)> {
    let context = PlanContext::new(owned);
    let drivers = Arc::new(host_drivers(global).await?);
    let plan = plan::make_plan(revision, host, &drivers, &context).await?;
    Ok((drivers, plan))
}

pub async fn plan(
    global: &GlobalArgs,
    path: &Path,
    output: OutputFormat,
    detailed_exitcode: bool,
) -> Result<ExitCode> {
    let host = host_name(global);
    let revision = load_or_report(path, &host)?;
    let store = ReadOnlyStore::open(&global.state_dir)?;
    let (_, plan) = observe_and_plan(global, &revision, &host, store.owned()?.into_keys()).await?;
    print_plan(&plan, output, global.verbose > 0);
    Ok(if detailed_exitcode && plan.has_changes() {
        ExitCode::from(EXIT_CHANGES)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_plan(plan: &Plan, output: OutputFormat, verbose: bool) {
    match output {
        OutputFormat::Text => print!("{}", plan::render_text(plan, color_stdout(), verbose)),
        OutputFormat::Json => println!("{}", plan::render_json(plan)),
    }
}

pub async fn apply(
    global: &GlobalArgs,
    path: &Path,
    output: OutputFormat,
    concurrency: usize,
) -> Result<ExitCode> {
    let host = host_name(global);
    // The revision is validated before the store is opened: a rejected revision leaves
    // no trace on the host, not even a state dir.
    let revision = load_or_report(path, &host)?;
    let store = Store::open(&global.state_dir)?;
    let (drivers, plan) =
        observe_and_plan(global, &revision, &host, store.owned()?.into_keys()).await?;
    if output == OutputFormat::Text {
        print_plan(&plan, output, false);
    }
    execute::record_intents(&store, &plan)?;
    let observed_kinds = drivers.kinds();
    let options = execute::ExecuteOptions::new(concurrency)
        .with_cancel(execute::cancel_on_shutdown_signals().context("cannot catch SIGTERM")?);
    let report = execute::execute_with(&plan, &revision.graph, drivers, options).await;
    let source = std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string();
    execute::record_report(&store, &report, &observed_kinds, &source)?;
    match output {
        OutputFormat::Text => print_report(&report),
        OutputFormat::Json => println!(
            "{}",
            serde_json::json!({
                "plan": plan::render_json(&plan),
                "report": report,
                "converged": report.converged(),
            })
        ),
    }
    Ok(if report.converged() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_report(report: &Report) {
    let changed = report
        .results
        .iter()
        .filter(|r| r.action.is_change() && r.ok())
        .count();
    for step in report.failures() {
        match &step.result {
            ResultKind::Failed(why) if !step.action.is_change() => {
                println!("  ! {}: {}: {why}", step.id, step.action)
            }
            ResultKind::Failed(why) => println!("  ! {}: {} failed: {why}", step.id, step.action),
            ResultKind::Blocked(dep) => {
                println!("  ! {}: blocked: dependency {dep} is not ready", step.id)
            }
            ResultKind::Cancelled => println!("  ! {}: {} cancelled", step.id, step.action),
            _ => {}
        }
    }
    let failures = report.failures().count();
    if failures == 0 {
        println!(
            "\nApply complete: {changed} changed, {} resources converged in {} (revision {}).",
            report.results.len(),
            human_seconds(report.seconds),
            report.revision
        );
    } else {
        println!(
            "\nApply incomplete: {changed} changed, {failures} not converged, in {} (revision {}).",
            human_seconds(report.seconds),
            report.revision
        );
    }
}

fn human_seconds(seconds: f64) -> String {
    if seconds < 1.0 {
        format!("{:.0} ms", seconds * 1000.0)
    } else {
        format!("{seconds:.2} s")
    }
}
