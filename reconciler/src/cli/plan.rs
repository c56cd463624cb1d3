//! `plan`: show what apply would do, and say by the exit code whether it can.

use std::process::ExitCode;

use anyhow::Result;

use super::{EXIT_CHANGES, EXIT_FAILURE, OutputFormat, ScopeArgs, color_stdout, output};
use crate::load::Revision;
use crate::plan::{self, Plan};
use crate::reconcile::{PlanOptions, PruneMode, Reconciler, Source};

impl ScopeArgs {
    /// The library's options for these flags.
    pub fn options(&self) -> PlanOptions {
        PlanOptions {
            prune: if self.prune {
                PruneMode::Confirmed
            } else if self.no_prune {
                PruneMode::Never
            } else {
                PruneMode::Safe
            },
            targets: self.targets.clone(),
            ..PlanOptions::default()
        }
    }
}

pub async fn plan(
    reconciler: &Reconciler,
    revision: &Revision,
    source: &Source,
    scope: &ScopeArgs,
    format: OutputFormat,
    detailed_exitcode: bool,
    verbose: bool,
) -> Result<ExitCode> {
    let plan = reconciler.plan(revision, source, &scope.options()).await?;
    match format {
        OutputFormat::Text => output::stdout(&plan::render_text(&plan, color_stdout(), verbose))?,
        OutputFormat::Json => output::stdout(&format!("{}\n", plan::render_json(&plan)))?,
    }
    Ok(exit_code(&plan, detailed_exitcode, format))
}

/// 1 when apply cannot converge the host, else 2 for changes with `--detailed-exitcode`,
/// else 0.
fn exit_code(plan: &Plan, detailed_exitcode: bool, format: OutputFormat) -> ExitCode {
    if !plan.can_converge() {
        if format == OutputFormat::Text {
            let s = plan.summary();
            output::stderr(&format!(
                "error: apply cannot converge this plan ({} conflict{}, {} unsupported: no driver, or the host lacks what it needs); \
                 see the `!` and `?` lines above\n",
                s.conflict,
                if s.conflict == 1 { "" } else { "s" },
                s.unsupported
            ));
        }
        ExitCode::from(EXIT_FAILURE)
    } else if detailed_exitcode && plan.has_changes() {
        ExitCode::from(EXIT_CHANGES)
    } else {
        ExitCode::SUCCESS
    }
}
