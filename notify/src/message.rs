//! What a channel delivers: a [`Message`], already rendered, and what a
//! delivery attempt returns ([`Delivered`] or [`SendError`]).
//!
//! A message of a drill is marked here, not in templates, so no template
//! can forget it: [`Message::new`] prefixes its subject and summary with
//! [`DRILL_PREFIX`], sets `drill` and gives it a [`DRILL_DEDUP_PREFIX`]ed
//! incident key; every channel sends [`Message::marked`], which applies the
//! same marks again (idempotently) to whatever the caller changed since.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::context::Context;
use crate::incident::{Action, Severity};
use crate::templates::Rendered;

/// A notification ready to send on any channel.
///
/// Everything is rendered before the message is stored in the outbox, so a
/// delivery made after a restart says exactly what the first attempt would
/// have said. Serializable for that reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Email subject, Slack header, PagerDuty summary fallback.
    pub subject: String,
    /// Plain-text body (email text part, Slack section).
    pub text: String,
    /// HTML body (email alternative part); `None` sends text only.
    #[serde(default)]
    pub html: Option<String>,
    /// The event this message is about: a run event (`failed`, …), or
    /// `notify` (a notify step), `acknowledged`, `resolved` (see [`crate::context::EVENTS`]).
    pub event: String,
    /// PagerDuty `event_action`; other channels say it in words.
    #[serde(default)]
    pub action: Action,
    pub run_id: String,
    pub workflow: String,
    pub severity: Severity,
    /// One line for pagers (PagerDuty `payload.summary`, at most 1024 chars).
    pub summary: String,
    /// What is affected (PagerDuty `payload.source`), e.g. the failed site.
    pub source: String,
    /// URL of the run in the lifeboat UI, when `server.public_url` is known.
    #[serde(default)]
    pub link: Option<String>,
    /// Incident key: PagerDuty `dedup_key`, Opsgenie `alias`. The run id,
    /// so one incident follows one run through trigger, acknowledge and
    /// resolve.
    pub dedup_key: String,
    /// Key of this one notification, stable across redeliveries of the same
    /// outbox row: the webhook `Idempotency-Key`. Unlike `dedup_key` it must
    /// differ between two events of one run, or receivers drop the second.
    pub idempotency_key: String,
    /// The full template context (see [`Context`]), sent as-is by webhooks.
    #[serde(default)]
    pub data: serde_json::Value,
    /// A drill's message (`run.mode` = `drill`): channels say so in their
    /// payloads (`"drill": true`) and subjects ([`DRILL_PREFIX`]).
    #[serde(default)]
    pub drill: bool,
    /// A drill routed by `[drill] channels`: the channel a live run would
    /// have sent this message to (the one it stands in for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_channel: Option<String>,
}

/// What starts the subject, Slack header and PagerDuty summary of a drill.
pub const DRILL_PREFIX: &str = "[DRILL] ";
/// What starts the PagerDuty incident key of a drill, so a drill's events
/// never merge into a live incident.
pub const DRILL_DEDUP_PREFIX: &str = "drill-";

impl Message {
    /// The message `lifeboat doctor --send-test` sends: severity P3, about
    /// no run, with a key of its own so it never merges into an incident.
    pub fn test(channel: &str, from: &str) -> Message {
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
        let key = format!("lifeboat-doctor-{channel}-{}", chrono::Utc::now().timestamp_millis());
        Message {
            subject: format!("lifeboat test message to {channel}"),
            text: format!(
                "lifeboat doctor --send-test on {from} at {now}: channel `{channel}` delivers. \
                 No run is involved and nothing needs doing."
            ),
            html: None,
            event: "test".into(),
            action: Action::Trigger,
            run_id: "doctor".into(),
            workflow: "doctor".into(),
            severity: Severity::P3,
            summary: format!("lifeboat test message to {channel} (nothing to do)"),
            source: from.into(),
            link: None,
            dedup_key: key.clone(),
            idempotency_key: key,
            data: serde_json::Value::Null,
            drill: false,
            live_channel: None,
        }
    }

    /// Builds the message for `rendered` from the context it was rendered
    /// with. Fields can be adjusted afterwards (they are all public).
    ///
    /// `idempotency_key` is `<run id>:<event>` plus `:<step id>` when the
    /// context names a step and `:<tier>` for escalations; the orchestrator
    /// should replace it with its outbox key when one event can repeat
    /// (e.g. `repeat_every` status updates).
    pub fn new(context: &Context, rendered: Rendered) -> Message {
        let mut idempotency_key = format!("{}:{}", context.run.id, context.event);
        if let Some(step) = &context.step {
            idempotency_key.push(':');
            idempotency_key.push_str(&step.id);
        }
        if let Some(escalation) = &context.escalation {
            idempotency_key.push_str(&format!(":tier{}", escalation.tier));
        }
        let source = if context.incident.service.is_empty() {
            context.run.workflow.clone()
        } else {
            context.incident.service.clone()
        };
        let message = Message {
            summary: truncate(&rendered.subject, 1024),
            subject: rendered.subject,
            text: rendered.text,
            html: rendered.html,
            event: context.event.clone(),
            action: Action::for_event(&context.event),
            run_id: context.run.id.clone(),
            workflow: context.run.workflow.clone(),
            severity: context.incident.severity,
            source,
            link: context.run.link.clone(),
            dedup_key: context.run.id.clone(),
            idempotency_key,
            data: serde_json::to_value(context).unwrap_or(serde_json::Value::Null),
            drill: context.run.mode.is_drill(),
            live_channel: None,
        };
        message.marked()
    }

