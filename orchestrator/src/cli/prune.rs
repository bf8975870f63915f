//! `lifeboat prune`: what `serve`'s pruner does, by hand, now. With
//! `--older-than` every ended run older than that goes (whatever
//! `[retention]` says); without it, `[retention]`'s own cutoffs apply.
//! `--dry-run` counts instead of deleting. A prune that deleted something
//! leaves an audit entry with its counts.

use std::process::ExitCode;

use serde_json::json;

use super::{Ctx, input_error};
use crate::model::Duration;
use crate::store::{PrunePolicy, Pruned};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Delete runs that ended longer ago than this (e.g. `30d`), whatever
    /// `[retention]` says, per-workflow overrides included. Default: the
    /// cutoffs of `[retention]`.
    #[arg(long, value_name = "DURATION")]
    pub older_than: Option<Duration>,
    /// Only run trees started by this workflow (schedule ticks and webhook
    /// signatures are then left alone).
    #[arg(long, value_name = "NAME")]
    pub workflow: Option<String>,
    /// Count what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long)]
    pub json: bool,
}

pub async fn run(ctx: &Ctx, args: Args) -> anyhow::Result<ExitCode> {
    let retention = &ctx.config.retention;
    let now = crate::store::now_ms();
    let mut policy = match args.older_than {
        Some(age) => PrunePolicy {
            cutoff: crate::retention::Keep::For(age).cutoff(now),
            // Drill evidence keeps its own retention, even by hand.
            drills: retention.drills.cutoff(now),
            ..Default::default()
        },
        None if retention.prunes() => crate::retention::policy(retention, now),
        None => {
            return Err(input_error(
                "retention is off ([retention] runs = \"never\", no workflow overrides): \
                 say how old with --older-than (e.g. --older-than 90d), or set [retention] runs",
            ));
        }
    };
    let ticks_before = if args.workflow.is_some() { None } else { policy.cutoff };
    policy.only = args.workflow.clone();
    let pass = crate::retention::Pass {
        policy: &policy,
        ticks_before,
        batch: retention.batch.0,
        dry_run: args.dry_run,
    };
    let never = tokio_util::sync::CancellationToken::new();
    let pruned = crate::retention::prune(&*ctx.store, pass, &never, |_| {}).await?;
    if !args.dry_run && !pruned.is_empty() {
        super::audit::record(
            ctx,
            "prune",
            None,
            None,
            crate::retention::audit_payload(&policy, &pruned),
        )
        .await?;
    }
    if args.json {
        let doc = json!({
            "dry_run": args.dry_run,
            "cutoff": policy.cutoff.map(rfc3339),
            "workflow": args.workflow,
            "pruned": pruned,
            "oldest_ended_at": pruned.oldest_ended_at.map(rfc3339),
            "newest_ended_at": pruned.newest_ended_at.map(rfc3339),
        });
        outln!("{doc}");
        return Ok(ExitCode::SUCCESS);
    }
    print_text(&pruned, &policy, args.dry_run);
    Ok(ExitCode::SUCCESS)
}

fn print_text(pruned: &Pruned, policy: &PrunePolicy, dry_run: bool) {
    let before = match (policy.cutoff, policy.workflows.is_empty()) {
        (Some(cutoff), true) => format!("ended before {}", rfc3339(cutoff)),
        _ => "past their retention ([retention])".into(),
    };
    if pruned.is_empty() {
        outln!("nothing to delete: no run {before}");
        return;
    }
    outln!("{} ({before}):", if dry_run { "would delete (dry run)" } else { "deleted" });
    for (table, n) in pruned.counts() {
        outln!("  {table:<20} {n}");
    }
    if let (Some(oldest), Some(newest)) = (pruned.oldest_ended_at, pruned.newest_ended_at) {
        outln!("  runs ended between {} and {}", rfc3339(oldest), rfc3339(newest));
    }
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}
