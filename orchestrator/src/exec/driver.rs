//! Drives one run: the run and step state machines of DESIGN.md.
//!
//! Every transition is a batch of `Change`s committed (under the run's
//! lease) before it counts; an attempt is recorded before its side effect
//! starts. The driver holds nothing that matters: after a crash, `load`
//! rebuilds it from the store and `recover` turns attempts that were in
//! flight into interrupted ones.

mod gates;
mod notifications;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use handlebars::Context;
use lifeboat_steps::{ActionConfig, AttemptContext, Outcome};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::engine::Engine;
use super::people::Decision;
use super::render::{render, render_value, truthy};
use super::{KindConfig, NativeKind, StepKind, backoff};
use crate::compile::{CompiledBody, CompiledWorkflow};
use crate::model::OnFailure;
use crate::store::{
    AttemptRecord, AttemptStatus, Change, EventRecord, Phase, RequestKind, RunRecord, RunStatus,
    RunUpdate, StepRecord, StepStatus, StoreError, now_ms,
};

/// Far future: "wake me when a person acts" (requests make a run due at once).
const NEVER: i64 = i64::MAX / 4;

/// Why the driver stopped.
#[derive(Debug, Clone, PartialEq)]
pub enum DriveEnd {
    Finished(RunStatus),
    /// Waiting for a timer or a person; handed back to be claimed again.
    Suspended {
        wake_at: Option<i64>,
    },
    /// The lease was lost or the worker is stopping.
    Stopped,
}

/// What a step task reports back.
struct Finished {
    index: usize,
    phase: Phase,
    n: u32,
    outcome: Outcome,
}

/// Rollback progress of one step, kept in the step row's `rollback` column.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct RollbackState {
    status: String, // pending running retry_wait succeeded failed
    attempts: u32,
    wake_at: Option<i64>,
    error: Option<String>,
}

pub struct Driver {
    engine: Arc<Engine>,
    wf: Arc<CompiledWorkflow>,
    run: RunRecord,
    steps: Vec<StepRecord>,
    rollbacks: Vec<Option<RollbackState>>,
    in_flight: HashMap<(usize, Phase), CancellationToken>,
    /// Changes applied locally but not yet committed (see `stage`).
    staged: Vec<Change>,
    /// Step id -> index in `wf.steps`.
    index: HashMap<String, usize>,
    tx: mpsc::UnboundedSender<Finished>,
    rx: mpsc::UnboundedReceiver<Finished>,
    stop: CancellationToken,
    /// When the run breaches its RTO (`objectives.rto`), until that is said.
    rto_due: Option<i64>,
}

impl Driver {
    pub async fn load(
        engine: Arc<Engine>,
        run_id: &str,
        stop: CancellationToken,
    ) -> anyhow::Result<Self> {
        let store = &engine.store;
        let run = store.run(run_id).await?.ok_or_else(|| StoreError::RunNotFound(run_id.into()))?;
        let wf = engine.definition(&run.definition_hash).await?;
        let mut by_id: HashMap<String, StepRecord> =
            store.steps(run_id).await?.into_iter().map(|s| (s.step_id.clone(), s)).collect();
        let steps: Vec<StepRecord> = wf
            .steps
            .iter()
            .map(|s| by_id.remove(&s.id).unwrap_or_else(|| StepRecord::pending(run_id, &s.id)))
            .collect();
        let rollbacks = steps
            .iter()
            .map(|s| s.rollback.as_deref().and_then(|r| serde_json::from_str(r).ok()))
            .collect();
        let (tx, rx) = mpsc::unbounded_channel();
        let index = wf.steps.iter().enumerate().map(|(i, s)| (s.id.clone(), i)).collect();
        let rto = wf.definition.objectives.as_ref().and_then(|o| o.rto);
        let mut rto_due = match (rto, run.started_at) {
            (Some(rto), Some(started)) if !run.status.is_terminal() => {
                Some(started + rto.as_millis() as i64)
            }
            _ => None,
        };
        // Overdue at load: said already, unless the worker died first.
        if rto_due.is_some_and(|due| due <= now_ms())
            && store.events(run_id, 0).await?.iter().any(|e| e.kind == "rto_breached")
        {
            rto_due = None;
        }
        Ok(Driver {
            engine,
            wf,
            run,
            steps,
            rollbacks,
            in_flight: HashMap::new(),
            staged: Vec::new(),
            index,
            tx,
            rx,
            stop,
            rto_due,
        })
    }

    fn worker(&self) -> &str {
        &self.engine.opts.worker_id
    }

