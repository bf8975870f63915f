//! The writer thread: one OS thread with a SQLite connection of its own
//! that applies this process's hot writes — transitions, run creation,
//! claims, lease renewals, audit entries — merging every commit waiting
//! into one transaction (group commit: one fsync for many transitions).
//!
//! Why a thread of its own rather than sqlx: sqlx runs each SQLite
//! statement on the connection's thread and hands it over and back through
//! channels, two thread wake-ups per statement. A transition is about ten
//! statements, so under load a commit was mostly wake-ups (about 0.1 ms a
//! statement on this project's 2-core reference machine), all of it under
//! the one write lock. Here a whole batch runs on one thread with cached
//! statements, a few microseconds each. Reads stay on sqlx's pool.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use rusqlite::Connection;

use super::bell::Bells;
use super::write::Tx;
use crate::store::apply;
use crate::store::{Change, Created, NewRun, Result, StoreError, Wake, wake};

/// Most commits merged into one transaction.
const GROUP_COMMIT_MAX: usize = 512;

/// A job for the writer thread, with where to send its result.
pub(super) enum Job {
    /// A transition, fenced by the lease (group-committed).
    Commit {
        worker: String,
        run_id: String,
        changes: Vec<Change>,
        reply: tokio::sync::oneshot::Sender<Result<()>>,
    },
    /// A new run with its audit entry (group-committed).
    Create { run: Box<NewRun>, reply: tokio::sync::oneshot::Sender<Result<Created>> },
    /// Any other write, in a transaction of its own; it answers its caller.
    Solo(Box<dyn FnOnce(&mut Connection) + Send>),
}

