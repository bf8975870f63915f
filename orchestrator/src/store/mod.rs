//! The one seam to the database. The executor talks to `dyn Store` and never
//! knows which database is behind it; only this module runs SQL.
//!
//! Writes go through `commit`: a batch of `Change`s applied atomically, and
//! only while the caller still holds the run's lease (fencing), so a worker
//! that lost its lease can never overwrite its successor's progress.

/// The active run states, as SQL: a literal, so that the partial indexes
/// over active runs (migrations 0001, 0002, 0006) apply to the queries that
/// repeat it.
macro_rules! active {
    () => {
        "('queued','running','waiting','rolling_back')"
    };
}

mod apply;
pub mod audit;
#[cfg(test)]
mod conformance;
#[cfg(test)]
mod conformance_drills;
#[cfg(test)]
mod conformance_more;
#[cfg(test)]
mod conformance_prune;
mod error;
#[cfg(test)]
mod history;
mod ids;
pub mod inspect;
#[cfg(test)]
mod plans;
pub mod postgres;
mod prune;
mod reads;
pub use reads::COUNT_CAP;
mod rows;
pub mod sqlite;
mod types;
pub mod wake;

use std::sync::Arc;

pub use error::{Conflict, Outage, Result, StoreError};
pub use prune::{PruneBatch, PruneCursor, PrunePolicy, Pruned};
use reads::{NEXT_WAKE_SQL, select, with_shared_reads};
pub use types::*;
pub use wake::{Doorbell, Wake};

