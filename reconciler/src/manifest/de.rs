//! A serde deserializer over a [`Tree`], so the strict model types read YAML with exact
//! positions and field paths for every error.
//!
//! Scalars follow YAML 1.2's core schema: a plain scalar may be null (`~`, `null`, empty),
//! a bool (`true`/`false`), an integer (decimal without leading zeros, `0x`, `0o`, `0b`)
//! or a float; quoted and block scalars are always strings; a string field takes any
//! scalar's text. A key with nothing after it (`spec:`) reads as an empty mapping, list or
//! string where one is expected, as it always has with serde_yaml.
//!
//! An error is tied to the innermost node it came from: the key for an unknown field, the
//! value for a bad value, the mapping for a missing field. The caller ([`super::parse`])
//! removes that node and deserialises again to find the next error; [`Removed`] is the set
//! of removed nodes, which this deserializer skips as if they were not written.
//!
//! It lives here, beside the tree, rather than in the loader: each kind's registration
//! (in its driver folder) instantiates [`read_document`] for its spec type, and the
//! drivers sit below the loader in the module graph.

use std::collections::HashSet;
use std::fmt;

use serde::de::{
    self, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess, SeqAccess, Unexpected,
    VariantAccess, Visitor,
};

use crate::manifest::source_map::render_key;
use crate::manifest::tree::{NodeId, NodeKind, Position, Tree};
use crate::model::{Document, KindSpec, Metadata, Spec};

/// Nodes taken out of the document after an error in them.
pub type Removed = HashSet<NodeId>;

/// Where an error came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The node to remove before trying again: a key (unknown field), a value, or a
    /// sequence item.
    pub node: NodeId,
    pub at: Position,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub message: String,
    pub origin: Option<Origin>,
    /// Set for serde's "missing field" errors: the field's name.
    pub missing_field: Option<&'static str>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(message: T) -> Self {
        Error {
            message: message.to_string(),
            origin: None,
            missing_field: None,
        }
    }

    fn missing_field(field: &'static str) -> Self {
        Error {
            message: format!("missing field `{field}`"),
            origin: None,
            missing_field: Some(field),
        }
    }
}

/// A field path as a chain of borrowed links, rendered only when an error needs it.
#[derive(Clone, Copy)]
pub enum Path<'p> {
    Root,
    Key(&'p Path<'p>, &'p str),
    Index(&'p Path<'p>, usize),
}

impl Path<'_> {
    fn render(&self, out: &mut String) {
        match self {
            Path::Root => {}
            Path::Key(parent, key) => {
                parent.render(out);
                render_key(out, key);
            }
            Path::Index(parent, index) => {
                parent.render(out);
                out.push_str(&format!("[{index}]"));
            }
        }
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        self.render(&mut out);
        f.write_str(&out)
    }
}

fn attach(mut error: Error, tree: &Tree, node: NodeId, path: &Path<'_>) -> Error {
    if error.origin.is_none() {
        error.origin = Some(Origin {
            node,
            at: tree.node(node).at,
            path: path.to_string(),
        });
    }
    error
}

/// Deserialises the root of `tree` as `T`.
pub fn from_tree<T: serde::de::DeserializeOwned>(
    tree: &Tree,
    removed: &Removed,
) -> Result<T, Error> {
    let root = tree.root();
    T::deserialize(Deserializer {
        tree,
        removed,
        node: tree.resolve(root),
        path: Path::Root,
    })
    .map_err(|e| attach(e, tree, root, &Path::Root))
}

/// How a kind reads its whole document (`Document<S>`) from a tree: [`read_document`]
/// for the kind's spec type.
pub type ReadDocument = fn(&Tree, &Removed) -> Result<(Metadata, Spec), Error>;

