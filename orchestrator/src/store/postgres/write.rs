//! Writing: run creation (with its audit entry), audit appends under their
//! lock, and `Change`s as SQL, batched per transaction.

use super::*;

/// Creates a run (in the caller's transaction) unless its concurrency key,
/// dedupe key or schedule tick says it exists already; writes nothing then.
pub(super) async fn insert_run(
    tx: &mut Transaction<'static, Postgres>,
    run: &NewRun,
) -> Result<Created> {
    if let Some(key) = &run.concurrency_key {
        // Serializes every creation with this key across replicas until commit;
        // READ COMMITTED gives the check below a snapshot taken after the lock.
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(CONCURRENCY_LOCK_SPACE)
            .bind(key)
            .execute(&mut **tx)
            .await?;
        if run.skip_on_conflict {
            let active: Option<String> = sqlx::query_scalar(concat!(
                "SELECT id FROM runs WHERE concurrency_key = $1 AND status IN ",
                active!(),
                " ORDER BY id LIMIT 1"
            ))
            .bind(key)
            .fetch_optional(&mut **tx)
            .await?;
            if let Some(active) = active {
                return Ok(Created::Skipped { active });
            }
        }
    }
    if let Some(key) = &run.dedupe_key {
        // As the concurrency key: creations with one dedupe key queue here.
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(DEDUPE_LOCK_SPACE)
            .bind(format!("{}\n{key}", run.workflow))
            .execute(&mut **tx)
            .await?;
        let active: Option<String> = sqlx::query_scalar(concat!(
            "SELECT id FROM runs WHERE workflow = $1 AND dedupe_key = $2 AND status IN ",
            active!(),
            " LIMIT 1"
        ))
        .bind(&run.workflow)
        .bind(key)
        .fetch_optional(&mut **tx)
        .await?;
        if let Some(existing) = active {
            return Ok(Created::Duplicate { existing });
        }
    }
    if let Some((schedule, tick)) = &run.schedule_tick {
        // A replica firing the same tick waits on the primary key, then sees it.
        let inserted = sqlx::query(
            "INSERT INTO schedule_ticks (schedule, tick_at, run_id) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(schedule)
        .bind(tick)
        .bind(&run.id)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            let existing: String = sqlx::query_scalar(
                "SELECT run_id FROM schedule_ticks WHERE schedule = $1 AND tick_at = $2",
            )
            .bind(schedule)
            .bind(tick)
            .fetch_one(&mut **tx)
            .await?;
            return Ok(Created::Duplicate { existing });
        }
    }
    let now = now_ms();
    let (owner, expires) = match &run.lease_to {
        Some((worker, lease)) => (Some(worker.as_str()), Some(lease.now + lease.duration_ms)),
        None => (None, None),
    };
    let pins = run.pins.as_ref().map(|p| serde_json::to_value(p).expect("a map of strings"));
    sqlx::query(
        "INSERT INTO runs (id, workflow, definition_hash, status, inputs, trigger, concurrency_key, \
         parent_run_id, parent_step_id, root_run_id, created_at, lease_owner, lease_expires_at, dedupe_key, pins) \
         VALUES ($1, $2, $3, 'queued', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(&run.id)
    .bind(&run.workflow)
    .bind(&run.definition_hash)
    .bind(json(&run.inputs))
    .bind(json(&run.trigger))
    .bind(&run.concurrency_key)
    .bind(run.parent.as_ref().map(|p| &p.0))
    .bind(run.parent.as_ref().map(|p| &p.1))
    .bind(run.root.as_ref().unwrap_or(&run.id))
    .bind(now)
    .bind(owner)
    .bind(expires)
    .bind(&run.dedupe_key)
    .bind(pins.as_ref().map(json))
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO steps (run_id, step_id, status) \
         SELECT $1, s, 'pending' FROM UNNEST($2::text[]) AS s",
    )
    .bind(&run.id)
    .bind(&run.step_ids)
    .execute(&mut **tx)
    .await?;
    sqlx::query("INSERT INTO events (run_id, at, kind, data) VALUES ($1, $2, 'queued', $3)")
        .bind(&run.id)
        .bind(now)
        .bind(json(&run.trigger))
        .execute(&mut **tx)
        .await?;
    Ok(Created::Run(run.id.clone()))
}

