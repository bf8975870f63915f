//! Postgres backend: several `lifeboat serve` replicas share one database.
//!
//! The reference behaviour is `sqlite/`; this module is the same seam in
//! Postgres terms:
//! - claiming is `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED LIMIT n)`,
//!   so replicas never wait on, or both take, the same run;
//! - `commit` locks the run's row (`SELECT lease_owner … FOR UPDATE`), checks the
//!   lease (fencing) and applies the changes in the same transaction;
//! - lifeboat's tables live in their own schema (`?schema=`, default
//!   `lifeboat`, see `schema.rs`), every connection's `search_path`;
//! - migrations run under an advisory lock, so replicas starting together
//!   create the schema and apply them once;
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
use crate::store::apply::{self, Writer};
use crate::store::rows::*;

pub struct PostgresStore {
    pub(in crate::store) pool: PgPool,
    /// Rung by this process's writes and, once listening, by `NOTIFY`.
    bell: Arc<Doorbell>,
    /// The `NOTIFY` channel of this deployment's schema.
    channel: String,
    /// Whether the listener task was started.
    listening: std::sync::atomic::AtomicBool,
    /// Run creation, group-committed.
    creator: create::Creator,
}

pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

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

mod bell;
mod create;
pub(crate) mod prune;
mod rows;
mod schema;
pub(in crate::store) mod write;
use rows::*;
pub use schema::{DEFAULT_SCHEMA, Schema, connect_options, split_url};
use write::*;

impl PostgresStore {
    /// Opens the database of `url`, in the schema its `?schema=` names.
    pub async fn open(url: &str) -> Result<Self> {
        let (url, schema) = schema::split_url(url)?;
        Self::open_in(PgConnectOptions::from_str(&url)?, &schema).await
    }

    /// Opens the database of `options` in the default schema.
    pub async fn open_with(options: PgConnectOptions) -> Result<Self> {
        Self::open_in(options, &Schema::default()).await
    }

    pub async fn open_in(options: PgConnectOptions, schema: &Schema) -> Result<Self> {
        let options = if options.get_application_name().is_none() {
            options.application_name("lifeboat")
        } else {
            options
        };
        let schema = migrate(&options, schema).await?;
        // A startup parameter, not a `SET` after connecting: the schema holds
        // from a connection's first statement, and a reconnect cannot miss it.
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.options([("search_path", schema.as_str())]))
            .await?;
        let bell = Arc::<Doorbell>::default();
        let channel = bell::channel(&schema);
        let creator = create::Creator::start(pool.clone(), channel.clone(), bell.clone());
        Ok(PostgresStore { pool, bell, channel, listening: Default::default(), creator })
    }
}

/// Chooses and creates the schema, then applies the migrations in it, on a
/// connection of its own holding an advisory lock: replicas that start
/// together queue here and the later ones find nothing to do. Returns the
/// schema. The connection is closed afterwards, which releases every session
/// lock even when a migration failed half-way (sqlx's migrator does not
/// unlock on error, so this must never be a pooled connection).
async fn migrate(options: &PgConnectOptions, schema: &Schema) -> Result<String> {
    let mut conn = PgConnection::connect_with(options).await?;
    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(MIGRATION_LOCK)
        .fetch_one(&mut conn)
        .await?;
    if !got {
        tracing::info!("another lifeboat process is migrating the database; waiting for it");
        sqlx::query("SELECT pg_advisory_lock($1)").bind(MIGRATION_LOCK).execute(&mut conn).await?;
    }
    let result = async {
        let schema = schema::prepare(&mut conn, schema).await?;
        // `run_direct` is `run` on a connection; `run(&mut conn)` makes this
        // future not `Send` (sqlx's `Acquire` is "not general enough").
        MIGRATOR.run_direct(&mut conn).await?;
        Ok::<_, StoreError>(schema)
    }
    .await;
    if result.is_ok() {
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut conn)
            .await?;
    }
    let _ = conn.close().await;
    result
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

