//! Graphviz dot of a workflow: one node per step (id, kind, marks as
//! coloured tags), one edge per need, each wave held in one rank.

use std::fmt::Write;

use super::{Marks, objectives_text, one_line, palette, xml_escape};
use crate::compile::CompiledWorkflow;

const FONT: &str = "Helvetica";

pub(super) fn render(wf: &CompiledWorkflow) -> String {
    let mut out = String::new();
    let mut title = format!("<b>{}</b>", html(&wf.name, 100));
    let mut subtitle = format!("{} steps, {} waves", wf.steps.len(), wf.waves.len());
    let objectives = objectives_text(wf);
    if !objectives.is_empty() {
        let _ = write!(subtitle, " · {objectives}");
    }
    let _ = write!(
        title,
        "<br/><font point-size=\"10\" color=\"{}\">{}</font>",
        palette::MUTED,
        html(&subtitle, 200)
    );
    if let Some(description) = &wf.definition.description {
        let _ = write!(
            title,
            "<br/><font point-size=\"10\" color=\"{}\">{}</font>",
            palette::MUTED,
            html(description, 160)
        );
    }
    let _ = writeln!(out, "digraph {} {{", quote(&wf.name));
    let _ = writeln!(
        out,
        "  graph [rankdir=LR, labelloc=t, labeljust=l, fontname=\"{FONT}\", fontsize=16, nodesep=0.25, ranksep=0.7, label=<{title}>];"
    );
    let _ = writeln!(
        out,
        "  node [shape=box, style=\"rounded,filled\", fontname=\"{FONT}\", fontsize=12, fillcolor=\"{}\", color=\"{}\", fontcolor=\"{}\", margin=\"0.15,0.06\"];",
        palette::BOX_FILL,
        palette::BOX_STROKE,
        palette::TEXT
    );
    let _ = writeln!(out, "  edge [color=\"{}\", arrowsize=0.7];", palette::EDGE);

    for step in &wf.steps {
        let marks = Marks::of(step);
        let mut label = format!(
            "<b>{}</b><br/><font point-size=\"10\" color=\"{}\">{}</font>",
            html(&step.id, 200),
            palette::MUTED,
            html(step.body.kind.name(), 100)
        );
        let tags = marks.tags();
        if !tags.is_empty() {
            let spans: Vec<String> = tags
                .iter()
                .map(|t| {
                    let (fg, _) = t.class.colors();
                    format!("<font color=\"{fg}\">{}</font>", html(&t.text, 100))
                })
                .collect();
            let _ = write!(label, "<br/><font point-size=\"9\">{}</font>", spans.join(" · "));
        }
        let mut attrs = vec![format!("label=<{label}>")];
        let mut style = vec!["rounded", "filled"];
        if marks.people {
            attrs.push("shape=hexagon".into());
            style.retain(|s| *s != "rounded");
            attrs.push(format!("fillcolor=\"{}\"", palette::PEOPLE_FILL));
            attrs.push(format!("color=\"{}\"", palette::PEOPLE_STROKE));
        }
        if marks.conditional {
            style.push("dashed");
        }
        if marks.for_each {
            attrs.push("peripheries=2".into());
        }
        if marks.irreversible {
            attrs.push(format!("color=\"{}\"", palette::IRREVERSIBLE_STROKE));
            attrs.push("penwidth=2.5".into());
        }
        if style != ["rounded", "filled"] {
            attrs.push(format!("style=\"{}\"", style.join(",")));
        }
        let tooltip = match &step.definition.description {
            Some(d) => format!("{} ({}): {}", step.id, step.body.kind.name(), d),
            None => format!("{} ({})", step.id, step.body.kind.name()),
        };
        attrs.push(format!("tooltip={}", quote(&one_line(&tooltip, 300))));
        let _ = writeln!(out, "  {} [{}];", quote(&step.id), attrs.join(", "));
    }

    // Each wave on one rank, as the executor sees it.
    for wave in &wf.waves {
        if wave.len() > 1 {
            let ids: Vec<String> = wave.iter().map(|&i| quote(&wf.steps[i].id)).collect();
            let _ = writeln!(out, "  {{ rank=same; {}; }}", ids.join("; "));
        }
    }
    for step in &wf.steps {
        for &need in &step.needs {
            let _ = writeln!(out, "  {} -> {};", quote(&wf.steps[need].id), quote(&step.id));
        }
    }
    out.push_str("}\n");
    out
}

/// A double-quoted dot string: `\` and `"` escaped, line breaks folded.
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' | '\r' | '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Text inside an HTML-like label: on one line, cut to `max`, XML-escaped.
fn html(text: &str, max: usize) -> String {
    xml_escape(&one_line(text, max))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::viz::test_support::{DEMO, compiled, edges, generated};

    #[test]
    fn dot_has_every_step_and_every_need() {
        for yaml in [DEMO.to_string(), generated(30, 7)] {
            let wf = compiled(&yaml);
            let out = render(&wf);
            for s in &wf.steps {
                assert!(
                    out.contains(&format!("  \"{}\" [label=<<b>{}</b>", s.id, s.id)),
                    "{}",
                    s.id
                );
            }
            for (need, step) in edges(&wf) {
                let edge = format!("  \"{}\" -> \"{}\";\n", wf.steps[need].id, wf.steps[step].id);
                assert!(out.contains(&edge), "{edge}");
            }
            assert_eq!(out.matches(" -> ").count(), edges(&wf).len());
            assert!(out.starts_with("digraph ") && out.ends_with("}\n"));
        }
    }

    #[test]
    fn dot_keeps_each_wave_on_one_rank() {
        let out = render(&compiled(DEMO));
        assert!(out.contains("{ rank=same; \"b\"; \"c\"; }"));
    }

    #[test]
    fn dot_marks_people_conditions_and_risks() {
        let out = render(&compiled(&generated(30, 7)));
        assert!(out.contains("shape=hexagon"));
        assert!(out.contains("style=\"rounded,filled,dashed\""));
        assert!(out.contains("peripheries=2"));
        assert!(out.contains("penwidth=2.5"));
        assert!(out.contains(">idempotent: false</font>"));
        assert!(out.contains(">rollback: shell</font>"));
    }

    #[test]
    fn dot_escapes_strings_and_labels() {
        assert_eq!(quote("say \"hi\"\\n\nnext"), "\"say \\\"hi\\\"\\\\n next\"");
        let wf = compiled(
            "name: x\ndescription: \"<b>bold</b> & \\\"quoted\\\"\"\nsteps:\n  a: { uses: set, description: \"say \\\"hi\\\" \\\\ bye\" }\n",
        );
        let out = render(&wf);
        assert!(out.contains("&lt;b&gt;bold&lt;/b&gt; &amp; &quot;quoted&quot;"), "{out}");
        assert!(out.contains("tooltip=\"a (set): say \\\"hi\\\" \\\\ bye\""), "{out}");
    }
}
