//! One behaviour story per test, run against every backend (atuin's
//! `db_story` pattern): the store seam must mean the same thing everywhere.

use std::sync::Arc;

use serde_json::json;

use super::*;

/// A store on a fresh database for each backend under test: SQLite always,
/// Postgres when `LIFEBOAT_TEST_POSTGRES_URL` names a server (scripts/test.sh
/// starts one) — each call gets a database of its own, `story_<random>`.
async fn backends() -> Vec<(&'static str, Arc<dyn Store>, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("story.db").display());
    let sqlite = open(&url).await.unwrap();
    let mut out: Vec<(&'static str, Arc<dyn Store>, Option<tempfile::TempDir>)> =
        vec![("sqlite", sqlite, Some(dir))];
    match std::env::var("LIFEBOAT_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => {
            let story_url =
                super::postgres::create_scratch_database(&url, "story").await.unwrap_or_else(|e| {
                    panic!("LIFEBOAT_TEST_POSTGRES_URL: cannot create a database: {e}")
                });
            out.push(("postgres", open(&story_url).await.unwrap(), None));
        }
        _ => {
            static NOTE: std::sync::Once = std::sync::Once::new();
            NOTE.call_once(|| {
                eprintln!(
                    "note: LIFEBOAT_TEST_POSTGRES_URL is unset: store stories run on SQLite only \
                     (scripts/test.sh starts a Postgres and sets it)"
                )
            });
        }
    }
    out
}

/// A two-step run of the stories' workflow (also used by backend-specific tests).
pub(super) fn new_run(id: &str, key: Option<&str>, skip: bool) -> NewRun {
    NewRun {
        id: id.into(),
        workflow: "wf".into(),
        definition_hash: "h1".into(),
        inputs: json!({"site": "dc01"}),
        trigger: json!({"kind": "manual"}),
        concurrency_key: key.map(String::from),
        skip_on_conflict: skip,
        parent: None,
        root: None,
        step_ids: vec!["a".into(), "b".into()],
        lease_to: None,
        dedupe_key: None,
        schedule_tick: None,
    }
}

/// Stores the definition `new_run` refers to.
pub(super) async fn with_definition(store: &dyn Store) {
    store
        .put_definition(&Definition {
            hash: "h1".into(),
            workflow: "wf".into(),
            file: "wf.yaml".into(),
            source: "name: wf".into(),
        })
        .await
        .unwrap();
}

fn lease(now: i64) -> Lease {
    Lease { now, duration_ms: 1_000 }
}

#[tokio::test]
async fn a_new_run_is_queued_with_pending_steps_and_an_event() {
    for (name, store, _dir) in backends().await {
        with_definition(&*store).await;
        assert_eq!(
            store.create_run(new_run("r1", None, false)).await.unwrap(),
            Created::Run("r1".into())
        );
        let run = store.run("r1").await.unwrap().unwrap();
        assert_eq!(run.status, RunStatus::Queued, "{name}");
        assert_eq!(run.root_run_id, "r1", "{name}");
        let steps = store.steps("r1").await.unwrap();
        assert!(
            steps.iter().all(|s| s.status == StepStatus::Pending) && steps.len() == 2,
            "{name}"
        );
        assert_eq!(store.events("r1", 0).await.unwrap()[0].kind, "queued", "{name}");
        assert_eq!(store.resolve_run_id("r").await.unwrap(), "r1", "{name}");
    }
}

