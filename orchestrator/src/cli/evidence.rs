//! `lifeboat report --format json|junit`: a run as evidence to file — the
//! drill verdict with every expectation, every decision people took (who,
//! what, when) and every notification; JUnit XML so a CI pipeline can run
//! drills (one testcase per expectation).

use serde_json::{Value, json};

use crate::events::RunEvent;
use crate::store::EventRecord;
use crate::views::Time;

/// The events that record people's decisions and what became of them.
const DECISIONS: &[RunEvent] = &[
    RunEvent::ApprovalRecorded,
    RunEvent::Approved,
    RunEvent::Rejected,
    RunEvent::Acknowledged,
    RunEvent::DecisionRefused,
    RunEvent::ApprovalTimedOut,
];

/// Every decision of the run, oldest first: when, which step, what, by whom.
pub fn decisions(events: &[EventRecord]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| RunEvent::parse(&e.kind).is_some_and(|k| DECISIONS.contains(&k)))
        .map(|e| {
            let data = e.data.clone().unwrap_or(Value::Null);
            let by = ["by", "rejected_by", "acked_by", "approved_by"]
                .iter()
                .find_map(|k| data.get(*k).filter(|v| !v.is_null()).cloned());
            json!({
                "at": Time::at(e.at),
                "step": e.step_id,
                "decision": e.kind,
                "by": by,
                "data": data,
            })
        })
        .collect()
}

/// The report as one JSON document.
pub fn document(doc: &Value, rto_ms: Option<i64>, took_ms: i64, decisions: Vec<Value>) -> Value {
    json!({
        "run": doc["id"],
        "workflow": doc["workflow"],
        "mode": doc["mode"],
        "status": doc["status"],
        "duration_ms": took_ms,
        "rto_ms": rto_ms,
        "within_rto": rto_ms.map(|r| took_ms <= r),
        // `verdict` is null while the drill runs.
        "drill": (doc["mode"] == "drill").then(|| json!({
            "scenario": doc["scenario"],
            "faults": doc["drill"]["faults"],
            "started_by": doc["trigger"]["by"],
            "verdict": doc["verdict"],
        })),
        "decisions": decisions,
        "notifications": doc["notifications"],
        "document": doc,
    })
}

/// Text for XML: markup escaped, control characters made visible (XML 1.0
/// refuses most of them even as references).
fn xml(text: &str) -> String {
    crate::text::visible(text)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// The run as JUnit XML: a suite per run, a testcase per expectation of
/// its drill verdict (a run without one: a single case, "status", that
/// holds when it succeeded).
pub fn junit(doc: &Value, took_ms: i64) -> String {
    let workflow = doc["workflow"].as_str().unwrap_or("");
    let scenario = doc["scenario"].as_str();
    let suite = match scenario {
        Some(s) => format!("{workflow}/{s}"),
        None => workflow.to_string(),
    };
    let status = doc["status"].as_str().unwrap_or("");
    let cases: Vec<(String, String, String, bool)> = match doc["verdict"]["expectations"].as_array()
    {
        Some(checks) => checks
            .iter()
            .map(|c| {
                let text = |k: &str| c[k].as_str().unwrap_or("").to_string();
                (text("what"), text("expected"), text("actual"), c["ok"] == true)
            })
            .collect(),
        None => vec![("status".into(), "succeeded".into(), status.into(), status == "succeeded")],
    };
    let failures = cases.iter().filter(|c| !c.3).count();
    let secs = format!("{:.3}", took_ms.max(0) as f64 / 1000.0);
    let classname = xml(&suite.replace('/', "."));
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out += &format!(
        "<testsuites name=\"lifeboat\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" time=\"{secs}\">\n",
        cases.len()
    );
    out += &format!(
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\" time=\"{secs}\" timestamp=\"{}\">\n",
        xml(&suite),
        cases.len(),
        xml(doc["started_at"].as_str().or(doc["created_at"].as_str()).unwrap_or(""))
    );
    out += "    <properties>\n";
    for (name, value) in [
        ("run", doc["id"].as_str()),
        ("mode", doc["mode"].as_str()),
        ("status", Some(status)),
        ("scenario", scenario),
        ("started_by", doc["trigger"]["by"].as_str()),
    ] {
        if let Some(v) = value {
            out += &format!("      <property name=\"{name}\" value=\"{}\"/>\n", xml(v));
        }
    }
    if let Some(ms) = doc["verdict"]["recovery_ms"].as_i64() {
        out += &format!("      <property name=\"recovery_ms\" value=\"{ms}\"/>\n");
    }
    out += "    </properties>\n";
    for (what, expected, actual, ok) in &cases {
        out +=
            &format!("    <testcase classname=\"{classname}\" name=\"{}\" time=\"0\"", xml(what));
        if *ok {
            out += "/>\n";
        } else {
            let message = format!("expected {expected}, actual {actual}");
            out += &format!(
                ">\n      <failure type=\"expectation\" message=\"{}\">{}: {}</failure>\n    </testcase>\n",
                xml(&message),
                xml(what),
                xml(&message)
            );
        }
    }
    out += "  </testsuite>\n</testsuites>\n";
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junit_has_a_testcase_per_expectation_and_escapes_what_it_quotes() {
        let doc = json!({
            "id": "r1", "workflow": "failover", "scenario": "happy", "mode": "drill",
            "status": "failed", "started_at": "2026-01-01T00:00:00.000Z",
            "trigger": {"by": "ann <ops>"},
            "verdict": {"passed": false, "recovery_ms": 1500, "expectations": [
                {"what": "status", "expected": "succeeded", "actual": "failed", "ok": false},
                {"what": "output x", "expected": "a match of /a&b/", "actual": "\"a\u{1b}\"", "ok": false},
            ]},
        });
        let xml = junit(&doc, 1500);
        assert!(xml.contains("tests=\"2\" failures=\"2\""), "{xml}");
        assert!(xml.contains("<testcase classname=\"failover.happy\" name=\"status\" time=\"0\">"));
        assert!(xml.contains("message=\"expected succeeded, actual failed\""), "{xml}");
        assert!(xml.contains("value=\"ann &lt;ops&gt;\"") && xml.contains("a&amp;b"), "{xml}");
        assert!(!xml.contains('\u{1b}'), "control characters made visible: {xml}");
    }

    #[test]
    fn a_run_without_a_verdict_is_one_case_that_holds_when_it_succeeded() {
        let doc = json!({"id": "r1", "workflow": "w", "status": "succeeded", "mode": "live"});
        let xml = junit(&doc, 10);
        assert!(
            xml.contains("tests=\"1\" failures=\"0\"")
                && xml.contains("name=\"status\" time=\"0\"/>")
        );
    }
}
