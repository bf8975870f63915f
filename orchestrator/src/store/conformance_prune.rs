//! Retention stories on every backend (`prune.rs`): what goes, what stays,
//! batches, dry runs, and the query plans of the statements pruning runs.

use std::collections::BTreeMap;

use serde_json::json;

use super::conformance::{backends, lease, new_run, with_definition};
use super::*;

const DAY: i64 = 86_400_000;

/// A run created, given an attempt, an event, a delivered (or, with
/// `delivering`, a pending) notification and an answered request, then
/// ended `status` at `ended_at` (`None`: left running) and released.
async fn seed(
    store: &dyn Store,
    run: NewRun,
    status: RunStatus,
    ended_at: Option<i64>,
    delivering: bool,
) {
    let (id, root) = (run.id.clone(), run.root.clone().unwrap_or(run.id.clone()));
    store.create_run(run).await.unwrap();
    let now = now_ms();
    let claimed = store.claim("w1", lease(now), 10, Some(&root)).await.unwrap();
    assert!(claimed.contains(&id), "{id} claimed");
    let request = store
        .request(NewRequest {
            run_id: id.clone(),
            kind: RequestKind::Pause,
            step_id: None,
            data: None,
            actor: "alice".into(),
        })
        .await
        .unwrap();
    let mut changes = vec![
        Change::Run(RunUpdate {
            status: Some(status),
            started_at: Some(now),
            finished_at: ended_at,
            ..Default::default()
        }),
        Change::AttemptStarted(AttemptRecord {
            run_id: id.clone(),
            step_id: "a".into(),
            phase: Phase::Forward,
            n: 1,
            status: AttemptStatus::Succeeded,
            worker: "w1".into(),
            pgid: None,
            started_at: now,
            finished_at: Some(now),
            error: None,
            stdout: None,
            stderr: None,
        }),
        Change::Event {
            at: now,
            kind: crate::events::RunEvent::Started,
            step_id: None,
            data: None,
        },
        Change::RequestDone { id: request, at: now },
        Change::Notify(NewNotification {
            dedupe_key: format!("{id}:end"),
            step_id: None,
            event: "succeeded".into(),
            channel: "pager".into(),
            message: json!({"subject": "s"}),
            at: now,
        }),
        Change::Release { wake_at: Some(i64::MAX / 4) },
    ];
    if status.is_terminal() {
        changes.push(Change::Audit(NewAudit {
            actor: "alice".into(),
            action: "run_ended".into(),
            run_id: Some(id.clone()),
            step_id: None,
            payload: json!({}),
        }));
    }
    store.commit("w1", &id, &changes).await.unwrap();
    if !delivering {
        for row in store.outbox_claim("d1", now_ms(), 60_000, 100).await.unwrap() {
            let delivered = OutboxOutcome::Delivered { detail: "HTTP 200".into() };
            store.outbox_finish(row.id, delivered).await.unwrap();
        }
    }
}

fn child(id: &str, parent: &str) -> NewRun {
    NewRun {
        parent: Some((parent.into(), "a".into())),
        root: Some(parent.into()),
        ..new_run(id, None, false)
    }
}

/// Every batch of a pass, as `retention::prune` runs them.
async fn pass(store: &dyn Store, policy: &PrunePolicy, limit: usize, dry_run: bool) -> Pruned {
    let mut total = Pruned::default();
    let mut after = None;
    loop {
        let batch = store.prune_runs(policy, after.as_ref(), limit, dry_run).await.unwrap();
        total.add(&batch.pruned);
        match batch.next {
            Some(next) => after = Some(next),
            None => return total,
        }
    }
}

/// Whether `id` left any row behind that the store API can see.
async fn traces(store: &dyn Store, id: &str) -> Vec<&'static str> {
    let mut left = Vec::new();
    if store.run(id).await.unwrap().is_some() {
        left.push("run");
    }
    if !store.steps(id).await.unwrap().is_empty() {
        left.push("steps");
    }
    if !store.attempts(id).await.unwrap().is_empty() {
        left.push("attempts");
    }
    if !store.events(id, 0).await.unwrap().is_empty() {
        left.push("events");
    }
    if !store.outbox(id).await.unwrap().is_empty() {
        left.push("outbox");
    }
    left
}

