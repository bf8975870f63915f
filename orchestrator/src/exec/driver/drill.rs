//! A drill run in the driver: steps skipped or substituted (`drill:`),
//! faults injected into attempts (each recorded as injected, never silent),
//! and the verdict, computed in the commit that ends the run — so a worker
//! killed mid-drill loses nothing: the run resumes, and its end says it.

use std::collections::BTreeSet;

use super::*;
use crate::compile::DrillAction;
use crate::exec::drill::{Answering, DrillSpec, Ending, verdict};
use crate::model::{AnswerDecision, Fault};
use crate::store::{NewAudit, RequestKind, RequestRecord, RunMode};

/// What a drill run with a spec carries through its drive.
pub(super) struct DrillState {
    spec: DrillSpec,
    /// Events a notification was queued for: those of earlier drives (read
    /// once, at load) and of this one (as they are staged).
    notified: BTreeSet<String>,
    /// Steps whose scenario person has answered in this drive (a refused
    /// answer is not repeated every round; a restarted worker tries once).
    answered: BTreeSet<String>,
}

impl DrillState {
    /// Read with the run: nothing for a live run or a drill's child (no
    /// spec); for a drill, its outbox once per drive (what earlier drives
    /// queued), never once per step.
    pub(super) async fn load(rt: &Runtime, run: &RunRecord) -> ExecResult<Option<Self>> {
        let Some(stored) = run.drill.as_ref().filter(|_| run.mode == RunMode::Drill) else {
            return Ok(None);
        };
        let spec: DrillSpec =
            serde_json::from_value(stored.clone()).map_err(|source| ExecError::CorruptState {
                run: run.id.clone(),
                step: "(the run)".into(),
                what: "drill",
                source,
            })?;
        let notified = rt.store.outbox(&run.id).await?.into_iter().map(|r| r.event).collect();
        Ok(Some(DrillState { spec, notified, answered: BTreeSet::new() }))
    }
}

impl Driver {
    fn drilling(&self) -> bool {
        self.run.mode == RunMode::Drill
    }

    /// `drill: skip` in a drill.
    pub(super) fn drill_skips(&self, i: usize) -> bool {
        self.drilling() && matches!(self.wf.steps[i].drill, DrillAction::Skip)
    }

    /// The substitute body that runs instead in a drill.
    pub(super) fn drill_body(&self, i: usize) -> Option<&CompiledBody> {
        match &self.wf.steps[i].drill {
            DrillAction::Substitute(body) if self.drilling() => Some(body),
            _ => None,
        }
    }

    /// A step with a rollback body; in a drill, a substituted step has none
    /// (its substitute changed nothing the rollback would undo).
    pub(super) fn has_rollback(&self, i: usize) -> bool {
        self.wf.steps[i].rollback.is_some() && self.drill_body(i).is_none()
    }

    /// The scenario's people answer the steps waiting for them: each
    /// answer is checked and applied exactly as a person's queued decision
    /// (`approved_by` names them; a wrong person is refused, saying why),
    /// with its audit entry marked as the drill's. No query: the spec and
    /// the steps are in memory.
    pub(super) async fn drill_answers(&mut self) -> ExecResult<()> {
        let Some(state) = self.drill.as_ref() else { return Ok(()) };
        let due: Vec<(usize, Answering)> = state
            .spec
            .people
            .iter()
            .filter(|a| !state.answered.contains(&a.step))
            .filter_map(|a| {
                let i = self.wf.steps.iter().position(|s| s.id == a.step)?;
                (self.slots[i].record.status == StepStatus::Waiting && self.gate(i).is_some())
                    .then(|| (i, a.clone()))
            })
            .collect();
        for (i, answer) in due {
            if let Some(state) = self.drill.as_mut() {
                state.answered.insert(answer.step.clone());
            }
            let awaiting_ack = self.gate(i).is_some_and(|g| g.awaiting == "ack");
            let decision = match answer.decision {
                Some(AnswerDecision::Approve) => Decision::Approve,
                Some(AnswerDecision::Reject) => Decision::Reject,
                Some(AnswerDecision::Ack) => Decision::Ack,
                None if awaiting_ack => Decision::Ack,
                None => Decision::Approve,
            };
            let kind = match decision {
                Decision::Approve => RequestKind::Approve,
                Decision::Reject => RequestKind::Reject,
                Decision::Ack => RequestKind::Ack,
            };
            let req = RequestRecord {
                id: 0,
                run_id: self.run.id.clone(),
                kind,
                step_id: Some(answer.step.clone()),
                data: Some(json!({"comment": answer.comment})),
                actor: answer.by.clone(),
                at: now_ms(),
            };
            let scenario = self.drill.as_ref().and_then(|d| d.spec.scenario.clone());
            let (mut changes, refused) = match self.decision_changes(i, &req, decision) {
                Ok(changes) => (changes, None),
                Err(why) => (
                    vec![Self::event(
                        RunEvent::DecisionRefused,
                        Some(&answer.step),
                        Some(json!({"by": answer.by, "decision": decision.name(), "reason": why})),
                    )],
                    Some(why),
                ),
            };
            let stage = if refused.is_some() { "refused" } else { "applied" };
            changes.push(Change::Audit(NewAudit {
                actor: answer.by.clone(),
                action: format!("{}_{stage}", decision.name()),
                run_id: Some(self.run.id.clone()),
                step_id: Some(answer.step.clone()),
                payload: json!({"drill_scenario": scenario, "reason": refused}),
            }));
            self.commit(changes).await?;
        }
        Ok(())
    }