    /// The message as channels send it: when `drill`, the subject and
    /// summary start with [`DRILL_PREFIX`] and `dedup_key` with
    /// [`DRILL_DEDUP_PREFIX`] (each added once: marking twice changes
    /// nothing). A live message is returned unchanged.
    pub fn marked(&self) -> Message {
        let mut msg = self.clone();
        if msg.drill {
            if !msg.subject.starts_with(DRILL_PREFIX) {
                msg.subject.insert_str(0, DRILL_PREFIX);
            }
            if !msg.summary.starts_with(DRILL_PREFIX) {
                msg.summary = truncate(&format!("{DRILL_PREFIX}{}", msg.summary), 1024);
            }
            if !msg.dedup_key.starts_with(DRILL_DEDUP_PREFIX) {
                msg.dedup_key.insert_str(0, DRILL_DEDUP_PREFIX);
            }
        }
        msg
    }
}

/// A successful delivery, for the delivery record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivered {
    /// What the far end accepted, e.g. `to sre@example.com: 250 OK` or
    /// `HTTP 202`.
    pub detail: String,
}

/// Why one delivery attempt failed, and whether another may succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Try again later: HTTP 408/429/5xx, connection errors and timeouts,
    /// SMTP 4xx. `retry_after` is the server's `Retry-After` when it gave one.
    #[error("{message} (will retry)")]
    Retryable { message: String, retry_after: Option<Duration> },
    /// Retrying will not help: other HTTP 4xx, SMTP 5xx, a malformed message.
    #[error("{0}")]
    Permanent(String),
}

impl SendError {
    pub fn retryable(message: impl Into<String>) -> SendError {
        SendError::Retryable { message: message.into(), retry_after: None }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, SendError::Retryable { .. })
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SendError::Retryable { retry_after, .. } => *retry_after,
            SendError::Permanent(_) => None,
        }
    }
}

/// At most `max` characters of `s`, with an ellipsis when cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_round_trips_through_json() {
        let ctx = Context::sample("step_failed");
        let rendered =
            Rendered { subject: "s".into(), text: "t".into(), html: Some("<p>h</p>".into()) };
        let msg = Message::new(&ctx, rendered);
        let json = serde_json::to_string(&msg).unwrap();
        assert_eq!(serde_json::from_str::<Message>(&json).unwrap(), msg);
        assert_eq!(msg.dedup_key, ctx.run.id);
        assert_eq!(msg.idempotency_key, format!("{}:step_failed:promote:tier1", ctx.run.id));
    }

    fn drill_message() -> Message {
        let mut ctx = Context::sample("failed");
        ctx.run.mode = crate::context::Mode::Drill;
        let rendered = Rendered { subject: "Recovery FAILED".into(), text: "t".into(), html: None };
        Message::new(&ctx, rendered)
    }

    #[test]
    fn a_drill_message_is_marked_whatever_its_template_said() {
        let msg = drill_message();
        assert!(msg.drill);
        assert_eq!(msg.subject, "[DRILL] Recovery FAILED");
        assert_eq!(msg.summary, "[DRILL] Recovery FAILED");
        assert_eq!(msg.data["run"]["mode"], "drill");
    }

    #[test]
    fn a_drill_incident_key_differs_from_the_live_one_of_the_same_run() {
        let live = Message::new(
            &Context::sample("failed"),
            Rendered { subject: "s".into(), text: "t".into(), html: None },
        );
        let drill = drill_message();
        assert_eq!(live.run_id, drill.run_id);
        assert!(!live.drill);
        assert_eq!(live.dedup_key, live.run_id);
        assert_eq!(drill.dedup_key, format!("drill-{}", drill.run_id));
        assert_eq!(live.marked(), live, "a live message is not marked");
    }

    #[test]
    fn marking_is_idempotent_and_survives_later_edits() {
        let mut msg = drill_message();
        assert_eq!(msg.marked(), msg);
        msg.subject = "edited after new".into();
        msg.dedup_key = "custom".into();
        let again = msg.marked();
        assert_eq!(again.subject, "[DRILL] edited after new");
        assert_eq!(again.dedup_key, "drill-custom");
    }

    #[test]
    fn a_message_stored_before_modes_existed_reads_as_live() {
        let mut json = serde_json::to_value(drill_message()).unwrap();
        json.as_object_mut().unwrap().remove("drill");
        assert!(!serde_json::from_value::<Message>(json).unwrap().drill);
    }

    #[test]
    fn truncate_counts_characters() {
        assert_eq!(truncate("héllo", 10), "héllo");
        assert_eq!(truncate("héllo", 3), "hé…");
    }
}
