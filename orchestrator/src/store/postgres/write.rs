//! Writing: the SQL of each piece of a transition (`apply::Writer`) —
//! run creation under advisory locks, audit appends under their lock, step
//! rows, attempts and events each in one `UNNEST` statement (one round trip
//! and one cached prepared statement whatever the batch size). The order
//! and the checks are `apply`'s.

use super::*;
use crate::store::apply::{self, FinishedAttempt, NewEvent, Writer};

/// A run's lease owner, its row locked until the transaction ends.
pub(in crate::store) const LEASE_OWNER_FOR_UPDATE: &str =
    "SELECT lease_owner FROM runs WHERE id = $1 FOR UPDATE";

/// An open transaction, as `apply` writes through it.
pub(super) struct Tx<'a>(pub(super) &'a mut Transaction<'static, Postgres>);

impl Tx<'_> {
    /// The next audit entry, under the lock that serializes appends (held to commit).
    pub(super) async fn next_audit(&mut self, entry: NewAudit) -> Result<AuditRecord> {
        let tx = &mut *self.0;
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(AUDIT_LOCK).execute(&mut **tx).await?;
        let last: Option<(i64, String)> =
            sqlx::query_as(audit::LAST).fetch_optional(&mut **tx).await?;
        let mut clean = entry;
        clean.actor = text(&clean.actor).into_owned();
        clean.action = text(&clean.action).into_owned();
        Ok(audit::next_record(last, clean, now_ms()))
    }

    pub(super) async fn insert_audit(&mut self, record: &AuditRecord) -> Result<()> {
        let tx = &mut *self.0;
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
}

