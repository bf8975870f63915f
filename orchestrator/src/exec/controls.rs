//! Operator controls on an active run — cancel (with or without rollback),
//! pause, resume, skip a step, mark a step — checked and queued in one place
//! for the CLI (`lifeboat cancel|pause|resume|skip|mark`) and the API
//! (`POST /api/v1/runs/{id}/…`). Each is a request recorded in the store
//! with who asked, applied by the worker driving the run, and audited.

use serde_json::{Value, json};

use crate::store::{NewAudit, NewRequest, RequestKind, RunRecord, StepStatus, Store, StoreError};

/// What an operator asks of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    Cancel { rollback: bool },
    Pause,
    Resume,
    Skip { step: String },
    Mark { step: String, succeeded: bool },
}

impl Control {
    fn kind(&self) -> RequestKind {
        match self {
            Control::Cancel { rollback: true } => RequestKind::Cancel,
            Control::Cancel { rollback: false } => RequestKind::CancelNoRollback,
            Control::Pause => RequestKind::Pause,
            Control::Resume => RequestKind::Resume,
            Control::Skip { .. } => RequestKind::Skip,
            Control::Mark { succeeded: true, .. } => RequestKind::MarkSucceeded,
            Control::Mark { succeeded: false, .. } => RequestKind::MarkFailed,
        }
    }

    fn step(&self) -> Option<&str> {
        match self {
            Control::Skip { step } | Control::Mark { step, .. } => Some(step),
            _ => None,
        }
    }
}

/// Why a control was refused.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No such run (or step): the message names it, with a did-you-mean.
    #[error("{0}")]
    NotFound(String),
    /// The run or step is not in a state the control applies to.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A control that was queued: the run's full id and the request's name
/// (`cancel`, `cancel_no_rollback`, `pause`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub run_id: String,
    pub requested: &'static str,
}

/// Checks `control` against run `run` (an id or unique prefix), queues it
/// as `actor` and audits it with `via` (`cli`, `api`).
pub async fn request(
    store: &dyn Store,
    run: &str,
    control: Control,
    actor: &str,
    via: &str,
) -> Result<Queued, ControlError> {
    let id = store.resolve_run_id(run).await?;
    let run = store
        .run(&id)
        .await?
        .ok_or_else(|| ControlError::NotFound(format!("run {id} not found")))?;
    if run.status.is_terminal() {
        return Err(ControlError::Conflict(format!(
            "run {} has already ended ({}); retry it (`lifeboat retry {} [--from STEP]`) to run part of it again",
            run.id, run.status, run.id
        )));
    }
    let mut audit = json!({"via": via});
    match &control {
        Control::Cancel { rollback } => audit["rollback"] = json!(rollback),
        // Not checked against `paused`: that is the applied state, and a
        // pause still queued would make a resume right after it look wrong.
        Control::Pause | Control::Resume => {}
        Control::Skip { step } => {
            let was = step_status(store, &run, step).await?;
            if matches!(was, StepStatus::Succeeded | StepStatus::Skipped | StepStatus::RolledBack) {
                return Err(ControlError::Conflict(format!("step {step} is already {was}")));
            }
            audit["step"] = json!(step);
            audit["was"] = json!(was.as_str());
        }
        Control::Mark { step, succeeded } => {
            let was = step_status(store, &run, step).await?;
            if was == StepStatus::Succeeded {
                return Err(ControlError::Conflict(format!("step {step} already succeeded")));
            }
            audit["step"] = json!(step);
            audit["outcome"] = json!(if *succeeded { "succeeded" } else { "failed" });
            audit["was"] = json!(was.as_str());
        }
    }
    let kind = control.kind();
    let step = control.step().map(String::from);
    store
        .request(NewRequest {
            run_id: run.id.clone(),
            kind,
            step_id: step.clone(),
            data: None,
            actor: actor.to_string(),
        })
        .await?;
    append_audit(store, actor, kind.as_str(), &run.id, step.as_deref(), audit).await?;
    Ok(Queued { run_id: run.id, requested: kind.as_str() })
}

async fn append_audit(
    store: &dyn Store,
    actor: &str,
    action: &str,
    run_id: &str,
    step_id: Option<&str>,
    payload: Value,
) -> Result<(), ControlError> {
    store
        .audit_append(NewAudit {
            actor: actor.to_string(),
            action: action.to_string(),
            run_id: Some(run_id.to_string()),
            step_id: step_id.map(String::from),
            payload,
        })
        .await?;
    Ok(())
}

/// The status of `step` in `run`, or a `NotFound` naming the steps there are.
async fn step_status(
    store: &dyn Store,
    run: &RunRecord,
    step: &str,
) -> Result<StepStatus, ControlError> {
    let steps = store.steps(&run.id).await?;
    match steps.iter().find(|s| s.step_id == step) {
        Some(s) => Ok(s.status),
        None => {
            let ids: Vec<&str> = steps.iter().map(|s| s.step_id.as_str()).collect();
            let hint = crate::suggest::did_you_mean(step, ids.iter().copied())
                .unwrap_or_else(|| format!("steps: {}", ids.join(", ")));
            Err(ControlError::NotFound(format!("run {} has no step `{step}` ({hint})", run.id)))
        }
    }
}