#[tokio::test]
async fn old_ended_trees_go_with_all_their_rows_and_nothing_else_does() {
    for (name, store, _dir) in backends().await {
        with_definition(&*store).await;
        let now = now_ms();
        let old = Some(now - 100 * DAY);
        let s = &*store;
        seed(s, new_run("old", None, false), RunStatus::Succeeded, old, false).await;
        seed(s, new_run("old-failed", None, false), RunStatus::Failed, old, false).await;
        seed(s, new_run("recent", None, false), RunStatus::Succeeded, Some(now), false).await;
        seed(s, new_run("active", None, false), RunStatus::Running, None, false).await;
        // A finished child of an active parent stays, and so does the parent.
        seed(s, new_run("p-active", None, false), RunStatus::Running, None, false).await;
        seed(s, child("c-of-active", "p-active"), RunStatus::Succeeded, old, false).await;
        // An old parent whose child is still running stays, with the child.
        seed(s, new_run("p-old", None, false), RunStatus::Failed, old, false).await;
        seed(s, child("c-running", "p-old"), RunStatus::Waiting, None, false).await;
        // A whole old tree goes together.
        seed(s, new_run("p-done", None, false), RunStatus::Succeeded, old, false).await;
        seed(s, child("c-done", "p-done"), RunStatus::Succeeded, old, false).await;
        // A notification still being delivered keeps its run.
        seed(s, new_run("paging", None, false), RunStatus::Failed, old, true).await;
        let audit_before = store.audit_list(0, 1000).await.unwrap();
        assert!(audit_before.iter().any(|e| e.run_id.as_deref() == Some("old")), "{name}");

        let gone = ["old", "old-failed", "p-done", "c-done"];
        let mut expected = Pruned {
            runs: 4,
            requests: 4,
            oldest_ended_at: old,
            newest_ended_at: old,
            ..Default::default()
        };
        for id in gone {
            expected.steps += store.steps(id).await.unwrap().len() as u64;
            expected.attempts += store.attempts(id).await.unwrap().len() as u64;
            expected.events += store.events(id, 0).await.unwrap().len() as u64;
            expected.outbox += store.outbox(id).await.unwrap().len() as u64;
        }
        assert_eq!((expected.steps, expected.attempts, expected.outbox), (8, 4, 4), "{name}");
        let policy = PrunePolicy { cutoff: Some(now - 90 * DAY), ..Default::default() };
        let would = pass(s, &policy, 2, true).await;
        assert_eq!(traces(s, "old").await.len(), 5, "{name}: a dry run deletes nothing");
        let done = pass(s, &policy, 2, false).await;
        assert_eq!(would, done, "{name}: a dry run counts what the delete deletes");
        assert_eq!(done, expected, "{name}");
        for gone in gone {
            assert_eq!(traces(s, gone).await, Vec::<&str>::new(), "{name}: {gone} left rows");
            assert!(store.open_requests(gone).await.unwrap().is_empty(), "{name}");
        }
        for kept in ["recent", "active", "p-active", "c-of-active", "p-old", "c-running", "paging"]
        {
            assert_eq!(traces(s, kept).await.len(), 5, "{name}: {kept} was touched");
        }
        // The audit log is untouched and its chain still verifies.
        let audit_after = store.audit_list(0, 1000).await.unwrap();
        assert_eq!(audit_after, audit_before, "{name}");
        audit::verify_chain(&audit_after, audit::GENESIS.into(), 1).expect("intact chain");
        // A second pass finds nothing.
        assert_eq!(pass(s, &policy, 2, false).await, Pruned::default(), "{name}");
    }
}

#[tokio::test]
async fn a_batch_looks_at_no_more_ended_runs_than_its_limit() {
    for (name, store, _dir) in backends().await {
        with_definition(&*store).await;
        let now = now_ms();
        for i in 0..5 {
            let ended = Some(now - 100 * DAY + i);
            seed(
                &*store,
                new_run(&format!("r{i}"), None, false),
                RunStatus::Succeeded,
                ended,
                false,
            )
            .await;
        }
        let policy = PrunePolicy { cutoff: Some(now - DAY), ..Default::default() };
        let first = store.prune_runs(&policy, None, 2, false).await.unwrap();
        assert_eq!(first.pruned.runs, 2, "{name}");
        assert_eq!(first.next.as_ref().map(|c| c.id.as_str()), Some("r1"), "{name}");
        assert!(
            store.run("r0").await.unwrap().is_none() && store.run("r2").await.unwrap().is_some()
        );
        let rest = pass(&*store, &policy, 2, false).await;
        assert_eq!(rest.runs, 3, "{name}");
    }
}

