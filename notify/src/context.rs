//! The template context: what every notification template can refer to.
//!
//! The orchestrator fills a [`Context`] for each notification and renders it
//! with [`Templates::render`](crate::templates::Templates::render); the same
//! value travels in [`Message::data`](crate::Message::data) to webhooks.
//!
//! Shape (JSON, as templates see it; `?` marks a value that may be `null`):
//!
//! ```text
//! event                  "started" | "succeeded" | "failed" | "rolled_back" | "rollback_failed"
//!                        | "cancelled" | "step_failed" | "approval_requested" | "needs_human"
//!                        | "escalated" | "rto_breached" | "acknowledged" | "resolved"
//!                        | "drill_overdue" (about a workflow, not a run: `run.id` is
//!                          the workflow's newest drill, or `-`; `message` lists the
//!                          overdue scenarios)
//! action                 "trigger" | "acknowledge" | "resolve"
//! run      {id, workflow, status, mode: "live" | "drill", started_at, finished_at?, link?,
//!           trigger, inputs: {..}}
//! incident {id, severity: "P0".."P3", service, detected_at, description,
//!           action_taken?, expected_resolution?}
//! steps    [{id, status, attempts, error?, started_at?, finished_at?}]   (file order)
//! step?    {id, status, attempts, error?, ...}   the step the event is about
//! approval?   {approve_url, reject_url, approvers: [..], expires_at?}
//! escalation? {tier, ack_within?, acked_by?}
//! ack_url?   where to acknowledge (escalations)
//! message?   free text from the notify step or the operator
//! ```
//!
//! Which optional values are guaranteed per event (templates may use them
//! without `{{#if}}` for that event; [`Context::minimal`] is the check):
//! `step` for `step_failed`, `approval_requested`, `needs_human`;
//! `escalation` for `escalated` and `acknowledged`. Everything else marked
//! `?` must be guarded with `{{#if}}` — `approval` and `ack_url` too: the
//! one-click links exist only when `[server] link_secret_env` names a key.

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::incident::{Action, Severity};