#[async_trait::async_trait]
impl Writer for Tx<'_> {
    async fn lease_owner(&mut self, run_id: &str) -> Result<Option<Option<String>>> {
        // The row lock fences: a worker taking the run over waits for this
        // transaction, and this one sees the lease as it is now.
        Ok(sqlx::query_scalar(LEASE_OWNER_FOR_UPDATE)
            .bind(run_id)
            .fetch_optional(&mut **self.0)
            .await?)
    }

    async fn insert_run(&mut self, run: &NewRun) -> Result<Created> {
        let tx = &mut *self.0;
        if let Some(key) = &run.concurrency_key {
            // Serializes every creation with this key across replicas until commit;
            // READ COMMITTED gives the check below a snapshot taken after the lock.
            sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
                .bind(CONCURRENCY_LOCK_SPACE)
                .bind(key)
                .execute(&mut **tx)
                .await?;
            if run.skip_on_conflict {
                let active: Option<String> = sqlx::query_scalar(apply::ACTIVE_WITH_CONCURRENCY_KEY)
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
                let existing: String = sqlx::query_scalar(apply::TICK_FIRED)
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
             parent_run_id, parent_step_id, root_run_id, created_at, lease_owner, lease_expires_at, dedupe_key, pins, \
             mode, scenario, drill) \
             VALUES ($1, $2, $3, 'queued', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
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
        .bind(run.mode.as_str())
        .bind(&run.scenario)
        .bind(run.drill.as_ref().map(json))
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

    async fn append_audit(&mut self, entry: NewAudit) -> Result<AuditRecord> {
        let record = self.next_audit(entry).await?;
        self.insert_audit(&record).await?;
        Ok(record)
    }

    async fn update_run(&mut self, run_id: &str, u: &RunUpdate) -> Result<()> {
        sqlx::query(
            "UPDATE runs SET status = COALESCE($1, status), started_at = COALESCE($2, started_at), \
             finished_at = CASE WHEN $3 THEN NULL ELSE COALESCE($4, finished_at) END, \
             outputs = COALESCE($5, outputs), error = CASE WHEN $3 THEN NULL ELSE COALESCE($6, error) END, \
             paused = COALESCE($7, paused), cancelled_by = COALESCE($8, cancelled_by), \
             inputs = COALESCE($9, inputs), verdict = CASE WHEN $3 THEN NULL ELSE COALESCE($11, verdict) END WHERE id = $10",
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
        .bind(opt_json(&u.verdict))
        .execute(&mut **self.0)
        .await?;
        Ok(())
    }

    async fn put_steps(&mut self, run_id: &str, steps: &[&StepRecord]) -> Result<()> {
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
        .execute(&mut **self.0)
        .await?;
        Ok(())
    }

    async fn insert_attempts(&mut self, run_id: &str, attempts: &[&AttemptRecord]) -> Result<()> {
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
        .execute(&mut **self.0)
        .await?;
        Ok(())
    }

    async fn finish_attempt(&mut self, run_id: &str, end: FinishedAttempt<'_>) -> Result<()> {
        sqlx::query(
            "UPDATE attempts SET status = $1, finished_at = $2, error = $3, stdout = $4, stderr = $5 \
             WHERE run_id = $6 AND step_id = $7 AND phase = $8 AND n = $9",
        )
        .bind(end.status.as_str())
        .bind(end.finished_at)
        .bind(end.error.map(text))
        .bind(end.stdout.map(text))
        .bind(end.stderr.map(text))
        .bind(run_id)
        .bind(end.step_id)
        .bind(end.phase.as_str())
        .bind(i64::from(end.n))
        .execute(&mut **self.0)
        .await?;
        Ok(())
    }

    async fn insert_events(&mut self, run_id: &str, events: &[NewEvent<'_>]) -> Result<()> {
        // WITH ORDINALITY … ORDER BY: ids are handed out in the batch's order.
        sqlx::query(
            "INSERT INTO events (run_id, at, kind, step_id, data) \
             SELECT $1, e.at, e.kind, e.step_id, e.data \
             FROM UNNEST($2::int8[], $3::text[], $4::text[], $5::jsonb[]) \
               WITH ORDINALITY AS e(at, kind, step_id, data, ord) ORDER BY e.ord",
        )
        .bind(run_id)
        .bind(events.iter().map(|e| e.at).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.kind).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.step_id).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.data.map(json)).collect::<Vec<_>>())
        .execute(&mut **self.0)
        .await?;
        Ok(())
    }

    async fn notify(&mut self, run_id: &str, n: &NewNotification) -> Result<()> {
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
        .execute(&mut **self.0)
        .await?;
        Ok(())
    }

    async fn renew_leases(&mut self, worker: &str, lease: Lease) -> Result<Vec<String>> {
        let mut ids: Vec<String> = sqlx::query_scalar(crate::store::apply::RENEW)
            .bind(lease.now + lease.duration_ms)
            .bind(worker)
            .bind(lease.now)
            .fetch_all(&mut **self.0)
            .await?;
        sqlx::query(crate::store::apply::HEARTBEAT)
            .bind(lease.now)
            .bind(worker)
            .execute(&mut **self.0)
            .await?;
        ids.sort();
        Ok(ids)
    }

    async fn set_pgid(
        &mut self,
        run_id: &str,
        step_id: &str,
        phase: Phase,
        n: u32,
        pgid: u32,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE attempts SET pgid = $1 \
                     WHERE run_id = $2 AND step_id = $3 AND phase = $4 AND n = $5",
        )
        .bind(i64::from(pgid))
        .bind(run_id)
        .bind(step_id)
        .bind(phase.as_str())
        .bind(i64::from(n))
        .execute(&mut **self.0)
        .await?;
        Ok(())
    }

    async fn request_done(&mut self, id: i64, at: i64) -> Result<()> {
        sqlx::query(crate::store::apply::REQUEST_DONE)
            .bind(at)
            .bind(id)
            .execute(&mut **self.0)
            .await?;
        Ok(())
    }

    async fn wake(&mut self, run_id: &str) -> Result<()> {
        sqlx::query(crate::store::apply::WAKE).bind(run_id).execute(&mut **self.0).await?;
        Ok(())
    }

    async fn mark_drill(&mut self, run_id: &str, passed: bool, at: i64) -> Result<()> {
        sqlx::query(crate::store::apply::MARK_DRILL)
            .bind(run_id)
            .bind(if passed { "passed" } else { "failed" })
            .bind(at)
            .execute(&mut **self.0)
            .await?;
        Ok(())
    }

    async fn claim_period(
        &mut self,
        workflow: &str,
        scenario: &str,
        due_at: i64,
        now: i64,
    ) -> Result<bool> {
        let done = sqlx::query(crate::store::apply::CLAIM_PERIOD)
            .bind(workflow)
            .bind(scenario)
            .bind(due_at)
            .bind(now)
            .execute(&mut **self.0)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn release(&mut self, run_id: &str, wake_at: Option<i64>) -> Result<()> {
        sqlx::query(crate::store::apply::RELEASE_IN_COMMIT)
            .bind(wake_at)
            .bind(run_id)
            .execute(&mut **self.0)
            .await?;
        Ok(())
    }
}
