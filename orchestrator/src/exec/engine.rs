//! The engine: a worker that claims runs with leases, drives each one in
//! its own task, renews its leases by heartbeat, and stops driving a run
//! the moment it cannot prove it still holds the lease.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::driver::{DriveEnd, Driver};
use crate::compile::{CompileEnv, CompiledWorkflow};
use crate::store::{
    Change, Created, Definition, EventRecord, Lease, NewRun, Pins, RunStatus, RunUpdate, Store,
    WorkerRecord, now_ms,
};

/// How a worker behaves; defaults suit production, tests shorten the lease.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub worker_id: String,
    /// A run whose worker stops renewing is taken over after this long.
    pub lease: Duration,
    /// How often leases are renewed (well under `lease`).
    pub heartbeat: Duration,
    /// How often idle workers look for due runs and drivers look for requests.
    pub poll: Duration,
    /// Named SQL connections: name -> URL.
    pub connections: HashMap<String, String>,
    /// Where `workflow` steps find their child workflows (by declared name,
    /// through a catalog of this directory compiled with `known`).
    pub workflows_dir: std::path::PathBuf,
    /// Names from `lifeboat.toml`, for compiling child workflows.
    pub known: Option<crate::compile::KnownNames>,
    /// Runs driven at once by this worker.
    pub max_runs: usize,
    /// Users and groups, for approvers.
    pub people: Arc<super::people::Directory>,
    /// Templates, channels and links for notifications.
    pub notifier: Arc<super::notifier::Notifier>,
    /// The client of `http` steps and the `[http]` destination policy it
    /// enforces, compiled once.
    pub http: lifeboat_steps::http::HttpClient,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            worker_id: new_worker_id(),
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
            poll: Duration::from_millis(500),
            connections: HashMap::new(),
            workflows_dir: "workflows".into(),
            known: None,
            max_runs: 64,
            people: Arc::default(),
            notifier: Arc::default(),
            http: Default::default(),
        }
    }
}

/// The run and step that start a child run, and what the child inherits.
#[derive(Debug, Clone)]
pub struct Parent {
    pub run: String,
    pub step: String,
    /// The top of the run tree.
    pub root: String,
    /// The tree's pinned child workflows.
    pub pins: Pins,
}

/// What makes a submission a duplicate (see `NewRun`).
#[derive(Debug, Clone, Default)]
pub struct SubmitKeys {
    /// At most one active run of the workflow per key (webhook fingerprints).
    pub dedupe_key: Option<String>,
    /// `(schedule, tick ms)`: at most one run per tick, ever.
    pub schedule_tick: Option<(String, i64)>,
    /// The audit entry of this trigger or manual run, written with the run.
    pub audit: Option<crate::store::NewAudit>,
}

/// A run that can never be driven: failed with this reason instead of
/// being handed back to be claimed again.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct Quarantine {
    pub reason: String,
}

/// The message of a caught panic.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

pub fn new_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!(
        "{}-{}-{}",
        host.trim(),
        std::process::id(),
        &uuid::Uuid::now_v7().simple().to_string()[20..]
    )
}

/// Shared by every driver of this worker.
pub struct Engine {
    pub store: Arc<dyn Store>,
    pub opts: EngineOptions,
    definitions: Mutex<HashMap<String, Arc<CompiledWorkflow>>>,
    /// Secret values (from `LIFEBOAT_SECRET_*`), by name.
    pub secrets: Vec<(String, String)>,
    /// `secrets` and their encoded forms, compiled once for every redaction.
    pub redactor: Arc<lifeboat_steps::Redactor>,
    /// Every event this worker commits, for live progress.
    pub progress: broadcast::Sender<EventRecord>,
    /// Drivers running now, to stop one whose lease is lost.
    /// With when each started: a renewal read before a driver started says
    /// nothing about that driver's run.
    driving: Mutex<HashMap<String, (CancellationToken, std::time::Instant)>>,
    /// Set on graceful shutdown: start nothing new, let steps in flight
    /// finish, hand the runs back.
    pub draining: CancellationToken,
    /// When leases were last renewed: a worker that cannot reach the
    /// database keeps going for half a lease, then stops its steps, well
    /// before another worker may take its runs over.
    last_renewed: Mutex<std::time::Instant>,
    /// The workflows directory by declared name, for child workflows:
    /// `serve`'s own catalog, or loaded on first need.
    catalog: tokio::sync::OnceCell<Arc<crate::catalog::Catalog>>,
}

