//! SQLite backend: WAL mode, `synchronous=FULL` (a committed transition
//! survives power loss), `BEGIN IMMEDIATE` for writes so several processes
//! on one file queue for the write lock instead of failing.

mod bell;
mod create;
pub(crate) mod prune;
mod rows;
mod write;
mod writer;
use rows::*;
use writer::Job;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

use super::*;
use crate::store::apply::{self, Writer};
use crate::store::rows::*;

pub struct SqliteStore {
    pub(in crate::store) pool: SqlitePool,
    /// One writer at a time inside this process: SQLite has one write lock,
    /// and waiting on a mutex is cheaper than SQLite's sleeping busy handler.
    write_lock: Arc<tokio::sync::Mutex<()>>,
    /// The writer thread (`writer.rs`): commits and creations, group-committed
    /// (one transaction and one fsync for all that wait), and the other hot
    /// writes.
    commits: tokio::sync::mpsc::UnboundedSender<Job>,
    /// Rung by writes that can make a run due, here and in other processes.
    bells: Arc<bell::Bells>,
}

fn writer_stopped() -> StoreError {
    StoreError::Unavailable(
        "the SQLite writer task has stopped (the log says why); restart lifeboat".into(),
    )
}

pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// Whether SQLite answered "busy" (another process holds the write lock),
/// or lost a race to change the schema: a table that "already exists", or a
/// column added by `ALTER TABLE` that is a "duplicate column name" because
/// another process's migration added it after this one read the schema.
/// (SQLite reports these only as text; sqlx gives them no code of their own.)
fn is_busy(e: &impl std::fmt::Display) -> bool {
    let text = e.to_string();
    ["database is locked", "already exists", "duplicate column name"]
        .iter()
        .any(|lost| text.contains(lost))
}

