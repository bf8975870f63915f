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
    // Editors find the schema the starter names, offline.
    let starter = std::fs::read_to_string(workflows.join("hello.yaml")).unwrap();
    assert!(starter.starts_with("# yaml-language-server: $schema=./schema.json"), "{starter}");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(workflows.join("schema.json")).unwrap())
            .expect("schema.json is JSON");
    assert!(schema["$defs"]["Step"].is_object());

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

#[test]
fn graph_draws_a_runbook_in_every_format() {
    let dir = scratch("graph");
    for format in ["mermaid", "dot", "svg"] {
        let out_file = dir.join(format!("failover.{format}"));
        let out = lifeboat(&[
            "graph",
            "workflows/failover.yaml",
            "--format",
            format,
            "-o",
            out_file.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(0), "{format}: {}", stderr(&out));
        let text = std::fs::read_to_string(&out_file).unwrap();
        for step in ["promote", "fence_primary"] {
            assert!(text.contains(step), "{format} output lacks {step}");
        }
    }
    let svg = std::fs::read_to_string(dir.join("failover.svg")).unwrap();
    assert!(svg.starts_with("<svg") || svg.starts_with("<?xml"), "{}", &svg[..60.min(svg.len())]);
    assert!(svg.trim_end().ends_with("</svg>"));
}

#[test]
fn graph_of_an_invalid_file_shows_its_errors() {
    let out = lifeboat(&["graph", "tests/fixtures/invalid/cycle.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("LB010"), "{}", stderr(&out));
}