/// A batched job's result on its way back.
pub(super) enum Done {
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
            (job, _) => job.fail(StoreError::Sqlite("internal: mismatched job result".into())),
        }
    }

    /// Whether this job, done as `done`, can have made a run due.
    fn wakes(&self, done: &Done) -> bool {
        match (self, done) {
            (Job::Create { .. }, Done::Create(Ok(Created::Run(_)))) => true,
            (Job::Commit { changes, .. }, Done::Commit(Ok(()))) => wake::commit_wakes(changes),
            _ => false,
        }
    }

    fn fail(self, error: StoreError) {
        match self {
            Job::Commit { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Job::Create { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            // A solo job answers for itself; dropping it closes its reply.
            Job::Solo(_) => {}
        }
    }
}

/// Opens the writer's connection to `file` (the pool has made the file and
/// migrated it): WAL (a property of the file), `synchronous=FULL` and
/// foreign keys (properties of each connection), and the same busy timeout
/// as the pool, so another process's write is waited for.
fn open(file: &Path) -> Result<Connection> {
    let conn = Connection::open(file)?;
    conn.busy_timeout(Duration::from_secs(30))?;
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Starts the writer thread on `file`; it ends when every sender is dropped.
pub(super) fn start(
    file: &Path,
    write_lock: Arc<tokio::sync::Mutex<()>>,
    bells: Arc<Bells>,
) -> Result<tokio::sync::mpsc::UnboundedSender<Job>> {
    let conn = open(file)?;
    let (sender, jobs) = tokio::sync::mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("lifeboat-sqlite-writer".into())
        .spawn(move || serve(conn, write_lock, jobs, bells))
        .map_err(|e| StoreError::Sqlite(format!("cannot start the SQLite writer thread: {e}")))?;
    Ok(sender)
}

/// Takes every job waiting and applies them: the batchable ones in one
/// transaction, then each solo one in its own.
fn serve(
    mut conn: Connection,
    write_lock: Arc<tokio::sync::Mutex<()>>,
    mut jobs: tokio::sync::mpsc::UnboundedReceiver<Job>,
    bells: Arc<Bells>,
) {
    while let Some(first) = jobs.blocking_recv() {
        let mut batch = Vec::new();
        let mut solos = Vec::new();
        let mut next = Some(first);
        while let Some(job) = next {
            match job {
                Job::Solo(f) => solos.push(f),
                job => batch.push(job),
            }
            next = (batch.len() < GROUP_COMMIT_MAX).then(|| jobs.try_recv().ok()).flatten();
        }
        // One writer at a time in this process (sqlx's writes take it too).
        let guard = write_lock.blocking_lock();
        if !batch.is_empty() {
            match commit_batch(&mut conn, &batch) {
                Ok(results) => {
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
        for solo in solos {
            solo(&mut conn);
        }
        drop(guard);
    }
}

/// Runs `f` in a `BEGIN IMMEDIATE` transaction: committed if it succeeds,
/// rolled back if not.
pub(super) fn in_transaction<T>(
    conn: &mut Connection,
    f: impl FnOnce(&mut Tx<'_>) -> Result<T>,
) -> Result<T> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    match f(&mut Tx(conn)) {
        Ok(value) => match conn.execute_batch("COMMIT") {
            Ok(()) => Ok(value),
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(e.into())
            }
        },
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// The result of an `apply` function over this thread's `Tx`, whose
/// methods never wait: the future is ready when first polled.
pub(super) fn now<T>(future: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    future
        .now_or_never()
        .unwrap_or_else(|| Err(StoreError::Sqlite("internal: a SQLite write waited".into())))
}

/// One transaction for the whole batch. Each job is applied as it stands
/// (`at_once`); only if one fails in a way that needs it undone alone is the
/// batch done again with each job in a savepoint (`job_by_job`).
fn commit_batch(conn: &mut Connection, batch: &[Job]) -> Result<Vec<Done>> {
    match at_once(conn, batch)? {
        Some(results) => Ok(results),
        None => job_by_job(conn, batch),
    }
}

/// The batch without a savepoint per job. A lost lease is found before its
/// job writes anything, so it is answered alone; any other failure rolls
/// the whole transaction back and answers `None`.
fn at_once(conn: &mut Connection, batch: &[Job]) -> Result<Option<Vec<Done>>> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let applied = apply_batch(&mut Tx(conn), batch);
    match applied {
        Ok(Some(results)) => match conn.execute_batch("COMMIT") {
            Ok(()) => Ok(Some(results)),
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(e.into())
            }
        },
        Ok(None) => {
            conn.execute_batch("ROLLBACK")?;
            Ok(None)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// `at_once`'s work inside its transaction (`None`: a job must be undone).
fn apply_batch(tx: &mut Tx<'_>, batch: &[Job]) -> Result<Option<Vec<Done>>> {
    let mut results: Vec<Option<Done>> = batch.iter().map(|_| None).collect();
    super::create::create_together(tx, batch, &mut results)?;
    for (job, result) in batch.iter().zip(results.iter_mut()) {
        if result.is_some() {
            continue;
        }
        // `Some`: done, and nothing to undo if it failed.
        let done = match job {
            Job::Commit { worker, run_id, changes, .. } => {
                match now(apply::check_lease(tx, worker, run_id)) {
                    Err(e) if apply::is_refusal(&e) => Some(Done::Commit(Err(e))),
                    Err(_) => None,
                    Ok(()) => now(apply::apply_all(tx, run_id, changes))
                        .ok()
                        .map(|()| Done::Commit(Ok(()))),
                }
            }
            Job::Create { run, .. } => {
                now(apply::create(tx, run)).ok().map(|c| Done::Create(Ok(c)))
            }
            Job::Solo(_) => unreachable!("solo jobs are not batched"),
        };
        let Some(done) = done else { return Ok(None) };
        *result = Some(done);
    }
    Ok(Some(results.into_iter().map(|r| r.expect("every job done")).collect()))
}

/// Each job in a savepoint, so one job's failure does not undo the others.
fn job_by_job(conn: &mut Connection, batch: &[Job]) -> Result<Vec<Done>> {
    in_transaction(conn, |tx| {
        let mut results: Vec<Option<Done>> = batch.iter().map(|_| None).collect();
        super::create::create_together(tx, batch, &mut results)?;
        for (job, result) in batch.iter().zip(results.iter_mut()) {
            if result.is_some() {
                continue;
            }
            tx.0.execute_batch("SAVEPOINT job")?;
            let done = match job {
                Job::Commit { worker, run_id, changes, .. } => {
                    Done::Commit(now(apply::commit(tx, worker, run_id, changes)))
                }
                Job::Create { run, .. } => Done::Create(now(apply::create(tx, run))),
                Job::Solo(_) => unreachable!("solo jobs are not batched"),
            };
            if matches!(&done, Done::Commit(Err(_)) | Done::Create(Err(_))) {
                tx.0.execute_batch("ROLLBACK TO job")?;
            }
            tx.0.execute_batch("RELEASE job")?;
            *result = Some(done);
        }
        Ok(results.into_iter().map(|r| r.expect("every job done")).collect())
    })
}
