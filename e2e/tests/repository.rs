//! The repository stands on its own and tells the truth about itself: the declared
//! minimum rustc is the real one, docs/cli.md lists every command and shows the JSON
//! `doctor` really prints, and no file points to a document the repository lacks.

use std::path::{Path, PathBuf};
use std::process::Command;

use gitvisor_e2e::{gitvisor_bin, run_command, workspace_root};
use serde_json::Value;

/// Rust 1.88 stabilised let-chains (`if let … && let …`) in edition 2024.
const LET_CHAINS: (u32, u32) = (1, 88);
/// Edition 2024 itself.
const EDITION_2024: (u32, u32) = (1, 85);

fn version(text: &str) -> (u32, u32) {
    let mut parts = text.trim().split('.').map(|part| {
        part.parse::<u32>()
            .unwrap_or_else(|_| panic!("not a rust version: {text:?}"))
    });
    (
        parts.next().expect("major"),
        parts.next().unwrap_or_default(),
    )
}

/// Every file of the repository's own (not target/ or .git/), with its path.
fn repository_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("cannot read the workspace") {
            let path = entry.expect("cannot read the workspace").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if path.is_dir() {
                if name != "target" && name != ".git" {
                    walk(&path, out);
                }
            } else {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&workspace_root(), &mut out);
    out
}

#[test]
fn the_declared_rust_version_is_the_oldest_rustc_that_builds_the_workspace() {
    let root = workspace_root();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
    let declared = manifest
        .lines()
        .find_map(|line| line.trim().strip_prefix("rust-version = "))
        .expect("the workspace declares rust-version")
        .trim_matches('"');
    let declared = version(declared);

    // The code's own floor: let-chains anywhere in the workspace's Rust sources.
    let mut floor = (EDITION_2024, "edition 2024".to_string());
    for file in repository_files() {
        if file.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let chained = text.lines().any(|line| {
                let code = line.split("//").next().unwrap_or_default();
                code.contains("&& let ")
            });
            if chained && LET_CHAINS > floor.0 {
                floor = (LET_CHAINS, format!("let-chains in {}", file.display()));
            }
        }
    }

    // The dependencies' floor: the newest rust-version any locked dependency declares.
    let host = run_command({
        let mut command = Command::new("rustc");
        command.arg("-vV");
        command
    })
    .expect_code(0)
    .stdout
    .lines()
    .find_map(|line| line.strip_prefix("host: ").map(str::to_string))
    .expect("rustc -vV names the host");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let metadata = run_command({
        let mut command = Command::new(cargo);
        command
            .current_dir(&root)
            .args(["metadata", "--format-version", "1", "--locked"])
            .args(["--filter-platform", &host]);
        command
    })
    .expect_code(0);
    let metadata: Value = serde_json::from_str(&metadata.stdout).expect("cargo metadata JSON");
    let workspace: Vec<&Value> = metadata["workspace_members"]
        .as_array()
        .expect("workspace_members")
        .iter()
        .collect();
    let resolved: Vec<&str> = metadata["resolve"]["nodes"]
        .as_array()
        .expect("resolve.nodes")
        .iter()
        .filter_map(|node| node["id"].as_str())
        .collect();
    for package in metadata["packages"].as_array().expect("packages") {
        let id = &package["id"];
        if workspace.contains(&id) || !resolved.contains(&id.as_str().unwrap_or_default()) {
            continue;
        }
        if let Some(needed) = package["rust_version"].as_str() {
            let needed = version(needed);
            if needed > floor.0 {
                floor = (
                    needed,
                    format!(
                        "{} {}",
                        package["name"].as_str().unwrap_or_default(),
                        package["version"].as_str().unwrap_or_default()
                    ),
                );
            }
        }
    }

    let ((major, minor), why) = floor;
    assert_eq!(
        declared,
        (major, minor),
        "Cargo.toml's rust-version is {}.{}, but the oldest rustc that builds the workspace is \
         {major}.{minor} ({why}); set rust-version = \"{major}.{minor}\"",
        declared.0,
        declared.1
    );
}

