//! `Runtime`: what driving a run needs from the worker it runs in — the
//! store, the options, secrets and their redactor, compiled definitions,
//! the child-workflow catalog, live progress, and whether the worker is
//! draining or riding out a database outage.
//!
//! It sits below both `engine` (the worker loop: claiming, heartbeats,
//! stopping drivers) and `driver` (one run's state machine), so neither
//! imports the other's module: the engine holds a `Runtime` and hands
//! drivers an `Arc<Runtime>`; a driver never sees the engine.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::{ExecError, ExecResult};
use crate::compile::{CompileEnv, CompiledWorkflow};
use crate::store::{Created, Definition, EventRecord, Lease, NewRun, Pins, Store, now_ms};

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
    /// Named connections (`sql`, `postgres` steps): name -> URL.
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

pub fn new_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!(
        "{}-{}-{}",
        host.trim(),
        std::process::id(),
        &uuid::Uuid::now_v7().simple().to_string()[20..]
    )
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
    /// `drill`: a rehearsal, with its scenario and its `exec::drill::DrillSpec`.
    pub mode: crate::store::RunMode,
    pub scenario: Option<String>,
    pub drill: Option<Value>,
}

/// Shared by every driver of this worker.
pub struct Runtime {
    pub store: Arc<dyn Store>,
    pub opts: EngineOptions,
    definitions: Mutex<HashMap<String, Arc<CompiledWorkflow>>>,
    /// Secret values (from `LIFEBOAT_SECRET_*`), by name.
    pub secrets: Vec<(String, String)>,
    /// `secrets` and their encoded forms, compiled once for every redaction.
    pub redactor: Arc<lifeboat_steps::Redactor>,
    /// Every event this worker commits, for live progress.
    pub progress: broadcast::Sender<EventRecord>,
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

impl Runtime {
    pub fn new(store: Arc<dyn Store>, opts: EngineOptions) -> Self {
        let secrets: Vec<(String, String)> = std::env::vars()
            .filter_map(|(k, v)| k.strip_prefix("LIFEBOAT_SECRET_").map(|n| (n.to_string(), v)))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        let redactor = Arc::new(lifeboat_steps::Redactor::new(secrets.iter().map(|(_, v)| v)));
        let (progress, _) = broadcast::channel(4096);
        Runtime {
            store,
            opts,
            definitions: Mutex::new(HashMap::new()),
            secrets,
            redactor,
            progress,
            draining: CancellationToken::new(),
            last_renewed: Mutex::new(std::time::Instant::now()),
            catalog: tokio::sync::OnceCell::new(),
        }
    }

    /// Shares `serve`'s catalog (kept current by its watcher) instead of
    /// loading one of our own. Call before the first run is submitted.
    pub fn use_catalog(&self, catalog: Arc<crate::catalog::Catalog>) {
        let _ = self.catalog.set(catalog);
    }

    /// The catalog child workflows are resolved through.
    pub async fn catalog(&self) -> ExecResult<Arc<crate::catalog::Catalog>> {
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
    async fn pin_children(&self, wf: &CompiledWorkflow) -> ExecResult<Option<Pins>> {
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
    async fn store_definition(&self, wf: &CompiledWorkflow) -> ExecResult<()> {
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
    ) -> ExecResult<Created> {
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
    ) -> ExecResult<Created> {
        let run = self.new_run(wf, inputs, trigger, parent, drive_here, keys).await?;
        let created = self.store.create_run(run).await?;
        if matches!(created, Created::Run(_)) {
            crate::metrics::run_started(&wf.name);
        }
        Ok(created)
    }

    /// The run `submit_with` creates, with its definition stored and its
    /// children pinned; a child run is created by its parent's commit instead
    /// (`Change::CreateRun`), so that it exists exactly when the parent's
    /// step says so.
    pub async fn new_run(
        &self,
        wf: &CompiledWorkflow,
        inputs: Value,
        trigger: Value,
        parent: Option<Parent>,
        drive_here: bool,
        keys: SubmitKeys,
    ) -> ExecResult<NewRun> {
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
                    let ctx = handlebars::Context::wraps(&context).map_err(|e| {
                        ExecError::Render { what: "concurrency key", message: e.to_string() }
                    })?;
                    Some(super::render::render(t, &ctx).map_err(|message| ExecError::Render {
                        what: "concurrency key",
                        message,
                    })?)
                }
                _ => None,
            };
        let skip = wf
            .definition
            .concurrency
            .as_ref()
            .is_some_and(|c| c.on_conflict == crate::model::OnConflict::Skip);
        Ok(NewRun {
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
            mode: keys.mode,
            scenario: keys.scenario,
            drill: keys.drill,
        })
    }

    /// The compiled definition a run is pinned to.
    pub async fn definition(&self, hash: &str) -> ExecResult<Arc<CompiledWorkflow>> {
        if let Some(wf) = self.definitions.lock().expect("poisoned").get(hash) {
            return Ok(wf.clone());
        }
        let def = self
            .store
            .definition(hash)
            .await?
            .ok_or_else(|| ExecError::DefinitionMissing(hash.to_string()))?;
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
                return Err(ExecError::Quarantine(format!(
                    "the stored definition of `{workflow}` does not compile (this lifeboat refuses what an older one accepted); fix the file and start a new run (`lifeboat run {workflow}`):\n{rendered}"
                )));
            }
            Err(problem) => {
                return Err(ExecError::Quarantine(format!(
                    "compiling the stored definition of `{workflow}`: {problem}"
                )));
            }
        };
        self.definitions.lock().expect("poisoned").insert(hash.to_string(), wf.clone());
        Ok(wf)
    }

    /// True while a database outage may still be ridden out: less than half
    /// a lease since the last successful renewal.
    pub fn database_grace_left(&self) -> bool {
        self.last_renewed.lock().expect("poisoned").elapsed() < self.opts.lease / 2
    }

    /// Records that leases were renewed at `at` (see `database_grace_left`).
    pub fn renewed(&self, at: std::time::Instant) {
        *self.last_renewed.lock().expect("poisoned") = at;
    }

    pub(crate) fn emit(&self, event: EventRecord) {
        let _ = self.progress.send(event);
    }
}
