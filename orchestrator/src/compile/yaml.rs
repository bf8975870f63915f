//! YAML text -> a tree of `Node`s that remember their byte span.
//!
//! serde-saphyr does the parsing (panic-free, with budgets for aliases,
//! nodes and depth); we add a file-size cap, strict YAML 1.2 booleans (so
//! `on:` stays a key, not `true`), and duplicate-key detection that reports
//! every duplicate instead of stopping at the first.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use crate::model::Span;

/// Largest workflow file we read: far beyond any real runbook.
pub const MAX_FILE_BYTES: usize = 2 * 1024 * 1024;
/// Deepest nesting accepted; real workflows use fewer than 10 levels.
pub const MAX_DEPTH: usize = 64;
/// Alias uses and anchors accepted in one file.
pub const MAX_ALIASES: usize = 1_000;
/// Nodes accepted in one file, aliases expanded.
pub const MAX_NODES: usize = 200_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub kind: NodeKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in file order; keys are scalar nodes.
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// A tree without positions, from JSON (rendered step parameters).
    pub fn from_json(value: &serde_json::Value) -> Node {
        use serde_json::Value as V;
        let kind = match value {
            V::Null => NodeKind::Null,
            V::Bool(b) => NodeKind::Bool(*b),
            V::Number(n) => n
                .as_i64()
                .map(NodeKind::Int)
                .unwrap_or_else(|| NodeKind::Float(n.as_f64().unwrap_or(0.0))),
            V::String(s) => NodeKind::Str(s.clone()),
            V::Array(items) => NodeKind::Seq(items.iter().map(Node::from_json).collect()),
            V::Object(map) => NodeKind::Map(
                map.iter()
                    .map(|(k, v)| {
                        (
                            Node { kind: NodeKind::Str(k.clone()), span: Span::default() },
                            Node::from_json(v),
                        )
                    })
                    .collect(),
            ),
        };
        Node { kind, span: Span::default() }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The scalar's text as a map key would be read.
    pub fn key_text(&self) -> String {
        match &self.kind {
            NodeKind::Str(s) => s.clone(),
            NodeKind::Int(i) => i.to_string(),
            NodeKind::Float(f) => f.to_string(),
            NodeKind::Bool(b) => b.to_string(),
            NodeKind::Null => "null".into(),
            NodeKind::Seq(_) | NodeKind::Map(_) => "<collection>".into(),
        }
    }

    pub fn entries(&self) -> &[(Node, Node)] {
        match &self.kind {
            NodeKind::Map(entries) => entries,
            _ => &[],
        }
    }

    /// The value under `key` in a map node.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entries().iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v)
    }

    /// The key node of the entry `key` in a map node.
    pub fn key_node(&self, key: &str) -> Option<&Node> {
        self.entries().iter().find(|(k, _)| k.as_str() == Some(key)).map(|(k, _)| k)
    }

    /// Follows a path of map keys and sequence indexes.
    pub fn at_path<S: AsRef<str>>(&self, path: &[S]) -> Option<&Node> {
        let mut node = self;
        for seg in path {
            let seg = seg.as_ref();
            node = match &node.kind {
                NodeKind::Map(_) => node.get(seg)?,
                NodeKind::Seq(items) => items.get(seg.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(node)
    }

    /// Removes the map entry or sequence item at `path`; false if absent.
    pub fn remove_path<S: AsRef<str>>(&mut self, path: &[S]) -> bool {
        let Some((last, parents)) = path.split_last() else { return false };
        let mut node = self;
        for seg in parents {
            let seg = seg.as_ref();
            node = match &mut node.kind {
                NodeKind::Map(entries) => {
                    match entries.iter_mut().find(|(k, _)| k.as_str() == Some(seg)) {
                        Some((_, v)) => v,
                        None => return false,
                    }
                }
                NodeKind::Seq(items) => {
                    match seg.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                        Some(v) => v,
                        None => return false,
                    }
                }
                _ => return false,
            };
        }
        let last = last.as_ref();
        match &mut node.kind {
            NodeKind::Map(entries) => {
                let before = entries.len();
                entries.retain(|(k, _)| k.as_str() != Some(last));
                entries.len() != before
            }
            NodeKind::Seq(items) => match last.parse::<usize>() {
                Ok(i) if i < items.len() => {
                    items.remove(i);
                    true
                }
                _ => false,
            },
            _ => false,
        }
    }

    /// Visits every string scalar below this node with its path.
    pub fn walk_strings<'a>(
        &'a self,
        path: &mut Vec<String>,
        f: &mut dyn FnMut(&[String], &'a Node, &'a str),
    ) {
        match &self.kind {
            NodeKind::Str(s) => f(path, self, s),
            NodeKind::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    path.push(i.to_string());
                    item.walk_strings(path, f);
                    path.pop();
                }
            }
            NodeKind::Map(entries) => {
                for (k, v) in entries {
                    path.push(k.key_text());
                    v.walk_strings(path, f);
                    path.pop();
                }
            }
            _ => {}
        }
    }
}

