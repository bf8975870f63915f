//! What a run looks like from outside: typed `Serialize` views of the
//! store's records, shared by the CLI's `--json` and the HTTP API so both
//! print the same document. Times are RFC 3339 with milliseconds (UTC);
//! absent outputs are `{}`.

use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::store::{
    AttemptRecord, AttemptStatus, OutboxRecord, OutboxStatus, Phase, RunMode, RunRecord, RunStatus,
    StepRecord, StepStatus, Store,
};

/// A unix-ms time as RFC 3339 (`null` when absent).
#[derive(Debug, Clone, Copy)]
pub struct Time(pub Option<i64>);

impl Time {
    pub fn at(ms: i64) -> Time {
        Time(Some(ms))
    }

    /// The RFC 3339 text, if there is a time.
    pub fn text(self) -> Option<String> {
        self.0
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    }
}

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.text().serialize(s)
    }
}

/// Outputs as a JSON object: `{}` when there are none.
#[derive(Debug, Clone, Copy)]
pub struct Outputs<'a>(pub Option<&'a Value>);

impl Serialize for Outputs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(v) => v.serialize(s),
            None => serde_json::Map::new().serialize(s),
        }
    }
}

/// A run, as `runs --json` and `GET /api/v1/runs` list it.
#[derive(Debug, Serialize)]
pub struct RunView<'a> {
    pub id: &'a str,
    /// The run's OpenTelemetry trace id (`crate::telemetry::ids`): derived
    /// from the id, so it is known whether or not traces are exported.
    pub trace_id: String,
    pub workflow: &'a str,
    pub status: RunStatus,
    /// `live` or `drill`.
    pub mode: RunMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scenario: Option<&'a str>,
    /// A drill's faults and expectations (`exec::drill::DrillSpec`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drill: Option<&'a Value>,
    /// A drill's verdict once it ended (`exec::drill::Verdict`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<&'a Value>,
    pub inputs: &'a Value,
    pub outputs: Outputs<'a>,
    pub error: Option<&'a str>,
    pub trigger: &'a Value,
    pub paused: bool,
    pub parent_run_id: Option<&'a str>,
    pub definition_hash: &'a str,
    pub created_at: Time,
    pub started_at: Time,
    pub finished_at: Time,
}

impl<'a> From<&'a RunRecord> for RunView<'a> {
    fn from(run: &'a RunRecord) -> Self {
        RunView {
            id: &run.id,
            trace_id: crate::telemetry::trace_id(&run.id),
            workflow: &run.workflow,
            status: run.status,
            mode: run.mode,
            scenario: run.scenario.as_deref(),
            drill: run.drill.as_ref(),
            verdict: run.verdict.as_ref(),
            inputs: &run.inputs,
            outputs: Outputs(run.outputs.as_ref()),
            error: run.error.as_deref(),
            trigger: &run.trigger,
            paused: run.paused,
            parent_run_id: run.parent_run_id.as_deref(),
            definition_hash: &run.definition_hash,
            created_at: Time::at(run.created_at),
            started_at: Time(run.started_at),
            finished_at: Time(run.finished_at),
        }
    }
}

/// A drill in the history (`lifeboat drills`, `GET /api/v1/drills`).
#[derive(Debug, Serialize)]
pub struct DrillView<'a> {
    pub run: &'a str,
    pub workflow: &'a str,
    pub scenario: Option<&'a str>,
    pub status: RunStatus,
    /// `None` until the drill has ended.
    pub passed: Option<bool>,
    pub recovery_ms: Option<i64>,
    pub rto_ms: Option<u64>,
    pub within_rto: Option<bool>,
    pub started_by: Option<&'a str>,
    pub faults: Option<&'a Value>,
    pub created_at: Time,
    pub started_at: Time,
    pub finished_at: Time,
    /// Every expectation, expected against actual.
    pub verdict: Option<&'a Value>,
    #[serde(skip)]
    pub created_at_ms: i64,
}

impl DrillView<'_> {
    /// `passed`, `failed`, or `-` while it runs.
    pub fn verdict_word(&self) -> &'static str {
        match self.passed {
            Some(true) => "passed",
            Some(false) => "failed",
            None => "-",
        }
    }
}

