//! `workflow`: run another workflow as a child and wait for its outputs.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Name of a workflow in the workflows directory.
    pub workflow: String,
    /// The child's inputs (templates).
    #[serde(default)]
    pub inputs: IndexMap<String, serde_json::Value>,
}