/// Every value of [`Context::event`]: the run events, plus `acknowledged`
/// and `resolved` for escalation follow-ups.
pub const EVENTS: &[&str] = &[
    "started",
    "succeeded",
    "failed",
    "rolled_back",
    "rollback_failed",
    "cancelled",
    "step_failed",
    "approval_requested",
    "needs_human",
    "escalated",
    "rto_breached",
    "drill_overdue",
    "acknowledged",
    "resolved",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Context {
    /// One of [`EVENTS`]: chooses the wording.
    pub event: String,
    #[serde(default)]
    pub action: Action,
    pub run: RunInfo,
    pub incident: Incident,
    #[serde(default)]
    pub steps: Vec<StepInfo>,
    #[serde(default)]
    pub step: Option<StepInfo>,
    #[serde(default)]
    pub approval: Option<Approval>,
    #[serde(default)]
    pub escalation: Option<Escalation>,
    #[serde(default)]
    pub ack_url: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

/// Whether a run is the real thing or a rehearsal. In a drill every
/// message is marked as one whatever its template says (see
/// [`Message::new`](crate::Message::new)), so a drill never reads as a
/// live incident.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Live,
    Drill,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Live => "live",
            Mode::Drill => "drill",
        }
    }

    pub fn is_drill(self) -> bool {
        self == Mode::Drill
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub id: String,
    pub workflow: String,
    /// The run state (`running`, `rolled_back`, …).
    pub status: String,
    /// `live` (the default, also for contexts stored before modes existed)
    /// or `drill`: `{{#if (eq run.mode "drill")}}` in a template.
    #[serde(default)]
    pub mode: Mode,
    pub started_at: DateTime<Utc>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    /// `<public_url>/runs/<id>`.
    #[serde(default)]
    pub link: Option<String>,
    /// What started the run: `manual by alice`, `webhook alertmanager`, …
    pub trigger: String,
    /// The run's inputs (never secrets).
    #[serde(default)]
    pub inputs: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// Usually the run id.
    pub id: String,
    pub severity: Severity,
    /// The affected service or site (e.g. `inputs.failed_site`).
    pub service: String,
    /// When the problem was detected (the alert's start, else the run's).
    pub detected_at: DateTime<Utc>,
    pub description: String,
    #[serde(default)]
    pub action_taken: Option<String>,
    #[serde(default)]
    pub expected_resolution: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepInfo {
    pub id: String,
    /// The step state (`pending`, `running`, `succeeded`, …).
    pub status: String,
    /// Attempts so far (0 before the first).
    pub attempts: u32,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    pub approve_url: String,
    pub reject_url: String,
    /// Users and groups that may approve.
    pub approvers: Vec<String>,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Escalation {
    /// 1 for the first tier.
    pub tier: u32,
    /// How long this tier has to acknowledge, as written (`10m`).
    #[serde(default)]
    pub ack_within: Option<String>,
    #[serde(default)]
    pub acked_by: Option<String>,
}

impl Context {
    /// A context with every optional value present, for `event`. Used to
    /// check templates (a typo in a path fails to render) and in tests.
    pub fn sample(event: &str) -> Context {
        let at = |m: u32| Utc.with_ymd_and_hms(2025, 1, 15, 3, m, 0).single().unwrap_or_default();
        let step = StepInfo {
            id: "promote".into(),
            status: "failed".into(),
            attempts: 3,
            error: Some("exit status 1".into()),
            started_at: Some(at(4)),
            finished_at: Some(at(5)),
        };
        let mut inputs = serde_json::Map::new();
        inputs.insert("failed_site".into(), "dc01".into());
        Context {
            event: event.to_string(),
            action: Action::Trigger,
            run: RunInfo {
                id: "0194b2a0-0000-7000-8000-000000000000".into(),
                workflow: "failover".into(),
                status: "running".into(),
                mode: Mode::Live,
                started_at: at(1),
                finished_at: Some(at(9)),
                link: Some(
                    "http://127.0.0.1:8080/runs/0194b2a0-0000-7000-8000-000000000000".into(),
                ),
                trigger: "webhook alertmanager".into(),
                inputs,
            },
            incident: Incident {
                id: "0194b2a0-0000-7000-8000-000000000000".into(),
                severity: Severity::P0,
                service: "dc01".into(),
                detected_at: at(0),
                description: "SiteDown: dc01 is not answering health checks".into(),
                action_taken: Some("Fenced dc01, promoting dc02".into()),
                expected_resolution: Some("within 5m (RTO)".into()),
            },
            steps: vec![
                StepInfo {
                    id: "check_primary".into(),
                    status: "succeeded".into(),
                    attempts: 1,
                    error: None,
                    started_at: Some(at(1)),
                    finished_at: Some(at(2)),
                },
                step.clone(),
            ],
            step: Some(step),
            approval: Some(Approval {
                approve_url: "http://127.0.0.1:8080/runs/0194b2a0/steps/approve/approve".into(),
                reject_url: "http://127.0.0.1:8080/runs/0194b2a0/steps/approve/reject".into(),
                approvers: vec!["oncall-leads".into(), "carol".into()],
                expires_at: Some(at(20)),
            }),
            escalation: Some(Escalation {
                tier: 1,
                ack_within: Some("10m".into()),
                acked_by: Some("alice".into()),
            }),
            ack_url: Some("http://127.0.0.1:8080/runs/0194b2a0/steps/page/ack".into()),
            message: Some("Bridge call: https://meet.example.com/dr".into()),
        }
    }

    /// The least the orchestrator promises for `event`: every optional
    /// value absent except those guaranteed for that event (see the module
    /// docs), no steps, no inputs.
    pub fn minimal(event: &str) -> Context {
        let full = Context::sample(event);
        let has_step = matches!(event, "step_failed" | "approval_requested" | "needs_human");
        Context {
            run: RunInfo {
                finished_at: None,
                link: None,
                inputs: serde_json::Map::new(),
                ..full.run
            },
            incident: Incident { action_taken: None, expected_resolution: None, ..full.incident },
            steps: Vec::new(),
            step: full.step.filter(|_| has_step).map(|s| StepInfo {
                error: None,
                started_at: None,
                finished_at: None,
                ..s
            }),
            approval: None,
            escalation: full
                .escalation
                .filter(|_| matches!(event, "escalated" | "acknowledged"))
                .map(|e| Escalation { ack_within: None, acked_by: None, ..e }),
            ack_url: None,
            message: None,
            ..full
        }
    }
}
