//! Run id prefixes, one rule for both backends: a prefix is compared with
//! the first characters of each id, exactly (case and every character as
//! typed: `%`, `_` and `\` are not wildcards or escapes, because no `LIKE`
//! is involved): `substr(id, 1, n) = prefix`, inside the range of ids from
//! the prefix to the prefix followed by the last code point (binary order on
//! SQLite, `COLLATE "C"` ids on Postgres), so the primary key finds them
//! without reading every run.

use super::*;

/// How many candidates an ambiguous prefix lists.
pub(crate) const CANDIDATES: usize = 5;

/// The ids starting with a prefix, in id order. Parameters: the prefix's
/// length in characters, the prefix, the range's upper bound, the limit.
pub(crate) const BY_PREFIX: &str = "SELECT id FROM runs WHERE id >= $2 AND id < $3 \
     AND substr(id, 1, CAST($1 AS INTEGER)) = $2 ORDER BY id LIMIT $4";

/// The SQL parameters for a prefix: its length in characters, itself, and
/// the upper bound of the ids that start with it.
pub(crate) fn prefix_args(prefix: &str) -> (i64, &str, String) {
    (prefix.chars().count() as i64, prefix, format!("{prefix}{}", char::MAX))
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
