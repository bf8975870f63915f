//! The engine: a worker that claims runs with leases, drives each one in
//! its own task, renews its leases by heartbeat, and stops driving a run
//! the moment it cannot prove it still holds the lease.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::driver::{DriveEnd, Driver};
use super::runtime::Runtime;
pub use super::runtime::{EngineOptions, Parent, SubmitKeys, new_worker_id};
use super::{ExecError, ExecResult};
use crate::store::{Change, RunStatus, RunUpdate, Store, WorkerRecord, now_ms};

/// The message of a caught panic.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// The shortest time between two claims that took runs, when a ring (not
/// a timer or a free slot) wakes the worker: a run submitted alone is
/// claimed at once, and a burst's runs are claimed a batch at a time
/// instead of one claim each.
const CLAIM_GAP: Duration = Duration::from_millis(2);

/// Logs a driver task that ended in a panic (its run is handed back by
/// lease expiry).
fn reap(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        tracing::error!(error = %e, "A run driver panicked.");
    }
}

/// A worker: the `Runtime` its drivers share, plus the loop that claims
/// runs, renews their leases and stops a driver whose lease is lost.
///
/// It derefs to its `Runtime`: an engine *is* a runtime with a worker loop
/// around it, and callers (`run`, `serve`, triggers) use the runtime's
/// store, options and `submit` through it.
pub struct Engine {
    rt: Arc<Runtime>,
    /// Drivers running now, to stop one whose lease is lost.
    driving: Mutex<HashMap<String, Driving>>,
}

/// One driver running on this worker.
struct Driving {
    stop: CancellationToken,
    /// Rung when a request for the run is queued (see `hear_requests`).
    requests_queued: Arc<tokio::sync::Notify>,
    /// When it started: a renewal read before a driver started says nothing
    /// about that driver's run.
    since: std::time::Instant,
    /// The run was claimed (leased to this worker) again while this driver
    /// ended, after its release: nobody else will drive it, and the
    /// heartbeat would renew its lease forever.
    claimed_again: bool,
}

impl std::ops::Deref for Engine {
    type Target = Runtime;

    fn deref(&self) -> &Runtime {
        &self.rt
    }
}

impl Engine {
    pub fn new(store: Arc<dyn Store>, opts: EngineOptions) -> Arc<Self> {
        Arc::new(Engine {
            rt: Arc::new(Runtime::new(store, opts)),
            driving: Mutex::new(HashMap::new()),
        })
    }

    /// Drives one claimed run until it finishes or suspends. A run that can
    /// never be driven (its definition does not compile, or driving it
    /// panicked) is quarantined: failed with the reason, so it is not
    /// claimed again and again, and the worker goes on with the others.
    pub async fn drive(self: &Arc<Self>, run_id: &str) -> ExecResult<DriveEnd> {
        self.drive_once(run_id).await.0
    }

