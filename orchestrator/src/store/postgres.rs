//! Postgres backend: several `lifeboat serve` replicas share one database.
//!
//! The reference behaviour is `sqlite.rs`; this file is the same seam in
//! Postgres terms:
//! - claiming is `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED LIMIT n)`,
//!   so replicas never wait on, or both take, the same run;
//! - `commit` locks the run's row (`SELECT lease_owner … FOR UPDATE`), checks the
//!   lease (fencing) and applies the changes in the same transaction;
//! - migrations run under an advisory lock, so replicas starting together apply
//!   them once;
//! - `create_run` with `on_conflict: skip` checks and inserts under a
//!   transaction-scoped advisory lock on the concurrency key;
//! - a run's events are only inserted while its row is locked, so within a run
//!   event ids commit in order and `events(run, after)` never skips one;
//! - deadlocks (two commits waking each other's runs, a renew crossing a
//!   commit) roll back whole and are retried.
//!
//! Times are unix milliseconds (BIGINT) and JSON is `jsonb`; see
//! migrations/postgres/0001_init.sql.

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{Connection, Postgres, Row, Transaction};

use super::*;

pub struct PostgresStore {
    pool: PgPool,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// Session advisory lock held around migrations ("lifeboat" in ASCII). sqlx's
/// migrator takes its own lock too; this one does not depend on it.
const MIGRATION_LOCK: i64 = 0x6c69_6665_626f_6174;
/// First key of the two-key advisory locks on concurrency keys ("lbck").
const CONCURRENCY_LOCK_SPACE: i32 = 0x6c62_636b;
/// First key of the advisory locks on webhook dedupe keys ("lbdd").
const DEDUPE_LOCK_SPACE: i32 = 0x6c62_6464;
/// Advisory lock serializing audit appends ("lbaudit!").
const AUDIT_LOCK: i64 = 0x6c62_6175_6469_7421;
/// Connections per process: commits, claims and the CLI's reads.
const MAX_CONNECTIONS: u32 = 16;
/// Tries of a transaction that failed on a deadlock or serialization failure.
const TRANSIENT_TRIES: u32 = 8;

/// The active run states, as SQL (a literal, so the partial index applies).
macro_rules! active {
    () => {
        "('queued','running','waiting','rolling_back')"
    };
}

impl PostgresStore {
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_with(PgConnectOptions::from_str(url)?).await
    }

    pub async fn open_with(options: PgConnectOptions) -> Result<Self> {
        let options = if options.get_application_name().is_none() {
            options.application_name("lifeboat")
        } else {
            options
        };
        migrate(&options).await?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await?;
        Ok(PostgresStore { pool })
    }
}

/// Applies the migrations on a connection of its own, holding an advisory lock:
/// replicas that start together queue here and the later ones find nothing to
/// do. The connection is closed afterwards, which releases every session lock
/// even when a migration failed half-way (sqlx's migrator does not unlock on
/// error, so this must never be a pooled connection).
async fn migrate(options: &PgConnectOptions) -> Result<()> {
    let mut conn = PgConnection::connect_with(options).await?;
    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(MIGRATION_LOCK)
        .fetch_one(&mut conn)
        .await?;
    if !got {
        tracing::info!("another lifeboat process is migrating the database; waiting for it");
        sqlx::query("SELECT pg_advisory_lock($1)").bind(MIGRATION_LOCK).execute(&mut conn).await?;
    }
    // `run_direct` is `run` on a connection; `run(&mut conn)` makes this future
    // not `Send` (sqlx's `Acquire` is "not general enough").
    let result = MIGRATOR.run_direct(&mut conn).await;
    if result.is_ok() {
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut conn)
            .await?;
    }
    let _ = conn.close().await;
    Ok(result?)
}

/// A deadlock or serialization failure: the transaction was rolled back whole
/// and may simply run again.
fn is_transient(err: &StoreError) -> bool {
    match err {
        StoreError::Database(sqlx::Error::Database(db)) => {
            matches!(db.code().as_deref(), Some("40P01" | "40001"))
        }
        _ => false,
    }
}

