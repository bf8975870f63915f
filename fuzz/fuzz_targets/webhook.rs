//! Any body through the webhook parsers (Alertmanager v4, Grafana v1 and
//! JSON), trigger matching, input rendering and checking, and dedupe keys:
//! everything a request does before a run is submitted. Must never panic or
//! hang. The first byte picks the format (`A`: Alertmanager, `G`: Grafana,
//! else JSON).
#![no_main]

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use lifeboat_orchestrator::catalog::TriggerRef;
use lifeboat_orchestrator::compile::{CompileEnv, compile};
use lifeboat_orchestrator::config::HookFormat;
use lifeboat_orchestrator::serve::hooks::preview;

const ALERTS: &str = r#"name: failover
inputs:
  site: { type: string, required: true, pattern: "^dc[0-9]+$" }
  severity: { type: string, enum: [P0, P1], default: P1 }
  count: { type: integer, default: 1 }
triggers:
  - webhook: am
    match: { alertname: SiteDown, site: "~dc[0-9]+|bad.*" }
    inputs: { site: "{{alert.labels.site}}", severity: "{{alert.labels.severity}}", count: "{{alert.annotations.count}}" }
steps:
  a: { uses: set }
"#;

const EVENTS: &str = r#"name: incident
inputs:
  service: { type: string, required: true }
  tags: { type: string, default: "" }
triggers:
  - webhook: js
    match: { type: incident, "details.level": "~[0-9]" }
    inputs: { service: "{{event.service}}", tags: "{{join event.tags \",\"}}" }
    dedupe: "{{event.id}}-{{event.details.level}}"
steps:
  a: { uses: set }
"#;

fn triggers(text: &str) -> Vec<TriggerRef> {
    let wf = compile("fuzz.yaml", text, CompileEnv::default()).expect("fuzz workflow compiles");
    vec![TriggerRef { workflow: Arc::new(wf), index: 0 }]
}

static AM: LazyLock<Vec<TriggerRef>> = LazyLock::new(|| triggers(ALERTS));
static JS: LazyLock<Vec<TriggerRef>> = LazyLock::new(|| triggers(EVENTS));

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else { return };
    let _ = match first {
        b'A' => preview(HookFormat::Alertmanager, body, "am", &AM),
        b'G' => preview(HookFormat::Grafana, body, "am", &AM),
        _ => preview(HookFormat::Json, body, "js", &JS),
    };
});
