//! Operator controls: `cancel`, `pause`, `resume`, `skip`, `mark`, checked
//! and queued by `exec::controls` (the API's controls go through the same).

use std::process::ExitCode;

use super::{Ctx, input_error};
use crate::exec::controls::{self, Control, ControlError};

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

async fn send(ctx: &Ctx, run: &str, control: Control) -> anyhow::Result<ExitCode> {
    let target = match &control {
        Control::Skip { step } | Control::Mark { step, .. } => format!(" step {step} of"),
        _ => String::new(),
    };
    let queued = controls::request(ctx.store.as_ref(), run, control, &ctx.actor(), "cli")
        .await
        .map_err(|e| match e {
            ControlError::Store(e) => anyhow::Error::from(e),
            refused => input_error(refused.to_string()),
        })?;
    outln!(
        "{}{target} run {}: requested (applied by the worker driving it)",
        queued.requested.replace('_', " "),
        queued.run_id
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn cancel(ctx: &Ctx, args: CancelArgs) -> anyhow::Result<ExitCode> {
    send(ctx, &args.run, Control::Cancel { rollback: !args.no_rollback }).await
}

pub async fn pause(ctx: &Ctx, args: RunArg, pause: bool) -> anyhow::Result<ExitCode> {
    send(ctx, &args.run, if pause { Control::Pause } else { Control::Resume }).await
}

pub async fn skip(ctx: &Ctx, args: StepArg) -> anyhow::Result<ExitCode> {
    send(ctx, &args.run, Control::Skip { step: args.step }).await
}

pub async fn mark(ctx: &Ctx, args: MarkArgs) -> anyhow::Result<ExitCode> {
    let succeeded = matches!(args.outcome, Mark::Succeeded);
    send(ctx, &args.run, Control::Mark { step: args.step, succeeded }).await
}
