//! Plan rendering: text like `terraform plan` (colour only on a terminal) and the stable
//! JSON of docs/cli.md ("JSON", `plan`), whose keys keep their meaning.

use std::fmt::Write;

use serde_json::{Value, json};

use super::{Action, Change, Hold, Plan, SkipReason, Skipped};

struct Palette {
    enabled: bool,
}

impl Palette {
    fn paint(&self, code: &str, text: &str) -> String {
        if self.enabled {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    fn for_action(&self, action: Action, text: &str) -> String {
        let code = match action {
            Action::Create => "32",
            Action::Update => "33",
            Action::Replace => "35",
            Action::Delete => "31",
            Action::Conflict | Action::Unsupported => "1;31",
            Action::NoOp => "2",
        };
        self.paint(code, text)
    }
}

fn show(value: &Value) -> String {
    match value {
        Value::Null => "(unset)".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Human rendering. `color`: whether to use ANSI colours (callers pass "stdout is a
/// terminal and NO_COLOR is unset"). `verbose`: also list unchanged resources.
pub fn render_text(plan: &Plan, color: bool, verbose: bool) -> String {
    let palette = Palette { enabled: color };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Plan for host {} at revision {}\n",
        plan.host, plan.revision
    );
    for change in &plan.changes {
        if change.action == Action::NoOp && !verbose {
            continue;
        }
        render_change(&mut out, change, &palette);
    }
    let s = plan.summary();
    if !plan.has_changes() {
        let _ = writeln!(
            out,
            "No changes. {} resource{} up to date.",
            s.noop,
            if s.noop == 1 { " is" } else { "s are" }
        );
    } else {
        let _ = write!(
            out,
            "\nPlan: {} to create, {} to update, {} to replace, {} to delete, {} unchanged",
            s.create, s.update, s.replace, s.delete, s.noop
        );
        if s.conflict > 0 {
            let _ = write!(
                out,
                ", {}",
                palette.paint("1;31", &format!("{} conflict", s.conflict))
            );
        }
        if s.unsupported > 0 {
            let _ = write!(out, ", {} unsupported", s.unsupported);
        }
        out.push_str(".\n");
    }
    render_restarts(&mut out, plan, &palette);
    render_skipped(&mut out, plan, &palette);
    out
}

/// The running dependents of disruptive changes: restarted (`↻`) or kept running (`=`),
/// each with why.
fn render_restarts(out: &mut String, plan: &Plan, palette: &Palette) {
    if plan.restarts.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\nDependents of disruptive changes: {} to stop and start again, {} kept running:",
        plan.restarts.iter().filter(|r| r.restarts()).count(),
        plan.restarts.iter().filter(|r| !r.restarts()).count(),
    );
    for restart in &plan.restarts {
        let symbol = match restart.hold {
            Hold::Restart => palette.paint("36", "  ↻"),
            // Not `!`, which is a conflict's: this dependent is gitvisor's and is fine.
            Hold::KeepsRunning(_) => palette.paint("33", "  ="),
        };
        let _ = writeln!(out, "{symbol} {}", restart.id);
        let _ = writeln!(out, "      # {}", restart.reason());
    }
}

/// Only what [`render_text`] says about the changes left out (for `apply`'s report).
pub fn render_skipped_text(plan: &Plan, color: bool) -> String {
    let mut out = String::new();
    render_skipped(&mut out, plan, &Palette { enabled: color });
    out
}

/// The deletes left out, each with why, and how many other changes `--target` left out.
fn render_skipped(out: &mut String, plan: &Plan, palette: &Palette) {
    let deletes: Vec<&Skipped> = plan.skipped.iter().filter(|s| s.is_delete()).collect();
    if !deletes.is_empty() {
        let _ = writeln!(
            out,
            "\nNot deleted: {} resource{} no longer declared, kept on the host:",
            deletes.len(),
            if deletes.len() == 1 { "" } else { "s" }
        );
        for skipped in &deletes {
            let symbol = palette.paint("2", "(-)");
            let _ = writeln!(out, "{symbol} {}", skipped.change.id);
            let _ = writeln!(out, "      # {}", skipped.reason);
        }
        if deletes.iter().any(|s| s.reason.needs_prune()) {
            let _ = writeln!(
                out,
                "To delete them, run apply again with --prune (the same paths)."
            );
        }
    }
    let outside = plan
        .skipped
        .iter()
        .filter(|s| !s.is_delete() && s.reason == SkipReason::OutsideTarget)
        .filter(|s| s.change.action != Action::NoOp)
        .count();
    if outside > 0 {
        let _ = writeln!(
            out,
            "\n{outside} other change{} outside --target left out.",
            if outside == 1 { "" } else { "s" }
        );
    }
}

fn render_change(out: &mut String, change: &Change, palette: &Palette) {
    let symbol = palette.for_action(change.action, &format!("{:>3}", change.action.symbol()));
    let _ = write!(out, "{symbol} {}", change.id);
    if let Some(effect) = change.effect()
        && change.action == Action::Update
    {
        let _ = write!(out, "  ({})", format!("{effect:?}").to_lowercase());
    }
    out.push('\n');
    for reason in &change.reasons {
        let _ = writeln!(out, "      # {reason}");
    }
    let width = change
        .fields
        .iter()
        .map(|f| f.path.len())
        .max()
        .unwrap_or(0);
    for field in &change.fields {
        let line = format!(
            "      {:width$}  {} -> {}",
            field.path,
            show(&field.old),
            show(&field.new),
        );
        match list_items(&field.old, &field.new) {
            Some(items) if line.chars().count() > LINE_WIDTH => {
                let _ = writeln!(out, "      {}", field.path);
                for (mark, item) in items {
                    let _ = writeln!(out, "        {mark} {item}");
                }
            }
            _ => {
                out.push_str(&line);
                out.push('\n');
            }
        }
    }
}

/// A field line longer than this, when the field is a list, is shown one item a line.
const LINE_WIDTH: usize = 100;

/// The items of a list field, each marked: `-` only in the old list (goes), `+` only in
/// the new one (comes), ` ` in both (kept); `None` when either side is not a list (an
/// unset side counts as empty).
fn list_items(old: &Value, new: &Value) -> Option<Vec<(char, String)>> {
    let items = |value: &Value| match value {
        Value::Null => Some(Vec::new()),
        Value::Array(items) => Some(items.iter().map(show).collect::<Vec<String>>()),
        _ => None,
    };
    let (old, new) = (items(old)?, items(new)?);
    let mut marked: Vec<(char, String)> = old
        .iter()
        .map(|item| (if new.contains(item) { ' ' } else { '-' }, item.clone()))
        .collect();
    marked.extend(
        new.iter()
            .filter(|item| !old.contains(item))
            .map(|item| ('+', item.clone())),
    );
    Some(marked)
}

/// The JSON object docs/cli.md documents; more keys may be added, these keep their meaning.
pub fn render_json(plan: &Plan) -> Value {
    let changes: Vec<Value> = plan
        .changes
        .iter()
        .map(|change| {
            let mut object = json!({
                "kind": change.id.kind,
                "name": change.id.name,
                "action": change.action,
                "fields": change.fields,
            });
            if let Some(reason) = change.reason() {
                object["reason"] = json!(reason);
                object["reasons"] = json!(change.reasons);
            }
            if let Some(effect) = change.effect() {
                object["effect"] = json!(effect);
            }
            object
        })
        .collect();
    let skipped: Vec<Value> = plan
        .skipped
        .iter()
        .filter(|s| s.change.action != Action::NoOp)
        .map(|s| {
            let mut object = json!({
                "kind": s.change.id.kind,
                "name": s.change.id.name,
                "action": s.change.action,
                "reason": s.reason.to_string(),
            });
            if let (Value::Object(object), Ok(Value::Object(tag))) =
                (&mut object, serde_json::to_value(&s.reason))
            {
                object.extend(tag);
            }
            object
        })
        .collect();
    let restarts: Vec<Value> = plan
        .restarts
        .iter()
        .map(|r| {
            json!({
                "kind": r.id.kind,
                "name": r.id.name,
                "restart": r.restarts(),
                "because": r.causes.iter().map(|(id, action)| json!({
                    "kind": id.kind,
                    "name": id.name,
                    "action": action,
                })).collect::<Vec<_>>(),
                "reason": r.reason(),
            })
        })
        .collect();
    json!({
        "revision": plan.revision,
        "host": plan.host,
        "changes": changes,
        "skipped": skipped,
        "restarts": restarts,
        "summary": plan.summary(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Kind, Name, ResourceId};
    use crate::plan::{Effect, FieldChange};

    fn sample() -> Plan {
        let id = |name: &str| ResourceId::new(Kind::Bridge, Name::parse(name).unwrap());
        Plan {
            revision: "sha256:abc".into(),
            host: "h1".into(),
            changes: vec![
                Change::new(id("br0"), Action::Create).with_fields(vec![FieldChange::new(
                    "mtu",
                    Value::Null,
                    9000,
                    Effect::Hot,
                )]),
                Change::new(id("br1"), Action::Update).with_fields(vec![FieldChange::new(
                    "mtu",
                    1500,
                    9000,
                    Effect::Hot,
                )]),
                Change::new(id("br2"), Action::NoOp),
                Change::new(id("old"), Action::Delete)
                    .with_reason("no longer declared")
                    .with_reason("removes gv_0123, a half-made bridge"),
            ],
            skipped: vec![Skipped {
                change: Change::new(id("kept"), Action::Delete),
                reason: SkipReason::OtherSource {
                    declared_by: "/srv/a".into(),
                },
            }],
            restarts: Vec::new(),
            delete_after: Default::default(),
        }
    }

    #[test]
    fn text_has_symbols_and_summary_without_colour() {
        let text = render_text(&sample(), false, false);
        assert!(
            text.contains("  + Bridge/br0\n      mtu  (unset) -> 9000"),
            "{text}"
        );
        assert!(text.contains("  ~ Bridge/br1  (hot)"), "{text}");
        assert!(text.contains("  - Bridge/old"), "{text}");
        assert!(!text.contains("br2"), "{text}");
        assert!(!text.contains('\x1b'));
        assert!(
            text.contains(
                "Plan: 1 to create, 1 to update, 0 to replace, 1 to delete, 1 unchanged."
            )
        );
    }

    #[test]
    fn skipped_deletes_say_why_and_how_to_confirm() {
        let text = render_text(&sample(), false, false);
        assert!(
            text.contains(
                "Not deleted: 1 resource no longer declared, kept on the host:\n\
                 (-) Bridge/kept\n      # last declared by another source (/srv/a); \
                 apply --prune to delete it\n"
            ),
            "{text}"
        );
        assert!(text.contains("run apply again with --prune"), "{text}");
        assert!(
            text.contains("1 to delete,"),
            "only the real delete is counted: {text}"
        );
        let json = render_json(&sample());
        assert_eq!(json["skipped"][0]["name"], "kept");
        assert_eq!(json["skipped"][0]["action"], "delete");
        assert_eq!(json["skipped"][0]["skip"], "otherSource");
        assert_eq!(json["skipped"][0]["declaredBy"], "/srv/a");
        assert_eq!(json["summary"]["notPruned"], 1);
        assert!(
            json["changes"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["name"] != "kept"),
            "a skipped delete is not among the changes: {json:#}"
        );
    }

    #[test]
    fn no_prune_skip_has_no_confirmation_hint() {
        let mut plan = sample();
        plan.skipped[0].reason = SkipReason::NoPrune;
        let text = render_text(&plan, false, false);
        assert!(text.contains("# --no-prune"), "{text}");
        assert!(!text.contains("run apply again with --prune"), "{text}");
    }

    #[test]
    fn colour_only_when_asked() {
        assert!(render_text(&sample(), true, false).contains("\x1b[32m"));
    }

    #[test]
    fn json_schema_is_stable() {
        let value = render_json(&sample());
        assert_eq!(value["revision"], "sha256:abc");
        let first = &value["changes"][0];
        assert_eq!(first["kind"], "Bridge");
        assert_eq!(first["name"], "br0");
        assert_eq!(first["action"], "create");
        assert_eq!(first["fields"][0]["path"], "mtu");
        assert_eq!(first["fields"][0]["old"], Value::Null);
        assert_eq!(first["fields"][0]["new"], 9000);
        assert_eq!(value["changes"][2]["action"], "noop");
        let delete = &value["changes"][3];
        assert_eq!(
            delete["reason"],
            "no longer declared; removes gv_0123, a half-made bridge"
        );
        assert_eq!(
            delete["reasons"],
            json!(["no longer declared", "removes gv_0123, a half-made bridge"])
        );
        assert!(first.get("reason").is_none() && first.get("reasons").is_none());
    }

    #[test]
    fn text_shows_each_reason_on_its_own_line() {
        let text = render_text(&sample(), false, false);
        assert!(
            text.contains(
                "  - Bridge/old\n      # no longer declared\n      # removes gv_0123, a half-made bridge\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn no_changes_message() {
        let mut plan = sample();
        plan.changes.retain(|c| c.action == Action::NoOp);
        assert!(render_text(&plan, false, false).contains("No changes. 1 resource is up to date."));
    }

    #[test]
    fn a_long_list_is_shown_one_item_a_line_marked_gone_kept_or_new() {
        let id = ResourceId::new(Kind::Bridge, Name::parse("br-h9").unwrap());
        let rules: Vec<String> = (0..6)
            .map(|i| format!("br-h9: a rule long enough to need its own line, number {i}"))
            .collect();
        let mut plan = sample();
        plan.changes = vec![
            Change::new(id.clone(), Action::Create).with_fields(vec![
                FieldChange::new("nftables", json!([]), json!(rules), Effect::Hot),
                FieldChange::new(
                    "addresses",
                    Value::Null,
                    json!(["10.77.0.1/24"]),
                    Effect::Hot,
                ),
            ]),
            Change::new(id, Action::Update).with_fields(vec![FieldChange::new(
                "nftables",
                json!(rules[..4]),
                json!(rules[2..]),
                Effect::Hot,
            )]),
        ];
        let text = render_text(&plan, false, false);
        let mut expected = String::from("  + Bridge/br-h9\n      nftables\n");
        for rule in &rules {
            expected.push_str(&format!("        + {rule}\n"));
        }
        expected.push_str("      addresses  (unset) -> [\"10.77.0.1/24\"]\n");
        assert!(text.contains(&expected), "{text}");
        let update = format!(
            "  ~ Bridge/br-h9  (hot)\n      nftables\n        - {}\n        - {}\n          {}\n          {}\n        + {}\n        + {}\n",
            rules[0], rules[1], rules[2], rules[3], rules[4], rules[5]
        );
        assert!(text.contains(&update), "{text}");
    }

    #[test]
    fn a_dependent_kept_running_is_not_marked_as_a_conflict() {
        use crate::plan::DependentRestart;
        let bridge = ResourceId::new(Kind::Bridge, Name::parse("br0").unwrap());
        let vm = ResourceId::new(Kind::VirtualMachine, Name::parse("homevm").unwrap());
        let mut plan = sample();
        plan.restarts = vec![DependentRestart {
            id: vm,
            causes: vec![(bridge, Action::Update)],
            hold: Hold::KeepsRunning("its driver cannot stop and start its objects".into()),
        }];
        let text = render_text(&plan, false, false);
        assert!(
            text.contains(
                "  = VirtualMachine/homevm\n      # keeps running while Bridge/br0 is restarted"
            ),
            "{text}"
        );
        assert!(!text.contains("! VirtualMachine"), "{text}");
    }
}
