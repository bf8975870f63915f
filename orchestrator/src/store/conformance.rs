//! One behaviour story per test, run against every backend (atuin's
//! `db_story` pattern): the store seam must mean the same thing everywhere.

use std::sync::Arc;

use serde_json::json;

use super::*;

/// A store on a fresh database for each backend under test: SQLite always,
/// Postgres when `LIFEBOAT_TEST_POSTGRES_URL` names a server (scripts/test.sh
/// starts one) — each call gets a database of its own, `story_<random>`.
pub(super) async fn backends() -> Vec<(&'static str, Arc<dyn Store>, Option<tempfile::TempDir>)> {
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
        audit: None,
        pins: None,
        mode: RunMode::Live,
        scenario: None,
        drill: None,
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

pub(super) fn lease(now: i64) -> Lease {
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
async fn a_run_keeps_the_child_workflows_pinned_when_it_was_created() {
    for (name, store, _dir) in backends().await {
        with_definition(&*store).await;
        let pins = Pins::from([("restore".to_string(), "abc123".to_string())]);
        store
            .create_run(NewRun { pins: Some(pins.clone()), ..new_run("r1", None, false) })
            .await
            .unwrap();
        store
            .create_run(NewRun { pins: Some(Pins::new()), ..new_run("r2", None, false) })
            .await
            .unwrap();
        store.create_run(new_run("r3", None, false)).await.unwrap();
        assert_eq!(store.run("r1").await.unwrap().unwrap().pins, Some(pins), "{name}");
        assert_eq!(store.run("r2").await.unwrap().unwrap().pins, Some(Pins::new()), "{name}");
        assert_eq!(store.run("r3").await.unwrap().unwrap().pins, None, "{name}: none stored");
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
        assert!(matches!(err, StoreError::Conflict(Conflict::LeaseLost(_))), "{name}: {err}");
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

#[tokio::test]
async fn a_dedupe_key_allows_one_active_run_and_frees_when_it_ends() {
    for (name, store, _dir) in backends().await {
        with_definition(&*store).await;
        let keyed =
            |id: &str| NewRun { dedupe_key: Some("am:fp1".into()), ..new_run(id, None, false) };
        assert_eq!(store.create_run(keyed("r1")).await.unwrap(), Created::Run("r1".into()));
        assert_eq!(
            store.create_run(keyed("r2")).await.unwrap(),
            Created::Duplicate { existing: "r1".into() },
            "{name}"
        );
        // Another key is another alert.
        let other = NewRun { dedupe_key: Some("am:fp2".into()), ..new_run("r3", None, false) };
        assert_eq!(store.create_run(other).await.unwrap(), Created::Run("r3".into()), "{name}");
        // Once r1 has ended, the same alert firing again starts a new run.
        let now = now_ms();
        store.claim("w1", lease(now), 10, Some("r1")).await.unwrap();
        let done = RunUpdate { status: Some(RunStatus::Succeeded), ..Default::default() };
        store.commit("w1", "r1", &[Change::Run(done)]).await.unwrap();
        assert_eq!(
            store.create_run(keyed("r4")).await.unwrap(),
            Created::Run("r4".into()),
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_schedule_tick_creates_one_run_ever() {
    for (name, store, _dir) in backends().await {
        with_definition(&*store).await;
        let tick = |id: &str, at: i64| NewRun {
            schedule_tick: Some(("wf#0".into(), at)),
            ..new_run(id, None, false)
        };
        assert_eq!(store.last_tick("wf#0").await.unwrap(), None, "{name}");
        assert_eq!(store.create_run(tick("r1", 60_000)).await.unwrap(), Created::Run("r1".into()));
        assert_eq!(
            store.create_run(tick("r2", 60_000)).await.unwrap(),
            Created::Duplicate { existing: "r1".into() },
            "{name}"
        );
        assert!(store.run("r2").await.unwrap().is_none(), "{name}: no half-created run");
        assert_eq!(store.create_run(tick("r3", 120_000)).await.unwrap(), Created::Run("r3".into()));
        assert_eq!(store.last_tick("wf#0").await.unwrap(), Some(120_000), "{name}");
    }
}

#[tokio::test]
async fn concurrent_identical_ticks_and_alerts_create_one_run_each() {
    for (name, store, _dir) in backends().await {
        with_definition(&*store).await;
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let run = NewRun {
                        schedule_tick: (i % 2 == 0).then(|| ("wf#0".to_string(), 60_000)),
                        dedupe_key: (i % 2 == 1).then(|| "am:fp".to_string()),
                        ..new_run(&format!("r{i:02}"), None, false)
                    };
                    store.create_run(run).await.unwrap()
                })
            })
            .collect();
        let mut made = 0;
        for t in tasks {
            if matches!(t.await.unwrap(), Created::Run(_)) {
                made += 1;
            }
        }
        assert_eq!(made, 2, "{name}: one per tick and one per alert");
    }
}

#[tokio::test]
async fn the_audit_log_chains_every_entry() {
    for (name, store, _dir) in backends().await {
        for i in 0..5 {
            store
                .audit_append(NewAudit {
                    actor: "alice".into(),
                    action: "cancel".into(),
                    run_id: Some(format!("r{i}")),
                    step_id: None,
                    payload: json!({"i": i, "nested": {"z": 1, "a": [1, 2]}}),
                })
                .await
                .unwrap();
        }
        let entries = store.audit_list(0, 100).await.unwrap();
        assert_eq!(entries.iter().map(|e| e.id).collect::<Vec<_>>(), [1, 2, 3, 4, 5], "{name}");
        let (_, next) =
            audit::verify_chain(&entries, audit::GENESIS.into(), 1).expect("intact chain");
        assert_eq!(next, 6, "{name}");
        // Paging continues the chain.
        let (head, next) = audit::verify_chain(&entries[..2], audit::GENESIS.into(), 1).unwrap();
        assert!(audit::verify_chain(&store.audit_list(2, 100).await.unwrap(), head, next).is_ok());
    }
}

#[tokio::test]
async fn walking_the_audit_log_finds_its_head_and_checkpoints_anchor_only_a_moved_head() {
    use crate::audit_anchor::{self as anchors, AnchorKey, Checkpointer, Sink};
    let append = |store: Arc<dyn Store>, i: i64| async move {
        let entry = NewAudit {
            actor: "alice".into(),
            action: "run".into(),
            run_id: Some(format!("r{i}")),
            step_id: None,
            payload: json!({ "i": i }),
        };
        store.audit_append(entry).await.unwrap()
    };
    for (name, store, _dir) in backends().await {
        let empty = audit::walk(&*store, None, &Default::default()).await.unwrap();
        assert_eq!((empty.head, empty.last_id, empty.verified), (None, 0, 0), "{name}");
        let mut hashes = Vec::new();
        for i in 1..=3 {
            hashes.push(append(store.clone(), i).await.hash);
        }
        let walked = audit::walk(&*store, None, &[2, 9].into()).await.unwrap();
        assert_eq!(walked.head, Some((3, hashes[2].clone())), "{name}");
        assert_eq!((walked.verified, walked.last_id, walked.broken), (3, 3, None), "{name}");
        assert_eq!(walked.hashes, [(2, hashes[1].clone())].into(), "{name}");
        // From a checked head, only what follows it is read.
        hashes.push(append(store.clone(), 4).await.hash);
        let more = audit::walk(&*store, walked.head.clone(), &Default::default()).await.unwrap();
        assert_eq!((more.verified, more.head), (1, Some((4, hashes[3].clone()))), "{name}");

        let dir = tempfile::tempdir().unwrap();
        let key = AnchorKey::new(b"conformance-anchor-key-32-bytes!").unwrap();
        let sink = Sink { file: dir.path().join("anchors.jsonl"), key: key.clone() };
        let checkpointer = Checkpointer::new(store.clone(), sink.clone(), "test".into());
        let first = checkpointer.checkpoint().await.unwrap().expect("first checkpoint anchors");
        assert_eq!((first.id, first.hash.as_str()), (4, hashes[3].as_str()), "{name}");
        assert_eq!(checkpointer.checkpoint().await.unwrap(), None, "{name}: head unchanged");
        append(store.clone(), 5).await;
        assert_eq!(checkpointer.checkpoint().await.unwrap().map(|a| a.id), Some(5), "{name}");

        let lines = anchors::read(&sink.file).unwrap();
        let walked = audit::walk(&*store, None, &anchors::anchored_ids(&lines)).await.unwrap();
        let report = anchors::check(&lines, &key, walked.last_id, &walked.hashes);
        assert_eq!(
            (report.failures, report.matched, report.covered),
            (vec![], 2, Some(5)),
            "{name}"
        );
    }
}

#[tokio::test]
async fn the_outbox_is_written_with_its_transition_and_delivered_once() {
    for (name, store, _dir) in backends().await {
        with_definition(&*store).await;
        store.create_run(new_run("r1", None, false)).await.unwrap();
        let now = now_ms();
        store.claim("w1", lease(now), 10, None).await.unwrap();
        let notify = |key: &str, channel: &str| {
            Change::Notify(NewNotification {
                dedupe_key: key.into(),
                step_id: Some("a".into()),
                event: "failed".into(),
                channel: channel.into(),
                message: json!({"subject": "s"}),
                at: now,
            })
        };
        let first = [notify("k1", "pager"), notify("k2", "mail"), notify("k3", "pager")];
        store.commit("w1", "r1", &first).await.unwrap();
        // The same key again (a replayed transition) is ignored.
        store.commit("w1", "r1", &[notify("k1", "pager")]).await.unwrap();
        assert_eq!(store.outbox("r1").await.unwrap().len(), 3, "{name}");
        store.release("w1", "r1", Some(i64::MAX / 4)).await.unwrap();

        // k3 waits behind k1: one incident's messages go out in order.
        let claimed = store.outbox_claim("d1", now, 60_000, 10).await.unwrap();
        let keys: Vec<&str> = claimed.iter().map(|r| r.dedupe_key.as_str()).collect();
        assert_eq!(keys, ["k1", "k2"], "{name}");
        assert!(claimed.iter().all(|r| r.attempts == 1), "{name}");
        // Claimed rows are not handed to another dispatcher until the claim runs out.
        assert!(store.outbox_claim("d2", now, 60_000, 10).await.unwrap().is_empty(), "{name}");
        store
            .outbox_finish(claimed[0].id, OutboxOutcome::Retry { error: "429".into(), at: now + 5 })
            .await
            .unwrap();
        store
            .outbox_finish(claimed[1].id, OutboxOutcome::Delivered { detail: "HTTP 200".into() })
            .await
            .unwrap();
        let again = store.outbox_claim("d2", now + 10, 60_000, 10).await.unwrap();
        assert_eq!(again.len(), 1, "{name}: only the retried row");
        assert_eq!((again[0].attempts, again[0].last_error.as_deref()), (2, Some("429")));
        store
            .outbox_finish(again[0].id, OutboxOutcome::Failed { error: "400".into() })
            .await
            .unwrap();
        // k1 is final: k3 may go now.
        let next = store.outbox_claim("d2", now + 10, 60_000, 10).await.unwrap();
        let keys: Vec<&str> = next.iter().map(|r| r.dedupe_key.as_str()).collect();
        assert_eq!(keys, ["k3"], "{name}");
        let done = OutboxOutcome::Delivered { detail: "ok".into() };
        store.outbox_finish(next[0].id, done).await.unwrap();
        let rows = store.outbox("r1").await.unwrap();
        let statuses: Vec<_> = rows.iter().map(|r| r.status).collect();
        assert!(
            statuses.contains(&OutboxStatus::Delivered) && statuses.contains(&OutboxStatus::Failed)
        );
        // A final outcome of a row a step waits for makes the run due again.
        assert_eq!(
            store.claim("w2", lease(now + 20), 10, None).await.unwrap(),
            vec!["r1"],
            "{name}"
        );
        // Finishing a finished row changes nothing.
        store
            .outbox_finish(again[0].id, OutboxOutcome::Delivered { detail: "x".into() })
            .await
            .unwrap();
        assert_eq!(store.outbox("r1").await.unwrap()[0].status, rows[0].status, "{name}");
    }
}

#[tokio::test]
async fn counts_pagination_and_ping() {
    for (name, store, _dir) in backends().await {
        with_definition(&*store).await;
        for id in ["r1", "r2", "r3"] {
            store.create_run(new_run(id, None, false)).await.unwrap();
        }
        store.ping().await.unwrap();
        assert_eq!(store.run_counts().await.unwrap(), vec![(RunStatus::Queued, 3)], "{name}");
        let page = |before: Option<&str>| RunFilter {
            limit: Some(2),
            before: before.map(String::from),
            ..Default::default()
        };
        let first: Vec<String> =
            store.runs(&page(None)).await.unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(first, ["r3", "r2"], "{name}");
        let second: Vec<String> =
            store.runs(&page(Some("r2"))).await.unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(second, ["r1"], "{name}");
    }
}

#[tokio::test]
async fn a_webhook_signature_is_accepted_once_until_it_expires() {
    for (name, store, _dir) in backends().await {
        let first = store.remember_signature("signed", "aa", 1_000, 2_000).await.unwrap();
        assert_eq!(first, Remembered { replay: false, pruned: 0 }, "{name}");
        let again = store.remember_signature("signed", "aa", 1_500, 2_500).await.unwrap();
        assert!(again.replay, "{name}: the same signature within its window is a replay");
        let other_hook = store.remember_signature("other", "aa", 1_500, 2_500).await.unwrap();
        assert!(!other_hook.replay, "{name}: signatures are remembered per hook");
        store.remember_signature("signed", "bb", 1_500, 9_000).await.unwrap();
        // At 2_000 the first has expired (pruned), the others have not.
        let later = store.remember_signature("signed", "aa", 2_000, 3_000).await.unwrap();
        assert_eq!(later, Remembered { replay: false, pruned: 1 }, "{name}");
        let much_later = store.remember_signature("signed", "cc", 5_000, 6_000).await.unwrap();
        assert_eq!(much_later.pruned, 2, "{name}: `other`'s and the renewed `aa` expired");
        assert!(store.remember_signature("signed", "bb", 5_000, 6_000).await.unwrap().replay);
    }
}

#[tokio::test]
async fn concurrent_copies_of_a_signed_request_are_accepted_once() {
    for (name, store, _dir) in backends().await {
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    store.remember_signature("signed", "dd", 1_000, 301_000).await.unwrap()
                })
            })
            .collect();
        let mut first = 0;
        for t in tasks {
            if !t.await.unwrap().replay {
                first += 1;
            }
        }
        assert_eq!(first, 1, "{name}: exactly one copy is not a replay");
    }
}

