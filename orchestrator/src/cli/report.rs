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
use crate::viz::timeline::{bars, colour, escape, ms, timeline_svg};

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
