//! Drives one run: the run and step state machines of docs/guarantees.md.
//!
//! Every transition is a batch of `Change`s committed (under the run's
//! lease) before it counts; an attempt is recorded before its side effect
//! starts. The driver holds nothing that matters: after a crash, `load`
//! rebuilds it from the store and `recover` turns attempts that were in
//! flight into interrupted ones.

mod attempts;
mod commit;
mod drill;
mod finish;
pub(crate) mod gates;
mod native;
mod notifications;
mod recover;
mod requests;
mod rollback;
mod state;
use state::{RollbackState, RollbackStatus, Slot, StepState};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use handlebars::Context;
use lifeboat_steps::{ActionConfig, AttemptContext, Outcome};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::backoff;
use super::people::Decision;
use super::render::{render, render_value, truthy};
use super::runtime::Runtime;
use super::{ExecError, ExecResult};
use crate::compile::{CompiledBody, CompiledWorkflow};
use crate::events::RunEvent;
use crate::kinds::{KindConfig, NativeKind, StepKind};
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

/// An attempt's task, not started yet.
type Launch = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// What a step task reports back.
struct Finished {
    index: usize,
    phase: Phase,
    n: u32,
    outcome: Outcome,
}

pub struct Driver {
    rt: Arc<Runtime>,
    wf: Arc<CompiledWorkflow>,
    run: RunRecord,
    /// One per step of `wf.steps`, in the same order.
    slots: Vec<Slot>,
    in_flight: HashMap<(usize, Phase), CancellationToken>,
    /// Changes applied locally but not yet committed (see `stage`).
    staged: Vec<Change>,
    /// Attempts whose start is staged: launched by the `flush` that makes
    /// the start durable, so several starts (a fan-out) and the previous
    /// step's end share one commit, and no side effect precedes its record.
    launches: Vec<((usize, Phase), Launch)>,
    /// Step id -> index in `wf.steps`.
    index: HashMap<String, usize>,
    tx: mpsc::UnboundedSender<Finished>,
    rx: mpsc::UnboundedReceiver<Finished>,
    /// `AttemptPgid` changes from attempts that spawned a process group.
    spawned_tx: mpsc::UnboundedSender<Change>,
    spawned_rx: mpsc::UnboundedReceiver<Change>,
    /// Process groups not recorded yet, and when they must be (see
    /// `PGID_GRACE`).
    pgids: Vec<Change>,
    pgids_due: Option<tokio::time::Instant>,
    stop: CancellationToken,
    /// Notified when a request for this run was queued: read requests now,
    /// not at the next poll.
    requests_queued: Arc<Notify>,
    /// When the run breaches its RTO (`objectives.rto`), until that is said.
    rto_due: Option<i64>,
    /// A drill's faults, expectations and queued notifications (`drill.rs`).
    drill: Option<drill::DrillState>,
}

/// A timer due within this is waited for by the driver, holding the lease;
/// a later one hands the run back (a durable row), and the worker claims it
/// again when `Store::next_wake` says it is due.
const HOLD_FOR_TIMER: Duration = Duration::from_secs(1);

/// How long a started process group may go unrecorded. It goes with the
/// next commit (usually its attempt's end, for a short step), or by
/// itself once this has passed. While the worker lives, its guardian (or
/// the parent-death signal) ties the group to it; the record is for the
/// worker that recovers the run after a crash of both.
const PGID_GRACE: Duration = Duration::from_millis(20);

impl Driver {
    pub async fn load(
        rt: Arc<Runtime>,
        run_id: &str,
        stop: CancellationToken,
        requests_queued: Arc<Notify>,
    ) -> ExecResult<Self> {
        let store = &rt.store;
        let run = store.run(run_id).await?.ok_or_else(|| StoreError::NotFound(run_id.into()))?;
        let wf = rt.definition(&run.definition_hash).await?;
        let mut by_id: HashMap<String, StepRecord> =
            store.steps(run_id).await?.into_iter().map(|s| (s.step_id.clone(), s)).collect();
        let slots = wf
            .steps
            .iter()
            .map(|s| by_id.remove(&s.id).unwrap_or_else(|| StepRecord::pending(run_id, &s.id)))
            .map(Slot::new)
            .collect::<Result<Vec<_>, _>>()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (spawned_tx, spawned_rx) = mpsc::unbounded_channel();
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
            && store
                .events(run_id, 0)
                .await?
                .iter()
                .any(|e| e.kind == RunEvent::RtoBreached.as_str())
        {
            rto_due = None;
        }
        let drill = drill::DrillState::load(&rt, &run).await?;
        Ok(Driver {
            drill,
            rt,
            wf,
            run,
            slots,
            in_flight: HashMap::new(),
            staged: Vec::new(),
            launches: Vec::new(),
            index,
            tx,
            rx,
            spawned_tx,
            spawned_rx,
            pgids: Vec::new(),
            pgids_due: None,
            stop,
            requests_queued,
            rto_due,
        })
    }

