//! The command line: argument types (clap derive) and dispatch. Commands
//! live one per module; `anyhow` is used only here and in `main.rs`.

mod audit;
mod control;
mod graph;
mod init;
pub(crate) mod inspect;
mod people;
mod plan;
mod progress;
mod report;
mod run;
mod schedules;
mod schema;
mod serve;
pub(crate) mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::exec::people::Decision;

#[derive(Debug, Parser)]
#[command(name = "lifeboat", version, about = "Workflow-driven disaster-recovery orchestrator")]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Args)]
pub struct GlobalArgs {
    /// Configuration file (default: ./lifeboat.toml if present).
    #[arg(long, global = true, env = "LIFEBOAT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Database URL (default: sqlite://lifeboat.db).
    #[arg(long, global = true)]
    pub database_url: Option<String>,
    /// Directory of workflow files (default: workflows).
    #[arg(long, global = true)]
    pub workflows: Option<PathBuf>,
    /// Log format on stderr: `text` or `json` (one object per line).
    #[arg(long, global = true, value_enum, default_value = "text", env = "LIFEBOAT_LOG_FORMAT")]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Compile workflow files or directories and print every error.
    Validate(validate::Args),
    /// Draw a workflow's dependency graph (mermaid, dot or svg).
    Graph(graph::Args),
    /// Waves, worst-case critical path vs the RTO, people, unprotected mutations.
    Plan(plan::Args),
    /// Print the JSON Schema of the workflow format.
    Schema(schema::Args),
    /// Scaffold a lifeboat.toml and a starter workflow.
    Init(init::Args),
    /// Start a run; with --wait, execute it here with live progress.
    Run(run::Args),
    /// Run the failed part of a run again, optionally with new inputs.
    Retry(run::RetryArgs),
    /// List runs.
    Runs(inspect::RunsArgs),
    /// A run and its steps (status, attempts, durations).
    Show(inspect::ShowArgs),
    /// A run's timeline against its RTO (`--html FILE`: a page with an SVG timeline).
    Report(report::Args),
    /// Events and output of a run or one step.
    Logs(inspect::LogsArgs),
    /// Steps waiting for people (needs_human, approvals).
    Pending(inspect::PendingArgs),
    /// Live workers and the runs they hold leases on.
    Workers(inspect::WorkersArgs),
    /// Cancel a run (its rollbacks run unless --no-rollback).
    Cancel(control::CancelArgs),
    /// Stop scheduling new steps of a run.
    Pause(control::RunArg),
    /// Schedule a paused run's steps again.
    Resume(control::RunArg),
    /// Skip a step (break-glass; audited).
    Skip(control::StepArg),
    /// Decide a step's outcome by hand (break-glass; audited).
    Mark(control::MarkArgs),
    /// Approve a step waiting at an approval gate.
    Approve(people::Args),
    /// Reject a step waiting at an approval gate (the step fails).
    Reject(people::Args),
    /// Acknowledge an escalation (stops paging further tiers).
    Ack(people::Args),
    /// Schedule triggers: cron, time zone, catch-up, last and next ticks.
    Schedules(schedules::Args),
    /// The hash-chained audit log: `verify` it, `list` entries.
    #[command(subcommand)]
    Audit(audit::Command),
    /// Execute queued runs: the worker loop (API and webhooks come later).
    Serve(serve::Args),
    /// Apply database migrations (also done on every start).
    Migrate,
}

/// An error in what the user asked for (exit 1), as opposed to a usage or
/// internal error (exit 2).
#[derive(Debug)]
pub struct InputError(pub String);

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InputError {}

pub fn input_error(message: impl Into<String>) -> anyhow::Error {
    InputError(message.into()).into()
}

/// What the user named does not exist (exit 3, HTTP 404): a workflow, a run.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotFound(pub String);

pub fn not_found(message: impl Into<String>) -> anyhow::Error {
    NotFound(message.into()).into()
}

