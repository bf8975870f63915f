//! The timeline of a run: a bar per attempt (or per wait, for a step with
//! none) against the run's clock, with the RTO drawn as a red line when the
//! run reaches it. `lifeboat report --html` embeds it; `serve` answers it
//! at `GET /api/v1/runs/{id}/timeline.svg` for the web UI.

use serde_json::Value;

use crate::cli::progress::human_ms;

/// Milliseconds of an RFC 3339 field, if set.
pub fn ms(v: &Value) -> Option<i64> {
    v.as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp_millis())
}

/// One bar of the timeline: a step's attempt, or a step's whole wait.
pub struct Bar {
    pub label: String,
    pub start: i64,
    pub end: i64,
    pub status: String,
}

pub fn bars(doc: &Value, now: i64) -> Vec<Bar> {
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

pub fn colour(status: &str) -> &'static str {
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
pub fn escape(text: &str) -> String {
    crate::text::visible(text)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The SVG timeline: a row per bar, the RTO as a red line.
pub fn timeline_svg(bars: &[Bar], origin: i64, end: i64, rto: Option<i64>) -> String {
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

/// The timeline of run document `doc` (the API's JSON) at `now`, against
/// `rto_ms`: from the run's start (or creation) to its end (or now).
pub fn of_document(doc: &Value, rto_ms: Option<i64>, now: i64) -> String {
    let origin = ms(&doc["started_at"]).or_else(|| ms(&doc["created_at"])).unwrap_or(now);
    let end = ms(&doc["finished_at"]).unwrap_or(now);
    timeline_svg(&bars(doc, now), origin, end, rto_ms)
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