#[tokio::test]
async fn per_workflow_retention_and_only_choose_which_trees_go() {
    for (name, store, _dir) in backends().await {
        with_definition(&*store).await;
        let now = now_ms();
        let old = Some(now - 100 * DAY);
        seed(&*store, new_run("a", None, false), RunStatus::Succeeded, old, false).await;
        let other = NewRun { workflow: "failover".into(), ..new_run("b", None, false) };
        seed(&*store, other, RunStatus::Succeeded, old, false).await;
        let cutoff = Some(now - 90 * DAY);
        // failover's runs are kept 400 days: only `a` goes.
        let keep_failover = PrunePolicy {
            cutoff,
            workflows: BTreeMap::from([("failover".to_string(), Some(now - 400 * DAY))]),
            ..Default::default()
        };
        assert_eq!(pass(&*store, &keep_failover, 10, true).await.runs, 1, "{name}");
        // Kept forever by default, but `wf`'s runs go after 90 days.
        let only_wf = PrunePolicy {
            cutoff: None,
            workflows: BTreeMap::from([("wf".to_string(), cutoff)]),
            ..Default::default()
        };
        assert_eq!(pass(&*store, &only_wf, 10, true).await.runs, 1, "{name}");
        // `only`: one workflow's trees, whatever the others' cutoffs allow.
        let just_failover =
            PrunePolicy { cutoff, only: Some("failover".into()), ..Default::default() };
        assert_eq!(pass(&*store, &just_failover, 10, false).await.runs, 1, "{name}");
        assert!(store.run("b").await.unwrap().is_none(), "{name}");
        assert!(store.run("a").await.unwrap().is_some(), "{name}");
        // Nothing configured: nothing goes.
        assert_eq!(pass(&*store, &PrunePolicy::default(), 10, false).await, Pruned::default());
    }
}

/// Drill evidence outlives ordinary history: a drill run stays past the
/// runs' cutoff until the drills' own, and never goes before a live run of
/// its workflow would.
#[tokio::test]
async fn drill_runs_are_kept_by_the_longer_of_their_own_and_their_workflows_retention() {
    for (name, store, _dir) in backends().await {
        with_definition(&*store).await;
        let now = now_ms();
        let old = Some(now - 100 * DAY);
        let drill = |id: &str| NewRun { mode: RunMode::Drill, ..new_run(id, None, false) };
        seed(&*store, new_run("live", None, false), RunStatus::Succeeded, old, false).await;
        seed(&*store, drill("drill"), RunStatus::Succeeded, old, false).await;
        seed(&*store, drill("ancient"), RunStatus::Failed, Some(now - 500 * DAY), false).await;
        let policy = PrunePolicy {
            cutoff: Some(now - 90 * DAY),
            drills: Some(now - 400 * DAY),
            ..Default::default()
        };
        // `wf` kept forever: its drills too, whatever `drills` says.
        let forever =
            PrunePolicy { workflows: BTreeMap::from([("wf".to_string(), None)]), ..policy.clone() };
        assert_eq!(pass(&*store, &forever, 10, true).await.runs, 0, "{name}");
        assert_eq!(pass(&*store, &policy, 10, false).await.runs, 2, "{name}");
        assert!(store.run("live").await.unwrap().is_none(), "{name}: past the runs' 90 days");
        assert!(store.run("ancient").await.unwrap().is_none(), "{name}: past the drills' 400 days");
        assert!(store.run("drill").await.unwrap().is_some(), "{name}: a drill 100 days old stays");
    }
}

#[tokio::test]
async fn old_ticks_go_but_each_schedules_latest_stays_and_expired_signatures_go() {
    for (name, store, _dir) in backends().await {
        with_definition(&*store).await;
        for (id, schedule, tick) in [("t1", "s1", 1_000), ("t2", "s1", 2_000), ("t3", "s2", 1_000)]
        {
            let run =
                NewRun { schedule_tick: Some((schedule.into(), tick)), ..new_run(id, None, false) };
            store.create_run(run).await.unwrap();
        }
        let now = now_ms();
        // (Remembering one prunes those expired by then: the old one last.)
        store.remember_signature("h", "live", now - 20, now + 60_000).await.unwrap();
        store.remember_signature("h", "old", now - 20, now - 10).await.unwrap();
        let would = store.prune_markers(Some(5_000), now, 100, true).await.unwrap();
        assert_eq!((would.schedule_ticks, would.webhook_signatures), (1, 1), "{name}");
        let done = store.prune_markers(Some(5_000), now, 100, false).await.unwrap();
        assert_eq!(would, done, "{name}");
        assert_eq!(store.last_tick("s1").await.unwrap(), Some(2_000), "{name}");
        assert_eq!(store.last_tick("s2").await.unwrap(), Some(1_000), "{name}");
        // The tick that went can never fire again (catch-up starts after
        // the latest), and the live signature is still a replay.
        let again = store.remember_signature("h", "live", now, now + 60_000).await.unwrap();
        assert!(again.replay, "{name}");
        let none = store.prune_markers(None, now, 100, false).await.unwrap();
        assert_eq!(none, Pruned::default(), "{name}: no tick cutoff, nothing expired");
    }
}

