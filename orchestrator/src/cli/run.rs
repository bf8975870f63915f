//! `lifeboat run` and `lifeboat retry`.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use serde_json::json;

use super::{Ctx, input_error};
use crate::compile::{CompileEnv, CompiledWorkflow};
use crate::exec::engine::{Engine, SubmitKeys};
use crate::exec::inputs;
use crate::store::{Created, NewAudit, NewRequest, RequestKind, RunStatus};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A workflow's declared name (in the workflows directory) or a file.
    #[arg(add = clap_complete::ArgValueCompleter::new(super::shell::workflow_names))]
    pub workflow: String,
    /// An input, `key=value`; repeat for more.
    #[arg(short = 'i', long = "input", value_name = "KEY=VALUE")]
    pub inputs: Vec<String>,
    /// Execute the run here, showing each step live; exit with its result.
    #[arg(long)]
    pub wait: bool,
    /// Print the run id (and with --wait the final run) as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct RetryArgs {
    pub run: String,
    /// Re-run this step and everything after it, even if it succeeded.
    #[arg(long)]
    pub from: Option<String>,
    #[arg(short = 'i', long = "input", value_name = "KEY=VALUE")]
    pub inputs: Vec<String>,
    #[arg(long)]
    pub wait: bool,
}

/// A workflow by file path, or by its declared `name:` in the workflows
/// directory: the same lookup the API, webhooks and child workflows use
/// (the catalog), so a file `chain.yaml` declaring `name: crashchain` is
/// `crashchain` everywhere.
pub async fn load_workflow(
    ctx: &Ctx,
    engine: &Engine,
    which: &str,
) -> anyhow::Result<Arc<CompiledWorkflow>> {
    let as_path = Path::new(which);
    if as_path.is_file() {
        return compile_file(ctx, as_path).map(Arc::new);
    }
    // The usual case, without compiling the whole directory: `NAME.yaml`
    // declaring `name: NAME`.
    for ext in ["yaml", "yml"] {
        let file = ctx.workflows_dir.join(format!("{which}.{ext}"));
        if file.is_file()
            && let Ok(wf) = compile_file(ctx, &file)
            && wf.name == which
        {
            return Ok(Arc::new(wf));
        }
    }
    let snapshot = engine.catalog().await?.snapshot();
    if let Some(wf) = snapshot.get(which) {
        return Ok(wf.clone());
    }
    // A file named after it that does not compile: show why.
    for ext in ["yaml", "yml"] {
        let file = ctx.workflows_dir.join(format!("{which}.{ext}")).display().to_string();
        if let Some((_, rendered)) = snapshot.invalid.iter().find(|(f, _)| *f == file) {
            return Err(input_error(format!("{file} is invalid:\n{rendered}")));
        }
    }
    let names: Vec<&str> = snapshot.workflows.keys().map(String::as_str).collect();
    let hint = crate::suggest::did_you_mean(which, names.iter().copied()).unwrap_or_else(|| {
        format!(
            "workflows there: {}",
            if names.is_empty() { "none".into() } else { names.join(", ") }
        )
    });
    Err(super::not_found(format!(
        "no workflow `{which}`: not a file, and no workflow declares that name in {} ({hint})",
        ctx.workflows_dir.display()
    )))
}

fn compile_file(ctx: &Ctx, path: &Path) -> anyhow::Result<CompiledWorkflow> {
    let source = crate::catalog::files::read_source(path).map_err(|d| input_error(d.message))?;
    crate::compile::compile(
        &path.display().to_string(),
        &source,
        CompileEnv { known: ctx.known.as_ref() },
    )
    .map_err(|report| {
        input_error(format!(
            "{} is invalid:\n{}",
            path.display(),
            report.render(super::stderr_is_terminal())
        ))
    })
}

