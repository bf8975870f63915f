//! Turning run events into outbox rows. Every notification is a
//! `Change::Notify` staged with the transition that caused it, so it is
//! committed in the same transaction: a crash either loses both or keeps
//! both, and a restart never re-sends (the transition is not replayed).

use chrono::{DateTime, Utc};
use lifeboat_notify::context::{Approval, Escalation, Incident, RunInfo, StepInfo};
use lifeboat_notify::{Action, Message, Severity};
use serde_json::Value;

use super::Driver;
use crate::events::RunEvent;
use crate::exec::people::Decision;
use crate::store::{Change, NewNotification, StepStatus, now_ms};

fn time(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.and_then(DateTime::from_timestamp_millis)
}

/// `P0`..`P3` from the run's inputs, else from an alert's severity label.
fn severity(inputs: &Value, alert: &Value) -> Severity {
    let named = inputs
        .get("severity")
        .and_then(Value::as_str)
        .or_else(|| alert.get("labels").and_then(|l| l.get("severity")).and_then(Value::as_str));
    match named.map(str::to_ascii_lowercase).as_deref() {
        Some("p0" | "critical" | "page") => Severity::P0,
        Some("p1" | "error" | "high") => Severity::P1,
        Some("p2" | "warning" | "medium") => Severity::P2,
        Some("p3" | "info" | "low") => Severity::P3,
        _ => Severity::P1,
    }
}

impl Driver {
    /// Notifications the workflow's `notify` rules ask for, for the events in `changes`.
    pub(super) fn rule_notifications(&self, changes: &[Change]) -> Vec<Change> {
        let rules = &self.wf.definition.notify;
        if rules.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for change in changes {
            let Change::Event { at, kind, step_id, data } = change else { continue };
            let Some(event) = kind.notify_event() else { continue };
            for rule in rules.iter().filter(|r| r.on.contains(&event)) {
                let channels: Vec<String> = rule.channels.iter().map(|c| c.value.clone()).collect();
                out.extend(self.notify_channels(
                    kind.as_str(),
                    step_id.as_deref(),
                    &channels,
                    rule.template.as_ref().map(|t| t.value.as_str()),
                    data.clone().unwrap_or(Value::Null),
                    Action::default_for(event),
                    &at.to_string(),
                ));
            }
        }
        out
    }

