//! Mermaid flowchart of a workflow: one node per step (id, kind, marks),
//! one arrow per need, classes for the marks.
//!
//! Nodes are named `s0`, `s1`, … by file position, so no step id can clash
//! with Mermaid's keywords (`end`, `graph`) or edge syntax (`a---oB`).

use std::fmt::Write;

use super::{Marks, objectives_text, one_line, palette};
use crate::compile::CompiledWorkflow;

/// Mark classes, in the order their `class` lines are written. Later ones
/// win where they set the same property.
const CLASSES: [(&str, &str); 5] = [
    ("step", "fill:#ffffff,stroke:#475569,color:#0f172a"),
    ("people", "fill:#fef3c7,stroke:#b45309,color:#0f172a"),
    ("conditional", "stroke-dasharray:6 4"),
    ("notidempotent", "fill:#ffedd5"),
    ("irreversible", "stroke:#b91c1c,stroke-width:3px"),
];

pub(super) fn render(wf: &CompiledWorkflow) -> String {
    let mut out = String::new();
    // Front matter: the title. The name is `[a-z0-9_-]`, quoted anyway.
    let _ = writeln!(out, "---\ntitle: \"{}\"\n---", yaml_quote(&wf.name));
    out.push_str("flowchart LR\n");
    let mut summary = format!(
        "{} steps in {} waves; an arrow from a to b means b needs a",
        wf.steps.len(),
        wf.waves.len()
    );
    let objectives = objectives_text(wf);
    if !objectives.is_empty() {
        summary = format!("{objectives}; {summary}");
    }
    // Only generated text goes in comments: the description could hold
    // markup that a page embedding this source would not expect.
    let _ = writeln!(out, "  %% {summary}");

    let mut members: Vec<Vec<String>> = vec![Vec::new(); CLASSES.len()];
    for step in &wf.steps {
        let marks = Marks::of(step);
        let node = format!("s{}", step.index);
        let mut label =
            format!("<b>{}</b><br/>{}", escape(&step.id), escape(step.body.kind.name()));
        let tags: Vec<String> = marks.tags().into_iter().map(|t| t.text).collect();
        if !tags.is_empty() {
            let _ = write!(label, "<br/><i>{}</i>", escape(&tags.join(" · ")));
        }
        // Shape: hexagon for people, subroutine (double sides) for
        // `for_each`, rounded box otherwise.
        let (open, close) = if marks.people {
            ("{{", "}}")
        } else if marks.for_each {
            ("[[", "]]")
        } else {
            ("(", ")")
        };
        let _ = writeln!(out, "  {node}{open}\"{label}\"{close}");
        let classes = [
            true,
            marks.people,
            marks.conditional,
            marks.not_idempotent && !marks.people,
            marks.irreversible,
        ];
        for (i, on) in classes.into_iter().enumerate() {
            if on {
                members[i].push(node.clone());
            }
        }
    }
    for step in &wf.steps {
        for &need in &step.needs {
            let _ = writeln!(out, "  s{need} --> s{}", step.index);
        }
    }
    for ((name, style), nodes) in CLASSES.iter().zip(&members) {
        if nodes.is_empty() {
            continue;
        }
        let _ = writeln!(out, "  classDef {name} {style}");
        let _ = writeln!(out, "  class {} {name}", nodes.join(","));
    }
    let _ = writeln!(out, "  linkStyle default stroke:{}", palette::EDGE);
    out
}

/// Text inside a quoted Mermaid label. Mermaid reads `#name;` and `#123;`
/// as entities, so `#` is escaped too; HTML specials become entities so
/// they show as typed.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in one_line(text, 200).chars() {
        match c {
            '"' => out.push_str("#quot;"),
            '#' => out.push_str("#35;"),
            '&' => out.push_str("#amp;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Inside a double-quoted YAML scalar.
fn yaml_quote(text: &str) -> String {
    one_line(text, 200).replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::viz::test_support::{DEMO, compiled, edges, generated};

    #[test]
    fn mermaid_has_every_step_and_every_need() {
        for yaml in [DEMO.to_string(), generated(30, 7)] {
            let wf = compiled(&yaml);
            let out = render(&wf);
            for s in &wf.steps {
                assert!(
                    out.contains(&format!("  s{}", s.index))
                        && out.contains(&format!("<b>{}</b><br/>{}", s.id, s.body.kind.name())),
                    "step {} missing:\n{out}",
                    s.id
                );
            }
            for (need, step) in edges(&wf) {
                assert!(out.contains(&format!("  s{need} --> s{step}\n")), "edge {need} -> {step}");
            }
            assert_eq!(out.matches(" --> ").count(), edges(&wf).len());
        }
    }

    #[test]
    fn mermaid_marks_people_conditions_and_risks() {
        let wf = compiled(&generated(30, 7));
        let out = render(&wf);
        let approval = wf.steps.iter().find(|s| s.body.kind.name() == "approval").unwrap();
        assert!(out.contains(&format!("  s{}{{{{\"<b>{}</b>", approval.index, approval.id)));
        for class in ["people", "conditional", "notidempotent", "irreversible"] {
            assert!(out.contains(&format!("classDef {class} ")), "{class}");
        }
        assert!(out.contains("rollback: shell"));
        assert!(out.contains("[[\"<b>"), "for_each steps are subroutines");
    }

    #[test]
    fn mermaid_escapes_labels() {
        assert_eq!(
            escape(r#"say "hi" <b>#1 & more"#),
            "say #quot;hi#quot; #lt;b#gt;#35;1 #amp; more"
        );
        assert_eq!(escape("line\nbreak\u{7}"), "line break");
    }

    #[test]
    fn mermaid_keeps_descriptions_out() {
        let wf = compiled(
            "name: x\ndescription: \"two\\nlines --> s9 <script>\"\nsteps:\n  a: { uses: set }\n",
        );
        let out = render(&wf);
        assert!(!out.contains("s9") && !out.contains("script"), "{out}");
        assert!(out.starts_with("---\ntitle: \"x\"\n---\nflowchart LR\n"));
    }
}
