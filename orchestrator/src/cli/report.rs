//! `lifeboat report RUN [--html FILE] [--format text|json|junit]`: what
//! happened when — a timeline of every step and attempt against the RTO,
//! a drill's verdict, every decision and notification, for the
//! post-incident review or as drill evidence. The terminal gets bars;
//! `--html` writes one self-contained page with an SVG timeline, the step
//! table, the verdict, decisions and notifications; `json` and `junit` are
//! in `evidence.rs`.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::Value;

use super::Ctx;
use super::progress::human_ms;

#[derive(Debug, clap::Args)]
pub struct Args {
    pub run: String,
    /// Write an HTML report (SVG timeline) to this file.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// `text` (a timeline), `json` (one document) or `junit` (XML, a
    /// testcase per drill expectation), on standard output.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Junit,
}

/// Milliseconds of an RFC 3339 field, if set.
fn ms(v: &Value) -> Option<i64> {
    v.as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp_millis())
}

/// One bar of the timeline: a step's attempt, or a step's whole wait.
struct Bar {
    label: String,
    start: i64,
    end: i64,
    status: String,
}

fn bars(doc: &Value, now: i64) -> Vec<Bar> {
    let mut out = Vec::new();
    for step in doc["steps"].as_array().into_iter().flatten() {
        let id = step["id"].as_str().unwrap_or("").to_string();
        let attempts: Vec<&Value> = step["attempts"].as_array().into_iter().flatten().collect();
        if attempts.is_empty() {
            if let Some(start) = ms(&step["started_at"]) {
                out.push(Bar {
                    label: id.clone(),
                    start,
                    end: ms(&step["finished_at"]).unwrap_or(now),
                    status: step["status"].as_str().unwrap_or("").to_string(),
                });
            }
            continue;
        }
        for a in attempts {
            let Some(start) = ms(&a["started_at"]) else { continue };
            let phase = if a["phase"] == "rollback" { " rollback" } else { "" };
            out.push(Bar {
                label: format!("{id}{phase} #{}", a["n"]),
                start,
                end: ms(&a["finished_at"]).unwrap_or(now),
                status: a["status"].as_str().unwrap_or("").to_string(),
            });
        }
    }
    out
}

fn colour(status: &str) -> &'static str {
    match status {
        "succeeded" => "#2e7d32",
        "failed" | "rollback_failed" => "#c62828",
        "interrupted" | "needs_human" => "#ef6c00",
        "running" => "#1565c0",
        "waiting" | "retry_wait" => "#6a1b9a",
        "skipped" | "cancelled" => "#9e9e9e",
        "rolled_back" => "#795548",
        _ => "#607d8b",
    }
}

/// Text for HTML: markup characters escaped, control characters made
/// visible (an XML parser refuses them in the SVG, a page hides them).
fn escape(text: &str) -> String {
    crate::text::visible(text)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The SVG timeline: a row per bar, the RTO as a red line.
fn timeline_svg(bars: &[Bar], origin: i64, end: i64, rto: Option<i64>) -> String {
    let (left, width, row) = (230.0, 640.0, 22.0);
    // Scaled to the run: an RTO far beyond it is named, not drawn.
    let span = (end - origin).max(1) as f64;
    let x = |t: i64| left + (t - origin) as f64 / span * width;
    let height = 40.0 + row * bars.len() as f64;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">",
        left + width + 20.0
    );
    for k in 0..=4 {
        let t = origin + (span as i64) * k / 4;
        let px = x(t);
        svg += &format!(
            "<line x1=\"{px}\" y1=\"20\" x2=\"{px}\" y2=\"{height}\" stroke=\"#ddd\"/><text x=\"{px}\" y=\"14\" text-anchor=\"middle\">{}</text>",
            human_ms(t - origin)
        );
    }
    for (i, b) in bars.iter().enumerate() {
        let y = 26.0 + row * i as f64;
        let (x0, x1) = (x(b.start), x(b.end));
        svg += &format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text><rect x=\"{x0}\" y=\"{y}\" width=\"{}\" height=\"{}\" fill=\"{}\"><title>{} {} {}</title></rect>",
            left - 6.0,
            y + 13.0,
            escape(&b.label),
            (x1 - x0).max(2.0),
            row - 6.0,
            colour(&b.status),
            escape(&b.label),
            escape(&b.status),
            human_ms(b.end - b.start)
        );
    }
    if let Some(r) = rto.filter(|&r| origin + r > end) {
        svg += &format!(
            "<text x=\"{}\" y=\"{}\" fill=\"#2e7d32\" text-anchor=\"end\">RTO {} — the run used {:.0}% of it</text>",
            left + width,
            height - 4.0,
            human_ms(r),
            span / r as f64 * 100.0
        );
    }
    if let Some(r) = rto.filter(|&r| origin + r <= end) {
        let px = x(origin + r);
        svg += &format!(
            "<line x1=\"{px}\" y1=\"20\" x2=\"{px}\" y2=\"{height}\" stroke=\"#c62828\" stroke-dasharray=\"5,3\"/><text x=\"{px}\" y=\"{}\" fill=\"#c62828\" text-anchor=\"end\">RTO {}</text>",
            height - 4.0,
            human_ms(r)
        );
    }
    svg + "</svg>"
}

