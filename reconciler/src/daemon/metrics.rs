//! Prometheus metrics, rendered as the text exposition format (version 0.0.4) on
//! `--metrics-listen`. Hand-written: a dozen series do not need a client library.
//!
//! | metric | type | what |
//! |---|---|---|
//! | `gitvisor_reconcile_duration_seconds` | histogram | one reconcile: fetch, load, plan, apply, record |
//! | `gitvisor_reconciles_total{result}` | counter | `converged`, `not_converged`, `error` (no apply: store or host unreachable), `cancelled` |
//! | `gitvisor_resources{kind,state}` | gauge | managed resources by the state the store records |
//! | `gitvisor_drift_repairs_total` | counter | changes made to a revision already applied (the host had drifted), restarts of dead containers aside |
//! | `gitvisor_resource_failures_total{kind,class}` | counter | failed changes by failure class |
//! | `gitvisor_revisions_rejected_total` | counter | revisions rejected (invalid, or badly signed) |
//! | `gitvisor_revision_rejected` | gauge | 1 while the source's newest revision is rejected |
//! | `gitvisor_prune_withheld` | gauge | undeclared objects kept at the last reconcile because no one confirmed their delete (an emptied repository) |
//! | `gitvisor_source_fetch_errors_total` | counter | failed fetches of a git source |
//! | `gitvisor_applied_revision_info{revision,source}` | gauge | 1, labelled with the revision applied |
//! | `gitvisor_last_reconcile_timestamp_seconds` | gauge | when the last reconcile finished |

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use crate::contract::FailureClass;
use crate::model::Kind;
use crate::state::ResourceState;

/// Upper bounds of the duration histogram's buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// How a reconcile ended, for `gitvisor_reconciles_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ReconcileResult {
    Converged,
    NotConverged,
    Error,
    Cancelled,
}

impl ReconcileResult {
    fn label(self) -> &'static str {
        match self {
            ReconcileResult::Converged => "converged",
            ReconcileResult::NotConverged => "not_converged",
            ReconcileResult::Error => "error",
            ReconcileResult::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Default)]