impl<'a> From<&'a RunRecord> for DrillView<'a> {
    fn from(run: &'a RunRecord) -> Self {
        let verdict = run.verdict.as_ref();
        let field = |name: &str| verdict.and_then(|v| v.get(name));
        DrillView {
            run: &run.id,
            workflow: &run.workflow,
            scenario: run.scenario.as_deref(),
            status: run.status,
            passed: field("passed").and_then(Value::as_bool),
            recovery_ms: field("recovery_ms").and_then(Value::as_i64),
            rto_ms: field("rto_ms").and_then(Value::as_u64),
            within_rto: field("within_rto").and_then(Value::as_bool),
            started_by: run.trigger.get("by").and_then(Value::as_str),
            faults: run.drill.as_ref().and_then(|d| d.get("faults")),
            created_at: Time::at(run.created_at),
            started_at: Time(run.started_at),
            finished_at: Time(run.finished_at),
            verdict,
            created_at_ms: run.created_at,
        }
    }
}

/// One attempt of a step (forward or rollback).
#[derive(Debug, Serialize)]
pub struct AttemptView<'a> {
    pub n: u32,
    pub phase: Phase,
    pub status: AttemptStatus,
    pub worker: &'a str,
    pub started_at: Time,
    pub finished_at: Time,
    pub error: Option<&'a str>,
}

impl<'a> From<&'a AttemptRecord> for AttemptView<'a> {
    fn from(a: &'a AttemptRecord) -> Self {
        AttemptView {
            n: a.n,
            phase: a.phase,
            status: a.status,
            worker: &a.worker,
            started_at: Time::at(a.started_at),
            finished_at: Time(a.finished_at),
            error: a.error.as_deref(),
        }
    }
}

/// A step of a run document, with its attempts.
#[derive(Debug, Serialize)]
pub struct StepView<'a> {
    pub id: &'a str,
    pub status: StepStatus,
    pub outputs: Outputs<'a>,
    pub error: Option<&'a str>,
    pub started_at: Time,
    pub finished_at: Time,
    pub rollback: Option<Value>,
    pub attempts: Vec<AttemptView<'a>>,
}

impl<'a> StepView<'a> {
    /// `step` with those of `attempts` that are its own.
    pub fn new(step: &'a StepRecord, attempts: &'a [AttemptRecord]) -> Self {
        StepView {
            id: &step.step_id,
            status: step.status,
            outputs: Outputs(step.outputs.as_ref()),
            error: step.error.as_deref(),
            started_at: Time(step.started_at),
            finished_at: Time(step.finished_at),
            rollback: step.rollback.as_deref().and_then(|r| serde_json::from_str(r).ok()),
            attempts: attempts
                .iter()
                .filter(|a| a.step_id == step.step_id)
                .map(AttemptView::from)
                .collect(),
        }
    }
}

/// One outbox row: what was sent where, and whether it arrived.
#[derive(Debug, Serialize)]
pub struct NotificationView<'a> {
    pub event: &'a str,
    pub step: Option<&'a str>,
    pub channel: &'a str,
    pub status: OutboxStatus,
    pub attempts: u32,
    pub subject: Option<&'a Value>,
    pub detail: Option<&'a str>,
    pub error: Option<&'a str>,
    pub queued_at: Time,
    pub finished_at: Time,
    pub key: &'a str,
}

impl<'a> From<&'a OutboxRecord> for NotificationView<'a> {
    fn from(n: &'a OutboxRecord) -> Self {
        NotificationView {
            event: &n.event,
            step: n.step_id.as_deref(),
            channel: &n.channel,
            status: n.status,
            attempts: n.attempts,
            subject: n.message.get("subject"),
            detail: n.detail.as_deref(),
            error: n.last_error.as_deref(),
            queued_at: Time::at(n.created_at),
            finished_at: Time(n.finished_at),
            key: &n.dedupe_key,
        }
    }
}