    pub(super) async fn drill_skip(&mut self, i: usize) -> ExecResult<()> {
        let now = now_ms();
        let id = self.wf.steps[i].id.clone();
        let changes = vec![
            self.step_change(i, |s| {
                s.status = StepStatus::Skipped;
                s.finished_at = Some(now);
            }),
            Self::event(RunEvent::StepSkipped, Some(&id), Some(json!({"drill": "skip"}))),
        ];
        self.commit(changes).await
    }

    /// The fault injected into attempt `n` of step `i`: `crash` into its
    /// first attempt only (a worker dies once), the others into every one.
    pub(super) fn drill_fault(&self, i: usize, n: u32) -> Option<Fault> {
        let fault = self.drill.as_ref()?.spec.fault(&self.wf.steps[i].id)?;
        (fault != Fault::Crash || n == 1).then_some(fault)
    }

    /// Called by `stage`: notes the events notified, and when the run ends
    /// puts its verdict into the ending update, with an audit entry.
    pub(super) fn drill_staged(
        &mut self,
        changes: &mut [Change],
        notifications: &[Change],
        ended: bool,
    ) -> Option<Change> {
        let worker = self.worker().to_string();
        let state = self.drill.as_mut()?;
        for n in notifications {
            if let Change::Notify(n) = n {
                state.notified.insert(n.event.clone());
            }
        }
        if !ended || self.run.verdict.is_some() {
            return None;
        }
        let rto_ms =
            self.wf.definition.objectives.as_ref().and_then(|o| o.rto).map(|r| r.as_millis());
        let recovery_ms =
            self.run.started_at.map(|s| self.run.finished_at.unwrap_or_else(now_ms) - s);
        let steps = self
            .wf
            .steps
            .iter()
            .zip(&self.slots)
            .map(|(s, slot)| (s.id.as_str(), slot.record.status))
            .collect();
        let errors = self
            .wf
            .steps
            .iter()
            .zip(&self.slots)
            .filter_map(|(s, slot)| slot.record.error.as_deref().map(|e| (s.id.as_str(), e)))
            .collect();
        let end = Ending {
            status: self.run.status,
            steps,
            errors,
            outputs: self.run.outputs.as_ref(),
            recovery_ms,
            notified: &state.notified,
            rto_ms,
        };
        let verdict = verdict(&state.spec.expect, &end);
        let value = serde_json::to_value(&verdict).expect("a verdict is JSON");
        let ending = changes.iter_mut().find_map(|c| match c {
            Change::Run(u) if u.status.is_some_and(RunStatus::is_terminal) => Some(u),
            _ => None,
        })?;
        ending.verdict = Some(value.clone());
        self.run.verdict = Some(value);
        let failed: Vec<String> =
            verdict.expectations.iter().filter(|c| !c.ok).map(|c| c.line()).collect();
        Some(Change::Audit(NewAudit {
            actor: worker,
            action: "drill_verdict".into(),
            run_id: Some(self.run.id.clone()),
            step_id: None,
            payload: json!({
                "workflow": self.run.workflow,
                "scenario": state.spec.scenario,
                "passed": verdict.passed,
                "status": self.run.status.as_str(),
                "recovery_ms": verdict.recovery_ms,
                "rto_ms": verdict.rto_ms,
                "failed": failed,
            }),
        }))
    }

    /// The event that records fault `fault` injected into attempt `n`.
    pub(super) fn fault_event(&self, i: usize, n: u32, fault: Fault) -> Change {
        Self::event(
            RunEvent::FaultInjected,
            Some(&self.wf.steps[i].id),
            Some(json!({"attempt": n, "fault": fault.to_string()})),
        )
    }
}

/// One attempt with fault `fault` injected (never `crash`, which the driver
/// handles before any task): `fail` fails at once, `timeout` after the
/// body's timeout, `delay` runs `attempt` late.
pub(super) async fn injected(
    fault: Fault,
    timeout: Option<crate::model::Duration>,
    cancel: CancellationToken,
    attempt: impl std::future::Future<Output = Outcome>,
) -> Outcome {
    let wait = |d: Duration| {
        let cancel = cancel.clone();
        async move {
            tokio::select! {
                _ = cancel.cancelled() => false,
                _ = tokio::time::sleep(d) => true,
            }
        }
    };
    let failed = |error: String| Outcome::Failed { error, retryable: true, outputs: json!({}) };
    match fault {
        Fault::Fail | Fault::Crash => failed("injected fault (drill): fail".into()),
        Fault::Timeout => {
            let after = timeout.map(|t| t.0).unwrap_or_default();
            if !wait(after).await {
                return Outcome::fatal("cancelled");
            }
            let shown = timeout.map_or("0s".into(), |t| t.to_string());
            failed(format!("injected fault (drill): timed out after {shown}"))
        }
        Fault::Delay(d) => {
            if !wait(d.0).await {
                return Outcome::fatal("cancelled");
            }
            attempt.await
        }
    }
}
