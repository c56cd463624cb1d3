//! One YAML document as a tree of nodes that remember where they were written.
//!
//! The tree is built from the event parser (yaml-rust2) in one pass, which is also where
//! the input rules that a plain YAML loader does not enforce live, each failing fast at
//! the node that breaks it:
//! - nesting deeper than [`MAX_DEPTH`] (counting what aliases bring in) stops the parse;
//! - aliases are kept as links, and the number of nodes they would expand to is counted
//!   as they appear: past [`MAX_EXPANDED_NODES`] (an alias bomb) the parse stops at the
//!   alias that crossed the limit;
//! - the nodes written in the document are counted apart from what aliases bring: past
//!   [`MAX_DOCUMENT_NODES`] the parse stops with its own message (a document with 300 000
//!   labels is large, not an alias bomb);
//! - a duplicate key is reported at the duplicate, and only the first entry is kept;
//! - tags (`!!int "1500"`) are not supported: reported, and the node is dropped so its
//!   value does not cause a second, confusing error;
//! - keys must be scalars.
//!
//! Positions are file positions: the caller passes the line the document starts on.

use std::collections::{HashMap, HashSet};
use std::fmt;

use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use super::source_map::render_key;

/// Deepest nesting of mappings and sequences a manifest may use (a real one needs < 10).
pub const MAX_DEPTH: usize = 64;
/// Most nodes the aliases of a document may bring in, once every alias is followed.
pub const MAX_EXPANDED_NODES: usize = 100_000;
/// Most nodes (keys, values, sequences and mappings) written in one document: room for
/// several hundred thousand labels, while a 16 MiB file of `[x,x,x,…]` stops at a tree
/// of about 100 MB.
pub const MAX_DOCUMENT_NODES: usize = 1_000_000;

/// 1-based line and column (in characters) in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

pub type NodeId = usize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    /// `plain`: written without quotes or block style, so it may be null, a bool or a
    /// number; anything else is always a string.
    Scalar {
        text: String,
        plain: bool,
    },
    Sequence(Vec<NodeId>),
    /// Entries in written order; keys are scalar nodes with unique text.
    Mapping(Vec<Entry>),
    /// A link to an anchored node that was complete when the alias appeared.
    Alias(NodeId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub key: NodeId,
    pub value: NodeId,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub at: Position,
    pub kind: NodeKind,
}

/// A problem found while building the tree. `fatal` ones stop the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeError {
    pub at: Position,
    /// The field path where it was found (empty: the document).
    pub path: String,
    pub message: String,
}

/// A parsed document: nodes in an arena, plus the nodes that were dropped while building
/// (tagged nodes), which readers treat as absent.
#[derive(Debug, Clone)]
pub struct Tree {
    nodes: Vec<Node>,
    root: NodeId,
    dropped: HashSet<NodeId>,
}

