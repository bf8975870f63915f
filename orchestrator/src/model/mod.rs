//! The workflow file as types. Every field of docs/workflow-format.md is here;
//! unknown fields are rejected. What the types cannot say (graph shape,
//! template references, names known only to the config) is checked by
//! `compile`.

pub mod drill;
pub mod duration;
pub mod located;
pub mod scalars;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use drill::{Answer, AnswerDecision, DrillMode, Expect, Fault, Scenario, StepDrill};
pub use duration::Duration;
pub use lifeboat_notify::Event;
pub use located::{Located, Span};
pub use scalars::{CronExpr, Pattern, TimeZone};

/// A runbook: a named graph of steps with inputs, triggers and policies.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Workflow {
    /// `[a-z0-9][a-z0-9_-]*`, unique in its workflows directory.
    pub name: Located<String>,
    pub description: Option<String>,
    pub objectives: Option<Objectives>,
    /// Declared inputs; templates may only read these.
    #[serde(default)]
    pub inputs: IndexMap<String, InputSpec>,
    pub concurrency: Option<Concurrency>,
    #[serde(default)]
    pub triggers: Vec<Trigger>,
    #[serde(default)]
    pub defaults: Defaults,
    /// What a failed run does: undo succeeded steps (`rollback`) or `stop`.
    #[serde(default)]
    pub on_failure: OnFailure,
    #[serde(default)]
    pub notify: Vec<NotifyRule>,
    /// The run's outputs (templates over inputs and steps).
    #[serde(default)]
    pub outputs: IndexMap<String, Located<String>>,
    /// Steps keyed by id, in file order; `needs` are the graph's edges.
    #[serde(default)]
    pub steps: IndexMap<String, Step>,
    /// Drill scenarios by name (`lifeboat drill WORKFLOW --scenario NAME`).
    #[serde(default)]
    pub drills: IndexMap<String, Scenario>,
}

/// Recovery objectives the run is measured against.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Objectives {
    /// Recovery time objective: a longer run emits `rto_breached`.
    pub rto: Option<Duration>,
    /// Recovery point objective, available to templates as documentation.
    pub rpo: Option<Duration>,
    /// How fresh the proof must be: a scenario with no passing drill within
    /// this long is overdue (`lifeboat plan`, `lifeboat drills`, metrics, the
    /// `drill_overdue` notify event).
    pub drill_every: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    #[serde(rename = "type", default)]
    pub ty: InputType,
    #[serde(default)]
    pub required: bool,
    pub default: Option<Located<serde_json::Value>>,
    /// The only allowed values.
    #[serde(rename = "enum")]
    pub allowed: Option<Vec<serde_json::Value>>,
    /// A regex a string input must match.
    pub pattern: Option<Pattern>,
    pub description: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum InputType {
    #[default]
    String,
    Integer,
    Number,
    Boolean,
    List,
    Object,
}

impl InputType {
    pub fn name(self) -> &'static str {
        match self {
            InputType::String => "string",
            InputType::Integer => "integer",
            InputType::Number => "number",
            InputType::Boolean => "boolean",
            InputType::List => "list",
            InputType::Object => "object",
        }
    }
}

/// At most one active run per rendered key.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Concurrency {
    /// Template over `inputs` and `run`.
    pub key: Located<String>,
    #[serde(default)]
    pub on_conflict: OnConflict,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnConflict {
    /// Do not start the new run.
    Skip,
    /// Start it when the active one ends.
    #[default]
    Queue,
}

