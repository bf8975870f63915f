//! Standalone SVG picture of a workflow: title, one column per wave, a box
//! per step sized to its text (id, kind, mark tags), curved edges with
//! arrowheads, and a legend of the marks in use. No scripts, no external
//! fonts; the same workflow always gives the same bytes.

use std::collections::HashMap;
use std::fmt::Write;

use super::layout::{self, Rect, Size};
use super::{Marks, Tag, TagClass, objectives_text, one_line, palette, xml_escape};
use crate::compile::CompiledWorkflow;

const MONO: &str = "'DejaVu Sans Mono', Menlo, Consolas, 'Liberation Mono', monospace";
const SANS: &str = "'DejaVu Sans', 'Segoe UI', Helvetica, Arial, sans-serif";
/// Advance of one monospace character, in ems (DejaVu Sans Mono and Menlo
/// are 0.602; Consolas is narrower).
const MONO_EM: f64 = 0.61;
/// A generous mean advance of sans-serif text, in ems.
const SANS_EM: f64 = 0.62;

const MARGIN: f64 = 24.0;
const ID_SIZE: f64 = 13.0;
const KIND_SIZE: f64 = 11.0;
const TAG_SIZE: f64 = 10.0;
const PAD_X: f64 = 10.0;
const ID_BASELINE: f64 = 19.0;
const KIND_BASELINE: f64 = 34.0;
const TAGS_TOP: f64 = 41.0;
const TAG_ROW: f64 = 17.0;
const TAG_HEIGHT: f64 = 14.0;
const TAG_PAD: f64 = 4.0;
const TAG_GAP: f64 = 4.0;
/// Room for the person glyph before the kind of a people step.
const ICON_W: f64 = 14.0;
/// Offset of the second box drawn behind a `for_each` step.
const STACK: f64 = 4.0;
const LEGEND_ROW: f64 = 24.0;
const LEGEND_SAMPLE_W: f64 = 34.0;
const LEGEND_COLUMN_GAP: f64 = 24.0;
/// Space around each column's band.
const BAND_PAD: f64 = 14.0;
/// Tags wrap past this width unless the id is wider.
const TAG_WRAP: f64 = 170.0;

pub(super) fn render(wf: &CompiledWorkflow) -> String {
    draw(wf, None)
}

/// `render`, each box filled with the colour of its step's status in
/// `status` (step id -> `succeeded`, `waiting`, …) and the status written
/// after the kind, so the picture does not speak by colour alone.
pub(super) fn render_with_status(
    wf: &CompiledWorkflow,
    status: &HashMap<String, String>,
) -> String {
    draw(wf, Some(status))
}

