//! `set`: its outputs are its rendered `with` map. Also the no-op step.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::ConfigProblem;

/// Any map; rendered, it becomes the step's outputs.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Config(pub IndexMap<String, serde_json::Value>);

impl Config {
    pub fn compile(&self) -> Vec<ConfigProblem> {
        Vec::new()
    }
}