/// Reads the root of `tree` as a document of the kind whose spec type is `S`.
pub fn read_document<S: KindSpec + serde::de::DeserializeOwned>(
    tree: &Tree,
    removed: &Removed,
) -> Result<(Metadata, Spec), Error> {
    let document = from_tree::<Document<S>>(tree, removed)?;
    Ok((document.metadata, Spec::new(document.spec)))
}

/// Whether readers skip `node` (removed after an error, or dropped by the tree builder).
fn skipped(tree: &Tree, removed: &Removed, node: NodeId) -> bool {
    removed.contains(&node) || removed.contains(&tree.resolve(node)) || tree.dropped(node)
}

struct Deserializer<'a, 'p> {
    tree: &'a Tree,
    removed: &'a Removed,
    /// Never an alias: resolved by whoever made this deserializer.
    node: NodeId,
    path: Path<'p>,
}

/// What a plain scalar resolves to.
enum Resolved<'a> {
    Null,
    Bool(bool),
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    Str(&'a str),
}

fn resolve_plain(text: &str) -> Resolved<'_> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Resolved::Null,
        "true" | "True" | "TRUE" => return Resolved::Bool(true),
        "false" | "False" | "FALSE" => return Resolved::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Resolved::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Resolved::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Resolved::Float(f64::NAN),
        _ => {}
    }
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let radix = |prefix: &str, radix: u32| {
        digits
            .strip_prefix(prefix)
            .filter(|d| !d.is_empty() && !negative)
            .and_then(|d| u64::from_str_radix(d, radix).ok())
    };
    if let Some(value) = radix("0x", 16)
        .or_else(|| radix("0o", 8))
        .or_else(|| radix("0b", 2))
    {
        return Resolved::Unsigned(value);
    }
    // `010` is neither octal nor ten here: such a number stays a string.
    let leading_zero = digits.len() > 1 && digits.starts_with('0');
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && !leading_zero {
        if negative {
            if let Ok(value) = text.parse::<i64>() {
                return Resolved::Signed(value);
            }
        } else if let Ok(value) = digits.parse::<u64>() {
            return Resolved::Unsigned(value);
        }
        return Resolved::Str(text);
    }
    let float_like = !digits.is_empty()
        && digits.bytes().any(|b| b.is_ascii_digit())
        && digits.bytes().any(|b| matches!(b, b'.' | b'e' | b'E'))
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
        && digits.as_bytes()[0] != b'e'
        && digits.as_bytes()[0] != b'E';
    if float_like && let Ok(value) = text.parse::<f64>() {
        return Resolved::Float(value);
    }
    Resolved::Str(text)
}

impl<'a, 'p> Deserializer<'a, 'p> {
    fn kind(&self) -> &'a NodeKind {
        &self.tree.node(self.node).kind
    }

    /// The scalar, resolved: plain scalars by the core schema, others as strings.
    fn resolved(&self) -> Option<Resolved<'a>> {
        match self.kind() {
            NodeKind::Scalar { text, plain: true } => Some(resolve_plain(text)),
            NodeKind::Scalar { text, plain: false } => Some(Resolved::Str(text)),
            _ => None,
        }
    }

    fn unexpected(&self) -> Unexpected<'a> {
        match self.kind() {
            NodeKind::Sequence(_) => Unexpected::Seq,
            NodeKind::Mapping(_) => Unexpected::Map,
            _ => match self.resolved() {
                Some(Resolved::Null) => Unexpected::Unit,
                Some(Resolved::Bool(b)) => Unexpected::Bool(b),
                Some(Resolved::Unsigned(n)) => Unexpected::Unsigned(n),
                Some(Resolved::Signed(n)) => Unexpected::Signed(n),
                Some(Resolved::Float(n)) => Unexpected::Float(n),
                Some(Resolved::Str(s)) => Unexpected::Str(s),
                None => Unexpected::Other("alias"),
            },
        }
    }

    fn invalid<V: Visitor<'a>>(&self, visitor: &V) -> Error {
        de::Error::invalid_type(self.unexpected(), visitor)
    }

    /// Whether this is a plain scalar with no text at all (`key:` and nothing after).
    fn is_empty_plain(&self) -> bool {
        matches!(self.kind(), NodeKind::Scalar { text, plain: true } if text.is_empty())
    }

    fn seq_access(&self) -> Option<Seq<'a, 'p>> {
        match self.kind() {
            _ if self.is_empty_plain() => Some(Seq {
                tree: self.tree,
                removed: self.removed,
                items: &[],
                next: 0,
                path: self.path,
            }),
            NodeKind::Sequence(items) => Some(Seq {
                tree: self.tree,
                removed: self.removed,
                items,
                next: 0,
                path: self.path,
            }),
            _ => None,
        }
    }

    fn map_access(&self) -> Option<Map<'a, 'p>> {
        match self.kind() {
            _ if self.is_empty_plain() => Some(Map {
                tree: self.tree,
                removed: self.removed,
                entries: &[],
                next: 0,
                value: None,
                path: self.path,
            }),
            NodeKind::Mapping(entries) => Some(Map {
                tree: self.tree,
                removed: self.removed,
                entries,
                next: 0,
                value: None,
                path: self.path,
            }),
            _ => None,
        }
    }
}