fn draw(wf: &CompiledWorkflow, status: Option<&HashMap<String, String>>) -> String {
    let nodes: Vec<Node> = wf
        .steps
        .iter()
        .map(|s| {
            let state = status.map(|m| m.get(&s.id).map_or("pending", String::as_str));
            Node::new(&s.id, s.body.kind.name(), Marks::of(s)).with_status(state)
        })
        .collect();
    let sizes: Vec<Size> = nodes.iter().map(|n| Size { w: n.w, h: n.h }).collect();
    let needs: Vec<Vec<usize>> = wf.steps.iter().map(|s| s.needs.clone()).collect();
    let graph = layout::layout(&wf.waves, &needs, &sizes);

    // Header.
    let title = one_line(&wf.name, 80);
    let mut facts =
        vec![plural(wf.steps.len(), "step", "steps"), plural(wf.waves.len(), "wave", "waves")];
    let objectives = objectives_text(wf);
    if !objectives.is_empty() {
        facts.push(objectives);
    }
    let facts = facts.join(" · ");
    let description = wf.definition.description.as_deref().map(|d| one_line(d, 140));
    let mut header_h = 30.0 + 18.0;
    if description.is_some() {
        header_h += 17.0;
    }
    let wave_label_y = MARGIN + header_h + 18.0;
    let graph_top = wave_label_y + 16.0;
    let graph_left = MARGIN + BAND_PAD;

    // Legend.
    let legend = legend_items(&nodes);
    let content_w = (graph.width + 2.0 * BAND_PAD)
        .max(legend_column_width(&legend) * legend.len().min(2) as f64)
        .max(sans_width(&title, 18.0) + 10.0)
        .max(sans_width(&facts, 12.0))
        .max(description.as_deref().map_or(0.0, |d| sans_width(d, 12.0)))
        .max(520.0);
    let legend_top = graph_top + graph.height + 36.0;
    let (legend_svg, legend_h) = draw_legend(&legend, MARGIN, legend_top, content_w);

    let width = (content_w + 2.0 * MARGIN).ceil();
    let height = (legend_top + legend_h + MARGIN).ceil();

    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">",
        w = num(width),
        h = num(height)
    );
    let _ = writeln!(
        out,
        "<title>{}</title>",
        xml_escape(&format!("Workflow {title}: steps and needs"))
    );
    out.push_str(&style());
    let _ = writeln!(
        out,
        "<defs><marker id=\"lb-arrow\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"{}\"/></marker></defs>",
        palette::EDGE
    );
    let _ = writeln!(out, "<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>");

    // Title block.
    let _ = writeln!(
        out,
        "<text class=\"lb-title\" x=\"{}\" y=\"{}\">{}</text>",
        num(MARGIN),
        num(MARGIN + 18.0),
        xml_escape(&title)
    );
    let _ = writeln!(
        out,
        "<text class=\"lb-sub\" x=\"{}\" y=\"{}\">{}</text>",
        num(MARGIN),
        num(MARGIN + 38.0),
        xml_escape(&facts)
    );
    if let Some(d) = &description {
        let _ = writeln!(
            out,
            "<text class=\"lb-sub\" x=\"{}\" y=\"{}\">{}</text>",
            num(MARGIN),
            num(MARGIN + 55.0),
            xml_escape(d)
        );
    }

    // Wave bands and labels.
    out.push_str("<g class=\"lb-waves\">\n");
    for (i, &(left, right)) in graph.columns.iter().enumerate() {
        let (x0, x1) = (graph_left + left - BAND_PAD, graph_left + right + BAND_PAD);
        if i % 2 == 0 {
            let _ = writeln!(
                out,
                "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" rx=\"8\" fill=\"#f1f5f9\"/>",
                num(x0),
                num(wave_label_y - 16.0),
                num(x1 - x0),
                num(graph.height + (graph_top - wave_label_y) + 30.0)
            );
        }
        let _ = writeln!(
            out,
            "<text class=\"lb-wave\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">wave {}</text>",
            num(graph_left + (left + right) / 2.0),
            num(wave_label_y),
            i + 1
        );
    }
    out.push_str("</g>\n");

    // Edges under boxes.
    out.push_str("<g class=\"lb-edges\">\n");
    for r in &graph.routes {
        let d = path(&r.points, graph_left, graph_top);
        let _ = writeln!(
            out,
            "<g><title>{} → {}</title><path class=\"lb-halo\" d=\"{d}\"/><path class=\"lb-edge\" d=\"{d}\" marker-end=\"url(#lb-arrow)\"/></g>",
            xml_escape(&wf.steps[r.from].id),
            xml_escape(&wf.steps[r.to].id)
        );
    }
    out.push_str("</g>\n");

    // Steps.
    out.push_str("<g class=\"lb-steps\">\n");
    for (i, (node, step)) in nodes.iter().zip(&wf.steps).enumerate() {
        let b = graph.boxes[i];
        let b = Rect { x: b.x + graph_left, y: b.y + graph_top, ..b };
        let mut tooltip = match &step.definition.description {
            Some(d) => format!("{} ({}): {}", step.id, node.kind, one_line(d, 500)),
            None => format!("{} ({})", step.id, node.kind),
        };
        if let Some(s) = &node.status {
            let _ = write!(tooltip, " — {s}");
        }
        node.draw(&mut out, b, &tooltip);
    }
    out.push_str("</g>\n");
    out.push_str(&legend_svg);
    out.push_str("</svg>\n");
    out
}

/// A step's box content and size.
struct Node {
    id: String,
    kind: &'static str,
    marks: Marks,
    /// The step's status in a run, when the picture shows one.
    status: Option<String>,
    /// Tags by row, each with its x offset inside the box.
    rows: Vec<Vec<(f64, Tag)>>,
    w: f64,
    h: f64,
}