/// Runs `attempt` (one whole transaction) again while it fails transiently.
async fn retrying<T, F, Fut>(mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut tries = 1;
    loop {
        match attempt().await {
            Err(e) if is_transient(&e) && tries < TRANSIENT_TRIES => {
                tracing::debug!("retrying a transaction after: {e}");
                tokio::time::sleep(Duration::from_millis(fastrand::u64(1..=10 * tries as u64)))
                    .await;
                tries += 1;
            }
            other => return other,
        }
    }
}

/// Postgres text cannot hold NUL characters (SQLite can): replace them so a
/// step printing a NUL byte cannot make every commit of its run fail.
fn text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') { Cow::Owned(s.replace('\0', "\u{FFFD}")) } else { Cow::Borrowed(s) }
}

fn opt_text(s: &Option<String>) -> Option<Cow<'_, str>> {
    s.as_deref().map(text)
}

/// jsonb rejects `\u0000` in strings and keys: the same replacement as `text`.
fn json(v: &Value) -> Json<Cow<'_, Value>> {
    fn has_nul(v: &Value) -> bool {
        match v {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items.iter().any(has_nul),
            Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
            _ => false,
        }
    }
    fn clean(v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(text(s).into_owned()),
            Value::Array(items) => Value::Array(items.iter().map(clean).collect()),
            Value::Object(map) => {
                Value::Object(map.iter().map(|(k, v)| (text(k).into_owned(), clean(v))).collect())
            }
            other => other.clone(),
        }
    }
    Json(if has_nul(v) { Cow::Owned(clean(v)) } else { Cow::Borrowed(v) })
}

fn opt_json(v: &Option<Value>) -> Option<Json<Cow<'_, Value>>> {
    v.as_ref().map(json)
}

fn count(n: i64, what: &str) -> Result<u32> {
    u32::try_from(n).map_err(|_| StoreError::Corrupt(format!("{what} {n} out of range")))
}

/// Creates a run (in the caller's transaction) unless its concurrency key,
/// dedupe key or schedule tick says it exists already; writes nothing then.
async fn insert_run(tx: &mut Transaction<'static, Postgres>, run: &NewRun) -> Result<Created> {
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
async fn next_audit(
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
async fn append_audit(
    tx: &mut Transaction<'static, Postgres>,
    entry: NewAudit,
) -> Result<AuditRecord> {
    let record = next_audit(tx, entry).await?;
    insert_audit(tx, &record).await?;
    Ok(record)
}

async fn insert_audit(tx: &mut Transaction<'static, Postgres>, record: &AuditRecord) -> Result<()> {
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

fn outbox_row(row: &PgRow) -> Result<OutboxRecord> {
    let status: String = row.try_get("status")?;
    Ok(OutboxRecord {
        id: row.try_get("id")?,
        dedupe_key: row.try_get("dedupe_key")?,
        run_id: row.try_get("run_id")?,
        step_id: row.try_get("step_id")?,
        event: row.try_get("event")?,
        channel: row.try_get("channel")?,
        message: row.try_get("message")?,
        status: OutboxStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("outbox status `{status}`")))?,
        attempts: count(row.try_get("attempts")?, "outbox attempts")?,
        next_at: row.try_get("next_at")?,
        last_error: row.try_get("last_error")?,
        detail: row.try_get("detail")?,
        created_at: row.try_get("created_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

fn run_row(row: &PgRow) -> Result<RunRecord> {
    let status: String = row.try_get("status")?;
    Ok(RunRecord {
        id: row.try_get("id")?,
        workflow: row.try_get("workflow")?,
        definition_hash: row.try_get("definition_hash")?,
        status: RunStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("run status `{status}`")))?,
        inputs: row.try_get("inputs")?,
        outputs: row.try_get("outputs")?,
        trigger: row.try_get("trigger")?,
        concurrency_key: row.try_get("concurrency_key")?,
        parent_run_id: row.try_get("parent_run_id")?,
        parent_step_id: row.try_get("parent_step_id")?,
        root_run_id: row.try_get("root_run_id")?,
        cancelled_by: row.try_get("cancelled_by")?,
        paused: row.try_get("paused")?,
        error: row.try_get("error")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        wake_at: row.try_get("wake_at")?,
        lease_owner: row.try_get("lease_owner")?,
        lease_expires_at: row.try_get("lease_expires_at")?,
        pins: row.try_get::<Option<Value>, _>("pins")?.map(super::pins_from_json).transpose()?,
    })
}

fn step_row(row: &PgRow) -> Result<StepRecord> {
    let status: String = row.try_get("status")?;
    Ok(StepRecord {
        run_id: row.try_get("run_id")?,
        step_id: row.try_get("step_id")?,
        status: StepStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("step status `{status}`")))?,
        attempts: count(row.try_get("attempts")?, "attempts")?,
        outputs: row.try_get("outputs")?,
        error: row.try_get("error")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        wake_at: row.try_get("wake_at")?,
        state: row.try_get("state")?,
        rollback: row.try_get("rollback")?,
    })
}

fn attempt_row(row: &PgRow) -> Result<AttemptRecord> {
    let status: String = row.try_get("status")?;
    let phase: String = row.try_get("phase")?;
    Ok(AttemptRecord {
        run_id: row.try_get("run_id")?,
        step_id: row.try_get("step_id")?,
        phase: Phase::parse(&phase)
            .ok_or_else(|| StoreError::Corrupt(format!("phase `{phase}`")))?,
        n: count(row.try_get("n")?, "attempt number")?,
        status: AttemptStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("attempt status `{status}`")))?,
        worker: row.try_get("worker")?,
        pgid: row.try_get::<Option<i64>, _>("pgid")?.map(|p| count(p, "pgid")).transpose()?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        error: row.try_get("error")?,
        stdout: row.try_get("stdout")?,
        stderr: row.try_get("stderr")?,
    })
}

