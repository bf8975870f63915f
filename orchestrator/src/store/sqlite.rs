//! SQLite backend: WAL mode, `synchronous=FULL` (a committed transition
//! survives power loss), `BEGIN IMMEDIATE` for writes so several processes
//! on one file queue for the write lock instead of failing.

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

pub struct SqliteStore {
    pool: SqlitePool,
    /// One writer at a time inside this process: SQLite has one write lock,
    /// and waiting on a mutex is cheaper than SQLite's sleeping busy handler.
    write_lock: Arc<tokio::sync::Mutex<()>>,
    /// Group commit: concurrent `commit` and `create_run` calls share one
    /// transaction (and one fsync).
    commits: tokio::sync::mpsc::UnboundedSender<Job>,
}

/// One write for the group committer, with where to send its result.
enum Job {
    Commit {
        worker: String,
        run_id: String,
        changes: Vec<Change>,
        reply: tokio::sync::oneshot::Sender<Result<()>>,
    },
    Create {
        run: Box<NewRun>,
        reply: tokio::sync::oneshot::Sender<Result<Created>>,
    },
}

/// A job's result on its way back.
enum Done {
    Commit(Result<()>),
    Create(Result<Created>),
}

impl Job {
    fn answer(self, done: Done) {
        match (self, done) {
            (Job::Commit { reply, .. }, Done::Commit(r)) => {
                let _ = reply.send(r);
            }
            (Job::Create { reply, .. }, Done::Create(r)) => {
                let _ = reply.send(r);
            }
            (job, _) => job.fail("internal: mismatched job result"),
        }
    }

    fn fail(self, message: &str) {
        let error = || StoreError::Conflict(message.to_string());
        match self {
            Job::Commit { reply, .. } => {
                let _ = reply.send(Err(error()));
            }
            Job::Create { reply, .. } => {
                let _ = reply.send(Err(error()));
            }
        }
    }
}

fn writer_stopped() -> StoreError {
    StoreError::Conflict("the store's writer has stopped".into())
}

/// Most commits merged into one transaction.
const GROUP_COMMIT_MAX: usize = 512;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// Whether SQLite answered "busy" (another process holds the write lock),
/// or lost a race to create the schema.
fn is_busy(e: &impl std::fmt::Display) -> bool {
    let text = e.to_string();
    text.contains("database is locked") || text.contains("already exists")
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
/// the loser fails ("already exists", "locked"). The winner's work is then
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

impl SqliteStore {
    pub async fn open(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        let pool = connect(options).await?;
        migrate(&pool).await?;
        let write_lock = Arc::new(tokio::sync::Mutex::new(()));
        let (commits, jobs) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(group_committer(pool.clone(), write_lock.clone(), jobs));
        Ok(SqliteStore { pool, write_lock, commits })
    }

    /// A write transaction; hold the guard until it commits.
    async fn write(
        &self,
    ) -> Result<(tokio::sync::OwnedMutexGuard<()>, Transaction<'static, Sqlite>)> {
        let guard = self.write_lock.clone().lock_owned().await;
        Ok((guard, self.pool.begin_with("BEGIN IMMEDIATE").await?))
    }
}

fn json(value: &Option<Value>) -> Option<String> {
    value.as_ref().map(|v| v.to_string())
}

fn pins_text(pins: &Option<super::Pins>) -> Option<String> {
    pins.as_ref().map(|p| serde_json::to_string(p).expect("a map of strings"))
}

fn parse_json(text: Option<String>) -> Result<Option<Value>> {
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(format!("bad JSON in store: {e}")))
    })
    .transpose()
}