impl Node {
    fn new(id: &str, kind: &'static str, marks: Marks) -> Node {
        let id_w = mono_width(id, ID_SIZE);
        let kind_w = mono_width(kind, KIND_SIZE) + if marks.people { ICON_W } else { 0.0 };
        let wrap = id_w.max(TAG_WRAP);
        let mut rows: Vec<Vec<(f64, Tag)>> = Vec::new();
        let mut x = 0.0;
        for tag in marks.tags() {
            let w = tag_width(&tag.text);
            if rows.is_empty() || (x > 0.0 && x + w > wrap) {
                rows.push(Vec::new());
                x = 0.0;
            }
            rows.last_mut().expect("pushed").push((x, tag));
            x += w + TAG_GAP;
        }
        let rows_w = rows
            .iter()
            .filter_map(|r| r.last().map(|(x, t)| x + tag_width(&t.text)))
            .fold(0.0, f64::max);
        let w = (id_w.max(kind_w).max(rows_w) + 2.0 * PAD_X).max(84.0).ceil();
        let h = if rows.is_empty() { 44.0 } else { TAGS_TOP + rows.len() as f64 * TAG_ROW + 4.0 };
        Node { id: id.to_string(), kind, marks, status: None, rows, w, h }
    }

    /// Shows `status` after the kind (widening the box to fit) and in the
    /// box's colours.
    fn with_status(mut self, status: Option<&str>) -> Node {
        if let Some(s) = status {
            let extra = mono_width(&format!(" · {s}"), KIND_SIZE);
            let kind_w = mono_width(self.kind, KIND_SIZE)
                + if self.marks.people { ICON_W } else { 0.0 }
                + extra;
            self.w = self.w.max((kind_w + 2.0 * PAD_X).ceil());
            self.status = Some(s.to_string());
        }
        self
    }

    /// The second line: the kind, and the status when there is one.
    fn kind_line(&self) -> String {
        match &self.status {
            Some(s) => format!("{} · {s}", self.kind),
            None => self.kind.to_string(),
        }
    }

    fn draw(&self, out: &mut String, b: Rect, tooltip: &str) {
        let m = &self.marks;
        let (fill, mut stroke) = if let Some(s) = &self.status {
            status_colors(s)
        } else if m.people {
            (palette::PEOPLE_FILL, palette::PEOPLE_STROKE)
        } else {
            (palette::BOX_FILL, palette::BOX_STROKE)
        };
        let mut stroke_w = 1.3;
        if m.irreversible {
            if self.status.is_none() {
                stroke = palette::IRREVERSIBLE_STROKE;
            }
            stroke_w = 2.6;
        }
        let dash = if m.conditional { " stroke-dasharray=\"6 3\"" } else { "" };
        match &self.status {
            Some(s) => {
                let _ = writeln!(
                    out,
                    "<g class=\"lb-step lb-status-{s}\" id=\"lb-step-{}\" data-status=\"{s}\">",
                    xml_escape(&self.id),
                    s = xml_escape(s)
                );
            }
            None => {
                let _ =
                    writeln!(out, "<g class=\"lb-step\" id=\"lb-step-{}\">", xml_escape(&self.id));
            }
        }
        let _ = writeln!(out, "<title>{}</title>", xml_escape(tooltip));
        if m.for_each {
            let _ = writeln!(
                out,
                "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" rx=\"6\" fill=\"{fill}\" stroke=\"{stroke}\" stroke-width=\"1.1\"{dash}/>",
                num(b.x + STACK),
                num(b.y + STACK),
                num(b.w),
                num(b.h)
            );
        }
        let _ = writeln!(
            out,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" rx=\"6\" fill=\"{fill}\" stroke=\"{stroke}\" stroke-width=\"{}\"{dash}/>",
            num(b.x),
            num(b.y),
            num(b.w),
            num(b.h),
            num(stroke_w)
        );
        let x = b.x + PAD_X;
        let _ = writeln!(
            out,
            "<text class=\"lb-id\" x=\"{}\" y=\"{}\">{}</text>",
            num(x),
            num(b.y + ID_BASELINE),
            xml_escape(&self.id)
        );
        let mut kind_x = x;
        if m.people {
            out.push_str(&person_icon(x, b.y + KIND_BASELINE, palette::PEOPLE_STROKE));
            kind_x += ICON_W;
        }
        let _ = writeln!(
            out,
            "<text class=\"lb-kind\" x=\"{}\" y=\"{}\">{}</text>",
            num(kind_x),
            num(b.y + KIND_BASELINE),
            xml_escape(&self.kind_line())
        );
        for (r, row) in self.rows.iter().enumerate() {
            let top = b.y + TAGS_TOP + r as f64 * TAG_ROW;
            for (dx, tag) in row {
                out.push_str(&draw_tag(x + dx, top, tag));
            }
        }
        out.push_str("</g>\n");
    }
}

