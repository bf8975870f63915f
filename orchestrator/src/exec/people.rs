//! People in the loop: who may approve, reject or acknowledge a waiting
//! step, and the one entry point (CLI, API, links) through which they do.
//!
//! A decision is checked twice: here, so the person gets a precise answer at
//! once (403, 409) — counting decisions queued but not applied yet, so a
//! duplicate or a contradiction is refused now, not acknowledged and dropped
//! later — and again by the run's driver when it applies the queued request,
//! because the step may have moved on in between.
//!
//! The audit log follows the same two stages: `<decision>_requested` when the
//! request is queued, then `<decision>_applied` or `<decision>_refused` (with
//! the reason) in the commit of the driver that took it up.

use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::store::{
    Change, NewAudit, NewRequest, RequestKind, RequestRecord, StepStatus, Store, StoreError,
};

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

/// What a waiting step's stored `state` says about deciding it: the fields
/// of the driver's gate (`exec/driver/gates.rs`) that a decision is checked
/// against, read from the same JSON. Other keys (`kind`, deadlines,
/// escalation tiers) are ignored and every field may be absent, so it reads
/// any step's state, tagged or written before tags; a step that is no gate
/// has `awaiting: None`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct GateView {
    pub awaiting: Option<Awaiting>,
    /// Who may decide; empty: anyone the roles allow.
    #[serde(default)]
    pub people: Vec<String>,
    /// Approvals needed (0 is read as 1).
    #[serde(default)]
    pub min: u32,
    /// The run's requester, when `exclude_requester` keeps them out.
    pub requester: Option<String>,
    #[serde(default)]
    pub approvals: Vec<ApprovedBy>,
}

/// Which decision a gate waits for (`awaiting` in the stored state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Awaiting {
    Approval,
    Ack,
}

impl Awaiting {
    /// The stored name: `approval`, `ack`.
    pub fn as_str(self) -> &'static str {
        match self {
            Awaiting::Approval => "approval",
            Awaiting::Ack => "ack",
        }
    }

    /// "an approval", "an acknowledgement".
    pub fn described(self) -> &'static str {
        match self {
            Awaiting::Approval => "an approval",
            Awaiting::Ack => "an acknowledgement",
        }
    }
}

/// One approval given so far (the stored entry also has `at`, `comment`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ApprovedBy {
    pub by: String,
}

impl GateView {
    /// Reads a step's stored state (`None`: the step has none).
    pub fn read(state: Option<&Value>) -> Result<GateView, serde_json::Error> {
        match state {
            None | Some(Value::Null) => Ok(GateView::default()),
            Some(v) => GateView::deserialize(v),
        }
    }

    /// Whether `decision` is the kind this gate waits for.
    fn expects(&self, decision: Decision) -> bool {
        match self.awaiting {
            Some(Awaiting::Approval) => decision != Decision::Ack,
            Some(Awaiting::Ack) => decision == Decision::Ack,
            None => false,
        }
    }

    /// Approvals needed (at least one).
    pub fn min(&self) -> usize {
        self.min.max(1) as usize
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

    /// "approval", "rejection", "acknowledgement".
    pub fn noun(self) -> &'static str {
        match self {
            Decision::Approve => "approval",
            Decision::Reject => "rejection",
            Decision::Ack => "acknowledgement",
        }
    }

    fn request(self) -> RequestKind {
        match self {
            Decision::Approve => RequestKind::Approve,
            Decision::Reject => RequestKind::Reject,
            Decision::Ack => RequestKind::Ack,
        }
    }

    /// The decision a queued request carries, if it is one.
    pub fn of(kind: RequestKind) -> Option<Decision> {
        match kind {
            RequestKind::Approve => Some(Decision::Approve),
            RequestKind::Reject => Some(Decision::Reject),
            RequestKind::Ack => Some(Decision::Ack),
            _ => None,
        }
    }
}

/// The audit entry of a queued decision's outcome, written by the driver in
/// the commit that applies (`refused: None`) or refuses it.
pub fn outcome_audit(req: &RequestRecord, decision: Decision, refused: Option<&str>) -> Change {
    let stage = if refused.is_some() { "refused" } else { "applied" };
    Change::Audit(NewAudit {
        actor: req.actor.clone(),
        action: format!("{}_{stage}", decision.name()),
        run_id: Some(req.run_id.clone()),
        step_id: req.step_id.clone(),
        payload: json!({"request": req.id, "reason": refused}),
    })
}