/// A run with its steps (in file order), every attempt and its
/// notifications (docs/cli.md): `show --json`, `run --wait --json` and `GET /api/v1/runs/{id}`.
#[derive(Debug, Clone)]
pub struct RunDocument {
    pub run: RunRecord,
    pub steps: Vec<StepRecord>,
    pub attempts: Vec<AttemptRecord>,
    pub notifications: Vec<OutboxRecord>,
}

impl RunDocument {
    /// Reads run `run_id` (a full id); an unknown run is `StoreError::NotFound`.
    pub async fn load(
        store: &dyn Store,
        run_id: &str,
    ) -> Result<RunDocument, crate::store::StoreError> {
        let run = store
            .run(run_id)
            .await?
            .ok_or_else(|| crate::store::StoreError::NotFound(run_id.to_string()))?;
        let steps = ordered_steps(store, &run).await?;
        let attempts = store.attempts(run_id).await?;
        let notifications = store.outbox(run_id).await?;
        Ok(RunDocument { run, steps, attempts, notifications })
    }
}

impl Serialize for RunDocument {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Document<'a> {
            #[serde(flatten)]
            run: RunView<'a>,
            steps: Vec<StepView<'a>>,
            notifications: Vec<NotificationView<'a>>,
        }
        Document {
            run: RunView::from(&self.run),
            steps: self.steps.iter().map(|step| StepView::new(step, &self.attempts)).collect(),
            notifications: self.notifications.iter().map(NotificationView::from).collect(),
        }
        .serialize(s)
    }
}

/// Steps in the workflow's file order.
async fn ordered_steps(
    store: &dyn Store,
    run: &RunRecord,
) -> Result<Vec<StepRecord>, crate::store::StoreError> {
    let mut steps = store.steps(&run.id).await?;
    if let Some(def) = store.definition(&run.definition_hash).await?
        && let Ok(wf) = crate::compile::compile(&def.file, &def.source, Default::default())
    {
        steps
            .sort_by_key(|s| wf.steps.iter().position(|c| c.id == s.step_id).unwrap_or(usize::MAX));
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn run() -> RunRecord {
        RunRecord {
            id: "r1".into(),
            workflow: "wf".into(),
            definition_hash: "h".into(),
            status: RunStatus::Failed,
            inputs: json!({"site": "b"}),
            outputs: None,
            trigger: json!({"kind": "cli"}),
            concurrency_key: None,
            parent_run_id: None,
            parent_step_id: None,
            root_run_id: "r1".into(),
            cancelled_by: None,
            paused: false,
            error: Some("boom".into()),
            created_at: 0,
            started_at: Some(1_000),
            finished_at: None,
            wake_at: None,
            lease_owner: None,
            lease_expires_at: None,
            pins: None,
            mode: crate::store::RunMode::Live,
            scenario: None,
            drill: None,
            verdict: None,
        }
    }

    #[test]
    fn a_run_document_keeps_its_keys_in_order_times_as_rfc3339_and_empty_outputs_as_objects() {
        let mut step = StepRecord::pending("r1", "a");
        step.rollback = Some(r#"{"status":"succeeded"}"#.into());
        let doc =
            RunDocument { run: run(), steps: vec![step], attempts: vec![], notifications: vec![] };
        let expected = json!({
            "id": "r1", "trace_id": crate::telemetry::trace_id("r1"),
            "workflow": "wf", "status": "failed", "mode": "live", "inputs": {"site": "b"},
            "outputs": {}, "error": "boom", "trigger": {"kind": "cli"}, "paused": false,
            "parent_run_id": null, "definition_hash": "h",
            "created_at": "1970-01-01T00:00:00.000Z", "started_at": "1970-01-01T00:00:01.000Z",
            "finished_at": null,
            "steps": [{
                "id": "a", "status": "pending", "outputs": {}, "error": null,
                "started_at": null, "finished_at": null,
                "rollback": {"status": "succeeded"}, "attempts": [],
            }],
            "notifications": [],
        });
        // Same keys in the same order (serde_json preserves order here).
        assert_eq!(serde_json::to_string(&doc).unwrap(), expected.to_string());
    }
}
