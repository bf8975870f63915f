//! Reading `show --json` run documents: steps, attempts, timestamps, statuses.

use serde_json::Value;

pub fn is_terminal(status: &str) -> bool {
    matches!(status, "succeeded" | "failed" | "rolled_back" | "rollback_failed" | "cancelled")
}

/// The step of a `show --json` document.
pub fn step<'a>(doc: &'a Value, id: &str) -> &'a Value {
    doc["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"] == id))
        .unwrap_or_else(|| panic!("no step `{id}` in {doc:#}"))
}

/// The forward attempts of a step.
pub fn attempts<'a>(doc: &'a Value, id: &str) -> Vec<&'a Value> {
    step(doc, id)["attempts"]
        .as_array()
        .map(|a| a.iter().filter(|a| a["phase"] != "rollback").collect())
        .unwrap_or_default()
}

/// An RFC 3339 timestamp of a `show --json` document, in milliseconds since the epoch.
pub fn ms(v: &Value) -> i64 {
    let text = v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}"));
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("`{text}` is not RFC 3339: {e}"))
        .timestamp_millis()
}