/// Why `actor`'s `decision` on `step` cannot take effect given the
/// decisions `queued` (actor, decision) before it, oldest first: their own
/// earlier one (a duplicate or a contradiction), a queued rejection or
/// acknowledgement that closes the step, or enough queued approvals to pass it.
pub fn queued_conflict(
    gate: &GateView,
    queued: &[(String, Decision)],
    step: &str,
    actor: &str,
    decision: Decision,
) -> Option<String> {
    if let Some((_, mine)) = queued.iter().find(|(by, _)| by == actor) {
        return Some(if *mine == decision {
            format!(
                "{actor}'s {} of step `{step}` is already queued (the run's worker has not applied it yet); it counts once",
                mine.noun()
            )
        } else {
            format!(
                "{actor} already asked to {} step `{step}` and the run's worker has not applied it yet; a contradictory {} is refused (decide again once it is applied)",
                mine.name(),
                decision.noun()
            )
        });
    }
    if let Some((by, closing)) =
        queued.iter().find(|(_, d)| matches!(d, Decision::Reject | Decision::Ack))
    {
        return Some(format!(
            "step `{step}` is being closed: {by}'s {} is queued ahead of this",
            closing.noun()
        ));
    }
    if decision != Decision::Ack {
        let min = gate.min();
        let approved = gate.approvals.len();
        let waiting: Vec<&str> = queued
            .iter()
            .filter(|(_, d)| *d == Decision::Approve)
            .map(|(by, _)| by.as_str())
            .collect();
        if !waiting.is_empty() && approved + waiting.len() >= min {
            return Some(format!(
                "step `{step}` already has the approval{} it needs queued (by {}); nothing is left to decide",
                if min == 1 { "" } else { "s" },
                waiting.join(", ")
            ));
        }
    }
    None
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

/// Why `actor` may not take `decision` on a step waiting at `gate`, if they
/// may not. Shared by `decide` and the driver.
pub fn refusal(gate: &GateView, actor: &str, decision: Decision) -> Option<String> {
    if !gate.expects(decision) {
        return Some(match gate.awaiting {
            Some(Awaiting::Approval) => {
                "this step waits for an approval, not an acknowledgement".into()
            }
            Some(Awaiting::Ack) => "this step waits for an acknowledgement (`lifeboat ack`)".into(),
            None => "this step is not waiting for a person".into(),
        });
    }
    if !gate.people.is_empty() && !gate.people.iter().any(|p| p == actor) {
        return Some(format!("{actor} is not among the approvers ({})", gate.people.join(", ")));
    }
    if gate.requester.as_deref() == Some(actor) {
        return Some(format!(
            "{actor} started this run and `exclude_requester` is set: someone else must decide"
        ));
    }
    let approved = gate.approvals.iter().any(|a| a.by == actor);
    if decision == Decision::Approve && approved {
        return Some(format!("{actor} has already approved; another person must approve"));
    }
    None
}

/// `refusal` for a step's stored state: one that cannot be read refuses
/// every decision, saying why.
pub fn stored_refusal(state: Option<&Value>, actor: &str, decision: Decision) -> Option<String> {
    match GateView::read(state) {
        Ok(gate) => refusal(&gate, actor, decision),
        Err(e) => Some(format!("the step's stored state cannot be read: {e}")),
    }
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
        Err(StoreError::NotFound(_)) => {
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
    let gate = GateView::read(s.state.as_ref())
        .map_err(|e| StoreError::corrupt(format!("gate state: {e}")).in_run(&run_id, Some(step)))?;
    if let Some(why) = refusal(&gate, actor, decision) {
        // The right kind of decision, by the wrong person.
        let forbidden = gate.expects(decision);
        return Err(if forbidden {
            DecideError::Forbidden(why)
        } else {
            DecideError::NotWaiting(why)
        });
    }
    // Decisions queued and not applied yet count as if they were.
    let queued: Vec<(String, Decision)> = store
        .open_requests(&run_id)
        .await?
        .into_iter()
        .filter(|r| r.step_id.as_deref() == Some(step))
        .filter_map(|r| Decision::of(r.kind).map(|d| (r.actor, d)))
        .collect();
    if let Some(why) = queued_conflict(&gate, &queued, step, actor, decision) {
        return Err(DecideError::NotWaiting(why));
    }
    let data = json!({ "comment": comment });
    let request = store
        .request(NewRequest {
            run_id: run_id.clone(),
            kind: decision.request(),
            step_id: Some(step.into()),
            data: Some(data.clone()),
            actor: actor.into(),
        })
        .await
        .map_err(|e| match e {
            // Another request of this person's won the race (another replica).
            StoreError::Conflict(why) => DecideError::NotWaiting(why.to_string()),
            other => DecideError::Store(other),
        })?;
    store
        .audit_append(NewAudit {
            actor: actor.into(),
            action: format!("{}_requested", decision.name()),
            run_id: Some(run_id.clone()),
            step_id: Some(step.into()),
            payload: json!({"comment": comment, "request": request}),
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
            let kind = crate::kinds::StepKind::Native(crate::kinds::NativeKind::Approval);
            Some(wf.steps.iter().filter(|s| s.body.kind == kind).map(|s| s.id.clone()).collect())
        });
    let is_approval = |s: &crate::store::StepRecord| match &approvals {
        Some(ids) => Ok(ids.contains(&s.step_id)),
        None => GateView::read(s.state.as_ref())
            .map(|gate| gate.awaiting == Some(Awaiting::Approval))
            .map_err(|e| {
                StoreError::corrupt(format!("gate state: {e}")).in_run(run_id, Some(&s.step_id))
            }),
    };
    let mut gate_passed = false;
    let mut gate_ahead = false;
    for s in store.steps(run_id).await? {
        if is_approval(&s)? {
            gate_passed |= s.status == StepStatus::Succeeded;
            gate_ahead |= matches!(s.status, StepStatus::Pending | StepStatus::Waiting);
        }
    }
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

    fn gate(state: Value) -> GateView {
        GateView::read(Some(&state)).expect("a gate state")
    }

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
        let state =
            gate(json!({"awaiting": "approval", "people": ["alice", "bob"], "requester": "bob",
                           "approvals": [{"by": "alice", "at": 1, "comment": null}]}));
        assert!(refusal(&state, "carol", Decision::Approve).unwrap().contains("not among"));
        assert!(refusal(&state, "bob", Decision::Approve).unwrap().contains("started this run"));
        assert!(refusal(&state, "alice", Decision::Approve).unwrap().contains("already approved"));
        assert_eq!(refusal(&state, "alice", Decision::Reject), None);
        assert!(refusal(&state, "alice", Decision::Ack).unwrap().contains("approval"));
        let ack = gate(json!({"awaiting": "ack"}));
        assert_eq!(refusal(&ack, "anyone", Decision::Ack), None);
    }

    #[test]
    fn gate_view_reads_tagged_untagged_and_other_step_states() {
        // As the driver writes a gate today (tagged, with its timers)...
        let tagged = gate(json!({"kind": "gate", "awaiting": "approval", "people": ["alice"],
            "min": 2, "requester": null, "approvals": [{"by": "bob", "at": 5, "comment": "ok"}],
            "deadline": 99, "on_timeout": "fail", "message": null, "escalation": null,
            "planned": {"tiers": [{"channels": ["ops"], "ack_within": 60000}], "tier": 0,
                        "tier_deadline": 0, "repeat_every": null, "next_repeat": null,
                        "updates": 0, "template": null}}));
        assert_eq!(tagged.awaiting, Some(Awaiting::Approval));
        assert_eq!((tagged.people.as_slice(), tagged.min()), (&["alice".to_string()][..], 2));
        assert_eq!(tagged.approvals, [ApprovedBy { by: "bob".into() }]);
        // ...and as rows written before the tag still read.
        let old = gate(json!({"awaiting": "ack", "people": [], "approvals": []}));
        assert_eq!((old.awaiting, old.min()), (Some(Awaiting::Ack), 1));
        // A step that is no gate, or has no state, waits for nobody.
        for state in [Some(json!({"kind": "timer", "wait_until": 7})), None] {
            let view = GateView::read(state.as_ref()).unwrap();
            assert_eq!(view.awaiting, None);
            assert!(refusal(&view, "alice", Decision::Ack).unwrap().contains("not waiting"));
        }
        // A gate that does not read is refused, saying so, not taken for "no gate".
        let bad = json!({"awaiting": "approval", "people": "alice"});
        assert!(GateView::read(Some(&bad)).is_err());
        let why = stored_refusal(Some(&bad), "alice", Decision::Approve).unwrap();
        assert!(why.contains("cannot be read"), "{why}");
    }

    #[test]
    fn queued_decisions_count_before_they_are_applied() {
        let gate = gate(json!({"awaiting": "approval", "min": 2, "approvals": []}));
        let q = |list: &[(&str, Decision)]| -> Vec<(String, Decision)> {
            list.iter().map(|(a, d)| (a.to_string(), *d)).collect()
        };
        let conflict = |queued: &[(&str, Decision)], actor: &str, d: Decision| {
            queued_conflict(&gate, &q(queued), "gate", actor, d)
        };
        let twice = conflict(&[("bob", Decision::Approve)], "bob", Decision::Approve).unwrap();
        assert!(twice.contains("already queued") && twice.contains("counts once"), "{twice}");
        let turned = conflict(&[("bob", Decision::Approve)], "bob", Decision::Reject).unwrap();
        assert!(turned.contains("contradictory rejection"), "{turned}");
        assert_eq!(conflict(&[("bob", Decision::Approve)], "carol", Decision::Approve), None);
        let closing = conflict(&[("bob", Decision::Reject)], "carol", Decision::Approve).unwrap();
        assert!(closing.contains("bob's rejection is queued"), "{closing}");
        let enough = conflict(
            &[("bob", Decision::Approve), ("carol", Decision::Approve)],
            "dave",
            Decision::Reject,
        )
        .unwrap();
        assert!(enough.contains("by bob, carol"), "{enough}");
        assert_eq!(conflict(&[], "bob", Decision::Approve), None);
    }
}