    /// `drive`, and whether the run was claimed again while this driver
    /// ended (see `drive_claimed`).
    async fn drive_once(self: &Arc<Self>, run_id: &str) -> (ExecResult<DriveEnd>, bool) {
        use futures_util::FutureExt;
        let stop = CancellationToken::new();
        let requests_queued = Arc::new(tokio::sync::Notify::new());
        let driving = Driving {
            stop: stop.clone(),
            requests_queued: requests_queued.clone(),
            since: std::time::Instant::now(),
            claimed_again: false,
        };
        self.driving.lock().expect("poisoned").insert(run_id.to_string(), driving);
        let span = tracing::info_span!("run", run_id = %run_id);
        let result = std::panic::AssertUnwindSafe(
            async {
                match Driver::load(self.rt.clone(), run_id, stop, requests_queued).await {
                    Ok(mut driver) => driver.drive().await,
                    Err(e) => Err(e),
                }
            }
            .instrument(span),
        )
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            Err(ExecError::Quarantine(format!("driving the run panicked: {}", panic_text(&*panic))))
        });
        // A run that can never be driven: a definition that does not
        // compile, a panic, or step state that cannot be read.
        let quarantine = result.as_ref().err().and_then(ExecError::quarantine_reason);
        if let Some(reason) = quarantine {
            tracing::error!(run = %run_id, reason = %reason, "Run quarantined: it is failed and will not be driven again.");
            if let Err(e) = self.quarantine(run_id, &reason).await {
                tracing::warn!(run = %run_id, error = %e, "Could not record the quarantine; the run will be tried again.");
            }
        }
        if !matches!(result, Ok(DriveEnd::Finished(_) | DriveEnd::Suspended { .. })) {
            // Stopped or failed: hand the run back at once if it is still ours
            // (a no-op when another worker holds it), so it is never stranded
            // under a lease this worker keeps renewing.
            if let Err(e) = self.store.release(&self.opts.worker_id, run_id, None).await {
                tracing::warn!(run = %run_id, error = %e, "Could not hand the run back; its lease will expire.");
            }
        }
        // Last, so a claim made during the release above is seen as one.
        let entry = self.driving.lock().expect("poisoned").remove(run_id);
        (result, entry.is_some_and(|d| d.claimed_again))
    }

    /// Drives a claimed run, and again for as long as it is claimed again
    /// while its driver ends (a child's end or a request can make it due
    /// between its release and its driver's exit).
    async fn drive_claimed(self: &Arc<Self>, run_id: &str) {
        loop {
            let (result, claimed_again) = self.drive_once(run_id).await;
            if let Err(e) = result {
                tracing::error!(run = %run_id, error = %format!("{e:#}"), "Driving the run failed.");
            }
            if !claimed_again {
                return;
            }
        }
    }

    /// Fails a run that cannot be driven, with the reason, and hands it back
    /// in the same commit (under this worker's lease, like any transition).
    async fn quarantine(&self, run_id: &str, reason: &str) -> ExecResult<()> {
        let now = now_ms();
        let changes = [
            Change::Run(RunUpdate {
                status: Some(RunStatus::Failed),
                finished_at: Some(now),
                error: Some(format!("quarantined: {reason}")),
                ..RunUpdate::default()
            }),
            Change::Event {
                at: now,
                kind: crate::events::RunEvent::Quarantined,
                step_id: None,
                data: Some(serde_json::json!({ "reason": reason })),
            },
            Change::Release { wake_at: None },
        ];
        self.store.commit(&self.opts.worker_id, run_id, &changes).await?;
        if let Some(run) = self.store.run(run_id).await? {
            crate::metrics::run_finished(&run.workflow, RunStatus::Failed);
            crate::telemetry::run_ended(&run, RunStatus::Failed, now);
        }
        Ok(())
    }

    /// Renews leases; stops drivers of runs no longer held.
    async fn heartbeat(&self) {
        let asked = std::time::Instant::now();
        match self.store.renew(&self.opts.worker_id, self.lease()).await {
            Ok(held) => {
                self.renewed(asked);
                let driving = self.driving.lock().expect("poisoned");
                for (run, d) in driving.iter() {
                    // A driver started after the renewal was asked for is not in `held`.
                    if d.since < asked && !held.contains(run) {
                        tracing::warn!(run = %run, "Lease lost; stopping this run's steps.");
                        d.stop.cancel();
                    }
                }
            }
            Err(e) if self.database_grace_left() => {
                tracing::warn!(error = %e, "Lease renewal failed; retrying (the database may be restarting).");
            }
            Err(e) => {
                // Cannot prove we hold anything: stop before the lease can expire.
                tracing::error!(error = %e, "Lease renewal failed for half a lease; stopping all runs.");
                for d in self.driving.lock().expect("poisoned").values() {
                    d.stop.cancel();
                }
            }
        }
    }

    /// Passes each ring of "a request was queued for run X" to X's driver,
    /// if this worker drives X (otherwise the request made X due, and a
    /// claim picks it up).
    async fn hear_requests(&self, shutdown: CancellationToken) {
        use tokio::sync::broadcast::error::RecvError;
        let mut requests = self.store.doorbell().requests();
        loop {
            let run = tokio::select! {
                _ = shutdown.cancelled() => return,
                run = requests.recv() => run,
            };
            let driving = self.driving.lock().expect("poisoned");
            match run {
                Ok(run) => {
                    if let Some(d) = driving.get(&run) {
                        d.requests_queued.notify_one();
                    }
                }
                // Rings were dropped: every driver looks.
                Err(RecvError::Lagged(_)) => {
                    driving.values().for_each(|d| d.requests_queued.notify_one());
                }
                Err(RecvError::Closed) => return,
            }
        }
    }

    /// How long an idle worker may wait before a stored timer is due: until
    /// the earliest `wake_at`, at most the poll interval (the safety net for
    /// a lost ring and for expired leases).
    async fn until_next_timer(&self) -> Duration {
        let now = now_ms();
        match self.store.next_wake(now).await {
            Ok(Some(at)) => Duration::from_millis((at - now).max(0) as u64).min(self.opts.poll),
            Ok(None) => self.opts.poll,
            Err(e) => {
                tracing::warn!(error = %e, "Reading the next timer failed; polling.");
                self.opts.poll
            }
        }
    }

    /// The worker loop: claim due runs and drive them, until `shutdown`.
    /// `only`: drive just this run tree (`run --wait`), and return when its
    /// root run has finished.
    pub async fn work(
        self: &Arc<Self>,
        shutdown: CancellationToken,
        only: Option<String>,
    ) -> ExecResult<()> {
        self.store
            .register_worker(&WorkerRecord {
                id: self.opts.worker_id.clone(),
                host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
                pid: std::process::id(),
                started_at: now_ms(),
            })
            .await?;
        let beat = {
            let engine = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(engine.opts.heartbeat);
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tick.tick() => engine.heartbeat().await,
                    }
                }
            })
        };
        // Other processes' rings: without them, their runs wait for a poll.
        if let Err(e) = self.store.listen().await {
            tracing::warn!(error = %e, "Runs created by other processes are found by polling.");
        }
        let mut due = self.store.doorbell().due();
        let hearing = {
            let engine = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move { engine.hear_requests(shutdown).await })
        };
        let mut tasks = tokio::task::JoinSet::new();
        let mut last_claim = std::time::Instant::now()
            .checked_sub(CLAIM_GAP)
            .unwrap_or_else(std::time::Instant::now);
        // `run --wait` created its run already leased to us: drive it at once.
        if let Some(root) = &only
            && let Some(run) = self.store.run(root).await?
            && run.lease_owner.as_deref() == Some(self.opts.worker_id.as_str())
        {
            self.spawn_drive(&mut tasks, root.clone());
        }
        let result = loop {
            if shutdown.is_cancelled() {
                break Ok(());
            }
            // Reaped first, so `run --wait` sees its last driver gone at once.
            while let Some(done) = tasks.try_join_next() {
                reap(done);
            }
            if let Some(root) = &only
                && tasks.is_empty()
                && let Ok(Some(run)) = self.store.run(root).await
                && run.status.is_terminal()
            {
                break Ok(());
            }
            let free = self.opts.max_runs.saturating_sub(tasks.len());
            let claimed = if free > 0 {
                match self
                    .store
                    .claim(&self.opts.worker_id, self.lease(), free, only.as_deref())
                    .await
                {
                    Ok(ids) => ids,
                    Err(e) => {
                        // The database is away (restart, network): keep trying.
                        tracing::warn!(error = %e, "Claiming runs failed; retrying.");
                        tokio::time::sleep(self.opts.poll.max(Duration::from_millis(200))).await;
                        continue;
                    }
                }
            } else {
                Vec::new()
            };
            // Took all it could: more may be due already, look again at once.
            let full = free > 0 && claimed.len() >= free;
            if !claimed.is_empty() {
                last_claim = std::time::Instant::now();
            }
            for run_id in claimed {
                // Its driver is still ending: it drives the run once more.
                if let Some(d) = self.driving.lock().expect("poisoned").get_mut(&run_id) {
                    d.claimed_again = true;
                    continue;
                }
                self.spawn_drive(&mut tasks, run_id);
            }
            if !full {
                // A ring during the claim above is remembered by `due`: the
                // wait below ends at once and nothing is missed.
                let timer = if free > 0 { self.until_next_timer().await } else { self.opts.poll };
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    // A driver ended: room for another run, or `run --wait` is done.
                    Some(done) = tasks.join_next(), if !tasks.is_empty() => reap(done),
                    _ = due.changed(), if free > 0 => {
                        // Under a burst, rings come faster than claims are
                        // worth making: one claim per gap takes them all.
                        let since = last_claim.elapsed();
                        if since < CLAIM_GAP {
                            tokio::time::sleep(CLAIM_GAP - since).await;
                        }
                    }
                    _ = tokio::time::sleep(timer) => {}
                }
            }
        };
        // Graceful stop: steps in flight finish (within the lease), then the
        // runs are handed back so another worker can take them at once.
        self.draining.cancel();
        let drained = tokio::time::timeout(self.opts.lease, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            for d in self.driving.lock().expect("poisoned").values() {
                d.stop.cancel();
            }
            while tasks.join_next().await.is_some() {}
        }
        beat.abort();
        hearing.abort();
        result
    }

    fn spawn_drive(self: &Arc<Self>, tasks: &mut tokio::task::JoinSet<()>, run_id: String) {
        let engine = self.clone();
        tasks.spawn(async move {
            engine.drive_claimed(&run_id).await;
        });
    }

    /// Waits until `run_id` has finished, driving it here; returns its status.
    pub async fn run_to_end(self: &Arc<Self>, run_id: &str) -> ExecResult<RunStatus> {
        self.work(CancellationToken::new(), Some(run_id.to_string())).await?;
        Ok(self.store.run(run_id).await?.map(|r| r.status).unwrap_or(RunStatus::Failed))
    }
}
