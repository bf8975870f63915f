//! Run creation in bulk: the new runs of one group commit that no key can
//! make duplicates are written together, their audit entries chained in
//! order, under one savepoint — so one bad run falls back to being created
//! alone instead of failing the others.

use super::write::{Tx, execute};
use super::writer::{Done, Job};
use crate::store::{AuditRecord, Created, NewAudit, NewRun, Result, audit, now_ms};
use rusqlite::Connection;

/// Whether creating `run` needs no look at other runs: no `on_conflict:
/// skip` key, no webhook dedupe key, no schedule tick. Such a run is always
/// created, so a batch of them cannot be partly refused.
pub(super) fn always_created(run: &NewRun) -> bool {
    !(run.skip_on_conflict && run.concurrency_key.is_some())
        && run.dedupe_key.is_none()
        && run.schedule_tick.is_none()
}

/// The batch's new runs that are always created, in one go, their results
/// set; if that fails, they are left to be created one by one.
pub(super) fn create_together(
    tx: &mut Tx<'_>,
    batch: &[Job],
    results: &mut [Option<Done>],
) -> Result<()> {
    let (indexes, runs): (Vec<usize>, Vec<&NewRun>) = batch
        .iter()
        .enumerate()
        .filter_map(|(i, job)| match job {
            Job::Create { run, .. } if always_created(run) => Some((i, &**run)),
            _ => None,
        })
        .unzip();
    if runs.len() < 2 {
        return Ok(());
    }
    tx.0.execute_batch("SAVEPOINT creates")?;
    match create_runs(tx.0, &runs) {
        Ok(()) => {
            for (i, run) in indexes.into_iter().zip(runs) {
                results[i] = Some(Done::Create(Ok(Created::Run(run.id.clone()))));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "Creating runs together failed; creating them one by one.");
            tx.0.execute_batch("ROLLBACK TO creates")?;
        }
    }
    tx.0.execute_batch("RELEASE creates")?;
    Ok(())
}

/// Creates `runs` (each `always_created`) with their audit entries.
fn create_runs(conn: &Connection, runs: &[&NewRun]) -> Result<()> {
    insert_runs(conn, runs)?;
    let entries = runs
        .iter()
        .filter_map(|run| Some(run.audit.clone()?.about(&Created::Run(run.id.clone()))))
        .collect();
    append_audits(conn, entries)?;
    Ok(())
}

/// The rows of new runs: each run `queued`, its steps `pending`, its
/// `queued` event. (The checks that may refuse a run come first.)
pub(super) fn insert_runs(conn: &Connection, runs: &[&NewRun]) -> Result<()> {
    let now = now_ms();
    for run in runs {
        let lease = run.lease_to.as_ref();
        let root = run.root.clone().unwrap_or_else(|| run.id.clone());
        execute(
            conn,
            "INSERT INTO runs (id, workflow, definition_hash, status, inputs, trigger, concurrency_key, \
             parent_run_id, parent_step_id, root_run_id, created_at, lease_owner, lease_expires_at, dedupe_key, pins, \
             mode, scenario, drill) VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            &[
                &run.id,
                &run.workflow,
                &run.definition_hash,
                &run.inputs.to_string(),
                &run.trigger.to_string(),
                &run.concurrency_key,
                &run.parent.as_ref().map(|p| &p.0),
                &run.parent.as_ref().map(|p| &p.1),
                &root,
                &now,
                &lease.map(|(worker, _)| worker),
                &lease.map(|(_, l)| l.now + l.duration_ms),
                &run.dedupe_key,
                &super::rows::pins_text(&run.pins),
                &run.mode.as_str(),
                &run.scenario,
                &run.drill.as_ref().map(|d| d.to_string()),
            ],
        )?;
        for step in &run.step_ids {
            execute(
                conn,
                "INSERT INTO steps (run_id, step_id, status) VALUES (?, ?, 'pending')",
                &[&run.id, step],
            )?;
        }
        execute(
            conn,
            "INSERT INTO events (run_id, at, kind, data) VALUES (?, ?, 'queued', ?)",
            &[&run.id, &now, &run.trigger.to_string()],
        )?;
    }
    Ok(())
}

/// Appends `entries` to the audit log, chained after its head in order
/// (the write lock keeps the head still); the records written.
pub(super) fn append_audits(conn: &Connection, entries: Vec<NewAudit>) -> Result<Vec<AuditRecord>> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let now = now_ms();
    let mut last: Option<(i64, String)> = {
        let mut stmt = conn.prepare_cached(audit::LAST)?;
        let mut rows = stmt.raw_query();
        match rows.next()? {
            Some(row) => Some((row.get(0)?, row.get(1)?)),
            None => None,
        }
    };
    let mut records = Vec::with_capacity(entries.len());
    for entry in entries {
        let record = audit::next_record(last.take(), entry, now);
        last = Some((record.id, record.hash.clone()));
        execute(
            conn,
            "INSERT INTO audit (id, at, actor, action, run_id, step_id, payload, payload_sha256, prev_hash, hash) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            &[
                &record.id,
                &record.at,
                &record.actor,
                &record.action,
                &record.run_id,
                &record.step_id,
                &audit::payload_text(&record.payload),
                &record.payload_sha256,
                &record.prev_hash,
                &record.hash,
            ],
        )?;
        records.push(record);
    }
    Ok(records)
}
