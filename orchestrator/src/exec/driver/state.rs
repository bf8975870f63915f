//! The typed durable state of a step: `StepState` in the step row's
//! `state` column, `RollbackState` in its `rollback` column, and the
//! driver's one `Slot` per step holding both with the row.
//!
//! Each state is a serde-tagged enum (`"kind"`). Rows written before the
//! tag existed (the shape told by which key was present) are read as well:
//! a run started before an upgrade resumes after it. A state that is
//! neither is an error naming the run and the step, never ignored.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::gates::Gate;
use crate::exec::ExecError;
use crate::store::StepRecord;

/// What a step keeps between transitions (`steps.state`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(super) enum StepState {
    /// A `wait` step: succeeds at `until` (ms).
    Timer {
        #[serde(rename = "wait_until")]
        until: i64,
    },
    /// A `workflow` step: ends when the child run does.
    Child {
        #[serde(rename = "child_run")]
        run: String,
    },
    /// A `required: true` notify step: ends when these outbox rows are delivered.
    Outbox {
        #[serde(rename = "outbox")]
        keys: Vec<String>,
    },
    /// An `approval` or `escalate` step waiting for people.
    Gate(Box<Gate>),
    /// Reset by `retry`: attempts before it do not count against `retry.attempts`.
    Retried { attempt_base: u32 },
}

impl StepState {
    /// The JSON stored in `steps.state` (the keys the untagged rows used, plus `kind`).
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("a step state serializes")
    }

    /// Reads a stored state, tagged or in the shape written before tags.
    pub fn from_stored(value: &Value) -> Result<Option<Self>, serde_json::Error> {
        if value.is_null() {
            return Ok(None);
        }
        let mut value = value.clone();
        if let Some(map) = value.as_object_mut()
            && !map.contains_key("kind")
        {
            // Untagged rows: the kind is the key that is present.
            let kind = [
                ("wait_until", "timer"),
                ("child_run", "child"),
                ("outbox", "outbox"),
                ("awaiting", "gate"),
                ("attempt_base", "retried"),
            ]
            .into_iter()
            .find(|(key, _)| map.contains_key(*key))
            .map(|(_, kind)| kind);
            if let Some(kind) = kind {
                map.insert("kind".into(), kind.into());
            }
        }
        serde_json::from_value(value).map(Some)
    }

    /// The retry budget's base: attempts made before the last `retry`.
    pub fn attempt_base(state: Option<&Self>) -> u32 {
        match state {
            Some(StepState::Retried { attempt_base }) => *attempt_base,
            _ => 0,
        }
    }
}

/// Where a step's rollback stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum RollbackStatus {
    #[default]
    Pending,
    Running,
    RetryWait,
    Succeeded,
    Failed,
}

/// Rollback progress of one step (`steps.rollback`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct RollbackState {
    pub status: RollbackStatus,
    pub attempts: u32,
    pub wake_at: Option<i64>,
    pub error: Option<String>,
}

impl RollbackState {
    /// The text stored in `steps.rollback`.
    pub fn to_stored(&self) -> String {
        serde_json::to_string(self).expect("a rollback state serializes")
    }

    /// Whether the rollback has ended, either way.
    pub fn ended(&self) -> bool {
        matches!(self.status, RollbackStatus::Succeeded | RollbackStatus::Failed)
    }
}

/// One step of the run as the driver holds it: its row and its typed states.
#[derive(Debug, Clone)]
pub(super) struct Slot {
    pub record: StepRecord,
    pub state: Option<StepState>,
    pub rollback: Option<RollbackState>,
}

