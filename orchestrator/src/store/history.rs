//! A measurement, not a check (`#[ignore]`): how long the hot queries take
//! on SQLite with 100,000 finished runs of history, with the indexes of
//! migration 0006 and the queries as they are now, and with the schema and
//! the queries as they were before it (the old texts below, copied from the
//! store at d69183b, are what "before" ran). Run:
//!
//! ```sh
//! cargo test --release -p lifeboat-orchestrator --lib store::history -- --ignored --nocapture
//! ```

use std::time::{Duration, Instant};

use serde_json::json;

use super::conformance::{lease, new_run, with_definition};
use super::*;
use crate::events::RunEvent;

/// Finished runs of history.
const HISTORY: i64 = 100_000;
/// Active runs: what a busy worker has at once.
const ACTIVE: usize = 20;

pub(super) const OLD_CLAIM: &str = "UPDATE runs SET lease_owner = ?1, lease_expires_at = ?2, woken = 0 WHERE id IN ( \
   SELECT r.id FROM runs r WHERE r.status IN ('queued','running','waiting','rolling_back') \
     AND (r.lease_owner IS NULL OR r.lease_expires_at < ?3) \
     AND (r.wake_at IS NULL OR r.wake_at <= ?3) \
     AND (r.paused = 0 OR EXISTS (SELECT 1 FROM requests q WHERE q.run_id = r.id AND q.done_at IS NULL)) \
     AND (?5 IS NULL OR r.root_run_id = ?5) \
     AND NOT (r.status = 'queued' AND r.concurrency_key IS NOT NULL AND EXISTS ( \
       SELECT 1 FROM runs o WHERE o.concurrency_key = r.concurrency_key AND o.id < r.id \
         AND o.status IN ('queued','running','waiting','rolling_back'))) \
   ORDER BY r.id LIMIT ?4) RETURNING id";
pub(super) const OLD_PENDING: &str = "SELECT s.* FROM steps s JOIN runs r ON r.id = s.run_id \
   WHERE r.status IN ('queued','running','waiting','rolling_back') \
   AND s.status IN ('needs_human', 'waiting') ORDER BY s.run_id";
const OLD_LIST: &str = "SELECT * FROM runs WHERE (CAST($1 AS TEXT) IS NULL OR status = $1) \
   AND (CAST($2 AS TEXT) IS NULL OR workflow = $2) \
   AND (CAST($4 AS TEXT) IS NULL OR id < $4) ORDER BY id DESC LIMIT $3";
const OLD_COUNTS: &str = "SELECT status, COUNT(*) FROM runs GROUP BY status";
/// Back to the indexes of migration 0005.
pub(super) const UNDO_0006: &str = "DROP INDEX runs_active_by_concurrency; \
   DROP INDEX runs_by_status; DROP INDEX runs_by_workflow_id; DROP INDEX runs_by_workflow_status; \
   DROP INDEX outbox_pending_by_run; DROP INDEX workers_by_heartbeat; \
   CREATE INDEX runs_by_concurrency ON runs (concurrency_key) WHERE concurrency_key IS NOT NULL; \
   CREATE INDEX runs_by_workflow ON runs (workflow, created_at);";

/// A run that went through the store as a worker drives it: claimed, its
/// three steps attempted and succeeded, events recorded, finished.
async fn finished_run(store: &sqlite::SqliteStore, id: &str) {
    let mut run = new_run(id, Some("site-dc01"), false);
    run.step_ids = vec!["a".into(), "b".into(), "c".into()];
    store.create_run(run).await.unwrap();
    let now = now_ms();
    store.claim("w", lease(now), 1, Some(id)).await.unwrap();
    let mut changes = vec![Change::Run(RunUpdate {
        status: Some(RunStatus::Succeeded),
        started_at: Some(now),
        finished_at: Some(now + 30),
        outputs: Some(json!({"ok": true})),
        ..RunUpdate::default()
    })];
    for step in ["a", "b", "c"] {
        let attempt = AttemptRecord {
            run_id: id.into(),
            step_id: step.into(),
            phase: Phase::Forward,
            n: 1,
            status: AttemptStatus::Running,
            worker: "w".into(),
            pgid: None,
            started_at: now,
            finished_at: None,
            error: None,
            stdout: None,
            stderr: None,
        };
        changes.push(Change::AttemptStarted(attempt));
        changes.push(Change::AttemptFinished {
            step_id: step.into(),
            phase: Phase::Forward,
            n: 1,
            status: AttemptStatus::Succeeded,
            finished_at: now + 10,
            error: None,
            stdout: Some("done\n".into()),
            stderr: None,
        });
        changes.push(Change::Step(StepRecord {
            status: StepStatus::Succeeded,
            attempts: 1,
            started_at: Some(now),
            finished_at: Some(now + 10),
            outputs: Some(json!({"exit": 0})),
            ..StepRecord::pending(id, step)
        }));
        for kind in [RunEvent::StepStarted, RunEvent::StepSucceeded] {
            changes.push(Change::Event { at: now, kind, step_id: Some(step.into()), data: None });
        }
    }
    changes.push(Change::Event { at: now, kind: RunEvent::Succeeded, step_id: None, data: None });
    changes.push(Change::Release { wake_at: None });
    store.commit("w", id, &changes).await.unwrap();
}

