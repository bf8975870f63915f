//! The `Store` methods that only read, once for both backends: their SQL is
//! the same text on SQLite and Postgres (`$N` parameters, `CAST`, `= true`),
//! and rows decode through `rows.rs`. A macro, not generic functions, so
//! each backend's `impl Store` gets them with its own pool and migrator.

/// The SQL of the hot reads, named so that `plans.rs` explains the very text
/// the store runs (docs/query-plans.md).
pub(crate) const RUN: &str = "SELECT * FROM runs WHERE id = $1";
pub(crate) const STEPS: &str = "SELECT * FROM steps WHERE run_id = $1 ORDER BY step_id";
pub(crate) const ATTEMPTS: &str =
    "SELECT * FROM attempts WHERE run_id = $1 ORDER BY started_at, n, step_id, phase";
pub(crate) const EVENTS: &str = "SELECT * FROM events WHERE run_id = $1 AND id > $2 ORDER BY id";
pub(crate) const OPEN_REQUESTS: &str =
    "SELECT * FROM requests WHERE run_id = $1 AND done_at IS NULL ORDER BY id";
pub(crate) const WORKERS: &str =
    "SELECT * FROM workers WHERE heartbeat_at >= $1 ORDER BY started_at";
pub(crate) const LEASES: &str =
    "SELECT id, lease_owner, lease_expires_at FROM runs WHERE lease_owner IS NOT NULL";
pub(crate) const LAST_TICK: &str = "SELECT MAX(tick_at) FROM schedule_ticks WHERE schedule = $1";
/// Active runs only, from the partial index: terminal counts would grow
/// with history (they are `lifeboat_runs_finished_total`).
pub(crate) const RUN_COUNTS: &str =
    concat!("SELECT status, COUNT(*) FROM runs WHERE status IN ", active!(), " GROUP BY status");
pub(crate) const OUTBOX: &str = "SELECT * FROM outbox WHERE run_id = $1 ORDER BY id";
/// Notifications not delivered yet, and the oldest one's creation (metrics):
/// the partial index over pending rows.
pub(crate) const OUTBOX_BACKLOG: &str =
    "SELECT COUNT(*), MIN(created_at) FROM outbox WHERE status = 'pending'";
/// Drill history (`lifeboat drills`), on the partial indexes of migration 0008.
pub(crate) const DRILLS: &str = "SELECT * FROM runs WHERE mode = 'drill' ORDER BY id DESC LIMIT $1";
pub(crate) const DRILLS_OF: &str =
    "SELECT * FROM runs WHERE mode = 'drill' AND workflow = $1 ORDER BY id DESC LIMIT $2";
/// A workflow's drill freshness: its rows of `drill_freshness` (migration
/// 0009), one per scenario and outcome, by the primary key's prefix.
pub(crate) const DRILL_FRESHNESS: &str =
    "SELECT scenario, verdict, run_id, at FROM drill_freshness WHERE workflow = $1";
/// The last successful runs of a workflow in one mode, newest first: the
/// partial index over succeeded runs (migration 0009) in id order, stopped
/// by the limit.
pub(crate) const RECOVERY_RUNS: &str = "SELECT id, started_at, finished_at FROM runs \
     WHERE status = 'succeeded' AND workflow = $1 AND mode = $2 ORDER BY id DESC LIMIT $3";
/// The steps that succeeded of those runs, by each run's key.
pub(crate) const RECOVERY_STEPS: &str = "SELECT run_id, step_id, started_at, finished_at FROM steps \
     WHERE run_id IN (SELECT id FROM runs \
       WHERE status = 'succeeded' AND workflow = $1 AND mode = $2 ORDER BY id DESC LIMIT $3) \
     AND status = 'succeeded'";
pub(crate) const AUDIT_LIST: &str = "SELECT * FROM audit WHERE id > $1 ORDER BY id LIMIT $2";
/// Every run's events after a cursor (`GET /api/v1/events`): the primary key's range.
pub(crate) const EVENTS_AFTER: &str = "SELECT * FROM events WHERE id > $1 ORDER BY id LIMIT $2";
/// The newest event's id (0 when there is none): the primary key's end.
pub(crate) const LAST_EVENT_ID: &str = "SELECT COALESCE(MAX(id), 0) FROM events";

/// Counting runs stops here: a count is for "showing 50 of 1,234", and
/// past this many the exact figure would cost a walk through history.
pub const COUNT_CAP: i64 = 10_000;

/// The run list's SQL for the filters `filter` sets, newest first from its
/// cursor on: each combination is its own text with only its own
/// conditions, so each has an index range to walk (an `($1 IS NULL OR …)`
/// has none). Parameters in order: status, workflow, mode, search, before
/// (each if set), then the limit.
pub(crate) fn runs_sql(filter: &RunFilter) -> String {
    let (conditions, n) = run_conditions(filter, true);
    format!("SELECT * FROM runs{conditions} ORDER BY id DESC LIMIT ${}", n + 1)
}