/// The next audit entry, under the lock that serializes appends (held to commit).
pub(super) async fn next_audit(
    tx: &mut Transaction<'static, Postgres>,
    entry: NewAudit,
) -> Result<AuditRecord> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(AUDIT_LOCK).execute(&mut **tx).await?;
    let last: Option<(i64, String)> =
        sqlx::query_as("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1")
            .fetch_optional(&mut **tx)
            .await?;
    let mut clean = entry;
    clean.actor = text(&clean.actor).into_owned();
    clean.action = text(&clean.action).into_owned();
    Ok(audit::next_record(last, clean, now_ms()))
}

/// Appends the next audit entry in `tx`, under the append lock.
pub(super) async fn append_audit(
    tx: &mut Transaction<'static, Postgres>,
    entry: NewAudit,
) -> Result<AuditRecord> {
    let record = next_audit(tx, entry).await?;
    insert_audit(tx, &record).await?;
    Ok(record)
}

pub(super) async fn insert_audit(
    tx: &mut Transaction<'static, Postgres>,
    record: &AuditRecord,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit (id, at, actor, action, run_id, step_id, payload, payload_sha256, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(record.id)
    .bind(record.at)
    .bind(&record.actor)
    .bind(&record.action)
    .bind(opt_text(&record.run_id))
    .bind(opt_text(&record.step_id))
    .bind(audit::payload_text(&record.payload))
    .bind(&record.payload_sha256)
    .bind(&record.prev_hash)
    .bind(&record.hash)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Applies a batch with as few statements as possible: step rows, new
/// attempts and events each go in one `UNNEST` statement (one round trip and
/// one cached prepared statement whatever the batch size); the rest one by
/// one, in the same fixed order as SQLite's `apply_all` (an attempt exists
/// before it is updated).
pub(super) async fn apply_all(
    tx: &mut Transaction<'static, Postgres>,
    run_id: &str,
    changes: &[Change],
) -> Result<()> {
    for change in changes.iter().filter(|c| matches!(c, Change::Run(_))) {
        apply(tx, run_id, change).await?;
    }
    // Last write of each step wins, as it would applied one by one (and one
    // upsert may not touch a row twice).
    let mut steps: Vec<&StepRecord> = Vec::new();
    for change in changes {
        if let Change::Step(s) = change {
            steps.retain(|p| p.step_id != s.step_id);
            steps.push(s);
        }
    }
    if !steps.is_empty() {
        sqlx::query(
            "INSERT INTO steps (run_id, step_id, status, attempts, outputs, error, started_at, \
               finished_at, wake_at, state, rollback) \
             SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::int8[], $5::jsonb[], $6::text[], \
               $7::int8[], $8::int8[], $9::int8[], $10::jsonb[], $11::text[]) \
             ON CONFLICT (run_id, step_id) DO UPDATE SET status = EXCLUDED.status, \
               attempts = EXCLUDED.attempts, outputs = EXCLUDED.outputs, error = EXCLUDED.error, \
               started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at, \
               wake_at = EXCLUDED.wake_at, state = EXCLUDED.state, rollback = EXCLUDED.rollback",
        )
        .bind(run_id)
        .bind(steps.iter().map(|s| s.step_id.as_str()).collect::<Vec<_>>())
        .bind(steps.iter().map(|s| s.status.as_str()).collect::<Vec<_>>())
        .bind(steps.iter().map(|s| i64::from(s.attempts)).collect::<Vec<_>>())
        .bind(steps.iter().map(|s| opt_json(&s.outputs)).collect::<Vec<_>>())
        .bind(steps.iter().map(|s| opt_text(&s.error)).collect::<Vec<_>>())
        .bind(steps.iter().map(|s| s.started_at).collect::<Vec<_>>())
        .bind(steps.iter().map(|s| s.finished_at).collect::<Vec<_>>())
        .bind(steps.iter().map(|s| s.wake_at).collect::<Vec<_>>())
        .bind(steps.iter().map(|s| opt_json(&s.state)).collect::<Vec<_>>())
        .bind(steps.iter().map(|s| s.rollback.as_deref()).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    }
    let attempts: Vec<&AttemptRecord> = changes
        .iter()
        .filter_map(|c| match c {
            Change::AttemptStarted(a) => Some(a),
            _ => None,
        })
        .collect();
    if !attempts.is_empty() {
        sqlx::query(
            "INSERT INTO attempts (run_id, step_id, phase, n, status, worker, pgid, started_at, \
               finished_at, error) \
             SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::int8[], $5::text[], $6::text[], \
               $7::int8[], $8::int8[], $9::int8[], $10::text[])",
        )
        .bind(run_id)
        .bind(attempts.iter().map(|a| a.step_id.as_str()).collect::<Vec<_>>())
        .bind(attempts.iter().map(|a| a.phase.as_str()).collect::<Vec<_>>())
        .bind(attempts.iter().map(|a| i64::from(a.n)).collect::<Vec<_>>())
        .bind(attempts.iter().map(|a| a.status.as_str()).collect::<Vec<_>>())
        .bind(attempts.iter().map(|a| a.worker.as_str()).collect::<Vec<_>>())
        .bind(attempts.iter().map(|a| a.pgid.map(i64::from)).collect::<Vec<_>>())
        .bind(attempts.iter().map(|a| a.started_at).collect::<Vec<_>>())
        .bind(attempts.iter().map(|a| a.finished_at).collect::<Vec<_>>())
        .bind(attempts.iter().map(|a| opt_text(&a.error)).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    }
    for change in changes
        .iter()
        .filter(|c| matches!(c, Change::AttemptPgid { .. } | Change::AttemptFinished { .. }))
    {
        apply(tx, run_id, change).await?;
    }
    let events: Vec<(&i64, &crate::events::RunEvent, &Option<String>, &Option<Value>)> = changes
        .iter()
        .filter_map(|c| match c {
            Change::Event { at, kind, step_id, data } => Some((at, kind, step_id, data)),
            _ => None,
        })
        .collect();
    if !events.is_empty() {
        // WITH ORDINALITY … ORDER BY: ids are handed out in the batch's order.
        sqlx::query(
            "INSERT INTO events (run_id, at, kind, step_id, data) \
             SELECT $1, e.at, e.kind, e.step_id, e.data \
             FROM UNNEST($2::int8[], $3::text[], $4::text[], $5::jsonb[]) \
               WITH ORDINALITY AS e(at, kind, step_id, data, ord) ORDER BY e.ord",
        )
        .bind(run_id)
        .bind(events.iter().map(|e| *e.0).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.1.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.2.as_deref()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| opt_json(e.3)).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    }
    for change in changes.iter().filter(|c| {
        matches!(
            c,
            Change::RequestDone { .. }
                | Change::WakeRun { .. }
                | Change::Release { .. }
                | Change::Notify(_)
        )
    }) {
        apply(tx, run_id, change).await?;
    }
    // Last: the audit append lock is always the last lock a commit takes.
    for change in changes.iter().filter(|c| matches!(c, Change::Audit(_))) {
        apply(tx, run_id, change).await?;
    }
    Ok(())
}

/// One change that `apply_all` does not batch.
pub(super) async fn apply(
    tx: &mut Transaction<'static, Postgres>,
    run_id: &str,
    change: &Change,
) -> Result<()> {
    match change {
        Change::Run(u) => {
            sqlx::query(
                "UPDATE runs SET status = COALESCE($1, status), started_at = COALESCE($2, started_at), \
                 finished_at = CASE WHEN $3 THEN NULL ELSE COALESCE($4, finished_at) END, \
                 outputs = COALESCE($5, outputs), error = CASE WHEN $3 THEN NULL ELSE COALESCE($6, error) END, \
                 paused = COALESCE($7, paused), cancelled_by = COALESCE($8, cancelled_by), \
                 inputs = COALESCE($9, inputs) WHERE id = $10",
            )
            .bind(u.status.map(|s| s.as_str()))
            .bind(u.started_at)
            .bind(u.reopen)
            .bind(u.finished_at)
            .bind(opt_json(&u.outputs))
            .bind(opt_text(&u.error))
            .bind(u.paused)
            .bind(opt_text(&u.cancelled_by))
            .bind(opt_json(&u.inputs))
            .bind(run_id)
            .execute(&mut **tx)
            .await?;
        }
        Change::AttemptPgid { step_id, phase, n, pgid } => {
            sqlx::query(
                "UPDATE attempts SET pgid = $1 WHERE run_id = $2 AND step_id = $3 AND phase = $4 AND n = $5",
            )
            .bind(i64::from(*pgid))
            .bind(run_id)
            .bind(step_id)
            .bind(phase.as_str())
            .bind(i64::from(*n))
            .execute(&mut **tx)
            .await?;
        }
        Change::AttemptFinished {
            step_id,
            phase,
            n,
            status,
            finished_at,
            error,
            stdout,
            stderr,
        } => {
            sqlx::query(
                "UPDATE attempts SET status = $1, finished_at = $2, error = $3, stdout = $4, stderr = $5 \
                 WHERE run_id = $6 AND step_id = $7 AND phase = $8 AND n = $9",
            )
            .bind(status.as_str())
            .bind(finished_at)
            .bind(opt_text(error))
            .bind(opt_text(stdout))
            .bind(opt_text(stderr))
            .bind(run_id)
            .bind(step_id)
            .bind(phase.as_str())
            .bind(i64::from(*n))
            .execute(&mut **tx)
            .await?;
        }
        Change::RequestDone { id, at } => {
            sqlx::query("UPDATE requests SET done_at = $1 WHERE id = $2")
                .bind(at)
                .bind(id)
                .execute(&mut **tx)
                .await?;
        }
        Change::Release { wake_at } => {
            sqlx::query(
                "UPDATE runs SET lease_owner = NULL, lease_expires_at = NULL, \
                 wake_at = CASE WHEN woken THEN NULL ELSE $1 END WHERE id = $2",
            )
            .bind(wake_at)
            .bind(run_id)
            .execute(&mut **tx)
            .await?;
        }
        Change::WakeRun { run_id } => {
            sqlx::query("UPDATE runs SET wake_at = NULL, woken = true WHERE id = $1")
                .bind(run_id)
                .execute(&mut **tx)
                .await?;
        }
        Change::Notify(n) => {
            sqlx::query(
                "INSERT INTO outbox (dedupe_key, run_id, step_id, event, channel, message, status, next_at, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7) ON CONFLICT (dedupe_key) DO NOTHING",
            )
            .bind(text(&n.dedupe_key))
            .bind(run_id)
            .bind(&n.step_id)
            .bind(&n.event)
            .bind(&n.channel)
            .bind(json(&n.message))
            .bind(n.at)
            .execute(&mut **tx)
            .await?;
        }
        Change::Audit(entry) => {
            append_audit(tx, entry.clone()).await?;
        }
        Change::Step(_) | Change::AttemptStarted(_) | Change::Event { .. } => {
            unreachable!("apply_all writes steps, new attempts and events in batches")
        }
    }
    Ok(())
}
