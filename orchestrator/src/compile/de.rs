//! A serde `Deserializer` over a `Node` tree that records *where* an error
//! happened, and a driver that recovers from errors so one pass reports
//! every problem of a file instead of the first.
//!
//! Recovery: after an error, the offending entry is removed from a copy of
//! the tree and deserialization is retried; a later "missing field" for an
//! entry we removed ourselves is not reported again.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, Visitor};

use super::yaml::{Node, NodeKind};
use crate::model::Span;
use crate::model::duration::DURATION_MAGIC;
use crate::model::located::LOCATED_MAGIC;

#[derive(Debug, Clone, PartialEq)]
pub enum DeErrorKind {
    UnknownField { field: String, expected: Vec<&'static str> },
    MissingField(&'static str),
    Other,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeError {
    pub kind: DeErrorKind,
    pub message: String,
    pub span: Option<Span>,
    /// Keys and indexes from the deserialized node down to the error.
    pub path: Vec<String>,
}

impl DeError {
    fn at(mut self, span: Span) -> Self {
        self.span.get_or_insert(span);
        self
    }

    fn in_field(mut self, seg: String) -> Self {
        self.path.insert(0, seg);
        self
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError { kind: DeErrorKind::Other, message: msg.to_string(), span: None, path: Vec::new() }
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        DeError {
            kind: DeErrorKind::UnknownField {
                field: field.to_string(),
                expected: expected.to_vec(),
            },
            message: format!("unknown field `{field}`"),
            span: None,
            path: Vec::new(),
        }
    }

    fn missing_field(field: &'static str) -> Self {
        DeError {
            kind: DeErrorKind::MissingField(field),
            message: format!("missing required field `{field}`"),
            span: None,
            path: Vec::new(),
        }
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        let mut message =
            format!("unknown value `{variant}`, expected one of {}", one_of(expected));
        if let Some(s) = crate::suggest::closest(variant, expected.iter().copied()) {
            message.push_str(&format!(" (did you mean `{s}`?)"));
        }
        DeError { kind: DeErrorKind::Other, message, span: None, path: Vec::new() }
    }

    fn invalid_type(unexp: de::Unexpected, exp: &dyn de::Expected) -> Self {
        Self::custom(format_args!(
            "expected {}, found {}",
            humanize(&exp.to_string()),
            describe(unexp)
        ))
    }

    fn invalid_value(unexp: de::Unexpected, exp: &dyn de::Expected) -> Self {
        Self::custom(format_args!(
            "expected {}, found {}",
            humanize(&exp.to_string()),
            describe(unexp)
        ))
    }
}

fn describe(unexp: de::Unexpected) -> String {
    match unexp {
        de::Unexpected::Map => "a mapping".into(),
        de::Unexpected::Seq => "a list".into(),
        de::Unexpected::Unit => "nothing (null)".into(),
        other => other.to_string(),
    }
}

/// Rust type names mean nothing to a workflow author.
fn humanize(expected: &str) -> String {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number (0 or more)".into(),
        "i8" | "i16" | "i32" | "i64" => "a whole number".into(),
        "f32" | "f64" => "a number".into(),
        "a boolean" | "bool" => "`true` or `false`".into(),
        "a string" => "text".into(),
        other => other.into(),
    }
}

pub fn one_of(names: &[&str]) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

/// Deserializes with recovery. Returns the value if one could be built
/// (possibly from a repaired tree) and every error met on the way.
pub fn deserialize_recovering<T>(
    node: &Node,
    templated: bool,
    mut deserialize: impl FnMut(NodeDeserializer<'_>) -> Result<T, DeError>,
) -> (Option<T>, Vec<DeError>) {
    const MAX_ROUNDS: usize = 100;
    // The common case has no error: deserialize from the borrowed tree and
    // copy it only when there is something to repair.
    let first = match deserialize(NodeDeserializer { node, templated, rendered: false }) {
        Ok(value) => return (Some(value), Vec::new()),
        Err(e) => e,
    };
    let mut tree = node.clone();
    let mut errors: Vec<DeError> = Vec::new();
    let mut removed: Vec<Vec<String>> = Vec::new();
    let mut error = first;
    for _ in 0..MAX_ROUNDS {
        let target = error.path.clone();
        let already_removed = match &error.kind {
            DeErrorKind::MissingField(field) => {
                let mut full = error.path.clone();
                full.push(field.to_string());
                removed.contains(&full)
            }
            _ => false,
        };
        // A missing field we removed ourselves was reported already: remove
        // its parent instead of reporting it twice.
        if !already_removed {
            errors.push(error);
        }
        if target.is_empty() || !tree.remove_path(&target) {
            return (None, errors);
        }
        removed.push(target);
        error = match deserialize(NodeDeserializer { node: &tree, templated, rendered: false }) {
            Ok(value) => return (Some(value), errors),
            Err(e) => e,
        };
    }
    (None, errors)
}

/// Deserializes from a `Node`, attaching the innermost node's span to errors.
pub struct NodeDeserializer<'a> {
    node: &'a Node,
    /// Inside a step's `with`, where strings are templates rendered later.
    templated: bool,
    /// Rendered parameters: text is parsed as the number or boolean a field needs.
    rendered: bool,
}

impl<'a> NodeDeserializer<'a> {
    pub fn new(node: &'a Node) -> Self {
        NodeDeserializer { node, templated: false, rendered: false }
    }

    /// For rendered step parameters, where every value is text.
    pub fn rendered(node: &'a Node) -> Self {
        NodeDeserializer { node, templated: false, rendered: true }
    }

    /// For a step's `with`: a template string may stand where a number,
    /// boolean or duration goes; the rendered value is checked at run time.
    pub fn templated(node: &'a Node) -> Self {
        NodeDeserializer { node, templated: true, rendered: false }
    }

    /// A string holding `{{` is only known at run time: let it stand in for
    /// a number or boolean now; the step checks the rendered value later.
    fn template(&self) -> bool {
        self.templated && matches!(&self.node.kind, NodeKind::Str(s) if s.contains("{{"))
    }

    fn scalar_text(&self) -> Option<String> {
        match &self.node.kind {
            NodeKind::Str(s) => Some(s.clone()),
            NodeKind::Int(i) => Some(i.to_string()),
            NodeKind::Float(f) => Some(f.to_string()),
            NodeKind::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

macro_rules! int_method {
    ($method:ident, $visit:ident, $ty:ty) => {
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            let span = self.node.span;
            let result = match &self.node.kind {
                NodeKind::Int(i) => match <$ty>::try_from(*i) {
                    Ok(v) => visitor.$visit(v),
                    Err(_) => Err(de::Error::custom(format_args!(
                        "{i} is out of range (expected {})",
                        stringify!($ty)
                    ))),
                },
                _ if self.template() => visitor.$visit(0),
                NodeKind::Str(s) if self.rendered => match s.trim().parse::<$ty>() {
                    Ok(v) => visitor.$visit(v),
                    Err(_) => Err(de::Error::custom(format_args!(
                        "expected {}, found \"{s}\"",
                        humanize(stringify!($ty))
                    ))),
                },
                _ => self.deserialize_any(visitor),
            };
            result.map_err(|e| e.at(span))
        }
    };
}

impl<'de, 'a> Deserializer<'de> for NodeDeserializer<'a> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let span = self.node.span;
        let result = match &self.node.kind {
            NodeKind::Null => visitor.visit_unit(),
            NodeKind::Bool(b) => visitor.visit_bool(*b),
            NodeKind::Int(i) => visitor.visit_i64(*i),
            NodeKind::Float(f) => visitor.visit_f64(*f),
            NodeKind::Str(s) => visitor.visit_str(s),
            NodeKind::Seq(items) => visitor.visit_seq(SeqAccess {
                items: items.iter(),
                index: 0,
                templated: self.templated,
                rendered: self.rendered,
            }),
            NodeKind::Map(entries) => visitor.visit_map(MapAccess {
                entries: entries.iter(),
                value: None,
                templated: self.templated,
                rendered: self.rendered,
            }),
        };
        result.map_err(|e| e.at(span))
    }

    int_method!(deserialize_i8, visit_i8, i8);
    int_method!(deserialize_i16, visit_i16, i16);
    int_method!(deserialize_i32, visit_i32, i32);
    int_method!(deserialize_i64, visit_i64, i64);
    int_method!(deserialize_u8, visit_u8, u8);
    int_method!(deserialize_u16, visit_u16, u16);
    int_method!(deserialize_u32, visit_u32, u32);
    int_method!(deserialize_u64, visit_u64, u64);

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let span = self.node.span;
        let result = match &self.node.kind {
            NodeKind::Int(i) => visitor.visit_f64(*i as f64),
            _ if self.template() => visitor.visit_f64(0.0),
            NodeKind::Str(s) if self.rendered && s.trim().parse::<f64>().is_ok() => {
                visitor.visit_f64(s.trim().parse::<f64>().unwrap_or_default())
            }
            _ => self.deserialize_any(visitor),
        };
        result.map_err(|e| e.at(span))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.template() {
            return visitor.visit_bool(false).map_err(|e: DeError| e.at(self.node.span));
        }
        if self.rendered
            && let NodeKind::Str(s) = &self.node.kind
            && let Ok(b) = s.trim().parse::<bool>()
        {
            return visitor.visit_bool(b);
        }
        self.deserialize_any(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_string(visitor)
    }

    /// Scalars are read as their text: `severity: 1` is the string "1".
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.scalar_text() {
            Some(text) => visitor.visit_string(text).map_err(|e: DeError| e.at(self.node.span)),
            None => self.deserialize_any(visitor),
        }
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_string(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.node.kind {
            NodeKind::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        if name == LOCATED_MAGIC {
            let span = self.node.span;
            return visitor
                .visit_seq(LocatedAccess {
                    node: self.node,
                    step: 0,
                    templated: self.templated,
                    rendered: self.rendered,
                })
                .map_err(|e| e.at(span));
        }
        if name == DURATION_MAGIC && self.template() {
            return visitor.visit_str("0s").map_err(|e: DeError| e.at(self.node.span));
        }
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let span = self.node.span;
        let result = match &self.node.kind {
            NodeKind::Str(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            NodeKind::Map(entries) if entries.len() == 1 => {
                let (k, v) = &entries[0];
                visitor
                    .visit_enum(EnumAccess {
                        key: k,
                        value: v,
                        templated: self.templated,
                        rendered: self.rendered,
                    })
                    .map_err(|e| e.in_field(k.key_text()))
            }
            _ => self.deserialize_any(visitor),
        };
        result.map_err(|e| e.at(span))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        i128 u128 bytes byte_buf unit unit_struct seq tuple tuple_struct map struct identifier
    }
}

struct SeqAccess<'a> {
    items: std::slice::Iter<'a, Node>,
    index: usize,
    templated: bool,
    rendered: bool,
}

impl<'de, 'a> de::SeqAccess<'de> for SeqAccess<'a> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some(item) = self.items.next() else { return Ok(None) };
        let index = self.index;
        self.index += 1;
        seed.deserialize(NodeDeserializer {
            node: item,
            templated: self.templated,
            rendered: self.rendered,
        })
        .map(Some)
        .map_err(|e| e.at(item.span).in_field(index.to_string()))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapAccess<'a> {
    entries: std::slice::Iter<'a, (Node, Node)>,
    value: Option<(&'a Node, &'a Node)>,
    templated: bool,
    rendered: bool,
}

impl<'de, 'a> de::MapAccess<'de> for MapAccess<'a> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((k, v)) = self.entries.next() else { return Ok(None) };
        self.value = Some((k, v));
        seed.deserialize(NodeDeserializer::new(k))
            .map(Some)
            .map_err(|e| e.at(k.span).in_field(k.key_text()))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let (k, v) = self.value.take().expect("next_value_seed called before next_key_seed");
        seed.deserialize(NodeDeserializer {
            node: v,
            templated: self.templated,
            rendered: self.rendered,
        })
        .map_err(|e| e.at(v.span).in_field(k.key_text()))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

struct EnumAccess<'a> {
    key: &'a Node,
    value: &'a Node,
    templated: bool,
    rendered: bool,
}

impl<'de, 'a> de::EnumAccess<'de> for EnumAccess<'a> {
    type Error = DeError;
    type Variant = NodeDeserializer<'a>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), DeError> {
        let variant =
            seed.deserialize(NodeDeserializer::new(self.key)).map_err(|e| e.at(self.key.span))?;
        Ok((
            variant,
            NodeDeserializer {
                node: self.value,
                templated: self.templated,
                rendered: self.rendered,
            },
        ))
    }
}

