//! Writing: the group committer that merges every driver's commit into one
//! transaction (a savepoint per job), and the SQL of each piece of a
//! transition (`apply::Writer`); the order and the checks are `apply`'s.

use super::*;
use crate::store::apply::{self, FinishedAttempt, NewEvent, Writer, with_shared_writes};

/// Takes every commit waiting, applies each under its own savepoint (one
/// whose lease is lost fails alone), and commits them all at once: one
/// fsync for many transitions, with durability unchanged.
pub(super) async fn group_committer(
    pool: SqlitePool,
    write_lock: Arc<tokio::sync::Mutex<()>>,
    mut jobs: tokio::sync::mpsc::UnboundedReceiver<Job>,
    bells: Arc<super::bell::Bells>,
) {
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        while batch.len() < GROUP_COMMIT_MAX {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let guard = write_lock.lock().await;
        match commit_batch(&pool, &batch).await {
            Ok(results) => {
                drop(guard);
                if batch.iter().zip(&results).any(|(job, done)| job.wakes(done)) {
                    bells.ring(&Wake::Due);
                }
                for (job, result) in batch.into_iter().zip(results) {
                    job.answer(result);
                }
            }
            Err(e) => {
                for job in batch {
                    job.fail(e.for_another());
                }
            }
        }
    }
}

/// One transaction for the whole batch; each job in a savepoint, so one
/// job's failure (a lost lease) does not undo the others.
pub(super) async fn commit_batch(pool: &SqlitePool, batch: &[Job]) -> Result<Vec<Done>> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let mut results: Vec<Option<Done>> = batch.iter().map(|_| None).collect();
    create_together(&mut tx, batch, &mut results).await?;
    for (job, result) in batch.iter().zip(results.iter_mut()) {
        if result.is_some() {
            continue;
        }
        sqlx::query("SAVEPOINT job").execute(&mut *tx).await?;
        let mut w = Tx(&mut tx);
        let done = match job {
            Job::Commit { worker, run_id, changes, .. } => {
                Done::Commit(apply::commit(&mut w, worker, run_id, changes).await)
            }
            Job::Create { run, .. } => Done::Create(apply::create(&mut w, run).await),
        };
        let ok = matches!(&done, Done::Commit(Ok(_)) | Done::Create(Ok(_)));
        if !ok {
            sqlx::query("ROLLBACK TO job").execute(&mut *tx).await?;
        }
        sqlx::query("RELEASE job").execute(&mut *tx).await?;
        *result = Some(done);
    }
    tx.commit().await?;
    Ok(results.into_iter().map(|r| r.expect("every job done")).collect())
}

/// The batch's new runs that are always created, in one go (see
/// `create.rs`), their results set; if that fails, they are left to be
/// created one by one, so one bad run cannot fail the others.
async fn create_together(
    tx: &mut Transaction<'static, Sqlite>,
    batch: &[Job],
    results: &mut [Option<Done>],
) -> Result<()> {
    let (indexes, runs): (Vec<usize>, Vec<&NewRun>) = batch
        .iter()
        .enumerate()
        .filter_map(|(i, job)| match job {
            Job::Create { run, .. } if super::create::always_created(run) => Some((i, &**run)),
            _ => None,
        })
        .unzip();
    if runs.len() < 2 {
        return Ok(());
    }
    sqlx::query("SAVEPOINT creates").execute(&mut **tx).await?;
    match super::create::create_runs(tx, &runs).await {
        Ok(()) => {
            for (i, run) in indexes.into_iter().zip(runs) {
                results[i] = Some(Done::Create(Ok(Created::Run(run.id.clone()))));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "Creating runs together failed; creating them one by one.");
            sqlx::query("ROLLBACK TO creates").execute(&mut **tx).await?;
        }
    }
    sqlx::query("RELEASE creates").execute(&mut **tx).await?;
    Ok(())
}

/// Rows per multi-row INSERT (SQLite allows 32,766 bound values).
pub(super) const ROWS_PER_INSERT: usize = 256;

/// A write transaction, as `apply` writes through it.
pub(super) struct Tx<'a>(pub(super) &'a mut Transaction<'static, Sqlite>);

