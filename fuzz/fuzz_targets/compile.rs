//! Workflow text -> compile -> diagnostics rendered. Must never panic, hang
//! or overflow the stack, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lifeboat_orchestrator::compile::{CompileEnv, compile};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match compile("fuzz.yaml", text, CompileEnv::default()) {
        Ok(wf) => {
            // What a worker does with a stored definition: order and waves.
            assert_eq!(wf.topological_order.len(), wf.steps.len());
        }
        Err(report) => {
            let _ = report.render(false);
            let _ = serde_json::to_string(&report.to_json());
        }
    }
});