fn request_row(row: &PgRow) -> Result<RequestRecord> {
    let kind: String = row.try_get("kind")?;
    Ok(RequestRecord {
        id: row.try_get("id")?,
        run_id: row.try_get("run_id")?,
        kind: RequestKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("request `{kind}`")))?,
        step_id: row.try_get("step_id")?,
        data: row.try_get("data")?,
        actor: row.try_get("actor")?,
        at: row.try_get("at")?,
    })
}

impl PostgresStore {
    async fn create_run_once(&self, run: &NewRun) -> Result<Created> {
        let mut tx = self.pool.begin().await?;
        let created = insert_run(&mut tx, run).await?;
        if let Some(entry) = run.audit.clone() {
            append_audit(&mut tx, entry.about(&created)).await?;
        }
        tx.commit().await?;
        Ok(created)
    }

    async fn claim_once(
        &self,
        worker: &str,
        lease: Lease,
        limit: usize,
        only: Option<&str>,
    ) -> Result<Vec<String>> {
        // Due, unleased (or lease expired), not paused unless a request waits,
        // and for queued runs: no older active run holds the concurrency key.
        // SKIP LOCKED: rows another replica is claiming or committing are left
        // to it (they are leased or busy anyway) instead of waited for.
        const SQL: &str = concat!(
            "UPDATE runs SET lease_owner = $1, lease_expires_at = $2, woken = false WHERE id IN ( \
               SELECT r.id FROM runs r WHERE r.status IN ",
            active!(),
            " AND (r.lease_owner IS NULL OR r.lease_expires_at < $3) \
                 AND (r.wake_at IS NULL OR r.wake_at <= $3) \
                 AND (NOT r.paused OR EXISTS (SELECT 1 FROM requests q WHERE q.run_id = r.id AND q.done_at IS NULL)) \
                 AND ($5::text IS NULL OR r.root_run_id = $5::text) \
                 AND NOT (r.status = 'queued' AND r.concurrency_key IS NOT NULL AND EXISTS ( \
                   SELECT 1 FROM runs o WHERE o.concurrency_key = r.concurrency_key AND o.id < r.id \
                     AND o.status IN ",
            active!(),
            ")) ORDER BY r.id LIMIT $4 FOR UPDATE SKIP LOCKED) RETURNING id"
        );
        let mut ids: Vec<String> = sqlx::query_scalar(SQL)
            .bind(worker)
            .bind(lease.now + lease.duration_ms)
            .bind(lease.now)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(only)
            .fetch_all(&self.pool)
            .await?;
        ids.sort();
        Ok(ids)
    }

