//! Steps that wait for people: `approval` (N-of-M distinct approvers, a
//! deadline, `on_timeout`) and `escalate` (tiers paged in turn until someone
//! acknowledges). Their whole progress lives in the step row's `state`, so a
//! restarted worker carries on with the same approvals and timers.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Driver;
use super::state::StepState;
use crate::events::RunEvent;
use crate::exec::people::{Decision, outcome_audit, stored_refusal};
use crate::kinds::approval::{self, OnTimeout};
use crate::kinds::escalate;
use crate::store::{Change, RequestRecord, StepStatus, now_ms};
use lifeboat_notify::Action;

/// The durable state of a gate (kept in `steps.state`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Gate {
    /// `approval` or `ack`.
    pub awaiting: String,
    /// Who may decide (users, groups expanded); empty: anyone allowed by role.
    #[serde(default)]
    pub people: Vec<String>,
    #[serde(default)]
    pub min: u32,
    /// Excluded from deciding (`exclude_requester`).
    pub requester: Option<String>,
    #[serde(default)]
    pub approvals: Vec<Approval>,
    /// Approval deadline (`timeout`).
    pub deadline: Option<i64>,
    #[serde(default)]
    pub on_timeout: OnTimeout,
    pub message: Option<String>,
    /// Tiers being paged now.
    pub escalation: Option<Escalation>,
    /// Tiers an approval pages when it times out (`on_timeout: escalate`).
    pub planned: Option<Escalation>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Approval {
    pub by: String,
    pub at: i64,
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Escalation {
    pub tiers: Vec<TierState>,
    /// The tier paged last.
    pub tier: usize,
    /// When the current tier must have acknowledged.
    pub tier_deadline: i64,
    pub repeat_every: Option<i64>,
    pub next_repeat: Option<i64>,
    #[serde(default)]
    pub updates: u32,
    pub template: Option<String>,
    /// The escalation's own `message` (an approval's `escalate` block has one).
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TierState {
    pub channels: Vec<String>,
    pub ack_within: i64,
}

impl Escalation {
    fn plan(config: &escalate::Config) -> Self {
        Escalation {
            tiers: config
                .tiers
                .iter()
                .map(|t| TierState {
                    channels: t.channels.clone(),
                    ack_within: t.ack_within.as_millis() as i64,
                })
                .collect(),
            repeat_every: config.repeat_every.map(|d| d.as_millis() as i64),
            template: config.template.clone(),
            message: config.message.clone(),
            ..Default::default()
        }
    }

    /// Channels of every tier paged so far.
    pub(crate) fn paged_channels(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for t in self.tiers.iter().take(self.tier + 1) {
            for c in &t.channels {
                if !out.contains(c) {
                    out.push(c.clone());
                }
            }
        }
        out
    }

    pub(crate) fn next_timer(&self) -> i64 {
        self.next_repeat.map_or(self.tier_deadline, |r| r.min(self.tier_deadline))
    }
}

impl Gate {
    fn wake_at(&self) -> Option<i64> {
        match &self.escalation {
            Some(e) => Some(e.next_timer()),
            None => self.deadline,
        }
    }
}

impl Driver {
    pub(super) fn gate(&self, i: usize) -> Option<Gate> {
        match &self.slots[i].state {
            Some(StepState::Gate(gate)) => Some((**gate).clone()),
            _ => None,
        }
    }

    /// Writes the gate back as the step's state, with its next timer;
    /// `started`: the step starts waiting now.
    fn gate_change(&self, i: usize, gate: &Gate, started: Option<i64>) -> Change {
        let wake = gate.wake_at();
        // Messages are rendered templates: a secret in one never reaches the store.
        let state = self.redact(StepState::Gate(Box::new(gate.clone())).to_value());
        self.step_change(i, |s| {
            if let Some(now) = started {
                s.status = StepStatus::Waiting;
                s.started_at = Some(now);
            }
            s.state = Some(state);
            s.wake_at = wake;
        })
    }

    pub(super) fn start_approval(
        &self,
        i: usize,
        config: &approval::Config,
        rendered: Value,
        now: i64,
    ) -> Vec<Change> {
        let id = self.wf.steps[i].id.clone();
        let people = self.rt.opts.people.expand(&config.approvers);
        let requester = config
            .exclude_requester
            .then(|| self.run.trigger.get("by").and_then(Value::as_str).map(String::from))
            .flatten();
        let gate = Gate {
            awaiting: "approval".into(),
            people: people.clone(),
            min: config.min_approvals,
            requester,
            deadline: config.timeout.map(|t| now + t.as_millis() as i64),
            on_timeout: config.on_timeout,
            message: config.message.clone(),
            planned: config.escalate.as_ref().map(Escalation::plan),
            ..Default::default()
        };
        // A gate that can never pass fails now, not after its timeout (or never).
        let eligible = people.iter().filter(|p| gate.requester.as_ref() != Some(*p)).count();
        if (eligible as u32) < config.min_approvals.max(1) {
            let error = format!(
                "`min_approvals: {}` can never be met: only {eligible} of the approvers ({}) may approve{}",
                config.min_approvals,
                people.join(", "),
                if eligible < people.len() { " (the requester is excluded)" } else { "" }
            );
            let state = StepState::Gate(Box::new(gate)).to_value();
            return vec![
                self.step_change(i, |s| {
                    s.status = StepStatus::Failed;
                    s.started_at = Some(now);
                    s.finished_at = Some(now);
                    s.wake_at = None;
                    s.state = Some(state);
                    s.outputs = Some(json!({"approved_by": []}));
                    s.error = Some(error.clone());
                }),
                Self::event(RunEvent::StepFailed, Some(&id), Some(json!({"error": error}))),
            ];
        }
        let mut changes = vec![self.gate_change(i, &gate, Some(now))];
        changes.push(Self::event(
            RunEvent::ApprovalRequested,
            Some(&id),
            Some(self.redact(json!({
                "approvers": people,
                "min_approvals": config.min_approvals,
                "deadline": gate.deadline,
                "message": config.message,
                "with": rendered,
            }))),
        ));
        changes
    }

    pub(super) fn start_escalation(
        &self,
        i: usize,
        config: &escalate::Config,
        now: i64,
    ) -> Vec<Change> {
        let gate = Gate {
            awaiting: "ack".into(),
            message: config.message.clone(),
            escalation: Some(Escalation::plan(config)),
            ..Default::default()
        };
        self.page_tier(i, gate, 0, now, true)
    }

    /// Pages `tier` of the gate's escalation and saves the gate.
    fn page_tier(
        &self,
        i: usize,
        mut gate: Gate,
        tier: usize,
        now: i64,
        starting: bool,
    ) -> Vec<Change> {
        let id = self.wf.steps[i].id.clone();
        let Some(esc) = gate.escalation.as_mut() else { return Vec::new() };
        esc.tier = tier;
        esc.tier_deadline = now + esc.tiers[tier].ack_within;
        esc.next_repeat = esc.repeat_every.map(|r| now + r);
        let channels = esc.tiers[tier].channels.clone();
        let template = esc.template.clone();
        let message = esc.message.clone().or_else(|| gate.message.clone());
        let data = json!({"tier": tier + 1, "channels": channels, "message": message, "ack_within_ms": esc.tiers[tier].ack_within});
        let mut changes = self.page(
            &id,
            RunEvent::Escalated,
            &channels,
            template.as_deref(),
            data,
            &format!("tier{}", tier + 1),
        );
        changes.push(self.gate_change(i, &gate, starting.then_some(now)));
        changes
    }

    /// Records `event` on step `id` and pages `channels` about it (as an
    /// `escalated` notification; `discriminator` tells repeats apart).
    fn page(
        &self,
        id: &str,
        event: RunEvent,
        channels: &[String],
        template: Option<&str>,
        data: Value,
        discriminator: &str,
    ) -> Vec<Change> {
        let mut changes = vec![Self::event(event, Some(id), Some(data.clone()))];
        changes.extend(self.notify_channels(
            RunEvent::Escalated.as_str(),
            Some(id),
            channels,
            template,
            data,
            Action::Trigger,
            discriminator,
        ));
        changes
    }

    /// A gate's timer is due: an approval deadline, an ack deadline or a
    /// status update. Returns `None` if nothing was due.
    pub(super) fn gate_timer(&self, i: usize, now: i64) -> Option<Vec<Change>> {
        let mut gate = self.gate(i)?;
        if gate.wake_at().is_none_or(|at| at > now) {
            return None;
        }
        let id = self.wf.steps[i].id.clone();
        let Some(esc) = gate.escalation.clone() else {
            // The approval deadline passed.
            let after = self.slots[i].record.started_at.map(|s| (now - s) / 1000).unwrap_or(0);
            return Some(match gate.on_timeout {
                OnTimeout::Approve => self.gate_done(
                    i,
                    true,
                    json!({"approved_by": [], "timed_out": true, "comment": null}),
                    None,
                    RunEvent::ApprovalTimedOut,
                ),
                OnTimeout::Escalate if gate.planned.is_some() => {
                    gate.escalation = gate.planned.take();
                    let mut changes = vec![Self::event(
                        RunEvent::ApprovalTimedOut,
                        Some(&id),
                        Some(json!({"escalating": true})),
                    )];
                    changes.extend(self.page_tier(i, gate, 0, now, false));
                    changes
                }
                _ => self.gate_done(
                    i,
                    false,
                    json!({"approved_by": [], "timed_out": true}),
                    Some(format!("no decision within {after}s (on_timeout: fail)")),
                    RunEvent::ApprovalTimedOut,
                ),
            });
        };
        if now >= esc.tier_deadline {
            if esc.tier + 1 < esc.tiers.len() {
                return Some(self.page_tier(i, gate, esc.tier + 1, now, false));
            }
            let what = if gate.awaiting == "ack" { "acknowledged" } else { "decided" };
            return Some(self.gate_done(
                i,
                false,
                json!({"tier": esc.tier + 1}),
                Some(format!("nobody {what} after all {} tiers were paged", esc.tiers.len())),
                RunEvent::EscalationExhausted,
            ));
        }
        // A status update to everyone paged so far.
        let esc_mut = gate.escalation.as_mut().expect("checked above");
        esc_mut.updates += 1;
        esc_mut.next_repeat = esc_mut.repeat_every.map(|r| now + r);
        let updates = esc_mut.updates;
        let channels = esc_mut.paged_channels();
        let template = esc_mut.template.clone();
        let message = esc_mut.message.clone().or_else(|| gate.message.clone());
        let data = json!({"tier": esc.tier + 1, "update": updates, "message": message});
        let mut changes = self.page(
            &id,
            RunEvent::StatusUpdate,
            &channels,
            template.as_deref(),
            data,
            &format!("update{updates}"),
        );
        changes.push(self.gate_change(i, &gate, None));
        Some(changes)
    }

    /// Ends a gate: the step succeeds or fails with `outputs`.
    fn gate_done(
        &self,
        i: usize,
        ok: bool,
        outputs: Value,
        error: Option<String>,
        why: RunEvent,
    ) -> Vec<Change> {
        let id = self.wf.steps[i].id.clone();
        let now = now_ms();
        vec![
            self.step_change(i, |s| {
                s.status = if ok { StepStatus::Succeeded } else { StepStatus::Failed };
                s.finished_at = Some(now);
                s.wake_at = None;
                s.outputs = Some(outputs.clone());
                s.error = error.clone();
            }),
            Self::event(why, Some(&id), Some(outputs.clone())),
            Self::event(
                if ok { RunEvent::StepSucceeded } else { RunEvent::StepFailed },
                Some(&id),
                error.map(|e| json!({"error": e})),
            ),
        ]
    }

    /// The run ended: the PagerDuty incidents and Opsgenie alerts its
    /// escalations opened are resolved.
    pub(super) fn resolve_pages(&self) -> Vec<Change> {
        let mut changes = Vec::new();
        for i in 0..self.slots.len() {
            let Some(esc) = self.gate(i).and_then(|g| g.escalation) else { continue };
            let pagers = self.incident_channels(&esc.paged_channels());
            let id = self.wf.steps[i].id.clone();
            changes.extend(self.notify_channels(
                "resolved",
                Some(&id),
                &pagers,
                esc.template.as_deref(),
                json!({"tier": esc.tier + 1}),
                Action::Resolve,
                "resolve",
            ));
        }
        changes
    }

    /// Applies an approve, reject or ack request (checked again: the step
    /// may have moved on since the person was told yes), with the audit
    /// entry of its outcome in the same commit.
    pub(super) fn apply_decision(
        &self,
        i: usize,
        req: &RequestRecord,
        decision: Decision,
    ) -> Vec<Change> {
        match self.decision_changes(i, req, decision) {
            Ok(mut changes) => {
                changes.push(outcome_audit(req, decision, None));
                changes
            }
            Err(why) => vec![
                Self::event(
                    RunEvent::DecisionRefused,
                    Some(&self.wf.steps[i].id),
                    Some(json!({"by": req.actor, "decision": decision.name(), "reason": why})),
                ),
                outcome_audit(req, decision, Some(&why)),
            ],
        }
    }

    /// The changes a decision makes, or why it is refused.
    pub(super) fn decision_changes(
        &self,
        i: usize,
        req: &RequestRecord,
        decision: Decision,
    ) -> Result<Vec<Change>, String> {
        let id = self.wf.steps[i].id.clone();
        let comment = req.data.as_ref().and_then(|d| d.get("comment")).and_then(Value::as_str);
        let refused = if self.slots[i].record.status != StepStatus::Waiting {
            Some(format!("step is {}", self.slots[i].record.status))
        } else {
            stored_refusal(self.slots[i].record.state.as_ref(), &req.actor, decision)
        };
        if let Some(why) = refused {
            return Err(why);
        }
        let Some(mut gate) = self.gate(i) else { return Err("the step is not a gate".into()) };
        let now = now_ms();
        match decision {
            Decision::Reject => {
                let error = match comment {
                    Some(c) => format!("rejected by {}: {c}", req.actor),
                    None => format!("rejected by {}", req.actor),
                };
                Ok(self.gate_done(
                    i,
                    false,
                    json!({"rejected_by": req.actor, "comment": comment, "approved_by": gate.approvals.iter().map(|a| &a.by).collect::<Vec<_>>()}),
                    Some(error),
                    RunEvent::Rejected,
                ))
            }
            Decision::Approve => {
                gate.approvals.push(Approval {
                    by: req.actor.clone(),
                    at: now,
                    comment: comment.map(String::from),
                });
                let by: Vec<&String> = gate.approvals.iter().map(|a| &a.by).collect();
                if by.len() as u32 >= gate.min.max(1) {
                    let comments: Vec<Value> = gate
                        .approvals
                        .iter()
                        .filter_map(|a| {
                            a.comment.as_ref().map(|c| json!({"by": a.by, "comment": c}))
                        })
                        .collect();
                    return Ok(self.gate_done(
                        i,
                        true,
                        json!({"approved_by": by, "comment": comment, "comments": comments}),
                        None,
                        RunEvent::Approved,
                    ));
                }
                Ok(vec![
                    Self::event(
                        RunEvent::ApprovalRecorded,
                        Some(&id),
                        Some(json!({"by": req.actor, "have": by.len(), "need": gate.min})),
                    ),
                    self.gate_change(i, &gate, None),
                ])
            }
            Decision::Ack => {
                let tier = gate.escalation.as_ref().map_or(0, |e| e.tier + 1);
                let mut changes = self.gate_done(
                    i,
                    true,
                    json!({"acked_by": req.actor, "tier": tier, "comment": comment}),
                    None,
                    RunEvent::Acknowledged,
                );
                // PagerDuty incidents and Opsgenie alerts of this run follow
                // the acknowledgement.
                if let Some(esc) = &gate.escalation {
                    let pagers = self.incident_channels(&esc.paged_channels());
                    changes.extend(self.notify_channels(
                        RunEvent::Acknowledged.as_str(),
                        Some(&id),
                        &pagers,
                        esc.template.as_deref(),
                        json!({"acked_by": req.actor, "tier": tier}),
                        Action::Acknowledge,
                        "ack",
                    ));
                }
                Ok(changes)
            }
        }
    }
}
