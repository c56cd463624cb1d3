//! A loader or validator finding, tied to a place in a manifest file.
//!
//! Messages quote what the manifest says (keys, values, file names), and a manifest may
//! say anything: rendering escapes every control character (and the bidirectional
//! overrides that reorder what a terminal shows) as `\u{1b}`, so no diagnostic can move
//! the cursor, recolour or rewrite a terminal or a CI log.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// One error in a revision: file, line, column, the field path (when known) and what is
/// wrong. Rendered as `file:line:col: field: message`, the shape editors and CI logs link.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
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
            write!(f, "{}: ", sanitize(field))?;
        }
        f.write_str(&sanitize(&self.message))
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