#[tokio::test]
async fn a_persons_decision_on_a_step_is_queued_once_until_applied() {
    for (name, store, _dir) in backends().await {
        with_definition(&*store).await;
        store.create_run(new_run("r1", None, false)).await.unwrap();
        let decide = |actor: &str, kind: RequestKind| NewRequest {
            run_id: "r1".into(),
            kind,
            step_id: Some("a".into()),
            data: None,
            actor: actor.into(),
        };
        let first = store.request(decide("bob", RequestKind::Approve)).await.unwrap();
        for kind in [RequestKind::Approve, RequestKind::Reject, RequestKind::Ack] {
            let err = store.request(decide("bob", kind)).await.unwrap_err();
            assert!(
                matches!(&err, StoreError::Conflict(Conflict::Exists(m)) if m.contains("bob") && m.contains("`a`")),
                "{name}: {err}"
            );
        }
        store.request(decide("carol", RequestKind::Approve)).await.unwrap();
        // Other requests are not decisions: any number may wait.
        store.request(decide("bob", RequestKind::Skip)).await.unwrap();
        store.request(decide("bob", RequestKind::Skip)).await.unwrap();
        assert_eq!(store.open_requests("r1").await.unwrap().len(), 4, "{name}");
        // Applied: bob may decide again (the driver judges it then).
        store.claim("w1", lease(now_ms()), 10, None).await.unwrap();
        store.commit("w1", "r1", &[Change::RequestDone { id: first, at: now_ms() }]).await.unwrap();
        store.request(decide("bob", RequestKind::Reject)).await.unwrap();
    }
}