impl Engine {
    pub fn new(store: Arc<dyn Store>, opts: EngineOptions) -> Arc<Self> {
        let secrets: Vec<(String, String)> = std::env::vars()
            .filter_map(|(k, v)| k.strip_prefix("LIFEBOAT_SECRET_").map(|n| (n.to_string(), v)))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        let redactor = Arc::new(lifeboat_steps::Redactor::new(secrets.iter().map(|(_, v)| v)));
        let (progress, _) = broadcast::channel(4096);
        Arc::new(Engine {
            store,
            opts,
            definitions: Mutex::new(HashMap::new()),
            secrets,
            redactor,
            progress,
            driving: Mutex::new(HashMap::new()),
            draining: CancellationToken::new(),
            last_renewed: Mutex::new(std::time::Instant::now()),
            catalog: tokio::sync::OnceCell::new(),
        })
    }

    /// Shares `serve`'s catalog (kept current by its watcher) instead of
    /// loading one of our own. Call before the first run is submitted.
    pub fn use_catalog(&self, catalog: Arc<crate::catalog::Catalog>) {
        let _ = self.catalog.set(catalog);
    }

    /// The catalog child workflows are resolved through.
    pub async fn catalog(&self) -> anyhow::Result<Arc<crate::catalog::Catalog>> {
        let catalog = self
            .catalog
            .get_or_try_init(|| async {
                let (dir, known) = (self.opts.workflows_dir.clone(), self.opts.known.clone());
                tokio::task::spawn_blocking(move || crate::catalog::Catalog::load(dir, known)).await
            })
            .await?;
        Ok(catalog.clone())
    }

    /// Pins every child workflow `wf` may start, transitively, to the
    /// definition the catalog holds now, storing each definition. A name
    /// the catalog lacks is left out: the step that starts it fails then,
    /// saying so (it may never run, behind a `when`). `None`: `wf` starts
    /// no child.
    async fn pin_children(&self, wf: &CompiledWorkflow) -> anyhow::Result<Option<Pins>> {
        let mut pins = Pins::new();
        if wf.child_workflows.is_empty() {
            return Ok(None);
        }
        let snapshot = self.catalog().await?.snapshot();
        let mut queue: Vec<String> = wf.child_workflows.iter().map(|(n, _)| n.clone()).collect();
        while let Some(name) = queue.pop() {
            if pins.contains_key(&name) {
                continue;
            }
            let Some(child) = snapshot.get(&name) else { continue };
            self.store_definition(child).await?;
            pins.insert(name, child.hash.clone());
            queue.extend(child.child_workflows.iter().map(|(n, _)| n.clone()));
        }
        Ok(Some(pins))
    }

    /// Stores a definition by hash (immutable: once per process is enough).
    async fn store_definition(&self, wf: &CompiledWorkflow) -> anyhow::Result<()> {
        if self.definitions.lock().expect("poisoned").contains_key(&wf.hash) {
            return Ok(());
        }
        self.store
            .put_definition(&Definition {
                hash: wf.hash.clone(),
                workflow: wf.name.clone(),
                file: wf.file.clone(),
                source: wf.source.clone(),
            })
            .await?;
        self.definitions.lock().expect("poisoned").insert(wf.hash.clone(), Arc::new(wf.clone()));
        Ok(())
    }

    pub fn lease(&self) -> Lease {
        Lease { now: now_ms(), duration_ms: self.opts.lease.as_millis() as i64 }
    }

    /// Stores the definition and creates a run of it. `drive_here`: lease it
    /// to this worker at once (for `run --wait`).
    pub async fn submit(
        &self,
        wf: &CompiledWorkflow,
        inputs: Value,
        trigger: Value,
        parent: Option<Parent>,
        drive_here: bool,
    ) -> anyhow::Result<Created> {
        self.submit_with(wf, inputs, trigger, parent, drive_here, SubmitKeys::default()).await
    }

