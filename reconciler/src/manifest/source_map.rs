//! Finds where a field path (`spec.disks[0].volume`) was written in a parsed document.
//!
//! serde reports positions for what it rejects itself; checks that span documents
//! (references, duplicates, cycles) run after deserialisation and use this to point at the
//! exact line and column. Keys that are not plain identifiers are written `["…"]`
//! (`metadata.annotations["gitvisor.dev/adopt"]`), as [`render_key`] renders them.

use super::tree::{NodeKind, Position, Tree};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

/// Whether a key can be written bare in a field path.
fn is_plain_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Appends `key` to a field path: `.key`, or `["key"]` when it is not a plain identifier.
pub fn render_key(path: &mut String, key: &str) {
    if is_plain_key(key) {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key);
    } else {
        path.push_str(&format!("[{key:?}]"));
    }
}

/// Splits `spec.disks[0].volume` or `a["b.c"]` into segments.
fn parse_path(path: &str) -> Vec<Segment> {
    let mut segments = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("[\"") {
            // A quoted key: up to the closing `"]`, with `\"` and `\\` escapes.
            let mut key = String::new();
            let mut chars = after.char_indices();
            let mut end = after.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            key.push(escaped);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => key.push(c),
                }
            }
            segments.push(Segment::Key(key));
            rest = after[end..].strip_prefix(']').unwrap_or(&after[end..]);
        } else if let Some(after) = rest.strip_prefix('[') {
            let close = after.find(']').unwrap_or(after.len());
            if let Ok(index) = after[..close].parse() {
                segments.push(Segment::Index(index));
            }
            rest = after.get(close + 1..).unwrap_or("");
        } else if let Some(after) = rest.strip_prefix('.') {
            rest = after;
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            segments.push(Segment::Key(rest[..end].to_owned()));
            rest = &rest[end..];
        }
    }
    segments
}

/// Where the value at `path` was written, or, when it is absent, the key of its deepest
/// present ancestor (where the missing field would go). `key`: point at the key of the
/// final mapping entry instead of its value.
pub fn locate(tree: &Tree, path: &str, key: bool) -> Position {
    let mut node = tree.root();
    let mut key_at: Option<Position> = None;
    let segments = parse_path(path);
    for segment in &segments {
        let resolved = tree.resolve(node);
        let next = match (segment, &tree.node(resolved).kind) {
            (Segment::Key(name), NodeKind::Mapping(_)) => tree
                .get(resolved, name)
                .map(|entry| (entry.value, Some(tree.node(entry.key).at))),
            (Segment::Index(index), NodeKind::Sequence(items)) => {
                items.get(*index).map(|&item| (item, None))
            }
            _ => None,
        };
        match next {
            Some((child, child_key)) => {
                node = child;
                key_at = child_key;
            }
            None => return key_at.unwrap_or(tree.node(node).at),
        }
    }
    match key_at {
        Some(at) if key => at,
        _ => tree.node(node).at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::tree::parse;

    const DOC: &str = "\
apiVersion: v
kind: VirtualMachine
metadata:
  name: vm1
  annotations: {gitvisor.dev/adopt: 'yes'}
spec:
  disks:
    - volume: root
    - path: /img
      readOnly: true
  networks: [{bridge: br0}]
";

    fn at(path: &str, key: bool) -> (usize, usize) {
        let tree = parse(DOC, 1).tree.unwrap();
        let position = locate(&tree, path, key);
        (position.line, position.column)
    }

    #[test]
    fn finds_nested_values() {
        assert_eq!(at("metadata.name", false), (4, 9));
        assert_eq!(at("spec.disks[0].volume", false), (8, 15));
        assert_eq!(at("spec.disks[1].readOnly", false), (10, 17));
        assert_eq!(at("spec.networks[0].bridge", false), (11, 23));
        assert_eq!(at("spec.disks[1].readOnly", true), (10, 7));
        assert_eq!(
            at("metadata.annotations[\"gitvisor.dev/adopt\"]", false),
            (5, 37)
        );
        assert_eq!(
            at("metadata.annotations[\"gitvisor.dev/adopt\"]", true),
            (5, 17)
        );
    }

    #[test]
    fn falls_back_to_the_deepest_present_ancestor() {
        assert_eq!(at("spec.disks[1].volume", false), (9, 7));
        assert_eq!(at("spec.networks[0].mac", false), (11, 14));
        assert_eq!(at("spec.cpus", false), (6, 1));
    }

    #[test]
    fn renders_and_parses_quoted_keys() {
        let mut path = String::from("metadata");
        render_key(&mut path, "annotations");
        render_key(&mut path, "gitvisor.dev/adopt");
        assert_eq!(path, "metadata.annotations[\"gitvisor.dev/adopt\"]");
        assert_eq!(
            parse_path(&path),
            vec![
                Segment::Key("metadata".into()),
                Segment::Key("annotations".into()),
                Segment::Key("gitvisor.dev/adopt".into())
            ]
        );
    }
}
