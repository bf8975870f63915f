//! Operator controls: `cancel`, `pause`, `resume`, `skip`, `mark`. Each is a
//! request recorded in the store (with who asked) that the run's worker applies.

use std::process::ExitCode;

use serde_json::json;

use super::{Ctx, input_error};
use crate::store::{NewRequest, RequestKind, RunRecord, StepStatus};

#[derive(Debug, clap::Args)]
pub struct RunArg {
    pub run: String,
}

#[derive(Debug, clap::Args)]
pub struct CancelArgs {
    pub run: String,
    /// Do not run the rollbacks of succeeded steps.
    #[arg(long)]
    pub no_rollback: bool,
}

#[derive(Debug, clap::Args)]
pub struct StepArg {
    pub run: String,
    pub step: String,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Mark {
    Succeeded,
    Failed,
}

#[derive(Debug, clap::Args)]
pub struct MarkArgs {
    pub run: String,
    pub step: String,
    #[arg(value_enum)]
    pub outcome: Mark,
}

async fn active_run(ctx: &Ctx, run: &str) -> anyhow::Result<RunRecord> {
    let id = ctx.store.resolve_run_id(run).await?;
    let run =
        ctx.store.run(&id).await?.ok_or_else(|| crate::store::StoreError::NotFound(id.clone()))?;
    if run.status.is_terminal() {
        return Err(input_error(format!(
            "run {} has already ended ({}); use `lifeboat retry {} [--from STEP]` to run part of it again",
            run.id, run.status, run.id
        )));
    }
    Ok(run)
}

async fn send(
    ctx: &Ctx,
    run: &RunRecord,
    kind: RequestKind,
    step: Option<String>,
    audit: serde_json::Value,
) -> anyhow::Result<ExitCode> {
    ctx.store
        .request(NewRequest {
            run_id: run.id.clone(),
            kind,
            step_id: step.clone(),
            data: None,
            actor: ctx.actor(),
        })
        .await?;
    super::audit::record(ctx, kind.as_str(), Some(&run.id), step.as_deref(), audit).await?;
    let target = step.map(|s| format!(" step {s} of")).unwrap_or_default();
    outln!(
        "{}{target} run {}: requested (applied by the worker driving it)",
        kind.as_str().replace('_', " "),
        run.id
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn cancel(ctx: &Ctx, args: CancelArgs) -> anyhow::Result<ExitCode> {
    let run = active_run(ctx, &args.run).await?;
    let kind = if args.no_rollback { RequestKind::CancelNoRollback } else { RequestKind::Cancel };
    send(ctx, &run, kind, None, json!({"rollback": !args.no_rollback})).await
}

pub async fn pause(ctx: &Ctx, args: RunArg, pause: bool) -> anyhow::Result<ExitCode> {
    let run = active_run(ctx, &args.run).await?;
    let kind = if pause { RequestKind::Pause } else { RequestKind::Resume };
    send(ctx, &run, kind, None, json!({})).await
}

async fn step_of(ctx: &Ctx, run: &RunRecord, step: &str) -> anyhow::Result<StepStatus> {
    let steps = ctx.store.steps(&run.id).await?;
    match steps.iter().find(|s| s.step_id == step) {
        Some(s) => Ok(s.status),
        None => {
            let ids: Vec<&str> = steps.iter().map(|s| s.step_id.as_str()).collect();
            let hint = crate::suggest::did_you_mean(step, ids.iter().copied())
                .unwrap_or_else(|| format!("steps: {}", ids.join(", ")));
            Err(input_error(format!("run {} has no step `{step}` ({hint})", run.id)))
        }
    }
}

pub async fn skip(ctx: &Ctx, args: StepArg) -> anyhow::Result<ExitCode> {
    let run = active_run(ctx, &args.run).await?;
    let status = step_of(ctx, &run, &args.step).await?;
    if matches!(status, StepStatus::Succeeded | StepStatus::Skipped | StepStatus::RolledBack) {
        return Err(input_error(format!("step {} is already {status}", args.step)));
    }
    let audit = json!({"step": args.step, "was": status.as_str()});
    send(ctx, &run, RequestKind::Skip, Some(args.step), audit).await
}

pub async fn mark(ctx: &Ctx, args: MarkArgs) -> anyhow::Result<ExitCode> {
    let run = active_run(ctx, &args.run).await?;
    let status = step_of(ctx, &run, &args.step).await?;
    if status == StepStatus::Succeeded {
        return Err(input_error(format!("step {} already succeeded", args.step)));
    }
    let kind = match args.outcome {
        Mark::Succeeded => RequestKind::MarkSucceeded,
        Mark::Failed => RequestKind::MarkFailed,
    };
    let outcome = match args.outcome {
        Mark::Succeeded => "succeeded",
        Mark::Failed => "failed",
    };
    let audit = json!({"step": args.step, "outcome": outcome, "was": status.as_str()});
    send(ctx, &run, kind, Some(args.step), audit).await
}