macro_rules! numeric {
    ($($method:ident),*) => {$(
        fn $method<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
            match self.resolved() {
                Some(Resolved::Unsigned(n)) => visitor.visit_u64(n),
                Some(Resolved::Signed(n)) => visitor.visit_i64(n),
                _ => Err(self.invalid(&visitor)),
            }
        }
    )*};
}

impl<'a> de::Deserializer<'a> for Deserializer<'a, '_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        if !self.is_empty_plain() {
            if let Some(seq) = self.seq_access() {
                return visitor.visit_seq(seq);
            }
            if let Some(map) = self.map_access() {
                return visitor.visit_map(map);
            }
        }
        match self.resolved() {
            Some(Resolved::Null) => visitor.visit_unit(),
            Some(Resolved::Bool(b)) => visitor.visit_bool(b),
            Some(Resolved::Unsigned(n)) => visitor.visit_u64(n),
            Some(Resolved::Signed(n)) => visitor.visit_i64(n),
            Some(Resolved::Float(n)) => visitor.visit_f64(n),
            Some(Resolved::Str(s)) => visitor.visit_str(s),
            None => Err(self.invalid(&visitor)),
        }
    }

    fn deserialize_bool<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.resolved() {
            Some(Resolved::Bool(b)) => visitor.visit_bool(b),
            _ => Err(self.invalid(&visitor)),
        }
    }

    numeric!(
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128
    );

    fn deserialize_f32<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.resolved() {
            Some(Resolved::Float(n)) => visitor.visit_f64(n),
            Some(Resolved::Unsigned(n)) => visitor.visit_u64(n),
            Some(Resolved::Signed(n)) => visitor.visit_i64(n),
            _ => Err(self.invalid(&visitor)),
        }
    }

    fn deserialize_char<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.kind() {
            NodeKind::Scalar { text, .. } => visitor.visit_str(text),
            _ => Err(self.invalid(&visitor)),
        }
    }

    fn deserialize_string<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        Err(self.invalid(&visitor))
    }

    fn deserialize_byte_buf<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        Err(self.invalid(&visitor))
    }

    fn deserialize_option<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.resolved() {
            Some(Resolved::Null) => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.resolved() {
            Some(Resolved::Null) => visitor.visit_unit(),
            _ => Err(self.invalid(&visitor)),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.seq_access() {
            Some(seq) => visitor.visit_seq(seq),
            None => Err(self.invalid(&visitor)),
        }
    }

    fn deserialize_tuple<V: Visitor<'a>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.map_access() {
            Some(map) => visitor.visit_map(map),
            None => Err(self.invalid(&visitor)),
        }
    }

    fn deserialize_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'a>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.kind() {
            NodeKind::Scalar { text, .. } => {
                visitor.visit_enum(IntoDeserializer::<Error>::into_deserializer(text.as_str()))
            }
            NodeKind::Mapping(entries) => {
                let live: Vec<_> = entries
                    .iter()
                    .filter(|e| !skipped(self.tree, self.removed, e.value))
                    .collect();
                match live.as_slice() {
                    [entry] => visitor.visit_enum(Variant {
                        tree: self.tree,
                        removed: self.removed,
                        key: entry.key,
                        value: entry.value,
                        path: self.path,
                    }),
                    _ => Err(self.invalid(&visitor)),
                }
            }
            _ => Err(self.invalid(&visitor)),
        }
    }

    fn deserialize_identifier<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }
}