    async fn renew_once(&self, worker: &str, lease: Lease) -> Result<Vec<String>> {
        let mut tx = self.pool.begin().await?;
        let mut ids: Vec<String> = sqlx::query_scalar(
            "UPDATE runs SET lease_expires_at = $1 WHERE lease_owner = $2 AND lease_expires_at >= $3 RETURNING id",
        )
        .bind(lease.now + lease.duration_ms)
        .bind(worker)
        .bind(lease.now)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query("UPDATE workers SET heartbeat_at = $1 WHERE id = $2")
            .bind(lease.now)
            .bind(worker)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        ids.sort();
        Ok(ids)
    }

    async fn commit_once(&self, worker: &str, run_id: &str, changes: &[Change]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        // The row lock fences: a worker taking the run over waits for this
        // transaction, and this one sees the lease as it is now.
        let owner: Option<Option<String>> =
            sqlx::query_scalar("SELECT lease_owner FROM runs WHERE id = $1 FOR UPDATE")
                .bind(run_id)
                .fetch_optional(&mut *tx)
                .await?;
        match owner {
            None => return Err(StoreError::RunNotFound(run_id.into())),
            Some(Some(o)) if o == worker => {}
            Some(_) => return Err(StoreError::LeaseLost(run_id.into())),
        }
        apply_all(&mut tx, run_id, changes).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn request_once(&self, req: &NewRequest) -> Result<i64> {
        let mut tx = self.pool.begin().await?;
        // The run's row first: its lock orders this event among the run's own.
        // Due now; a finished run asked to retry becomes claimable again.
        sqlx::query(
            "UPDATE runs SET wake_at = NULL, woken = true, \
               status = CASE WHEN $2 THEN 'queued' ELSE status END, \
               finished_at = CASE WHEN $2 THEN NULL ELSE finished_at END \
             WHERE id = $1",
        )
        .bind(&req.run_id)
        .bind(req.kind == RequestKind::Retry)
        .execute(&mut *tx)
        .await?;
        let now = now_ms();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO requests (run_id, kind, step_id, data, actor, at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(&req.run_id)
        .bind(req.kind.as_str())
        .bind(&req.step_id)
        .bind(opt_json(&req.data))
        .bind(text(&req.actor))
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| decision_conflict(e, req))?;
        let data =
            serde_json::json!({"kind": req.kind.as_str(), "actor": req.actor, "data": req.data});
        sqlx::query(
            "INSERT INTO events (run_id, at, kind, step_id, data) VALUES ($1, $2, 'request', $3, $4)",
        )
        .bind(&req.run_id)
        .bind(now)
        .bind(&req.step_id)
        .bind(json(&data))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }
}

#[async_trait::async_trait]
impl Store for PostgresStore {
    async fn put_definition(&self, def: &Definition) -> Result<()> {
        sqlx::query(
            "INSERT INTO definitions (hash, workflow, file, source, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (hash) DO NOTHING",
        )
        .bind(&def.hash)
        .bind(&def.workflow)
        .bind(text(&def.file))
        .bind(text(&def.source))
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn definition(&self, hash: &str) -> Result<Option<Definition>> {
        let row =
            sqlx::query("SELECT hash, workflow, file, source FROM definitions WHERE hash = $1")
                .bind(hash)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| {
            Ok(Definition {
                hash: r.try_get("hash")?,
                workflow: r.try_get("workflow")?,
                file: r.try_get("file")?,
                source: r.try_get("source")?,
            })
        })
        .transpose()
    }

    async fn create_run(&self, run: NewRun) -> Result<Created> {
        retrying(|| self.create_run_once(&run)).await
    }

    async fn claim(
        &self,
        worker: &str,
        lease: Lease,
        limit: usize,
        only: Option<&str>,
    ) -> Result<Vec<String>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        retrying(|| self.claim_once(worker, lease, limit, only)).await
    }

    async fn renew(&self, worker: &str, lease: Lease) -> Result<Vec<String>> {
        retrying(|| self.renew_once(worker, lease)).await
    }