/// Opens the pool. Setting up a connection (`journal_mode`) can meet another
/// process's write before the busy timeout applies: that is retried.
async fn connect(options: SqliteConnectOptions) -> Result<SqlitePool> {
    let mut tries = 0;
    loop {
        match SqlitePoolOptions::new().max_connections(4).connect_with(options.clone()).await {
            Ok(pool) => return Ok(pool),
            Err(e) if tries < 100 && is_busy(&e) => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Applies the migrations. SQLite has no migration lock in sqlx: two
/// processes opening a fresh file together race to create the tables, and
/// the loser fails ("already exists", "duplicate column name", "locked"). The winner's work is then
/// applied, so the loser retries until it sees it.
async fn migrate(pool: &SqlitePool) -> Result<()> {
    let mut tries = 0;
    loop {
        match MIGRATOR.run(pool).await {
            Ok(()) => return Ok(()),
            Err(e) if tries < 50 && is_busy(&e) => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The file a `sqlite:` URL names; `None` for another scheme or a URL
/// that does not parse. (`lifeboat plan` reads history only from a
/// database that exists, and never creates one.)
pub fn file_of(url: &str) -> Option<std::path::PathBuf> {
    if !url.starts_with("sqlite:") {
        return None;
    }
    SqliteConnectOptions::from_str(url).ok().map(|o| o.get_filename().to_path_buf())
}

impl SqliteStore {
    pub async fn open(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        let bells = Arc::new(bell::Bells::new(Some(options.get_filename())));
        let file = options.get_filename().to_path_buf();
        if file.as_os_str().is_empty() || file.as_os_str() == ":memory:" {
            return Err(StoreError::Config(format!(
                "`{url}`: lifeboat keeps its state in a SQLite file; an in-memory database would be lost on exit"
            )));
        }
        let pool = connect(options).await?;
        migrate(&pool).await?;
        let write_lock = Arc::new(tokio::sync::Mutex::new(()));
        let commits = writer::start(&file, write_lock.clone(), bells.clone())?;
        Ok(SqliteStore { pool, write_lock, commits, bells })
    }

    /// Runs `f` in a transaction of its own on the writer thread.
    async fn on_writer<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut write::Tx<'_>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job::Solo(Box::new(move |conn| {
            let _ = reply.send(writer::in_transaction(conn, f));
        }));
        self.commits.send(job).map_err(|_| writer_stopped())?;
        answer.await.unwrap_or_else(|_| Err(writer_stopped()))
    }

    /// A write transaction; hold the guard until it commits.
    async fn write(
        &self,
    ) -> Result<(tokio::sync::OwnedMutexGuard<()>, Transaction<'static, Sqlite>)> {
        let guard = self.write_lock.clone().lock_owned().await;
        Ok((guard, self.pool.begin_with("BEGIN IMMEDIATE").await?))
    }
}

/// The claim: due, unleased (or lease expired), not paused unless a request
/// waits, and for queued runs: no older active run holds the concurrency
/// key. Walks only active runs (the literal `status IN` is the partial
/// indexes' predicate), oldest first.
pub(in crate::store) const CLAIM: &str = concat!(
    "UPDATE runs SET lease_owner = ?1, lease_expires_at = ?2, woken = 0 WHERE id IN ( \
       SELECT r.id FROM runs r WHERE r.status IN ",
    active!(),
    " AND (r.lease_owner IS NULL OR r.lease_expires_at < ?3) \
         AND (r.wake_at IS NULL OR r.wake_at <= ?3) \
         AND (r.paused = 0 OR EXISTS (SELECT 1 FROM requests q WHERE q.run_id = r.id AND q.done_at IS NULL)) \
         AND (?5 IS NULL OR r.root_run_id = ?5) \
         AND NOT (r.status = 'queued' AND r.concurrency_key IS NOT NULL AND EXISTS ( \
           SELECT 1 FROM runs o WHERE o.concurrency_key = r.concurrency_key AND o.id < r.id \
             AND o.status IN ",
    active!(),
    ")) ORDER BY r.id LIMIT ?4) RETURNING id"
);

/// A worker gives a run back.
pub(in crate::store) const RELEASE: &str = "UPDATE runs SET lease_owner = NULL, lease_expires_at = NULL, \
     wake_at = CASE WHEN woken = 1 THEN NULL ELSE ? END WHERE id = ? AND lease_owner = ?";

/// Steps waiting for people, from the active runs (never all steps).
pub(in crate::store) const PENDING_PEOPLE: &str = concat!(
    "SELECT s.* FROM runs r JOIN steps s ON s.run_id = r.id WHERE r.status IN ",
    active!(),
    " AND s.status IN ('needs_human', 'waiting') ORDER BY s.run_id, s.step_id"
);

/// The dispatcher's claim: due pending rows, each the oldest pending of its
/// run and channel.
pub(in crate::store) const OUTBOX_CLAIM: &str = "UPDATE outbox SET next_at = ?1, claimed_by = ?2, attempts = attempts + 1 WHERE id IN ( \
       SELECT o.id FROM outbox o WHERE o.status = 'pending' AND o.next_at <= ?3 \
         AND NOT EXISTS (SELECT 1 FROM outbox e WHERE e.run_id = o.run_id AND e.channel = o.channel \
           AND e.status = 'pending' AND e.id < o.id) \
       ORDER BY o.next_at, o.id LIMIT ?4) \
     RETURNING *";

with_shared_reads! {
#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn put_definition(&self, def: &Definition) -> Result<()> {
        let _guard = self.write_lock.lock().await;
        sqlx::query("INSERT OR IGNORE INTO definitions (hash, workflow, file, source, created_at) VALUES (?, ?, ?, ?, ?)")
            .bind(&def.hash)
            .bind(&def.workflow)
            .bind(&def.file)
            .bind(&def.source)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }


    async fn create_run(&self, run: NewRun) -> Result<Created> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        if self.commits.send(Job::Create { run: Box::new(run), reply }).is_err() {
            return Err(writer_stopped());
        }
        answer.await.unwrap_or_else(|_| Err(writer_stopped()))
    }

    async fn claim(
        &self,
        worker: &str,
        lease: Lease,
        limit: usize,
        only: Option<&str>,
    ) -> Result<Vec<String>> {
        let worker = worker.to_string();
        let only = only.map(str::to_string);
        let until = lease.now + lease.duration_ms;
        self.on_writer(move |tx| {
            write::column(tx.0, CLAIM, &[&worker, &until, &lease.now, &(limit as i64), &only])
        })
        .await
    }

    async fn renew(&self, worker: &str, lease: Lease) -> Result<Vec<String>> {
        let worker = worker.to_string();
        self.on_writer(move |tx| writer::now(tx.renew_leases(&worker, lease))).await
    }

    async fn release(&self, worker: &str, run_id: &str, wake_at: Option<i64>) -> Result<()> {
        let _guard = self.write_lock.lock().await;
        sqlx::query(RELEASE)
        .bind(wake_at)
        .bind(run_id)
        .bind(worker)
        .execute(&self.pool)
        .await?;
        self.bells.ring(&Wake::Due);
        Ok(())
    }

    async fn commit(&self, worker: &str, run_id: &str, changes: &[Change]) -> Result<()> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job::Commit {
            worker: worker.into(),
            run_id: run_id.into(),
            changes: changes.to_vec(),
            reply,
        };
        if self.commits.send(job).is_err() {
            return Err(writer_stopped());
        }
        answer.await.unwrap_or_else(|_| Err(writer_stopped()))
    }


    async fn resolve_run_id(&self, prefix: &str) -> Result<String> {
        let (len, prefix, upper) = ids::prefix_args(prefix);
        let found: Vec<String> = sqlx::query_scalar(ids::BY_PREFIX)
        .bind(len)
        .bind(prefix)
        .bind(upper)
        .bind(ids::CANDIDATES as i64 + 1)
        .fetch_all(&self.pool)
        .await?;
        ids::resolve(prefix, found)
    }





    async fn request(&self, req: NewRequest) -> Result<i64> {
        let (_guard, mut tx) = self.write().await?;
        let now = now_ms();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO requests (run_id, kind, step_id, data, actor, at) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(&req.run_id)
        .bind(req.kind.as_str())
        .bind(&req.step_id)
        .bind(json(&req.data))
        .bind(&req.actor)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| decision_conflict(e, &req))?;
        // Due now; a finished run asked to retry becomes claimable again.
        let reopen = if req.kind == RequestKind::Retry {
            ", status = 'queued', finished_at = NULL"
        } else {
            ""
        };
        let found =
            sqlx::query(&format!("UPDATE runs SET wake_at = NULL, woken = 1{reopen} WHERE id = ?"))
                .bind(&req.run_id)
                .execute(&mut *tx)
                .await?;
        // Pruned (or never there): nothing is written for it.
        if found.rows_affected() == 0 {
            return Err(StoreError::NotFound(req.run_id));
        }
        sqlx::query(
            "INSERT INTO events (run_id, at, kind, step_id, data) VALUES (?, ?, 'request', ?, ?)",
        )
        .bind(&req.run_id)
        .bind(now)
        .bind(&req.step_id)
        .bind(
            serde_json::json!({"kind": req.kind.as_str(), "actor": req.actor, "data": req.data})
                .to_string(),
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.bells.ring(&Wake::Requests(req.run_id));
        Ok(id)
    }


    async fn pending_people(&self) -> Result<Vec<(RunRecord, StepRecord)>> {
        let rows = sqlx::query(PENDING_PEOPLE)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for row in &rows {
            let step = step_row(row)?;
            if let Some(run) = self.run(&step.run_id).await? {
                out.push((run, step));
            }
        }
        Ok(out)
    }


    async fn claim_drill_overdue(&self, claim: &OverdueClaim) -> Result<Vec<(String, i64)>> {
        let claim = claim.clone();
        self.on_writer(move |tx| writer::now(apply::claim_overdue(tx, &claim))).await
    }

    async fn audit_append(&self, entry: NewAudit) -> Result<AuditRecord> {
        self.on_writer(move |tx| writer::now(tx.append_audit(entry))).await
    }


    async fn remember_signature(
        &self,
        hook: &str,
        signature: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<Remembered> {
        let (_guard, mut tx) = self.write().await?;
        let pruned = sqlx::query("DELETE FROM webhook_signatures WHERE expires_at <= ?")
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let inserted = sqlx::query(
            "INSERT INTO webhook_signatures (hook, signature, expires_at) VALUES (?, ?, ?) \
             ON CONFLICT (hook, signature) DO NOTHING",
        )
        .bind(hook)
        .bind(signature)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(Remembered { replay: inserted == 0, pruned })
    }




    async fn outbox_claim(
        &self,
        worker: &str,
        now: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<OutboxRecord>> {
        let (_guard, mut tx) = self.write().await?;
        let rows = sqlx::query(OUTBOX_CLAIM)
        .bind(now + lease_ms)
        .bind(worker)
        .bind(now)
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(outbox_row).collect()
    }

    async fn outbox_finish(&self, id: i64, outcome: OutboxOutcome) -> Result<()> {
        let (_guard, mut tx) = self.write().await?;
        let woke = finish_outbox!(tx, id, &outcome, std::convert::identity);
        tx.commit().await?;
        if woke {
            self.bells.ring(&Wake::Due);
        }
        Ok(())
    }

    async fn register_worker(&self, w: &WorkerRecord) -> Result<()> {
        let _guard = self.write_lock.lock().await;
        sqlx::query(
            "INSERT INTO workers (id, host, pid, started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT(id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
        )
        .bind(&w.id)
        .bind(&w.host)
        .bind(w.pid as i64)
        .bind(w.started_at)
        .bind(w.started_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    fn doorbell(&self) -> &Doorbell {
        &self.bells.local
    }

    async fn listen(&self) -> Result<()> {
        self.bells
            .peers
            .listen(self.bells.local.clone())
            .map_err(|e| StoreError::Config(format!("cannot hear other processes' wake-ups: {e}")))
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