    /// Applies `changes` to the in-memory copy and queues them; `flush`
    /// makes them durable. Only side-effect-free work is staged without a
    /// flush (pure steps): anything with a side effect flushes first, so its
    /// attempt is recorded before it starts.
    fn stage(&mut self, changes: Vec<Change>) {
        for change in &changes {
            match change {
                Change::Step(s) => {
                    if let Some(&i) = self.index.get(&s.step_id) {
                        self.rollbacks[i] =
                            s.rollback.as_deref().and_then(|r| serde_json::from_str(r).ok());
                        self.steps[i] = s.clone();
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
        self.staged.extend(changes);
        self.staged.extend(notifications);
    }

    /// Commits everything staged in one transaction (group commit), then
    /// tells live watchers about its events.
    async fn flush(&mut self) -> anyhow::Result<()> {
        if self.staged.is_empty() {
            return Ok(());
        }
        self.stage_waiting_or_running();
        let changes = std::mem::take(&mut self.staged);
        // A database blip (restart, dropped connection) is retried while the
        // lease is safely ours; a lost lease or a long outage ends the drive.
        let mut delay = Duration::from_millis(50);
        loop {
            match self.engine.store.commit(self.worker(), &self.run.id, &changes).await {
                Ok(()) => break,
                Err(e @ (StoreError::LeaseLost(_) | StoreError::RunNotFound(_))) => {
                    return Err(e.into());
                }
                Err(e) if self.engine.database_grace_left() && !self.stop.is_cancelled() => {
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
                self.engine.emit(EventRecord {
                    id: 0,
                    run_id: self.run.id.clone(),
                    at,
                    kind,
                    step_id,
                    data,
                });
            }
        }
        Ok(())
    }

    /// A started run is `waiting` while nothing runs and some step waits (for
    /// a person, a timer or a child run), `running` otherwise.
    fn stage_waiting_or_running(&mut self) {
        if !matches!(self.run.status, RunStatus::Running | RunStatus::Waiting) {
            return;
        }
        let running = self.steps.iter().any(|s| s.status == StepStatus::Running)
            || !self.in_flight.is_empty();
        let waiting = self.steps.iter().any(|s| s.status == StepStatus::Waiting);
        let status = if waiting && !running { RunStatus::Waiting } else { RunStatus::Running };
        if status != self.run.status {
            self.stage(vec![Change::Run(RunUpdate { status: Some(status), ..Default::default() })]);
        }
    }

    /// Prometheus counters for committed transitions: runs that ended,
    /// steps that settled (with their duration).
    fn record_metrics(&self, changes: &[Change]) {
        for change in changes {
            match change {
                Change::Run(u) => {
                    if let Some(status) = u.status.filter(|s| s.is_terminal()) {
                        crate::metrics::run_finished(&self.run.workflow, status);
                    }
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
    async fn commit(&mut self, changes: Vec<Change>) -> anyhow::Result<()> {
        self.stage(changes);
        self.flush().await
    }

    fn event(kind: &str, step: Option<&str>, data: Option<Value>) -> Change {
        Change::Event { at: now_ms(), kind: kind.into(), step_id: step.map(String::from), data }
    }

    /// The run's one `rto_breached` event, the first time it is asked for
    /// (while the run goes on, or when it ends late without having said so);
    /// `None` after that, so nobody is paged twice.
    fn rto_breached(&mut self) -> Option<Change> {
        self.rto_due.take()?;
        let rto = self.wf.definition.objectives.as_ref().and_then(|o| o.rto)?;
        let elapsed = self.run.started_at.map(|s| now_ms() - s);
        Some(Self::event(
            "rto_breached",
            None,
            Some(json!({
                "rto": rto.to_string(),
                "rto_ms": rto.as_millis(),
                "elapsed_ms": elapsed,
                "message": format!("the run has taken longer than its RTO of {rto}"),
            })),
        ))
    }

    fn step_change(&self, i: usize, f: impl FnOnce(&mut StepRecord)) -> Change {
        let mut s = self.steps[i].clone();
        f(&mut s);
        Change::Step(s)
    }

    /// The main loop.
    pub async fn drive(&mut self) -> anyhow::Result<DriveEnd> {
        let result = self.drive_inner().await;
        if result.is_err() || matches!(result, Ok(DriveEnd::Stopped)) {
            for token in self.in_flight.values() {
                token.cancel();
            }
            // Wait until the cancelled attempts have really ended (their
            // process groups killed) before the run can be handed back: two
            // attempts of one step must never overlap.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while !self.in_flight.is_empty() {
                match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                    Ok(Some(done)) => {
                        self.in_flight.remove(&(done.index, done.phase));
                    }
                    _ => break,
                }
            }
        }
        match result {
            Err(e) if matches!(e.downcast_ref::<StoreError>(), Some(StoreError::LeaseLost(_))) => {
                Ok(DriveEnd::Stopped)
            }
            other => other,
        }
    }

    async fn drive_inner(&mut self) -> anyhow::Result<DriveEnd> {
        self.recover().await?;
        let mut last_requests = Instant::now() - Duration::from_secs(3600);
        loop {
            if self.stop.is_cancelled() {
                return Ok(DriveEnd::Stopped);
            }
            if last_requests.elapsed() >= self.engine.opts.poll {
                match self.process_requests().await {
                    Ok(()) => {}
                    // Reading requests failed while the database is away: next round.
                    Err(e)
                        if self.engine.database_grace_left()
                            && e.downcast_ref::<StoreError>()
                                .is_some_and(|e| matches!(e, StoreError::Database(_))) =>
                    {
                        tracing::warn!(run = %self.run.id, error = %e, "Reading requests failed; retrying.");
                    }
                    Err(e) => return Err(e),
                }
                last_requests = Instant::now();
            }
            if let Some(due) = self.rto_due
                && now_ms() >= due
                && !self.run.status.is_terminal()
            {
                let breached = self.rto_breached();
                self.stage(breached.into_iter().collect());
            }
            if self.run.status == RunStatus::Queued {
                let now = now_ms();
                self.rto_due = self
                    .wf
                    .definition
                    .objectives
                    .as_ref()
                    .and_then(|o| o.rto)
                    .map(|rto| now + rto.as_millis() as i64);
                self.stage(vec![
                    Change::Run(RunUpdate {
                        status: Some(RunStatus::Running),
                        started_at: Some(now),
                        ..Default::default()
                    }),
                    Self::event(
                        "started",
                        None,
                        Some(json!({"inputs": self.run.inputs, "worker": self.worker()})),
                    ),
                ]);
            }
            if self.run.status.is_terminal() {
                self.stage(vec![Change::Release { wake_at: None }]);
                self.flush().await?;
                return Ok(DriveEnd::Finished(self.run.status));
            }
            if self.engine.draining.is_cancelled() {
                if self.in_flight.is_empty() {
                    self.stage(vec![Change::Release { wake_at: None }]);
                    self.flush().await?;
                    return Ok(DriveEnd::Stopped);
                }
            } else if !self.run.paused {
                if self.run.status == RunStatus::RollingBack {
                    self.advance_rollback().await?;
                } else {
                    self.advance_forward().await?;
                }
            }
            if self.in_flight.is_empty() && !self.engine.draining.is_cancelled() {
                if !self.run.paused && self.try_finish().await? {
                    continue;
                }
                let wake = if self.run.paused { None } else { self.next_wake() };
                let now = now_ms();
                match wake {
                    // A timer due soon: wait here rather than hand the run back.
                    Some(at) if at - now <= 2 * self.engine.opts.poll.as_millis() as i64 => {
                        self.flush().await?;
                        let sleep = Duration::from_millis((at - now).max(0) as u64);
                        tokio::select! {
                            _ = self.stop.cancelled() => return Ok(DriveEnd::Stopped),
                            _ = tokio::time::sleep(sleep) => {}
                        }
                        continue;
                    }
                    _ => {
                        let at = wake.unwrap_or(NEVER);
                        self.stage(vec![Change::Release { wake_at: Some(at) }]);
                        self.flush().await?;
                        // A request or a child's end that arrived since the claim set `woken`:
                        // the release then keeps the run due, and it is reclaimed.
                        return Ok(DriveEnd::Suspended { wake_at: wake });
                    }
                }
            }
            // Pure steps staged in this pass become durable before we wait.
            self.flush().await?;
            let until_timer = self
                .next_wake()
                .map(|at| Duration::from_millis((at - now_ms()).max(0) as u64))
                .unwrap_or(self.engine.opts.poll)
                .min(self.engine.opts.poll);
            tokio::select! {
                _ = self.stop.cancelled() => return Ok(DriveEnd::Stopped),
                _ = self.engine.draining.cancelled(), if !self.in_flight.is_empty() && self.staged.is_empty() => {
                    // Re-check promptly; steps in flight keep running.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Some(done) = self.rx.recv() => {
                    self.in_flight.remove(&(done.index, done.phase));
                    self.on_finished(done).await?;
                    // Take everything else already finished, then schedule once.
                    while let Ok(done) = self.rx.try_recv() {
                        self.in_flight.remove(&(done.index, done.phase));
                        self.on_finished(done).await?;
                    }
                }
                _ = tokio::time::sleep(until_timer) => {}
            }
        }
    }

    /// Attempts that were in flight when their worker died.
    async fn recover(&mut self) -> anyhow::Result<()> {
        let interrupted: Vec<usize> = (0..self.steps.len())
            .filter(|&i| self.steps[i].status == StepStatus::Running)
            .collect();
        let rollback_interrupted: Vec<usize> = (0..self.steps.len())
            .filter(|&i| self.rollbacks[i].as_ref().is_some_and(|r| r.status == "running"))
            .collect();
        if interrupted.is_empty() && rollback_interrupted.is_empty() {
            return Ok(());
        }
        let attempts = self.engine.store.attempts(&self.run.id).await?;
        let now = now_ms();
        let mut changes = Vec::new();
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
            let n = self.steps[i].attempts;
            if let Some(a) =
                attempts.iter().find(|a| a.step_id == id && a.phase == Phase::Forward && a.n == n)
            {
                kill(a);
            }
            changes.push(Change::AttemptFinished {
                step_id: id.clone(),
                phase: Phase::Forward,
                n,
                status: AttemptStatus::Interrupted,
                finished_at: now,
                error: Some("interrupted: the worker running it stopped".into()),
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
                changes.push(Self::event("needs_human", Some(&id), Some(json!({"attempt": n}))));
            } else {
                changes.push(self.step_change(i, |s| {
                    s.status = StepStatus::RetryWait;
                    s.wake_at = Some(now);
                    s.error = Some(format!("attempt {n} was interrupted; retrying"));
                }));
                changes.push(Self::event(
                    "step_interrupted",
                    Some(&id),
                    Some(json!({"attempt": n})),
                ));
            }
        }
        for i in rollback_interrupted {
            let id = self.wf.steps[i].id.clone();
            let mut rb = self.rollbacks[i].clone().unwrap_or_default();
            if let Some(a) = attempts
                .iter()
                .find(|a| a.step_id == id && a.phase == Phase::Rollback && a.n == rb.attempts)
            {
                kill(a);
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
            rb.status = "retry_wait".into();
            rb.wake_at = Some(now);
            changes.push(self.step_change(i, |s| s.rollback = Some(json!(rb).to_string())));
        }
        self.commit(changes).await
    }

    /// Operator requests: cancel, pause, resume, skip, mark, retry.
    async fn process_requests(&mut self) -> anyhow::Result<()> {
        let requests = self.engine.store.open_requests(&self.run.id).await?;
        for req in requests {
            let now = now_ms();
            let mut changes = vec![Change::RequestDone { id: req.id, at: now }];
            let step =
                req.step_id.as_deref().and_then(|id| self.wf.steps.iter().position(|s| s.id == id));
            match req.kind {
                RequestKind::Pause => changes
                    .push(Change::Run(RunUpdate { paused: Some(true), ..Default::default() })),
                RequestKind::Resume => changes
                    .push(Change::Run(RunUpdate { paused: Some(false), ..Default::default() })),
                RequestKind::Cancel | RequestKind::CancelNoRollback
                    if !self.run.status.is_terminal() =>
                {
                    for token in self.in_flight.values() {
                        token.cancel();
                    }
                    for i in 0..self.steps.len() {
                        let st = self.steps[i].status;
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
                        if rollback { "rolling_back" } else { "cancelled" },
                        None,
                        Some(json!({"by": req.actor})),
                    ));
                }
                RequestKind::Skip | RequestKind::MarkSucceeded | RequestKind::MarkFailed => {
                    if let Some(i) = step {
                        if let Some(token) = self.in_flight.remove(&(i, Phase::Forward)) {
                            token.cancel();
                        }
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
                            &format!("step_{status}"),
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

    /// `retry [--from STEP] [-i k=v]`: failed, cancelled, rolled-back and
    /// not-started steps (and STEP with everything after it) run again.
    fn plan_retry(&self, req: &crate::store::RequestRecord, changes: &mut Vec<Change>, now: i64) {
        let from = req.data.as_ref().and_then(|d| d.get("from")).and_then(Value::as_str);
        let from_index = from.and_then(|id| self.wf.steps.iter().position(|s| s.id == id));
        let mut reset = vec![false; self.steps.len()];
        for (i, s) in self.steps.iter().enumerate() {
            reset[i] = matches!(
                s.status,
                StepStatus::Failed
                    | StepStatus::Cancelled
                    | StepStatus::RolledBack
                    | StepStatus::NeedsHuman
                    | StepStatus::Pending
            ) || (s.status == StepStatus::Succeeded
                && self.rollbacks[i].as_ref().is_some_and(|r| r.status == "succeeded"));
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
                    s.state = Some(json!({"attempt_base": s.attempts}));
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
        changes.push(Self::event("retried", from, Some(json!({"by": req.actor, "at": now}))));
    }

    fn has_rollback_work(&self) -> bool {
        self.wf
            .steps
            .iter()
            .enumerate()
            .any(|(i, s)| s.rollback.is_some() && self.steps[i].status == StepStatus::Succeeded)
    }

    /// The earliest timer among steps and rollbacks.
    fn next_wake(&self) -> Option<i64> {
        let steps = self
            .steps
            .iter()
            .filter(|s| matches!(s.status, StepStatus::RetryWait | StepStatus::Waiting))
            .filter_map(|s| s.wake_at);
        let rollbacks = self
            .rollbacks
            .iter()
            .flatten()
            .filter(|r| r.status == "retry_wait")
            .filter_map(|r| r.wake_at);
        let rto = self.rto_due.filter(|_| !self.run.status.is_terminal());
        steps.chain(rollbacks).chain(rto).min()
    }

    fn need_satisfied(&self, n: usize) -> bool {
        match self.steps[n].status {
            StepStatus::Succeeded | StepStatus::Skipped => true,
            StepStatus::Failed => self.wf.steps[n].definition.continue_on_failure,
            _ => false,
        }
    }

    fn blocking_failure(&self) -> bool {
        self.steps.iter().enumerate().any(|(i, s)| {
            s.status == StepStatus::Failed && !self.wf.steps[i].definition.continue_on_failure
        })
    }

    async fn advance_forward(&mut self) -> anyhow::Result<()> {
        if self.blocking_failure() {
            return Ok(()); // no new work once the run is failing
        }
        let now = now_ms();
        let order = self.wf.topological_order.clone();
        for i in order {
            if self.in_flight.contains_key(&(i, Phase::Forward)) {
                continue;
            }
            let status = self.steps[i].status;
            let due = self.steps[i].wake_at.is_none_or(|w| w <= now);
            match status {
                StepStatus::Pending
                    if self.wf.steps[i].needs.iter().all(|&n| self.need_satisfied(n)) =>
                {
                    self.start_step(i, true).await?;
                }
                StepStatus::RetryWait if due => self.start_step(i, false).await?,
                StepStatus::Waiting if due => self.resume_waiting(i).await?,
                _ => {}
            }
            if self.blocking_failure() {
                break;
            }
        }
        Ok(())
    }

    /// The template context of a step (or of the run, for outputs).
    fn context(&self, item: Option<&Value>, outputs: Option<&Value>) -> Context {
        let mut steps = serde_json::Map::new();
        for (i, s) in self.steps.iter().enumerate() {
            steps.insert(
                self.wf.steps[i].id.clone(),
                json!({
                    "status": s.status.as_str(),
                    "outputs": s.outputs.clone().unwrap_or(json!({})),
                    "error": s.error,
                    "attempts": s.attempts,
                }),
            );
        }
        let payload = self.run.trigger.get("payload").cloned().unwrap_or(Value::Null);
        let mut ctx = json!({
            "inputs": self.run.inputs,
            "steps": steps,
            "run": {
                "id": self.run.id,
                "workflow": self.run.workflow,
                "started_at": self.run.started_at.and_then(chrono::DateTime::from_timestamp_millis).map(|t| t.to_rfc3339()),
                "trigger": self.run.trigger.get("kind").cloned().unwrap_or(json!("manual")),
                "requested_by": self.run.trigger.get("by").cloned().unwrap_or(Value::Null),
            },
            "alert": payload,
            "event": payload,
            "secrets": self.engine.secrets.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
        });
        if let Some(item) = item {
            ctx["item"] = item.clone();
        }
        if let Some(outputs) = outputs {
            ctx["outputs"] = outputs.clone();
        }
        Context::wraps(ctx).expect("a JSON value is a valid context")
    }

    fn redact(&self, mut v: Value) -> Value {
        self.engine.redactor.redact(&mut v);
        v
    }

    async fn fail_step(&mut self, i: usize, error: String) -> anyhow::Result<()> {
        let now = now_ms();
        let id = self.wf.steps[i].id.clone();
        let error = self.engine.redactor.redact_str(&error).into_owned();
        let changes = vec![
            self.step_change(i, |s| {
                s.status = StepStatus::Failed;
                s.error = Some(error.clone());
                s.finished_at = Some(now);
                s.wake_at = None;
            }),
            Self::event("step_failed", Some(&id), Some(json!({"error": error}))),
        ];
        self.commit(changes).await
    }

    /// Starts a step: `when`, then its kind. `first`: not a retry.
    async fn start_step(&mut self, i: usize, first: bool) -> anyhow::Result<()> {
        let step = self.wf.steps[i].clone();
        let now = now_ms();
        if first && let Some(when) = step.templates.get("when") {
            match render(when, &self.context(None, None)) {
                Ok(text) if !truthy(&text) => {
                    let changes = vec![
                        self.step_change(i, |s| {
                            s.status = StepStatus::Skipped;
                            s.finished_at = Some(now);
                        }),
                        Self::event("step_skipped", Some(&step.id), Some(json!({"when": text}))),
                    ];
                    return self.commit(changes).await;
                }
                Ok(_) => {}
                Err(e) => return self.fail_step(i, format!("`when`: {e}")).await,
            }
        }
        match step.body.kind {
            StepKind::Native(kind) => self.start_native(i, kind).await,
            StepKind::Action(_) => self.start_attempt(i, Phase::Forward).await,
        }
    }

    async fn start_native(&mut self, i: usize, kind: NativeKind) -> anyhow::Result<()> {
        let step = self.wf.steps[i].clone();
        let now = now_ms();
        let ctx = self.context(None, None);
        let rendered = match render_value(&step.body.with, &step.body.templates, "", &ctx) {
            Ok(v) => v,
            Err(e) => return self.fail_step(i, e).await,
        };
        let config = match super::render::typed_config(step.body.kind, &rendered) {
            Ok(c) => c,
            Err(e) => return self.fail_step(i, e).await,
        };
        let mut changes = Vec::new();
        match (kind, &config) {
            (NativeKind::Wait, KindConfig::Wait(w)) => {
                let deadline = match (&w.duration, &w.until) {
                    (Some(d), _) => now + d.as_millis() as i64,
                    (None, Some(until)) => match chrono::DateTime::parse_from_rfc3339(until) {
                        Ok(t) => t.timestamp_millis(),
                        Err(e) => {
                            return self.fail_step(i, format!("`until` `{until}`: {e}")).await;
                        }
                    },
                    _ => now,
                };
                changes.push(self.step_change(i, |s| {
                    s.status = StepStatus::Waiting;
                    s.started_at = Some(now);
                    s.wake_at = Some(deadline);
                    s.state = Some(json!({"wait_until": deadline}));
                }));
                changes.push(Self::event(
                    "step_waiting",
                    Some(&step.id),
                    Some(json!({"until": deadline})),
                ));
            }
            (NativeKind::Notify, KindConfig::Notify(n)) => {
                let data = json!({ "message": null });
                let disc = format!("a{}", self.steps[i].attempts + 1);
                let queued = match (&n.template, &n.subject, &n.body) {
                    (_, subject, Some(body)) => self.notify_inline(
                        &step.id,
                        &n.channels,
                        subject.as_deref(),
                        body,
                        data,
                        &disc,
                    ),
                    (template, _, None) => self.notify_channels(
                        "notify",
                        Some(&step.id),
                        &n.channels,
                        template.as_deref(),
                        data,
                        lifeboat_notify::Action::Trigger,
                        &disc,
                    ),
                };
                let keys: Vec<String> = queued
                    .iter()
                    .filter_map(|c| match c {
                        Change::Notify(n) => Some(n.dedupe_key.clone()),
                        _ => None,
                    })
                    .collect();
                changes.extend(queued);
                changes.push(Self::event(
                    "notification",
                    Some(&step.id),
                    Some(json!({"channels": n.channels, "required": n.required})),
                ));
                if n.required {
                    // Done when every row is delivered (the dispatcher wakes the run).
                    changes.push(self.step_change(i, |s| {
                        s.status = StepStatus::Waiting;
                        s.started_at = Some(now);
                        s.wake_at = None;
                        s.state = Some(json!({"outbox": keys}));
                    }));
                } else {
                    changes.push(self.step_change(i, |s| {
                        s.status = StepStatus::Succeeded;
                        s.started_at = Some(now);
                        s.finished_at = Some(now);
                        s.outputs = Some(json!({"queued": n.channels}));
                    }));
                    changes.push(Self::event("step_succeeded", Some(&step.id), None));
                }
            }
            (NativeKind::Workflow, KindConfig::Workflow(c)) => {
                return self.start_child(i, c, now).await;
            }
            (NativeKind::Approval, KindConfig::Approval(a)) => {
                changes.extend(self.start_approval(i, a, rendered.clone(), now));
            }
            (NativeKind::Escalate, KindConfig::Escalate(e)) => {
                changes.extend(self.start_escalation(i, e, now));
            }
            _ => return self.fail_step(i, "step parameters do not match its kind".into()).await,
        }
        self.commit(changes).await
    }

    async fn start_child(
        &mut self,
        i: usize,
        c: &super::workflow::Config,
        now: i64,
    ) -> anyhow::Result<()> {
        let step_id = self.wf.steps[i].id.clone();
        // The child is the definition pinned when the run tree started, by
        // its declared name; never a path, never what the directory holds now.
        let child = match &self.run.pins {
            Some(pins) => match pins.get(&c.workflow) {
                Some(hash) => self.engine.definition(hash).await?,
                None => {
                    let dir = self.engine.opts.workflows_dir.display();
                    return self
                        .fail_step(
                            i,
                            format!(
                                "child workflow `{}` was not a valid workflow of {dir} when this run started, so it was not pinned; fix it (`lifeboat validate`) and start the run again",
                                c.workflow
                            ),
                        )
                        .await;
                }
            },
            // A run created before pinning existed: resolve the name now.
            None => match self.engine.catalog().await?.get(&c.workflow) {
                Some(wf) => wf,
                None => {
                    let dir = self.engine.opts.workflows_dir.display();
                    return self
                        .fail_step(
                            i,
                            format!(
                                "child workflow `{}` is not a valid workflow of {dir}",
                                c.workflow
                            ),
                        )
                        .await;
                }
            },
        };
        let given: serde_json::Map<String, Value> = c.inputs.clone().into_iter().collect();
        let inputs = match super::inputs::resolve(given, &child.definition.inputs) {
            Ok(v) => v,
            Err(errors) => {
                return self.fail_step(i, format!("child inputs: {}", errors.join("; "))).await;
            }
        };
        // Inputs are stored with the child run; the compiler forbids secrets in
        // them, and this keeps a value that slipped through out of the store.
        let inputs = self.redact(inputs);
        let trigger = json!({"kind": "workflow", "parent": self.run.id, "step": step_id});
        let parent = Some(super::engine::Parent {
            run: self.run.id.clone(),
            step: step_id.clone(),
            root: self.run.root_run_id.clone(),
            pins: self.run.pins.clone().unwrap_or_default(),
        });
        let created = self.engine.submit(&child, inputs, trigger, parent, false).await?;
        let child_id = match created {
            crate::store::Created::Run(id) => id,
            crate::store::Created::Skipped { active }
            | crate::store::Created::Duplicate { existing: active } => active,
        };
        let changes = vec![
            self.step_change(i, |s| {
                s.status = StepStatus::Waiting;
                s.started_at = Some(now);
                s.wake_at = None;
                s.state = Some(json!({"child_run": child_id}));
            }),
            Self::event("child_started", Some(&step_id), Some(json!({"run": child_id}))),
        ];
        self.commit(changes).await
    }

    /// A waiting step is due: a timer fired, or a child run may have ended.
    async fn resume_waiting(&mut self, i: usize) -> anyhow::Result<()> {
        let id = self.wf.steps[i].id.clone();
        let state = self.steps[i].state.clone().unwrap_or(Value::Null);
        let now = now_ms();
        if let Some(child) = state.get("child_run").and_then(Value::as_str) {
            let Some(run) = self.engine.store.run(child).await? else {
                return self.fail_step(i, format!("child run {child} disappeared")).await;
            };
            if !run.status.is_terminal() {
                return Ok(());
            }
            let ok = run.status == RunStatus::Succeeded;
            let changes = vec![
                self.step_change(i, |s| {
                    s.status = if ok { StepStatus::Succeeded } else { StepStatus::Failed };
                    s.finished_at = Some(now);
                    s.outputs = Some(run.outputs.clone().unwrap_or(json!({})));
                    s.error = (!ok).then(|| format!("child run {child} ended {}", run.status));
                }),
                Self::event(
                    if ok { "step_succeeded" } else { "step_failed" },
                    Some(&id),
                    Some(json!({"child": child})),
                ),
            ];
            return self.commit(changes).await;
        }
        if state.get("wait_until").is_some() {
            let changes = vec![
                self.step_change(i, |s| {
                    s.status = StepStatus::Succeeded;
                    s.finished_at = Some(now);
                    s.wake_at = None;
                    s.outputs = Some(json!({}));
                }),
                Self::event("step_succeeded", Some(&id), None),
            ];
            return self.commit(changes).await;
        }
        if let Some(keys) = state.get("outbox").and_then(Value::as_array) {
            return self.resume_required_notify(i, keys.clone()).await;
        }
        // Waiting for a person; maybe a deadline or an update is due.
        if let Some(changes) = self.gate_timer(i, now) {
            return self.commit(changes).await;
        }
        Ok(())
    }

    /// A `required: true` notify step: succeeded once every message is
    /// delivered, failed if one could not be.
    async fn resume_required_notify(&mut self, i: usize, keys: Vec<Value>) -> anyhow::Result<()> {
        let id = self.wf.steps[i].id.clone();
        let rows = self.engine.store.outbox(&self.run.id).await?;
        let mine: Vec<_> = rows
            .iter()
            .filter(|r| keys.iter().any(|k| k.as_str() == Some(&r.dedupe_key)))
            .collect();
        if let Some(failed) = mine.iter().find(|r| r.status == crate::store::OutboxStatus::Failed) {
            let error = format!(
                "notification to {} failed: {}",
                failed.channel,
                failed.last_error.as_deref().unwrap_or("unknown error")
            );
            return self.fail_step(i, error).await;
        }
        if mine.iter().all(|r| r.status == crate::store::OutboxStatus::Delivered) {
            let now = now_ms();
            let delivered: Vec<Value> =
                mine.iter().map(|r| json!({"channel": r.channel, "detail": r.detail})).collect();
            let changes = vec![
                self.step_change(i, |s| {
                    s.status = StepStatus::Succeeded;
                    s.finished_at = Some(now);
                    s.outputs = Some(json!({"delivered": delivered}));
                }),
                Self::event("step_succeeded", Some(&id), None),
            ];
            return self.commit(changes).await;
        }
        Ok(())
    }

    fn body(&self, i: usize, phase: Phase) -> &CompiledBody {
        let step = &self.wf.steps[i];
        match phase {
            Phase::Forward => &step.body,
            Phase::Rollback => {
                step.rollback.as_ref().expect("rollback phase only for steps with a rollback")
            }
        }
    }

    /// Records a new attempt, then runs the action in a task.
    async fn start_attempt(&mut self, i: usize, phase: Phase) -> anyhow::Result<()> {
        let step = self.wf.steps[i].clone();
        let body = self.body(i, phase).clone();
        let now = now_ms();
        // The context is built only when something needs rendering: it is
        // the costly part of starting a step in a large workflow.
        let needs_context = !body.templates.is_empty()
            || (phase == Phase::Forward
                && (step.definition.for_each.is_some() || step.definition.poll.is_some()));
        let ctx = needs_context.then(|| self.context(None, None));
        let items: Option<Vec<Value>> =
            if phase == Phase::Forward && step.definition.for_each.is_some() {
                match self.for_each_items(i, ctx.as_ref().expect("built for for_each")) {
                    Ok(items) => Some(items),
                    Err(e) => return self.fail_step(i, e).await,
                }
            } else {
                None
            };
        // A `for_each` body is rendered per item, in the attempt task.
        let config = if items.is_some() {
            None
        } else {
            let prepared = match &ctx {
                None => prepare_config(&body, None, &self.engine.opts.connections),
                Some(ctx) => prepare_config(&body, Some(ctx), &self.engine.opts.connections),
            };
            match prepared {
                Ok(c) => Some(c),
                Err(e) if phase == Phase::Forward => return self.fail_step(i, e).await,
                Err(e) => return self.finish_rollback(i, 0, Err((e, false))).await,
            }
        };
        let n = match phase {
            Phase::Forward => self.steps[i].attempts + 1,
            Phase::Rollback => self.rollbacks[i].as_ref().map_or(0, |r| r.attempts) + 1,
        };
        let mut changes = vec![Change::AttemptStarted(AttemptRecord {
            run_id: self.run.id.clone(),
            step_id: step.id.clone(),
            phase,
            n,
            status: AttemptStatus::Running,
            worker: self.worker().to_string(),
            pgid: None,
            started_at: now,
            finished_at: None,
            error: None,
            stdout: None,
            stderr: None,
        })];
        match phase {
            Phase::Forward => {
                changes.push(self.step_change(i, |s| {
                    s.status = StepStatus::Running;
                    s.attempts = n;
                    s.started_at.get_or_insert(now);
                    s.wake_at = None;
                }));
                changes.push(Self::event(
                    "step_started",
                    Some(&step.id),
                    Some(json!({"attempt": n})),
                ));
            }
            Phase::Rollback => {
                let mut rb = self.rollbacks[i].clone().unwrap_or_default();
                rb.status = "running".into();
                rb.attempts = n;
                rb.wake_at = None;
                changes.push(self.step_change(i, |s| s.rollback = Some(json!(rb).to_string())));
                changes.push(Self::event(
                    "rollback_started",
                    Some(&step.id),
                    Some(json!({"attempt": n})),
                ));
            }
        }
        // Pure kinds have no side effect to protect: their start and end share one commit.
        let pure = matches!(config, Some(ActionConfig::Set(_) | ActionConfig::Assert(_)))
            && items.is_none()
            && step.definition.poll.is_none();
        let token = CancellationToken::new();
        let actx = self.attempt_context(i, n, &body, token.clone());
        if let (true, Some(config)) = (pure, &config) {
            let outcome = config.run(&actx).await;
            // Apply the start to the local copy so the finish builds on it.
            if let Some(Change::Step(started)) =
                changes.iter().find(|c| matches!(c, Change::Step(_)))
            {
                self.steps[i] = started.clone();
            }
            let mut all = changes;
            let finish = self.finish_changes(i, phase, n, &outcome);
            // Start and finish of a pure attempt: one row, one event.
            if let (
                Some(Change::AttemptStarted(a)),
                Some(Change::AttemptFinished { status, finished_at, error, .. }),
            ) = (all.first_mut(), finish.first())
            {
                a.status = *status;
                a.finished_at = Some(*finished_at);
                a.error.clone_from(error);
            }
            all.retain(|c| !matches!(c, Change::Event { kind, .. } if kind == "step_started"));
            all.extend(finish.into_iter().skip(1));
            self.stage(all);
            return Ok(());
        }
        self.commit(changes).await?;
        self.in_flight.insert((i, phase), token);
        let tx = self.tx.clone();
        let poll = if phase == Phase::Forward {
            step.definition.poll.clone().zip(step.templates.get("poll.until").cloned())
        } else {
            None
        };
        let base_ctx =
            if items.is_some() || poll.is_some() { self.context_value() } else { Value::Null };
        let for_each =
            items.map(|items| (items, body.clone(), self.engine.opts.connections.clone()));
        let engine = self.engine.clone();
        let run_id = self.run.id.clone();
        let step_id = step.id.clone();
        let span = tracing::info_span!("attempt", run_id = %run_id, step_id = %step_id, attempt = n, phase = %phase);
        tokio::spawn(
            async move {
                let outcome = run_action(
                    &engine, &run_id, &step_id, phase, n, config, actx, for_each, poll, base_ctx,
                )
                .await;
                let _ = tx.send(Finished { index: i, phase, n, outcome });
            }
            .instrument(span),
        );
        Ok(())
    }

    fn context_value(&self) -> Value {
        // The same JSON `context()` wraps, for use inside the attempt task.
        serde_json::to_value(self.context(None, None).data()).unwrap_or(Value::Null)
    }

    fn attempt_context(
        &self,
        i: usize,
        n: u32,
        body: &CompiledBody,
        cancel: CancellationToken,
    ) -> AttemptContext {
        let id = &self.wf.steps[i].id;
        let mut actx = AttemptContext::new(self.run.id.clone(), id.clone(), n);
        actx.timeout = body.timeout.map(|d| d.0);
        actx.cancel = cancel;
        actx.redactor = self.engine.redactor.clone();
        actx.http = self.engine.opts.http.clone();
        actx
    }

    fn for_each_items(&self, i: usize, ctx: &Context) -> Result<Vec<Value>, String> {
        let step = &self.wf.steps[i];
        let raw = step.definition.for_each.as_ref().map(|f| f.value.clone()).unwrap_or(Value::Null);
        match &raw {
            Value::String(_) => {
                let t = step.templates.get("for_each").ok_or("`for_each` template missing")?;
                let text = render(t, ctx).map_err(|e| format!("`for_each`: {e}"))?;
                match serde_json::from_str::<Value>(&text) {
                    Ok(Value::Array(items)) => Ok(items),
                    _ => Err(format!("`for_each` rendered `{text}`, which is not a JSON list")),
                }
            }
            Value::Array(_) => match render_value(&raw, &step.templates, "for_each", ctx)? {
                Value::Array(items) => Ok(items),
                _ => Err("`for_each` is not a list".into()),
            },
            _ => Err("`for_each` must be a list".into()),
        }
    }

    /// The changes that record an attempt's outcome (forward phase).
    fn finish_changes(&self, i: usize, phase: Phase, n: u32, outcome: &Outcome) -> Vec<Change> {
        let id = self.wf.steps[i].id.clone();
        let now = now_ms();
        let outputs = self.redact(outcome.outputs().clone());
        let (stdout, stderr) = (
            outputs.get("stdout").and_then(Value::as_str).map(String::from),
            outputs.get("stderr").and_then(Value::as_str).map(String::from),
        );
        let (status, error, retryable) = match outcome {
            Outcome::Succeeded { .. } => (AttemptStatus::Succeeded, None, false),
            Outcome::Failed { error, retryable, .. } => {
                (AttemptStatus::Failed, Some(error.clone()), *retryable)
            }
        };
        let mut changes = vec![Change::AttemptFinished {
            step_id: id.clone(),
            phase,
            n,
            status,
            finished_at: now,
            error: error.clone(),
            stdout,
            stderr,
        }];
        if phase == Phase::Rollback {
            return changes; // the caller adds the rollback state
        }
        let body = &self.wf.steps[i].body;
        let base = self.steps[i]
            .state
            .as_ref()
            .and_then(|s| s.get("attempt_base"))
            .and_then(Value::as_u64)
            .unwrap_or(0) as u32;
        match (status, error) {
            (AttemptStatus::Succeeded, _) => {
                changes.push(self.step_change(i, |s| {
                    s.status = StepStatus::Succeeded;
                    s.outputs = Some(outputs.clone());
                    s.error = None;
                    s.finished_at = Some(now);
                }));
                changes.push(Self::event("step_succeeded", Some(&id), Some(json!({"attempt": n}))));
            }
            (_, error) if retryable && n - base < body.retry.attempts => {
                let delay = backoff::delay_after(&body.retry, n - base, fastrand::f64());
                let wake = now + delay.as_millis() as i64;
                changes.push(self.step_change(i, |s| {
                    s.status = StepStatus::RetryWait;
                    s.outputs = Some(outputs.clone());
                    s.error = error.clone();
                    s.wake_at = Some(wake);
                }));
                changes.push(Self::event(
                    "step_retrying",
                    Some(&id),
                    Some(
                        json!({"attempt": n, "error": error, "delay_ms": delay.as_millis() as u64}),
                    ),
                ));
            }
            (_, error) => {
                changes.push(self.step_change(i, |s| {
                    s.status = StepStatus::Failed;
                    s.outputs = Some(outputs.clone());
                    s.error = error.clone();
                    s.finished_at = Some(now);
                }));
                changes.push(Self::event(
                    "step_failed",
                    Some(&id),
                    Some(json!({"attempt": n, "error": error})),
                ));
            }
        }
        changes
    }

    async fn on_finished(&mut self, done: Finished) -> anyhow::Result<()> {
        let i = done.index;
        // A result for a step no longer running (skipped or cancelled meanwhile) is recorded, not applied.
        let current = match done.phase {
            Phase::Forward => {
                self.steps[i].status == StepStatus::Running && self.steps[i].attempts == done.n
            }
            Phase::Rollback => self.rollbacks[i]
                .as_ref()
                .is_some_and(|r| r.status == "running" && r.attempts == done.n),
        };
        let mut changes = self.finish_changes(i, done.phase, done.n, &done.outcome);
        if !current {
            changes.truncate(1);
            return self.commit(changes).await;
        }
        if done.phase == Phase::Rollback {
            let result = match &done.outcome {
                Outcome::Succeeded { .. } => Ok(()),
                Outcome::Failed { error, retryable, .. } => Err((error.clone(), *retryable)),
            };
            self.commit(changes).await?;
            return self.finish_rollback(i, done.n, result).await;
        }
        self.commit(changes).await
    }

    /// Ends the run when nothing is left to do. Returns true if the status changed.
    async fn try_finish(&mut self) -> anyhow::Result<bool> {
        let now = now_ms();
        if self.run.status == RunStatus::RollingBack {
            let open = (0..self.steps.len()).any(|i| self.rollback_pending(i));
            if open {
                return Ok(false);
            }
            let failed = self.rollbacks.iter().flatten().any(|r| r.status == "failed");
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
                Self::event(status.as_str(), None, None),
            ]);
            self.wake_parent();
            return Ok(true);
        }
        if self.blocking_failure() {
            let mut changes = Vec::new();
            for i in 0..self.steps.len() {
                if matches!(
                    self.steps[i].status,
                    StepStatus::Pending | StepStatus::RetryWait | StepStatus::Waiting
                ) {
                    changes.push(self.step_change(i, |s| {
                        s.status = StepStatus::Cancelled;
                        s.wake_at = None;
                        s.error = Some("not run: the run failed".into());
                    }));
                }
            }
            let failed: Vec<&str> = (0..self.steps.len())
                .filter(|&i| {
                    self.steps[i].status == StepStatus::Failed
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
            changes.push(Self::event("failed", None, Some(json!({"error": error}))));
            if rollback {
                changes.push(Change::Run(RunUpdate {
                    status: Some(RunStatus::RollingBack),
                    error: Some(error),
                    ..Default::default()
                }));
                changes.push(Self::event("rolling_back", None, None));
            } else {
                changes.push(Change::Run(RunUpdate {
                    status: Some(RunStatus::Failed),
                    error: Some(error),
                    finished_at: Some(now),
                    ..Default::default()
                }));
            }
            self.stage(changes);
            if !rollback {
                self.wake_parent();
            }
            return Ok(true);
        }
        let all_done = self.steps.iter().all(|s| s.status.is_settled());
        if !all_done {
            return Ok(false);
        }
        let ctx = self.context(None, None);
        let outputs = match render_value(
            &serde_json::to_value(
                self.wf
                    .definition
                    .outputs
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.value.clone())))
                    .collect::<serde_json::Map<_, _>>(),
            )?,
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
                    Self::event("failed", None, Some(json!({"error": format!("outputs: {e}")}))),
                ]);
                self.wake_parent();
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
                "succeeded",
                None,
                Some(json!({"outputs": outputs, "duration_ms": elapsed})),
            ),
        ];
        if self.rto_due.is_some_and(|due| now > due) {
            changes.extend(self.rto_breached());
        }
        self.stage(changes);
        self.wake_parent();
        Ok(true)
    }

    /// A finished child makes its parent due (committed with the child's end).
    fn wake_parent(&mut self) {
        if let Some(parent) = self.run.parent_run_id.clone() {
            self.stage(vec![Change::WakeRun { run_id: parent }]);
        }
    }

    /// A succeeded step with a rollback body whose rollback has not ended.
    fn rollback_pending(&self, i: usize) -> bool {
        self.wf.steps[i].rollback.is_some()
            && self.steps[i].status == StepStatus::Succeeded
            && !self.rollbacks[i]
                .as_ref()
                .is_some_and(|r| r.status == "succeeded" || r.status == "failed")
    }

    /// Starts rollbacks in reverse dependency order: a step's rollback waits
    /// for the rollbacks of every step that depends on it.
    async fn advance_rollback(&mut self) -> anyhow::Result<()> {
        let now = now_ms();
        let order: Vec<usize> = self.wf.topological_order.iter().rev().copied().collect();
        for i in order {
            if !self.rollback_pending(i) || self.in_flight.contains_key(&(i, Phase::Rollback)) {
                continue;
            }
            let state = self.rollbacks[i].clone().unwrap_or_default();
            if state.status == "running" {
                continue;
            }
            if state.status == "retry_wait" && state.wake_at.is_some_and(|w| w > now) {
                continue;
            }
            let dependents_done = (0..self.steps.len())
                .filter(|&d| self.wf.ancestors.contains(d, i))
                .all(|d| !self.rollback_pending(d));
            if dependents_done {
                self.start_attempt(i, Phase::Rollback).await?;
            }
        }
        Ok(())
    }

    async fn finish_rollback(
        &mut self,
        i: usize,
        n: u32,
        result: Result<(), (String, bool)>,
    ) -> anyhow::Result<()> {
        let id = self.wf.steps[i].id.clone();
        let retry = self.body(i, Phase::Rollback).retry;
        let now = now_ms();
        let mut rb = self.rollbacks[i].clone().unwrap_or_default();
        let mut changes = Vec::new();
        match result {
            Ok(()) => {
                rb.status = "succeeded".into();
                changes.push(self.step_change(i, |s| {
                    s.status = StepStatus::RolledBack;
                    s.rollback = Some(json!(rb).to_string());
                }));
                changes.push(Self::event("step_rolled_back", Some(&id), None));
            }
            Err((error, retryable)) if retryable && n < retry.attempts => {
                let delay = backoff::delay_after(&retry, n, fastrand::f64());
                rb.status = "retry_wait".into();
                rb.wake_at = Some(now + delay.as_millis() as i64);
                rb.error = Some(error);
                changes.push(self.step_change(i, |s| s.rollback = Some(json!(rb).to_string())));
            }
            Err((error, _)) => {
                rb.status = "failed".into();
                rb.error = Some(error.clone());
                changes.push(self.step_change(i, |s| s.rollback = Some(json!(rb).to_string())));
                changes.push(Self::event(
                    "rollback_step_failed",
                    Some(&id),
                    Some(json!({"error": error})),
                ));
            }
        }
        self.commit(changes).await
    }
}

/// Renders a body's `with` (when it has templates), types it into the
/// action's config, and resolves a named SQL connection to its URL.
fn prepare_config(
    body: &CompiledBody,
    ctx: Option<&Context>,
    connections: &HashMap<String, String>,
) -> Result<ActionConfig, String> {
    let rendered = match ctx {
        Some(ctx) if !body.templates.is_empty() => {
            render_value(&body.with, &body.templates, "", ctx)?
        }
        _ => body.with.clone(),
    };
    let mut config = match super::render::typed_config(body.kind, &rendered)? {
        KindConfig::Action(c) => c,
        _ => return Err("step parameters do not match its kind".into()),
    };
    if let ActionConfig::Sql(sql) = &mut config
        && sql.url.is_none()
        && let Some(name) = &sql.connection
    {
        sql.url = connections.get(name).cloned();
    }
    Ok(config)
}

/// One attempt of an action: `for_each` items and `poll` iterations inside it.
#[allow(clippy::too_many_arguments)]
async fn run_action(
    engine: &Arc<Engine>,
    run_id: &str,
    step_id: &str,
    phase: Phase,
    n: u32,
    config: Option<ActionConfig>,
    mut actx: AttemptContext,
    for_each: Option<(Vec<Value>, CompiledBody, HashMap<String, String>)>,
    poll: Option<(crate::model::Poll, crate::compile::templates::Parsed)>,
    base_ctx: Value,
) -> Outcome {
    // Record the process group so a successor can clean up after a crash.
    {
        let store = engine.store.clone();
        let worker = engine.opts.worker_id.clone();
        let (run_id, step_id) = (run_id.to_string(), step_id.to_string());
        let handle = tokio::runtime::Handle::current();
        actx.on_spawn = Some(Box::new(move |pgid| {
            let store = store.clone();
            let change = Change::AttemptPgid { step_id: step_id.clone(), phase, n, pgid };
            let (worker, run_id) = (worker.clone(), run_id.clone());
            handle.spawn(async move {
                let _ = store.commit(&worker, &run_id, &[change]).await;
            });
        }));
    }
    let Some((items, body, connections)) = for_each else {
        let config = config.expect("rendered when there is no for_each");
        return poll_action(&config, &actx, poll, &base_ctx).await;
    };
    // for_each: one action per item, the outputs a list in item order.
    let mut outputs = Vec::with_capacity(items.len());
    for (k, item) in items.iter().enumerate() {
        actx.idempotency_key = format!("{run_id}/{step_id}/{k}");
        let mut ctx = base_ctx.clone();
        ctx["item"] = item.clone();
        let rendered = Context::wraps(&ctx)
            .map_err(|e| e.to_string())
            .and_then(|c| prepare_config(&body, Some(&c), &connections));
        let outcome = match rendered {
            Ok(config) => poll_action(&config, &actx, poll.clone(), &ctx).await,
            Err(e) => Outcome::fatal(e),
        };
        match outcome {
            Outcome::Succeeded { outputs: o } => outputs.push(json!({"item": item, "outputs": o})),
            Outcome::Failed { error, retryable, outputs: o } => {
                outputs.push(json!({"item": item, "outputs": o}));
                return Outcome::Failed {
                    error: format!("item {k} ({item}): {error}"),
                    retryable,
                    outputs: json!({"items": outputs}),
                };
            }
        }
    }
    Outcome::Succeeded { outputs: json!({"items": outputs}) }
}

/// The last result of a poll, short enough for an error line: `json`
/// when the action printed one, else the outputs without bulky fields.
fn last_outputs_summary(outputs: &Value) -> String {
    let shown = match outputs.get("json") {
        Some(j) if !j.is_null() => j.clone(),
        _ => {
            let mut o = outputs.clone();
            if let Some(m) = o.as_object_mut() {
                m.remove("headers");
            }
            o
        }
    };
    let text = shown.to_string();
    match text.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// Runs the action, repeating it every `interval` until `until` holds.
async fn poll_action(
    config: &ActionConfig,
    actx: &AttemptContext,
    poll: Option<(crate::model::Poll, crate::compile::templates::Parsed)>,
    ctx: &Value,
) -> Outcome {
    let Some((poll, until)) = poll else {
        return config.run(actx).await;
    };
    let deadline = Instant::now() + poll.timeout.0;
    loop {
        let outcome = config.run(actx).await;
        if let Outcome::Succeeded { outputs } = &outcome {
            let mut c = ctx.clone();
            c["outputs"] = outputs.clone();
            let holds =
                Context::wraps(c).map_err(|e| e.to_string()).and_then(|c| render(&until, &c));
            match holds {
                Ok(text) if truthy(&text) => return outcome,
                Ok(_) => {}
                Err(e) => return Outcome::fatal(format!("`poll.until`: {e}")),
            }
        }
        if Instant::now() + poll.interval.0 > deadline {
            return Outcome::Failed {
                error: format!(
                    "`poll.until` still false after {}; last outputs: {}",
                    poll.timeout,
                    last_outputs_summary(outcome.outputs())
                ),
                retryable: false,
                outputs: outcome.outputs().clone(),
            };
        }
        tokio::select! {
            _ = actx.cancel.cancelled() => return Outcome::fatal("cancelled while polling"),
            _ = tokio::time::sleep(poll.interval.0) => {}
        }
    }
}