    async fn release(&self, worker: &str, run_id: &str, wake_at: Option<i64>) -> Result<()> {
        retrying(|| async {
            sqlx::query(
                "UPDATE runs SET lease_owner = NULL, lease_expires_at = NULL, \
                 wake_at = CASE WHEN woken THEN NULL ELSE $1 END WHERE id = $2 AND lease_owner = $3",
            )
            .bind(wake_at)
            .bind(run_id)
            .bind(worker)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
        .await
    }

    async fn commit(&self, worker: &str, run_id: &str, changes: &[Change]) -> Result<()> {
        retrying(|| self.commit_once(worker, run_id, changes)).await
    }

    async fn run(&self, id: &str) -> Result<Option<RunRecord>> {
        let row = sqlx::query("SELECT * FROM runs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(run_row).transpose()
    }

    async fn resolve_run_id(&self, prefix: &str) -> Result<String> {
        // As SQLite: LIKE's wildcards are dropped (and Postgres's escape, `\`).
        let like = format!("{}%", prefix.replace(['%', '_', '\\'], ""));
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT id FROM runs WHERE id LIKE $1 ORDER BY id LIMIT 2")
                .bind(like)
                .fetch_all(&self.pool)
                .await?;
        match ids.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(StoreError::RunNotFound(prefix.into())),
            _ => Err(StoreError::Conflict(format!(
                "run id prefix `{prefix}` matches several runs; type more of it"
            ))),
        }
    }

    async fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM runs WHERE ($1::text IS NULL OR status = $1::text) \
             AND ($2::text IS NULL OR workflow = $2::text) AND ($4::text IS NULL OR id < $4::text) \
             ORDER BY id DESC LIMIT $3",
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
        // Key order, as SQLite returns them.
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
        let rows = sqlx::query("SELECT * FROM events WHERE run_id = $1 AND id > $2 ORDER BY id")
            .bind(run_id)
            .bind(after)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(EventRecord {
                    id: r.try_get("id")?,
                    run_id: r.try_get("run_id")?,
                    at: r.try_get("at")?,
                    kind: r.try_get("kind")?,
                    step_id: r.try_get("step_id")?,
                    data: r.try_get("data")?,
                })
            })
            .collect()
    }

    async fn request(&self, req: NewRequest) -> Result<i64> {
        retrying(|| self.request_once(&req)).await
    }

    async fn open_requests(&self, run_id: &str) -> Result<Vec<RequestRecord>> {
        let rows =
            sqlx::query("SELECT * FROM requests WHERE run_id = $1 AND done_at IS NULL ORDER BY id")
                .bind(run_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(request_row).collect()
    }

    async fn pending_people(&self) -> Result<Vec<(RunRecord, StepRecord)>> {
        let rows = sqlx::query(concat!(
            "SELECT s.* FROM steps s JOIN runs r ON r.id = s.run_id WHERE r.status IN ",
            active!(),
            " AND s.status IN ('needs_human', 'waiting') ORDER BY s.run_id, s.step_id"
        ))
        .fetch_all(&self.pool)
        .await?;
        let steps = rows.iter().map(step_row).collect::<Result<Vec<_>>>()?;
        let mut ids: Vec<&str> = steps.iter().map(|s| s.run_id.as_str()).collect();
        ids.dedup();
        let runs: HashMap<String, RunRecord> = sqlx::query("SELECT * FROM runs WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| run_row(r).map(|run| (run.id.clone(), run)))
            .collect::<Result<_>>()?;
        Ok(steps
            .into_iter()
            .filter_map(|step| runs.get(&step.run_id).map(|run| (run.clone(), step)))
            .collect())
    }

    async fn workers(&self, since: i64) -> Result<Vec<WorkerStatus>> {
        let rows =
            sqlx::query("SELECT * FROM workers WHERE heartbeat_at >= $1 ORDER BY started_at")
                .bind(since)
                .fetch_all(&self.pool)
                .await?;
        let leases = sqlx::query(
            "SELECT id, lease_owner, lease_expires_at FROM runs WHERE lease_owner IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("id")?;
                let mut held = Vec::new();
                for l in &leases {
                    if l.try_get::<String, _>("lease_owner")? == id {
                        held.push((l.try_get("id")?, l.try_get("lease_expires_at")?));
                    }
                }
                Ok(WorkerStatus {
                    host: r.try_get("host")?,
                    pid: r.try_get::<i64, _>("pid")? as u32,
                    started_at: r.try_get("started_at")?,
                    heartbeat_at: r.try_get("heartbeat_at")?,
                    leases: held,
                    id,
                })
            })
            .collect()
    }

    async fn audit_append(&self, entry: NewAudit) -> Result<AuditRecord> {
        retrying(|| async {
            let mut tx = self.pool.begin().await?;
            let record = append_audit(&mut tx, entry.clone()).await?;
            tx.commit().await?;
            Ok(record)
        })
        .await
    }

    async fn audit_list(&self, after: i64, limit: usize) -> Result<Vec<AuditRecord>> {
        let rows = sqlx::query("SELECT * FROM audit WHERE id > $1 ORDER BY id LIMIT $2")
            .bind(after)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let payload: String = r.try_get("payload")?;
                Ok(AuditRecord {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    run_id: r.try_get("run_id")?,
                    step_id: r.try_get("step_id")?,
                    payload: serde_json::from_str(&payload).map_err(|e| {
                        StoreError::Corrupt(format!("audit payload is not JSON: {e}"))
                    })?,
                    payload_sha256: r.try_get("payload_sha256")?,
                    prev_hash: r.try_get("prev_hash")?,
                    hash: r.try_get("hash")?,
                })
            })
            .collect()
    }

    async fn remember_signature(
        &self,
        hook: &str,
        signature: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<Remembered> {
        retrying(|| async {
            let mut tx = self.pool.begin().await?;
            // SKIP LOCKED: replicas pruning at once never wait on (or
            // deadlock over) each other's rows.
            let pruned = sqlx::query(
                "DELETE FROM webhook_signatures WHERE (hook, signature) IN \
                 (SELECT hook, signature FROM webhook_signatures WHERE expires_at <= $1 \
                  FOR UPDATE SKIP LOCKED)",
            )
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            // A concurrent insert of the same key waits for the other
            // transaction, then does nothing: exactly one of them is first.
            let inserted = sqlx::query(
                "INSERT INTO webhook_signatures (hook, signature, expires_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (hook, signature) DO NOTHING",
            )
            .bind(text(hook))
            .bind(text(signature))
            .bind(expires_at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            Ok(Remembered { replay: inserted == 0, pruned })
        })
        .await
    }

    async fn last_tick(&self, schedule: &str) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar("SELECT MAX(tick_at) FROM schedule_ticks WHERE schedule = $1")
            .bind(schedule)
            .fetch_one(&self.pool)
            .await?)
    }

    async fn ping(&self) -> Result<()> {
        let applied: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
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

    async fn outbox_claim(
        &self,
        worker: &str,
        now: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<OutboxRecord>> {
        retrying(|| async {
            let rows = sqlx::query(
                "UPDATE outbox SET next_at = $1, claimed_by = $2, attempts = attempts + 1 WHERE id IN ( \
                   SELECT o.id FROM outbox o WHERE o.status = 'pending' AND o.next_at <= $3 \
                     AND NOT EXISTS (SELECT 1 FROM outbox e WHERE e.run_id = o.run_id \
                       AND e.channel = o.channel AND e.status = 'pending' AND e.id < o.id) \
                   ORDER BY o.next_at, o.id LIMIT $4 FOR UPDATE SKIP LOCKED) \
                 RETURNING *",
            )
            .bind(now + lease_ms)
            .bind(worker)
            .bind(now)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
            rows.iter().map(outbox_row).collect()
        })
        .await
    }

    async fn outbox_finish(&self, id: i64, outcome: OutboxOutcome) -> Result<()> {
        retrying(|| async {
            let mut tx = self.pool.begin().await?;
            let now = now_ms();
            let (status, next_at, error, detail) = outbox_update(&outcome);
            let waiting: Option<Option<String>> = sqlx::query_scalar(
                "UPDATE outbox SET status = $1, next_at = COALESCE($2, next_at), \
                 last_error = COALESCE($3, last_error), detail = COALESCE($4, detail), \
                 finished_at = CASE WHEN $1 = 'pending' THEN NULL ELSE $5 END \
                 WHERE id = $6 AND status = 'pending' \
                 RETURNING CASE WHEN step_id IS NULL THEN NULL ELSE run_id END",
            )
            .bind(status.as_str())
            .bind(next_at)
            .bind(error.map(text))
            .bind(detail.map(text))
            .bind(now)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            if let (Some(Some(run_id)), false) = (waiting, status == OutboxStatus::Pending) {
                sqlx::query("UPDATE runs SET wake_at = NULL, woken = true WHERE id = $1")
                    .bind(run_id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn outbox(&self, run_id: &str) -> Result<Vec<OutboxRecord>> {
        let rows = sqlx::query("SELECT * FROM outbox WHERE run_id = $1 ORDER BY id")
            .bind(run_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(outbox_row).collect()
    }

    async fn register_worker(&self, w: &WorkerRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO workers (id, host, pid, started_at, heartbeat_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = EXCLUDED.heartbeat_at",
        )
        .bind(&w.id)
        .bind(text(&w.host))
        .bind(i64::from(w.pid))
        .bind(w.started_at)
        .bind(w.started_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// Applies a batch with as few statements as possible: step rows, new
/// attempts and events each go in one `UNNEST` statement (one round trip and
/// one cached prepared statement whatever the batch size); the rest one by
/// one, in the same fixed order as SQLite's `apply_all` (an attempt exists
/// before it is updated).
async fn apply_all(
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
    let events: Vec<(&i64, &String, &Option<String>, &Option<Value>)> = changes
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
async fn apply(
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

/// Postgres-only behaviour (the shared stories are in conformance.rs): what
/// several replicas on one database must get right. Skipped without
/// `LIFEBOAT_TEST_POSTGRES_URL` (scripts/test.sh sets it).
/// Creates an empty database `<prefix>_<uuid>` on the server of
/// `admin_url` and returns a URL for it (same server, credentials and
/// options). For tests and benchmarks that need a database of their own.
pub async fn create_scratch_database(admin_url: &str, prefix: &str) -> Result<String> {
    let name = format!("{prefix}_{}", uuid::Uuid::now_v7().simple());
    let mut admin = PgConnection::connect(admin_url).await?;
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await?;
    admin.close().await?;
    Ok(with_database(admin_url, &name))
}

/// `url` with its database replaced by `name` (query string kept).
pub fn with_database(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let (authority, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let query = tail.split_once('?').map(|(_, q)| format!("?{q}")).unwrap_or_default();
    format!("{scheme}://{authority}/{name}{query}")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;

    /// Connect options for a fresh, empty database.
    async fn fresh_database() -> Option<PgConnectOptions> {
        let url = std::env::var("LIFEBOAT_TEST_POSTGRES_URL").ok().filter(|u| !u.is_empty())?;
        let admin = PgConnectOptions::from_str(&url).unwrap();
        let name = format!("pgtest_{}", uuid::Uuid::now_v7().simple());
        let mut conn = PgConnection::connect_with(&admin).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
        conn.close().await.unwrap();
        Some(admin.database(&name))
    }

    use crate::store::conformance::{new_run, with_definition};

    /// Several replicas starting at once on an empty database: one migrates,
    /// the others wait and find the schema in place.
    #[tokio::test]
    async fn replicas_starting_together_migrate_once() {
        let Some(options) = fresh_database().await else { return };
        let opens: Vec<_> =
            (0..6).map(|_| tokio::spawn(PostgresStore::open_with(options.clone()))).collect();
        let mut stores = Vec::new();
        for open in opens {
            stores.push(open.await.unwrap().unwrap());
        }
        let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
            .fetch_one(&stores[0].pool)
            .await
            .unwrap();
        assert_eq!(applied, MIGRATOR.iter().count() as i64);
        // No replica kept a migration lock on this database.
        let locks: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_one(&stores[0].pool)
        .await
        .unwrap();
        assert_eq!(locks, 0);
    }

    /// `on_conflict: skip` across replicas: of many simultaneous creations
    /// with one key, exactly one run is made and every other names it.
    #[tokio::test]
    async fn racing_replicas_create_one_run_per_skip_key() {
        let Some(options) = fresh_database().await else { return };
        let mut replicas = Vec::new();
        for _ in 0..4 {
            replicas.push(Arc::new(PostgresStore::open_with(options.clone()).await.unwrap()));
        }
        with_definition(&*replicas[0]).await;
        for round in 0..5 {
            let key = format!("failover-dc{round}");
            let tasks: Vec<_> = (0..12)
                .map(|i| {
                    let store = replicas[i % replicas.len()].clone();
                    let run = new_run(&format!("r{round}-{i:02}"), Some(&key), true);
                    tokio::spawn(async move { store.create_run(run).await.unwrap() })
                })
                .collect();
            let mut made = Vec::new();
            let mut skipped_for = Vec::new();
            for t in tasks {
                match t.await.unwrap() {
                    Created::Run(id) => made.push(id),
                    Created::Skipped { active } => skipped_for.push(active),
                    other => panic!("round {round}: {other:?}"),
                }
            }
            assert_eq!(made.len(), 1, "round {round}: {made:?}");
            assert!(skipped_for.iter().all(|a| *a == made[0]), "round {round}");
        }
    }

    /// Postgres text and jsonb cannot hold NUL; a step that prints one must
    /// not make its run's commits fail forever.
    #[tokio::test]
    async fn nul_characters_are_stored_replaced() {
        let Some(options) = fresh_database().await else { return };
        let store = PostgresStore::open_with(options).await.unwrap();
        with_definition(&store).await;
        let mut run = new_run("r1", None, false);
        run.inputs = json!({"k\0": "v\0"});
        store.create_run(run).await.unwrap();
        store.claim("w1", Lease { now: now_ms(), duration_ms: 10_000 }, 1, None).await.unwrap();
        let mut step = StepRecord::pending("r1", "a");
        step.status = StepStatus::Failed;
        step.error = Some("bad\0byte".into());
        step.outputs = Some(json!({"stdout": ["a\0b"]}));
        store.commit("w1", "r1", &[Change::Step(step)]).await.unwrap();
        let a = store.steps("r1").await.unwrap().into_iter().find(|s| s.step_id == "a").unwrap();
        assert_eq!(a.error.as_deref(), Some("bad\u{FFFD}byte"));
        assert_eq!(a.outputs, Some(json!({"stdout": ["a\u{FFFD}b"]})));
        let r = store.run("r1").await.unwrap().unwrap();
        assert_eq!(r.inputs, json!({"k\u{FFFD}": "v\u{FFFD}"}));
    }

    /// A run's events are written under its row lock: an operator request
    /// racing the owner's commits never lands below an id a reader has passed.
    #[tokio::test]
    async fn a_runs_events_commit_in_id_order() {
        let Some(options) = fresh_database().await else { return };
        let store = Arc::new(PostgresStore::open_with(options).await.unwrap());
        with_definition(&*store).await;
        store.create_run(new_run("r1", None, false)).await.unwrap();
        store.claim("w1", Lease { now: now_ms(), duration_ms: 60_000 }, 1, None).await.unwrap();
        let writer = {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..100 {
                    let event = Change::Event {
                        at: now_ms(),
                        kind: format!("tick{i}"),
                        step_id: None,
                        data: None,
                    };
                    store.commit("w1", "r1", &[event]).await.unwrap();
                }
            })
        };
        let requester = {
            let store = store.clone();
            tokio::spawn(async move {
                for _ in 0..30 {
                    store
                        .request(NewRequest {
                            run_id: "r1".into(),
                            kind: RequestKind::Pause,
                            step_id: None,
                            data: None,
                            actor: "alice".into(),
                        })
                        .await
                        .unwrap();
                }
            })
        };
        // A tailer, as `run --wait` follows progress: never misses an event.
        let mut seen = Vec::new();
        let mut after = 0;
        while !(writer.is_finished() && requester.is_finished()) {
            for e in store.events("r1", after).await.unwrap() {
                after = e.id;
                seen.push(e.id);
            }
        }
        for e in store.events("r1", after).await.unwrap() {
            seen.push(e.id);
        }
        writer.await.unwrap();
        requester.await.unwrap();
        let all: Vec<i64> =
            store.events("r1", 0).await.unwrap().into_iter().map(|e| e.id).collect();
        assert_eq!(all.len(), 1 + 100 + 30);
        assert_eq!(seen, all, "the tailer missed events");
    }
}
