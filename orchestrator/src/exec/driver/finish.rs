//! Finishing a run: its final status, outputs and events, and waking its
//! parent, in the commit that releases the lease.

use super::*;

impl Driver {
    /// Ends the run when nothing is left to do. Returns true if the status changed.
    pub(super) async fn try_finish(&mut self) -> ExecResult<bool> {
        let now = now_ms();
        if self.run.status == RunStatus::RollingBack {
            let open = (0..self.slots.len()).any(|i| self.rollback_pending(i));
            if open {
                return Ok(false);
            }
            let failed = self
                .slots
                .iter()
                .filter_map(|s| s.rollback.as_ref())
                .any(|r| r.status == RollbackStatus::Failed);
            let status = if self.run.cancelled_by.is_some() {
                RunStatus::Cancelled
            } else if failed {
                RunStatus::RollbackFailed
            } else {
                RunStatus::RolledBack
            };
            self.stage(vec![
                Change::Run(RunUpdate {
                    status: Some(status),
                    finished_at: Some(now),
                    ..Default::default()
                }),
                Self::event(
                    match status {
                        RunStatus::Cancelled => RunEvent::Cancelled,
                        RunStatus::RollbackFailed => RunEvent::RollbackFailed,
                        _ => RunEvent::RolledBack,
                    },
                    None,
                    None,
                ),
            ])?;
            self.wake_parent()?;
            return Ok(true);
        }
        if self.blocking_failure() {
            let mut changes = Vec::new();
            for i in 0..self.slots.len() {
                if matches!(
                    self.slots[i].record.status,
                    StepStatus::Pending | StepStatus::RetryWait | StepStatus::Waiting
                ) {
                    changes.push(self.step_change(i, |s| {
                        s.status = StepStatus::Cancelled;
                        s.wake_at = None;
                        s.error = Some("not run: the run failed".into());
                    }));
                }
            }
            let failed: Vec<&str> = (0..self.slots.len())
                .filter(|&i| {
                    self.slots[i].record.status == StepStatus::Failed
                        && !self.wf.steps[i].definition.continue_on_failure
                })
                .map(|i| self.wf.steps[i].id.as_str())
                .collect();
            let error = format!(
                "step{} {} failed",
                if failed.len() > 1 { "s" } else { "" },
                failed.join(", ")
            );
            let rollback =
                self.wf.definition.on_failure == OnFailure::Rollback && self.has_rollback_work();
            changes.push(Self::event(RunEvent::Failed, None, Some(json!({"error": error}))));
            if rollback {
                changes.push(Change::Run(RunUpdate {
                    status: Some(RunStatus::RollingBack),
                    error: Some(error),
                    ..Default::default()
                }));
                changes.push(Self::event(RunEvent::RollingBack, None, None));
            } else {
                changes.push(Change::Run(RunUpdate {
                    status: Some(RunStatus::Failed),
                    error: Some(error),
                    finished_at: Some(now),
                    ..Default::default()
                }));
            }
            self.stage(changes)?;
            if !rollback {
                self.wake_parent()?;
            }
            return Ok(true);
        }
        let all_done = self.records().all(|s| s.status.is_settled());
        if !all_done {
            return Ok(false);
        }
        let ctx = self.context(None, None);
        let outputs = match render_value(
            &Value::Object(
                self.wf
                    .definition
                    .outputs
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.value.clone())))
                    .collect(),
            ),
            &self.wf.templates,
            "outputs",
            &ctx,
        ) {
            Ok(v) => v,
            Err(e) => {
                self.stage(vec![
                    Change::Run(RunUpdate {
                        status: Some(RunStatus::Failed),
                        error: Some(format!("outputs: {e}")),
                        finished_at: Some(now),
                        ..Default::default()
                    }),
                    Self::event(
                        RunEvent::Failed,
                        None,
                        Some(json!({"error": format!("outputs: {e}")})),
                    ),
                ])?;
                self.wake_parent()?;
                return Ok(true);
            }
        };
        let elapsed = now - self.run.started_at.unwrap_or(now);
        let mut changes = vec![
            Change::Run(RunUpdate {
                status: Some(RunStatus::Succeeded),
                outputs: Some(outputs.clone()),
                finished_at: Some(now),
                ..Default::default()
            }),
            Self::event(
                RunEvent::Succeeded,
                None,
                Some(json!({"outputs": outputs, "duration_ms": elapsed})),
            ),
        ];
        if self.rto_due.is_some_and(|due| now > due) {
            changes.extend(self.rto_breached());
        }
        self.stage(changes)?;
        self.wake_parent()?;
        Ok(true)
    }

    /// A finished child makes its parent due (committed with the child's end).
    pub(super) fn wake_parent(&mut self) -> Result<(), ExecError> {
        match self.run.parent_run_id.clone() {
            Some(parent) => self.stage(vec![Change::WakeRun { run_id: parent }]),
            None => Ok(()),
        }
    }
}
