//! How errors leave the process: one paragraph on stderr, or with `--output json` one
//! JSON object on stdout (`{"error": "...", "diagnostics": [...]}`), and the exit code.

use std::ffi::OsString;
use std::process::ExitCode;

use serde_json::json;

use super::{EXIT_FAILURE, EXIT_USAGE, OutputFormat, output};
use crate::load::RevisionErrors;

/// A command's error: exit 1.
pub fn report(err: &anyhow::Error, format: OutputFormat) -> ExitCode {
    let revision = err
        .chain()
        .find_map(|cause| cause.downcast_ref::<RevisionErrors>());
    match format {
        OutputFormat::Json => {
            let (message, diagnostics) = match revision {
                Some(errors) => (
                    headline(errors),
                    serde_json::to_value(&errors.diagnostics).unwrap_or_default(),
                ),
                None => (format!("{err:#}"), json!([])),
            };
            json_error(&message, diagnostics);
        }
        OutputFormat::Text => match revision {
            Some(errors) => output::stderr(&errors.to_string()),
            None => output::stderr(&format!("error: {err:#}\n")),
        },
    }
    ExitCode::from(EXIT_FAILURE)
}

/// A command line clap rejected: exit 64 (help and version requests: 0).
pub fn usage(err: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    ) {
        // Printing help to a closed pipe fails; there is nothing left to say.
        let _ = err.print();
        return ExitCode::SUCCESS;
    }
    if json_requested(std::env::args_os().skip(1)) {
        let text = err.render().to_string();
        json_error(text.trim_end(), json!([]));
    } else {
        let _ = err.print();
    }
    ExitCode::from(EXIT_USAGE)
}

/// `revision rejected: N errors`: the first line of the rendering.
fn headline(errors: &RevisionErrors) -> String {
    errors
        .to_string()
        .lines()
        .next()
        .unwrap_or("revision rejected")
        .to_owned()
}

fn json_error(message: &str, diagnostics: serde_json::Value) {
    let text = format!(
        "{}\n",
        json!({ "error": message, "diagnostics": diagnostics })
    );
    if output::stdout(&text).is_err() {
        output::stderr(&text);
    }
}

/// Whether a command line that did not parse asked for `--output json` anyway.
fn json_requested(args: impl Iterator<Item = OsString>) -> bool {
    let args: Vec<String> = args.map(|a| a.to_string_lossy().into_owned()).collect();
    args.iter().enumerate().any(|(i, arg)| {
        matches!(arg.as_str(), "--output=json" | "-ojson" | "-o=json")
            || (matches!(arg.as_str(), "--output" | "-o")
                && args.get(i + 1).is_some_and(|next| next == "json"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> impl Iterator<Item = OsString> {
        line.split_whitespace()
            .map(OsString::from)
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn json_is_recognised_in_every_spelling() {
        for line in [
            "plan x --output json --bogus",
            "plan -o json x",
            "plan --output=json",
            "plan -ojson",
        ] {
            assert!(json_requested(args(line)), "{line}");
        }
        for line in ["plan x", "plan --output text json", "plan json"] {
            assert!(!json_requested(args(line)), "{line}");
        }
    }
}