pub async fn run(ctx: &Ctx, args: Args) -> anyhow::Result<ExitCode> {
    let run_id = ctx.store.resolve_run_id(&args.run).await?;
    let doc =
        serde_json::to_value(crate::views::RunDocument::load(ctx.store.as_ref(), &run_id).await?)?;
    let record = ctx.store.run(&run_id).await?;
    let rto = match record {
        Some(r) => match ctx.store.definition(&r.definition_hash).await? {
            Some(def) => crate::compile::compile(&def.file, &def.source, Default::default())
                .ok()
                .and_then(|wf| wf.definition.objectives.and_then(|o| o.rto))
                .map(|d| d.as_millis() as i64),
            None => None,
        },
        None => None,
    };
    let now = crate::store::now_ms();
    let origin = ms(&doc["started_at"]).or_else(|| ms(&doc["created_at"])).unwrap_or(now);
    let end = ms(&doc["finished_at"]).unwrap_or(now);
    let took = end - origin;
    let verdict = match rto {
        Some(r) if took <= r => format!("within the RTO of {}", human_ms(r)),
        Some(r) => format!("OVER the RTO of {} by {}", human_ms(r), human_ms(took - r)),
        None => "no RTO declared".into(),
    };
    let decisions = super::evidence::decisions(&ctx.store.events(&run_id, 0).await?);
    match args.format {
        Format::Json => {
            let report = super::evidence::document(&doc, rto, took, decisions);
            outln!("{}", serde_json::to_string_pretty(&report)?);
            return Ok(ExitCode::SUCCESS);
        }
        Format::Junit => {
            out!("{}", super::evidence::junit(&doc, took));
            return Ok(ExitCode::SUCCESS);
        }
        Format::Text => {}
    }
    let bars = bars(&doc, now);
    let status = doc["status"].as_str().unwrap_or("");
    let workflow = doc["workflow"].as_str().unwrap_or("");
    outln!(
        "run {run_id} of {}: {} in {}, {verdict}",
        crate::text::inline(workflow),
        crate::text::inline(status),
        human_ms(took)
    );
    let scale = |t: i64| ((t - origin) as f64 / took.max(1) as f64 * 40.0).round() as usize;
    for b in &bars {
        let (a, z) = (scale(b.start).min(40), scale(b.end).clamp(scale(b.start) + 1, 41));
        outln!(
            "  {:<28} {:>8} +{:<8} |{}{}{}| {}",
            crate::text::inline(&b.label),
            human_ms(b.end - b.start),
            human_ms(b.start - origin),
            " ".repeat(a),
            "█".repeat(z - a),
            " ".repeat(41usize.saturating_sub(z)),
            crate::text::inline(&b.status)
        );
    }
    if let Some(verdict) = doc.get("verdict") {
        super::drill::print_verdict(verdict);
    }
    for d in &decisions {
        outln!("  decision: {}", crate::text::inline(&decision_line(d)));
    }
    for n in doc["notifications"].as_array().into_iter().flatten() {
        outln!("  notification: {}", crate::text::inline(&notification_line(n)));
    }
    if let Some(path) = args.html {
        let evidence = evidence_html(&doc, &decisions);
        let rows: String = doc["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                format!(
                    "<tr><td>{}</td><td style=\"color:{}\">{}</td><td>{}</td><td>{}</td></tr>",
                    escape(s["id"].as_str().unwrap_or("")),
                    colour(s["status"].as_str().unwrap_or("")),
                    escape(s["status"].as_str().unwrap_or("")),
                    s["attempts"].as_array().map_or(0, |a| a.len()),
                    escape(s["error"].as_str().unwrap_or(""))
                )
            })
            .collect();
        let notes: String = doc["notifications"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|n| {
                format!(
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    escape(n["event"].as_str().unwrap_or("")),
                    escape(n["channel"].as_str().unwrap_or("")),
                    escape(n["status"].as_str().unwrap_or("")),
                    escape(n["detail"].as_str().or(n["error"].as_str()).unwrap_or(""))
                )
            })
            .collect();
        let html = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>lifeboat report {run}</title>\
             <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}</style></head><body>\
             <h1>{workflow}: {status}</h1><p>Run {run}, took {took}, {verdict}.</p><h2>Timeline</h2>{svg}\
             <h2>Steps</h2><table><tr><th>step</th><th>status</th><th>attempts</th><th>error</th></tr>{rows}</table>\
             <h2>Notifications</h2><table><tr><th>event</th><th>channel</th><th>status</th><th>answer</th></tr>{notes}</table>{evidence}</body></html>",
            run = escape(&run_id),
            workflow = escape(workflow),
            status = escape(status),
            took = human_ms(took),
            verdict = escape(&verdict),
            svg = timeline_svg(&bars, origin, end, rto),
        );
        std::fs::write(&path, html)?;
        outln!("report written to {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `2026-01-01T00:00:00.000Z approved on gate by ann`.
fn decision_line(d: &Value) -> String {
    let by = match &d["by"] {
        Value::Null => String::new(),
        Value::String(s) => format!(" by {s}"),
        Value::Array(people) => {
            let names: Vec<String> =
                people.iter().map(|p| p.as_str().map_or(p.to_string(), String::from)).collect();
            format!(" by {}", names.join(", "))
        }
        other => format!(" by {other}"),
    };
    format!(
        "{} {} on {}{by}",
        d["at"].as_str().unwrap_or(""),
        d["decision"].as_str().unwrap_or(""),
        d["step"].as_str().unwrap_or("the run")
    )
}

fn notification_line(n: &Value) -> String {
    format!(
        "{} → {} ({}, {})",
        n["event"].as_str().unwrap_or(""),
        n["channel"].as_str().unwrap_or(""),
        n["status"].as_str().unwrap_or(""),
        n["queued_at"].as_str().unwrap_or("")
    )
}

/// The drill verdict and the decisions, as HTML sections.
fn evidence_html(doc: &Value, decisions: &[Value]) -> String {
    let mut html = String::new();
    if let Some(v) = doc.get("verdict") {
        let passed = v["passed"] == true;
        html += &format!(
            "<h2>Drill verdict: <span style=\"color:{}\">{}</span></h2><p>Scenario {}.</p><table><tr><th></th><th>expectation</th><th>expected</th><th>actual</th></tr>",
            if passed { colour("succeeded") } else { colour("failed") },
            if passed { "PASSED" } else { "FAILED" },
            escape(doc["scenario"].as_str().unwrap_or("(none)"))
        );
        for c in v["expectations"].as_array().into_iter().flatten() {
            let ok = c["ok"] == true;
            html += &format!(
                "<tr><td style=\"color:{}\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                if ok { colour("succeeded") } else { colour("failed") },
                if ok { "PASS" } else { "FAIL" },
                escape(c["what"].as_str().unwrap_or("")),
                escape(c["expected"].as_str().unwrap_or("")),
                escape(c["actual"].as_str().unwrap_or(""))
            );
        }
        html += "</table>";
    }
    html += "<h2>Decisions</h2><ul>";
    for d in decisions {
        html += &format!("<li>{}</li>", escape(&decision_line(d)));
    }
    html + "</ul>"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeline_marks_the_rto_and_colours_attempts() {
        let doc = serde_json::json!({"steps": [
            {"id": "a", "status": "succeeded", "started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:00:02Z",
             "attempts": [
                {"n": 1, "phase": "forward", "status": "failed", "started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:00:01Z"},
                {"n": 2, "phase": "forward", "status": "succeeded", "started_at": "2026-01-01T00:00:01Z", "finished_at": "2026-01-01T00:00:02Z"}]},
            {"id": "gate", "status": "waiting", "started_at": "2026-01-01T00:00:02Z", "finished_at": null, "attempts": []}
        ]});
        let origin = ms(&serde_json::json!("2026-01-01T00:00:00Z")).unwrap();
        let bars = bars(&doc, origin + 5_000);
        assert_eq!(bars.len(), 3);
        assert_eq!(bars[2].end - bars[2].start, 3_000, "a wait still open runs to now");
        let svg = timeline_svg(&bars, origin, origin + 5_000, Some(4_000));
        assert!(svg.contains("RTO 4.0s") && svg.contains(colour("failed")) && svg.contains("a #2"));
        let within = timeline_svg(&bars, origin, origin + 5_000, Some(50_000));
        assert!(within.contains("the run used 10% of it"), "{within}");
    }
}
