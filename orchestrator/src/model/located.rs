//! `Located<T>`: a value together with where it was written in the source,
//! so checks made after parsing can still point at the exact line.

use schemars::JsonSchema;
use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
use serde::{Serialize, Serializer};

/// A byte range in a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Span {
    pub start: usize,
    pub len: usize,
}

impl Span {
    pub const fn new(start: usize, len: usize) -> Self {
        Span { start, len }
    }

    pub fn end(self) -> usize {
        self.start + self.len
    }
}

/// The newtype name the compiler's deserializer recognises to hand out spans.
/// Any other deserializer sees a transparent newtype and the span stays unknown.
pub(crate) const LOCATED_MAGIC: &str = "$lifeboat::Located";

#[derive(Debug, Clone, Default)]
pub struct Located<T> {
    pub value: T,
    /// `None` when the value did not come from a source file.
    pub span: Option<Span>,
}

impl<T> Located<T> {
    pub fn new(value: T, span: Option<Span>) -> Self {
        Located { value, span }
    }
}

impl<T: PartialEq> PartialEq for Located<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl<T> std::ops::Deref for Located<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Located<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LocatedVisitor<T>(std::marker::PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for LocatedVisitor<T> {
            type Value = Located<T>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a value")
            }

            fn visit_newtype_struct<D: Deserializer<'de>>(
                self,
                d: D,
            ) -> Result<Located<T>, D::Error> {
                Ok(Located::new(T::deserialize(d)?, None))
            }

            /// The compiler's deserializer sends `(start, len, value)`.
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Located<T>, A::Error> {
                let start: usize =
                    seq.next_element()?.ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let len: usize =
                    seq.next_element()?.ok_or_else(|| de::Error::invalid_length(1, &self))?;
                let value: T =
                    seq.next_element()?.ok_or_else(|| de::Error::invalid_length(2, &self))?;
                Ok(Located::new(value, Some(Span::new(start, len))))
            }
        }

        deserializer
            .deserialize_newtype_struct(LOCATED_MAGIC, LocatedVisitor(std::marker::PhantomData))
    }
}

impl<T: Serialize> Serialize for Located<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(serializer)
    }
}

impl<T: JsonSchema> JsonSchema for Located<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }

    fn schema_id() -> std::borrow::Cow<'static, str> {
        T::schema_id()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}