/// A plan line that reads a whole table: SQLite's `SCAN t` (with or
/// without an index: all of it either way) or Postgres's `Seq Scan on t`.
/// Scanning the bound list of ids (`json_each`) is no table.
fn full_scan(line: &str) -> bool {
    let line = line.trim_start().trim_start_matches("->").trim_start();
    (line.starts_with("SCAN ")
        && !line.starts_with("SCAN json_each")
        && !line.starts_with("SCAN CONSTANT ROW"))
        || line.starts_with("Seq Scan on ")
}

#[test]
fn a_full_scan_in_a_plan_is_recognised() {
    assert!(full_scan("SCAN runs"));
    assert!(full_scan("SCAN t USING COVERING INDEX schedule_ticks_by_age"));
    assert!(full_scan("  ->  Seq Scan on steps s  (cost=0.00..1.01 rows=1 width=4)"));
    assert!(!full_scan("SEARCH runs USING INDEX runs_ended (finished_at<?)"));
    assert!(!full_scan("SCAN json_each VIRTUAL TABLE INDEX 1:"));
    assert!(!full_scan("  ->  Index Scan using runs_by_root on runs"));
}

#[tokio::test]
async fn no_retention_statement_reads_a_whole_table_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("plan.db").display());
    drop(open(&url).await.unwrap());
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url).await.unwrap();
    let mut searches = 0;
    for sql in prune::statements(sqlite::prune::IN_ROOTS) {
        let rows: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(&format!("EXPLAIN QUERY PLAN {sql}"))
                .fetch_all(&mut conn)
                .await
                .unwrap();
        let plan: Vec<&str> = rows.iter().map(|r| r.3.as_str()).collect();
        assert!(!plan.iter().any(|l| full_scan(l)), "{sql}\n{}", plan.join("\n"));
        searches += plan.iter().filter(|l| l.starts_with("SEARCH")).count();
    }
    assert!(searches > 15, "plans were read: {searches} index searches");
}

#[tokio::test]
async fn no_retention_statement_reads_a_whole_table_on_postgres() {
    let Ok(admin) = std::env::var("LIFEBOAT_TEST_POSTGRES_URL") else { return };
    if admin.is_empty() {
        return;
    }
    let url = postgres::create_scratch_database(&admin, "plan").await.unwrap();
    drop(open(&url).await.unwrap());
    let options = postgres::connect_options(&url).unwrap();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect_with(&options).await.unwrap();
    // Tiny tables make a sequential scan the cheapest plan: forbid it, so
    // one shows up only where no index can serve the statement.
    sqlx::query("SET enable_seqscan = off").execute(&mut conn).await.unwrap();
    let param = regex::Regex::new(r"\$[0-9]+").unwrap();
    for sql in prune::statements("= ANY('{a,b}')") {
        let sql = param.replace_all(&sql, "'0'");
        let plan: Vec<String> =
            sqlx::query_scalar(&format!("EXPLAIN {sql}")).fetch_all(&mut conn).await.unwrap();
        assert!(!plan.iter().any(|l| full_scan(l)), "{sql}\n{}", plan.join("\n"));
    }
}

#[tokio::test]
async fn pruners_running_at_once_delete_each_run_once() {
    for (name, store, _dir) in backends().await {
        with_definition(&*store).await;
        let now = now_ms();
        for i in 0..12 {
            let ended = Some(now - 100 * DAY + i);
            seed(
                &*store,
                new_run(&format!("r{i:02}"), None, false),
                RunStatus::Succeeded,
                ended,
                false,
            )
            .await;
        }
        let policy = PrunePolicy { cutoff: Some(now - DAY), ..Default::default() };
        // Two passes at once (two replicas; on Postgres, two connections).
        let (a, b) =
            tokio::join!(pass(&*store, &policy, 2, false), pass(&*store, &policy, 3, false));
        assert_eq!(a.runs + b.runs, 12, "{name}: {a:?} {b:?}");
        assert_eq!(a.steps + b.steps, 24, "{name}: no row counted twice");
        assert_eq!(store.run_counts().await.unwrap(), [], "{name}: every run went");
    }
}
