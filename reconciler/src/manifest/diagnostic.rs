//! A loader or validator finding, tied to a place in a manifest file.
//!
//! Messages quote what the manifest says (keys, values, file names), and a manifest may
//! say anything: rendering escapes every control character (and the bidirectional
//! overrides that reorder what a terminal shows) as `\u{1b}`, so no diagnostic can move
//! the cursor, recolour or rewrite a terminal or a CI log. Values are quoted cut to a few
//! dozen characters where messages are made (`model::quoted`); as a last guard, a field
//! path or message longer than [`MAX_RENDERED`] bytes (a 10 MB key in a field path, say)
//! is cut when rendered, in text and in JSON.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// The longest field path or message rendered whole.
pub const MAX_RENDERED: usize = 1024;

/// One error in a revision: file, line, column, the field path (when known) and what is
/// wrong. Rendered as `file:line:col: field: message`, the shape editors and CI logs link.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_capped_field"
    )]
    pub field: Option<String>,
    #[serde(serialize_with = "serialize_capped")]
    pub message: String,
}

/// `text`, or its first half-limit of characters and its length when it is longer than
/// [`MAX_RENDERED`].
fn capped(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= MAX_RENDERED {
        return std::borrow::Cow::Borrowed(text);
    }
    let cut = text
        .char_indices()
        .nth(MAX_RENDERED / 2)
        .map_or(text.len(), |(at, _)| at);
    std::borrow::Cow::Owned(format!("{}… ({} bytes)", &text[..cut], text.len()))
}

fn serialize_capped<S: serde::Serializer>(text: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&capped(text))
}

fn serialize_capped_field<S: serde::Serializer>(
    field: &Option<String>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match field {
        Some(field) => serializer.serialize_some(&*capped(field)),
        None => serializer.serialize_none(),
    }
}

/// `text` with every control character and bidirectional formatting character written
/// as a Rust escape (`\u{1b}`), safe to print on a terminal.
pub fn sanitize(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display().to_string();
        write!(f, "{}:{}:{}: ", sanitize(&file), self.line, self.column)?;
        if let Some(field) = &self.field {
            write!(f, "{}: ", sanitize(&capped(field)))?;
        }
        f.write_str(&sanitize(&capped(&self.message)))
    }
}

/// Every error found in a revision. A revision with any error is rejected whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RevisionErrors {
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for RevisionErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.diagnostics.len();
        writeln!(
            f,
            "revision rejected: {count} error{}",
            if count == 1 { "" } else { "s" }
        )?;
        for diagnostic in &self.diagnostics {
            writeln!(f, "  {diagnostic}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_field_or_message_is_cut_in_text_and_json() {
        let key = "k".repeat(5_000_000);
        let diagnostic = Diagnostic {
            file: PathBuf::from("a.yaml"),
            line: 1,
            column: 1,
            field: Some(format!("metadata.labels.{key}")),
            message: format!("unknown field `{key}`"),
        };
        let text = diagnostic.to_string();
        assert!(text.len() < 2 * MAX_RENDERED, "{} bytes", text.len());
        assert!(text.contains("… (5000016 bytes)"), "{}", &text[..200]);
        let json = serde_json::to_string(&diagnostic).unwrap();
        assert!(json.len() < 3 * MAX_RENDERED, "{} bytes", json.len());
    }

    #[test]
    fn control_characters_are_escaped_everywhere() {
        let diagnostic = Diagnostic {
            file: PathBuf::from("a\u{1b}[2J.yaml"),
            line: 3,
            column: 1,
            field: Some("spec.\u{1b}]0;x\u{7}".into()),
            message: "unknown field `\u{1b}[31mred`\n\u{202e}".into(),
        };
        assert_eq!(
            diagnostic.to_string(),
            "a\\u{1b}[2J.yaml:3:1: spec.\\u{1b}]0;x\\u{7}: unknown field `\\u{1b}[31mred`\\u{a}\\u{202e}"
        );
    }
}
