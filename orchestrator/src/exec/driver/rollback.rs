//! Rollback: the rollback bodies of succeeded steps, each after the
//! rollbacks of the steps that depend on it.

use super::*;

impl Driver {
    /// A succeeded step with a rollback body whose rollback has not ended.
    pub(super) fn rollback_pending(&self, i: usize) -> bool {
        self.has_rollback(i)
            && self.slots[i].record.status == StepStatus::Succeeded
            && !self.slots[i].rollback.as_ref().is_some_and(RollbackState::ended)
    }

    /// Starts rollbacks in reverse dependency order: a step's rollback waits
    /// for the rollbacks of every step that depends on it.
    pub(super) async fn advance_rollback(&mut self) -> ExecResult<()> {
        let now = now_ms();
        let order: Vec<usize> = self.wf.topological_order.iter().rev().copied().collect();
        for i in order {
            if !self.rollback_pending(i) || self.in_flight.contains_key(&(i, Phase::Rollback)) {
                continue;
            }
            let state = self.slots[i].rollback.clone().unwrap_or_default();
            if state.status == RollbackStatus::Running {
                continue;
            }
            if state.status == RollbackStatus::RetryWait && state.wake_at.is_some_and(|w| w > now) {
                continue;
            }
            let dependents_done = (0..self.slots.len())
                .filter(|&d| self.wf.ancestors.contains(d, i))
                .all(|d| !self.rollback_pending(d));
            if dependents_done {
                self.start_attempt(i, Phase::Rollback).await?;
            }
        }
        Ok(())
    }

    pub(super) async fn finish_rollback(
        &mut self,
        i: usize,
        n: u32,
        result: Result<(), (String, bool)>,
    ) -> ExecResult<()> {
        let id = self.wf.steps[i].id.clone();
        let retry = self.body(i, Phase::Rollback).retry;
        let now = now_ms();
        let mut rb = self.slots[i].rollback.clone().unwrap_or_default();
        let mut changes = Vec::new();
        match result {
            Ok(()) => {
                rb.status = RollbackStatus::Succeeded;
                changes.push(self.step_change(i, |s| {
                    s.status = StepStatus::RolledBack;
                    s.rollback = Some(rb.to_stored());
                }));
                changes.push(Self::event(RunEvent::StepRolledBack, Some(&id), None));
            }
            Err((error, retryable)) if retryable && n < retry.attempts => {
                let delay = backoff::delay_after(&retry, n, fastrand::f64());
                rb.status = RollbackStatus::RetryWait;
                rb.wake_at = Some(now + delay.as_millis() as i64);
                rb.error = Some(error);
                changes.push(self.step_change(i, |s| s.rollback = Some(rb.to_stored())));
            }
            Err((error, _)) => {
                rb.status = RollbackStatus::Failed;
                rb.error = Some(error.clone());
                changes.push(self.step_change(i, |s| s.rollback = Some(rb.to_stored())));
                changes.push(Self::event(
                    RunEvent::RollbackStepFailed,
                    Some(&id),
                    Some(json!({"error": error})),
                ));
            }
        }
        self.commit(changes).await
    }
}
