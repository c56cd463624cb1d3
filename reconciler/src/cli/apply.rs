//! `apply`: converge the host, telling people what happens as it happens.
//!
//! Text output: one line per resource as its change finishes (symbol, `Kind/name`, what
//! changed, how long it took); on a terminal, a progress line below them that is
//! rewritten in place and erased at the end; then what did not converge, the deletes left
//! out, and the totals. `--output json` prints one object at the end instead.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};

use super::{EXIT_FAILURE, OutputFormat, ScopeArgs, color_stdout, output};
use crate::execute::{Progress, Report, ResultKind, RunEvent, StepResult, silent};
use crate::load::Revision;
use crate::model::ResourceId;
use crate::plan::{self, Action, Plan};
use crate::reconcile::{Reconciler, Source};

pub async fn apply(
    reconciler: &Reconciler,
    revision: &Revision,
    source: &Source,
    scope: &ScopeArgs,
    format: OutputFormat,
) -> Result<ExitCode> {
    let progress = match format {
        OutputFormat::Text => {
            Lines::new(std::io::stdout().is_terminal(), color_stdout()).into_progress()
        }
        OutputFormat::Json => silent(),
    };
    let cancel = crate::execute::cancel_on_shutdown_signals()
        .context("cannot install the SIGTERM/SIGINT handlers")?;
    let outcome = reconciler
        .apply(revision, source, &scope.options(), progress, cancel)
        .await?;
    let (plan, report) = (&outcome.plan, &outcome.report);
    match format {
        OutputFormat::Text => output::stdout(&summary(plan, report, color_stdout()))?,
        OutputFormat::Json => output::stdout(&format!(
            "{}\n",
            serde_json::json!({
                "plan": plan::render_json(plan),
                "report": report,
                "converged": report.converged(),
            })
        ))?,
    }
    Ok(if report.converged() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    })
}

/// The per-resource lines and the live progress line.
struct Lines {
    tty: bool,
    color: bool,
    started: Instant,
    state: Mutex<LinesState>,
}

#[derive(Default)]
struct LinesState {
    total: usize,
    done: usize,
    /// What each change does, by resource: its field paths.
    fields: BTreeMap<ResourceId, Vec<String>>,
}

impl Lines {
    fn new(tty: bool, color: bool) -> Lines {
        Lines {
            tty,
            color,
            started: Instant::now(),
            state: Mutex::new(LinesState::default()),
        }
    }

    fn into_progress(self) -> Progress {
        let lines = Arc::new(self);
        Arc::new(move |event| lines.event(event))
    }

    fn event(&self, event: RunEvent<'_>) {
        let text = self.render(event, self.started.elapsed().as_secs_f64());
        // Progress lines are best effort: a failed write must not stop the apply, and the
        // final report's write surfaces any error that persists.
        let _ = output::stdout(&text);
    }

    /// What to write for `event`, `elapsed` seconds into the apply.
    fn render(&self, event: RunEvent<'_>, elapsed: f64) -> String {
        let Ok(mut state) = self.state.lock() else {
            return String::new();
        };
        let mut text = String::new();
        match event {
            RunEvent::Started { plan } => {
                state.total = plan.changes.iter().filter(|c| c.action.is_change()).count();
                state.fields = plan
                    .changes
                    .iter()
                    .map(|c| {
                        (
                            c.id.clone(),
                            c.fields.iter().map(|f| f.path.clone()).collect(),
                        )
                    })
                    .collect();
                if state.total > 0 {
                    text.push_str(&format!(
                        "Applying revision {} to host {}: {} change{}\n",
                        plan.revision,
                        plan.host,
                        state.total,
                        if state.total == 1 { "" } else { "s" }
                    ));
                }
            }
            RunEvent::Finished(step) => {
                state.done += 1;
                let fields = state.fields.get(&step.id).map(Vec::as_slice).unwrap_or(&[]);
                if self.tty {
                    // Erase the progress line this one replaces.
                    text.push_str("\r\x1b[2K");
                }
                text.push_str(&step_line(step, fields, self.color));
                text.push('\n');
                if self.tty && state.done < state.total {
                    text.push_str(&format!(
                        "[{}/{}] applying… {}",
                        state.done,
                        state.total,
                        human_seconds(elapsed)
                    ));
                }
            }
        }
        text
    }
}