    /// `submit`, deduplicated by a webhook key or a schedule tick.
    pub async fn submit_with(
        &self,
        wf: &CompiledWorkflow,
        inputs: Value,
        trigger: Value,
        parent: Option<Parent>,
        drive_here: bool,
        keys: SubmitKeys,
    ) -> anyhow::Result<Created> {
        self.store_definition(wf).await?;
        // A tree's children are pinned once, when its top run starts.
        let pins = match &parent {
            Some(p) => Some(p.pins.clone()),
            None => self.pin_children(wf).await?,
        };
        let id = uuid::Uuid::now_v7().to_string();
        let context =
            serde_json::json!({ "inputs": inputs, "run": { "id": id, "workflow": wf.name } });
        let concurrency_key =
            match (&wf.definition.concurrency, wf.templates.get("concurrency.key")) {
                (Some(_), Some(t)) => {
                    let ctx = handlebars::Context::wraps(&context)?;
                    Some(
                        super::render::render(t, &ctx)
                            .map_err(|e| anyhow::anyhow!("concurrency key: {e}"))?,
                    )
                }
                _ => None,
            };
        let skip = wf
            .definition
            .concurrency
            .as_ref()
            .is_some_and(|c| c.on_conflict == crate::model::OnConflict::Skip);
        let created = self
            .store
            .create_run(NewRun {
                id,
                workflow: wf.name.clone(),
                definition_hash: wf.hash.clone(),
                inputs,
                trigger,
                concurrency_key,
                skip_on_conflict: skip,
                parent: parent.as_ref().map(|p| (p.run.clone(), p.step.clone())),
                root: parent.map(|p| p.root),
                step_ids: wf.steps.iter().map(|s| s.id.clone()).collect(),
                lease_to: drive_here.then(|| (self.opts.worker_id.clone(), self.lease())),
                dedupe_key: keys.dedupe_key,
                schedule_tick: keys.schedule_tick,
                audit: keys.audit,
                pins,
            })
            .await?;
        if matches!(created, Created::Run(_)) {
            crate::metrics::run_started(&wf.name);
        }
        Ok(created)
    }

    /// The compiled definition a run is pinned to.
    pub async fn definition(&self, hash: &str) -> anyhow::Result<Arc<CompiledWorkflow>> {
        if let Some(wf) = self.definitions.lock().expect("poisoned").get(hash) {
            return Ok(wf.clone());
        }
        let def = self
            .store
            .definition(hash)
            .await?
            .ok_or_else(|| anyhow::anyhow!("definition {hash} is missing from the store"))?;
        // Off the runtime, on a thread of its own: a stored file is input too,
        // and nothing in it may stall the workers or take the process down.
        let workflow = def.workflow.clone();
        let compiled = tokio::task::spawn_blocking(move || {
            crate::compile::isolated(|| {
                crate::compile::compile(&def.file, &def.source, CompileEnv::default())
                    .map_err(|report| report.render(false))
            })
        })
        .await?;
        let wf = match compiled {
            Ok(Ok(wf)) => Arc::new(wf),
            Ok(Err(rendered)) => {
                return Err(Quarantine {
                    reason: format!(
                        "the stored definition of `{workflow}` does not compile (this lifeboat refuses what an older one accepted); fix the file and start a new run (`lifeboat run {workflow}`):\n{rendered}"
                    ),
                }
                .into());
            }
            Err(problem) => {
                return Err(Quarantine {
                    reason: format!("compiling the stored definition of `{workflow}`: {problem}"),
                }
                .into());
            }
        };
        self.definitions.lock().expect("poisoned").insert(hash.to_string(), wf.clone());
        Ok(wf)
    }

