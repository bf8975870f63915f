//! Read commands: `runs`, `show`, `logs`, `pending`. `--json` prints one document.
//! Text that steps or channels produced is printed through `crate::text`:
//! control characters visible, captured output behind a gutter.

use std::io::Write;
use std::process::ExitCode;

use serde_json::{Value, json};

use super::progress::human_ms;
use super::{Ctx, input_error};
use crate::exec::people::{Awaiting, GateView};
use crate::store::{RunFilter, RunRecord, RunStatus, StepRecord};
use crate::text::inline;
use crate::views::{RunDocument, RunView, Time};

#[derive(Debug, clap::Args)]
pub struct RunsArgs {
    #[arg(long)]
    pub status: Option<String>,
    #[arg(long, add = clap_complete::ArgValueCompleter::new(super::shell::workflow_names))]
    pub workflow: Option<String>,
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Only runs older than this run (its id or a unique prefix): the next
    /// page after a page that ended with it.
    #[arg(long, value_name = "RUN")]
    pub before: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    pub run: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    pub run: String,
    pub step: Option<String>,
    /// Keep printing new events until the run finishes.
    #[arg(long, short)]
    pub follow: bool,
}

#[derive(Debug, clap::Args)]
pub struct WorkersArgs {
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct PendingArgs {
    #[arg(long)]
    pub json: bool,
}

fn rfc3339(ms: Option<i64>) -> Value {
    json!(Time(ms))
}

pub async fn print_run_json(ctx: &Ctx, run_id: &str) -> anyhow::Result<()> {
    let doc = RunDocument::load(ctx.store.as_ref(), run_id).await?;
    outln!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}

pub async fn runs(ctx: &Ctx, args: RunsArgs) -> anyhow::Result<ExitCode> {
    let status = match &args.status {
        Some(s) => Some(RunStatus::parse(s).ok_or_else(|| {
            input_error(format!("unknown status `{s}`: queued, running, waiting, succeeded, failed, rolling_back, rolled_back, rollback_failed, cancelled"))
        })?),
        None => None,
    };
    let before = match &args.before {
        Some(run) => Some(ctx.store.resolve_run_id(run).await?),
        None => None,
    };
    let runs = ctx
        .store
        .runs(&RunFilter {
            status,
            workflow: args.workflow.clone(),
            limit: Some(args.limit),
            before,
            ..RunFilter::default()
        })
        .await?;
    let printed = print_runs(&mut std::io::stdout().lock(), &runs, args.json);
    match printed {
        // A reader that stopped early (`lifeboat runs | head`) is not a failure.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e.into()),
        Ok(()) => Ok(ExitCode::SUCCESS),
    }
}

/// The runs as a table (or one JSON document), written to `out`.
fn print_runs(out: &mut impl Write, runs: &[RunRecord], json: bool) -> std::io::Result<()> {
    if json {
        let views: Vec<RunView> = runs.iter().map(RunView::from).collect();
        serde_json::to_writer_pretty(&mut *out, &views)?;
        return writeln!(out);
    }
    if runs.is_empty() {
        return writeln!(out, "no runs");
    }
    writeln!(
        out,
        "{:<36}  {:<18}  {:<15}  {:<5}  {:<24}  DURATION",
        "RUN", "WORKFLOW", "STATUS", "MODE", "STARTED"
    )?;
    for r in runs {
        let started = Time(r.started_at.or(Some(r.created_at))).text();
        let duration = match (r.started_at, r.finished_at) {
            (Some(s), Some(f)) => human_ms(f - s),
            (Some(s), None) => format!("{} so far", human_ms(crate::store::now_ms() - s)),
            _ => "-".into(),
        };
        writeln!(
            out,
            "{:<36}  {:<18}  {:<15}  {:<5}  {:<24}  {duration}",
            r.id,
            r.workflow,
            r.status.as_str(),
            r.mode.as_str(),
            started.as_deref().unwrap_or("-")
        )?;
    }
    out.flush()
}

pub async fn show(ctx: &Ctx, args: ShowArgs) -> anyhow::Result<ExitCode> {
    let run_id = ctx.store.resolve_run_id(&args.run).await?;
    if args.json {
        print_run_json(ctx, &run_id).await?;
    } else {
        print_summary(ctx, &run_id).await?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A human summary: run line, then a step table.
pub async fn print_summary(ctx: &Ctx, run_id: &str) -> anyhow::Result<()> {
    let RunDocument { run, steps, attempts, notifications, .. } =
        RunDocument::load(ctx.store.as_ref(), run_id).await?;
    let took = match (run.started_at, run.finished_at) {
        (Some(s), Some(f)) => format!(" in {}", human_ms(f - s)),
        _ => String::new(),
    };
    let mode = match (run.mode, &run.scenario) {
        (crate::store::RunMode::Live, _) => String::new(),
        (_, Some(scenario)) => format!(" (drill, scenario {scenario})"),
        (_, None) => " (drill)".into(),
    };
    outln!("\nrun {} of {}{mode}: {}{took}", run.id, run.workflow, run.status);
    outln!("  trace: {}", crate::telemetry::trace_id(&run.id));
    if let Some(e) = &run.error {
        outln!("  error: {}", inline(e));
    }
    outln!("  {:<24} {:<12} {:>8} {:>10}  NOTE", "STEP", "STATUS", "ATTEMPTS", "DURATION");
    for s in &steps {
        let n = attempts
            .iter()
            .filter(|a| a.step_id == s.step_id && a.phase == crate::store::Phase::Forward)
            .count();
        let duration = match (s.started_at, s.finished_at) {
            (Some(a), Some(b)) => human_ms(b - a),
            _ => "-".into(),
        };
        let note = inline(s.error.as_deref().unwrap_or("").lines().next().unwrap_or(""));
        outln!("  {:<24} {:<12} {:>8} {:>10}  {note}", s.step_id, s.status.as_str(), n, duration);
    }
    if let Some(outputs) =
        run.outputs.as_ref().filter(|o| o.as_object().is_some_and(|m| !m.is_empty()))
    {
        outln!("  outputs: {}", inline(&outputs.to_string()));
    }
    if let Some(verdict) = &run.verdict {
        super::drill::print_verdict(verdict);
    }
    if !notifications.is_empty() {
        outln!("  notifications:");
        for n in &notifications {
            let how = match (&n.detail, &n.last_error) {
                (Some(d), _) if n.status == crate::store::OutboxStatus::Delivered => d.clone(),
                (_, Some(e)) => e.lines().next().unwrap_or("").to_string(),
                _ => String::new(),
            };
            outln!(
                "    {:<20} {:<18} {:<10} {:>2}x  {}",
                n.event,
                n.channel,
                n.status.as_str(),
                n.attempts,
                inline(&how)
            );
        }
    }
    Ok(())
}

pub async fn logs(ctx: &Ctx, args: LogsArgs) -> anyhow::Result<ExitCode> {
    let run_id = ctx.store.resolve_run_id(&args.run).await?;
    let mut after = 0;
    let mut printed_attempts = std::collections::HashSet::new();
    loop {
        for e in ctx.store.events(&run_id, after).await? {
            after = e.id;
            if args.step.as_deref().is_some_and(|s| e.step_id.as_deref() != Some(s)) {
                continue;
            }
            let at = rfc3339(Some(e.at));
            let data = e.data.as_ref().map(|d| format!(" {d}")).unwrap_or_default();
            let line = format!(
                "{} {:<20} {}{data}",
                at.as_str().unwrap_or(""),
                e.kind,
                e.step_id.as_deref().unwrap_or("-")
            );
            outln!("{}", inline(&line));
        }
        for a in ctx.store.attempts(&run_id).await? {
            if args.step.as_deref().is_some_and(|s| a.step_id != s) || a.finished_at.is_none() {
                continue;
            }
            if !printed_attempts.insert((a.step_id.clone(), a.phase, a.n)) {
                continue;
            }
            for (name, text) in [("stdout", &a.stdout), ("stderr", &a.stderr)] {
                if let Some(text) = text.as_ref().filter(|t| !t.is_empty()) {
                    // Only lifeboat's headers start a line; output is behind the gutter.
                    outln!("--- {} attempt {} ({}) {name}", a.step_id, a.n, a.phase);
                    out!("{}", crate::text::gutter(text));
                }
            }
        }
        let done = ctx.store.run(&run_id).await?.is_none_or(|r| r.status.is_terminal());
        if !args.follow || done {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// What a person must decide on this step, if it is a gate (an unreadable
/// state is listed by its status alone).
fn awaiting(step: &StepRecord) -> Option<Awaiting> {
    GateView::read(step.state.as_ref()).ok()?.awaiting
}

pub async fn pending(ctx: &Ctx, args: PendingArgs) -> anyhow::Result<ExitCode> {
    let waiting: Vec<(RunRecord, StepRecord)> = ctx
        .store
        .pending_people()
        .await?
        .into_iter()
        .filter(|(_, s)| s.status == crate::store::StepStatus::NeedsHuman || awaiting(s).is_some())
        .collect();
    if args.json {
        let doc: Vec<Value> = waiting
            .iter()
            .map(|(r, s)| json!({"run": r.id, "workflow": r.workflow, "step": s.step_id, "status": s.status, "waiting_for": awaiting(s).map_or("decision", Awaiting::as_str), "error": s.error}))
            .collect();
        outln!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    if waiting.is_empty() {
        outln!("nothing is waiting for people");
    }
    for (run, step) in &waiting {
        let what = awaiting(step).map_or("a decision", Awaiting::described);
        outln!(
            "{}  {:<18} {:<20} waiting for {}",
            run.id,
            run.workflow,
            step.step_id,
            inline(what)
        );
        if let Some(e) = &step.error {
            outln!("    {}", inline(e));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Workers that sent a heartbeat within the last lease period, with the runs they hold.
pub async fn workers(ctx: &Ctx, args: WorkersArgs) -> anyhow::Result<ExitCode> {
    let now = crate::store::now_ms();
    let lease_ms = ctx.config.executor.lease.as_millis() as i64;
    let workers = ctx.store.workers(now - lease_ms).await?;
    if args.json {
        let doc: Vec<Value> = workers
            .iter()
            .map(|w| {
                json!({
                    "id": w.id, "host": w.host, "pid": w.pid,
                    "started_at": rfc3339(Some(w.started_at)),
                    "heartbeat_at": rfc3339(Some(w.heartbeat_at)),
                    "leases": w.leases.iter().map(|(run, until)| json!({"run": run, "expires_at": rfc3339(Some(*until))})).collect::<Vec<_>>(),
                })
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    if workers.is_empty() {
        outln!("no live workers (none sent a heartbeat in the last {})", human_ms(lease_ms));
        return Ok(ExitCode::SUCCESS);
    }
    outln!("{:<40} {:<16} {:>8} {:>14} {:>6}", "WORKER", "HOST", "PID", "HEARTBEAT", "RUNS");
    for w in &workers {
        outln!(
            "{:<40} {:<16} {:>8} {:>14} {:>6}",
            w.id,
            w.host,
            w.pid,
            format!("{} ago", human_ms(now - w.heartbeat_at)),
            w.leases.len()
        );
        for (run, until) in &w.leases {
            outln!("    {run}  lease for {}", human_ms(until - now));
        }
    }
    Ok(ExitCode::SUCCESS)
}