/// Creates a run (in the caller's transaction) unless its concurrency key,
/// dedupe key or schedule tick says it exists already; writes nothing then.
async fn insert_run(tx: &mut Transaction<'static, Sqlite>, run: &NewRun) -> Result<Created> {
    if let (Some(key), true) = (&run.concurrency_key, run.skip_on_conflict) {
        let active: Option<String> = sqlx::query_scalar(&format!(
            "SELECT id FROM runs WHERE concurrency_key = ? AND status IN {ACTIVE_SQL} ORDER BY id LIMIT 1"
        ))
        .bind(key)
        .fetch_optional(&mut **tx)
        .await?;
        if let Some(active) = active {
            return Ok(Created::Skipped { active });
        }
    }
    if let Some(key) = &run.dedupe_key {
        let active: Option<String> = sqlx::query_scalar(&format!(
            "SELECT id FROM runs WHERE workflow = ? AND dedupe_key = ? AND status IN {ACTIVE_SQL} LIMIT 1"
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
        let fired: Option<String> = sqlx::query_scalar(
            "SELECT run_id FROM schedule_ticks WHERE schedule = ? AND tick_at = ?",
        )
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
    let now = now_ms();
    let (owner, expires) = match &run.lease_to {
        Some((worker, lease)) => (Some(worker.clone()), Some(lease.now + lease.duration_ms)),
        None => (None, None),
    };
    sqlx::query(
        "INSERT INTO runs (id, workflow, definition_hash, status, inputs, trigger, concurrency_key, \
         parent_run_id, parent_step_id, root_run_id, created_at, lease_owner, lease_expires_at, dedupe_key, pins) \
         VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&run.id)
    .bind(&run.workflow)
    .bind(&run.definition_hash)
    .bind(run.inputs.to_string())
    .bind(run.trigger.to_string())
    .bind(&run.concurrency_key)
    .bind(run.parent.as_ref().map(|p| &p.0))
    .bind(run.parent.as_ref().map(|p| &p.1))
    .bind(run.root.clone().unwrap_or_else(|| run.id.clone()))
    .bind(now)
    .bind(owner)
    .bind(expires)
    .bind(&run.dedupe_key)
    .bind(pins_text(&run.pins))
    .execute(&mut **tx)
    .await?;
    for step in &run.step_ids {
        sqlx::query("INSERT INTO steps (run_id, step_id, status) VALUES (?, ?, 'pending')")
            .bind(&run.id)
            .bind(step)
            .execute(&mut **tx)
            .await?;
    }
    sqlx::query("INSERT INTO events (run_id, at, kind, data) VALUES (?, ?, 'queued', ?)")
        .bind(&run.id)
        .bind(now)
        .bind(run.trigger.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(Created::Run(run.id.clone()))
}

/// Appends the next audit entry in `tx` (the write lock serializes appends).
async fn append_audit(
    tx: &mut Transaction<'static, Sqlite>,
    entry: NewAudit,
) -> Result<AuditRecord> {
    let last: Option<(i64, String)> =
        sqlx::query_as("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1")
            .fetch_optional(&mut **tx)
            .await?;
    let record = audit::next_record(last, entry, now_ms());
    sqlx::query(
        "INSERT INTO audit (id, at, actor, action, run_id, step_id, payload, payload_sha256, prev_hash, hash) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(record.id)
    .bind(record.at)
    .bind(&record.actor)
    .bind(&record.action)
    .bind(&record.run_id)
    .bind(&record.step_id)
    .bind(audit::payload_text(&record.payload))
    .bind(&record.payload_sha256)
    .bind(&record.prev_hash)
    .bind(&record.hash)
    .execute(&mut **tx)
    .await?;
    Ok(record)
}

fn outbox_row(row: &SqliteRow) -> Result<OutboxRecord> {
    let status: String = row.try_get("status")?;
    Ok(OutboxRecord {
        id: row.try_get("id")?,
        dedupe_key: row.try_get("dedupe_key")?,
        run_id: row.try_get("run_id")?,
        step_id: row.try_get("step_id")?,
        event: row.try_get("event")?,
        channel: row.try_get("channel")?,
        message: parse_json(row.try_get("message")?)?.unwrap_or_default(),
        status: OutboxStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown outbox status `{status}`")))?,
        attempts: row.try_get::<i64, _>("attempts")? as u32,
        next_at: row.try_get("next_at")?,
        last_error: row.try_get("last_error")?,
        detail: row.try_get("detail")?,
        created_at: row.try_get("created_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

fn run_row(row: &SqliteRow) -> Result<RunRecord> {
    let status: String = row.try_get("status")?;
    Ok(RunRecord {
        id: row.try_get("id")?,
        workflow: row.try_get("workflow")?,
        definition_hash: row.try_get("definition_hash")?,
        status: RunStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("run status `{status}`")))?,
        inputs: parse_json(row.try_get("inputs")?)?.unwrap_or(Value::Null),
        outputs: parse_json(row.try_get("outputs")?)?,
        trigger: parse_json(row.try_get("trigger")?)?.unwrap_or(Value::Null),
        concurrency_key: row.try_get("concurrency_key")?,
        parent_run_id: row.try_get("parent_run_id")?,
        parent_step_id: row.try_get("parent_step_id")?,
        root_run_id: row.try_get("root_run_id")?,
        cancelled_by: row.try_get("cancelled_by")?,
        paused: row.try_get::<i64, _>("paused")? != 0,
        error: row.try_get("error")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        wake_at: row.try_get("wake_at")?,
        lease_owner: row.try_get("lease_owner")?,
        lease_expires_at: row.try_get("lease_expires_at")?,
        pins: parse_json(row.try_get("pins")?)?.map(super::pins_from_json).transpose()?,
    })
}

fn step_row(row: &SqliteRow) -> Result<StepRecord> {
    let status: String = row.try_get("status")?;
    Ok(StepRecord {
        run_id: row.try_get("run_id")?,
        step_id: row.try_get("step_id")?,
        status: StepStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("step status `{status}`")))?,
        attempts: row.try_get::<i64, _>("attempts")? as u32,
        outputs: parse_json(row.try_get("outputs")?)?,
        error: row.try_get("error")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        wake_at: row.try_get("wake_at")?,
        state: parse_json(row.try_get("state")?)?,
        rollback: row.try_get("rollback")?,
    })
}

fn attempt_row(row: &SqliteRow) -> Result<AttemptRecord> {
    let status: String = row.try_get("status")?;
    let phase: String = row.try_get("phase")?;
    Ok(AttemptRecord {
        run_id: row.try_get("run_id")?,
        step_id: row.try_get("step_id")?,
        phase: Phase::parse(&phase)
            .ok_or_else(|| StoreError::Corrupt(format!("phase `{phase}`")))?,
        n: row.try_get::<i64, _>("n")? as u32,
        status: AttemptStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("attempt status `{status}`")))?,
        worker: row.try_get("worker")?,
        pgid: row.try_get::<Option<i64>, _>("pgid")?.map(|p| p as u32),
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        error: row.try_get("error")?,
        stdout: row.try_get("stdout")?,
        stderr: row.try_get("stderr")?,
    })
}

const ACTIVE_SQL: &str = "('queued','running','waiting','rolling_back')";

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

    async fn definition(&self, hash: &str) -> Result<Option<Definition>> {
        let row =
            sqlx::query("SELECT hash, workflow, file, source FROM definitions WHERE hash = ?")
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
        let (_guard, mut tx) = self.write().await?;
        // Due, unleased (or lease expired), not paused unless a request waits,
        // and for queued runs: no older active run holds the concurrency key.
        let sql = format!(
            "UPDATE runs SET lease_owner = ?1, lease_expires_at = ?2, woken = 0 WHERE id IN ( \
               SELECT r.id FROM runs r WHERE r.status IN {ACTIVE_SQL} \
                 AND (r.lease_owner IS NULL OR r.lease_expires_at < ?3) \
                 AND (r.wake_at IS NULL OR r.wake_at <= ?3) \
                 AND (r.paused = 0 OR EXISTS (SELECT 1 FROM requests q WHERE q.run_id = r.id AND q.done_at IS NULL)) \
                 AND (?5 IS NULL OR r.root_run_id = ?5) \
                 AND NOT (r.status = 'queued' AND r.concurrency_key IS NOT NULL AND EXISTS ( \
                   SELECT 1 FROM runs o WHERE o.concurrency_key = r.concurrency_key AND o.id < r.id \
                     AND o.status IN {ACTIVE_SQL})) \
               ORDER BY r.id LIMIT ?4) RETURNING id"
        );
        let ids: Vec<String> = sqlx::query_scalar(&sql)
            .bind(worker)
            .bind(lease.now + lease.duration_ms)
            .bind(lease.now)
            .bind(limit as i64)
            .bind(only)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(ids)
    }

    async fn renew(&self, worker: &str, lease: Lease) -> Result<Vec<String>> {
        let (_guard, mut tx) = self.write().await?;
        let ids: Vec<String> = sqlx::query_scalar(
            "UPDATE runs SET lease_expires_at = ? WHERE lease_owner = ? AND lease_expires_at >= ? RETURNING id",
        )
        .bind(lease.now + lease.duration_ms)
        .bind(worker)
        .bind(lease.now)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query("UPDATE workers SET heartbeat_at = ? WHERE id = ?")
            .bind(lease.now)
            .bind(worker)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(ids)
    }

    async fn release(&self, worker: &str, run_id: &str, wake_at: Option<i64>) -> Result<()> {
        let _guard = self.write_lock.lock().await;
        sqlx::query(
            "UPDATE runs SET lease_owner = NULL, lease_expires_at = NULL, \
             wake_at = CASE WHEN woken = 1 THEN NULL ELSE ? END WHERE id = ? AND lease_owner = ?",
        )
        .bind(wake_at)
        .bind(run_id)
        .bind(worker)
        .execute(&self.pool)
        .await?;
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

    async fn run(&self, id: &str) -> Result<Option<RunRecord>> {
        let row = sqlx::query("SELECT * FROM runs WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(run_row).transpose()
    }

    async fn resolve_run_id(&self, prefix: &str) -> Result<String> {
        let like = format!("{}%", prefix.replace(['%', '_'], ""));
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT id FROM runs WHERE id LIKE ? ORDER BY id LIMIT 2")
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
            "SELECT * FROM runs WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR workflow = ?2) \
             AND (?4 IS NULL OR id < ?4) ORDER BY id DESC LIMIT ?3",
        )
        .bind(filter.status.map(|s| s.as_str()))
        .bind(&filter.workflow)
        .bind(filter.limit.unwrap_or(50) as i64)
        .bind(&filter.before)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run_row).collect()
    }

    async fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>> {
        let rows = sqlx::query("SELECT * FROM steps WHERE run_id = ?")
            .bind(run_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(step_row).collect()
    }

    async fn attempts(&self, run_id: &str) -> Result<Vec<AttemptRecord>> {
        let rows = sqlx::query("SELECT * FROM attempts WHERE run_id = ? ORDER BY started_at, n")
            .bind(run_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(attempt_row).collect()
    }

    async fn events(&self, run_id: &str, after: i64) -> Result<Vec<EventRecord>> {
        let rows = sqlx::query("SELECT * FROM events WHERE run_id = ? AND id > ? ORDER BY id")
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
                    data: parse_json(r.try_get("data")?)?,
                })
            })
            .collect()
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
        sqlx::query(&format!("UPDATE runs SET wake_at = NULL, woken = 1{reopen} WHERE id = ?"))
            .bind(&req.run_id)
            .execute(&mut *tx)
            .await?;
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
        Ok(id)
    }

    async fn open_requests(&self, run_id: &str) -> Result<Vec<RequestRecord>> {
        let rows =
            sqlx::query("SELECT * FROM requests WHERE run_id = ? AND done_at IS NULL ORDER BY id")
                .bind(run_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get("kind")?;
                Ok(RequestRecord {
                    id: r.try_get("id")?,
                    run_id: r.try_get("run_id")?,
                    kind: RequestKind::parse(&kind)
                        .ok_or_else(|| StoreError::Corrupt(format!("request `{kind}`")))?,
                    step_id: r.try_get("step_id")?,
                    data: parse_json(r.try_get("data")?)?,
                    actor: r.try_get("actor")?,
                    at: r.try_get("at")?,
                })
            })
            .collect()
    }

    async fn pending_people(&self) -> Result<Vec<(RunRecord, StepRecord)>> {
        let rows = sqlx::query(&format!(
            "SELECT s.* FROM steps s JOIN runs r ON r.id = s.run_id WHERE r.status IN {ACTIVE_SQL} \
             AND s.status IN ('needs_human', 'waiting') ORDER BY s.run_id"
        ))
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

    async fn workers(&self, since: i64) -> Result<Vec<WorkerStatus>> {
        let rows = sqlx::query("SELECT * FROM workers WHERE heartbeat_at >= ? ORDER BY started_at")
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
        let (_guard, mut tx) = self.write().await?;
        let record = append_audit(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn audit_list(&self, after: i64, limit: usize) -> Result<Vec<AuditRecord>> {
        let rows = sqlx::query("SELECT * FROM audit WHERE id > ? ORDER BY id LIMIT ?")
            .bind(after)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditRecord {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    run_id: r.try_get("run_id")?,
                    step_id: r.try_get("step_id")?,
                    payload: parse_json(r.try_get("payload")?)?.unwrap_or_default(),
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

    async fn last_tick(&self, schedule: &str) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar("SELECT MAX(tick_at) FROM schedule_ticks WHERE schedule = ?")
            .bind(schedule)
            .fetch_one(&self.pool)
            .await?)
    }

    async fn ping(&self) -> Result<()> {
        let applied: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success = 1")
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
        let (_guard, mut tx) = self.write().await?;
        let rows = sqlx::query(
            "UPDATE outbox SET next_at = ?1, claimed_by = ?2, attempts = attempts + 1 WHERE id IN ( \
               SELECT o.id FROM outbox o WHERE o.status = 'pending' AND o.next_at <= ?3 \
                 AND NOT EXISTS (SELECT 1 FROM outbox e WHERE e.run_id = o.run_id AND e.channel = o.channel \
                   AND e.status = 'pending' AND e.id < o.id) \
               ORDER BY o.next_at, o.id LIMIT ?4) \
             RETURNING *",
        )
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
        let now = now_ms();
        let (status, next_at, error, detail) = outbox_update(&outcome);
        let waiting: Option<Option<String>> = sqlx::query_scalar(
            "UPDATE outbox SET status = ?, next_at = COALESCE(?, next_at), last_error = COALESCE(?, last_error), \
             detail = COALESCE(?, detail), finished_at = CASE WHEN ? = 'pending' THEN NULL ELSE ? END \
             WHERE id = ? AND status = 'pending' RETURNING CASE WHEN step_id IS NULL THEN NULL ELSE run_id END",
        )
        .bind(status.as_str())
        .bind(next_at)
        .bind(error)
        .bind(detail)
        .bind(status.as_str())
        .bind(now)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        if let (Some(Some(run_id)), false) = (waiting, status == OutboxStatus::Pending) {
            sqlx::query("UPDATE runs SET wake_at = NULL, woken = 1 WHERE id = ?")
                .bind(run_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn outbox(&self, run_id: &str) -> Result<Vec<OutboxRecord>> {
        let rows = sqlx::query("SELECT * FROM outbox WHERE run_id = ? ORDER BY id")
            .bind(run_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(outbox_row).collect()
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
}

/// Takes every commit waiting, applies each under its own savepoint (one
/// whose lease is lost fails alone), and commits them all at once: one
/// fsync for many transitions, with durability unchanged.
async fn group_committer(
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
async fn commit_batch(pool: &SqlitePool, batch: &[Job]) -> Result<Vec<Done>> {
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

async fn commit_one(
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
async fn create_one(tx: &mut Transaction<'static, Sqlite>, run: &NewRun) -> Result<Created> {
    let created = insert_run(tx, run).await?;
    if let Some(entry) = run.audit.clone() {
        append_audit(tx, entry.about(&created)).await?;
    }
    Ok(created)
}

/// Rows per multi-row INSERT (SQLite allows 32,766 bound values).
const ROWS_PER_INSERT: usize = 256;

/// Applies a batch with as few statements as possible: step rows, new
/// attempts and events each go in multi-row INSERTs (every statement is a
/// round trip to the SQLite thread); the rest one by one, in a fixed order
/// that respects what depends on what (an attempt exists before it is updated).
async fn apply_all(
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
                    .push_bind(kind)
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

async fn apply(tx: &mut Transaction<'static, Sqlite>, run_id: &str, change: &Change) -> Result<()> {
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
            .bind(kind)
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