    /// One outbox row per channel for `event`, rendered now. `discriminator`
    /// tells apart repeats of one event (a timestamp, a tier, an update).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn notify_channels(
        &self,
        event: &str,
        step: Option<&str>,
        channels: &[String],
        template: Option<&str>,
        data: Value,
        action: Action,
        discriminator: &str,
    ) -> Vec<Change> {
        self.notify_rendered(
            event,
            step,
            channels,
            action,
            discriminator,
            |ctx| {
                let notifier = &self.rt.opts.notifier;
                notifier
                    .templates()
                    .render(template.unwrap_or("incident"), ctx)
                    .map_err(|e| e.to_string())
            },
            data,
        )
    }

    /// The notify step's `subject`/`body`, already rendered with the step's
    /// `with` (rendering them again would treat `{{` in a value as a template).
    pub(super) fn notify_inline(
        &self,
        step: &str,
        channels: &[String],
        subject: Option<&str>,
        body: &str,
        data: Value,
        discriminator: &str,
    ) -> Vec<Change> {
        let subject = match subject {
            Some(s) => s
                .split(['\r', '\n'])
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" "),
            None => format!("[lifeboat] {}: {step}", self.run.workflow),
        };
        let rendered = lifeboat_notify::Rendered { subject, text: body.to_string(), html: None };
        self.notify_rendered(
            "notify",
            Some(step),
            channels,
            Action::Trigger,
            discriminator,
            |_| Ok(rendered.clone()),
            data,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn notify_rendered(
        &self,
        event: &str,
        step: Option<&str>,
        channels: &[String],
        action: Action,
        discriminator: &str,
        render: impl Fn(&lifeboat_notify::Context) -> Result<lifeboat_notify::Rendered, String>,
        data: Value,
    ) -> Vec<Change> {
        if channels.is_empty() {
            return Vec::new();
        }
        let ctx = self.notification_context(event, step, action, &data);
        // A drill goes where `[drill] channels` says; its messages are
        // marked as a drill by `Message::new` whatever the template says.
        let routes = self.rt.opts.notifier.routes(ctx.run.mode, channels);
        let rendered = render(&ctx).unwrap_or_else(|e| lifeboat_notify::Rendered {
            // A broken template must not silence a page: send the facts.
            subject: format!("[lifeboat] {} {}: {event}", ctx.run.workflow, ctx.run.id),
            text: format!(
                "{event} in run {} of {} (the notification template failed: {e})\n{}",
                ctx.run.id,
                ctx.run.workflow,
                ctx.run.link.clone().unwrap_or_default()
            ),
            html: None,
        });
        let mut out = Vec::new();
        for route in routes {
            let channel = &route.channel;
            let mut dedupe_key = format!(
                "{}/{event}/{}/{channel}/{discriminator}",
                self.run.id,
                step.unwrap_or("-")
            );
            if let Some(live) = &route.live_channel {
                dedupe_key.push_str(&format!("/for/{live}"));
            }
            let mut message = Message::new(&ctx, rendered.clone());
            message.action = action;
            message.idempotency_key = dedupe_key.clone();
            message.live_channel = route.live_channel;
            let message = self.redact(serde_json::to_value(&message).unwrap_or(Value::Null));
            out.push(Change::Notify(NewNotification {
                dedupe_key,
                step_id: step.map(String::from),
                event: event.into(),
                channel: channel.clone(),
                message,
                at: now_ms(),
            }));
        }
        out
    }

    /// Channels among `channels` that keep an incident per run (PagerDuty
    /// services, Opsgenie alerts).
    pub(super) fn incident_channels(&self, channels: &[String]) -> Vec<String> {
        let incident = &self.rt.opts.notifier.incident_channels;
        channels.iter().filter(|c| incident.contains(*c)).cloned().collect()
    }

    fn step_info(&self, i: usize) -> StepInfo {
        let s = &self.slots[i].record;
        StepInfo {
            id: self.wf.steps[i].id.clone(),
            status: s.status.as_str().into(),
            attempts: s.attempts,
            error: s.error.clone(),
            started_at: time(s.started_at),
            finished_at: time(s.finished_at),
        }
    }

    /// The template context of a notification (see `lifeboat_notify::context`).
    fn notification_context(
        &self,
        event: &str,
        step: Option<&str>,
        action: Action,
        data: &Value,
    ) -> lifeboat_notify::Context {
        let notifier = &self.rt.opts.notifier;
        let run = &self.run;
        let alert = run.trigger.get("payload").cloned().unwrap_or(Value::Null);
        let started = time(run.started_at.or(Some(run.created_at))).unwrap_or_else(Utc::now);
        let trigger = match run.trigger.get("kind").and_then(Value::as_str).unwrap_or("manual") {
            "manual" => format!(
                "manual by {}",
                run.trigger.get("by").and_then(Value::as_str).unwrap_or("someone")
            ),
            "webhook" => {
                format!("webhook {}", run.trigger.get("hook").and_then(Value::as_str).unwrap_or(""))
            }
            other => other.to_string(),
        };
        // The one place a notification learns the run's mode: a drill's
        // messages are marked and routed to the drill channels.
        let mode = match run.mode {
            crate::store::RunMode::Live => lifeboat_notify::Mode::Live,
            crate::store::RunMode::Drill => lifeboat_notify::Mode::Drill,
        };
        let inputs = run.inputs.as_object().cloned().unwrap_or_default();
        let service = ["failed_site", "site", "service", "target", "database"]
            .iter()
            .find_map(|k| inputs.get(*k).and_then(Value::as_str))
            .unwrap_or(&run.workflow)
            .to_string();
        let annotation = |k: &str| {
            alert
                .get("annotations")
                .and_then(|a| a.get(k))
                .and_then(Value::as_str)
                .map(String::from)
        };
        let description = annotation("description")
            .or_else(|| annotation("summary"))
            .or_else(|| self.wf.definition.description.clone())
            .unwrap_or_else(|| format!("{} run {}", run.workflow, run.id));
        let done: Vec<&str> = self
            .records()
            .enumerate()
            .filter(|(_, s)| s.status == StepStatus::Succeeded)
            .map(|(i, _)| self.wf.steps[i].id.as_str())
            .collect();
        let detected_at = alert
            .get("startsAt")
            .and_then(Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or(started);
        let rto = self.wf.definition.objectives.as_ref().and_then(|o| o.rto);
        let step_index = step.and_then(|id| self.index.get(id).copied());
        let link = |decision: Decision| {
            let (signer, base, step) =
                (notifier.links.as_ref()?, notifier.public_url.as_ref()?, step?);
            let token = signer.token(&run.id, step, decision, now_ms() / 1000);
            Some(format!("{base}/confirm/{token}"))
        };
        // An approval that escalated is still decided by approve/reject, not ack.
        let awaiting = step_index.and_then(|i| self.gate(i)).map(|g| g.awaiting);
        let escalated = event == RunEvent::Escalated.as_str();
        let approval_gate = event == RunEvent::ApprovalRequested.as_str()
            || (escalated && awaiting.as_deref() == Some("approval"));
        let approval = approval_gate
            .then(|| {
                Some(Approval {
                    approve_url: link(Decision::Approve)?,
                    reject_url: link(Decision::Reject)?,
                    approvers: data
                        .get("approvers")
                        .and_then(Value::as_array)
                        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
                        .unwrap_or_default(),
                    expires_at: time(data.get("deadline").and_then(Value::as_i64)),
                })
            })
            .flatten();
        let escalation = data.get("tier").and_then(Value::as_u64).map(|tier| Escalation {
            tier: tier as u32,
            ack_within: data
                .get("ack_within_ms")
                .and_then(Value::as_i64)
                .map(|ms| crate::model::Duration::from_millis(ms as u64).to_string()),
            acked_by: data.get("acked_by").and_then(Value::as_str).map(String::from),
        });
        lifeboat_notify::Context {
            event: event.into(),
            action,
            run: RunInfo {
                id: run.id.clone(),
                workflow: run.workflow.clone(),
                status: run.status.as_str().into(),
                mode,
                started_at: started,
                finished_at: time(run.finished_at),
                link: notifier.run_link(&run.id),
                trigger,
                inputs,
            },
            incident: Incident {
                id: run.id.clone(),
                severity: severity(&run.inputs, &alert),
                service,
                detected_at,
                description,
                action_taken: (!done.is_empty()).then(|| format!("Completed: {}", done.join(", "))),
                expected_resolution: rto.map(|r| format!("within {r} (RTO)")),
            },
            steps: (0..self.slots.len()).map(|i| self.step_info(i)).collect(),
            step: step_index.map(|i| self.step_info(i)),
            approval,
            ack_url: (escalated && awaiting.as_deref() == Some("ack"))
                .then(|| link(Decision::Ack))
                .flatten(),
            escalation,
            message: data.get("message").and_then(Value::as_str).map(String::from),
        }
    }
}
