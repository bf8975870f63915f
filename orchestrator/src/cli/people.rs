//! `lifeboat approve | reject | ack RUN STEP [--comment C] [--as USER]`.
//!
//! Who decides matters (approvers, segregation of duties), so the CLI acts
//! as a configured user only with proof: `--as alice` needs alice's API
//! token in `LIFEBOAT_TOKEN`. Without `--as`, the OS login name decides.

use std::process::ExitCode;

use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Ctx, input_error};
use crate::exec::people::{DecideError, Decision, decide};

#[derive(Debug, clap::Args)]
pub struct Args {
    pub run: String,
    pub step: String,
    /// Said with the decision (kept in the step's outputs and the audit log).
    #[arg(long)]
    pub comment: Option<String>,
    /// Decide as this configured user; needs their token in LIFEBOAT_TOKEN.
    #[arg(long = "as", value_name = "USER")]
    pub as_user: Option<String>,
    #[arg(long)]
    pub json: bool,
}

/// The acting person: `--as USER` proven by token, else the OS user.
fn actor(ctx: &Ctx, as_user: Option<&str>) -> anyhow::Result<String> {
    let Some(name) = as_user else { return Ok(ctx.actor()) };
    let user = ctx
        .config
        .users
        .iter()
        .find(|u| u.name == name)
        .ok_or_else(|| input_error(format!("--as {name}: no such user in [[users]]")))?;
    let given = std::env::var("LIFEBOAT_TOKEN").map_err(|_| {
        input_error(format!("--as {name} needs {name}'s API token in LIFEBOAT_TOKEN"))
    })?;
    let expected = std::env::var(&user.token_env).map_err(|_| {
        input_error(format!("--as {name}: {} (the user's token_env) is not set", user.token_env))
    })?;
    let (a, b) = (Sha256::digest(given.as_bytes()), Sha256::digest(expected.as_bytes()));
    if !bool::from(a.ct_eq(&b)) {
        return Err(input_error(format!("--as {name}: LIFEBOAT_TOKEN is not {name}'s token")));
    }
    Ok(name.to_string())
}

pub async fn run(ctx: &Ctx, args: Args, decision: Decision) -> anyhow::Result<ExitCode> {
    let actor = actor(ctx, args.as_user.as_deref())?;
    match decide(ctx.store.as_ref(), &args.run, &args.step, &actor, decision, args.comment).await {
        Ok(run_id) => {
            let done = match decision {
                Decision::Approve => "approval",
                Decision::Reject => "rejection",
                Decision::Ack => "acknowledgement",
            };
            if args.json {
                outln!(
                    "{}",
                    json!({"run": run_id, "step": args.step, "decision": decision.name(), "by": actor})
                );
            } else {
                outln!(
                    "{done} of {run_id} step {} by {actor} queued; the run's worker applies it",
                    args.step
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(DecideError::Store(e)) => Err(e.into()),
        Err(e) => Err(input_error(e.to_string())),
    }
}
