//! `lifeboat audit verify|list`, and `record`, which every operator command
//! calls to append its entry to the hash-chained audit log.

use std::collections::VecDeque;
use std::process::ExitCode;

use serde_json::{Value, json};

use super::Ctx;
use crate::store::audit::{AuditBreak, GENESIS, verify_chain};
use crate::store::{AuditRecord, NewAudit};

/// Entries read per query.
const PAGE: usize = 1000;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Check the hash chain of the whole audit log (exit 1 if broken).
    Verify(VerifyArgs),
    /// List audit entries, oldest first.
    List(ListArgs),
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Show only the newest N entries (that match).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Only entries about this run (an id or a unique prefix).
    #[arg(long)]
    pub run: Option<String>,
    #[arg(long)]
    pub json: bool,
}

pub async fn run(ctx: &Ctx, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Verify(args) => verify(ctx, args).await,
        Command::List(args) => list(ctx, args).await,
    }
}

/// Appends the entry of an operator action taken by `ctx.actor()`.
pub async fn record(
    ctx: &Ctx,
    action: &str,
    run_id: Option<&str>,
    step_id: Option<&str>,
    payload: Value,
) -> anyhow::Result<()> {
    ctx.store
        .audit_append(NewAudit {
            actor: ctx.actor(),
            action: action.to_string(),
            run_id: run_id.map(String::from),
            step_id: step_id.map(String::from),
            payload,
        })
        .await
        .map_err(|e| {
            anyhow::anyhow!("`{action}` was applied but its audit entry could not be written: {e}")
        })?;
    Ok(())
}

async fn verify(ctx: &Ctx, args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let mut prev = GENESIS.to_string();
    let mut expected = 1;
    let mut after = 0;
    let mut checked = 0usize;
    let broken: Option<AuditBreak> = loop {
        let page = ctx.store.audit_list(after, PAGE).await?;
        let Some(last) = page.last() else { break None };
        after = last.id;
        match verify_chain(&page, prev.clone(), expected) {
            Ok((hash, next)) => {
                checked += page.len();
                prev = hash;
                expected = next;
            }
            Err(b) => {
                // Entries of this page before the break verified.
                checked += page.iter().position(|e| e.id == b.id).unwrap_or(0);
                break Some(b);
            }
        }
    };
    match broken {
        None => {
            if args.json {
                println!("{}", json!({"intact": true, "entries": checked, "head": prev}));
            } else {
                println!("audit log intact: {checked} entries");
                // Kept elsewhere, the head hash also reveals a truncated tail.
                println!("head hash: {prev}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(b) => {
            if args.json {
                println!(
                    "{}",
                    json!({"intact": false, "entries": checked, "broken": {"id": b.id, "reason": b.reason}})
                );
            } else {
                println!("audit log BROKEN at entry {}: {}", b.id, b.reason);
                println!(
                    "entries before {} are intact; from there on the log was tampered with or damaged",
                    b.id
                );
            }
            Ok(ExitCode::from(1))
        }
    }
}

async fn list(ctx: &Ctx, args: ListArgs) -> anyhow::Result<ExitCode> {
    let run = match &args.run {
        Some(r) => Some(ctx.store.resolve_run_id(r).await?),
        None => None,
    };
    // The newest `limit` matching entries, read oldest first in pages.
    let mut kept: VecDeque<AuditRecord> = VecDeque::new();
    let mut after = 0;
    loop {
        let page = ctx.store.audit_list(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for e in page {
            if run.as_ref().is_none_or(|r| e.run_id.as_ref() == Some(r)) {
                kept.push_back(e);
                if kept.len() > args.limit {
                    kept.pop_front();
                }
            }
        }
    }
    if args.json {
        let docs: Vec<Value> = kept.iter().map(entry_json).collect();
        println!("{}", serde_json::to_string_pretty(&docs)?);
        return Ok(ExitCode::SUCCESS);
    }
    if kept.is_empty() {
        println!("no audit entries");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:>6}  {:<24}  {:<20}  {:<14}  {:<36}  {:<16}  PAYLOAD",
        "ID", "AT", "ACTOR", "ACTION", "RUN", "STEP"
    );
    for e in &kept {
        println!(
            "{:>6}  {:<24}  {:<20}  {:<14}  {:<36}  {:<16}  {}",
            e.id,
            time(e.at),
            e.actor,
            e.action,
            e.run_id.as_deref().unwrap_or("-"),
            e.step_id.as_deref().unwrap_or("-"),
            e.payload
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

fn entry_json(e: &AuditRecord) -> Value {
    json!({
        "id": e.id,
        "at": time(e.at),
        "actor": e.actor,
        "action": e.action,
        "run_id": e.run_id,
        "step_id": e.step_id,
        "payload": e.payload,
        "hash": e.hash,
        "prev_hash": e.prev_hash,
    })
}