/// Why a file could not be read as YAML.
#[derive(Debug, Clone, PartialEq)]
pub struct YamlError {
    pub message: String,
    pub span: Option<Span>,
    pub limit: bool,
}

/// A duplicate mapping key: the later entry is dropped.
#[derive(Debug, Clone, PartialEq)]
pub struct DuplicateKey {
    pub key: String,
    pub first: Span,
    pub duplicate: Span,
    /// Keys of the enclosing maps, outermost first.
    pub path: Vec<String>,
}

pub struct Parsed {
    pub root: Node,
    pub duplicates: Vec<DuplicateKey>,
}

pub fn parse(text: &str) -> Result<Parsed, YamlError> {
    if text.len() > MAX_FILE_BYTES {
        return Err(YamlError {
            message: format!(
                "file is {} bytes; workflow files are limited to {} bytes",
                text.len(),
                MAX_FILE_BYTES
            ),
            span: None,
            limit: true,
        });
    }
    if text.trim().is_empty() {
        return Err(YamlError {
            message: "file is empty: a workflow needs at least `name` and `steps`".into(),
            span: None,
            limit: false,
        });
    }
    let options = serde_saphyr::options! {
        strict_booleans: true,
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::PassThrough,
        budget: serde_saphyr::budget! {
            max_depth: MAX_DEPTH,
            max_aliases: MAX_ALIASES,
            max_anchors: MAX_ALIASES,
            max_nodes: MAX_NODES,
            max_documents: 1,
        },
    };
    let raw: Spanned<Raw> = serde_saphyr::from_str_with_options(text, options).map_err(|e| {
        let span = e.location().and_then(|loc| to_span(text, &loc));
        let message = e.to_string();
        let first_line = message.lines().next().unwrap_or("invalid YAML").to_string();
        let (message, limit) = match budget_message(&first_line) {
            Some(m) => (m, true),
            None => (strip_location_prefix(&first_line), first_line.contains("limit")),
        };
        YamlError { message, span, limit }
    })?;
    let mut duplicates = Vec::new();
    let root = convert(text, raw, &mut Vec::new(), &mut duplicates);
    Ok(Parsed { root, duplicates })
}

/// Says which safety cap a "budget breached" error hit, in our words.
fn budget_message(message: &str) -> Option<String> {
    if !message.contains("budget") {
        return None;
    }
    Some(if message.contains("Depth") {
        format!(
            "nesting is deeper than {MAX_DEPTH} levels; workflow files are limited to {MAX_DEPTH}"
        )
    } else if message.contains("Alias") || message.contains("Anchor") {
        format!(
            "more than {MAX_ALIASES} YAML anchors or aliases; workflow files are limited to {MAX_ALIASES}"
        )
    } else if message.contains("Nodes") || message.contains("Events") || message.contains("Replay")
    {
        format!(
            "more than {MAX_NODES} YAML nodes once aliases are expanded; workflow files are limited to {MAX_NODES}"
        )
    } else {
        format!("the file exceeds a safety limit ({})", strip_location_prefix(message))
    })
}

/// serde-saphyr prefixes messages with "error: line L column C: "; we print
/// our own location, so drop it.
fn strip_location_prefix(message: &str) -> String {
    let m = message.strip_prefix("error: ").unwrap_or(message);
    if let Some(rest) = m.strip_prefix("line ")
        && let Some(idx) = rest.find(": ")
        && rest[..idx].contains("column")
    {
        return rest[idx + 2..].to_string();
    }
    m.to_string()
}

fn to_span(text: &str, loc: &serde_saphyr::Location) -> Option<Span> {
    let span = loc.span();
    let start = span.byte_offset().map(|b| b as usize).or_else(|| {
        // Fall back to line/column (1-based, in characters).
        let line = loc.line().checked_sub(1)? as usize;
        let col = loc.column().checked_sub(1)? as usize;
        let line_start: usize = text.split_inclusive('\n').take(line).map(str::len).sum();
        let col_bytes: usize = text[line_start..].chars().take(col).map(char::len_utf8).sum();
        Some(line_start + col_bytes)
    })?;
    let len = span.byte_len().map(|b| b as usize).unwrap_or(0);
    (start <= text.len()).then(|| Span::new(start, len.min(text.len() - start)))
}