pub async fn run(ctx: &Ctx, args: Args) -> anyhow::Result<ExitCode> {
    let engine = ctx.engine();
    let wf = load_workflow(ctx, &engine, &args.workflow).await?;
    let given = inputs::parse_pairs(&args.inputs, &wf.definition.inputs).map_err(input_error)?;
    let values = inputs::resolve(given, &wf.definition.inputs).map_err(|errors| {
        input_error(format!("inputs of `{}`:\n  {}", wf.name, errors.join("\n  ")))
    })?;
    let trigger = json!({"kind": "manual", "by": ctx.actor()});
    // Written in the run's own transaction: no run without its entry.
    let audit = NewAudit {
        actor: ctx.actor(),
        action: "run".into(),
        run_id: None,
        step_id: None,
        payload: json!({"workflow": wf.name, "file": wf.file, "inputs": values, "wait": args.wait}),
    };
    let keys = SubmitKeys { audit: Some(audit), ..Default::default() };
    let run_id = match engine.submit_with(&wf, values, trigger, None, args.wait, keys).await? {
        Created::Run(id) => id,
        Created::Skipped { active } | Created::Duplicate { existing: active } => {
            let message = format!(
                "not started: run {active} of `{}` holds the same concurrency key (on_conflict: skip)",
                wf.name
            );
            if args.json {
                outln!("{}", json!({"skipped": true, "active": active}));
            } else {
                outln!("{message}");
            }
            return Ok(if args.wait { ExitCode::from(1) } else { ExitCode::SUCCESS });
        }
    };
    if !args.wait {
        if args.json {
            outln!("{}", json!({"id": run_id}));
        } else {
            outln!("{run_id}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !args.json {
        outln!("run {run_id} of {} ({} steps) — executing here", wf.name, wf.steps.len());
    }
    wait_and_report(ctx, engine, &run_id, args.json).await
}

/// Drives `run_id` here with live progress; the exit code is its result.
pub(super) async fn wait_and_report(
    ctx: &Ctx,
    engine: std::sync::Arc<crate::exec::engine::Engine>,
    run_id: &str,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    let started = crate::store::now_ms();
    let printed = tokio_util::sync::CancellationToken::new();
    let printer = (!json_out).then(|| {
        let events = engine.progress.subscribe();
        tokio::spawn(super::progress::print_live(events, started, printed.clone()))
    });
    // Notifications go out while the run runs here, and the last ones
    // (its end) get a short grace period for their first attempt; what must
    // be retried stays in the outbox for `serve` to deliver.
    let stop_dispatch = tokio_util::sync::CancellationToken::new();
    let dispatch = tokio::spawn(ctx.dispatcher(&engine).run(stop_dispatch.clone()));
    let status = engine.run_to_end(run_id).await?;
    let grace = std::time::Instant::now();
    while grace.elapsed() < std::time::Duration::from_secs(10) {
        // Each message gets its first attempt here; retries are `serve`'s,
        // and so is what waits behind a retry on its channel (in order).
        let rows = ctx.store.outbox(run_id).await?;
        let open =
            |r: &&crate::store::OutboxRecord| r.status == crate::store::OutboxStatus::Pending;
        let retrying: std::collections::HashSet<&str> = rows
            .iter()
            .filter(open)
            .filter(|r| r.last_error.is_some())
            .map(|r| r.channel.as_str())
            .collect();
        let pending = rows
            .iter()
            .filter(open)
            .any(|r| r.attempts == 0 && !retrying.contains(r.channel.as_str()));
        if !pending {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    stop_dispatch.cancel();
    let _ = dispatch.await;
    // Every event was sent before its commit returned: the printer shows
    // what is queued, then ends.
    printed.cancel();
    if let Some(p) = printer {
        let _ = p.await;
    }
    if json_out {
        super::inspect::print_run_json(ctx, run_id).await?;
    } else {
        super::inspect::print_summary(ctx, run_id).await?;
    }
    Ok(if status == RunStatus::Succeeded { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

pub async fn retry(ctx: &Ctx, args: RetryArgs) -> anyhow::Result<ExitCode> {
    let run_id = ctx.store.resolve_run_id(&args.run).await?;
    let run = ctx
        .store
        .run(&run_id)
        .await?
        .ok_or_else(|| crate::store::StoreError::NotFound(run_id.to_string()))?;
    let engine = ctx.engine();
    let wf = engine.definition(&run.definition_hash).await?;
    if let Some(from) = &args.from
        && wf.step(from).is_none()
    {
        let ids: Vec<&str> = wf.steps.iter().map(|s| s.id.as_str()).collect();
        return Err(input_error(format!(
            "run {run_id} has no step `{from}`{}",
            crate::suggest::did_you_mean(from, ids.iter().copied())
                .map(|h| format!(" ({h})"))
                .unwrap_or_default()
        )));
    }
    let given = inputs::parse_pairs(&args.inputs, &wf.definition.inputs).map_err(input_error)?;
    if !given.is_empty() {
        // The merged inputs must still satisfy the declarations.
        let mut merged = run.inputs.as_object().cloned().unwrap_or_default();
        merged.extend(given.clone());
        inputs::resolve(merged, &wf.definition.inputs)
            .map_err(|errors| input_error(format!("inputs:\n  {}", errors.join("\n  "))))?;
    }
    if !run.status.is_terminal() && args.from.is_none() && given.is_empty() {
        return Err(input_error(format!(
            "run {run_id} is {}; retry a finished run, or name a step with --from",
            run.status
        )));
    }
    ctx.store
        .request(NewRequest {
            run_id: run_id.clone(),
            kind: RequestKind::Retry,
            step_id: args.from.clone(),
            data: Some(json!({"from": args.from, "inputs": given})),
            actor: ctx.actor(),
        })
        .await?;
    let audit = json!({"from": args.from, "inputs": given, "wait": args.wait});
    super::audit::record(ctx, "retry", Some(&run_id), args.from.as_deref(), audit).await?;
    if !args.wait {
        outln!("retry of {run_id} requested");
        return Ok(ExitCode::SUCCESS);
    }
    wait_and_report(ctx, engine, &run_id, false).await
}
