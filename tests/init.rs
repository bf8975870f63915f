//! `lifeboat init`, `lifeboat schema` and `lifeboat graph` as a newcomer uses them.

use crate::util::{lifeboat, scratch, stderr, stdout};

#[test]
fn init_scaffolds_a_config_and_a_workflow_that_validate() {
    let dir = scratch("init");
    let target = dir.join("project");
    let out = lifeboat(&["init", target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let config = target.join("lifeboat.toml");
    let workflows = target.join("workflows");
    let out =
        lifeboat(&["validate", "--config", config.to_str().unwrap(), workflows.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));

    // A second init must not overwrite anything.
    let again = lifeboat(&["init", target.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(2));
    assert!(stderr(&again).contains("already exists"));
}

#[test]
fn schema_is_json_schema_with_every_step_kind() {
    let out = lifeboat(&["schema"]);
    assert_eq!(out.status.code(), Some(0));
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(schema["$schema"].as_str().unwrap().contains("json-schema.org"));
    let kinds = &schema["$defs"]["Step"]["properties"]["uses"]["enum"];
    for kind in [
        "shell", "http", "sql", "set", "assert", "wait", "approval", "escalate", "notify",
        "workflow",
    ] {
        assert!(kinds.as_array().unwrap().iter().any(|k| k == kind), "{kind} missing");
    }
}