/// The fenced block after `heading` in docs/cli.md.
fn cli_md_block(heading: &str) -> String {
    let text = std::fs::read_to_string(workspace_root().join("docs/cli.md")).expect("docs/cli.md");
    let after = &text[text
        .find(heading)
        .unwrap_or_else(|| panic!("docs/cli.md has no {heading}"))..];
    let start = after.find("```").expect("a fenced block after the heading");
    let body = &after[start..];
    let body = &body[body.find('\n').expect("fence line") + 1..];
    body[..body.find("```").expect("the block ends")].to_string()
}

#[test]
fn docs_cli_md_lists_every_command() {
    let help = run_command({
        let mut command = Command::new(gitvisor_bin());
        command.arg("--help");
        command
    })
    .expect_code(0)
    .stdout;
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter(|line| !line.starts_with("   "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .collect();
    assert!(
        commands.len() >= 10,
        "cannot read the commands from:\n{help}"
    );
    let listed = cli_md_block("## Commands");
    let missing: Vec<&&str> = commands
        .iter()
        .filter(|name| {
            !listed
                .lines()
                .any(|line| line.split_whitespace().nth(1) == Some(**name))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "docs/cli.md's command list lacks {missing:?}:\n{listed}"
    );
}

/// The JSON type of `value`, with null matching anything (a documented null stands for
/// an optional value, and a real one may be null where the example shows a value).
fn same_type(documented: &Value, actual: &Value) -> bool {
    matches!(
        (documented, actual),
        (Value::Null, _)
            | (_, Value::Null)
            | (Value::Bool(_), Value::Bool(_))
            | (Value::Number(_), Value::Number(_))
            | (Value::String(_), Value::String(_))
            | (Value::Array(_), Value::Array(_))
            | (Value::Object(_), Value::Object(_))
    )
}

/// Panics where `actual` has a key the documentation lacks, or lacks one it shows, or a
/// value of another type; arrays are compared element by element with the documented
/// first element.
fn assert_same_shape(documented: &Value, actual: &Value, at: &str) {
    assert!(
        same_type(documented, actual),
        "{at}: documented {documented}, printed {actual}"
    );
    match (documented, actual) {
        (Value::Object(documented), Value::Object(actual)) => {
            let doc_keys: Vec<&String> = documented.keys().collect();
            let keys: Vec<&String> = actual.keys().collect();
            assert_eq!(
                doc_keys, keys,
                "{at}: docs/cli.md documents the keys {doc_keys:?}, doctor prints {keys:?}"
            );
            for (key, value) in documented {
                assert_same_shape(value, &actual[key], &format!("{at}.{key}"));
            }
        }
        (Value::Array(documented), Value::Array(actual)) => {
            if let Some(example) = documented.first() {
                for (i, element) in actual.iter().enumerate() {
                    assert_same_shape(example, element, &format!("{at}[{i}]"));
                }
            }
        }
        _ => {}
    }
}

#[test]
fn docs_cli_md_shows_the_json_doctor_prints() {
    let documented: Value = serde_json::from_str(&cli_md_block("### `doctor`"))
        .expect("docs/cli.md's doctor example is not JSON");
    let printed = run_command({
        let mut command = Command::new(gitvisor_bin());
        command.args(["doctor", "--output", "json"]);
        command
    })
    .json();
    assert!(
        printed["kinds"].as_array().is_some_and(|kinds| kinds
            .iter()
            .any(|kind| !kind["facilities"].as_array().is_none_or(Vec::is_empty))),
        "doctor printed no facility to compare: {printed}"
    );
    assert_same_shape(&documented, &printed, "doctor");
}

#[test]
fn no_file_points_to_a_design_document_the_repository_lacks() {
    let root = workspace_root();
    // Spelled in pieces so this file does not match itself.
    let document = ["DESIGN", ".md"].concat();
    if root.join(&document).exists() {
        return;
    }
    let needles = [document.clone(), ["DESIGN", " §"].concat()];
    let mut found = Vec::new();
    for file in repository_files() {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            if needles.iter().any(|needle| line.contains(needle.as_str())) {
                found.push(format!(
                    "{}:{}: {}",
                    file.strip_prefix(&root).unwrap_or(&file).display(),
                    n + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(
        found.is_empty(),
        "{} is not in the repository, yet these lines point to it (say what they mean instead):\n{}",
        document,
        found.join("\n")
    );
}