    fn worker(&self) -> &str {
        &self.rt.opts.worker_id
    }

    /// The step rows, in `wf.steps` order.
    fn records(&self) -> impl Iterator<Item = &StepRecord> {
        self.slots.iter().map(|s| &s.record)
    }

    fn event(kind: RunEvent, step: Option<&str>, data: Option<Value>) -> Change {
        Change::Event { at: now_ms(), kind, step_id: step.map(String::from), data }
    }

    /// The run's one `rto_breached` event, the first time it is asked for
    /// (while the run goes on, or when it ends late without having said so);
    /// `None` after that, so nobody is paged twice.
    fn rto_breached(&mut self) -> Option<Change> {
        self.rto_due.take()?;
        let rto = self.wf.definition.objectives.as_ref().and_then(|o| o.rto)?;
        let elapsed = self.run.started_at.map(|s| now_ms() - s);
        Some(Self::event(
            RunEvent::RtoBreached,
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
        let mut s = self.slots[i].record.clone();
        f(&mut s);
        Change::Step(s)
    }

    /// The main loop.
    pub async fn drive(&mut self) -> ExecResult<DriveEnd> {
        let result = self.drive_inner().await;
        self.drop_launches();
        if result.is_err() || matches!(result, Ok(DriveEnd::Stopped)) {
            for token in self.in_flight.values() {
                token.cancel();
            }
            let wf = self.wf.clone();
            await_attempts(&self.run.id, &mut self.in_flight, &mut self.rx, |i| {
                wf.steps.get(i).map_or("?", |s| s.id.as_str()).to_string()
            })
            .await;
        }
        match result {
            Err(e)
                if matches!(
                    e.store(),
                    Some(StoreError::Conflict(crate::store::Conflict::LeaseLost(_)))
                ) =>
            {
                Ok(DriveEnd::Stopped)
            }
            other => other,
        }
    }

    async fn drive_inner(&mut self) -> ExecResult<DriveEnd> {
        self.recover().await?;
        let mut last_requests = Instant::now();
        // Read at once: the requests that made the run due.
        let mut requests_queued = true;
        loop {
            if self.stop.is_cancelled() {
                return Ok(DriveEnd::Stopped);
            }
            // The poll is a safety net for a request whose ring was lost.
            if std::mem::take(&mut requests_queued) || last_requests.elapsed() >= self.rt.opts.poll
            {
                match self.process_requests().await {
                    Ok(()) => {}
                    // Reading requests failed while the database is away: next round.
                    Err(e)
                        if self.rt.database_grace_left()
                            && e.store().is_some_and(|e| {
                                matches!(
                                    e,
                                    StoreError::Database(_)
                                        | StoreError::Sqlite(_)
                                        | StoreError::Unavailable(_)
                                )
                            }) =>
                    {
                        tracing::warn!(run = %self.run.id, error = %e, "Reading requests failed; retrying.");
                    }
                    Err(e) => return Err(e),
                }
                last_requests = Instant::now();
            }
            // Gates waiting for a drill scenario's people (a resumed drill too).
            self.drill_answers().await?;
            if let Some(due) = self.rto_due
                && now_ms() >= due
                && !self.run.status.is_terminal()
            {
                let breached = self.rto_breached();
                self.stage(breached.into_iter().collect())?;
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
                        RunEvent::Started,
                        None,
                        Some(json!({"inputs": self.run.inputs, "worker": self.worker()})),
                    ),
                ])?;
            }
            if self.run.status.is_terminal() {
                // Attempts a cancel stopped end (and are recorded) first.
                while !self.in_flight.is_empty() {
                    let done = self.rx.recv().await.expect("the driver holds a sender");
                    self.in_flight.remove(&(done.index, done.phase));
                    self.on_finished(done).await?;
                }
                self.stage(vec![Change::Release { wake_at: None }])?;
                self.flush().await?;
                return Ok(DriveEnd::Finished(self.run.status));
            }
            if self.rt.draining.is_cancelled() {
                if self.in_flight.is_empty() {
                    self.stage(vec![Change::Release { wake_at: None }])?;
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
            if self.in_flight.is_empty() && !self.rt.draining.is_cancelled() {
                if !self.run.paused && self.try_finish().await? {
                    continue;
                }
                let wake = if self.run.paused { None } else { self.next_wake() };
                let now = now_ms();
                match wake {
                    // A timer due soon: wait here rather than hand the run back.
                    Some(at) if at - now <= HOLD_FOR_TIMER.as_millis() as i64 => {
                        self.flush().await?;
                        let sleep = Duration::from_millis((at - now).max(0) as u64);
                        tokio::select! {
                            _ = self.stop.cancelled() => return Ok(DriveEnd::Stopped),
                            _ = self.requests_queued.notified() => requests_queued = true,
                            _ = tokio::time::sleep(sleep) => {}
                        }
                        continue;
                    }
                    _ => {
                        let at = wake.unwrap_or(NEVER);
                        self.stage(vec![Change::Release { wake_at: Some(at) }])?;
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
                .unwrap_or(self.rt.opts.poll)
                .min(self.rt.opts.poll);
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => return Ok(DriveEnd::Stopped),
                // A process group is held for the next commit (`PGID_GRACE`);
                // received before the attempt's end, so recorded with or before it.
                Some(pgid) = self.spawned_rx.recv() => {
                    self.pgids.push(pgid);
                    while let Ok(pgid) = self.spawned_rx.try_recv() {
                        self.pgids.push(pgid);
                    }
                    self.pgids_due.get_or_insert_with(|| tokio::time::Instant::now() + PGID_GRACE);
                }
                _ = tokio::time::sleep_until(self.pgids_due.unwrap_or_else(tokio::time::Instant::now)), if self.pgids_due.is_some() => {
                    let pgids = std::mem::take(&mut self.pgids);
                    self.pgids_due = None;
                    self.commit(pgids).await?;
                }
                _ = self.rt.draining.cancelled(), if !self.in_flight.is_empty() && self.staged.is_empty() => {
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
                _ = self.requests_queued.notified() => requests_queued = true,
                _ = tokio::time::sleep(until_timer) => {}
            }
        }
    }

    fn has_rollback_work(&self) -> bool {
        (0..self.wf.steps.len())
            .any(|i| self.has_rollback(i) && self.slots[i].record.status == StepStatus::Succeeded)
    }

    /// The earliest timer among steps and rollbacks.
    fn next_wake(&self) -> Option<i64> {
        let steps = self
            .records()
            .filter(|s| matches!(s.status, StepStatus::RetryWait | StepStatus::Waiting))
            .filter_map(|s| s.wake_at);
        let rollbacks = self
            .slots
            .iter()
            .filter_map(|s| s.rollback.as_ref())
            .filter(|r| r.status == RollbackStatus::RetryWait)
            .filter_map(|r| r.wake_at);
        let rto = self.rto_due.filter(|_| !self.run.status.is_terminal());
        steps.chain(rollbacks).chain(rto).min()
    }

    fn need_satisfied(&self, n: usize) -> bool {
        match self.slots[n].record.status {
            StepStatus::Succeeded | StepStatus::Skipped => true,
            StepStatus::Failed => self.wf.steps[n].definition.continue_on_failure,
            _ => false,
        }
    }

    fn blocking_failure(&self) -> bool {
        self.records().enumerate().any(|(i, s)| {
            s.status == StepStatus::Failed && !self.wf.steps[i].definition.continue_on_failure
        })
    }

    async fn advance_forward(&mut self) -> ExecResult<()> {
        if self.blocking_failure() {
            return Ok(()); // no new work once the run is failing
        }
        let now = now_ms();
        let order = self.wf.topological_order.clone();
        for i in order {
            if self.in_flight.contains_key(&(i, Phase::Forward)) {
                continue;
            }
            let status = self.slots[i].record.status;
            let due = self.slots[i].record.wake_at.is_none_or(|w| w <= now);
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
        for (i, s) in self.records().enumerate() {
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
                // What a summary reports as the measured recovery time.
                "elapsed_ms": self.run.started_at.map(|t| (now_ms() - t).max(0)),
                "trigger": self.run.trigger.get("kind").cloned().unwrap_or(json!("manual")),
                "requested_by": self.run.trigger.get("by").cloned().unwrap_or(Value::Null),
                "mode": self.run.mode.as_str(),
            },
            "alert": payload,
            "event": payload,
            "secrets": self.rt.secrets.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
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
        self.rt.redactor.redact(&mut v);
        v
    }

    async fn fail_step(&mut self, i: usize, error: String) -> ExecResult<()> {
        let now = now_ms();
        let id = self.wf.steps[i].id.clone();
        let error = self.rt.redactor.redact_str(&error).into_owned();
        let changes = vec![
            self.step_change(i, |s| {
                s.status = StepStatus::Failed;
                s.error = Some(error.clone());
                s.finished_at = Some(now);
                s.wake_at = None;
            }),
            Self::event(RunEvent::StepFailed, Some(&id), Some(json!({"error": error}))),
        ];
        self.commit(changes).await
    }

    /// Starts a step: `when`, then its kind. `first`: not a retry.
    async fn start_step(&mut self, i: usize, first: bool) -> ExecResult<()> {
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
                        Self::event(
                            RunEvent::StepSkipped,
                            Some(&step.id),
                            Some(json!({"when": text})),
                        ),
                    ];
                    return self.commit(changes).await;
                }
                Ok(_) => {}
                Err(e) => return self.fail_step(i, format!("`when`: {e}")).await,
            }
        }
        if self.drill_skips(i) {
            return self.drill_skip(i).await;
        }
        match self.body(i, Phase::Forward).kind {
            StepKind::Native(kind) => self.start_native(i, kind).await,
            StepKind::Action(_) => self.start_attempt(i, Phase::Forward).await,
        }
    }

    fn body(&self, i: usize, phase: Phase) -> &CompiledBody {
        let step = &self.wf.steps[i];
        match phase {
            Phase::Forward => self.drill_body(i).unwrap_or(&step.body),
            Phase::Rollback => {
                step.rollback.as_ref().expect("rollback phase only for steps with a rollback")
            }
        }
    }

    fn context_value(&self) -> Value {
        // The same JSON `context()` wraps, for use inside the attempt task.
        serde_json::to_value(self.context(None, None).data()).unwrap_or(Value::Null)
    }
}

/// How often a stop that waits for attempts says so.
const STOP_WARN_EVERY: Duration = Duration::from_secs(10);

/// Waits until the cancelled attempts in `in_flight` have really ended
/// (their process groups killed) before the run can be handed back: two
/// attempts of one step must never overlap. The run stays leased (the
/// heartbeat renews it) for as long as this takes; every
/// `STOP_WARN_EVERY` a warning names what is still in flight.
async fn await_attempts(
    run_id: &str,
    in_flight: &mut HashMap<(usize, Phase), CancellationToken>,
    rx: &mut mpsc::UnboundedReceiver<Finished>,
    step_id: impl Fn(usize) -> String,
) {
    let started = tokio::time::Instant::now();
    while !in_flight.is_empty() {
        match tokio::time::timeout(STOP_WARN_EVERY, rx.recv()).await {
            Ok(Some(done)) => {
                in_flight.remove(&(done.index, done.phase));
            }
            Ok(None) => break, // no attempt task can report any more
            Err(_) => {
                let waiting: Vec<String> = in_flight
                    .keys()
                    .map(|&(i, phase)| format!("{} ({phase})", step_id(i)))
                    .collect();
                tracing::warn!(
                    run = %run_id,
                    in_flight = %waiting.join(", "),
                    waited_s = started.elapsed().as_secs(),
                    "Stopping the run: attempts still running after being cancelled; keeping the lease until they end."
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(index: usize) -> Finished {
        Finished { index, phase: Phase::Forward, n: 1, outcome: Outcome::fatal("cancelled") }
    }

    /// A stop waits for a cancelled attempt however long it takes to end
    /// (it used to give up after 10s and let the run be handed back).
    #[tokio::test(start_paused = true)]
    async fn a_stop_waits_for_attempts_past_the_warning() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut in_flight = HashMap::new();
        in_flight.insert((0, Phase::Forward), CancellationToken::new());
        in_flight.insert((1, Phase::Forward), CancellationToken::new());
        tx.send(finished(1)).unwrap();
        let ends = tokio::spawn(async move {
            tokio::time::sleep(STOP_WARN_EVERY * 3).await;
            tx.send(finished(0)).unwrap();
            tokio::time::Instant::now()
        });
        await_attempts("r", &mut in_flight, &mut rx, |i| format!("s{i}")).await;
        let ended = ends.await.unwrap();
        assert!(in_flight.is_empty());
        assert!(tokio::time::Instant::now() >= ended, "returned before the last attempt ended");
    }
}
