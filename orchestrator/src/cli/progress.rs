//! Live progress of a run, one line per transition, for `run --wait`.

use std::collections::HashMap;
use std::io::Write;

use tokio::sync::broadcast;

use crate::events::RunEvent::{self, *};
use crate::store::EventRecord;

/// Prints events of the runs in `tree` (a run and its children) as they
/// are committed, until the channel closes or the task is aborted.
pub async fn print_live(
    mut events: broadcast::Receiver<EventRecord>,
    started: i64,
    done: tokio_util::sync::CancellationToken,
) {
    let mut step_started: HashMap<(String, String), i64> = HashMap::new();
    loop {
        // Events first: once the run is done, what is queued is still shown.
        let event = tokio::select! {
            biased;
            event = events.recv() => event,
            _ = done.cancelled() => match events.try_recv() {
                Ok(e) => Ok(e),
                Err(broadcast::error::TryRecvError::Lagged(n)) => Err(broadcast::error::RecvError::Lagged(n)),
                Err(_) => return,
            },
        };
        let event = match event {
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
    // A name this lifeboat does not know (a newer one wrote it) is not shown.
    let kind = RunEvent::parse(&e.kind)?;
    let text = match kind {
        Started => format!("▶ run …{run} started"),
        StepStarted => {
            step_started.insert(key.clone(), e.at);
            let attempt = data.get("attempt").and_then(|a| a.as_u64()).unwrap_or(1);
            if attempt > 1 {
                format!("● {step} attempt {attempt}")
            } else {
                format!("● {step}")
            }
        }
        StepSucceeded => format!("✔ {step}{}", took(step_started)),
        StepSkipped if data.get("drill").is_some() => format!("○ {step} skipped (drill: skip)"),
        StepSkipped => format!("○ {step} skipped (`when` is false)"),
        FaultInjected => format!(
            "⚡ {step} attempt {}: injected fault `{}` (drill)",
            data.get("attempt").and_then(|a| a.as_u64()).unwrap_or(1),
            text_of(&data, "fault")
        ),
        StepRetrying => {
            let delay = data.get("delay_ms").and_then(|d| d.as_u64()).unwrap_or(0);
            format!("↻ {step} failed: {} — retrying in {}", error_of(&data), human_ms(delay as i64))
        }
        StepFailed => format!("✖ {step} failed{}: {}", took(step_started), error_of(&data)),
        StepWaiting => format!("⏸ {step} waiting"),
        ApprovalRequested => format!("⏸ {step} waiting for approval"),
        Escalated => format!(
            "⏸ {step} paging tier {} ({})",
            data.get("tier").and_then(|t| t.as_u64()).unwrap_or(1),
            list_of(&data, "channels")
        ),
        NeedsHuman => {
            format!("⚠ {step} needs a person: its attempt was interrupted and it is not idempotent")
        }
        StepInterrupted => format!("↻ {step} was interrupted; retrying"),
        Notification => {
            let channels: Vec<&str> = data
                .get("channels")
                .and_then(|c| c.as_array())
                .map(|a| a.iter().filter_map(|c| c.as_str()).collect())
                .unwrap_or_default();
            format!("✉ {step} notification queued for {}", channels.join(", "))
        }
        Approved => format!("✔ {step} approved by {}", list_of(&data, "approved_by")),
        ApprovalRecorded => format!(
            "⏸ {step} approved by {} ({} of {} needed)",
            text_of(&data, "by"),
            data.get("have").and_then(|b| b.as_u64()).unwrap_or(0),
            data.get("need").and_then(|b| b.as_u64()).unwrap_or(0)
        ),
        Rejected => format!("✖ {step} rejected by {}", text_of(&data, "rejected_by")),
        DecisionRefused => format!(
            "⚠ {step}: {} refused: {}",
            text_of(&data, "by"),
            data.get("reason").and_then(|r| r.as_str()).unwrap_or("")
        ),
        ApprovalTimedOut => format!("⌛ {step} approval timed out"),
        Acknowledged => format!("✔ {step} acknowledged by {}", text_of(&data, "acked_by")),
        StatusUpdate => format!("✉ {step} status update to the paged tiers"),
        EscalationExhausted => format!("✖ {step}: nobody acknowledged"),
        ChildStarted => format!("↳ {step} started child run {}", text_of(&data, "run")),
        RollingBack => "↶ rolling back".to_string(),
        RollbackStarted => format!("↶ {step} rollback"),
        StepRolledBack => format!("↶ {step} rolled back"),
        RollbackStepFailed => format!("✖ {step} rollback failed: {}", error_of(&data)),
        Succeeded => "■ run succeeded".to_string(),
        Failed => format!("■ run failed: {}", error_of(&data)),
        RolledBack => "■ run rolled back".to_string(),
        RollbackFailed => "■ run rollback failed".to_string(),
        Cancelled => "■ run cancelled".to_string(),
        RtoBreached => "⚠ recovery time objective breached".to_string(),
        Retried => "↻ run retried".to_string(),
        Paused => format!("⏸ run paused by {}: no new step starts", text_of(&data, "by")),
        Resumed => {
            format!("▶ run resumed by {}", text_of(&data, "by"))
        }
        Quarantined => format!(
            "■ run quarantined: {}",
            data.get("reason").and_then(|r| r.as_str()).unwrap_or("")
        ),
    };
    Some(format!("{at}  {text}"))
}

/// A text field of an event's data: `?` when absent (an older or newer
/// lifeboat wrote the event without it).
fn text_of<'a>(data: &'a serde_json::Value, key: &str) -> &'a str {
    data.get(key).and_then(|v| v.as_str()).unwrap_or("?")
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

pub use crate::text::human_ms;