/// (fill, stroke) of a box whose step has `status`; unknown statuses look pending.
fn status_colors(status: &str) -> (&'static str, &'static str) {
    match status {
        "succeeded" => ("#dcfce7", "#15803d"),
        "running" => ("#dbeafe", "#1d4ed8"),
        "retry_wait" => ("#e0e7ff", "#4338ca"),
        "waiting" => ("#fef3c7", "#b45309"),
        "needs_human" => ("#ffedd5", "#c2410c"),
        "failed" => ("#fee2e2", "#b91c1c"),
        "rolled_back" => ("#f3e8ff", "#7e22ce"),
        "skipped" => ("#f1f5f9", "#94a3b8"),
        "cancelled" => ("#e5e7eb", "#6b7280"),
        _ => (palette::BOX_FILL, palette::BOX_STROKE),
    }
}

fn draw_tag(x: f64, top: f64, tag: &Tag) -> String {
    let (fg, bg) = tag.class.colors();
    format!(
        "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" rx=\"3\" fill=\"{bg}\"/><text class=\"lb-tag\" x=\"{}\" y=\"{}\" fill=\"{fg}\">{}</text>\n",
        num(x),
        num(top),
        num(tag_width(&tag.text)),
        num(TAG_HEIGHT),
        num(x + TAG_PAD),
        num(top + 10.5),
        xml_escape(&tag.text)
    )
}

/// A head and shoulders, 10px wide, standing on `baseline`.
fn person_icon(x: f64, baseline: f64, color: &str) -> String {
    format!(
        "<circle cx=\"{}\" cy=\"{}\" r=\"2.6\" fill=\"{color}\"/><path d=\"M{} {} q0 -5 5 -5 q5 0 5 5 z\" fill=\"{color}\"/>\n",
        num(x + 5.0),
        num(baseline - 7.6),
        num(x),
        num(baseline + 0.5)
    )
}

/// What the legend explains: only marks some step has, and the arrow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LegendItem {
    Arrow,
    People,
    Conditional,
    ForEach,
    Irreversible,
    NotIdempotent,
    Rollback,
    ContinueOnFailure,
}

impl LegendItem {
    /// Whether a step with these marks shows this item.
    fn shown_for(self, m: &Marks) -> bool {
        match self {
            LegendItem::Arrow => true,
            LegendItem::People => m.people,
            LegendItem::Conditional => m.conditional,
            LegendItem::ForEach => m.for_each,
            LegendItem::Irreversible => m.irreversible,
            LegendItem::NotIdempotent => m.not_idempotent,
            LegendItem::Rollback => m.rollback.is_some(),
            LegendItem::ContinueOnFailure => m.continue_on_failure,
        }
    }

    fn text(self) -> &'static str {
        match self {
            LegendItem::Arrow => "needs: the step at the arrowhead starts after this one",
            LegendItem::People => "approval / escalate: waits for people",
            LegendItem::Conditional => "when: skipped unless its condition holds",
            LegendItem::ForEach => "for_each: runs once per item",
            LegendItem::Irreversible => "irreversible: no way back",
            LegendItem::NotIdempotent => "interrupted by a crash: waits for a person",
            LegendItem::Rollback => "undone by this body if the run fails later",
            LegendItem::ContinueOnFailure => "its failure does not fail the run",
        }
    }
}

fn legend_items(nodes: &[Node]) -> Vec<LegendItem> {
    use LegendItem::*;
    let marks =
        [People, Conditional, ForEach, Irreversible, NotIdempotent, Rollback, ContinueOnFailure];
    let used = marks.into_iter().filter(|item| nodes.iter().any(|n| item.shown_for(&n.marks)));
    std::iter::once(Arrow).chain(used).collect()
}

