//! Live progress of a run, one line per transition, for `run --wait`.

use std::collections::HashMap;
use std::io::Write;

use tokio::sync::broadcast;

use crate::store::EventRecord;

/// Prints events of the runs in `tree` (a run and its children) as they
/// are committed, until the channel closes or the task is aborted.
pub async fn print_live(mut events: broadcast::Receiver<EventRecord>, started: i64) {
    let mut step_started: HashMap<(String, String), i64> = HashMap::new();
    loop {
        let event = match events.recv().await {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                outln!("  … {n} events not shown (the terminal fell behind)");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if let Some(line) = format_event(&event, started, &mut step_started) {
            // Errors quote step output: shown, never obeyed by the terminal.
            outln!("{}", crate::text::inline(&line));
            let _ = std::io::stdout().flush();
        }
    }
}

fn format_event(
    e: &EventRecord,
    started: i64,
    step_started: &mut HashMap<(String, String), i64>,
) -> Option<String> {
    let at = format!("{:>8.3}s", (e.at - started) as f64 / 1000.0);
    let step = e.step_id.clone().unwrap_or_default();
    let key = (e.run_id.clone(), step.clone());
    let data = e.data.clone().unwrap_or_default();
    let took = |map: &mut HashMap<(String, String), i64>| {
        map.remove(&key).map(|s| format!(" in {}", human_ms(e.at - s))).unwrap_or_default()
    };
    let run = &e.run_id[e.run_id.len().saturating_sub(8)..];
    let text = match e.kind.as_str() {
        "started" => format!("▶ run …{run} started"),
        "step_started" => {
            step_started.insert(key.clone(), e.at);
            let attempt = data.get("attempt").and_then(|a| a.as_u64()).unwrap_or(1);
            if attempt > 1 {
                format!("● {step} attempt {attempt}")
            } else {
                format!("● {step}")
            }
        }
        "step_succeeded" => format!("✔ {step}{}", took(step_started)),
        "step_skipped" => format!("○ {step} skipped (`when` is false)"),
        "step_retrying" => {
            let delay = data.get("delay_ms").and_then(|d| d.as_u64()).unwrap_or(0);
            format!("↻ {step} failed: {} — retrying in {}", error_of(&data), human_ms(delay as i64))
        }
        "step_failed" => format!("✖ {step} failed{}: {}", took(step_started), error_of(&data)),
        "step_waiting" => format!("⏸ {step} waiting"),
        "approval_requested" => format!("⏸ {step} waiting for approval"),
        "escalated" => format!(
            "⏸ {step} paging tier {} ({})",
            data.get("tier").and_then(|t| t.as_u64()).unwrap_or(1),
            list_of(&data, "channels")
        ),
        "needs_human" => {
            format!("⚠ {step} needs a person: its attempt was interrupted and it is not idempotent")
        }
        "step_interrupted" => format!("↻ {step} was interrupted; retrying"),
        "notification" => {
            let channels: Vec<&str> = data
                .get("channels")
                .and_then(|c| c.as_array())
                .map(|a| a.iter().filter_map(|c| c.as_str()).collect())
                .unwrap_or_default();
            format!("✉ {step} notification queued for {}", channels.join(", "))
        }
        "approved" => format!("✔ {step} approved by {}", list_of(&data, "approved_by")),
        "approval_recorded" => format!(
            "⏸ {step} approved by {} ({} of {} needed)",
            data.get("by").and_then(|b| b.as_str()).unwrap_or("?"),
            data.get("have").and_then(|b| b.as_u64()).unwrap_or(0),
            data.get("need").and_then(|b| b.as_u64()).unwrap_or(0)
        ),
        "rejected" => format!(
            "✖ {step} rejected by {}",
            data.get("rejected_by").and_then(|b| b.as_str()).unwrap_or("?")
        ),
        "decision_refused" => format!(
            "⚠ {step}: {} refused: {}",
            data.get("by").and_then(|b| b.as_str()).unwrap_or("?"),
            data.get("reason").and_then(|b| b.as_str()).unwrap_or("")
        ),
        "approval_timed_out" => format!("⌛ {step} approval timed out"),
        "acknowledged" => format!(
            "✔ {step} acknowledged by {}",
            data.get("acked_by").and_then(|b| b.as_str()).unwrap_or("?")
        ),
        "status_update" => format!("✉ {step} status update to the paged tiers"),
        "escalation_exhausted" => format!("✖ {step}: nobody acknowledged"),
        "child_started" => format!(
            "↳ {step} started child run {}",
            data.get("run").and_then(|r| r.as_str()).unwrap_or("?")
        ),
        "rolling_back" => "↶ rolling back".to_string(),
        "rollback_started" => format!("↶ {step} rollback"),
        "step_rolled_back" => format!("↶ {step} rolled back"),
        "rollback_step_failed" => format!("✖ {step} rollback failed: {}", error_of(&data)),
        "succeeded" => "■ run succeeded".to_string(),
        "failed" => format!("■ run failed: {}", error_of(&data)),
        "rolled_back" => "■ run rolled back".to_string(),
        "rollback_failed" => "■ run rollback failed".to_string(),
        "cancelled" => "■ run cancelled".to_string(),
        "rto_breached" => "⚠ recovery time objective breached".to_string(),
        _ => return None,
    };
    Some(format!("{at}  {text}"))
}

fn list_of(data: &serde_json::Value, key: &str) -> String {
    data.get(key)
        .and_then(|c| c.as_array())
        .map(|a| a.iter().filter_map(|c| c.as_str()).collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

fn error_of(data: &serde_json::Value) -> String {
    data.get("error")
        .and_then(|e| e.as_str())
        .unwrap_or("")
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

pub fn human_ms(ms: i64) -> String {
    match ms {
        ms if ms < 1_000 => format!("{ms}ms"),
        ms if ms < 60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        ms => format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000),
    }
}