#[tokio::test]
async fn an_audit_entry_in_a_commit_lands_with_it_or_not_at_all() {
    for (name, store, _dir) in backends().await {
        with_definition(&*store).await;
        store.create_run(new_run("r1", None, false)).await.unwrap();
        let now = now_ms();
        store.claim("w1", lease(now), 10, None).await.unwrap();
        let entry = |action: &str| {
            Change::Audit(NewAudit {
                actor: "bob".into(),
                action: action.into(),
                run_id: Some("r1".into()),
                step_id: Some("a".into()),
                payload: json!({"request": 1, "reason": null}),
            })
        };
        let event = Change::Event {
            at: now,
            kind: crate::events::RunEvent::Approved,
            step_id: None,
            data: None,
        };
        store.commit("w1", "r1", &[entry("approve_applied"), event]).await.unwrap();
        store.claim("w2", lease(now + 5_000), 10, None).await.unwrap();
        assert!(store.commit("w1", "r1", &[entry("approve_refused")]).await.is_err(), "{name}");
        let actions: Vec<String> =
            store.audit_list(0, 10).await.unwrap().into_iter().map(|e| e.action).collect();
        assert_eq!(actions, ["approve_applied"], "{name}: a fenced-off commit audits nothing");
        let entries = store.audit_list(0, 10).await.unwrap();
        assert!(audit::verify_chain(&entries, audit::GENESIS.into(), 1).is_ok(), "{name}");
    }
}
