//! Crash recovery: a step still `running` when its worker died is
//! interrupted (its process group killed) and retried, or handed to a human
//! when it is not idempotent.

use super::*;

impl Driver {
    /// Attempts that were in flight when their worker died.
    pub(super) async fn recover(&mut self) -> ExecResult<()> {
        let interrupted: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].record.status == StepStatus::Running)
            .collect();
        let rollback_interrupted: Vec<usize> = (0..self.slots.len())
            .filter(|&i| {
                self.slots[i].rollback.as_ref().is_some_and(|r| r.status == RollbackStatus::Running)
            })
            .collect();
        if interrupted.is_empty() && rollback_interrupted.is_empty() {
            return Ok(());
        }
        let attempts = self.rt.store.attempts(&self.run.id).await?;
        let now = now_ms();
        let mut changes = Vec::new();
        // Their spans died with their worker: recorded here, once committed.
        let mut lost = Vec::new();
        if attempts.iter().any(|a| a.status == AttemptStatus::Running && a.worker != self.worker())
        {
            crate::metrics::lease_takeover();
        }
        let kill = |a: &AttemptRecord| {
            if let Some(pgid) = a.pgid {
                lifeboat_steps::kill_orphaned_attempt(pgid, &a.run_id, &a.step_id, a.n);
            }
        };
        for i in interrupted {
            let id = self.wf.steps[i].id.clone();
            let n = self.slots[i].record.attempts;
            if let Some(a) =
                attempts.iter().find(|a| a.step_id == id && a.phase == Phase::Forward && a.n == n)
            {
                kill(a);
                lost.push((i, Phase::Forward, n, a.started_at));
            }
            changes.extend(self.interrupted(i, n, now, false));
        }
        for i in rollback_interrupted {
            let id = self.wf.steps[i].id.clone();
            let mut rb = self.slots[i].rollback.clone().unwrap_or_default();
            if let Some(a) = attempts
                .iter()
                .find(|a| a.step_id == id && a.phase == Phase::Rollback && a.n == rb.attempts)
            {
                kill(a);
                lost.push((i, Phase::Rollback, rb.attempts, a.started_at));
            }
            changes.push(Change::AttemptFinished {
                step_id: id.clone(),
                phase: Phase::Rollback,
                n: rb.attempts,
                status: AttemptStatus::Interrupted,
                finished_at: now,
                error: Some("interrupted: the worker running it stopped".into()),
                stdout: None,
                stderr: None,
            });
            rb.status = RollbackStatus::RetryWait;
            rb.wake_at = Some(now);
            changes.push(self.step_change(i, |s| s.rollback = Some(rb.to_stored())));
        }
        self.commit(changes).await?;
        for (i, phase, n, started_at) in lost {
            crate::telemetry::attempt_interrupted(self.attempt_facts(i, phase, n), started_at, now);
        }
        Ok(())
    }

    /// The attempt `n` of step `i` ended as its worker died (or as a drill's
    /// injected `crash`): interrupted, then retried, or handed to a person
    /// when the step is `idempotent: false`.
    pub(super) fn interrupted(&self, i: usize, n: u32, now: i64, injected: bool) -> Vec<Change> {
        let id = self.wf.steps[i].id.clone();
        let mut changes = Vec::new();
        changes.push(Change::AttemptFinished {
            step_id: id.clone(),
            phase: Phase::Forward,
            n,
            status: AttemptStatus::Interrupted,
            finished_at: now,
            error: Some(match injected {
                true => {
                    "interrupted: injected fault (drill): crash, as if the worker running it died"
                        .into()
                }
                false => "interrupted: the worker running it stopped".into(),
            }),
            stdout: None,
            stderr: None,
        });
        let step = &self.wf.steps[i];
        let run = self.run.id.clone();
        if !step.definition.idempotent {
            changes.push(self.step_change(i, |s| {
                    s.status = StepStatus::NeedsHuman;
                    s.wake_at = None;
                    s.error = Some(format!(
                        "attempt {n} was interrupted and the step is `idempotent: false`: a person decides \
                         (lifeboat retry {run} --from {id} | skip {run} {id} | mark {run} {id} succeeded|failed)"
                    ));
                }));
            changes.push(Self::event(
                RunEvent::NeedsHuman,
                Some(&id),
                Some(json!({"attempt": n, "injected": injected})),
            ));
        } else {
            changes.push(self.step_change(i, |s| {
                s.status = StepStatus::RetryWait;
                s.wake_at = Some(now);
                s.error = Some(format!("attempt {n} was interrupted; retrying"));
            }));
            changes.push(Self::event(
                RunEvent::StepInterrupted,
                Some(&id),
                Some(json!({"attempt": n, "injected": injected})),
            ));
        }
        changes
    }
}
