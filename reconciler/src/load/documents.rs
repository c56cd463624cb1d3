//! Splits a YAML stream into its documents, keeping each one's line numbers.
//!
//! A line that starts with `---` or `...` (followed by nothing, a space or a tab) ends a
//! document by YAML's own rule, even inside a block scalar, so splitting on such lines is
//! exact. Each document is handed to the parser padded with the blank lines that preceded
//! it, so every position the parser reports is already a position in the file.

use std::path::Path;

use super::{Diagnostic, locate};

/// One document of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceDocument {
    /// The file's text with every line outside this document blanked.
    pub text: String,
    /// 1-based line of the document's first non-blank, non-comment line.
    pub first_line: usize,
}

impl SourceDocument {
    /// A diagnostic pointing at `field` in this document (at its first line when the field
    /// cannot be found; an empty `field` means the document as a whole).
    pub fn diagnostic(&self, file: &Path, field: &str, message: impl Into<String>) -> Diagnostic {
        let (line, column) = locate(&self.text, field).unwrap_or((self.first_line, 1));
        Diagnostic {
            file: file.to_owned(),
            line,
            column,
            field: (!field.is_empty()).then(|| field.to_owned()),
            message: message.into(),
        }
    }
}

fn is_marker(line: &str, marker: &str) -> bool {
    line.strip_prefix(marker)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r']))
}

fn has_content(line: &str) -> bool {
    let trimmed = line.trim();
    !trimmed.is_empty() && !trimmed.starts_with('#') && !trimmed.starts_with('%')
}

pub fn split(text: &str) -> Vec<SourceDocument> {
    let mut documents = Vec::new();
    let mut start = 0usize; // 0-based line where the current document starts
    let mut current: Vec<&str> = Vec::new();
    let mut flush = |start: usize, lines: &mut Vec<&str>| {
        let content = lines
            .iter()
            .position(|l| has_content(l) && !is_marker(l, "---"))
            .map(|offset| start + offset + 1)
            // `--- value`: the content is on the marker line itself.
            .or_else(|| {
                lines
                    .iter()
                    .any(|l| is_marker(l, "---") && l.len() > 3 && has_content(&l[3..]))
                    .then_some(start + 1)
            });
        if let Some(first_line) = content {
            let mut padded = "\n".repeat(start);
            for line in lines.iter() {
                padded.push_str(line);
                padded.push('\n');
            }
            documents.push(SourceDocument {
                text: padded,
                first_line,
            });
        }
        lines.clear();
    };
    for (number, line) in text.lines().enumerate() {
        if is_marker(line, "---") {
            flush(start, &mut current);
            start = number;
            current.push(line);
        } else if is_marker(line, "...") {
            flush(start, &mut current);
            start = number + 1;
        } else {
            current.push(line);
        }
    }
    flush(start, &mut current);
    documents
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_keeps_line_numbers() {
        let text = "# header\na: 1\n---\n# only a comment\n---\nb: 2\nc: |\n  x\n...\n";
        let docs = split(text);
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].first_line, 2);
        assert_eq!(docs[1].first_line, 6);
        assert!(docs[1].text.starts_with("\n\n\n\n---\nb: 2"));
        let value: serde_yaml::Value = serde_yaml::from_str(&docs[1].text).unwrap();
        assert_eq!(value["b"], serde_yaml::Value::from(2));
    }

    #[test]
    fn a_marker_needs_a_separator() {
        let docs = split("a: ---x\n---x: 1\n");
        assert_eq!(docs.len(), 1);
    }
}
