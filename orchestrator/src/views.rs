//! What a run looks like from outside: typed `Serialize` views of the
//! store's records, shared by the CLI's `--json` and the HTTP API so both
//! print the same document. Times are RFC 3339 with milliseconds (UTC);
//! absent outputs are `{}`.

use std::sync::Arc;

use serde::{Serialize, Serializer};
use serde_json::{Value, json};

use crate::compile::CompiledWorkflow;
use crate::store::{
    AttemptRecord, AttemptStatus, EventRecord, OutboxRecord, OutboxStatus, Phase, RunMode,
    RunRecord, RunStatus, StepRecord, StepStatus, Store,
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
    /// What the pinned definition says of the step (absent when the
    /// definition cannot be read).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub shape: Option<StepShape<'a>>,
    pub status: StepStatus,
    pub outputs: Outputs<'a>,
    pub error: Option<&'a str>,
    pub started_at: Time,
    pub finished_at: Time,
    pub rollback: Option<Value>,
    /// A step waiting for people (`approval`, `escalate`): who may decide,
    /// who did, the deadline and the escalation (`GateDoc`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateDoc>,
    pub attempts: Vec<AttemptView<'a>>,
}

/// A step as its workflow declares it: enough for a reader to know what it
/// is, what it waits for and what cannot be undone.
#[derive(Debug, Serialize)]
pub struct StepShape<'a> {
    /// `shell`, `approval`, `postgres`…
    pub kind: &'static str,
    pub needs: Vec<&'a str>,
    pub irreversible: bool,
    /// The rollback's kind, `automatic` (the action's inverse), or `null`.
    pub undo: Option<&'static str>,
}

impl<'a> StepShape<'a> {
    pub fn of(wf: &'a CompiledWorkflow, id: &str) -> Option<StepShape<'a>> {
        let step = wf.step(id)?;
        let undo = match &step.rollback {
            Some(body) if body.inverse_of_step => Some("automatic"),
            Some(body) => Some(body.kind.name()),
            None => None,
        };
        Some(StepShape {
            kind: step.body.kind.name(),
            needs: step.needs.iter().map(|&n| wf.steps[n].id.as_str()).collect(),
            irreversible: step.definition.irreversible,
            undo,
        })
    }
}

/// The people side of a waiting `approval` or `escalate` step, read from
/// the step's stored state (`exec/driver/gates.rs`): times as RFC 3339,
/// escalation tiers numbered from 1. Absent for any other step.
#[derive(Debug, Clone, Serialize)]
pub struct GateDoc {
    /// `approval` or `ack`.
    pub awaiting: String,
    /// Who may decide (groups expanded); empty: anyone whose role allows.
    pub people: Vec<String>,
    /// Approvals needed.
    pub min: u64,
    /// The run's requester when `exclude_requester` keeps them out.
    pub requester: Option<String>,
    /// `{by, at, comment}` of each approval so far.
    pub approvals: Vec<Value>,
    pub deadline: Time,
    /// `fail`, `approve` or `escalate`.
    pub on_timeout: Option<String>,
    pub message: Option<String>,
    /// `{tier, tiers: [{channels, ack_within_ms}], paged, tier_deadline,
    /// next_page}` while tiers are being paged.
    pub escalation: Option<Value>,
}

impl GateDoc {
    /// `None` unless `state` is a gate's: read as the driver wrote it
    /// (`exec::driver::gates::Gate`), with its own rules for the channels
    /// paged so far and the next timer.
    pub fn read(state: Option<&Value>) -> Option<GateDoc> {
        use serde::Deserialize;
        let gate = crate::exec::driver::gates::Gate::deserialize(state?).ok()?;
        let escalation = gate.escalation.as_ref().map(|e| {
            let tiers: Vec<Value> = e
                .tiers
                .iter()
                .map(|t| json!({"channels": t.channels, "ack_within_ms": t.ack_within}))
                .collect();
            json!({
                "tier": e.tier + 1, "tiers": tiers, "paged": e.paged_channels(),
                "tier_deadline": Time::at(e.tier_deadline), "next_page": Time::at(e.next_timer()),
                "updates": e.updates,
            })
        });
        Some(GateDoc {
            approvals: gate
                .approvals
                .iter()
                .map(|a| json!({"by": a.by, "at": Time::at(a.at), "comment": a.comment}))
                .collect(),
            awaiting: gate.awaiting,
            people: gate.people,
            min: u64::from(gate.min.max(1)),
            requester: gate.requester,
            deadline: Time(gate.deadline),
            on_timeout: serde_json::to_value(gate.on_timeout)
                .ok()
                .and_then(|v| v.as_str().map(String::from)),
            message: gate.message,
            escalation,
        })
    }
}

impl<'a> StepView<'a> {
    /// `step` with those of `attempts` that are its own, shaped by the
    /// run's definition `wf` when it could be read.
    pub fn new(
        step: &'a StepRecord,
        attempts: &'a [AttemptRecord],
        wf: Option<&'a CompiledWorkflow>,
    ) -> Self {
        StepView {
            id: &step.step_id,
            shape: wf.and_then(|wf| StepShape::of(wf, &step.step_id)),
            status: step.status,
            outputs: Outputs(step.outputs.as_ref()),
            error: step.error.as_deref(),
            started_at: Time(step.started_at),
            finished_at: Time(step.finished_at),
            rollback: step.rollback.as_deref().and_then(|r| serde_json::from_str(r).ok()),
            gate: GateDoc::read(step.state.as_ref()),
            attempts: attempts
                .iter()
                .filter(|a| a.step_id == step.step_id)
                .map(AttemptView::from)
                .collect(),
        }
    }
}

/// One attempt in full: the run document's fields plus its output.
#[derive(Debug, Serialize)]
pub struct AttemptDetail<'a> {
    #[serde(flatten)]
    pub attempt: AttemptView<'a>,
    pub duration_ms: Option<i64>,
    pub stdout: Option<&'a str>,
    pub stderr: Option<&'a str>,
}

