//! `assert`: fail the step unless `that` renders truthy.

use schemars::JsonSchema;
use serde::Deserialize;

use crate::ConfigProblem;

/// Fails with `message` unless `that` renders truthy (not empty, `false` or `0`).
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Condition template.
    pub that: String,
    /// Failure message (template).
    pub message: Option<String>,
}

impl Config {
    pub fn compile(&self) -> Vec<ConfigProblem> {
        if self.that.trim().is_empty() {
            vec![ConfigProblem::new(&["that"], "`that` is empty: it would always fail")]
        } else {
            Vec::new()
        }
    }
}
