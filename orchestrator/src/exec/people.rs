//! People in the loop: who may approve, reject or acknowledge a waiting
//! step, and the one entry point (CLI, API, links) through which they do.
//!
//! A decision is checked twice: here, so the person gets a precise answer at
//! once (403, 409), and again by the run's driver when it applies the queued
//! request, because the step may have moved on in between.

use indexmap::IndexMap;
use serde_json::{Value, json};

use crate::store::{NewAudit, NewRequest, RequestKind, StepStatus, Store, StoreError};

/// Users and groups from lifeboat.toml, to expand `approvers`.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    pub groups: IndexMap<String, Vec<String>>,
}

impl Directory {
    pub fn from_config(config: &crate::config::Config) -> Self {
        Directory { groups: config.groups.clone() }
    }

    /// Users named directly or through a group, deduplicated, in order.
    pub fn expand(&self, names: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for name in names {
            let members = self.groups.get(name).cloned().unwrap_or_else(|| vec![name.clone()]);
            for m in members {
                if !out.contains(&m) {
                    out.push(m);
                }
            }
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Reject,
    Ack,
}

impl Decision {
    pub fn name(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Reject => "reject",
            Decision::Ack => "ack",
        }
    }

    fn request(self) -> RequestKind {
        match self {
            Decision::Approve => RequestKind::Approve,
            Decision::Reject => RequestKind::Reject,
            Decision::Ack => RequestKind::Ack,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error("{0}")]
    NotFound(String),
    /// The step is not waiting for this decision (any more).
    #[error("{0}")]
    NotWaiting(String),
    /// The person may not take this decision.
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why `actor` may not take `decision` on a step in `state`, if they may not.
/// Shared by `decide` and the driver.
pub fn refusal(state: &Value, actor: &str, decision: Decision) -> Option<String> {
    let awaiting = state.get("awaiting").and_then(Value::as_str).unwrap_or("");
    let acking = decision == Decision::Ack;
    match (awaiting, acking) {
        ("approval", false) | ("ack", true) => {}
        ("approval", true) => {
            return Some("this step waits for an approval, not an acknowledgement".into());
        }
        ("ack", false) => {
            return Some("this step waits for an acknowledgement (`lifeboat ack`)".into());
        }
        _ => return Some("this step is not waiting for a person".into()),
    }
    let listed = |key: &str| -> Vec<String> {
        state
            .get(key)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
            .unwrap_or_default()
    };
    let allowed = listed("people");
    if !allowed.is_empty() && !allowed.iter().any(|p| p == actor) {
        return Some(format!("{actor} is not among the approvers ({})", allowed.join(", ")));
    }
    if state.get("requester").and_then(Value::as_str) == Some(actor) {
        return Some(format!(
            "{actor} started this run and `exclude_requester` is set: someone else must decide"
        ));
    }
    let approved = state
        .get("approvals")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|x| x.get("by").and_then(Value::as_str) == Some(actor)));
    if decision == Decision::Approve && approved {
        return Some(format!("{actor} has already approved; another person must approve"));
    }
    None
}

/// Approve, reject or acknowledge `step` of `run` as `actor`: checked,
/// queued for the run's worker, and written to the audit log.
pub async fn decide(
    store: &dyn Store,
    run: &str,
    step: &str,
    actor: &str,
    decision: Decision,
    comment: Option<String>,
) -> Result<String, DecideError> {
    let run_id = match store.resolve_run_id(run).await {
        Ok(id) => id,
        Err(StoreError::RunNotFound(_)) => {
            return Err(DecideError::NotFound(format!("run {run} not found")));
        }
        Err(e) => return Err(e.into()),
    };
    let record = store
        .run(&run_id)
        .await?
        .ok_or_else(|| DecideError::NotFound(format!("run {run_id} not found")))?;
    if record.status.is_terminal() {
        return Err(DecideError::NotWaiting(format!(
            "run {run_id} has already ended ({})",
            record.status
        )));
    }
    let steps = store.steps(&run_id).await?;
    let s = steps.iter().find(|s| s.step_id == step).ok_or_else(|| {
        DecideError::NotFound(format!("run {run_id} of `{}` has no step `{step}`", record.workflow))
    })?;
    if s.status != StepStatus::Waiting {
        return Err(DecideError::NotWaiting(format!(
            "step `{step}` is {}, not waiting for a decision",
            s.status
        )));
    }
    let state = s.state.clone().unwrap_or(Value::Null);
    if let Some(why) = refusal(&state, actor, decision) {
        let forbidden = state.get("awaiting").and_then(Value::as_str).is_some_and(|a| {
            (a == "approval" && decision != Decision::Ack)
                || (a == "ack" && decision == Decision::Ack)
        });
        return Err(if forbidden {
            DecideError::Forbidden(why)
        } else {
            DecideError::NotWaiting(why)
        });
    }
    let data = json!({ "comment": comment });
    store
        .request(NewRequest {
            run_id: run_id.clone(),
            kind: decision.request(),
            step_id: Some(step.into()),
            data: Some(data.clone()),
            actor: actor.into(),
        })
        .await?;
    store
        .audit_append(NewAudit {
            actor: actor.into(),
            action: decision.name().into(),
            run_id: Some(run_id.clone()),
            step_id: Some(step.into()),
            payload: data,
        })
        .await?;
    Ok(run_id)
}

/// A resolved alert cancels the run it started if that run has not yet
/// passed its first approval gate: some approval step is still ahead of or
/// at the point of decision, and none has been approved. Returns whether it
/// cancelled.
pub async fn cancel_on_resolve(
    store: &dyn Store,
    run_id: &str,
    actor: &str,
) -> Result<bool, StoreError> {
    let Some(run) = store.run(run_id).await? else { return Ok(false) };
    if run.status.is_terminal() {
        return Ok(false);
    }
    // The approval steps of the definition the run is pinned to: a gate not
    // reached yet has no state that would tell it is one.
    let approvals: Option<Vec<String>> =
        store.definition(&run.definition_hash).await?.and_then(|def| {
            let wf = crate::compile::compile(&def.file, &def.source, Default::default()).ok()?;
            let kind = crate::exec::StepKind::Native(crate::exec::NativeKind::Approval);
            Some(wf.steps.iter().filter(|s| s.body.kind == kind).map(|s| s.id.clone()).collect())
        });
    let is_approval = |s: &crate::store::StepRecord| match &approvals {
        Some(ids) => ids.contains(&s.step_id),
        None => {
            s.state.as_ref().and_then(|st| st.get("awaiting")).and_then(Value::as_str)
                == Some("approval")
        }
    };
    let steps = store.steps(run_id).await?;
    let gate_passed = steps.iter().any(|s| is_approval(s) && s.status == StepStatus::Succeeded);
    let gate_ahead = steps
        .iter()
        .any(|s| is_approval(s) && matches!(s.status, StepStatus::Pending | StepStatus::Waiting));
    if gate_passed || !gate_ahead {
        return Ok(false);
    }
    store
        .request(NewRequest {
            run_id: run_id.into(),
            kind: RequestKind::Cancel,
            step_id: None,
            data: Some(json!({"reason": "the alert resolved before approval"})),
            actor: actor.into(),
        })
        .await?;
    store
        .audit_append(NewAudit {
            actor: actor.into(),
            action: "cancel_on_resolve".into(),
            run_id: Some(run_id.into()),
            step_id: None,
            payload: json!({"reason": "the alert resolved before approval"}),
        })
        .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_expand_to_distinct_users() {
        let mut groups = IndexMap::new();
        groups.insert("leads".to_string(), vec!["alice".to_string(), "bob".to_string()]);
        let dir = Directory { groups };
        assert_eq!(
            dir.expand(&["leads".into(), "bob".into(), "carol".into()]),
            ["alice", "bob", "carol"]
        );
    }

    #[test]
    fn refusals_name_the_rule() {
        let state = json!({"awaiting": "approval", "people": ["alice", "bob"], "requester": "bob",
                           "approvals": [{"by": "alice"}]});
        assert!(refusal(&state, "carol", Decision::Approve).unwrap().contains("not among"));
        assert!(refusal(&state, "bob", Decision::Approve).unwrap().contains("started this run"));
        assert!(refusal(&state, "alice", Decision::Approve).unwrap().contains("already approved"));
        assert_eq!(refusal(&state, "alice", Decision::Reject), None);
        assert!(refusal(&state, "alice", Decision::Ack).unwrap().contains("approval"));
        let ack = json!({"awaiting": "ack"});
        assert_eq!(refusal(&ack, "anyone", Decision::Ack), None);
    }
}
