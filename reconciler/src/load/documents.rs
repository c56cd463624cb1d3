//! Splits a YAML stream into its documents, as slices of the file's text.
//!
//! A line that starts with `---` or `...` (followed by nothing, a space or a tab) ends a
//! document by YAML's own rule, even inside a block scalar, so splitting on such lines is
//! exact. Each document is parsed on its own (a syntax error in one does not hide the
//! errors of the next), from a slice of the file plus the line it starts on, so splitting
//! and parsing are linear in the size of the file however many documents it holds.

use std::ops::Range;

/// One document of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentSlice {
    /// Byte range of the document in the file's text; it starts at the start of a line.
    pub range: Range<usize>,
    /// 1-based line the slice starts on.
    pub start_line: usize,
    /// 1-based line of the document's first non-blank, non-comment line.
    pub first_line: usize,
}

fn is_marker(line: &str, marker: &str) -> bool {
    line.strip_prefix(marker)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r']))
}

fn has_content(line: &str) -> bool {
    let trimmed = line.trim();
    !trimmed.is_empty() && !trimmed.starts_with('#') && !trimmed.starts_with('%')
}

/// The documents of `text` that have content (comment-only parts are skipped).
pub fn split(text: &str) -> Vec<DocumentSlice> {
    let mut documents = Vec::new();
    // The document being collected: its start (byte, line) and its first content line.
    let mut start = (0usize, 1usize);
    let mut first_content: Option<usize> = None;
    let mut offset = 0usize;
    let mut flush = |start: (usize, usize), end: usize, first: Option<usize>| {
        if let Some(first_line) = first {
            documents.push(DocumentSlice {
                range: start.0..end,
                start_line: start.1,
                first_line,
            });
        }
    };
    for (index, raw) in text.split_inclusive('\n').enumerate() {
        let number = index + 1;
        let line = raw.trim_end_matches(['\n', '\r']);
        if is_marker(line, "---") {
            flush(start, offset, first_content);
            start = (offset, number);
            // `--- value`: the content is on the marker line itself.
            first_content = has_content(&line[3..]).then_some(number);
        } else if is_marker(line, "...") {
            flush(start, offset, first_content);
            start = (offset + raw.len(), number + 1);
            first_content = None;
        } else if first_content.is_none() && has_content(line) {
            first_content = Some(number);
        }
        offset += raw.len();
    }
    flush(start, text.len(), first_content);
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
        assert_eq!(docs[0].start_line, 1);
        assert_eq!(docs[1].first_line, 6);
        assert_eq!(docs[1].start_line, 5);
        assert_eq!(&text[docs[1].range.clone()], "---\nb: 2\nc: |\n  x\n");
    }

    #[test]
    fn a_marker_needs_a_separator() {
        let docs = split("a: ---x\n---x: 1\n");
        assert_eq!(docs.len(), 1);
    }

    #[test]
    fn content_on_the_marker_line_counts() {
        let docs = split("--- {a: 1}\n");
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].first_line, 1);
    }

    #[test]
    fn crlf_lines_split_too() {
        let docs = split("a: 1\r\n---\r\nb: 2\r\n");
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].first_line, 3);
    }
}
