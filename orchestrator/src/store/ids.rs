//! Run id prefixes, one rule for both backends: a prefix is compared with
//! the first characters of each id, exactly (case and every character as
//! typed: `%`, `_` and `\` are not wildcards or escapes, because no `LIKE`
//! is involved). The backend's SQL is `substr(id, 1, n) = prefix`.

use super::*;

/// How many candidates an ambiguous prefix lists.
pub(crate) const CANDIDATES: usize = 5;

/// The SQL parameters for a prefix: its length in characters and itself.
pub(crate) fn prefix_args(prefix: &str) -> (i64, &str) {
    (prefix.chars().count() as i64, prefix)
}

/// The verdict on the ids that start with `prefix` (at most `CANDIDATES + 1`,
/// in id order).
pub(crate) fn resolve(prefix: &str, ids: Vec<String>) -> Result<String> {
    match <[String; 1]>::try_from(ids) {
        Ok([one]) => Ok(one),
        Err(ids) if ids.is_empty() => Err(StoreError::NotFound(prefix.to_string())),
        Err(mut ids) => {
            ids.truncate(CANDIDATES);
            Err(StoreError::Ambiguous { prefix: prefix.to_string(), candidates: ids })
        }
    }
}