struct Seq<'a, 'p> {
    tree: &'a Tree,
    removed: &'a Removed,
    items: &'a [NodeId],
    next: usize,
    path: Path<'p>,
}

impl<'a> SeqAccess<'a> for Seq<'a, '_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'a>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        while let Some(&item) = self.items.get(self.next) {
            let index = self.next;
            self.next += 1;
            if skipped(self.tree, self.removed, item) {
                continue;
            }
            let path = Path::Index(&self.path, index);
            let value = seed
                .deserialize(Deserializer {
                    tree: self.tree,
                    removed: self.removed,
                    node: self.tree.resolve(item),
                    path,
                })
                .map_err(|e| attach(e, self.tree, item, &path))?;
            return Ok(Some(value));
        }
        Ok(None)
    }
}

struct Map<'a, 'p> {
    tree: &'a Tree,
    removed: &'a Removed,
    entries: &'a [crate::manifest::tree::Entry],
    next: usize,
    /// The entry whose key was just read.
    value: Option<crate::manifest::tree::Entry>,
    path: Path<'p>,
}

impl<'a> MapAccess<'a> for Map<'a, '_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'a>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        while let Some(&entry) = self.entries.get(self.next) {
            self.next += 1;
            if skipped(self.tree, self.removed, entry.key)
                || skipped(self.tree, self.removed, entry.value)
            {
                continue;
            }
            let key = self.tree.scalar(entry.key).unwrap_or_default();
            let path = Path::Key(&self.path, key);
            self.value = Some(entry);
            let value = seed
                .deserialize(Deserializer {
                    tree: self.tree,
                    removed: self.removed,
                    node: entry.key,
                    path,
                })
                .map_err(|e| attach(e, self.tree, entry.key, &path))?;
            return Ok(Some(value));
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'a>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let Some(entry) = self.value.take() else {
            return Err(de::Error::custom("a map value was read before its key"));
        };
        let key = self.tree.scalar(entry.key).unwrap_or_default();
        let path = Path::Key(&self.path, key);
        seed.deserialize(Deserializer {
            tree: self.tree,
            removed: self.removed,
            node: self.tree.resolve(entry.value),
            path,
        })
        .map_err(|e| attach(e, self.tree, entry.value, &path))
    }
}

/// `{Variant: value}`: an externally tagged enum variant. Errors inside the value are
/// reported at the enclosing field.
struct Variant<'a, 'p> {
    tree: &'a Tree,
    removed: &'a Removed,
    key: NodeId,
    value: NodeId,
    path: Path<'p>,
}

impl<'a, 'p> EnumAccess<'a> for Variant<'a, 'p> {
    type Error = Error;
    type Variant = Self;

    fn variant_seed<T: DeserializeSeed<'a>>(self, seed: T) -> Result<(T::Value, Self), Error> {
        let name = self.tree.scalar(self.key).unwrap_or_default();
        let variant = seed
            .deserialize(IntoDeserializer::<Error>::into_deserializer(name))
            .map_err(|e| attach(e, self.tree, self.key, &self.path))?;
        Ok((variant, self))
    }
}

