//! Run creation in bulk: the new runs of one group commit that no key can
//! make duplicates are written together — their runs, steps and `queued`
//! events each in one multi-row insert, their audit entries chained in
//! order in one more — instead of seven statements per run. Under a burst of
//! submissions (API, webhooks) that is what lets creation keep up.

use sqlx::{Sqlite, Transaction};

use super::rows::pins_text;
use super::write::ROWS_PER_INSERT;
use crate::store::{AuditRecord, Created, NewAudit, NewRun, Result, audit, now_ms};

/// Whether creating `run` needs no look at other runs: no `on_conflict:
/// skip` key, no webhook dedupe key, no schedule tick. Such a run is always
/// created, so a batch of them cannot be partly refused.
pub(super) fn always_created(run: &NewRun) -> bool {
    !(run.skip_on_conflict && run.concurrency_key.is_some())
        && run.dedupe_key.is_none()
        && run.schedule_tick.is_none()
}

/// Creates `runs` (each `always_created`) with their audit entries.
pub(super) async fn create_runs(
    tx: &mut Transaction<'static, Sqlite>,
    runs: &[&NewRun],
) -> Result<()> {
    insert_runs(tx, runs).await?;
    let entries = runs
        .iter()
        .filter_map(|run| Some(run.audit.clone()?.about(&Created::Run(run.id.clone()))))
        .collect();
    append_audits(tx, entries).await?;
    Ok(())
}

/// The rows of new runs: each run `queued`, its steps `pending`, its
/// `queued` event. (The checks that may refuse a run come first.)
pub(super) async fn insert_runs(
    tx: &mut Transaction<'static, Sqlite>,
    runs: &[&NewRun],
) -> Result<()> {
    let now = now_ms();
    for chunk in runs.chunks(ROWS_PER_INSERT) {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new(
            "INSERT INTO runs (id, workflow, definition_hash, status, inputs, trigger, concurrency_key, \
             parent_run_id, parent_step_id, root_run_id, created_at, lease_owner, lease_expires_at, dedupe_key, pins, \
             mode, scenario, drill) ",
        );
        q.push_values(chunk, |mut b, run| {
            let lease = run.lease_to.as_ref();
            b.push_bind(&run.id)
                .push_bind(&run.workflow)
                .push_bind(&run.definition_hash)
                .push("'queued'")
                .push_bind(run.inputs.to_string())
                .push_bind(run.trigger.to_string())
                .push_bind(&run.concurrency_key)
                .push_bind(run.parent.as_ref().map(|p| &p.0))
                .push_bind(run.parent.as_ref().map(|p| &p.1))
                .push_bind(run.root.clone().unwrap_or_else(|| run.id.clone()))
                .push_bind(now)
                .push_bind(lease.map(|(worker, _)| worker))
                .push_bind(lease.map(|(_, l)| l.now + l.duration_ms))
                .push_bind(&run.dedupe_key)
                .push_bind(pins_text(&run.pins))
                .push_bind(run.mode.as_str())
                .push_bind(&run.scenario)
                .push_bind(run.drill.as_ref().map(|d| d.to_string()));
        });
        q.build().execute(&mut **tx).await?;
    }
    let steps: Vec<(&str, &str)> = runs
        .iter()
        .flat_map(|run| run.step_ids.iter().map(|s| (run.id.as_str(), s.as_str())))
        .collect();
    for chunk in steps.chunks(ROWS_PER_INSERT) {
        let mut q =
            sqlx::QueryBuilder::<Sqlite>::new("INSERT INTO steps (run_id, step_id, status) ");
        q.push_values(chunk, |mut b, (run, step)| {
            b.push_bind(*run).push_bind(*step).push("'pending'");
        });
        q.build().execute(&mut **tx).await?;
    }
    for chunk in runs.chunks(ROWS_PER_INSERT) {
        let mut q =
            sqlx::QueryBuilder::<Sqlite>::new("INSERT INTO events (run_id, at, kind, data) ");
        q.push_values(chunk, |mut b, run| {
            b.push_bind(&run.id).push_bind(now).push("'queued'").push_bind(run.trigger.to_string());
        });
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// Appends `entries` to the audit log, chained after its head in order
/// (the write lock keeps the head still); the records written.
pub(super) async fn append_audits(
    tx: &mut Transaction<'static, Sqlite>,
    entries: Vec<NewAudit>,
) -> Result<Vec<AuditRecord>> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let now = now_ms();
    let mut last: Option<(i64, String)> =
        sqlx::query_as(audit::LAST).fetch_optional(&mut **tx).await?;
    let records: Vec<_> = entries
        .into_iter()
        .map(|entry| {
            let record = audit::next_record(last.take(), entry, now);
            last = Some((record.id, record.hash.clone()));
            record
        })
        .collect();
    for chunk in records.chunks(ROWS_PER_INSERT) {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new(
            "INSERT INTO audit (id, at, actor, action, run_id, step_id, payload, payload_sha256, prev_hash, hash) ",
        );
        q.push_values(chunk, |mut b, r| {
            b.push_bind(r.id)
                .push_bind(r.at)
                .push_bind(&r.actor)
                .push_bind(&r.action)
                .push_bind(&r.run_id)
                .push_bind(&r.step_id)
                .push_bind(audit::payload_text(&r.payload))
                .push_bind(&r.payload_sha256)
                .push_bind(&r.prev_hash)
                .push_bind(&r.hash);
        });
        q.build().execute(&mut **tx).await?;
    }
    Ok(records)
}
