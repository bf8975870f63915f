//! Operator and people's requests: cancel, pause, resume, retry, skip, mark,
//! decisions — each applied under the lease like any other transition.

use super::*;

impl Driver {
    /// Operator requests: cancel, pause, resume, skip, mark, retry.
    pub(super) async fn process_requests(&mut self) -> ExecResult<()> {
        let requests = self.rt.store.open_requests(&self.run.id).await?;
        for req in requests {
            let now = now_ms();
            let mut changes = vec![Change::RequestDone { id: req.id, at: now }];
            let step =
                req.step_id.as_deref().and_then(|id| self.wf.steps.iter().position(|s| s.id == id));
            match req.kind {
                RequestKind::Pause | RequestKind::Resume => {
                    let pause = req.kind == RequestKind::Pause;
                    changes
                        .push(Change::Run(RunUpdate { paused: Some(pause), ..Default::default() }));
                    // The run's history (and every event stream) says when
                    // it turned; a request that changes nothing adds nothing.
                    if self.run.paused != pause {
                        changes.push(Self::event(
                            if pause { RunEvent::Paused } else { RunEvent::Resumed },
                            None,
                            Some(json!({"by": req.actor})),
                        ));
                    }
                }
                RequestKind::Cancel | RequestKind::CancelNoRollback
                    if !self.run.status.is_terminal() =>
                {
                    for token in self.in_flight.values() {
                        token.cancel();
                    }
                    for i in 0..self.slots.len() {
                        let st = self.slots[i].record.status;
                        if !st.is_settled() {
                            changes.push(self.step_change(i, |s| {
                                s.status = StepStatus::Cancelled;
                                s.wake_at = None;
                                s.finished_at = Some(now);
                            }));
                        }
                    }
                    let rollback = req.kind == RequestKind::Cancel && self.has_rollback_work();
                    changes.push(Change::Run(RunUpdate {
                        status: Some(if rollback {
                            RunStatus::RollingBack
                        } else {
                            RunStatus::Cancelled
                        }),
                        finished_at: (!rollback).then_some(now),
                        cancelled_by: Some(req.actor.clone()),
                        paused: Some(false),
                        ..Default::default()
                    }));
                    changes.push(Self::event(
                        if rollback { RunEvent::RollingBack } else { RunEvent::Cancelled },
                        None,
                        Some(json!({"by": req.actor})),
                    ));
                }
                RequestKind::Skip | RequestKind::MarkSucceeded | RequestKind::MarkFailed => {
                    if let Some(i) = step {
                        // The attempt ends (its process group killed, its row
                        // recorded) before the decision applies.
                        self.stop_attempt(i, Phase::Forward).await?;
                        let status = match req.kind {
                            RequestKind::Skip => StepStatus::Skipped,
                            RequestKind::MarkSucceeded => StepStatus::Succeeded,
                            _ => StepStatus::Failed,
                        };
                        changes.push(self.step_change(i, |s| {
                            s.status = status;
                            s.wake_at = None;
                            s.finished_at = Some(now);
                            s.error = Some(format!("{} by {}", status, req.actor));
                            if status == StepStatus::Succeeded && s.outputs.is_none() {
                                s.outputs = Some(json!({}));
                            }
                        }));
                        changes.push(Self::event(
                            match status {
                                StepStatus::Skipped => RunEvent::StepSkipped,
                                StepStatus::Succeeded => RunEvent::StepSucceeded,
                                _ => RunEvent::StepFailed,
                            },
                            req.step_id.as_deref(),
                            Some(json!({"by": req.actor, "manual": true})),
                        ));
                    }
                }
                RequestKind::Retry => self.plan_retry(&req, &mut changes, now),
                RequestKind::Approve | RequestKind::Reject | RequestKind::Ack => {
                    let decision = Decision::of(req.kind).expect("a decision kind");
                    match step {
                        Some(i) => changes.extend(self.apply_decision(i, &req, decision)),
                        None => changes.push(crate::exec::people::outcome_audit(
                            &req,
                            decision,
                            Some("the workflow has no such step"),
                        )),
                    }
                }
                _ => {}
            }
            self.commit(changes).await?;
        }
        Ok(())
    }

    /// Cancels the attempt of step `i` in flight, if any, and waits until it
    /// has ended: its process group killed and its end recorded (not
    /// applied to the step, which the caller decides). Attempts of other
    /// steps that end meanwhile are handled as usual.
    pub(super) async fn stop_attempt(&mut self, i: usize, phase: Phase) -> ExecResult<()> {
        // An attempt staged but not launched yet is launched first: its
        // start is then on record, and its end will be.
        self.flush().await?;
        let Some(token) = self.in_flight.get(&(i, phase)) else { return Ok(()) };
        token.cancel();
        while self.in_flight.contains_key(&(i, phase)) {
            let done = self.rx.recv().await.expect("the driver holds a sender");
            self.in_flight.remove(&(done.index, done.phase));
            if (done.index, done.phase) == (i, phase) {
                let mut changes = self.finish_changes(i, phase, done.n, &done.outcome);
                changes.truncate(1); // the attempt's end only
                self.commit(changes).await?;
            } else {
                self.on_finished(done).await?;
            }
        }
        Ok(())
    }

    /// `retry [--from STEP] [-i k=v]`: failed, cancelled, rolled-back and
    /// not-started steps (and STEP with everything after it) run again.
    pub(super) fn plan_retry(
        &self,
        req: &crate::store::RequestRecord,
        changes: &mut Vec<Change>,
        now: i64,
    ) {
        let from = req.data.as_ref().and_then(|d| d.get("from")).and_then(Value::as_str);
        let from_index = from.and_then(|id| self.wf.steps.iter().position(|s| s.id == id));
        let mut reset = vec![false; self.slots.len()];
        for (i, s) in self.records().enumerate() {
            reset[i] = matches!(
                s.status,
                StepStatus::Failed
                    | StepStatus::Cancelled
                    | StepStatus::RolledBack
                    | StepStatus::NeedsHuman
                    | StepStatus::Pending
            ) || (s.status == StepStatus::Succeeded
                && self.slots[i]
                    .rollback
                    .as_ref()
                    .is_some_and(|r| r.status == RollbackStatus::Succeeded));
        }
        if let Some(f) = from_index {
            for (i, r) in reset.iter_mut().enumerate() {
                if i == f || self.wf.ancestors.contains(i, f) {
                    *r = true;
                }
            }
        }
        for (i, r) in reset.iter().enumerate() {
            if *r {
                changes.push(self.step_change(i, |s| {
                    s.status = StepStatus::Pending;
                    s.wake_at = None;
                    s.error = None;
                    s.outputs = None;
                    s.finished_at = None;
                    s.rollback = None;
                    // A fresh retry budget; attempt numbers keep counting.
                    s.state = Some(StepState::Retried { attempt_base: s.attempts }.to_value());
                }));
            }
        }
        let inputs =
            req.data.as_ref().and_then(|d| d.get("inputs")).filter(|v| v.is_object()).map(|new| {
                let mut merged = self.run.inputs.clone();
                if let (Some(m), Some(n)) = (merged.as_object_mut(), new.as_object()) {
                    for (k, v) in n {
                        m.insert(k.clone(), v.clone());
                    }
                }
                merged
            });
        changes.push(Change::Run(RunUpdate {
            status: Some(RunStatus::Running),
            reopen: true,
            inputs,
            ..Default::default()
        }));
        changes.push(Self::event(
            RunEvent::Retried,
            from,
            Some(json!({"by": req.actor, "at": now})),
        ));
    }
}