/// The legend as a grid of (sample, text) as wide as fits in `width`;
/// returns the drawing and its height.
fn draw_legend(items: &[LegendItem], left: f64, top: f64, width: f64) -> (String, f64) {
    let mut out = String::from("<g class=\"lb-legend\">\n");
    let _ = writeln!(
        out,
        "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#e2e8f0\"/>",
        num(left),
        num(top - 12.0),
        num(left + width),
        num(top - 12.0)
    );
    let col_w = legend_column_width(items);
    let columns = ((width + LEGEND_COLUMN_GAP) / col_w).floor().max(1.0) as usize;
    for (i, &item) in items.iter().enumerate() {
        let sample_w = legend_sample_width(item);
        let (col, row) = (i % columns, i / columns);
        let (sx, sy) = (left + col as f64 * col_w, top + row as f64 * LEGEND_ROW);
        let mid = sy + 7.0;
        match item {
            LegendItem::Arrow => {
                let _ = writeln!(
                    out,
                    "<path class=\"lb-edge\" d=\"M{} {} H{}\" marker-end=\"url(#lb-arrow)\"/>",
                    num(sx),
                    num(mid),
                    num(sx + LEGEND_SAMPLE_W)
                );
            }
            LegendItem::People => {
                out.push_str(&sample_box(
                    sx,
                    sy,
                    palette::PEOPLE_FILL,
                    palette::PEOPLE_STROKE,
                    1.3,
                    "",
                ));
                out.push_str(&person_icon(sx + 12.0, sy + 12.0, palette::PEOPLE_STROKE));
            }
            LegendItem::Conditional => {
                out.push_str(&sample_box(
                    sx,
                    sy,
                    palette::BOX_FILL,
                    palette::BOX_STROKE,
                    1.3,
                    " stroke-dasharray=\"6 3\"",
                ));
            }
            LegendItem::ForEach => {
                out.push_str(&sample_box(
                    sx + 3.0,
                    sy + 3.0,
                    palette::BOX_FILL,
                    palette::BOX_STROKE,
                    1.1,
                    "",
                ));
                out.push_str(&sample_box(sx, sy, palette::BOX_FILL, palette::BOX_STROKE, 1.3, ""));
            }
            LegendItem::Irreversible => {
                out.push_str(&sample_box(
                    sx,
                    sy,
                    palette::BOX_FILL,
                    palette::IRREVERSIBLE_STROKE,
                    2.6,
                    "",
                ));
            }
            LegendItem::NotIdempotent | LegendItem::Rollback | LegendItem::ContinueOnFailure => {
                if let Some(tag) = legend_tag(item) {
                    out.push_str(&draw_tag(sx, sy, &tag));
                }
            }
        }
        let _ = writeln!(
            out,
            "<text class=\"lb-legend-text\" x=\"{}\" y=\"{}\">{}</text>",
            num(sx + sample_w + 8.0),
            num(sy + 11.0),
            xml_escape(item.text())
        );
    }
    out.push_str("</g>\n");
    (out, items.len().div_ceil(columns) as f64 * LEGEND_ROW)
}

/// Width of a legend grid column: the widest item and the space after it.
fn legend_column_width(items: &[LegendItem]) -> f64 {
    items
        .iter()
        .map(|&i| legend_sample_width(i) + 8.0 + sans_width(i.text(), 11.0) + LEGEND_COLUMN_GAP)
        .fold(0.0, f64::max)
}

fn legend_sample_width(item: LegendItem) -> f64 {
    legend_tag(item).map_or(LEGEND_SAMPLE_W, |t| tag_width(&t.text))
}

fn legend_tag(item: LegendItem) -> Option<Tag> {
    let (text, class) = match item {
        LegendItem::NotIdempotent => ("idempotent: false", TagClass::Warning),
        LegendItem::Rollback => ("rollback: …", TagClass::Safe),
        LegendItem::ContinueOnFailure => ("continue_on_failure", TagClass::Neutral),
        _ => return None,
    };
    Some(Tag { text: text.into(), class })
}

fn sample_box(x: f64, y: f64, fill: &str, stroke: &str, stroke_w: f64, extra: &str) -> String {
    format!(
        "<rect x=\"{}\" y=\"{}\" width=\"34\" height=\"15\" rx=\"4\" fill=\"{fill}\" stroke=\"{stroke}\" stroke-width=\"{}\"{extra}/>\n",
        num(x),
        num(y),
        num(stroke_w)
    )
}