#[tokio::test]
async fn only_one_worker_claims_a_run_until_its_lease_expires() {
    for (name, store, _dir) in backends().await {
        with_definition(&*store).await;
        store.create_run(new_run("r1", None, false)).await.unwrap();
        let now = now_ms();
        assert_eq!(store.claim("w1", lease(now), 10, None).await.unwrap(), vec!["r1"], "{name}");
        assert!(store.claim("w2", lease(now), 10, None).await.unwrap().is_empty(), "{name}");
        // w1 stops renewing: after the lease, w2 takes over.
        assert_eq!(
            store.claim("w2", lease(now + 1_001), 10, None).await.unwrap(),
            vec!["r1"],
            "{name}"
        );
        assert_eq!(
            store.renew("w1", lease(now + 1_002)).await.unwrap(),
            Vec::<String>::new(),
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_worker_that_lost_its_lease_cannot_commit() {
    for (name, store, _dir) in backends().await {
        with_definition(&*store).await;
        store.create_run(new_run("r1", None, false)).await.unwrap();
        let now = now_ms();
        store.claim("w1", lease(now), 10, None).await.unwrap();
        store.claim("w2", lease(now + 5_000), 10, None).await.unwrap();
        let change =
            Change::Run(RunUpdate { status: Some(RunStatus::Failed), ..Default::default() });
        let err = store.commit("w1", "r1", std::slice::from_ref(&change)).await.unwrap_err();
        assert!(matches!(err, StoreError::LeaseLost(_)), "{name}: {err}");
        assert_eq!(store.run("r1").await.unwrap().unwrap().status, RunStatus::Queued, "{name}");
        store.commit("w2", "r1", &[change]).await.unwrap();
        assert_eq!(store.run("r1").await.unwrap().unwrap().status, RunStatus::Failed, "{name}");
    }
}

#[tokio::test]
async fn a_commit_applies_all_of_its_changes_or_none() {
    for (name, store, _dir) in backends().await {
        with_definition(&*store).await;
        store.create_run(new_run("r1", None, false)).await.unwrap();
        store.claim("w1", lease(now_ms()), 10, None).await.unwrap();
        let mut step = StepRecord::pending("r1", "a");
        step.status = StepStatus::Running;
        step.attempts = 1;
        let attempt = AttemptRecord {
            run_id: "r1".into(),
            step_id: "a".into(),
            phase: Phase::Forward,
            n: 1,
            status: AttemptStatus::Running,
            worker: "w1".into(),
            pgid: None,
            started_at: now_ms(),
            finished_at: None,
            error: None,
            stdout: None,
            stderr: None,
        };
        // The same attempt inserted twice violates its key: nothing of the batch lands.
        let bad = vec![
            Change::Step(step.clone()),
            Change::AttemptStarted(attempt.clone()),
            Change::AttemptStarted(attempt.clone()),
        ];
        assert!(store.commit("w1", "r1", &bad).await.is_err(), "{name}");
        assert_eq!(
            store.steps("r1").await.unwrap().iter().find(|s| s.step_id == "a").unwrap().status,
            StepStatus::Pending,
            "{name}"
        );
        store
            .commit("w1", "r1", &[Change::Step(step), Change::AttemptStarted(attempt)])
            .await
            .unwrap();
        assert_eq!(store.attempts("r1").await.unwrap().len(), 1, "{name}");
    }
}

#[tokio::test]
async fn a_busy_concurrency_key_skips_or_queues() {
    for (name, store, _dir) in backends().await {
        with_definition(&*store).await;
        store.create_run(new_run("r1", Some("k"), true)).await.unwrap();
        assert_eq!(
            store.create_run(new_run("r2", Some("k"), true)).await.unwrap(),
            Created::Skipped { active: "r1".into() },
            "{name}"
        );
        // queue: created, but not claimable while r1 is active.
        store.create_run(new_run("r3", Some("k"), false)).await.unwrap();
        let now = now_ms();
        assert_eq!(store.claim("w1", lease(now), 10, None).await.unwrap(), vec!["r1"], "{name}");
        store
            .commit(
                "w1",
                "r1",
                &[
                    Change::Run(RunUpdate {
                        status: Some(RunStatus::Succeeded),
                        ..Default::default()
                    }),
                    Change::Release { wake_at: None },
                ],
            )
            .await
            .unwrap();
        assert_eq!(store.claim("w1", lease(now), 10, None).await.unwrap(), vec!["r3"], "{name}");
    }
}

#[tokio::test]
async fn a_released_run_waits_for_its_timer_or_a_request() {
    for (name, store, _dir) in backends().await {
        with_definition(&*store).await;
        store.create_run(new_run("r1", None, false)).await.unwrap();
        let now = now_ms();
        store.claim("w1", lease(now), 10, None).await.unwrap();
        store.release("w1", "r1", Some(now + 60_000)).await.unwrap();
        assert!(store.claim("w2", lease(now), 10, None).await.unwrap().is_empty(), "{name}");
        assert_eq!(
            store.claim("w2", lease(now + 60_000), 10, None).await.unwrap(),
            vec!["r1"],
            "{name}"
        );
        store.release("w2", "r1", Some(now + 60_000)).await.unwrap();
        store
            .request(NewRequest {
                run_id: "r1".into(),
                kind: RequestKind::Skip,
                step_id: Some("a".into()),
                data: None,
                actor: "alice".into(),
            })
            .await
            .unwrap();
        assert_eq!(store.claim("w3", lease(now), 10, None).await.unwrap(), vec!["r1"], "{name}");
        let open = store.open_requests("r1").await.unwrap();
        assert_eq!((open.len(), open[0].actor.as_str()), (1, "alice"), "{name}");
    }
}

#[tokio::test]
async fn racing_workers_never_both_win_a_run() {
    for (name, store, _dir) in backends().await {
        with_definition(&*store).await;
        for i in 0..50 {
            store.create_run(new_run(&format!("r{i:02}"), None, false)).await.unwrap();
        }
        let now = now_ms();
        let mut tasks = Vec::new();
        for w in 0..4 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                for _ in 0..20 {
                    mine.extend(store.claim(&format!("w{w}"), lease(now), 3, None).await.unwrap());
                }
                mine
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        let before = all.len();
        all.sort();
        all.dedup();
        assert_eq!((before, all.len()), (50, 50), "{name}: a run was claimed twice");
    }
}

#[tokio::test]
async fn text_with_nul_bytes_and_odd_unicode_is_stored() {
    for (name, store, _dir) in backends().await {
        with_definition(&*store).await;
        store.create_run(new_run("r1", None, false)).await.unwrap();
        store.claim("w1", lease(now_ms()), 10, None).await.unwrap();
        let mut step = StepRecord::pending("r1", "a");
        step.status = StepStatus::Failed;
        step.error = Some("bad\0byte é 🚒".into());
        step.outputs = Some(json!({"stdout": "x\0y"}));
        store.commit("w1", "r1", &[Change::Step(step)]).await.unwrap();
        let stored =
            store.steps("r1").await.unwrap().into_iter().find(|s| s.step_id == "a").unwrap();
        let error = stored.error.unwrap();
        assert!(error.starts_with("bad") && error.ends_with("é 🚒"), "{name}: {error}");
    }
}

#[tokio::test]
async fn a_wake_during_a_drive_survives_the_release() {
    for (name, store, _dir) in backends().await {
        with_definition(&*store).await;
        store.create_run(new_run("parent", None, false)).await.unwrap();
        store.create_run(new_run("child", None, false)).await.unwrap();
        let now = now_ms();
        assert_eq!(store.claim("w1", lease(now), 1, None).await.unwrap(), vec!["child"], "{name}");
        assert_eq!(store.claim("w2", lease(now), 1, None).await.unwrap(), vec!["parent"], "{name}");
        // The child ends and wakes its parent while the parent's driver is
        // about to suspend "until a person acts": the wake must not be lost.
        store.commit("w1", "child", &[Change::WakeRun { run_id: "parent".into() }]).await.unwrap();
        store
            .commit("w2", "parent", &[Change::Release { wake_at: Some(i64::MAX / 4) }])
            .await
            .unwrap();
        assert_eq!(
            store.claim("w3", lease(now), 10, None).await.unwrap(),
            vec!["parent"],
            "{name}"
        );
        // Claiming consumed the wake: the next release sleeps as asked.
        store
            .commit("w3", "parent", &[Change::Release { wake_at: Some(i64::MAX / 4) }])
            .await
            .unwrap();
        assert!(store.claim("w3", lease(now), 10, None).await.unwrap().is_empty(), "{name}");
    }
}

#[tokio::test]
async fn live_workers_are_listed_with_their_leases() {
    for (name, store, _dir) in backends().await {
        with_definition(&*store).await;
        let now = now_ms();
        let worker =
            |id: &str| WorkerRecord { id: id.into(), host: "h".into(), pid: 7, started_at: now };
        store.register_worker(&worker("w1")).await.unwrap();
        store.register_worker(&worker("w2")).await.unwrap();
        store.create_run(new_run("r1", None, false)).await.unwrap();
        store.claim("w1", lease(now), 10, None).await.unwrap();
        let workers = store.workers(now - 1).await.unwrap();
        assert_eq!(workers.len(), 2, "{name}");
        let w1 = workers.iter().find(|w| w.id == "w1").unwrap();
        assert_eq!(w1.leases, vec![("r1".to_string(), now + 1_000)], "{name}");
        assert!(
            store.workers(now + 1).await.unwrap().is_empty(),
            "{name}: stale workers are not live"
        );
    }
}