impl Tree {
    pub fn root(&self) -> NodeId {
        self.root
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id]
    }

    /// Follows an alias to the node it names.
    pub fn resolve(&self, id: NodeId) -> NodeId {
        match self.nodes[id].kind {
            NodeKind::Alias(target) => target,
            _ => id,
        }
    }

    /// Whether the builder dropped this node (or the node an alias names).
    pub fn dropped(&self, id: NodeId) -> bool {
        self.dropped.contains(&id) || self.dropped.contains(&self.resolve(id))
    }

    /// The text of a scalar node.
    pub fn scalar(&self, id: NodeId) -> Option<&str> {
        match &self.nodes[self.resolve(id)].kind {
            NodeKind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// The entry of `mapping` whose key is `key`.
    pub fn get(&self, mapping: NodeId, key: &str) -> Option<Entry> {
        match &self.nodes[self.resolve(mapping)].kind {
            NodeKind::Mapping(entries) => entries
                .iter()
                .find(|e| self.scalar(e.key) == Some(key) && !self.dropped(e.value))
                .copied(),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PathSegment {
    Key(String),
    Index(usize),
}

/// A collection being built.
struct Open {
    id: NodeId,
    /// Mapping: the key read, waiting for its value.
    pending_key: Option<NodeId>,
    keys: HashSet<String>,
    anchor: usize,
    /// This collection's place in its parent, for error paths.
    segment: Option<PathSegment>,
}

struct Builder {
    nodes: Vec<Node>,
    dropped: HashSet<NodeId>,
    open: Vec<Open>,
    /// Anchor id → the complete node it names.
    anchors: HashMap<usize, NodeId>,
    /// Levels of collections in each complete node (0 for a scalar), following aliases.
    heights: Vec<usize>,
    /// Nodes written in the document.
    written: usize,
    /// Nodes the aliases bring in.
    expanded: usize,
    /// Per node: how many nodes it expands to, following aliases.
    sizes: Vec<usize>,
    line_offset: usize,
    warnings: Vec<TreeError>,
    root: Option<NodeId>,
    /// A collection started too deep; reported at the next event, whose position is
    /// where it was written (a block mapping's own start is only known at its first key).
    too_deep: bool,
}

fn tag_text(tag: &Tag) -> String {
    if tag.handle == "tag:yaml.org,2002:" {
        format!("!!{}", tag.suffix)
    } else {
        format!("{}{}", tag.handle, tag.suffix)
    }
}

impl Builder {
    fn position(&self, mark: Marker) -> Position {
        Position {
            line: mark.line() + self.line_offset,
            column: mark.col() + 1,
        }
    }

    fn path(&self) -> String {
        let mut out = String::new();
        let next = self.next_segment();
        let segments = self
            .open
            .iter()
            .filter_map(|o| o.segment.as_ref())
            .chain(next.as_ref());
        for segment in segments {
            match segment {
                PathSegment::Key(key) => render_key(&mut out, key),
                PathSegment::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        out
    }

    /// Where the next node goes in the innermost open collection.
    fn next_segment(&self) -> Option<PathSegment> {
        let open = self.open.last()?;
        match &self.nodes[open.id].kind {
            NodeKind::Sequence(items) => Some(PathSegment::Index(items.len())),
            NodeKind::Mapping(_) => open.pending_key.and_then(|k| match &self.nodes[k].kind {
                NodeKind::Scalar { text, .. } => Some(PathSegment::Key(text.clone())),
                _ => None,
            }),
            _ => None,
        }
    }

    fn error(&self, at: Position, message: String) -> TreeError {
        TreeError {
            at,
            path: self.path(),
            message,
        }
    }

    fn add(&mut self, at: Position, kind: NodeKind, height: usize, size: usize) -> NodeId {
        self.nodes.push(Node { at, kind });
        self.heights.push(height);
        self.sizes.push(size);
        self.nodes.len() - 1
    }

    /// Whether the next node would be a mapping key.
    fn expecting_key(&self) -> bool {
        self.open.last().is_some_and(|o| {
            matches!(self.nodes[o.id].kind, NodeKind::Mapping(_)) && o.pending_key.is_none()
        })
    }

    /// Places a complete node into its parent (or makes it the root).
    fn place(&mut self, id: NodeId, tag: Option<&Tag>) -> Result<(), TreeError> {
        if let Some(tag) = tag {
            let at = self.nodes[id].at;
            let warning = self.error(
                at,
                format!(
                    "YAML tags are not supported (`{}`): write the plain value without it (`mtu: 1500`, not `mtu: !!int \"1500\"`)",
                    tag_text(tag)
                ),
            );
            self.warnings.push(warning);
            self.dropped.insert(id);
        }
        let Some(open) = self.open.last() else {
            self.root = Some(id);
            return Ok(());
        };
        let parent = open.id;
        let pending = open.pending_key;
        let is_mapping = matches!(self.nodes[parent].kind, NodeKind::Mapping(_));
        if !is_mapping {
            if let NodeKind::Sequence(items) = &mut self.nodes[parent].kind {
                items.push(id);
            }
            return Ok(());
        }
        match pending {
            Some(key) => {
                if let Some(open) = self.open.last_mut() {
                    open.pending_key = None;
                }
                if !self.dropped.contains(&key)
                    && let NodeKind::Mapping(entries) = &mut self.nodes[parent].kind
                {
                    entries.push(Entry { key, value: id });
                }
            }
            None => {
                let at = self.nodes[id].at;
                let NodeKind::Scalar { text, .. } = &self.nodes[id].kind else {
                    return Err(self.error(
                        at,
                        "a mapping key must be a plain string, not a sequence, mapping or alias"
                            .into(),
                    ));
                };
                let key = text.clone();
                let fresh = self
                    .open
                    .last_mut()
                    .is_some_and(|open| open.keys.insert(key.clone()));
                if !fresh {
                    // The entry is kept out of the mapping, so readers see the first.
                    self.dropped.insert(id);
                    let mut path = self.path();
                    render_key(&mut path, &key);
                    self.warnings.push(TreeError {
                        at,
                        path,
                        message: format!(
                            "duplicate key `{key}`: it is already set earlier in this mapping"
                        ),
                    });
                }
                if let Some(open) = self.open.last_mut() {
                    open.pending_key = Some(id);
                }
            }
        }
        Ok(())
    }

    fn check_depth(&self, at: Position, height: usize) -> Result<(), TreeError> {
        if self.too_deep || self.open.len() + height > MAX_DEPTH {
            return Err(self.error(at, too_deep()));
        }
        Ok(())
    }

    /// Counts one node written in the document.
    fn count(&mut self, at: Position) -> Result<(), TreeError> {
        self.written += 1;
        if self.written > MAX_DOCUMENT_NODES {
            return Err(self.error(
                at,
                format!(
                    "this document has more than {MAX_DOCUMENT_NODES} keys, values and collections: split it into several documents"
                ),
            ));
        }
        Ok(())
    }

    /// Counts the `nodes` an alias brings in.
    fn count_alias(&mut self, at: Position, nodes: usize) -> Result<(), TreeError> {
        self.expanded = self.expanded.saturating_add(nodes);
        if self.expanded > MAX_EXPANDED_NODES {
            return Err(self.error(
                at,
                format!(
                    "the aliases of this document expand to more than {MAX_EXPANDED_NODES} nodes (an alias bomb?)"
                ),
            ));
        }
        Ok(())
    }

    fn on_event(&mut self, event: Event, mark: Marker) -> Result<(), TreeError> {
        let at = self.position(mark);
        let sequence = matches!(event, Event::SequenceStart(..));
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                self.count(at)?;
                self.check_depth(at, 0)?;
                let plain = matches!(style, TScalarStyle::Plain);
                let id = self.add(at, NodeKind::Scalar { text, plain }, 0, 1);
                if anchor != 0 {
                    self.anchors.insert(anchor, id);
                }
                self.place(id, tag.as_ref())?;
            }
            Event::Alias(anchor) => {
                let Some(&target) = self.anchors.get(&anchor) else {
                    return Err(self.error(
                        at,
                        "an alias refers to its own anchor (a recursive alias)".into(),
                    ));
                };
                if self.expecting_key() {
                    return Err(self.error(at, "an alias cannot be a mapping key".into()));
                }
                self.count(at)?;
                self.count_alias(at, self.sizes[target])?;
                self.check_depth(at, self.heights[target])?;
                let (height, size) = (self.heights[target], self.sizes[target]);
                let id = self.add(at, NodeKind::Alias(target), height, size);
                self.place(id, None)?;
            }
            Event::SequenceStart(anchor, tag) | Event::MappingStart(anchor, tag) => {
                self.count(at)?;
                self.check_depth(at, 0)?;
                self.too_deep = self.open.len() + 1 > MAX_DEPTH;
                if self.expecting_key() {
                    return Err(self.error(
                        at,
                        "a mapping key must be a plain string, not a sequence, mapping or alias"
                            .into(),
                    ));
                }
                let kind = if sequence {
                    NodeKind::Sequence(Vec::new())
                } else {
                    NodeKind::Mapping(Vec::new())
                };
                let segment = self.next_segment();
                let id = self.add(at, kind, 1, 1);
                if let Some(tag) = tag {
                    let warning = self.error(
                        at,
                        format!(
                            "YAML tags are not supported (`{}`): write the value without a tag",
                            tag_text(&tag)
                        ),
                    );
                    self.warnings.push(warning);
                    self.dropped.insert(id);
                }
                self.open.push(Open {
                    id,
                    pending_key: None,
                    keys: HashSet::new(),
                    anchor,
                    segment,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                self.check_depth(at, 0)?;
                let Some(open) = self.open.pop() else {
                    return Ok(());
                };
                let id = open.id;
                let children: Vec<NodeId> = match &self.nodes[id].kind {
                    NodeKind::Sequence(items) => items.clone(),
                    NodeKind::Mapping(entries) => {
                        entries.iter().flat_map(|e| [e.key, e.value]).collect()
                    }
                    _ => Vec::new(),
                };
                self.heights[id] = 1 + children.iter().map(|&c| self.heights[c]).max().unwrap_or(0);
                self.sizes[id] = children
                    .iter()
                    .fold(1usize, |sum, &c| sum.saturating_add(self.sizes[c]));
                // A block mapping is marked at its first `:`; its first key is where it
                // was written.
                if let NodeKind::Mapping(entries) = &self.nodes[id].kind
                    && let Some(first) = entries.first()
                {
                    let key_at = self.nodes[first.key].at;
                    if key_at < self.nodes[id].at {
                        self.nodes[id].at = key_at;
                    }
                }
                if open.anchor != 0 {
                    self.anchors.insert(open.anchor, id);
                }
                // A tag on a collection was reported (and the node dropped) at its start.
                self.place(id, None)?;
            }
            Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd
            | Event::Nothing => {}
        }
        Ok(())
    }
}

/// The result of parsing one document: the tree (None after a fatal error), and every
/// problem found, the fatal one last.
pub struct Parsed {
    pub tree: Option<Tree>,
    pub errors: Vec<TreeError>,
}

/// Parses one YAML document that starts on line `first_line` of its file.
pub fn parse(text: &str, first_line: usize) -> Parsed {
    let mut builder = Builder {
        nodes: Vec::new(),
        dropped: HashSet::new(),
        open: Vec::new(),
        anchors: HashMap::new(),
        heights: Vec::new(),
        written: 0,
        expanded: 0,
        sizes: Vec::new(),
        line_offset: first_line - 1,
        warnings: Vec::new(),
        root: None,
        too_deep: false,
    };
    let mut parser = Parser::new_from_str(text);
    let fatal = loop {
        match parser.next_token() {
            Ok((Event::StreamEnd, _)) => break None,
            Ok((Event::DocumentStart, mark)) if builder.root.is_some() => {
                break Some(TreeError {
                    at: builder.position(mark),
                    path: String::new(),
                    message: "a second document in one part of the file".into(),
                });
            }
            Ok((event, mark)) => {
                if let Err(err) = builder.on_event(event, mark) {
                    break Some(err);
                }
            }
            Err(err) => {
                let mark = *err.marker();
                let message = scan_message(err.info());
                break Some(TreeError {
                    at: builder.position(mark),
                    path: String::new(),
                    message,
                });
            }
        }
    };
    let mut errors = builder.warnings;
    let tree = match fatal {
        Some(err) => {
            errors.push(err);
            None
        }
        None => {
            let root = builder.root.unwrap_or_else(|| {
                builder.nodes.push(Node {
                    at: Position {
                        line: first_line,
                        column: 1,
                    },
                    kind: NodeKind::Scalar {
                        text: String::new(),
                        plain: true,
                    },
                });
                builder.nodes.len() - 1
            });
            Some(Tree {
                nodes: builder.nodes,
                root,
                dropped: builder.dropped,
            })
        }
    };
    Parsed { tree, errors }
}

fn too_deep() -> String {
    format!(
        "nested too deeply: manifests may nest mappings and sequences {MAX_DEPTH} levels deep at most"
    )
}

/// The scanner's own words, with its flow-depth limit named for what it is.
fn scan_message(info: &str) -> String {
    if info == "recursion limit exceeded" {
        too_deep()
    } else {
        format!("YAML syntax error: {info}")
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        parse(text, 1)
            .errors
            .iter()
            .map(|e| format!("{}: {}: {}", e.at, e.path, e.message))
            .collect()
    }

    #[test]
    fn positions_are_one_based_and_offset() {
        let parsed = parse("a: 1\nb:\n  c: x\n", 10);
        let tree = parsed.tree.unwrap();
        let b = tree.get(tree.root(), "b").unwrap();
        assert_eq!(
            tree.node(b.value).at,
            Position {
                line: 12,
                column: 3
            }
        );
        assert_eq!(
            tree.node(tree.root()).at,
            Position {
                line: 10,
                column: 1
            }
        );
    }

    #[test]
    fn duplicate_keys_are_reported_at_the_duplicate_and_the_first_kept() {
        let parsed = parse("a: 1\nm:\n  x: 1\n  x: 2\n", 1);
        assert_eq!(parsed.errors.len(), 1);
        assert_eq!(parsed.errors[0].at, Position { line: 4, column: 3 });
        assert_eq!(parsed.errors[0].path, "m.x");
        let tree = parsed.tree.unwrap();
        let m = tree.get(tree.root(), "m").unwrap().value;
        let x = tree.get(m, "x").unwrap().value;
        assert_eq!(tree.scalar(x), Some("1"));
    }

    #[test]
    fn deep_nesting_stops_at_the_limit() {
        let errs = errors(&"[".repeat(100_000));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].contains("nested too deeply"), "{errs:?}");
        let block: String = (0..100).map(|i| format!("{}-\n", "  ".repeat(i))).collect();
        let errs = errors(&block);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with("66:131: "), "{errs:?}");
        let mapping: String = (0..100)
            .map(|i| format!("{}k{i}:\n", "  ".repeat(i)))
            .collect();
        let errs = errors(&mapping);
        assert!(errs[0].starts_with("65:129: "), "{errs:?}");
    }

    #[test]
    fn aliases_count_towards_the_depth() {
        let deep = format!("{}{}", "[".repeat(60), "]".repeat(60));
        let text = format!("a: &a {deep}\nb: [[[[[[[[[[*a]]]]]]]]]]\n");
        let errs = errors(&text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with("2:14: b[0]"), "{errs:?}");
        assert!(errs[0].contains("nested too deeply"), "{errs:?}");
    }

    #[test]
    fn alias_bombs_stop_at_the_alias() {
        let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        let mut previous = 'a';
        for name in ['b', 'c', 'd', 'e', 'f', 'g', 'h', 'i'] {
            let refs = vec![format!("*{previous}"); 10].join(", ");
            text.push_str(&format!("{name}: &{name} [{refs}]\n"));
            previous = name;
        }
        let errs = errors(&text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with("5:36: e[7]:"), "{errs:?}");
        assert!(errs[0].contains("alias bomb"), "{errs:?}");
    }

    #[test]
    fn a_large_document_is_not_an_alias_bomb_and_has_its_own_limit() {
        let labels: String = (0..300_000).map(|i| format!("  l{i}: v\n")).collect();
        let parsed = parse(&format!("labels:\n{labels}"), 1);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors.first());
        let labels = parsed.tree.unwrap();
        let map = labels.get(labels.root(), "labels").unwrap().value;
        assert!(labels.get(map, "l299999").is_some());

        let items = vec!["x"; MAX_DOCUMENT_NODES].join(",");
        let errs = errors(&format!("a: [{items}]\n"));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].contains("more than 1000000 keys, values and collections: split it"),
            "{errs:?}"
        );
        assert!(!errs[0].contains("alias"), "{errs:?}");
    }

    #[test]
    fn tags_are_reported_and_dropped() {
        let parsed = parse("mtu: !!int \"1500\"\nx: 1\n", 1);
        assert_eq!(parsed.errors.len(), 1);
        assert!(parsed.errors[0].message.contains("`!!int`"));
        let tree = parsed.tree.unwrap();
        assert!(tree.get(tree.root(), "mtu").is_none());
    }

    #[test]
    fn complex_keys_are_refused() {
        assert!(errors("[a]: 1\n")[0].contains("mapping key must be a plain string"));
        assert!(errors("a: &k x\n*k : 1\n")[0].contains("alias cannot be a mapping key"));
    }
}