/// An edge's path: straight inside each pair of points, an S-curve with
/// horizontal ends between pairs.
fn path(points: &[(f64, f64)], dx: f64, dy: f64) -> String {
    let p: Vec<(f64, f64)> = points.iter().map(|&(x, y)| (x + dx, y + dy)).collect();
    let mut d = format!("M{} {}", num(p[0].0), num(p[0].1));
    for (i, w) in p.windows(2).enumerate() {
        let (a, b) = (w[0], w[1]);
        if i % 2 == 0 {
            if (b.0 - a.0).abs() > 0.05 || (b.1 - a.1).abs() > 0.05 {
                let _ = write!(d, " L{} {}", num(b.0), num(b.1));
            }
        } else {
            let mid = (a.0 + b.0) / 2.0;
            let _ = write!(
                d,
                " C{} {} {} {} {} {}",
                num(mid),
                num(a.1),
                num(mid),
                num(b.1),
                num(b.0),
                num(b.1)
            );
        }
    }
    d
}

fn style() -> String {
    format!(
        "<style>\n\
         .lb-title{{font-family:{SANS};font-size:18px;font-weight:bold;fill:{text}}}\n\
         .lb-sub{{font-family:{SANS};font-size:12px;fill:{muted}}}\n\
         .lb-wave{{font-family:{SANS};font-size:11px;font-weight:bold;fill:{muted};letter-spacing:0.5px}}\n\
         .lb-id{{font-family:{MONO};font-size:{ID_SIZE}px;font-weight:bold;fill:{text}}}\n\
         .lb-kind{{font-family:{MONO};font-size:{KIND_SIZE}px;fill:{muted}}}\n\
         .lb-tag{{font-family:{MONO};font-size:{TAG_SIZE}px}}\n\
         .lb-legend-text{{font-family:{SANS};font-size:11px;fill:#334155}}\n\
         .lb-edge{{fill:none;stroke:{edge};stroke-width:1.4}}\n\
         .lb-halo{{fill:none;stroke:#ffffff;stroke-width:5;stroke-opacity:0.9}}\n\
         </style>\n",
        text = palette::TEXT,
        muted = palette::MUTED,
        edge = palette::EDGE,
    )
}

fn mono_width(text: &str, size: f64) -> f64 {
    text.chars().count() as f64 * size * MONO_EM
}

fn sans_width(text: &str, size: f64) -> f64 {
    text.chars().count() as f64 * size * SANS_EM
}