/// The claim: due, unleased (or lease expired), not paused unless a request
/// waits, and for queued runs: no older active run holds the concurrency
/// key; only active runs (the partial indexes' predicate), oldest first.
/// SKIP LOCKED: rows another replica is claiming or committing are left to
/// it (they are leased or busy anyway) instead of waited for.
pub(in crate::store) const CLAIM: &str = concat!(
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

/// A worker gives a run back.
pub(in crate::store) const RELEASE: &str = "UPDATE runs SET lease_owner = NULL, lease_expires_at = NULL, \
     wake_at = CASE WHEN woken THEN NULL ELSE $1 END WHERE id = $2 AND lease_owner = $3";

/// Steps waiting for people, from the active runs (never all steps); their
/// runs are then read by `RUNS_BY_IDS`.
pub(in crate::store) const PENDING_PEOPLE: &str = concat!(
    "SELECT s.* FROM runs r JOIN steps s ON s.run_id = r.id WHERE r.status IN ",
    active!(),
    " AND s.status IN ('needs_human', 'waiting') ORDER BY s.run_id, s.step_id"
);
pub(in crate::store) const RUNS_BY_IDS: &str = "SELECT * FROM runs WHERE id = ANY($1)";

/// The dispatcher's claim: due pending rows, each the oldest pending of its
/// run and channel.
pub(in crate::store) const OUTBOX_CLAIM: &str = "UPDATE outbox SET next_at = $1, claimed_by = $2, attempts = attempts + 1 WHERE id IN ( \
       SELECT o.id FROM outbox o WHERE o.status = 'pending' AND o.next_at <= $3 \
         AND NOT EXISTS (SELECT 1 FROM outbox e WHERE e.run_id = o.run_id \
           AND e.channel = o.channel AND e.status = 'pending' AND e.id < o.id) \
       ORDER BY o.next_at, o.id LIMIT $4 FOR UPDATE SKIP LOCKED) \
     RETURNING *";

impl PostgresStore {
    async fn claim_once(
        &self,
        worker: &str,
        lease: Lease,
        limit: usize,
        only: Option<&str>,
    ) -> Result<Vec<String>> {
        let mut ids: Vec<String> = sqlx::query_scalar(CLAIM)
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
        let ids = Tx(&mut tx).renew_leases(worker, lease).await?;
        tx.commit().await?;
        Ok(ids)
    }

    async fn commit_once(&self, worker: &str, run_id: &str, changes: &[Change]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        apply::commit(&mut Tx(&mut tx), worker, run_id, changes).await?;
        let wakes = wake::commit_wakes(changes);
        if wakes {
            bell::announce(&mut tx, &self.channel, &Wake::Due).await?;
        }
        tx.commit().await?;
        if wakes {
            self.bell.ring(&Wake::Due);
        }
        Ok(())
    }

    async fn request_once(&self, req: &NewRequest) -> Result<i64> {
        let mut tx = self.pool.begin().await?;
        // The run's row first: its lock orders this event among the run's own.
        // Due now; a finished run asked to retry becomes claimable again.
        let found = sqlx::query(
            "UPDATE runs SET wake_at = NULL, woken = true, \
               status = CASE WHEN $2 THEN 'queued' ELSE status END, \
               finished_at = CASE WHEN $2 THEN NULL ELSE finished_at END \
             WHERE id = $1",
        )
        .bind(&req.run_id)
        .bind(req.kind == RequestKind::Retry)
        .execute(&mut *tx)
        .await?;
        // Pruned (or never there): nothing is written for it.
        if found.rows_affected() == 0 {
            return Err(StoreError::NotFound(req.run_id.clone()));
        }
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
        let wake = Wake::Requests(req.run_id.clone());
        bell::announce(&mut tx, &self.channel, &wake).await?;
        tx.commit().await?;
        self.bell.ring(&wake);
        Ok(id)
    }
}

with_shared_reads! {
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


    async fn create_run(&self, run: NewRun) -> Result<Created> {
        self.creator.create(run).await
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
        // One statement: the release, and its `NOTIFY` only if it released.
        let sql = format!(
            "WITH released AS ({RELEASE} RETURNING id) SELECT pg_notify($4, $5) FROM released"
        );
        retrying(|| async {
            sqlx::query(&sql)
                .bind(wake_at)
                .bind(run_id)
                .bind(worker)
                .bind(&self.channel)
                .bind(Wake::Due.encode())
                .execute(&self.pool)
                .await?;
            Ok(())
        })
        .await?;
        self.bell.ring(&Wake::Due);
        Ok(())
    }

    async fn commit(&self, worker: &str, run_id: &str, changes: &[Change]) -> Result<()> {
        retrying(|| self.commit_once(worker, run_id, changes)).await
    }


    async fn resolve_run_id(&self, prefix: &str) -> Result<String> {
        let (len, prefix, upper) = ids::prefix_args(prefix);
        let found: Vec<String> = sqlx::query_scalar(ids::BY_PREFIX)
        .bind(len)
        .bind(text(prefix))
        .bind(text(&upper))
        .bind(ids::CANDIDATES as i64 + 1)
        .fetch_all(&self.pool)
        .await?;
        ids::resolve(prefix, found)
    }





    async fn request(&self, req: NewRequest) -> Result<i64> {
        retrying(|| self.request_once(&req)).await
    }


    async fn pending_people(&self) -> Result<Vec<(RunRecord, StepRecord)>> {
        let rows = sqlx::query(PENDING_PEOPLE)
        .fetch_all(&self.pool)
        .await?;
        let steps = rows.iter().map(step_row).collect::<Result<Vec<_>>>()?;
        let mut ids: Vec<&str> = steps.iter().map(|s| s.run_id.as_str()).collect();
        ids.dedup();
        let runs: HashMap<String, RunRecord> = sqlx::query(RUNS_BY_IDS)
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


    async fn claim_drill_overdue(&self, claim: &OverdueClaim) -> Result<Vec<(String, i64)>> {
        retrying(|| async {
            let mut tx = self.pool.begin().await?;
            let claimed = apply::claim_overdue(&mut Tx(&mut tx), claim).await?;
            tx.commit().await?;
            Ok(claimed)
        })
        .await
    }

    async fn audit_append(&self, entry: NewAudit) -> Result<AuditRecord> {
        retrying(|| async {
            let mut tx = self.pool.begin().await?;
            let record = Tx(&mut tx).append_audit(entry.clone()).await?;
            tx.commit().await?;
            Ok(record)
        })
        .await
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




    async fn outbox_claim(
        &self,
        worker: &str,
        now: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<OutboxRecord>> {
        retrying(|| async {
            let rows = sqlx::query(OUTBOX_CLAIM)
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
            let woke = finish_outbox!(tx, id, &outcome, text);
            if woke {
                bell::announce(&mut tx, &self.channel, &Wake::Due).await?;
            }
            tx.commit().await?;
            if woke {
                self.bell.ring(&Wake::Due);
            }
            Ok(())
        })
        .await
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

    fn doorbell(&self) -> &Doorbell {
        &self.bell
    }

    async fn listen(&self) -> Result<()> {
        use std::sync::atomic::Ordering;
        if !self.listening.swap(true, Ordering::SeqCst) {
            tokio::spawn(bell::hear(self.pool.clone(), self.channel.clone(), self.bell.clone()));
        }
        Ok(())
    }

    async fn prune_runs(
        &self,
        policy: &PrunePolicy,
        after: Option<&PruneCursor>,
        limit: usize,
        dry_run: bool,
    ) -> Result<PruneBatch> {
        self.prune_runs_batch(policy, after, limit, dry_run).await
    }

    async fn prune_markers(
        &self,
        ticks_before: Option<i64>,
        now: i64,
        limit: usize,
        dry_run: bool,
    ) -> Result<Pruned> {
        self.prune_markers_batch(ticks_before, now, limit, dry_run).await
    }
}
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
mod tests;