with_shared_writes! {
#[async_trait::async_trait]
impl Writer for Tx<'_> {
    async fn lease_owner(&mut self, run_id: &str) -> Result<Option<Option<String>>> {
        // BEGIN IMMEDIATE holds the write lock: nobody changes it under us.
        Ok(sqlx::query_scalar(apply::LEASE_OWNER)
            .bind(run_id)
            .fetch_optional(&mut **self.0)
            .await?)
    }

    async fn insert_run(&mut self, run: &NewRun) -> Result<Created> {
        let tx = &mut *self.0;
        if let (Some(key), true) = (&run.concurrency_key, run.skip_on_conflict) {
            let active: Option<String> = sqlx::query_scalar(apply::ACTIVE_WITH_CONCURRENCY_KEY)
            .bind(key)
            .fetch_optional(&mut **tx)
            .await?;
            if let Some(active) = active {
                return Ok(Created::Skipped { active });
            }
        }
        if let Some(key) = &run.dedupe_key {
            let active: Option<String> = sqlx::query_scalar(apply::ACTIVE_WITH_DEDUPE_KEY)
            .bind(&run.workflow)
            .bind(key)
            .fetch_optional(&mut **tx)
            .await?;
            if let Some(existing) = active {
                return Ok(Created::Duplicate { existing });
            }
        }
        if let Some((schedule, tick)) = &run.schedule_tick {
            let fired: Option<String> = sqlx::query_scalar(apply::TICK_FIRED)
            .bind(schedule)
            .bind(tick)
            .fetch_optional(&mut **tx)
            .await?;
            if let Some(existing) = fired {
                return Ok(Created::Duplicate { existing });
            }
            sqlx::query("INSERT INTO schedule_ticks (schedule, tick_at, run_id) VALUES (?, ?, ?)")
                .bind(schedule)
                .bind(tick)
                .bind(&run.id)
                .execute(&mut **tx)
                .await?;
        }
        super::create::insert_runs(tx, &[run]).await?;
        Ok(Created::Run(run.id.clone()))
    }

    async fn append_audit(&mut self, entry: NewAudit) -> Result<AuditRecord> {
        let records = super::create::append_audits(self.0, vec![entry]).await?;
        Ok(records.into_iter().next().expect("one entry, one record"))
    }

    async fn update_run(&mut self, run_id: &str, u: &RunUpdate) -> Result<()> {
        sqlx::query(
            "UPDATE runs SET status = COALESCE(?, status), started_at = COALESCE(?, started_at), \
             finished_at = CASE WHEN ? THEN NULL ELSE COALESCE(?, finished_at) END, \
             outputs = COALESCE(?, outputs), error = CASE WHEN ? THEN NULL ELSE COALESCE(?, error) END, \
             paused = COALESCE(?, paused), cancelled_by = COALESCE(?, cancelled_by), \
             inputs = COALESCE(?, inputs), verdict = CASE WHEN ? THEN NULL ELSE COALESCE(?, verdict) END WHERE id = ?",
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
        .bind(u.reopen)
        .bind(json(&u.verdict))
        .bind(run_id)
        .execute(&mut **self.0)
        .await?;
        Ok(())
    }

    async fn put_steps(&mut self, run_id: &str, steps: &[&StepRecord]) -> Result<()> {
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
            q.build().execute(&mut **self.0).await?;
        }
        Ok(())
    }

    async fn insert_attempts(&mut self, run_id: &str, attempts: &[&AttemptRecord]) -> Result<()> {
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
            q.build().execute(&mut **self.0).await?;
        }
        Ok(())
    }


    async fn finish_attempt(&mut self, run_id: &str, end: FinishedAttempt<'_>) -> Result<()> {
        sqlx::query(
            "UPDATE attempts SET status = ?, finished_at = ?, error = ?, stdout = ?, stderr = ? \
             WHERE run_id = ? AND step_id = ? AND phase = ? AND n = ?",
        )
        .bind(end.status.as_str())
        .bind(end.finished_at)
        .bind(end.error)
        .bind(end.stdout)
        .bind(end.stderr)
        .bind(run_id)
        .bind(end.step_id)
        .bind(end.phase.as_str())
        .bind(i64::from(end.n))
        .execute(&mut **self.0)
        .await?;
        Ok(())
    }

    async fn insert_events(&mut self, run_id: &str, events: &[NewEvent<'_>]) -> Result<()> {
        for chunk in events.chunks(ROWS_PER_INSERT) {
            let mut q = sqlx::QueryBuilder::<Sqlite>::new(
                "INSERT INTO events (run_id, at, kind, step_id, data) ",
            );
            q.push_values(chunk, |mut b, e| {
                b.push_bind(run_id)
                    .push_bind(e.at)
                    .push_bind(e.kind)
                    .push_bind(e.step_id)
                    .push_bind(e.data.map(Value::to_string));
            });
            q.build().execute(&mut **self.0).await?;
        }
        Ok(())
    }




    async fn notify(&mut self, run_id: &str, n: &NewNotification) -> Result<()> {
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
        .execute(&mut **self.0)
        .await?;
        Ok(())
    }
}
}