impl Slot {
    /// Types a step row's `state` and `rollback`; an unreadable one is an
    /// error naming the run and the step.
    pub fn new(record: StepRecord) -> Result<Self, ExecError> {
        let corrupt = |what: &'static str, source: serde_json::Error| ExecError::CorruptState {
            run: record.run_id.clone(),
            step: record.step_id.clone(),
            what,
            source,
        };
        let state = match &record.state {
            Some(v) => StepState::from_stored(v).map_err(|e| corrupt("state", e))?,
            None => None,
        };
        let rollback = match &record.rollback {
            Some(text) => Some(serde_json::from_str(text).map_err(|e| corrupt("rollback", e))?),
            None => None,
        };
        Ok(Slot { record, state, rollback })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn slot(state: Option<Value>, rollback: Option<&str>) -> Result<Slot, ExecError> {
        let mut record = StepRecord::pending("run-1", "promote");
        record.state = state;
        record.rollback = rollback.map(String::from);
        Slot::new(record)
    }

    /// Rows written before states were tagged: a run started by an older
    /// lifeboat resumes with the same state.
    #[test]
    fn untagged_rows_of_older_runs_are_read() {
        let read = |v: Value| slot(Some(v), None).unwrap().state.unwrap();
        assert_eq!(read(json!({"wait_until": 1700})), StepState::Timer { until: 1700 });
        assert_eq!(
            read(json!({"child_run": "0190-child"})),
            StepState::Child { run: "0190-child".into() }
        );
        assert_eq!(
            read(json!({"outbox": ["r/notify/s/ops/a1"]})),
            StepState::Outbox { keys: vec!["r/notify/s/ops/a1".into()] }
        );
        assert_eq!(read(json!({"attempt_base": 3})), StepState::Retried { attempt_base: 3 });
        let gate = json!({"awaiting": "approval", "people": ["alice", "bob"], "min": 2,
            "requester": "carol", "approvals": [{"by": "alice", "at": 5, "comment": null}],
            "deadline": 9000, "on_timeout": "fail", "message": "promote?",
            "escalation": null, "planned": null});
        let StepState::Gate(g) = read(gate) else { panic!("not a gate") };
        assert_eq!((g.awaiting.as_str(), g.min, g.approvals.len()), ("approval", 2, 1));
        let old = r#"{"status":"retry_wait","attempts":2,"wake_at":77,"error":"boom"}"#;
        let rb = slot(None, Some(old)).unwrap().rollback.unwrap();
        assert_eq!(rb.status, RollbackStatus::RetryWait);
        assert_eq!((rb.attempts, rb.wake_at, rb.error.as_deref()), (2, Some(77), Some("boom")));
    }

    /// New rows carry the tag and keep the old keys, so readers of the
    /// untagged shape (`awaiting`, `child_run`) still find them.
    #[test]
    fn tagged_states_round_trip_and_keep_the_old_keys() {
        for state in [
            StepState::Timer { until: 5 },
            StepState::Child { run: "c".into() },
            StepState::Outbox { keys: vec!["k".into()] },
            StepState::Retried { attempt_base: 1 },
            StepState::Gate(Box::new(Gate { awaiting: "ack".into(), ..Default::default() })),
        ] {
            let v = state.to_value();
            assert!(v.get("kind").is_some(), "{v}");
            assert_eq!(StepState::from_stored(&v).unwrap(), Some(state));
        }
        assert_eq!(StepState::Child { run: "c".into() }.to_value()["child_run"], "c");
        let gate = StepState::Gate(Box::new(Gate { awaiting: "ack".into(), ..Default::default() }));
        assert_eq!(gate.to_value()["awaiting"], "ack");
        let rb = RollbackState { status: RollbackStatus::Running, ..Default::default() };
        assert!(rb.to_stored().contains(r#""status":"running""#), "{}", rb.to_stored());
    }

    #[test]
    fn a_corrupt_state_names_the_run_and_the_step() {
        for (state, rollback) in [
            (Some(json!({"wait_until": "soon"})), None),
            (Some(json!({"no": "such shape"})), None),
            (None, Some(r#"{"status":"sideways"}"#)),
        ] {
            let e = slot(state, rollback).unwrap_err().to_string();
            assert!(e.contains("run-1") && e.contains("promote"), "{e}");
        }
    }
}