fn convert(
    text: &str,
    raw: Spanned<Raw>,
    path: &mut Vec<String>,
    dups: &mut Vec<DuplicateKey>,
) -> Node {
    let span = to_span(text, &raw.referenced).unwrap_or_default();
    let kind = match raw.value {
        Raw::Null => NodeKind::Null,
        Raw::Bool(b) => NodeKind::Bool(b),
        Raw::Int(i) => NodeKind::Int(i),
        Raw::Float(f) => NodeKind::Float(f),
        Raw::Str(s) => NodeKind::Str(s),
        Raw::Seq(items) => NodeKind::Seq(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| {
                    path.push(i.to_string());
                    let node = convert(text, item, path, dups);
                    path.pop();
                    node
                })
                .collect(),
        ),
        Raw::Map(raw_entries) => {
            let mut entries: Vec<(Node, Node)> = Vec::with_capacity(raw_entries.len());
            let mut seen: std::collections::HashMap<String, Span> =
                std::collections::HashMap::with_capacity(raw_entries.len());
            for (k, v) in raw_entries {
                let key = convert(text, k, path, dups);
                let key_text = key.key_text();
                if let Some(first) = seen.get(&key_text) {
                    dups.push(DuplicateKey {
                        key: key_text,
                        first: *first,
                        duplicate: key.span,
                        path: path.clone(),
                    });
                    continue;
                }
                seen.insert(key_text.clone(), key.span);
                path.push(key_text);
                let value = convert(text, v, path, dups);
                path.pop();
                entries.push((key, value));
            }
            NodeKind::Map(entries)
        }
    };
    Node { kind, span }
}

/// What serde-saphyr hands us; converted to `Node` with byte spans.
enum Raw {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Raw>>),
    Map(Vec<(Spanned<Raw>, Spanned<Raw>)>),
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Raw, D::Error> {
        struct RawVisitor;

        impl<'de> Visitor<'de> for RawVisitor {
            type Value = Raw;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_unit<E>(self) -> Result<Raw, E> {
                Ok(Raw::Null)
            }
            fn visit_none<E>(self) -> Result<Raw, E> {
                Ok(Raw::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
                Raw::deserialize(d)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Raw, E> {
                Ok(Raw::Bool(b))
            }
            fn visit_i64<E>(self, i: i64) -> Result<Raw, E> {
                Ok(Raw::Int(i))
            }
            fn visit_u64<E>(self, u: u64) -> Result<Raw, E> {
                Ok(i64::try_from(u).map(Raw::Int).unwrap_or(Raw::Float(u as f64)))
            }
            fn visit_i128<E>(self, i: i128) -> Result<Raw, E> {
                Ok(Raw::Float(i as f64))
            }
            fn visit_u128<E>(self, u: u128) -> Result<Raw, E> {
                Ok(Raw::Float(u as f64))
            }
            fn visit_f64<E>(self, f: f64) -> Result<Raw, E> {
                Ok(Raw::Float(f))
            }
            fn visit_str<E>(self, s: &str) -> Result<Raw, E> {
                Ok(Raw::Str(s.to_string()))
            }
            fn visit_string<E>(self, s: String) -> Result<Raw, E> {
                Ok(Raw::Str(s))
            }
            fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Raw, E> {
                Err(E::custom("binary values are not supported in workflow files"))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Raw::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Raw::Map(entries))
            }
        }

        deserializer.deserialize_any(RawVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_byte_spans_and_yaml_12_booleans() {
        let text = "a: é\non: yes\n";
        let root = parse(text).unwrap().root;
        let (k, v) = &root.entries()[1];
        assert_eq!(k.as_str(), Some("on"));
        assert_eq!(v.as_str(), Some("yes"));
        assert_eq!(&text[k.span.start..k.span.end()], "on");
    }

    #[test]
    fn reports_every_duplicate_key() {
        let parsed = parse("a: 1\nb: 2\na: 3\nb: 4\n").unwrap();
        assert_eq!(parsed.duplicates.len(), 2);
        assert_eq!(parsed.root.entries().len(), 2);
    }

    #[test]
    fn removes_by_path() {
        let mut root = parse("a: {b: 1, c: [1, 2]}\n").unwrap().root;
        assert!(root.remove_path(&["a", "c", "0"]));
        assert!(root.remove_path(&["a", "b"]));
        assert!(!root.remove_path(&["a", "zz"]));
        assert_eq!(root.at_path(&["a", "c", "0"]).unwrap().kind, NodeKind::Int(2));
    }
}