/// An event of a step (a decision, a retry, an escalation), as the API's
/// event streams send it.
#[derive(Debug, Serialize)]
pub struct EventView<'a> {
    pub id: i64,
    pub at: Time,
    pub kind: &'a str,
    pub data: Option<&'a Value>,
}

/// One step in full (`GET /api/v1/runs/{id}/steps/{step}`, the web UI's
/// step drawer): the run document's view of it with `run`, every attempt
/// with its duration, stdout and stderr (forward and rollback), and the
/// step's `events`.
pub fn step_detail(
    step: &StepRecord,
    doc: &RunDocument,
    events: &[EventRecord],
) -> Result<Value, serde_json::Error> {
    let mut out =
        serde_json::to_value(StepView::new(step, &doc.attempts, doc.definition.as_deref()))?;
    let attempts: Vec<AttemptDetail<'_>> = doc
        .attempts
        .iter()
        .filter(|a| a.step_id == step.step_id)
        .map(|a| AttemptDetail {
            attempt: AttemptView::from(a),
            duration_ms: a.finished_at.map(|f| f - a.started_at),
            stdout: a.stdout.as_deref(),
            stderr: a.stderr.as_deref(),
        })
        .collect();
    let events: Vec<EventView<'_>> = events
        .iter()
        .filter(|e| e.step_id.as_deref() == Some(step.step_id.as_str()))
        .map(|e| EventView { id: e.id, at: Time::at(e.at), kind: &e.kind, data: e.data.as_ref() })
        .collect();
    out["run"] = Value::String(doc.run.id.clone());
    out["attempts"] = serde_json::to_value(attempts)?;
    out["events"] = serde_json::to_value(events)?;
    Ok(out)
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
    /// The definition the run is pinned to, when it compiles: steps in its
    /// file order, each with its kind and needs, and the run's objectives.
    pub definition: Option<Arc<CompiledWorkflow>>,
}

impl RunDocument {
    /// Reads run `run_id` (a full id), compiling its pinned definition here
    /// (the CLI's way; `serve` hands in its cached, isolated compile with
    /// [`RunDocument::load_with`]). An unknown run is `StoreError::NotFound`.
    pub async fn load(
        store: &dyn Store,
        run_id: &str,
    ) -> Result<RunDocument, crate::store::StoreError> {
        let run = store
            .run(run_id)
            .await?
            .ok_or_else(|| crate::store::StoreError::NotFound(run_id.to_string()))?;
        let definition = match store.definition(&run.definition_hash).await? {
            Some(def) => crate::compile::compile(&def.file, &def.source, Default::default())
                .ok()
                .map(Arc::new),
            None => None,
        };
        Self::load_with(store, run, definition).await
    }

