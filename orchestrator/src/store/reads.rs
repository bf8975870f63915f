//! The `Store` methods that only read, once for both backends: their SQL is
//! the same text on SQLite and Postgres (`$N` parameters, `CAST`, `= true`),
//! and rows decode through `rows.rs`. A macro, not generic functions, so
//! each backend's `impl Store` gets them with its own pool and migrator.

/// One query of a shared read: `$sql` with its parameters bound in order,
/// fetched from `$pool`, every row (`all`) or at most one (`optional`)
/// decoded by `$decode`.
macro_rules! select {
    ($pool:expr, all $decode:path, $sql:expr $(, $bind:expr)* $(,)?) => {{
        let rows = sqlx::query($sql)$(.bind($bind))*.fetch_all($pool).await?;
        rows.iter().map($decode).collect()
    }};
    ($pool:expr, optional $decode:path, $sql:expr $(, $bind:expr)* $(,)?) => {{
        let row = sqlx::query($sql)$(.bind($bind))*.fetch_optional($pool).await?;
        row.as_ref().map($decode).transpose()
    }};
}

/// `Store::next_wake`: the statuses are a literal, like the claim's, so a
/// partial index over active runs applies.
pub(crate) const NEXT_WAKE_SQL: &str = "SELECT MIN(wake_at) FROM runs \
     WHERE status IN ('queued','running','waiting','rolling_back') \
     AND lease_owner IS NULL AND paused = false AND wake_at > $1";

/// Wraps a backend's `impl Store` (with `self.pool` and a `MIGRATOR`
/// static in scope), adding the shared reads to it.
macro_rules! with_shared_reads {
    ($(#[$attr:meta])* impl Store for $store:ty { $($own:tt)* }) => {
        $(#[$attr])*
        impl Store for $store {
            $($own)*

            async fn definition(&self, hash: &str) -> Result<Option<Definition>> {
                select!(
                    &self.pool, optional definition_row,
                    "SELECT hash, workflow, file, source FROM definitions WHERE hash = $1", hash
                )
            }

            async fn run(&self, id: &str) -> Result<Option<RunRecord>> {
                select!(&self.pool, optional run_row, "SELECT * FROM runs WHERE id = $1", id)
            }

            async fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>> {
                select!(
                    &self.pool, all run_row,
                    "SELECT * FROM runs WHERE (CAST($1 AS TEXT) IS NULL OR status = $1) \
                     AND (CAST($2 AS TEXT) IS NULL OR workflow = $2) \
                     AND (CAST($4 AS TEXT) IS NULL OR id < $4) ORDER BY id DESC LIMIT $3",
                    filter.status.map(|s| s.as_str()),
                    &filter.workflow,
                    i64::from(filter.limit.unwrap_or(50)),
                    &filter.before,
                )
            }

            async fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>> {
                select!(
                    &self.pool, all step_row,
                    "SELECT * FROM steps WHERE run_id = $1 ORDER BY step_id", run_id
                )
            }

            async fn attempts(&self, run_id: &str) -> Result<Vec<AttemptRecord>> {
                select!(
                    &self.pool, all attempt_row,
                    "SELECT * FROM attempts WHERE run_id = $1 ORDER BY started_at, n, step_id, phase",
                    run_id
                )
            }

            async fn events(&self, run_id: &str, after: i64) -> Result<Vec<EventRecord>> {
                select!(
                    &self.pool, all event_row,
                    "SELECT * FROM events WHERE run_id = $1 AND id > $2 ORDER BY id", run_id, after
                )
            }

            async fn open_requests(&self, run_id: &str) -> Result<Vec<RequestRecord>> {
                select!(
                    &self.pool, all request_row,
                    "SELECT * FROM requests WHERE run_id = $1 AND done_at IS NULL ORDER BY id",
                    run_id
                )
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
                select!(
                    &self.pool, all audit_row,
                    "SELECT * FROM audit WHERE id > $1 ORDER BY id LIMIT $2",
                    after, i64::try_from(limit).unwrap_or(i64::MAX)
                )
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

            async fn next_wake(&self, now: i64) -> Result<Option<i64>> {
                Ok(sqlx::query_scalar(NEXT_WAKE_SQL).bind(now).fetch_one(&self.pool).await?)
            }

            async fn outbox(&self, run_id: &str) -> Result<Vec<OutboxRecord>> {
                select!(
                    &self.pool, all outbox_row,
                    "SELECT * FROM outbox WHERE run_id = $1 ORDER BY id", run_id
                )
            }
        }
    };
}

pub(crate) use {select, with_shared_reads};
