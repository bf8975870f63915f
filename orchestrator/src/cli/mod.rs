//! The command line: argument types (clap derive) and dispatch. Commands
//! live one per module; `anyhow` is used only here and in `main.rs`.

/// `println!` for command output: see `out.rs` (a closed pipe is no panic).
macro_rules! outln {
    () => {
        $crate::cli::out::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::cli::out::line(format_args!($($arg)*))
    };
}

/// `print!` for command output: see `out.rs`.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::out::text(format_args!($($arg)*))
    };
}

mod audit;
mod control;
mod doctor;
mod drill;
mod error;
mod evidence;
mod graph;
mod init;
pub(crate) mod inspect;
mod out;
mod people;
mod plan;
mod progress;
mod prune;
mod report;
mod run;
mod schedules;
mod schema;
mod serve;
mod shell;
pub(crate) mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use crate::app::Ctx;
use crate::exec::people::Decision;
pub use error::{InputError, NotFound, exit_code, input_error, not_found};

/// `--version`: the crate version, the commit it was built from and the
/// build date (see build.rs).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("LIFEBOAT_GIT_COMMIT"),
    ", built ",
    env!("LIFEBOAT_BUILD_DATE"),
    ")"
);

#[derive(Debug, Parser)]
#[command(
    name = "lifeboat",
    version = VERSION,
    about = "Workflow-driven disaster-recovery orchestrator"
)]
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
    /// Waves, worst-case critical path vs the RTO, people, unprotected mutations;
    /// from the database: measured recovery times (p50/p95) and drill freshness.
    Plan(plan::Args),
    /// Print the JSON Schema of the workflow format.
    Schema(schema::Args),
    /// Scaffold a lifeboat.toml and a starter workflow.
    Init(init::Args),
    /// Start a run; with --wait, execute it here with live progress.
    Run(run::Args),
    /// Run the failed part of a run again, optionally with new inputs.
    Retry(run::RetryArgs),
    /// Rehearse a workflow: a drill run, with a scenario's or given faults.
    Drill(drill::Args),
    /// Drill history: scenario, verdict, recovery time against the RTO.
    Drills(drill::HistoryArgs),
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
    /// Delete ended runs past their retention (or --older-than), with --dry-run to count.
    Prune(prune::Args),
    /// The worker loop, the HTTP API, webhooks, schedules and notifications.
    Serve(serve::Args),
    /// Is this deployment ready? Config, env, database, workflows, channels,
    /// connections, programs, clock and replicas: pass/warn/fail with fixes.
    Doctor(doctor::Args),
    /// Apply database migrations (also done on every start).
    Migrate,
    /// Print the Tab-completion script for bash, zsh or fish.
    Completions(shell::CompletionsArgs),
    /// Write the man pages (lifeboat.1 and one per command) into a directory.
    Man(shell::ManArgs),
}

/// Exit codes (docs/exit-codes.md): 0 ok, 1 failed run or invalid input,
/// 2 usage or internal error, 3 not found, 4 database unavailable.
pub fn main() -> ExitCode {
    shell::complete_if_asked();
    let cli = Cli::parse();
    let global = cli.global;
    let result = match cli.command {
        Command::Validate(args) => validate::run(&global, args),
        Command::Graph(args) => graph::run(&global, args),
        Command::Plan(args) => plan::run(&global, args),
        Command::Schema(args) => schema::run(args),
        Command::Init(args) => init::run(args),
        Command::Completions(args) => shell::completions(args),
        Command::Man(args) => shell::man(args),
        Command::Doctor(args) => doctor::run(&global, args),
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
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    // Traces only from the commands that drive runs or take webhooks.
    let traces = matches!(
        command,
        Command::Run(_) | Command::Retry(_) | Command::Drill(_) | Command::Serve(_)
    );
    let telemetry = if traces { start_telemetry(&global, runtime.handle()) } else { Ok(false) };
    init_tracing(global.log_format);
    telemetry?;
    let result = runtime.block_on(async move {
        let ctx = match command {
            // A replica may start while its database is still coming up.
            Command::Serve(_) => Ctx::open_patiently(&global.options()).await?,
            _ => Ctx::open(&global.options()).await?,
        };
        match command {
            Command::Run(args) => run::run(&ctx, args).await,
            Command::Retry(args) => run::retry(&ctx, args).await,
            Command::Drill(args) => drill::run(&ctx, args).await,
            Command::Drills(args) => drill::history(&ctx, args).await,
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
            Command::Prune(args) => prune::run(&ctx, args).await,
            Command::Migrate => {
                outln!("migrations applied to {}", crate::app::redact_url(&ctx.database_url));
                Ok(ExitCode::SUCCESS)
            }
            Command::Validate(_)
            | Command::Graph(_)
            | Command::Plan(_)
            | Command::Schema(_)
            | Command::Init(_)
            | Command::Completions(_)
            | Command::Doctor(_)
            | Command::Man(_) => {
                unreachable!("handled synchronously")
            }
        }
    });
    runtime.block_on(crate::telemetry::flush());
    result
}

/// Starts exporting traces when `[telemetry]` or the `OTEL_*` variables
/// name an endpoint. A configuration that does not load is left for
/// `Ctx::open` to report.
fn start_telemetry(
    global: &GlobalArgs,
    runtime: &tokio::runtime::Handle,
) -> Result<bool, crate::telemetry::TelemetryError> {
    match crate::app::load_config(global.config.as_deref()) {
        Ok(loaded) => crate::telemetry::start(&loaded.config.telemetry, runtime.clone()),
        Err(_) => Ok(false),
    }
}

/// Logs go to stderr; `RUST_LOG` (or `LIFEBOAT_LOG`) sets the level. With
/// traces on, the trace layer sits beside the log layer, each with its own
/// filter; without, the subscriber is exactly the log layer.
fn init_tracing(format: LogFormat) {
    let filter = std::env::var("LIFEBOAT_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "warn".into());
    if let Some(traces) = crate::telemetry::layer() {
        use tracing_subscriber::Layer as _;
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
        let logs = match format {
            LogFormat::Text => logs.boxed(),
            LogFormat::Json => logs.json().flatten_event(true).with_current_span(true).boxed(),
        };
        let _ = tracing_subscriber::registry()
            .with(logs.with_filter(tracing_subscriber::EnvFilter::new(filter)))
            .with(traces)
            .try_init();
        return;
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
    };
}

/// Whether to colour output written to stderr.
fn stderr_is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

impl GlobalArgs {
    /// What opening a [`Ctx`] needs from the command line.
    pub fn options(&self) -> crate::app::Options {
        crate::app::Options {
            config: self.config.clone(),
            database_url: self.database_url.clone(),
            workflows: self.workflows.clone(),
        }
    }
}

/// The configuration `--config` (or `./lifeboat.toml`) names.
fn load_config(global: &GlobalArgs) -> anyhow::Result<crate::app::Loaded> {
    Ok(crate::app::load_config(global.config.as_deref())?)
}