    /// The document of `run` with `definition` already compiled (or `None`).
    pub async fn load_with(
        store: &dyn Store,
        run: RunRecord,
        definition: Option<Arc<CompiledWorkflow>>,
    ) -> Result<RunDocument, crate::store::StoreError> {
        let mut steps = store.steps(&run.id).await?;
        if let Some(wf) = &definition {
            steps.sort_by_cached_key(|s| wf.step(&s.step_id).map_or(usize::MAX, |c| c.index));
        }
        let attempts = store.attempts(&run.id).await?;
        let notifications = store.outbox(&run.id).await?;
        Ok(RunDocument { run, steps, attempts, notifications, definition })
    }

    /// `objectives.rto` of the pinned definition, in ms.
    pub fn rto_ms(&self) -> Option<i64> {
        let objectives = self.definition.as_ref()?.definition.objectives.as_ref()?;
        objectives.rto.map(|d| d.as_millis() as i64)
    }
}

impl Serialize for RunDocument {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Document<'a> {
            #[serde(flatten)]
            run: RunView<'a>,
            /// `objectives.rto` in ms, when the definition declares one.
            #[serde(skip_serializing_if = "Option::is_none")]
            rto_ms: Option<i64>,
            steps: Vec<StepView<'a>>,
            notifications: Vec<NotificationView<'a>>,
        }
        let wf = self.definition.as_deref();
        Document {
            run: RunView::from(&self.run),
            rto_ms: self.rto_ms(),
            steps: self.steps.iter().map(|step| StepView::new(step, &self.attempts, wf)).collect(),
            notifications: self.notifications.iter().map(NotificationView::from).collect(),
        }
        .serialize(s)
    }
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
    fn a_gate_reads_its_approvals_deadline_and_escalation_and_other_states_are_no_gate() {
        let state = json!({
            "kind": "gate", "awaiting": "approval", "people": ["olga", "bob"], "min": 2,
            "requester": "olga", "deadline": 60_000, "on_timeout": "escalate", "message": "promote",
            "approvals": [{"by": "bob", "at": 1_000, "comment": "ok"}],
            "escalation": {"tiers": [{"channels": ["slack"], "ack_within": 300_000},
                                      {"channels": ["pager", "slack"], "ack_within": 600_000}],
                           "tier": 1, "tier_deadline": 900_000, "next_repeat": 400_000, "updates": 2},
        });
        let gate = GateDoc::read(Some(&state)).expect("a gate");
        let doc = serde_json::to_value(&gate).unwrap();
        assert_eq!(doc["min"], 2);
        assert_eq!(
            doc["approvals"],
            json!([{"by": "bob", "at": "1970-01-01T00:00:01.000Z", "comment": "ok"}])
        );
        assert_eq!(doc["deadline"], "1970-01-01T00:01:00.000Z");
        let esc = &doc["escalation"];
        assert_eq!(esc["tier"], 2, "numbered from 1");
        assert_eq!(esc["paged"], json!(["slack", "pager"]), "every tier paged so far, once each");
        assert_eq!(
            esc["next_page"], "1970-01-01T00:06:40.000Z",
            "the repeat comes before the deadline"
        );
        assert_eq!(esc["tiers"][1]["ack_within_ms"], 600_000);
        assert!(GateDoc::read(Some(&json!({"wait_until": 5}))).is_none());
        assert!(GateDoc::read(None).is_none());
    }

    #[test]
    fn a_run_document_keeps_its_keys_in_order_times_as_rfc3339_and_empty_outputs_as_objects() {
        let mut step = StepRecord::pending("r1", "a");
        step.rollback = Some(r#"{"status":"succeeded"}"#.into());
        let doc = RunDocument {
            run: run(),
            steps: vec![step],
            attempts: vec![],
            notifications: vec![],
            definition: None,
        };
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
