//! Cells of SQLite rows (JSON is TEXT, booleans are integers), and values
//! as SQLite takes them.

use super::*;
use crate::store::rows::{Cells, impl_cells, parse_json};

pub(super) fn json(value: &Option<Value>) -> Option<String> {
    value.as_ref().map(|v| v.to_string())
}

pub(super) fn pins_text(pins: &Option<super::Pins>) -> Option<String> {
    pins.as_ref().map(|p| serde_json::to_string(p).expect("a map of strings"))
}

impl_cells!(SqliteRow {
    fn flag(&self, col: &str) -> Result<bool> {
        Ok(self.try_get::<i64, _>(col)? != 0)
    }
    fn json(&self, col: &str) -> Result<Option<Value>> {
        parse_json(self.try_get(col)?)
    }
});