/// `HISTORY` copies of run `template`'s rows (run, steps, attempts,
/// events), with ids older than any real run, a tenth of them failed.
async fn seed(pool: &sqlx::SqlitePool, template: &str) {
    let mut tx = pool.begin().await.unwrap();
    sqlx::raw_sql(&format!(
        "CREATE TEMP TABLE n AS WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < {HISTORY}) \
           SELECT i, printf('00000000-0000-7000-8000-%012d', i) AS id FROM c;"
    ))
    .execute(&mut *tx)
    .await
    .unwrap();
    let copies = [
        "INSERT INTO runs (id, workflow, definition_hash, status, inputs, outputs, trigger, concurrency_key, \
           parent_run_id, parent_step_id, root_run_id, cancelled_by, paused, error, created_at, started_at, \
           finished_at, wake_at, woken, lease_owner, lease_expires_at, dedupe_key, pins) \
         SELECT n.id, r.workflow, r.definition_hash, CASE WHEN n.i % 10 = 0 THEN 'failed' ELSE r.status END, \
           r.inputs, r.outputs, r.trigger, r.concurrency_key, r.parent_run_id, r.parent_step_id, n.id, \
           r.cancelled_by, r.paused, r.error, r.created_at, r.started_at, r.finished_at, r.wake_at, r.woken, \
           r.lease_owner, r.lease_expires_at, r.dedupe_key, r.pins FROM n, runs r WHERE r.id = $1",
        "INSERT INTO steps SELECT n.id, s.step_id, s.status, s.attempts, s.outputs, s.error, s.started_at, \
           s.finished_at, s.wake_at, s.state, s.rollback FROM n, steps s WHERE s.run_id = $1",
        "INSERT INTO attempts SELECT n.id, a.step_id, a.phase, a.n, a.status, a.worker, a.pgid, a.started_at, \
           a.finished_at, a.error, a.stdout, a.stderr FROM n, attempts a WHERE a.run_id = $1",
        "INSERT INTO events (run_id, at, kind, step_id, data) SELECT n.id, e.at, e.kind, e.step_id, e.data \
           FROM n, events e WHERE e.run_id = $1 ORDER BY n.i, e.id",
    ];
    for sql in copies {
        sqlx::query(sql).bind(template).execute(&mut *tx).await.unwrap();
    }
    sqlx::raw_sql("DROP TABLE n").execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
}

/// The median of `n` timings of `f`.
async fn median<F, Fut>(n: usize, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        f().await;
        times.push(start.elapsed());
    }
    times.sort();
    times[n / 2]
}

/// The hot queries' times on `pool`, with either the current SQL or the old.
async fn measure(store: &sqlite::SqliteStore, old: bool) -> Vec<(&'static str, Duration)> {
    let pool = &store.pool;
    let mut out = Vec::new();
    let pending = median(21, || async move {
        let sql = if old { OLD_PENDING } else { sqlite::PENDING_PEOPLE };
        let rows = sqlx::query(sql).fetch_all(pool).await.unwrap();
        assert_eq!(rows.len(), 1, "one step waits for a person");
    })
    .await;
    out.push(("pending (its query)", pending));
    let claim = median(21, || async move {
        let sql = if old { OLD_CLAIM } else { sqlite::CLAIM };
        let mut tx = pool.begin().await.unwrap();
        let ids: Vec<String> = sqlx::query_scalar(sql)
            .bind("w2")
            .bind(now_ms() + 1_000)
            .bind(now_ms())
            .bind(10_i64)
            .bind(None::<String>)
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        assert_eq!(ids.len(), 10);
        tx.rollback().await.unwrap();
    })
    .await;
    out.push(("claim 10 of the active runs", claim));
    let filters = [
        ("list, newest 50", RunFilter { limit: Some(50), ..RunFilter::default() }),
        (
            "list, failed, 50",
            RunFilter { status: Some(RunStatus::Failed), limit: Some(50), ..RunFilter::default() },
        ),
        (
            "list, one workflow, 50, deep cursor",
            RunFilter {
                workflow: Some("wf".into()),
                limit: Some(50),
                before: Some("00000000-0000-7000-8000-000000001000".into()),
                ..RunFilter::default()
            },
        ),
        (
            "list, cancelled (none), 50",
            RunFilter {
                status: Some(RunStatus::Cancelled),
                limit: Some(50),
                ..RunFilter::default()
            },
        ),
    ];
    for (name, filter) in &filters {
        let took = median(11, || async move {
            if old {
                sqlx::query(OLD_LIST)
                    .bind(filter.status.map(|s| s.as_str()))
                    .bind(&filter.workflow)
                    .bind(i64::from(filter.limit.unwrap()))
                    .bind(&filter.before)
                    .fetch_all(pool)
                    .await
                    .unwrap();
            } else {
                store.runs(filter).await.unwrap();
            }
        })
        .await;
        out.push((*name, took));
    }
    let counts = median(11, || async move {
        let sql = if old { OLD_COUNTS } else { reads::RUN_COUNTS };
        sqlx::query(sql).fetch_all(pool).await.unwrap();
    })
    .await;
    out.push(("run counts (metrics)", counts));
    out
}

