//! `set`: its outputs are its rendered `with` map. Also the no-op step.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::{AttemptContext, ConfigProblem, Outcome, Step};

/// Any map; rendered, it becomes the step's outputs.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Config(pub IndexMap<String, serde_json::Value>);

impl Config {
    pub fn compile(&self) -> Vec<ConfigProblem> {
        Vec::new()
    }
}

impl Step for Config {
    async fn run(&self, _ctx: &AttemptContext) -> Outcome {
        let outputs = self.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        Outcome::succeeded(serde_json::Value::Object(outputs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn outputs_are_the_map_in_order() {
        let c: Config = serde_saphyr::from_str("b: 1\na: [x, {y: true}]\n").unwrap();
        let outcome = c.run(&AttemptContext::new("r", "s", 1)).await;
        let Outcome::Succeeded { outputs } = outcome else { panic!("{outcome:?}") };
        assert_eq!(outputs, json!({"b": 1, "a": ["x", {"y": true}]}));
        assert_eq!(outputs.as_object().unwrap().keys().collect::<Vec<_>>(), ["b", "a"]);
    }

    #[tokio::test]
    async fn empty_set_is_a_no_op_success() {
        let outcome = Config::default().run(&AttemptContext::new("r", "s", 1)).await;
        assert_eq!(outcome, Outcome::succeeded(json!({})));
    }
}