fn tag_width(text: &str) -> f64 {
    mono_width(text, TAG_SIZE) + 2.0 * TAG_PAD
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A coordinate with at most one decimal, `-0` printed as `0`.
fn num(x: f64) -> String {
    let r = (x * 10.0).round() / 10.0;
    if r == 0.0 {
        return "0".into();
    }
    if r.fract() == 0.0 { format!("{r:.0}") } else { format!("{r:.1}") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::viz::test_support::{DEMO, compiled, generated};

    /// A small XML check: tags balance, attributes are quoted, `&` starts an
    /// entity, and no `<` hides in text.
    fn assert_well_formed(svg: &str) {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = svg;
        while let Some(open) = rest.find('<') {
            check_text(&rest[..open]);
            let close = rest[open..].find('>').expect("unclosed tag") + open;
            let tag = &rest[open + 1..close];
            assert!(!tag.contains('<'), "`<` inside tag: {tag}");
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(name.trim()), "mismatched </{name}>");
            } else {
                let self_closing = tag.ends_with('/');
                let body = tag.trim_end_matches('/');
                let name = body.split_whitespace().next().expect("tag name");
                assert_eq!(body.matches('"').count() % 2, 0, "unbalanced quotes in <{tag}>");
                for attr in body.split('"').skip(1).step_by(2) {
                    check_text(attr);
                }
                if !self_closing {
                    stack.push(name.to_string());
                }
            }
            rest = &rest[close + 1..];
        }
        check_text(rest);
        assert!(stack.is_empty(), "unclosed: {stack:?}");
    }

    fn check_text(text: &str) {
        assert!(!text.contains('>') || text.trim().is_empty(), "raw `>` in text: {text}");
        for (i, _) in text.match_indices('&') {
            let entity = &text[i..];
            let end = entity.find(';').expect("entity without `;`");
            let name = &entity[1..end];
            assert!(
                ["amp", "lt", "gt", "quot", "#39"].contains(&name),
                "unknown entity &{name}; in {text}"
            );
        }
    }

    #[test]
    fn svg_is_well_formed() {
        for yaml in [DEMO.to_string(), generated(5, 3), generated(30, 7), generated(60, 8)] {
            let out = render(&compiled(&yaml));
            assert!(out.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
            assert!(out.ends_with("</svg>\n"));
            assert_well_formed(&out);
        }
    }

    #[test]
    fn svg_escapes_descriptions_and_names() {
        let wf = compiled(
            "name: x\ndescription: \"</svg><script>alert('&')</script>\"\nsteps:\n  a: { uses: set, description: \"a \\\"quoted\\\" <b> & c\" }\n",
        );
        let out = render(&wf);
        assert_well_formed(&out);
        assert!(!out.contains("<script"));
        assert!(out.contains("&lt;/svg&gt;&lt;script&gt;alert(&#39;&amp;&#39;)&lt;/script&gt;"));
        assert!(out.contains("<title>a (set): a &quot;quoted&quot; &lt;b&gt; &amp; c</title>"));
    }

    #[test]
    fn svg_draws_every_step_edge_and_used_mark() {
        let wf = compiled(&generated(30, 7));
        let out = render(&wf);
        for s in &wf.steps {
            assert!(out.contains(&format!("<g class=\"lb-step\" id=\"lb-step-{}\">", s.id)));
        }
        let edges: usize = wf.steps.iter().map(|s| s.needs.len()).sum();
        assert_eq!(
            out.matches("class=\"lb-edge\" d=").count(),
            edges + 1,
            "edges + the legend arrow"
        );
        for item in
            ["waits for people", "when: skipped", "for_each: runs", "irreversible:", "crash"]
        {
            assert!(out.contains(item), "legend lacks {item}");
        }
        assert!(out.contains(">wave 7</text>"));
        assert!(out.contains("RTO 15m · RPO 5m"));
    }

    #[test]
    fn svg_legend_lists_only_marks_in_use() {
        let out = render(&compiled(DEMO));
        assert!(out.contains("waits for people"));
        assert!(!out.contains("for_each: runs"));
        assert!(!out.contains("irreversible:"));
    }

    #[test]
    fn svg_is_deterministic() {
        let wf = compiled(&generated(30, 7));
        assert_eq!(render(&wf), render(&wf));
        assert_eq!(render(&wf), render(&compiled(&generated(30, 7))));
    }

    #[test]
    fn boxes_fit_their_text() {
        let long = Node::new(
            "promote_database_replica_in_dc02",
            "shell",
            Marks::of(&compiled(DEMO).steps[0]),
        );
        assert!(long.w >= mono_width("promote_database_replica_in_dc02", ID_SIZE) + 2.0 * PAD_X);
        let short = Node::new("a", "set", Marks::of(&compiled(DEMO).steps[0]));
        assert!(short.w < long.w);
    }

    #[test]
    fn status_colours_each_step_and_leaves_the_plain_picture_alone() {
        let wf = compiled(DEMO);
        let status: HashMap<String, String> =
            [("a", "succeeded"), ("c", "waiting"), ("b", "fai<led")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        let out = render_with_status(&wf, &status);
        assert_well_formed(&out);
        assert!(out.contains(
            "<g class=\"lb-step lb-status-succeeded\" id=\"lb-step-a\" data-status=\"succeeded\">"
        ));
        assert!(out.contains("fill=\"#dcfce7\" stroke=\"#15803d\""), "succeeded is green");
        assert!(out.contains("fill=\"#fef3c7\" stroke=\"#b45309\""), "waiting is amber");
        assert!(out.contains(">set · succeeded</text>"));
        assert!(out.contains("data-status=\"pending\""), "a step without a row is pending");
        assert!(out.contains("fai&lt;led"));
        assert!(!render(&wf).contains("data-status"));
    }

    #[test]
    fn numbers_are_short_and_stable() {
        assert_eq!(num(12.0), "12");
        assert_eq!(num(12.345), "12.3");
        assert_eq!(num(-0.01), "0");
    }
}