impl<'de, 'a> de::VariantAccess<'de> for NodeDeserializer<'a> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_any(visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_any(visitor)
    }
}

/// Hands `(start, len, value)` to `Located<T>`.
struct LocatedAccess<'a> {
    node: &'a Node,
    step: u8,
    templated: bool,
    rendered: bool,
}

impl<'de, 'a> de::SeqAccess<'de> for LocatedAccess<'a> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        self.step += 1;
        match self.step {
            1 => seed.deserialize(self.node.span.start.into_deserializer()).map(Some),
            2 => seed.deserialize(self.node.span.len.into_deserializer()).map(Some),
            3 => seed
                .deserialize(NodeDeserializer {
                    node: self.node,
                    templated: self.templated,
                    rendered: self.rendered,
                })
                .map(Some),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::yaml;
    use crate::model::Located;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        attempts: Option<u32>,
        name: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        inner: Option<Inner>,
        when: Option<Located<String>>,
        other: Option<String>,
    }

    fn run(text: &str) -> (Option<Outer>, Vec<DeError>) {
        let root = yaml::parse(text).unwrap().root;
        deserialize_recovering(&root, true, |d| Outer::deserialize(d))
    }

    #[test]
    fn reports_every_unknown_field_with_its_span() {
        let text = "inner: {name: x, atempts: 3, bogus: 1}\nothr: y\n";
        let (value, errors) = run(text);
        assert!(value.is_some());
        let fields: Vec<_> = errors.iter().map(|e| e.path.join(".")).collect();
        assert_eq!(fields, ["inner.atempts", "inner.bogus", "othr"]);
        let span = errors[0].span.unwrap();
        assert_eq!(&text[span.start..span.end()], "atempts");
    }

    #[test]
    fn a_bad_value_is_reported_and_removed() {
        let (value, errors) = run("inner: {name: x, attempts: many}\nother: y\n");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path, ["inner", "attempts"]);
        assert!(errors[0].message.contains("expected a whole number"), "{}", errors[0].message);
        assert_eq!(value.unwrap().other.as_deref(), Some("y"));
    }

    #[test]
    fn a_broken_required_field_is_not_reported_twice() {
        let (value, errors) = run("inner: {name: [1]}\n");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(value.unwrap().inner.is_none());
    }

    #[test]
    fn templates_stand_in_for_numbers() {
        let (value, errors) = run("inner: {name: x, attempts: \"{{inputs.n}}\"}\n");
        assert!(errors.is_empty());
        assert_eq!(value.unwrap().inner.unwrap().attempts, Some(0));
    }

    #[test]
    fn located_values_carry_their_span() {
        let text = "when: \"{{x}}\"\n";
        let when = run(text).0.unwrap().when.unwrap();
        let span = when.span.unwrap();
        assert_eq!(&text[span.start..span.end()], "\"{{x}}\"");
    }
}