/// How many runs match `filter` (its cursor and limit aside), counted up to
/// [`COUNT_CAP`] + 1. Parameters as `runs_sql`'s, then the cap.
pub(crate) fn count_runs_sql(filter: &RunFilter) -> String {
    let (conditions, n) = run_conditions(filter, false);
    format!("SELECT COUNT(*) FROM (SELECT 1 FROM runs{conditions} LIMIT ${}) AS matching", n + 1)
}

/// The `WHERE` clause of a run filter and how many parameters it takes.
/// The search is a case-insensitive substring of the id or the workflow
/// (`LOWER(…) LIKE`, with `%`, `_` and `\` escaped by [`like_pattern`]).
fn run_conditions(filter: &RunFilter, with_cursor: bool) -> (String, usize) {
    let mut conditions = Vec::new();
    let mut n = 0;
    let mut next = |condition: &dyn Fn(usize) -> String| {
        n += 1;
        conditions.push(condition(n));
    };
    if filter.status.is_some() {
        next(&|i| format!("status = ${i}"));
    }
    if filter.workflow.is_some() {
        next(&|i| format!("workflow = ${i}"));
    }
    if filter.mode.is_some() {
        next(&|i| format!("mode = ${i}"));
    }
    if filter.search.is_some() {
        next(&|i| {
            format!("(LOWER(id) LIKE ${i} ESCAPE '\\' OR LOWER(workflow) LIKE ${i} ESCAPE '\\')")
        });
    }
    if with_cursor && filter.before.is_some() {
        next(&|i| format!("id < ${i}"));
    }
    let clause = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    (clause, n)
}

