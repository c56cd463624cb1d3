//! Text tables whose columns fit what they hold.
//!
//! A fixed `{:<25}` column lets a longer value (a 40-character commit SHA, a long name)
//! push every later cell of its row to the right, under the wrong header. Here each
//! column is as wide as its widest cell (at least its minimum, so short tables keep their
//! familiar shape), and the last column is never padded.

/// One column: its header and the width it has even when its cells are shorter.
pub struct Column {
    pub header: &'static str,
    pub min_width: usize,
}

impl Column {
    /// A column headed `header`, at least `min_width` characters wide.
    pub const fn new(header: &'static str, min_width: usize) -> Self {
        Column { header, min_width }
    }
}

/// `header` then `rows`, each line ending in `\n`, cells separated by at least one
/// space; trailing spaces are trimmed.
pub fn render(columns: &[Column], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, column)| {
            rows.iter()
                .filter_map(|row| row.get(i))
                .map(|cell| cell.chars().count())
                .chain([column.header.chars().count(), column.min_width])
                .max()
                .unwrap_or_default()
        })
        .collect();
    let header: Vec<String> = columns.iter().map(|c| c.header.to_owned()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                let width = widths.get(i).copied().unwrap_or_default();
                let pad = width.saturating_sub(cell.chars().count()) + 1;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A revision as a table shows it: a git commit's 40 (or 64) hex digits cut to 12, as
/// `git log --oneline` does; other ids (`sha256:` and 16 digits for a directory) whole.
pub fn short_revision(revision: &str) -> &str {
    let is_commit =
        matches!(revision.len(), 40 | 64) && revision.bytes().all(|b| b.is_ascii_hexdigit());
    if is_commit { &revision[..12] } else { revision }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_cell_widens_its_column_instead_of_shifting_the_row() {
        let columns = [
            Column::new("NAME", 6),
            Column::new("REVISION", 10),
            Column::new("RETRY", 5),
            Column::new("MESSAGE", 0),
        ];
        let rows = vec![
            vec![
                "a".into(),
                "0123456789abcdef".into(),
                "-".into(),
                "ok".into(),
            ],
            vec!["bb".into(), "r1".into(), "#2 in 4s".into(), "".into()],
        ];
        assert_eq!(
            render(&columns, &rows),
            "NAME   REVISION         RETRY    MESSAGE\n\
             a      0123456789abcdef -        ok\n\
             bb     r1               #2 in 4s\n"
        );
    }

    #[test]
    fn commits_are_cut_to_twelve_digits_and_other_ids_are_whole() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(short_revision(sha), "0123456789ab");
        assert_eq!(
            short_revision("sha256:022c003014abb1ab"),
            "sha256:022c003014abb1ab"
        );
        assert_eq!(short_revision("-"), "-");
    }
}
