//! Pictures of a compiled workflow's dependency graph: Mermaid, Graphviz dot
//! and a self-contained SVG, all showing the same marks on each step.
//!
//! `layout` places the graph for the SVG (layered, left to right, one column
//! per wave); Mermaid and dot are laid out by their own renderers.

mod dot;
pub mod layout;
mod mermaid;
mod svg;
pub mod timeline;

use crate::compile::{CompiledStep, CompiledWorkflow};
use crate::kinds::{NativeKind, StepKind};

/// The workflow as a Mermaid flowchart (`flowchart LR`).
pub fn mermaid(wf: &CompiledWorkflow) -> String {
    mermaid::render(wf)
}

/// The workflow as a Graphviz digraph (`dot -Tsvg`).
pub fn dot(wf: &CompiledWorkflow) -> String {
    dot::render(wf)
}

/// The workflow as a standalone SVG image: no scripts, no external fonts.
pub fn svg(wf: &CompiledWorkflow) -> String {
    svg::render(wf)
}

/// `svg`, with each step coloured by its status in a run (step id ->
/// `succeeded`, `waiting`, …; a step not in the map is `pending`).
pub fn svg_with_status(
    wf: &CompiledWorkflow,
    status: &std::collections::HashMap<String, String>,
) -> String {
    svg::render_with_status(wf, status)
}

/// What a picture marks on a step, whatever the format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Marks {
    /// `approval` or `escalate`: the run waits for people.
    pub people: bool,
    /// Has a `when`: may be skipped.
    pub conditional: bool,
    pub for_each: bool,
    /// `for_each` with `sequential: true`.
    pub sequential: bool,
    /// `idempotent: false`: a crash mid-step sends it to `needs_human`.
    pub not_idempotent: bool,
    pub irreversible: bool,
    /// The kind of the step's rollback body, if it has one.
    pub rollback: Option<&'static str>,
    pub continue_on_failure: bool,
}

impl Marks {
    pub fn of(step: &CompiledStep) -> Marks {
        let def = &step.definition;
        Marks {
            people: matches!(
                step.body.kind,
                StepKind::Native(NativeKind::Approval | NativeKind::Escalate)
            ),
            conditional: def.when.is_some(),
            for_each: def.for_each.is_some(),
            sequential: def.for_each.is_some() && def.sequential,
            not_idempotent: !def.idempotent,
            irreversible: def.irreversible,
            rollback: step
                .rollback
                .as_ref()
                .map(|rb| if rb.inverse_of_step { "automatic" } else { rb.kind.name() }),
            continue_on_failure: def.continue_on_failure,
        }
    }

    /// The small labels printed under the step's kind, in a fixed order,
    /// each spelled as the YAML field it comes from.
    pub fn tags(&self) -> Vec<Tag> {
        let mut tags = Vec::new();
        if self.conditional {
            tags.push(Tag { text: "when".into(), class: TagClass::Condition });
        }
        if self.for_each {
            let text = if self.sequential { "for_each, sequential" } else { "for_each" };
            tags.push(Tag { text: text.into(), class: TagClass::Condition });
        }
        if self.not_idempotent {
            tags.push(Tag { text: "idempotent: false".into(), class: TagClass::Warning });
        }
        if self.irreversible {
            tags.push(Tag { text: "irreversible".into(), class: TagClass::Danger });
        }
        if let Some(kind) = self.rollback {
            tags.push(Tag { text: format!("rollback: {kind}"), class: TagClass::Safe });
        }
        if self.continue_on_failure {
            tags.push(Tag { text: "continue_on_failure".into(), class: TagClass::Neutral });
        }
        tags
    }
}

/// A label on a step, with a colour family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tag {
    pub text: String,
    pub class: TagClass,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TagClass {
    Condition,
    Warning,
    Danger,
    Safe,
    Neutral,
}

impl TagClass {
    /// (text colour, background) shared by every format.
    pub fn colors(self) -> (&'static str, &'static str) {
        match self {
            TagClass::Condition => ("#1e40af", "#dbeafe"),
            TagClass::Warning => ("#9a3412", "#ffedd5"),
            TagClass::Danger => ("#991b1b", "#fee2e2"),
            TagClass::Safe => ("#166534", "#dcfce7"),
            TagClass::Neutral => ("#374151", "#e5e7eb"),
        }
    }
}

/// Colours shared by every format.
pub(crate) mod palette {
    pub const BOX_FILL: &str = "#ffffff";
    pub const BOX_STROKE: &str = "#475569";
    pub const PEOPLE_FILL: &str = "#fef3c7";
    pub const PEOPLE_STROKE: &str = "#b45309";
    pub const IRREVERSIBLE_STROKE: &str = "#b91c1c";
    pub const EDGE: &str = "#64748b";
    pub const TEXT: &str = "#0f172a";
    pub const MUTED: &str = "#64748b";
}

/// `"RTO 5m · RPO 1h"`, or empty without objectives.
pub(crate) fn objectives_text(wf: &CompiledWorkflow) -> String {
    let mut parts = Vec::new();
    if let Some(o) = &wf.definition.objectives {
        if let Some(rto) = o.rto {
            parts.push(format!("RTO {rto}"));
        }
        if let Some(rpo) = o.rpo {
            parts.push(format!("RPO {rpo}"));
        }
    }
    parts.join(" · ")
}