/// Everything the executor and the CLI need from a database.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// Stores a workflow source under its hash (no-op if present).
    async fn put_definition(&self, def: &Definition) -> Result<()>;
    async fn definition(&self, hash: &str) -> Result<Option<Definition>>;

    /// Creates a run with its steps `pending`, honouring the concurrency key.
    async fn create_run(&self, run: NewRun) -> Result<Created>;

    /// Claims up to `limit` runs that need attention (due, not leased or the
    /// lease expired, not paused, not blocked by a concurrency key). Runs the
    /// worker already holds are not returned again.
    async fn claim(
        &self,
        worker: &str,
        lease: Lease,
        limit: usize,
        only: Option<&str>,
    ) -> Result<Vec<String>>;
    /// Extends every lease `worker` holds; returns the runs still held.
    async fn renew(&self, worker: &str, lease: Lease) -> Result<Vec<String>>;
    /// Gives a run back, to be claimed again at `wake_at` (or when a request arrives).
    async fn release(&self, worker: &str, run_id: &str, wake_at: Option<i64>) -> Result<()>;
    /// Applies `changes` atomically if `worker` still holds the lease on `run_id`.
    async fn commit(&self, worker: &str, run_id: &str, changes: &[Change]) -> Result<()>;

    async fn run(&self, id: &str) -> Result<Option<RunRecord>>;
    /// Resolves a unique prefix of a run id (operators type the first characters).
    async fn resolve_run_id(&self, prefix: &str) -> Result<String>;
    async fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>>;
    /// How many runs match `filter` (cursor and limit aside), counted up to
    /// `reads::COUNT_CAP` + 1: more than the cap reads as "10,000+".
    async fn count_runs(&self, filter: &RunFilter) -> Result<i64>;
    /// Every run's events after event `after`, oldest first, at most `limit`.
    async fn events_after(&self, after: i64, limit: u32) -> Result<Vec<EventRecord>>;
    /// The newest event's id, 0 when there is none.
    async fn last_event_id(&self) -> Result<i64>;
    /// Drill runs, newest first: of `workflow`, or of every workflow.
    async fn drills(&self, workflow: Option<&str>, limit: u32) -> Result<Vec<RunRecord>>;
    /// The freshness of `workflow`'s drills: per scenario and outcome
    /// (passed, failed), the newest drill with a verdict (`drill_freshness`,
    /// written with each verdict; a read by key, never of the history).
    async fn drill_marks(&self, workflow: &str) -> Result<Vec<DrillMark>>;
    /// The last `limit` successful runs of `workflow` in `mode`, newest
    /// first, with the timings of their steps that succeeded.
    async fn recovery_samples(
        &self,
        workflow: &str,
        mode: RunMode,
        limit: u32,
    ) -> Result<Vec<RecoverySample>>;
    /// Claims the overdue periods of `claim` that nobody claimed yet, and
    /// with them (in the same commit) queues its notifications and appends
    /// its audit entry; none of that when every period was claimed before.
    /// Exactly one caller across replicas claims a period. Returns the
    /// periods this call claimed.
    async fn claim_drill_overdue(&self, claim: &OverdueClaim) -> Result<Vec<(String, i64)>>;
    async fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>>;
    async fn attempts(&self, run_id: &str) -> Result<Vec<AttemptRecord>>;
    async fn events(&self, run_id: &str, after: i64) -> Result<Vec<EventRecord>>;

    /// Queues an operator request and makes the run due for attention.
    async fn request(&self, req: NewRequest) -> Result<i64>;
    async fn open_requests(&self, run_id: &str) -> Result<Vec<RequestRecord>>;
    /// Steps waiting for people across all active runs.
    async fn pending_people(&self) -> Result<Vec<(RunRecord, StepRecord)>>;

    async fn register_worker(&self, worker: &WorkerRecord) -> Result<()>;
    /// Workers whose heartbeat is newer than `since`, with their leases.
    async fn workers(&self, since: i64) -> Result<Vec<WorkerStatus>>;

    /// Appends an entry chained to the previous one; appends are serialized.
    async fn audit_append(&self, entry: NewAudit) -> Result<AuditRecord>;
    /// Entries with `id > after`, oldest first.
    async fn audit_list(&self, after: i64, limit: usize) -> Result<Vec<AuditRecord>>;
    /// Remembers a webhook signature accepted at `now` until `expires_at`
    /// (unix ms), atomically across replicas: `replay` if it was already
    /// remembered. Expired signatures (of every hook) are pruned first.
    async fn remember_signature(
        &self,
        hook: &str,
        signature: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<Remembered>;
    /// The newest tick that fired for `schedule`.
    async fn last_tick(&self, schedule: &str) -> Result<Option<i64>>;
    /// The database answers and its schema is current.
    async fn ping(&self) -> Result<()>;
    /// Active runs per status (queued, running, waiting, rolling_back),
    /// from the partial index over active runs. Terminal runs are not
    /// counted: that would read all of history on every scrape (they are
    /// the `lifeboat_runs_finished_total` counter).
    async fn run_counts(&self) -> Result<Vec<(RunStatus, i64)>>;
    /// Notifications waiting to be delivered: how many, and when the oldest
    /// was queued (a stuck outbox grows old).
    async fn outbox_backlog(&self) -> Result<(i64, Option<i64>)>;

    /// Claims up to `limit` due outbox rows for `lease_ms` (another
    /// dispatcher may take a row over once that passes). Per run and
    /// channel only the oldest pending row is claimable, so one incident's
    /// messages (trigger, acknowledge, resolve) arrive in order.
    async fn outbox_claim(
        &self,
        worker: &str,
        now: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<OutboxRecord>>;
    /// Records how a delivery attempt ended; a final outcome of a row that a
    /// step waits for wakes its run.
    async fn outbox_finish(&self, id: i64, outcome: OutboxOutcome) -> Result<()>;
    /// A run's notifications, oldest first.
    async fn outbox(&self, run_id: &str) -> Result<Vec<OutboxRecord>>;

    /// This process's doorbell (`wake.rs`), rung by every write here that
    /// can make a run due and, once `listen` was called, by other processes'.
    fn doorbell(&self) -> &Doorbell;
    /// Starts hearing other processes' rings (idempotent). Workers call it;
    /// a command that only writes never needs to. An error leaves wake-ups
    /// from other processes to the poll.
    async fn listen(&self) -> Result<()>;
    /// The earliest timer after `now`: the smallest `wake_at` past `now` of
    /// an active run that nobody holds and that is not paused.
    async fn next_wake(&self, now: i64) -> Result<Option<i64>>;
    /// One batch of retention (`prune.rs`), in a short transaction of its
    /// own: of the next `limit` ended runs after `after`, the whole trees
    /// that `policy` lets go are deleted with every row keyed by their runs
    /// (or counted: `dry_run`). Never an active run, a run with an active
    /// relative, or the audit log. `next` is where the following batch
    /// starts; `None` when the pass is over.
    async fn prune_runs(
        &self,
        policy: &PrunePolicy,
        after: Option<&PruneCursor>,
        limit: usize,
        dry_run: bool,
    ) -> Result<PruneBatch>;
    /// Deletes at most `limit` each of schedule ticks older than
    /// `ticks_before` (never a schedule's latest, which its catch-up starts
    /// from) and webhook signatures expired at `now`. A dry run counts them all.
    async fn prune_markers(
        &self,
        ticks_before: Option<i64>,
        now: i64,
        limit: usize,
        dry_run: bool,
    ) -> Result<Pruned>;
}

/// Opens the store named by `url` (`sqlite://…`, `postgres://…`) and applies migrations.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::open(url).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Arc::new(postgres::PostgresStore::open(url).await?))
    } else {
        Err(StoreError::Config(format!(
            "unsupported database URL `{url}`: use sqlite://PATH or postgres://USER@HOST/DB"
        )))
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// An insert into `requests` refused by `requests_one_open_decision` (a
/// person's decision on a step is queued once) as the conflict it is.
fn decision_conflict(e: sqlx::Error, req: &NewRequest) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => Conflict::Exists(format!(
            "{} already has a decision on step `{}` queued that the run's worker has not applied yet",
            req.actor,
            req.step_id.as_deref().unwrap_or("?")
        ))
        .into(),
        _ => e.into(),
    }
}

