//! Finds where a field path (`spec.disks[0].volume`) was written in a YAML document.
//!
//! serde reports positions for what it rejects itself; checks that span documents
//! (references, duplicates, cycles) run after deserialisation and use this to point at the
//! exact line and column. It re-parses one document with an event parser, so it is only
//! used on the error path.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

/// Splits `spec.disks[0].volume` into segments.
fn parse_path(path: &str) -> Vec<Segment> {
    let mut segments = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            segments.push(Segment::Key(key.to_owned()));
        }
        while let Some(close) = rest.find(']') {
            if let Ok(index) = rest[1..close].parse() {
                segments.push(Segment::Index(index));
            }
            rest = &rest[close + 1..];
        }
    }
    segments
}

enum Frame {
    /// `start`: the mapping's own path, placed at its first key (the parser marks a block
    /// mapping at its first `:`).
    Map {
        key: Option<String>,
        start: Option<Vec<Segment>>,
    },
    Seq {
        index: usize,
    },
}

struct Locator {
    target: Vec<Segment>,
    frames: Vec<Frame>,
    path: Vec<Segment>,
    /// The deepest prefix of the target seen so far, with its position.
    best: Option<(usize, Marker)>,
    /// Point at the key of the target rather than its value.
    prefer_key: bool,
}

impl Locator {
    /// The path of a node starting now, or None when the event is a mapping key.
    fn node_path(&mut self) -> Option<Vec<Segment>> {
        let mut path = self.path.clone();
        match self.frames.last_mut() {
            None => {}
            Some(Frame::Map { key: None, .. }) => return None,
            Some(Frame::Map { key: Some(k), .. }) => path.push(Segment::Key(k.clone())),
            Some(Frame::Seq { index }) => path.push(Segment::Index(*index)),
        }
        Some(path)
    }

    /// Records `mark` for `path` if it is a prefix of the target; a value's own position
    /// (`overwrite`) wins over its key's.
    fn note(&mut self, path: &[Segment], mark: Marker, overwrite: bool) {
        let depth = path.len();
        if depth <= self.target.len()
            && self.target[..depth] == *path
            && self
                .best
                .is_none_or(|(d, _)| depth > d || (overwrite && !self.prefer_key && depth == d))
        {
            self.best = Some((depth, mark));
        }
    }

    /// A value finished: advance the parent frame.
    fn finish_value(&mut self) {
        match self.frames.last_mut() {
            Some(Frame::Map { key, .. }) => *key = None,
            Some(Frame::Seq { index }) => *index += 1,
            None => {}
        }
    }
}

impl MarkedEventReceiver for Locator {
    fn on_event(&mut self, event: Event, mark: Marker) {
        match event {
            Event::Scalar(value, ..) => match self.node_path() {
                None => {
                    let mut start = None;
                    if let Some(Frame::Map { key, start: s }) = self.frames.last_mut() {
                        *key = Some(value.clone());
                        start = s.take();
                    }
                    if let Some(start) = start {
                        self.note(&start, mark, false);
                    }
                    // The key's own position is a fallback for the value's.
                    let mut path = self.path.clone();
                    path.push(Segment::Key(value));
                    self.note(&path, mark, false);
                }
                Some(path) => {
                    self.note(&path, mark, true);
                    self.finish_value();
                }
            },
            Event::Alias(_) => {
                if let Some(path) = self.node_path() {
                    self.note(&path, mark, true);
                }
                self.finish_value();
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let path = self.node_path().unwrap_or_else(|| self.path.clone());
                let frame = if matches!(event, Event::MappingStart(..)) {
                    Frame::Map {
                        key: None,
                        start: Some(path.clone()),
                    }
                } else {
                    self.note(&path, mark, false);
                    Frame::Seq { index: 0 }
                };
                if !self.frames.is_empty() {
                    self.path = path;
                }
                self.frames.push(frame);
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.frames.pop();
                if !self.frames.is_empty() {
                    self.path.pop();
                }
                self.finish_value();
            }
            _ => {}
        }
    }
}

/// Line and column (1-based) of the value at `path` in `document`, or of its deepest
/// ancestor that is present (a defaulted field points at its parent).
pub fn locate(document: &str, path: &str) -> Option<(usize, usize)> {
    run(document, path, false)
}

/// Like [`locate`], but a mapping entry is pointed at by its key (for unknown fields).
pub fn locate_key(document: &str, path: &str) -> Option<(usize, usize)> {
    run(document, path, true)
}

fn run(document: &str, path: &str, prefer_key: bool) -> Option<(usize, usize)> {
    let mut locator = Locator {
        target: parse_path(path),
        frames: Vec::new(),
        path: Vec::new(),
        best: None,
        prefer_key,
    };
    // A syntax error stops the parser; what was seen before it still counts.
    let _ = Parser::new_from_str(document).load(&mut locator, false);
    locator.best.map(|(_, m)| (m.line(), m.col() + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
apiVersion: v
kind: VirtualMachine
metadata:
  name: vm1
spec:
  disks:
    - volume: root
    - path: /img
      readOnly: true
  networks: [{bridge: br0}]
";

    #[test]
    fn finds_nested_values() {
        assert_eq!(locate(DOC, "metadata.name"), Some((4, 9)));
        assert_eq!(locate(DOC, "spec.disks[0].volume"), Some((7, 15)));
        assert_eq!(locate(DOC, "spec.disks[1].readOnly"), Some((9, 17)));
        assert_eq!(locate(DOC, "spec.networks[0].bridge"), Some((10, 23)));
        assert_eq!(locate_key(DOC, "spec.disks[1].readOnly"), Some((9, 7)));
    }

    #[test]
    fn falls_back_to_the_deepest_present_ancestor() {
        assert_eq!(locate(DOC, "spec.disks[1].volume"), Some((8, 7)));
        assert_eq!(locate(DOC, "spec.networks[0].mac"), Some((10, 15)));
        assert_eq!(locate(DOC, "spec.cpus"), Some((5, 1)));
    }
}
