//! Staging and committing: a transition's `Change`s applied to the
//! in-memory copy, then made durable in one commit (group commit) before
//! the attempts it started are launched; what a commit tells the metrics
//! and live watchers.

use super::*;

impl Driver {
    /// Applies `changes` to the in-memory copy and queues them; `flush`
    /// makes them durable. Only side-effect-free work is staged without a
    /// flush (pure steps): anything with a side effect flushes first, so its
    /// attempt is recorded before it starts.
    pub(super) fn stage(&mut self, mut changes: Vec<Change>) -> Result<(), ExecError> {
        for change in &changes {
            match change {
                Change::Step(s) => {
                    if let Some(&i) = self.index.get(&s.step_id) {
                        self.slots[i] = Slot::new(s.clone())?;
                    }
                }
                Change::Run(u) => {
                    if let Some(s) = u.status {
                        self.run.status = s;
                    }
                    if u.started_at.is_some() {
                        self.run.started_at = u.started_at;
                    }
                    if u.reopen {
                        self.run.finished_at = None;
                        self.run.error = None;
                        self.run.verdict = None;
                    }
                    if u.finished_at.is_some() {
                        self.run.finished_at = u.finished_at;
                    }
                    if let Some(p) = u.paused {
                        self.run.paused = p;
                    }
                    if u.cancelled_by.is_some() {
                        self.run.cancelled_by.clone_from(&u.cancelled_by);
                    }
                    if let Some(inputs) = &u.inputs {
                        self.run.inputs = inputs.clone();
                    }
                    if u.outputs.is_some() {
                        self.run.outputs.clone_from(&u.outputs);
                    }
                    if u.error.is_some() {
                        self.run.error.clone_from(&u.error);
                    }
                }
                _ => {}
            }
        }
        let mut notifications = self.rule_notifications(&changes);
        let ended = changes
            .iter()
            .any(|c| matches!(c, Change::Run(u) if u.status.is_some_and(RunStatus::is_terminal)));
        if ended {
            notifications.extend(self.resolve_pages());
        }
        let verdict = self.drill_staged(&mut changes, &notifications, ended);
        self.staged.extend(changes);
        self.staged.extend(notifications);
        self.staged.extend(verdict);
        Ok(())
    }

    /// Commits everything staged in one transaction (group commit), then
    /// launches the attempts it started and tells live watchers about its
    /// events.
    pub(super) async fn flush(&mut self) -> ExecResult<()> {
        if self.staged.is_empty() {
            return Ok(());
        }
        // Process groups first: a group is recorded before its attempt's end.
        if !self.pgids.is_empty() {
            self.pgids_due = None;
            let pgids = std::mem::take(&mut self.pgids);
            self.staged.splice(0..0, pgids);
        }
        if let Err(e) = self.commit_staged().await {
            self.drop_launches();
            return Err(e);
        }
        for (_, attempt) in self.launches.drain(..) {
            tokio::spawn(attempt);
        }
        Ok(())
    }

    /// Attempts whose start was never committed never run.
    pub(super) fn drop_launches(&mut self) {
        for (key, _) in std::mem::take(&mut self.launches) {
            self.in_flight.remove(&key);
        }
    }

    pub(super) async fn commit_staged(&mut self) -> ExecResult<()> {
        self.stage_waiting_or_running()?;
        let changes = std::mem::take(&mut self.staged);
        // A database blip (restart, dropped connection) is retried while the
        // lease is safely ours; a lost lease or a long outage ends the drive.
        let mut delay = Duration::from_millis(50);
        loop {
            match self.rt.store.commit(self.worker(), &self.run.id, &changes).await {
                Ok(()) => break,
                Err(e @ (StoreError::Conflict(_) | StoreError::NotFound(_))) => {
                    return Err(e.into());
                }
                Err(e) if self.rt.database_grace_left() && !self.stop.is_cancelled() => {
                    tracing::warn!(run = %self.run.id, error = %e, "Commit failed; retrying.");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.record_metrics(&changes);
        for change in changes {
            if let Change::Event { at, kind, step_id, data } = change {
                self.rt.emit(EventRecord {
                    id: 0,
                    run_id: self.run.id.clone(),
                    at,
                    kind: kind.as_str().into(),
                    step_id,
                    data,
                });
            }
        }
        Ok(())
    }

    /// A started run is `waiting` while nothing runs and some step waits (for
    /// a person, a timer or a child run), `running` otherwise.
    pub(super) fn stage_waiting_or_running(&mut self) -> Result<(), ExecError> {
        if !matches!(self.run.status, RunStatus::Running | RunStatus::Waiting) {
            return Ok(());
        }
        let running =
            self.records().any(|s| s.status == StepStatus::Running) || !self.in_flight.is_empty();
        let waiting = self.records().any(|s| s.status == StepStatus::Waiting);
        let status = if waiting && !running { RunStatus::Waiting } else { RunStatus::Running };
        if status != self.run.status {
            self.stage(vec![Change::Run(RunUpdate {
                status: Some(status),
                ..Default::default()
            })])?;
        }
        Ok(())
    }

    /// Prometheus counters for committed transitions: runs that ended,
    /// steps that settled (with their duration), RTO breaches; and a run's
    /// root span when it ends (`crate::telemetry`).
    pub(super) fn record_metrics(&self, changes: &[Change]) {
        for change in changes {
            match change {
                Change::Run(u) => {
                    if let Some(status) = u.status.filter(|s| s.is_terminal()) {
                        crate::metrics::run_finished(&self.run.workflow, status);
                        let at = u.finished_at.unwrap_or_else(now_ms);
                        crate::telemetry::run_ended(&self.run, status, at);
                    }
                }
                Change::Event { kind: RunEvent::RtoBreached, .. } => {
                    crate::metrics::rto_breached(&self.run.workflow);
                }
                Change::Step(s) if s.status.is_settled() && s.finished_at.is_some() => {
                    if let Some(&i) = self.index.get(&s.step_id) {
                        let secs = match (s.started_at, s.finished_at) {
                            (Some(a), Some(b)) => (b - a).max(0) as f64 / 1000.0,
                            _ => 0.0,
                        };
                        crate::metrics::step_finished(
                            self.wf.steps[i].body.kind.name(),
                            s.status.as_str(),
                            secs,
                        );
                    }
                }
                _ => {}
            }
        }
    }

    /// Stages and flushes.
    pub(super) async fn commit(&mut self, changes: Vec<Change>) -> ExecResult<()> {
        self.stage(changes)?;
        self.flush().await
    }
}
