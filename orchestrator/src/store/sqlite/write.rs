//! Writing: the group committer that merges every driver's commit into one
//! transaction (a savepoint per job), run creation and `Change`s as SQL.

use super::*;

/// Takes every commit waiting, applies each under its own savepoint (one
/// whose lease is lost fails alone), and commits them all at once: one
/// fsync for many transitions, with durability unchanged.
pub(super) async fn group_committer(
    pool: SqlitePool,
    write_lock: Arc<tokio::sync::Mutex<()>>,
    mut jobs: tokio::sync::mpsc::UnboundedReceiver<Job>,
) {
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        while batch.len() < GROUP_COMMIT_MAX {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let _guard = write_lock.lock().await;
        match commit_batch(&pool, &batch).await {
            Ok(results) => {
                for (job, result) in batch.into_iter().zip(results) {
                    job.answer(result);
                }
            }
            Err(e) => {
                let message = format!("commit failed: {e}");
                for job in batch {
                    job.fail(&message);
                }
            }
        }
    }
}

/// One transaction for the whole batch; each job in a savepoint, so one
/// job's failure (a lost lease) does not undo the others.
pub(super) async fn commit_batch(pool: &SqlitePool, batch: &[Job]) -> Result<Vec<Done>> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let mut results = Vec::with_capacity(batch.len());
    for job in batch {
        sqlx::query("SAVEPOINT job").execute(&mut *tx).await?;
        let done = match job {
            Job::Commit { worker, run_id, changes, .. } => {
                Done::Commit(commit_one(&mut tx, worker, run_id, changes).await)
            }
            Job::Create { run, .. } => Done::Create(create_one(&mut tx, run).await),
        };
        let ok = matches!(&done, Done::Commit(Ok(_)) | Done::Create(Ok(_)));
        if !ok {
            sqlx::query("ROLLBACK TO job").execute(&mut *tx).await?;
        }
        sqlx::query("RELEASE job").execute(&mut *tx).await?;
        results.push(done);
    }
    tx.commit().await?;
    Ok(results)
}

pub(super) async fn commit_one(
    tx: &mut Transaction<'static, Sqlite>,
    worker: &str,
    run_id: &str,
    changes: &[Change],
) -> Result<()> {
    let owner: Option<Option<String>> =
        sqlx::query_scalar("SELECT lease_owner FROM runs WHERE id = ?")
            .bind(run_id)
            .fetch_optional(&mut **tx)
            .await?;
    match owner {
        None => return Err(StoreError::RunNotFound(run_id.to_string())),
        Some(Some(o)) if o == worker => {}
        Some(_) => return Err(StoreError::LeaseLost(run_id.to_string())),
    }
    apply_all(tx, run_id, changes).await
}

/// A run and, with it, its audit entry.
pub(super) async fn create_one(
    tx: &mut Transaction<'static, Sqlite>,
    run: &NewRun,
) -> Result<Created> {
    let created = insert_run(tx, run).await?;
    if let Some(entry) = run.audit.clone() {
        append_audit(tx, entry.about(&created)).await?;
    }
    Ok(created)
}

/// Rows per multi-row INSERT (SQLite allows 32,766 bound values).
pub(super) const ROWS_PER_INSERT: usize = 256;