/// `ping`'s verdict: every migration this binary knows is applied.
fn check_migrations(applied: i64, known: usize) -> Result<()> {
    if (applied as usize) < known {
        return Err(StoreError::SchemaBehind(format!(
            "database schema is behind: {applied} of {known} migrations applied; run `lifeboat migrate`"
        )));
    }
    Ok(())
}

/// `outbox_finish` in the backend's open transaction `$tx`, the same
/// statements on both (`$N` parameters, `= true`): the row takes the
/// outcome's columns if it is still pending, and once it is settled, the run
/// of a step waiting for it (a `required: true` notify) is woken. `$text`
/// prepares text for the backend (Postgres: no NUL bytes).
macro_rules! finish_outbox {
    ($tx:ident, $id:expr, $outcome:expr, $text:path) => {{
        let (status, next_at, error, detail) = outbox_update($outcome);
        let waiting: Option<Option<String>> = sqlx::query_scalar(
            "UPDATE outbox SET status = $1, next_at = COALESCE($2, next_at), \
             last_error = COALESCE($3, last_error), detail = COALESCE($4, detail), \
             finished_at = CASE WHEN $1 = 'pending' THEN NULL ELSE $5 END \
             WHERE id = $6 AND status = 'pending' \
             RETURNING CASE WHEN step_id IS NULL THEN NULL ELSE run_id END",
        )
        .bind(status.as_str())
        .bind(next_at)
        .bind(error.map($text))
        .bind(detail.map($text))
        .bind(now_ms())
        .bind($id)
        .fetch_optional(&mut *$tx)
        .await?;
        if let (Some(Some(run_id)), false) = (waiting, status == OutboxStatus::Pending) {
            sqlx::query("UPDATE runs SET wake_at = NULL, woken = true WHERE id = $1")
                .bind(run_id)
                .execute(&mut *$tx)
                .await?;
            true
        } else {
            false
        }
    }};
}
use finish_outbox;

/// The columns an outbox outcome sets: (status, next_at, last_error, detail).
fn outbox_update(
    outcome: &OutboxOutcome,
) -> (OutboxStatus, Option<i64>, Option<&str>, Option<&str>) {
    match outcome {
        OutboxOutcome::Delivered { detail } => {
            (OutboxStatus::Delivered, None, None, Some(detail.as_str()))
        }
        OutboxOutcome::Retry { error, at } => {
            (OutboxStatus::Pending, Some(*at), Some(error.as_str()), None)
        }
        OutboxOutcome::Failed { error } => (OutboxStatus::Failed, None, Some(error.as_str()), None),
    }
}
