//! How a value from a manifest is echoed in an error message: quoted and escaped like
//! `{:?}`, and cut after [`QUOTED_MAX`] characters with its length, so a 10 MB name is
//! not printed back whole (a terminal, a CI log, the controller's event log and every
//! `status` reply would carry it).

use std::fmt;

/// Characters of a value shown before it is cut.
pub const QUOTED_MAX: usize = 64;

/// `text` as an error message shows it: `"abc"`, or `"abc…"… (N bytes)` when long.
pub fn quoted(text: &str) -> Quoted<'_> {
    Quoted(text)
}

pub struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(QUOTED_MAX) {
            None => write!(f, "{:?}", self.0),
            Some((cut, _)) => write!(f, "{:?}… ({} bytes)", &self.0[..cut], self.0.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_quoted_whole_and_long_ones_are_cut_with_their_length() {
        assert_eq!(quoted("br0").to_string(), "\"br0\"");
        assert_eq!(quoted("a\"b").to_string(), "\"a\\\"b\"");
        let long = "é".repeat(10_000);
        let shown = quoted(&long).to_string();
        assert_eq!(
            shown,
            format!("{:?}… (20000 bytes)", "é".repeat(QUOTED_MAX))
        );
    }
}