/// `  + Bridge/br-lab  created  12 ms`, `  ~ Bridge/br-svc  updated mtu, addresses  3 ms`,
/// `  ! Bridge/br-x  update failed: …`.
fn step_line(step: &StepResult, fields: &[String], color: bool) -> String {
    let paint = |code: &str, text: &str| {
        if color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    };
    let took = human_seconds(step.seconds);
    match &step.result {
        ResultKind::Applied | ResultKind::Unchanged | ResultKind::Skipped(_) => {
            let what = match step.action {
                Action::Create => "created".to_owned(),
                Action::Delete => "deleted".to_owned(),
                Action::Update if !fields.is_empty() => format!("updated {}", fields.join(", ")),
                Action::Replace if !fields.is_empty() => {
                    format!("replaced ({})", fields.join(", "))
                }
                other => format!("{other}d"),
            };
            let symbol = paint(
                action_colour(step.action),
                &format!("{:>3}", step.action.symbol()),
            );
            format!("{symbol} {}  {what}  {took}", step.id)
        }
        ResultKind::Cancelled => format!(
            "{} {}  {}  {took}",
            paint("33", "  ."),
            step.id,
            step.failure().unwrap_or_default()
        ),
        ResultKind::Failed(_) | ResultKind::Blocked(_) => format!(
            "{} {}  {}  {took}",
            paint("1;31", "  !"),
            step.id,
            step.failure().unwrap_or_default()
        ),
    }
}

fn action_colour(action: Action) -> &'static str {
    match action {
        Action::Create => "32",
        Action::Update => "33",
        Action::Replace => "35",
        Action::Delete => "31",
        _ => "2",
    }
}

/// What did not converge, the deletes left out, and the totals.
fn summary(plan: &Plan, report: &Report, color: bool) -> String {
    let mut out = String::new();
    let failures: Vec<&StepResult> = report.failures().collect();
    if !failures.is_empty() {
        out.push_str("\nNot converged:\n");
        for step in &failures {
            if let Some(why) = step.failure() {
                out.push_str(&format!("  ! {}: {why}\n", step.id));
            }
        }
    }
    out.push_str(&restart_lines(report));
    out.push_str(&plan::render_skipped_text(plan, color));
    let count = |action: Action| {
        report
            .results
            .iter()
            .filter(|r| r.action == action && matches!(r.result, ResultKind::Applied))
            .count()
    };
    let unchanged = report
        .results
        .iter()
        .filter(|r| r.result == ResultKind::Unchanged)
        .count();
    let totals = format!(
        "{} created, {} updated, {} replaced, {} deleted, {unchanged} unchanged",
        count(Action::Create),
        count(Action::Update),
        count(Action::Replace),
        count(Action::Delete),
    );
    let took = human_seconds(report.seconds);
    if failures.is_empty() {
        out.push_str(&format!(
            "\nApply complete: {totals} in {took} (revision {}).\n",
            report.revision
        ));
    } else {
        out.push_str(&format!(
            "\nApply incomplete: {totals}, {} not converged, in {took} (revision {}).\n",
            failures.len(),
            report.revision
        ));
    }
    out
}

/// The running dependents stopped and started again around disruptive changes:
/// `  ↻ VirtualMachine/web  restarted for Volume/data  2.10 s`, or why it failed.
fn restart_lines(report: &Report) -> String {
    if report.restarts.is_empty() {
        return String::new();
    }
    let mut out = String::from("\nDependents restarted:\n");
    for restart in &report.restarts {
        let causes = restart
            .because
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let took = human_seconds(restart.seconds);
        let line = match &restart.result {
            ResultKind::Applied => format!("  ↻ {}  restarted for {causes}  {took}\n", restart.id),
            ResultKind::Failed(why) => {
                format!(
                    "  ! {}  restart for {causes} failed: {why}  {took}\n",
                    restart.id
                )
            }
            ResultKind::Cancelled => {
                format!(
                    "  . {}  not restarted for {causes}: cancelled\n",
                    restart.id
                )
            }
            ResultKind::Unchanged | ResultKind::Skipped(_) | ResultKind::Blocked(_) => {
                format!("  . {}  not restarted for {causes}\n", restart.id)
            }
        };
        out.push_str(&line);
    }
    out
}