/// The exit code of a command that failed with `e` (docs/exit-codes.md),
/// chosen by the error's type and variant, never by its text.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    use crate::store::StoreError;
    if let Some(store) = e.downcast_ref::<StoreError>() {
        return match store {
            StoreError::NotFound(_) => 3,
            StoreError::Unavailable(_) | StoreError::SchemaBehind(_) => 4,
            StoreError::Ambiguous { .. } | StoreError::Conflict(_) | StoreError::Config(_) => 1,
            StoreError::Corrupt { .. } | StoreError::Database(_) => 2,
        };
    }
    if e.downcast_ref::<NotFound>().is_some() {
        3
    } else if e.downcast_ref::<InputError>().is_some() {
        1
    } else {
        2
    }
}

/// Exit codes (docs/exit-codes.md): 0 ok, 1 failed run or invalid input,
/// 2 usage or internal error, 3 not found, 4 database unavailable.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let global = cli.global;
    let result = match cli.command {
        Command::Validate(args) => validate::run(&global, args),
        Command::Graph(args) => graph::run(&global, args),
        Command::Plan(args) => plan::run(args),
        Command::Schema(args) => schema::run(args),
        Command::Init(args) => init::run(args),
        command => async_main(global, command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

fn async_main(global: GlobalArgs, command: Command) -> anyhow::Result<ExitCode> {
    init_tracing(global.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let ctx = match command {
            // A replica may start while its database is still coming up.
            Command::Serve(_) => Ctx::open_patiently(&global).await?,
            _ => Ctx::open(&global).await?,
        };
        match command {
            Command::Run(args) => run::run(&ctx, args).await,
            Command::Retry(args) => run::retry(&ctx, args).await,
            Command::Runs(args) => inspect::runs(&ctx, args).await,
            Command::Show(args) => inspect::show(&ctx, args).await,
            Command::Report(args) => report::run(&ctx, args).await,
            Command::Logs(args) => inspect::logs(&ctx, args).await,
            Command::Pending(args) => inspect::pending(&ctx, args).await,
            Command::Workers(args) => inspect::workers(&ctx, args).await,
            Command::Cancel(args) => control::cancel(&ctx, args).await,
            Command::Pause(args) => control::pause(&ctx, args, true).await,
            Command::Resume(args) => control::pause(&ctx, args, false).await,
            Command::Skip(args) => control::skip(&ctx, args).await,
            Command::Mark(args) => control::mark(&ctx, args).await,
            Command::Approve(args) => people::run(&ctx, args, Decision::Approve).await,
            Command::Reject(args) => people::run(&ctx, args, Decision::Reject).await,
            Command::Ack(args) => people::run(&ctx, args, Decision::Ack).await,
            Command::Serve(args) => serve::run(&ctx, args).await,
            Command::Schedules(args) => schedules::run(&ctx, args).await,
            Command::Audit(command) => audit::run(&ctx, command).await,
            Command::Migrate => {
                println!("migrations applied to {}", serve::redact_url(&ctx.database_url));
                Ok(ExitCode::SUCCESS)
            }
            Command::Validate(_)
            | Command::Graph(_)
            | Command::Plan(_)
            | Command::Schema(_)
            | Command::Init(_) => {
                unreachable!("handled synchronously")
            }
        }
    })
}

/// Logs go to stderr; `RUST_LOG` (or `LIFEBOAT_LOG`) sets the level.
fn init_tracing(format: LogFormat) {
    let filter = std::env::var("LIFEBOAT_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
    };
}

/// What every database command needs: config, store, engine options.
#[derive(Clone)]
pub struct Ctx {
    pub config: crate::config::Config,
    /// Directory that relative paths in the config are resolved against.
    pub base: PathBuf,
    pub database_url: String,
    pub store: std::sync::Arc<dyn crate::store::Store>,
    pub workflows_dir: PathBuf,
    pub known: Option<crate::compile::KnownNames>,
    /// Templates, channels and links for notifications (checked at open).
    pub notifier: std::sync::Arc<crate::exec::notifier::Notifier>,
}

impl Ctx {
    /// `open`, retried for up to a minute while the database refuses
    /// connections; bad configuration still fails at once.
    async fn open_patiently(global: &GlobalArgs) -> anyhow::Result<Ctx> {
        let started = std::time::Instant::now();
        let mut delay = std::time::Duration::from_millis(200);
        loop {
            match Ctx::open(global).await {
                Ok(ctx) => return Ok(ctx),
                Err(e)
                    if started.elapsed() < std::time::Duration::from_secs(60)
                        && e.downcast_ref::<crate::store::StoreError>()
                            .is_some_and(|e| e.is_unreachable()) =>
                {
                    eprintln!("lifeboat serve: database not reachable yet ({e}); retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(std::time::Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn open(global: &GlobalArgs) -> anyhow::Result<Ctx> {
        let Loaded { config, base, from_file } = load_config(global)?;
        let known = from_file.then(|| config.known_names(&base));
        let database_url =
            global.database_url.clone().unwrap_or_else(|| config.database_url.clone());
        let workflows_dir =
            global.workflows.clone().unwrap_or_else(|| base.join(&config.workflows_dir));
        let store = crate::store::open(&database_url).await.map_err(|e| {
            anyhow::Error::new(e)
                .context(format!("cannot open database {}", serve::redact_url(&database_url)))
        })?;
        let notifier = crate::exec::notifier::Notifier::from_config(&config, &base)
            .map_err(|e| input_error(format!("notification templates: {e:#}")))?;
        Ok(Ctx {
            notifier: std::sync::Arc::new(notifier),
            config,
            base,
            database_url,
            store,
            workflows_dir,
            known,
        })
    }

    pub fn engine(&self) -> std::sync::Arc<crate::exec::engine::Engine> {
        let exec = &self.config.executor;
        let connections = self
            .config
            .connections
            .iter()
            .filter_map(|(name, c)| std::env::var(&c.url_env).ok().map(|url| (name.clone(), url)))
            .collect();
        crate::exec::engine::Engine::new(
            self.store.clone(),
            crate::exec::engine::EngineOptions {
                lease: exec.lease.0,
                heartbeat: exec.heartbeat.0,
                poll: exec.poll.0,
                max_runs: exec.max_runs.max(1),
                connections,
                workflows_dir: self.workflows_dir.clone(),
                known: self.known.clone(),
                people: std::sync::Arc::new(crate::exec::people::Directory::from_config(
                    &self.config,
                )),
                notifier: self.notifier.clone(),
                http: lifeboat_steps::http::HttpClient::new(lifeboat_steps::http::Policy::new(
                    &self.config.http,
                )),
                ..Default::default()
            },
        )
    }

    /// The notification dispatcher, as this engine's worker.
    pub fn dispatcher(
        &self,
        engine: &crate::exec::engine::Engine,
    ) -> crate::exec::dispatcher::Dispatcher {
        crate::exec::dispatcher::Dispatcher::new(
            self.store.clone(),
            engine.opts.worker_id.clone(),
            self.config.channels.clone(),
        )
    }

    /// Who is acting, for the audit trail.
    pub fn actor(&self) -> String {
        std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "cli".into())
    }
}

/// Whether to colour output written to stderr.
fn stderr_is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// Reads and compiles one file, with names from the configuration if one is found.
/// The configuration (defaults, then `lifeboat.toml` if any, then env) and
/// the directory relative paths in it are resolved against. `from_file`
/// tells whether a file was read: only then are names checked against it.
pub struct Loaded {
    pub config: crate::config::Config,
    pub base: PathBuf,
    pub from_file: bool,
}

fn load_config(global: &GlobalArgs) -> anyhow::Result<Loaded> {
    let (config, path) = crate::config::Config::load(global.config.as_deref())?;
    let base = path.as_ref().and_then(|p| p.parent()).map(|d| d.to_path_buf()).unwrap_or_default();
    Ok(Loaded { config, base, from_file: path.is_some() })
}
