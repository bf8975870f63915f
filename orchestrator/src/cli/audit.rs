//! `lifeboat audit verify|anchor|list`, and `record`, which every operator
//! command calls to append its entry to the hash-chained audit log.
//! `verify --anchors FILE` also holds the log against the signed
//! checkpoints of its head that `anchor` (and `serve`) append to a file
//! outside the database (`crate::audit_anchor`).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::{Value, json};

use super::{Ctx, input_error};
use crate::audit_anchor::{self as anchors, AnchorKey, Checkpointer, Sink};
use crate::store::audit::walk;
use crate::store::{AuditRecord, NewAudit};

/// Entries read per query.
const PAGE: usize = 1000;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Check the hash chain of the whole audit log, and with --anchors the
    /// signed checkpoints of its head (exit 1 if anything fails).
    Verify(VerifyArgs),
    /// Append a signed checkpoint of the log's head to the anchor file.
    Anchor(AnchorArgs),
    /// List audit entries, oldest first.
    List(ListArgs),
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// A file of anchors (JSON lines, as `audit anchor` and `serve` write
    /// them): detects a deleted tail and rewrites up to the newest anchor.
    /// The key comes from `[audit] anchor_key_env`.
    #[arg(long, value_name = "FILE")]
    pub anchors: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct AnchorArgs {
    /// The anchor file (default: `[audit] anchor_file`).
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
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
        Command::Anchor(args) => anchor(ctx, args).await,
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

/// The anchor key of `[audit] anchor_key_env`, or an error saying how to set it.
fn anchor_key(ctx: &Ctx) -> anyhow::Result<AnchorKey> {
    AnchorKey::from_env(&ctx.config.audit.anchor_key_env).map_err(input_error)
}

async fn verify(ctx: &Ctx, args: VerifyArgs) -> anyhow::Result<ExitCode> {
    // Anchors are read (and the key found) first: a wrong path fails fast.
    let anchor_file = match &args.anchors {
        Some(path) => {
            let key = anchor_key(ctx)?;
            let lines = anchors::read(path).map_err(|e| {
                input_error(format!("cannot read the anchor file {}: {e}", path.display()))
            })?;
            Some((path, key, lines))
        }
        None => None,
    };
    let wanted = anchor_file.as_ref().map(|(_, _, l)| anchors::anchored_ids(l)).unwrap_or_default();
    let walked = walk(&*ctx.store, None, &wanted).await?;
    let head = walked.head.as_ref().map_or(crate::store::audit::GENESIS, |(_, h)| h.as_str());
    let report = anchor_file
        .as_ref()
        .map(|(_, key, lines)| anchors::check(lines, key, walked.last_id, &walked.hashes));
    let anchors_ok = report.as_ref().is_none_or(|r| r.failures.is_empty() && r.signed > 0);
    let intact = walked.broken.is_none() && anchors_ok;
    if args.json {
        let mut doc = json!({"intact": intact, "entries": walked.verified});
        match &walked.broken {
            None => doc["head"] = json!(head),
            Some(b) => doc["broken"] = json!({"id": b.id, "reason": b.reason}),
        }
        if let (Some((path, _, _)), Some(r)) = (&anchor_file, &report) {
            doc["anchors"] = json!({
                "file": path.display().to_string(),
                "signed": r.signed,
                "matched": r.matched,
                "covered": r.covered,
                "unanchored": walked.last_id - r.covered.unwrap_or(0),
                "failures": r.failures.iter().map(|f| json!({
                    "line": f.line,
                    "id": f.anchor.as_ref().map(|a| a.id),
                    "kind": f.kind(),
                    "message": f.to_string(),
                })).collect::<Vec<_>>(),
            });
        }
        outln!("{doc}");
    } else {
        match &walked.broken {
            None => {
                outln!("audit log intact: {} entries", walked.verified);
                // Kept elsewhere, the head hash also reveals a truncated tail.
                outln!("head hash: {head}");
            }
            Some(b) => {
                outln!("audit log BROKEN at entry {}: {}", b.id, b.reason);
                outln!(
                    "entries before {} are intact; from there on the log was tampered with or damaged",
                    b.id
                );
            }
        }
        if let (Some((path, _, _)), Some(r)) = (&anchor_file, &report) {
            print_anchors(path, r, walked.last_id);
        }
    }
    Ok(if intact { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn print_anchors(path: &std::path::Path, r: &anchors::Report, last_id: i64) {
    let file = path.display();
    for f in &r.failures {
        outln!("anchor FAILED, {file} {f}");
    }
    if r.signed == 0 && r.failures.is_empty() {
        outln!("anchors FAILED: {file} holds no anchor, so nothing vouches for the log's tail");
    } else if r.failures.is_empty() {
        outln!("anchors: {} in {file}, all match the log", r.matched);
    } else {
        outln!(
            "anchors: {} of {} lines in {file} match the log",
            r.matched,
            r.matched + r.failures.len()
        );
    }
    if !r.failures.is_empty() {
        outln!(
            "audit log TAMPERED or damaged: the anchors above disagree with it (a deleted tail, a rewrite, or a forged anchor)"
        );
        return;
    }
    let covered = r.covered.unwrap_or(0);
    if last_id > covered {
        outln!(
            "entries {}..{last_id} are newer than the newest matching anchor: their deletion or rewrite could not be detected",
            covered + 1
        );
    }
}

async fn anchor(ctx: &Ctx, args: AnchorArgs) -> anyhow::Result<ExitCode> {
    let file = match (args.file, &ctx.config.audit.anchor_file) {
        (Some(f), _) => f,
        (None, Some(f)) => ctx.base.join(f),
        (None, None) => {
            return Err(input_error(
                "no anchor file: pass --file FILE or set [audit] anchor_file in lifeboat.toml",
            ));
        }
    };
    let sink = Sink { file: file.clone(), key: anchor_key(ctx)? };
    let checkpointer = Checkpointer::new(ctx.store.clone(), sink, format!("cli {}", ctx.actor()));
    let anchor = match checkpointer.checkpoint().await {
        Ok(a) => a.expect("the first checkpoint of a process always anchors"),
        Err(e @ anchors::AnchorError::Broken(_)) => return Err(input_error(e.to_string())),
        Err(e) => return Err(e.into()),
    };
    if args.json {
        outln!("{}", json!({"file": file.display().to_string(), "anchor": anchor}));
    } else {
        outln!("anchored entry {} (hash {}) to {}", anchor.id, anchor.hash, file.display());
    }
    Ok(ExitCode::SUCCESS)
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
        outln!("{}", serde_json::to_string_pretty(&docs)?);
        return Ok(ExitCode::SUCCESS);
    }
    if kept.is_empty() {
        outln!("no audit entries");
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{:>6}  {:<24}  {:<20}  {:<14}  {:<36}  {:<16}  PAYLOAD",
        "ID",
        "AT",
        "ACTOR",
        "ACTION",
        "RUN",
        "STEP"
    );
    for e in &kept {
        outln!(
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