    /// Drives one claimed run until it finishes or suspends. A run that can
    /// never be driven (its definition does not compile, or driving it
    /// panicked) is quarantined: failed with the reason, so it is not
    /// claimed again and again, and the worker goes on with the others.
    pub async fn drive(self: &Arc<Self>, run_id: &str) -> anyhow::Result<DriveEnd> {
        use futures_util::FutureExt;
        let stop = CancellationToken::new();
        self.driving
            .lock()
            .expect("poisoned")
            .insert(run_id.to_string(), (stop.clone(), std::time::Instant::now()));
        let span = tracing::info_span!("run", run_id = %run_id);
        let result = std::panic::AssertUnwindSafe(
            async {
                match Driver::load(self.clone(), run_id, stop).await {
                    Ok(mut driver) => driver.drive().await,
                    Err(e) => Err(e),
                }
            }
            .instrument(span),
        )
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            Err(Quarantine { reason: format!("driving the run panicked: {}", panic_text(&*panic)) }
                .into())
        });
        self.driving.lock().expect("poisoned").remove(run_id);
        if let Err(e) = &result
            && let Some(q) = e.downcast_ref::<Quarantine>()
        {
            tracing::error!(run = %run_id, reason = %q.reason, "Run quarantined: it is failed and will not be driven again.");
            if let Err(e) = self.quarantine(run_id, &q.reason).await {
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
        result
    }

    /// Fails a run that cannot be driven, with the reason, and hands it back
    /// in the same commit (under this worker's lease, like any transition).
    async fn quarantine(&self, run_id: &str, reason: &str) -> anyhow::Result<()> {
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
        }
        Ok(())
    }

    /// Renews leases; stops drivers of runs no longer held.
    async fn heartbeat(&self) {
        let asked = std::time::Instant::now();
        match self.store.renew(&self.opts.worker_id, self.lease()).await {
            Ok(held) => {
                *self.last_renewed.lock().expect("poisoned") = asked;
                let driving = self.driving.lock().expect("poisoned");
                for (run, (stop, since)) in driving.iter() {
                    // A driver started after the renewal was asked for is not in `held`.
                    if *since < asked && !held.contains(run) {
                        tracing::warn!(run = %run, "Lease lost; stopping this run's steps.");
                        stop.cancel();
                    }
                }
            }
            Err(e) if self.database_grace_left() => {
                tracing::warn!(error = %e, "Lease renewal failed; retrying (the database may be restarting).");
            }
            Err(e) => {
                // Cannot prove we hold anything: stop before the lease can expire.
                tracing::error!(error = %e, "Lease renewal failed for half a lease; stopping all runs.");
                for (stop, _) in self.driving.lock().expect("poisoned").values() {
                    stop.cancel();
                }
            }
        }
    }

    /// True while a database outage may still be ridden out: less than half
    /// a lease since the last successful renewal.
    pub(crate) fn database_grace_left(&self) -> bool {
        self.last_renewed.lock().expect("poisoned").elapsed() < self.opts.lease / 2
    }

    /// The worker loop: claim due runs and drive them, until `shutdown`.
    /// `only`: drive just this run tree (`run --wait`), and return when its
    /// root run has finished.
    pub async fn work(
        self: &Arc<Self>,
        shutdown: CancellationToken,
        only: Option<String>,
    ) -> anyhow::Result<()> {
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
        let mut tasks = tokio::task::JoinSet::new();
        let wake = Arc::new(tokio::sync::Notify::new());
        // `run --wait` created its run already leased to us: drive it at once.
        if let Some(root) = &only
            && let Some(run) = self.store.run(root).await?
            && run.lease_owner.as_deref() == Some(self.opts.worker_id.as_str())
        {
            self.spawn_drive(&mut tasks, root.clone(), wake.clone());
        }
        let result = loop {
            if shutdown.is_cancelled() {
                break Ok(());
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
            let claimed_any = !claimed.is_empty();
            for run_id in claimed {
                if self.driving.lock().expect("poisoned").contains_key(&run_id) {
                    continue;
                }
                self.spawn_drive(&mut tasks, run_id, wake.clone());
            }
            while let Some(done) = tasks.try_join_next() {
                if let Err(e) = done {
                    tracing::error!(error = %e, "A run driver panicked.");
                }
            }
            if !claimed_any {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(self.opts.poll) => {}
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
            for (stop, _) in self.driving.lock().expect("poisoned").values() {
                stop.cancel();
            }
            while tasks.join_next().await.is_some() {}
        }
        beat.abort();
        result
    }

    fn spawn_drive(
        self: &Arc<Self>,
        tasks: &mut tokio::task::JoinSet<()>,
        run_id: String,
        wake: Arc<tokio::sync::Notify>,
    ) {
        let engine = self.clone();
        tasks.spawn(async move {
            if let Err(e) = engine.drive(&run_id).await {
                tracing::error!(run = %run_id, error = %format!("{e:#}"), "Driving the run failed.");
            }
            wake.notify_one();
        });
    }

    /// Waits until `run_id` has finished, driving it here; returns its status.
    pub async fn run_to_end(self: &Arc<Self>, run_id: &str) -> anyhow::Result<RunStatus> {
        self.work(CancellationToken::new(), Some(run_id.to_string())).await?;
        Ok(self.store.run(run_id).await?.map(|r| r.status).unwrap_or(RunStatus::Failed))
    }

    pub(crate) fn emit(&self, event: EventRecord) {
        let _ = self.progress.send(event);
    }
}
