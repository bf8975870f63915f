//! Cells of Postgres rows (JSON is `jsonb`), and values as Postgres takes
//! them (text without NUL).

use super::*;
use crate::store::rows::{Cells, impl_cells};

/// Postgres text cannot hold NUL characters (SQLite can): replace them so a
/// step printing a NUL byte cannot make every commit of its run fail.
pub(super) fn text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') { Cow::Owned(s.replace('\0', "\u{FFFD}")) } else { Cow::Borrowed(s) }
}

pub(super) fn opt_text(s: &Option<String>) -> Option<Cow<'_, str>> {
    s.as_deref().map(text)
}

/// jsonb rejects `\u0000` in strings and keys: the same replacement as `text`.
pub(super) fn json(v: &Value) -> Json<Cow<'_, Value>> {
    fn has_nul(v: &Value) -> bool {
        match v {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items.iter().any(has_nul),
            Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
            _ => false,
        }
    }
    fn clean(v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(text(s).into_owned()),
            Value::Array(items) => Value::Array(items.iter().map(clean).collect()),
            Value::Object(map) => {
                Value::Object(map.iter().map(|(k, v)| (text(k).into_owned(), clean(v))).collect())
            }
            other => other.clone(),
        }
    }
    Json(if has_nul(v) { Cow::Owned(clean(v)) } else { Cow::Borrowed(v) })
}

pub(super) fn opt_json(v: &Option<Value>) -> Option<Json<Cow<'_, Value>>> {
    v.as_ref().map(json)
}

impl_cells!(PgRow {
    fn flag(&self, col: &str) -> Result<bool> {
        Ok(self.try_get(col)?)
    }
    fn json(&self, col: &str) -> Result<Option<Value>> {
        Ok(self.try_get(col)?)
    }
});
