//! The `Store` methods that only read, once for both backends: their SQL is
//! the same text on SQLite and Postgres (`$N` parameters, `CAST`, `= true`),
//! and rows decode through `rows.rs`. A macro, not generic functions, so
//! each backend's `impl Store` gets them with its own pool and migrator.

/// Wraps a backend's `impl Store` (with `self.pool` and a `MIGRATOR`
/// static in scope), adding the shared reads to it.
macro_rules! with_shared_reads {
    ($(#[$attr:meta])* impl Store for $store:ty { $($own:tt)* }) => {
        $(#[$attr])*
        impl Store for $store {
            $($own)*

            async fn definition(&self, hash: &str) -> Result<Option<Definition>> {
                let row = sqlx::query(
                    "SELECT hash, workflow, file, source FROM definitions WHERE hash = $1",
                )
                .bind(hash)
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map(definition_row).transpose()
            }

            async fn run(&self, id: &str) -> Result<Option<RunRecord>> {
                let row = sqlx::query("SELECT * FROM runs WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(run_row).transpose()
            }

            async fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>> {
                let rows = sqlx::query(
                    "SELECT * FROM runs WHERE (CAST($1 AS TEXT) IS NULL OR status = $1) \
                     AND (CAST($2 AS TEXT) IS NULL OR workflow = $2) \
                     AND (CAST($4 AS TEXT) IS NULL OR id < $4) ORDER BY id DESC LIMIT $3",
                )
                .bind(filter.status.map(|s| s.as_str()))
                .bind(&filter.workflow)
                .bind(i64::from(filter.limit.unwrap_or(50)))
                .bind(&filter.before)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(run_row).collect()
            }

            async fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>> {
                let rows = sqlx::query("SELECT * FROM steps WHERE run_id = $1 ORDER BY step_id")
                    .bind(run_id)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(step_row).collect()
            }

            async fn attempts(&self, run_id: &str) -> Result<Vec<AttemptRecord>> {
                let rows = sqlx::query(
                    "SELECT * FROM attempts WHERE run_id = $1 ORDER BY started_at, n, step_id, phase",
                )
                .bind(run_id)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(attempt_row).collect()
            }

            async fn events(&self, run_id: &str, after: i64) -> Result<Vec<EventRecord>> {
                let rows =
                    sqlx::query("SELECT * FROM events WHERE run_id = $1 AND id > $2 ORDER BY id")
                        .bind(run_id)
                        .bind(after)
                        .fetch_all(&self.pool)
                        .await?;
                rows.iter().map(event_row).collect()
            }

            async fn open_requests(&self, run_id: &str) -> Result<Vec<RequestRecord>> {
                let rows = sqlx::query(
                    "SELECT * FROM requests WHERE run_id = $1 AND done_at IS NULL ORDER BY id",
                )
                .bind(run_id)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(request_row).collect()
            }

            async fn workers(&self, since: i64) -> Result<Vec<WorkerStatus>> {
                let rows =
                    sqlx::query("SELECT * FROM workers WHERE heartbeat_at >= $1 ORDER BY started_at")
                        .bind(since)
                        .fetch_all(&self.pool)
                        .await?;
                let leases: Vec<(String, String, i64)> = sqlx::query_as(
                    "SELECT id, lease_owner, lease_expires_at FROM runs WHERE lease_owner IS NOT NULL",
                )
                .fetch_all(&self.pool)
                .await?;
                worker_rows(&rows, &leases)
            }

            async fn audit_list(&self, after: i64, limit: usize) -> Result<Vec<AuditRecord>> {
                let rows = sqlx::query("SELECT * FROM audit WHERE id > $1 ORDER BY id LIMIT $2")
                    .bind(after)
                    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(audit_row).collect()
            }

            async fn last_tick(&self, schedule: &str) -> Result<Option<i64>> {
                Ok(sqlx::query_scalar(
                    "SELECT MAX(tick_at) FROM schedule_ticks WHERE schedule = $1",
                )
                .bind(schedule)
                .fetch_one(&self.pool)
                .await?)
            }

            async fn ping(&self) -> Result<()> {
                let applied: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success = true")
                        .fetch_one(&self.pool)
                        .await?;
                check_migrations(applied, MIGRATOR.iter().count())
            }

            async fn run_counts(&self) -> Result<Vec<(RunStatus, i64)>> {
                let rows: Vec<(String, i64)> =
                    sqlx::query_as("SELECT status, COUNT(*) FROM runs GROUP BY status")
                        .fetch_all(&self.pool)
                        .await?;
                parse_counts(rows)
            }

            async fn outbox(&self, run_id: &str) -> Result<Vec<OutboxRecord>> {
                let rows = sqlx::query("SELECT * FROM outbox WHERE run_id = $1 ORDER BY id")
                    .bind(run_id)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(outbox_row).collect()
            }
        }
    };
}

pub(crate) use with_shared_reads;