#[tokio::test]
#[ignore = "a measurement: 100k runs of history, about a minute"]
async fn hot_queries_with_100k_runs_of_history() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("history.db").display());
    let store = sqlite::SqliteStore::open(&url).await.unwrap();
    with_definition(&store).await;
    let template = uuid::Uuid::now_v7().to_string();
    finished_run(&store, &template).await;
    let started = Instant::now();
    seed(&store.pool, &template).await;
    eprintln!("seeded {HISTORY} finished runs in {:?}", started.elapsed());
    // Each with a key of its own; the first one's key is the history's.
    for i in 1..=ACTIVE {
        let key = format!("site-dc{i:02}");
        let run = new_run(&uuid::Uuid::now_v7().to_string(), Some(&key), false);
        store.create_run(run).await.unwrap();
    }
    // One of them waits for a person.
    let waiting = uuid::Uuid::now_v7().to_string();
    store.create_run(new_run(&waiting, None, false)).await.unwrap();
    sqlx::query("UPDATE steps SET status = 'needs_human' WHERE run_id = $1 AND step_id = 'a'")
        .bind(&waiting)
        .execute(&store.pool)
        .await
        .unwrap();
    let after = measure(&store, false).await;
    sqlx::raw_sql(UNDO_0006).execute(&store.pool).await.unwrap();
    // A new pool: no connection plans with the schema it knew before.
    store.pool.close().await;
    let store = sqlite::SqliteStore::open(&url).await.unwrap();
    let before = measure(&store, true).await;
    eprintln!("{:<40} {:>12} {:>12}", "query", "before", "after");
    for ((name, b), (_, a)) in before.iter().zip(&after) {
        eprintln!("{name:<40} {:>12?} {:>12?}", b, a);
    }
}

/// The reads of drill freshness and measured recovery times (migration
/// 0009) with 100,000 finished runs of the workflow, with and without
/// `runs_succeeded_by_workflow`. Measured (debug build, 2 shared cores):
/// the last 20 drills of a workflow with none among 100k live runs, 250 ms
/// without the index, 0.1 ms with it; the last 20 live runs 0.3 ms either
/// way (they are the newest); freshness 0.02 ms.
#[tokio::test]
#[ignore = "a measurement: 100k runs of history, about a minute"]
async fn drill_reads_with_100k_runs_of_history() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("history.db").display());
    let store = sqlite::SqliteStore::open(&url).await.unwrap();
    with_definition(&store).await;
    let template = uuid::Uuid::now_v7().to_string();
    finished_run(&store, &template).await;
    seed(&store.pool, &template).await;
    let reads = |store: std::sync::Arc<sqlite::SqliteStore>| async move {
        let s = &store;
        let live = median(21, || async move {
            let got = s.recovery_samples("wf", RunMode::Live, 20).await.unwrap();
            assert_eq!((got.len(), got[0].steps.len()), (20, 3));
        })
        .await;
        let drills = median(21, || async move {
            assert!(s.recovery_samples("wf", RunMode::Drill, 20).await.unwrap().is_empty());
        })
        .await;
        let marks = median(21, || async move {
            s.drill_marks("wf").await.unwrap();
        })
        .await;
        [
            ("last 20 successful live runs + steps", live),
            ("last 20 drills (none)", drills),
            ("drill freshness of a workflow", marks),
        ]
    };
    let with = reads(std::sync::Arc::new(store)).await;
    // A new pool without the index: no connection keeps a plan that used it.
    let store = sqlite::SqliteStore::open(&url).await.unwrap();
    sqlx::raw_sql("DROP INDEX runs_succeeded_by_workflow").execute(&store.pool).await.unwrap();
    store.pool.close().await;
    let store = sqlite::SqliteStore::open(&url).await.unwrap();
    let without = reads(std::sync::Arc::new(store)).await;
    eprintln!("{:<40} {:>14} {:>12}", "query (100k runs)", "without index", "with");
    for ((name, a), (_, b)) in with.iter().zip(&without) {
        eprintln!("{name:<40} {:>14?} {:>12?}", b, a);
    }
}