struct Values {
    buckets: [u64; BUCKETS.len()],
    duration_sum: f64,
    duration_count: u64,
    reconciles: BTreeMap<ReconcileResult, u64>,
    resources: BTreeMap<(Kind, &'static str), u64>,
    drift_repairs: u64,
    failures: BTreeMap<(Kind, &'static str), u64>,
    rejected_total: u64,
    rejected_now: bool,
    prune_withheld: usize,
    fetch_errors: u64,
    applied: Option<(String, String)>,
    last_reconcile_unix: Option<f64>,
}

#[derive(Debug, Default)]
pub struct Metrics {
    values: Mutex<Values>,
}

impl Metrics {
    fn with<T>(&self, body: impl FnOnce(&mut Values) -> T) -> T {
        match self.values.lock() {
            Ok(mut values) => body(&mut values),
            Err(poisoned) => body(&mut poisoned.into_inner()),
        }
    }

    pub fn reconciled(&self, seconds: f64, result: ReconcileResult, finished_unix: f64) {
        self.with(|v| {
            for (count, bound) in v.buckets.iter_mut().zip(BUCKETS) {
                if seconds <= bound {
                    *count += 1;
                }
            }
            v.duration_sum += seconds;
            v.duration_count += 1;
            *v.reconciles.entry(result).or_default() += 1;
            v.last_reconcile_unix = Some(finished_unix);
        });
    }

    /// Replaces the resource gauge with these counts.
    pub fn set_resources(&self, states: impl IntoIterator<Item = (Kind, ResourceState)>) {
        let mut counts: BTreeMap<(Kind, &'static str), u64> = BTreeMap::new();
        for (kind, state) in states {
            *counts.entry((kind, state.as_str())).or_default() += 1;
        }
        self.with(|v| v.resources = counts);
    }

    pub fn drift_repaired(&self, count: u64) {
        self.with(|v| v.drift_repairs += count);
    }

    pub fn failed(&self, kind: Kind, class: FailureClass) {
        let class = match class {
            FailureClass::Transient => "transient",
            FailureClass::NeedsUser => "needs_user",
            FailureClass::Bug => "bug",
        };
        self.with(|v| *v.failures.entry((kind, class)).or_default() += 1);
    }

    /// A revision was rejected (`first` when it is not the one already rejected).
    pub fn rejected(&self, first: bool) {
        self.with(|v| {
            if first {
                v.rejected_total += 1;
            }
            v.rejected_now = true;
        });
    }

    pub fn accepted(&self) {
        self.with(|v| v.rejected_now = false);
    }

    /// Objects the last reconcile kept although undeclared (deletes not confirmed).
    pub fn set_prune_withheld(&self, count: usize) {
        self.with(|v| v.prune_withheld = count);
    }

    pub fn fetch_failed(&self) {
        self.with(|v| v.fetch_errors += 1);
    }

    pub fn applied(&self, revision: &str, source: &str) {
        self.with(|v| v.applied = Some((revision.to_owned(), source.to_owned())));
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        self.with(|v| {
            let mut out = String::new();
            header(
                &mut out,
                "gitvisor_reconcile_duration_seconds",
                "histogram",
                "Duration of one reconcile (fetch, load, plan, apply, record).",
            );
            for (count, bound) in v.buckets.iter().zip(BUCKETS) {
                let _ = writeln!(
                    out,
                    "gitvisor_reconcile_duration_seconds_bucket{{le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "gitvisor_reconcile_duration_seconds_bucket{{le=\"+Inf\"}} {}",
                v.duration_count
            );
            let _ = writeln!(
                out,
                "gitvisor_reconcile_duration_seconds_sum {}",
                v.duration_sum
            );
            let _ = writeln!(
                out,
                "gitvisor_reconcile_duration_seconds_count {}",
                v.duration_count
            );

            header(
                &mut out,
                "gitvisor_reconciles_total",
                "counter",
                "Reconciles by how they ended.",
            );
            for result in [
                ReconcileResult::Converged,
                ReconcileResult::NotConverged,
                ReconcileResult::Error,
                ReconcileResult::Cancelled,
            ] {
                let _ = writeln!(
                    out,
                    "gitvisor_reconciles_total{{result=\"{}\"}} {}",
                    result.label(),
                    v.reconciles.get(&result).copied().unwrap_or(0)
                );
            }

            header(
                &mut out,
                "gitvisor_resources",
                "gauge",
                "Managed resources by kind and the state the last reconcile recorded.",
            );
            for ((kind, state), count) in &v.resources {
                let _ = writeln!(
                    out,
                    "gitvisor_resources{{kind=\"{kind}\",state=\"{state}\"}} {count}"
                );
            }

            header(
                &mut out,
                "gitvisor_drift_repairs_total",
                "counter",
                "Changes made to bring the host back to a revision already applied.",
            );
            let _ = writeln!(out, "gitvisor_drift_repairs_total {}", v.drift_repairs);

            header(
                &mut out,
                "gitvisor_resource_failures_total",
                "counter",
                "Failed changes by kind and failure class.",
            );
            for ((kind, class), count) in &v.failures {
                let _ = writeln!(
                    out,
                    "gitvisor_resource_failures_total{{kind=\"{kind}\",class=\"{class}\"}} {count}"
                );
            }

            header(
                &mut out,
                "gitvisor_revisions_rejected_total",
                "counter",
                "Revisions rejected as invalid or badly signed.",
            );
            let _ = writeln!(out, "gitvisor_revisions_rejected_total {}", v.rejected_total);
            header(
                &mut out,
                "gitvisor_revision_rejected",
                "gauge",
                "1 while the source's newest revision is rejected and the host stays at the last good one.",
            );
            let _ = writeln!(
                out,
                "gitvisor_revision_rejected {}",
                u8::from(v.rejected_now)
            );
            header(
                &mut out,
                "gitvisor_prune_withheld",
                "gauge",
                "Objects kept at the last reconcile although the revision does not declare them, because their delete is not confirmed (an emptied repository; a PrunePolicy with deleteUndeclared: true confirms it).",
            );
            let _ = writeln!(out, "gitvisor_prune_withheld {}", v.prune_withheld);

            header(
                &mut out,
                "gitvisor_source_fetch_errors_total",
                "counter",
                "Failed fetches of the source.",
            );
            let _ = writeln!(out, "gitvisor_source_fetch_errors_total {}", v.fetch_errors);

            header(
                &mut out,
                "gitvisor_applied_revision_info",
                "gauge",
                "The revision last applied, as labels.",
            );
            if let Some((revision, source)) = &v.applied {
                let _ = writeln!(
                    out,
                    "gitvisor_applied_revision_info{{revision=\"{}\",source=\"{}\"}} 1",
                    escape(revision),
                    escape(source)
                );
            }

            header(
                &mut out,
                "gitvisor_last_reconcile_timestamp_seconds",
                "gauge",
                "When the last reconcile finished, in seconds since the Unix epoch.",
            );
            if let Some(unix) = v.last_reconcile_unix {
                let _ = writeln!(out, "gitvisor_last_reconcile_timestamp_seconds {unix}");
            }
            out
        })
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value: backslash, double quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_is_cumulative_and_labels_are_escaped() {
        let metrics = Metrics::default();
        metrics.reconciled(0.02, ReconcileResult::Converged, 1.0);
        metrics.reconciled(3.0, ReconcileResult::NotConverged, 2.0);
        metrics.applied("abc", "/srv/a\n/srv/\"b\"");
        metrics.failed(Kind::Bridge, FailureClass::NeedsUser);
        let text = metrics.render();
        for line in [
            "gitvisor_reconcile_duration_seconds_bucket{le=\"0.01\"} 0",
            "gitvisor_reconcile_duration_seconds_bucket{le=\"0.025\"} 1",
            "gitvisor_reconcile_duration_seconds_bucket{le=\"5\"} 2",
            "gitvisor_reconcile_duration_seconds_bucket{le=\"+Inf\"} 2",
            "gitvisor_reconcile_duration_seconds_count 2",
            "gitvisor_reconciles_total{result=\"not_converged\"} 1",
            "gitvisor_applied_revision_info{revision=\"abc\",source=\"/srv/a\\n/srv/\\\"b\\\"\"} 1",
            "gitvisor_resource_failures_total{kind=\"Bridge\",class=\"needs_user\"} 1",
            "gitvisor_last_reconcile_timestamp_seconds 2",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn a_rejection_counts_once_and_shows_until_a_revision_is_accepted() {
        let metrics = Metrics::default();
        metrics.rejected(true);
        metrics.rejected(false);
        assert!(
            metrics
                .render()
                .contains("\ngitvisor_revisions_rejected_total 1\n")
        );
        assert!(
            metrics
                .render()
                .contains("\ngitvisor_revision_rejected 1\n")
        );
        metrics.accepted();
        assert!(
            metrics
                .render()
                .contains("\ngitvisor_revision_rejected 0\n")
        );
    }
}