/// What starts a run: a webhook (alert) or a schedule. Exactly one of the two.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    /// A hook name from lifeboat.toml; it is POSTed at `/hooks/<name>`.
    pub webhook: Option<Located<String>>,
    pub schedule: Option<Schedule>,
    /// Label equality, or `~regex`.
    #[serde(rename = "match", default)]
    pub matchers: IndexMap<String, String>,
    /// Workflow inputs as templates over `alert.*` / `event.*`.
    #[serde(default)]
    pub inputs: IndexMap<String, Located<String>>,
    /// Alert status that starts a run (default `firing`).
    pub on: Option<AlertStatus>,
    /// Cancel the run if its alert resolves before the first approval gate.
    #[serde(default)]
    pub cancel_on_resolve: bool,
    /// For `json` hooks: a template giving the deduplication key.
    pub dedupe: Option<Located<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    pub cron: CronExpr,
    #[serde(default)]
    pub timezone: TimeZone,
    /// Ticks missed while no replica ran: fire `none`, the `latest`, or `all`.
    #[serde(default)]
    pub catch_up: CatchUp,
    /// `drill`: each tick starts a drill (a rehearsal) instead of a live run.
    #[serde(default)]
    pub mode: ScheduleMode,
    /// With `mode: drill`: the scenario under `drills:` each tick runs.
    pub scenario: Option<Located<String>>,
}

/// What a schedule tick starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleMode {
    #[default]
    Live,
    Drill,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    None,
    #[default]
    Latest,
    All,
}

/// Policies every step inherits unless it says otherwise.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    pub retry: Option<RetryPolicy>,
    /// Per attempt.
    pub timeout: Option<Duration>,
}

/// Field by field, a step's retry overrides the workflow default.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Total attempts, the first included.
    pub attempts: Option<u32>,
    pub backoff: Option<Backoff>,
    /// Delay before the second attempt.
    pub delay: Option<Duration>,
    /// Cap for exponential backoff.
    pub max_delay: Option<Duration>,
    /// Randomise each delay by up to ±20% (default true).
    pub jitter: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Backoff {
    #[default]
    Fixed,
    Exponential,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    #[default]
    Rollback,
    Stop,
}

/// Send `template` to `channels` when any event in `on` happens.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifyRule {
    pub on: Vec<Event>,
    pub channels: Vec<Located<String>>,
    pub template: Option<Located<String>>,
}

/// One node of the graph.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub description: Option<String>,
    /// The step kind: shell, http, sql, postgres, dns, haproxy, set, assert, wait, approval, escalate, notify, workflow.
    pub uses: Located<String>,
    /// The kind's parameters; strings are templates.
    pub with: Option<serde_json::Value>,
    /// Steps that must succeed (or be skipped) first.
    #[serde(default)]
    pub needs: Vec<Located<String>>,
    /// Run only if this template renders truthy; otherwise `skipped`.
    pub when: Option<Located<String>>,
    pub retry: Option<RetryPolicy>,
    /// Per attempt.
    pub timeout: Option<Duration>,
    pub poll: Option<Poll>,
    /// A failure of this step does not fail the run.
    #[serde(default)]
    pub continue_on_failure: bool,
    /// Undoes this step if the run fails after it succeeded.
    pub rollback: Option<StepBody>,
    /// A list (or a template rendering a JSON list); the step runs once per `item`.
    pub for_each: Option<Located<serde_json::Value>>,
    /// With `for_each`: one item at a time, in order.
    #[serde(default)]
    pub sequential: bool,
    /// `false`: an interrupted attempt goes to `needs_human` instead of being retried.
    #[serde(default = "yes")]
    pub idempotent: bool,
    /// Changes the world and has no rollback, on purpose. A drill refuses
    /// to start unless the step says what it does in one (`drill:`).
    #[serde(default)]
    pub irreversible: bool,
    /// In a drill: `run` (default), `skip`, or a substitute body.
    pub drill: Option<StepDrill>,
}

fn yes() -> bool {
    true
}

/// A step body without graph position: what a `rollback` runs.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepBody {
    pub uses: Located<String>,
    pub with: Option<serde_json::Value>,
    pub retry: Option<RetryPolicy>,
    pub timeout: Option<Duration>,
}

/// Repeat the step until `until` renders truthy.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Poll {
    /// Template over the step's own `outputs.*`.
    pub until: Located<String>,
    #[serde(default = "default_poll_interval")]
    pub interval: Duration,
    pub timeout: Duration,
}

fn default_poll_interval() -> Duration {
    Duration::from_millis(5_000)
}
