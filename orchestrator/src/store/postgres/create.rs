//! Group commit of run creation on Postgres: concurrent `create_run` calls
//! (a burst through the API or from webhooks) queue here and one task
//! creates a batch of them in one transaction — one commit, one hold of the
//! audit lock — each run in a savepoint, so one refused run does not undo
//! the others. Without it, every creation waits for the audit lock and its
//! own commit in turn.

use std::sync::Arc;

use sqlx::postgres::PgPool;
use tokio::sync::{mpsc, oneshot};

use super::write::Tx;
use super::{bell, is_transient, retrying};
use crate::store::apply;
use crate::store::{Created, Doorbell, NewRun, Result, StoreError, Wake};

/// Most runs created in one transaction.
const BATCH_MAX: usize = 256;

/// One `create_run` waiting for its batch.
pub(super) struct Job {
    run: NewRun,
    reply: oneshot::Sender<Result<Created>>,
}

/// The queue of run creations, and the task that empties it.
pub(super) struct Creator {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Creator {
    pub(super) fn start(pool: PgPool, channel: String, bell: Arc<Doorbell>) -> Creator {
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(create_batches(pool, channel, bell, queue));
        Creator { jobs }
    }

    pub(super) async fn create(&self, run: NewRun) -> Result<Created> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Unavailable("the run creation task has stopped".into());
        self.jobs.send(Job { run, reply }).map_err(|_| stopped())?;
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }
}

async fn create_batches(
    pool: PgPool,
    channel: String,
    bell: Arc<Doorbell>,
    mut queue: mpsc::UnboundedReceiver<Job>,
) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH_MAX {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let runs: Vec<&NewRun> = batch.iter().map(|j| &j.run).collect();
        match retrying(|| create_batch(&pool, &channel, &runs)).await {
            Ok(results) => {
                if results.iter().any(|r| matches!(r, Ok(Created::Run(_)))) {
                    bell.ring(&Wake::Due);
                }
                for (job, result) in batch.into_iter().zip(results) {
                    let _ = job.reply.send(result);
                }
            }
            Err(e) => {
                for job in batch {
                    let _ = job.reply.send(Err(e.for_another()));
                }
            }
        }
    }
}

/// Creates `runs` in one transaction; each one's own outcome. A transient
/// failure (deadlock, serialization) fails the whole batch, to be retried.
async fn create_batch(
    pool: &PgPool,
    channel: &str,
    runs: &[&NewRun],
) -> Result<Vec<Result<Created>>> {
    let mut tx = pool.begin().await?;
    let mut results = Vec::with_capacity(runs.len());
    for run in runs {
        sqlx::query("SAVEPOINT job").execute(&mut *tx).await?;
        let created = match apply::create(&mut Tx(&mut tx), run).await {
            // The whole batch is rolled back and tried again.
            Err(e) if is_transient(&e) => return Err(e),
            Err(e) => {
                sqlx::query("ROLLBACK TO SAVEPOINT job").execute(&mut *tx).await?;
                Err(e)
            }
            ok => ok,
        };
        sqlx::query("RELEASE SAVEPOINT job").execute(&mut *tx).await?;
        results.push(created);
    }
    if results.iter().any(|r| matches!(r, Ok(Created::Run(_)))) {
        bell::announce(&mut tx, channel, &Wake::Due).await?;
    }
    tx.commit().await?;
    Ok(results)
}
