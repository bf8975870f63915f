//! The JSON Schema of the workflow format (committed as
//! `workflows/schema.json` so editors autocomplete). Each step kind's `with`
//! is tied to its `uses` with `if`/`then`.

use schemars::generate::SchemaSettings;
use serde_json::{Value, json};

use crate::kinds::StepKind;
use crate::model::Workflow;

pub fn workflow_schema() -> Value {
    let mut generator = SchemaSettings::draft2020_12().into_generator();
    let kinds: Vec<(StepKind, Value)> =
        StepKind::all().map(|k| (k, k.schema(&mut generator).to_value())).collect();
    let mut root = generator.into_root_schema_for::<Workflow>().to_value();
    root["$id"] = json!("https://lifeboat.dev/schema/workflow.json");
    root["title"] = json!("lifeboat workflow");
    let names: Vec<&str> = kinds.iter().map(|(k, _)| k.name()).collect();
    let conditions: Vec<Value> = kinds
        .iter()
        .map(|(kind, schema)| {
            json!({
                "if": { "properties": { "uses": { "const": kind.name() } }, "required": ["uses"] },
                "then": { "properties": { "with": schema } }
            })
        })
        .collect();
    for def in ["Step", "StepBody"] {
        if let Some(step) = root.pointer_mut(&format!("/$defs/{def}")) {
            step["properties"]["uses"]["enum"] = json!(names);
            step["allOf"] = Value::Array(conditions.clone());
        }
    }
    root
}

pub fn workflow_schema_json() -> String {
    let mut text = serde_json::to_string_pretty(&workflow_schema()).expect("schema serializes");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn committed_schema_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../workflows/schema.json");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        let current = super::workflow_schema_json();
        if committed != current {
            if std::env::var_os("LIFEBOAT_BLESS").is_some() {
                std::fs::write(path, current).unwrap();
            } else {
                panic!(
                    "workflows/schema.json is stale: run `LIFEBOAT_BLESS=1 cargo test -p lifeboat-orchestrator schema` or `lifeboat schema -o workflows/schema.json`"
                );
            }
        }
    }
}