/// Escapes text for XML content and attribute values (SVG, dot HTML-like
/// labels). Characters XML 1.0 cannot hold at all become U+FFFD.
pub(crate) fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Whitespace runs (newlines included) folded to one space, cut to at most
/// `max` characters with an ellipsis.
pub(crate) fn one_line(text: &str, max: usize) -> String {
    let folded = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if folded.chars().count() <= max {
        return folded;
    }
    let mut cut: String = folded.chars().take(max.saturating_sub(1)).collect();
    cut.truncate(cut.trim_end().len());
    cut.push('…');
    cut
}

#[cfg(test)]
pub(crate) mod test_support {
    use crate::compile::{CompileEnv, CompiledWorkflow, compile};

    pub const DEMO: &str = r#"
name: demo
steps:
  a: { uses: set }
  b: { uses: shell, needs: [a], with: { command: [echo, hi] } }
  c: { uses: approval, needs: [a], with: { approvers: [alice] } }
  d: { uses: set, needs: [b, c] }
"#;

    pub fn compiled(yaml: &str) -> CompiledWorkflow {
        match compile("test.yaml", yaml, CompileEnv::default()) {
            Ok(wf) => wf,
            Err(report) => panic!("test workflow does not compile:\n{}", report.render(false)),
        }
    }

    /// Every edge as (need index, step index).
    pub fn edges(wf: &CompiledWorkflow) -> Vec<(usize, usize)> {
        wf.steps.iter().flat_map(|s| s.needs.iter().map(move |&n| (n, s.index))).collect()
    }

    /// A workflow of `waves` waves, `width` steps wide at most, with edges
    /// that skip waves and cross, and every mark somewhere.
    pub fn generated(steps: usize, waves: usize) -> String {
        let mut yaml = String::from(
            "name: generated-failover\ndescription: \"A generated <runbook> & its \\\"checks\\\"\"\nobjectives: { rto: 15m, rpo: 5m }\nsteps:\n",
        );
        let mut wave_of: Vec<usize> = Vec::new();
        for i in 0..steps {
            let wave = (i * waves) / steps;
            wave_of.push(wave);
            let id =
                format!("{}_{i}", ["check", "fence", "promote_database", "verify", "drain"][i % 5]);
            let mut needs: Vec<usize> = Vec::new();
            if wave > 0 {
                let prev: Vec<usize> = (0..i).filter(|&j| wave_of[j] == wave - 1).collect();
                needs.push(prev[(i * 7) % prev.len()]);
                if i % 3 == 0 {
                    needs.push(prev[(i * 3 + 1) % prev.len()]);
                }
                if i % 4 == 1 && wave > 2 {
                    let far: Vec<usize> = (0..i).filter(|&j| wave_of[j] + 2 <= wave).collect();
                    needs.push(far[(i * 5) % far.len()]);
                }
            }
            needs.sort_unstable();
            needs.dedup();
            let needs: Vec<String> = needs
                .iter()
                .map(|&j| {
                    format!(
                        "{}_{j}",
                        ["check", "fence", "promote_database", "verify", "drain"][j % 5]
                    )
                })
                .collect();
            let body = match i % 9 {
                0 => "uses: http, with: { url: \"http://127.0.0.1/health\" }".to_string(),
                1 => "uses: approval, with: { approvers: [oncall] }".to_string(),
                2 => "uses: shell, with: { command: [fence] }, rollback: { uses: shell, with: { command: [unfence] } }".to_string(),
                3 => "uses: shell, with: { command: [promote] }, idempotent: false, irreversible: true".to_string(),
                4 => "uses: set, when: \"{{inputs.x}}\"".to_string(),
                5 => "uses: shell, with: { command: [shift, \"{{item}}\"] }, for_each: [10, 50, 100], sequential: true".to_string(),
                6 => "uses: escalate, with: { tiers: [{ channels: [pager], ack_within: 5m }] }".to_string(),
                7 => "uses: assert, with: { that: \"{{inputs.x}}\" }, continue_on_failure: true".to_string(),
                _ => "uses: set".to_string(),
            };
            yaml.push_str(&format!("  {id}: {{ needs: [{}], {body} }}\n", needs.join(", ")));
        }
        yaml.insert_str(
            yaml.find("steps:").unwrap(),
            "inputs: { x: { type: string, default: \"1\" } }\n",
        );
        yaml
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    #[test]
    fn xml_escape_covers_markup_and_control_characters() {
        assert_eq!(
            xml_escape(r#"<a href="x">&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(xml_escape("bell\u{7}"), "bell\u{FFFD}");
    }

    #[test]
    fn one_line_folds_and_cuts() {
        assert_eq!(one_line("a\n  b\tc", 10), "a b c");
        assert_eq!(one_line("abcdefghij", 5), "abcd…");
    }

    #[test]
    fn marks_follow_the_definition() {
        let wf = compiled(&generated(30, 7));
        let all: Vec<Marks> = wf.steps.iter().map(Marks::of).collect();
        assert!(all.iter().any(|m| m.people));
        assert!(all.iter().any(|m| m.conditional));
        assert!(all.iter().any(|m| m.sequential));
        assert!(all.iter().any(|m| m.not_idempotent && m.irreversible));
        assert!(all.iter().any(|m| m.rollback == Some("shell")));
        assert!(all.iter().any(|m| m.continue_on_failure));
    }
}
