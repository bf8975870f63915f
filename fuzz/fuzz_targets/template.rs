//! Template text -> parse -> render against a context holding every root a
//! runbook can read. Must never panic, hang or overflow the stack.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use lifeboat_orchestrator::compile::templates;
use lifeboat_orchestrator::exec::render;

static CONTEXT: LazyLock<serde_json::Value> = LazyLock::new(|| {
    serde_json::json!({
        "inputs": { "site": "dc01", "n": 3, "list": ["a", "b"], "flag": true },
        "steps": { "check": { "status": "succeeded", "outputs": { "json": { "lag": 2 } } } },
        "alert": { "labels": { "site": "dc01" }, "annotations": {} },
        "event": { "x": { "y": [1, 2, { "z": null }] } },
        "run": { "id": "r1", "workflow": "wf" },
        "item": "a",
    })
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(parsed) = templates::parse(text) else { return };
    let context = handlebars::Context::wraps(&*CONTEXT).expect("a JSON object");
    let _ = render::render(&parsed, &context);
});