fn human_seconds(seconds: f64) -> String {
    if seconds < 1.0 {
        format!("{:.0} ms", seconds * 1000.0)
    } else {
        format!("{seconds:.2} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Kind, Name};
    use crate::plan::Change;

    fn step(action: Action, result: ResultKind) -> StepResult {
        let id = ResourceId::new(Kind::Bridge, Name::parse("br0").unwrap());
        let mut step = StepResult::new(&Change::new(id, action), result, 0.012);
        step.seconds = 0.012;
        step
    }

    #[test]
    fn a_line_per_resource_says_what_changed_and_how_long_it_took() {
        let fields = ["mtu".to_owned(), "addresses".to_owned()];
        assert_eq!(
            step_line(&step(Action::Update, ResultKind::Applied), &fields, false),
            "  ~ Bridge/br0  updated mtu, addresses  12 ms"
        );
        assert_eq!(
            step_line(&step(Action::Create, ResultKind::Applied), &[], false),
            "  + Bridge/br0  created  12 ms"
        );
        assert_eq!(
            step_line(
                &step(
                    Action::Delete,
                    ResultKind::Failed(crate::execute::Failure::new(
                        crate::contract::FailureClass::NeedsUser,
                        "EBUSY"
                    ))
                ),
                &[],
                false
            ),
            "  ! Bridge/br0  delete failed: EBUSY  12 ms"
        );
    }

    #[test]
    fn the_summary_lists_dependents_restarted_and_failed_restarts() {
        use crate::execute::RestartResult;
        let id = |kind, name: &str| ResourceId::new(kind, Name::parse(name).unwrap());
        let restart = |name: &str, result: ResultKind| RestartResult {
            id: id(Kind::VirtualMachine, name),
            because: vec![id(Kind::Volume, "data")],
            result,
            class: None,
            seconds: 2.1,
        };
        let report = Report {
            revision: "r1".into(),
            results: Vec::new(),
            restarts: vec![
                restart("web", ResultKind::Applied),
                restart(
                    "db",
                    ResultKind::Failed(crate::execute::Failure::new(
                        crate::contract::FailureClass::NeedsUser,
                        "start timed out",
                    )),
                ),
            ],
            seconds: 3.0,
        };
        let text = restart_lines(&report);
        assert!(
            text.contains("  ↻ VirtualMachine/web  restarted for Volume/data  2.10 s\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "  ! VirtualMachine/db  restart for Volume/data failed: start timed out  2.10 s\n"
            ),
            "{text}"
        );
        assert_eq!(
            restart_lines(&Report {
                restarts: Vec::new(),
                ..report
            }),
            ""
        );
    }

    fn two_creates() -> Plan {
        let id = |name: &str| ResourceId::new(Kind::Bridge, Name::parse(name).unwrap());
        Plan {
            revision: "r1".into(),
            host: "h".into(),
            changes: vec![
                Change::new(id("br0"), Action::Create),
                Change::new(id("br1"), Action::Create),
            ],
            skipped: Vec::new(),
            restarts: Vec::new(),
            delete_after: Default::default(),
        }
    }

    #[test]
    fn a_terminal_gets_a_progress_line_that_each_result_replaces() {
        let plan = two_creates();
        let lines = Lines::new(true, false);
        let started = lines.render(RunEvent::Started { plan: &plan }, 0.0);
        assert_eq!(started, "Applying revision r1 to host h: 2 changes\n");
        let first = step(Action::Create, ResultKind::Applied);
        assert_eq!(
            lines.render(RunEvent::Finished(&first), 1.5),
            "\r\x1b[2K  + Bridge/br0  created  12 ms\n[1/2] applying… 1.50 s"
        );
        // The last result erases the progress line and leaves none behind.
        assert_eq!(
            lines.render(RunEvent::Finished(&first), 2.0),
            "\r\x1b[2K  + Bridge/br0  created  12 ms\n"
        );
    }

    #[test]
    fn a_pipe_gets_plain_lines_only() {
        let plan = two_creates();
        let lines = Lines::new(false, false);
        lines.render(RunEvent::Started { plan: &plan }, 0.0);
        let first = step(Action::Create, ResultKind::Applied);
        assert_eq!(
            lines.render(RunEvent::Finished(&first), 1.5),
            "  + Bridge/br0  created  12 ms\n"
        );
    }

    #[test]
    fn totals_count_each_action() {
        let report = Report {
            revision: "r1".into(),
            restarts: Vec::new(),
            seconds: 1.5,
            results: vec![
                step(Action::Create, ResultKind::Applied),
                step(Action::NoOp, ResultKind::Unchanged),
                step(
                    Action::Update,
                    ResultKind::Failed(crate::execute::Failure::new(
                        crate::contract::FailureClass::NeedsUser,
                        "x",
                    )),
                ),
            ],
        };
        let plan = Plan {
            revision: "r1".into(),
            host: "h".into(),
            changes: Vec::new(),
            skipped: Vec::new(),
            restarts: Vec::new(),
            delete_after: Default::default(),
        };
        let text = summary(&plan, &report, false);
        assert!(
            text.contains("  ! Bridge/br0: update failed: x\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "Apply incomplete: 1 created, 0 updated, 0 replaced, 0 deleted, 1 unchanged, \
                 1 not converged, in 1.50 s (revision r1)."
            ),
            "{text}"
        );
    }
}