/// `text` as a `LIKE … ESCAPE '\'` pattern matching it anywhere, lower case.
pub(crate) fn like_pattern(text: &str) -> String {
    let mut out = String::from("%");
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// Binds a run filter's parameters, in `run_conditions`' order.
macro_rules! bind_run_filter {
    ($query:expr, $filter:expr, $with_cursor:expr) => {{
        let mut query = $query;
        let filter: &RunFilter = $filter;
        if let Some(status) = filter.status {
            query = query.bind(status.as_str());
        }
        if let Some(workflow) = &filter.workflow {
            query = query.bind(workflow.clone());
        }
        if let Some(mode) = filter.mode {
            query = query.bind(mode.as_str());
        }
        if let Some(search) = &filter.search {
            query = query.bind(crate::store::reads::like_pattern(search));
        }
        if $with_cursor && let Some(before) = &filter.before {
            query = query.bind(before.clone());
        }
        query
    }};
}

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
pub(crate) const NEXT_WAKE_SQL: &str = concat!(
    "SELECT MIN(wake_at) FROM runs WHERE status IN ",
    active!(),
    " AND lease_owner IS NULL AND paused = false AND wake_at > $1"
);

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
                select!(&self.pool, optional run_row, crate::store::reads::RUN, id)
            }

            async fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>> {
                let sql = crate::store::reads::runs_sql(filter);
                let query = crate::store::reads::bind_run_filter!(sqlx::query(&sql), filter, true);
                let rows = query
                    .bind(i64::from(filter.limit.unwrap_or(50)))
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(run_row).collect()
            }

            async fn count_runs(&self, filter: &RunFilter) -> Result<i64> {
                let sql = crate::store::reads::count_runs_sql(filter);
                let query = crate::store::reads::bind_run_filter!(sqlx::query_scalar(&sql), filter, false);
                Ok(query
                    .bind(crate::store::reads::COUNT_CAP + 1)
                    .fetch_one(&self.pool)
                    .await?)
            }

            async fn events_after(&self, after: i64, limit: u32) -> Result<Vec<EventRecord>> {
                select!(
                    &self.pool, all event_row, crate::store::reads::EVENTS_AFTER,
                    after, i64::from(limit)
                )
            }

            async fn last_event_id(&self) -> Result<i64> {
                Ok(sqlx::query_scalar(crate::store::reads::LAST_EVENT_ID)
                    .fetch_one(&self.pool)
                    .await?)
            }

            async fn drills(&self, workflow: Option<&str>, limit: u32) -> Result<Vec<RunRecord>> {
                match workflow {
                    Some(w) => select!(
                        &self.pool, all run_row, crate::store::reads::DRILLS_OF, w, i64::from(limit)
                    ),
                    None => select!(
                        &self.pool, all run_row, crate::store::reads::DRILLS, i64::from(limit)
                    ),
                }
            }

            async fn drill_marks(&self, workflow: &str) -> Result<Vec<DrillMark>> {
                let rows: Vec<(String, String, String, i64)> =
                    sqlx::query_as(crate::store::reads::DRILL_FRESHNESS)
                        .bind(workflow)
                        .fetch_all(&self.pool)
                        .await?;
                Ok(crate::store::reads::drill_marks(workflow, rows))
            }

            async fn recovery_samples(
                &self,
                workflow: &str,
                mode: RunMode,
                limit: u32,
            ) -> Result<Vec<RecoverySample>> {
                let runs: Vec<(String, Option<i64>, Option<i64>)> =
                    sqlx::query_as(crate::store::reads::RECOVERY_RUNS)
                        .bind(workflow)
                        .bind(mode.as_str())
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await?;
                let steps: Vec<(String, String, Option<i64>, Option<i64>)> =
                    sqlx::query_as(crate::store::reads::RECOVERY_STEPS)
                        .bind(workflow)
                        .bind(mode.as_str())
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await?;
                Ok(crate::store::reads::recovery_samples(runs, steps))
            }

            async fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>> {
                select!(&self.pool, all step_row, crate::store::reads::STEPS, run_id)
            }

            async fn attempts(&self, run_id: &str) -> Result<Vec<AttemptRecord>> {
                select!(&self.pool, all attempt_row, crate::store::reads::ATTEMPTS, run_id)
            }

            async fn events(&self, run_id: &str, after: i64) -> Result<Vec<EventRecord>> {
                select!(&self.pool, all event_row, crate::store::reads::EVENTS, run_id, after)
            }

            async fn open_requests(&self, run_id: &str) -> Result<Vec<RequestRecord>> {
                select!(&self.pool, all request_row, crate::store::reads::OPEN_REQUESTS, run_id)
            }

            async fn workers(&self, since: i64) -> Result<Vec<WorkerStatus>> {
                let rows = sqlx::query(crate::store::reads::WORKERS)
                    .bind(since)
                    .fetch_all(&self.pool)
                    .await?;
                let leases: Vec<(String, String, i64)> =
                    sqlx::query_as(crate::store::reads::LEASES).fetch_all(&self.pool).await?;
                worker_rows(&rows, &leases)
            }

            async fn audit_list(&self, after: i64, limit: usize) -> Result<Vec<AuditRecord>> {
                select!(
                    &self.pool, all audit_row, crate::store::reads::AUDIT_LIST,
                    after, i64::try_from(limit).unwrap_or(i64::MAX)
                )
            }

            async fn last_tick(&self, schedule: &str) -> Result<Option<i64>> {
                Ok(sqlx::query_scalar(crate::store::reads::LAST_TICK)
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
                    sqlx::query_as(crate::store::reads::RUN_COUNTS).fetch_all(&self.pool).await?;
                parse_counts(rows)
            }

            async fn outbox_backlog(&self) -> Result<(i64, Option<i64>)> {
                Ok(sqlx::query_as(crate::store::reads::OUTBOX_BACKLOG).fetch_one(&self.pool).await?)
            }

            async fn next_wake(&self, now: i64) -> Result<Option<i64>> {
                Ok(sqlx::query_scalar(NEXT_WAKE_SQL).bind(now).fetch_one(&self.pool).await?)
            }

            async fn outbox(&self, run_id: &str) -> Result<Vec<OutboxRecord>> {
                select!(&self.pool, all outbox_row, crate::store::reads::OUTBOX, run_id)
            }
        }
    };
}

pub(crate) use {bind_run_filter, select, with_shared_reads};

/// `drill_freshness` rows as the domain reads them (`''` is no scenario).
pub(crate) fn drill_marks(
    workflow: &str,
    rows: Vec<(String, String, String, i64)>,
) -> Vec<super::DrillMark> {
    rows.into_iter()
        .map(|(scenario, verdict, run_id, at)| super::DrillMark {
            workflow: workflow.to_string(),
            scenario: (!scenario.is_empty()).then_some(scenario),
            passed: verdict == "passed",
            run_id,
            at,
        })
        .collect()
}

/// One sample per run of `runs` (newest first), with its steps from
/// `steps` (a run that succeeded between the two reads is left out).
pub(crate) fn recovery_samples(
    runs: Vec<(String, Option<i64>, Option<i64>)>,
    steps: Vec<(String, String, Option<i64>, Option<i64>)>,
) -> Vec<super::RecoverySample> {
    let mut out: Vec<super::RecoverySample> = runs
        .into_iter()
        .map(|(run_id, started_at, finished_at)| super::RecoverySample {
            run_id,
            started_at,
            finished_at,
            steps: Vec::new(),
        })
        .collect();
    for (run_id, step, from, to) in steps {
        if let (Some(sample), Some(from), Some(to)) =
            (out.iter_mut().find(|s| s.run_id == run_id), from, to)
        {
            sample.steps.push((step, from, to));
        }
    }
    out
}

use super::RunFilter;