/// Applies a batch with as few statements as possible: step rows, new
/// attempts and events each go in multi-row INSERTs (every statement is a
/// round trip to the SQLite thread); the rest one by one, in a fixed order
/// that respects what depends on what (an attempt exists before it is updated).
pub(super) async fn apply_all(
    tx: &mut Transaction<'static, Sqlite>,
    run_id: &str,
    changes: &[Change],
) -> Result<()> {
    for change in changes.iter().filter(|c| matches!(c, Change::Run(_))) {
        apply(tx, run_id, change).await?;
    }
    // Last write of each step wins, as it would applied one by one.
    let mut steps: Vec<&StepRecord> = Vec::new();
    for change in changes {
        if let Change::Step(s) = change {
            steps.retain(|p| p.step_id != s.step_id);
            steps.push(s);
        }
    }
    for chunk in steps.chunks(ROWS_PER_INSERT) {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new(
            "INSERT OR REPLACE INTO steps (run_id, step_id, status, attempts, outputs, error, started_at, \
             finished_at, wake_at, state, rollback) ",
        );
        q.push_values(chunk, |mut b, s| {
            b.push_bind(run_id)
                .push_bind(&s.step_id)
                .push_bind(s.status.as_str())
                .push_bind(s.attempts as i64)
                .push_bind(json(&s.outputs))
                .push_bind(&s.error)
                .push_bind(s.started_at)
                .push_bind(s.finished_at)
                .push_bind(s.wake_at)
                .push_bind(json(&s.state))
                .push_bind(&s.rollback);
        });
        q.build().execute(&mut **tx).await?;
    }
    let attempts: Vec<&AttemptRecord> = changes
        .iter()
        .filter_map(|c| match c {
            Change::AttemptStarted(a) => Some(a),
            _ => None,
        })
        .collect();
    for chunk in attempts.chunks(ROWS_PER_INSERT) {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new(
            "INSERT INTO attempts (run_id, step_id, phase, n, status, worker, pgid, started_at, finished_at, error) ",
        );
        q.push_values(chunk, |mut b, a| {
            b.push_bind(run_id)
                .push_bind(&a.step_id)
                .push_bind(a.phase.as_str())
                .push_bind(a.n as i64)
                .push_bind(a.status.as_str())
                .push_bind(&a.worker)
                .push_bind(a.pgid.map(i64::from))
                .push_bind(a.started_at)
                .push_bind(a.finished_at)
                .push_bind(&a.error);
        });
        q.build().execute(&mut **tx).await?;
    }
    for change in changes
        .iter()
        .filter(|c| matches!(c, Change::AttemptPgid { .. } | Change::AttemptFinished { .. }))
    {
        apply(tx, run_id, change).await?;
    }
    let events: Vec<&Change> =
        changes.iter().filter(|c| matches!(c, Change::Event { .. })).collect();
    for chunk in events.chunks(ROWS_PER_INSERT) {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new(
            "INSERT INTO events (run_id, at, kind, step_id, data) ",
        );
        q.push_values(chunk, |mut b, e| {
            if let Change::Event { at, kind, step_id, data } = e {
                b.push_bind(run_id)
                    .push_bind(*at)
                    .push_bind(kind.as_str())
                    .push_bind(step_id)
                    .push_bind(json(data));
            }
        });
        q.build().execute(&mut **tx).await?;
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

pub(super) async fn apply(
    tx: &mut Transaction<'static, Sqlite>,
    run_id: &str,
    change: &Change,
) -> Result<()> {
    match change {
        Change::Run(u) => {
            sqlx::query(
                "UPDATE runs SET status = COALESCE(?, status), started_at = COALESCE(?, started_at), \
                 finished_at = CASE WHEN ? THEN NULL ELSE COALESCE(?, finished_at) END, \
                 outputs = COALESCE(?, outputs), error = CASE WHEN ? THEN NULL ELSE COALESCE(?, error) END, \
                 paused = COALESCE(?, paused), cancelled_by = COALESCE(?, cancelled_by), \
                 inputs = COALESCE(?, inputs) WHERE id = ?",
            )
            .bind(u.status.map(|s| s.as_str()))
            .bind(u.started_at)
            .bind(u.reopen)
            .bind(u.finished_at)
            .bind(json(&u.outputs))
            .bind(u.reopen)
            .bind(&u.error)
            .bind(u.paused.map(i64::from))
            .bind(&u.cancelled_by)
            .bind(json(&u.inputs))
            .bind(run_id)
            .execute(&mut **tx)
            .await?;
        }
        Change::Step(s) => {
            sqlx::query(
                "INSERT OR REPLACE INTO steps (run_id, step_id, status, attempts, outputs, error, started_at, \
                 finished_at, wake_at, state, rollback) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(run_id)
            .bind(&s.step_id)
            .bind(s.status.as_str())
            .bind(s.attempts as i64)
            .bind(json(&s.outputs))
            .bind(&s.error)
            .bind(s.started_at)
            .bind(s.finished_at)
            .bind(s.wake_at)
            .bind(json(&s.state))
            .bind(&s.rollback)
            .execute(&mut **tx)
            .await?;
        }
        Change::AttemptStarted(a) => {
            sqlx::query(
                "INSERT INTO attempts (run_id, step_id, phase, n, status, worker, pgid, started_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(run_id)
            .bind(&a.step_id)
            .bind(a.phase.as_str())
            .bind(a.n as i64)
            .bind(a.status.as_str())
            .bind(&a.worker)
            .bind(a.pgid.map(i64::from))
            .bind(a.started_at)
            .execute(&mut **tx)
            .await?;
        }
        Change::AttemptPgid { step_id, phase, n, pgid } => {
            sqlx::query("UPDATE attempts SET pgid = ? WHERE run_id = ? AND step_id = ? AND phase = ? AND n = ?")
                .bind(*pgid as i64)
                .bind(run_id)
                .bind(step_id)
                .bind(phase.as_str())
                .bind(*n as i64)
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
                "UPDATE attempts SET status = ?, finished_at = ?, error = ?, stdout = ?, stderr = ? \
                 WHERE run_id = ? AND step_id = ? AND phase = ? AND n = ?",
            )
            .bind(status.as_str())
            .bind(finished_at)
            .bind(error)
            .bind(stdout)
            .bind(stderr)
            .bind(run_id)
            .bind(step_id)
            .bind(phase.as_str())
            .bind(*n as i64)
            .execute(&mut **tx)
            .await?;
        }
        Change::Event { at, kind, step_id, data } => {
            sqlx::query(
                "INSERT INTO events (run_id, at, kind, step_id, data) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(run_id)
            .bind(at)
            .bind(kind.as_str())
            .bind(step_id)
            .bind(json(data))
            .execute(&mut **tx)
            .await?;
        }
        Change::RequestDone { id, at } => {
            sqlx::query("UPDATE requests SET done_at = ? WHERE id = ?")
                .bind(at)
                .bind(id)
                .execute(&mut **tx)
                .await?;
        }
        Change::Release { wake_at } => {
            sqlx::query(
                "UPDATE runs SET lease_owner = NULL, lease_expires_at = NULL, \
                 wake_at = CASE WHEN woken = 1 THEN NULL ELSE ? END WHERE id = ?",
            )
            .bind(wake_at)
            .bind(run_id)
            .execute(&mut **tx)
            .await?;
        }
        Change::WakeRun { run_id } => {
            sqlx::query("UPDATE runs SET wake_at = NULL, woken = 1 WHERE id = ?")
                .bind(run_id)
                .execute(&mut **tx)
                .await?;
        }
        Change::Notify(n) => {
            sqlx::query(
                "INSERT INTO outbox (dedupe_key, run_id, step_id, event, channel, message, status, next_at, created_at) \
                 VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?) ON CONFLICT (dedupe_key) DO NOTHING",
            )
            .bind(&n.dedupe_key)
            .bind(run_id)
            .bind(&n.step_id)
            .bind(&n.event)
            .bind(&n.channel)
            .bind(n.message.to_string())
            .bind(n.at)
            .bind(n.at)
            .execute(&mut **tx)
            .await?;
        }
        Change::Audit(entry) => {
            append_audit(tx, entry.clone()).await?;
        }
    }
    Ok(())
}