impl<'a, 'p> Variant<'a, 'p> {
    fn inner(&self) -> Deserializer<'a, 'p> {
        Deserializer {
            tree: self.tree,
            removed: self.removed,
            node: self.tree.resolve(self.value),
            path: self.path,
        }
    }
}

impl<'a> VariantAccess<'a> for Variant<'a, '_> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        serde::Deserialize::deserialize(self.inner())
            .map_err(|e| attach(e, self.tree, self.value, &self.path))
    }

    fn newtype_variant_seed<T: DeserializeSeed<'a>>(self, seed: T) -> Result<T::Value, Error> {
        seed.deserialize(self.inner())
            .map_err(|e| attach(e, self.tree, self.value, &self.path))
    }

    fn tuple_variant<V: Visitor<'a>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_seq(self.inner(), visitor)
            .map_err(|e| attach(e, self.tree, self.value, &self.path))
    }

    fn struct_variant<V: Visitor<'a>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_map(self.inner(), visitor)
            .map_err(|e| attach(e, self.tree, self.value, &self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::tree::parse;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        a: u32,
        #[serde(default)]
        b: Option<String>,
        #[serde(default)]
        c: Vec<f64>,
        #[serde(default)]
        d: bool,
    }

    fn read(text: &str) -> Result<Sample, Error> {
        let tree = parse(text, 1).tree.unwrap();
        from_tree(&tree, &Removed::new())
    }

    #[test]
    fn core_schema_scalars() {
        let value = read("a: 0x10\nb: 1500\nc: [1, 2.5, -3, 1e3]\nd: true\n").unwrap();
        assert_eq!(
            value,
            Sample {
                a: 16,
                b: Some("1500".into()),
                c: vec![1.0, 2.5, -3.0, 1000.0],
                d: true
            }
        );
        assert_eq!(read("a: 1\nb: ~\n").unwrap().b, None);
        assert_eq!(read("a: 1\nc:\n").unwrap().c, Vec::<f64>::new());
        assert_eq!(read("a: 0b101\n").unwrap().a, 5);
        assert!(
            read("a: 010\n")
                .unwrap_err()
                .message
                .contains("string \"010\"")
        );
        assert_eq!(read("a: 1\nb: 'x'\n").unwrap().b.as_deref(), Some("x"));
    }

    #[test]
    fn errors_point_at_the_node() {
        let err = read("a: 1\nzz: 2\n").unwrap_err();
        let origin = err.origin.unwrap();
        assert_eq!((origin.at.line, origin.at.column), (2, 1));
        assert_eq!(origin.path, "zz");
        assert!(
            err.message.starts_with("unknown field `zz`"),
            "{}",
            err.message
        );

        let err = read("a: '1'\n").unwrap_err();
        assert_eq!(err.origin.unwrap().at.column, 4);
        assert!(
            err.message
                .contains("invalid type: string \"1\", expected u32")
        );

        let err = read("a: 1\nc: [1, x]\n").unwrap_err();
        assert_eq!(err.origin.unwrap().path, "c[1]");

        let err = read("b: x\n").unwrap_err();
        assert_eq!(err.missing_field, Some("a"));
        assert_eq!(err.origin.unwrap().path, "");

        let err = read("a: 1\nd: yes\n").unwrap_err();
        assert!(
            err.message.contains("expected a boolean"),
            "{}",
            err.message
        );
    }

    #[test]
    fn removed_nodes_are_skipped() {
        let tree = parse("a: 1\nzz: 2\nyy: 3\n", 1).tree.unwrap();
        let mut removed = Removed::new();
        let first = from_tree::<Sample>(&tree, &removed).unwrap_err();
        removed.insert(first.origin.unwrap().node);
        let second = from_tree::<Sample>(&tree, &removed).unwrap_err();
        assert_eq!(second.origin.as_ref().unwrap().path, "yy");
        removed.insert(second.origin.unwrap().node);
        assert_eq!(from_tree::<Sample>(&tree, &removed).unwrap().a, 1);
    }
}
