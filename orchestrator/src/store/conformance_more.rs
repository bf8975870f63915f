//! More behaviour stories on every backend (conformance.rs has the rest):
//! run id prefixes, a child run created in its parent's commit, and a
//! drill's mode, spec and verdict.

use serde_json::json;

use super::conformance::{backends, lease, new_run, with_definition};
use super::*;

#[tokio::test]
async fn a_run_id_prefix_is_matched_exactly_with_no_wildcard_or_escape() {
    for (name, store, _dir) in backends().await {
        with_definition(&*store).await;
        for id in ["a_b-1", "axb-1", "a%c-1", "abc-1", r"a\d-1", "A_b-2"] {
            store.create_run(new_run(id, None, false)).await.unwrap();
        }
        let resolve = |p: &'static str| {
            let store = store.clone();
            async move { store.resolve_run_id(p).await }
        };
        // `_` and `%` are characters, not wildcards; `\` is not an escape.
        assert_eq!(resolve("a_").await.unwrap(), "a_b-1", "{name}");
        assert_eq!(resolve("a%").await.unwrap(), "a%c-1", "{name}");
        assert_eq!(resolve(r"a\").await.unwrap(), r"a\d-1", "{name}");
        assert_eq!(resolve("A").await.unwrap(), "A_b-2", "{name}: case counts");
        for missing in [r"a\_", "a%%", "%", "_", r"\", "ab_"] {
            let err = resolve(missing).await.unwrap_err();
            assert!(matches!(err, StoreError::NotFound(_)), "{name}: {missing}: {err}");
        }
        match resolve("a").await.unwrap_err() {
            StoreError::Ambiguous { prefix, candidates } => {
                assert_eq!(prefix, "a", "{name}");
                assert_eq!(candidates, ["a%c-1", "a\\d-1", "a_b-1", "abc-1", "axb-1"], "{name}");
            }
            other => panic!("{name}: {other}"),
        }
        assert_eq!(resolve("a_b-1").await.unwrap(), "a_b-1", "{name}: a whole id");
    }
}

/// The parent's step and the child it starts, as one transition.
fn start_child(child: &str) -> Vec<Change> {
    child_of("p", child)
}

/// `parent`'s step `a` starts the child run `child`.
fn child_of(parent: &str, child: &str) -> Vec<Change> {
    let mut run = new_run(child, None, false);
    run.parent = Some((parent.into(), "a".into()));
    run.root = Some(parent.into());
    vec![
        Change::CreateRun(Box::new(run)),
        Change::Step(StepRecord {
            status: StepStatus::Waiting,
            state: Some(json!({"child_run": child})),
            ..StepRecord::pending(parent, "a")
        }),
    ]
}

/// Commits made together (one group commit on SQLite) where one fails
/// after writing (its child's id exists): that one is undone alone, the
/// others are applied whole.
#[tokio::test]
async fn a_commit_that_fails_among_others_is_undone_alone() {
    for (name, store, _dir) in backends().await {
        with_definition(&*store).await;
        let parents = ["p", "q1", "q2", "q3", "q4", "q5"];
        for id in parents {
            store.create_run(new_run(id, None, false)).await.unwrap();
        }
        store.claim("w1", lease(now_ms()), 10, None).await.unwrap();
        store.commit("w1", "p", &child_of("p", "c-p")).await.unwrap();
        let commits = parents.iter().map(|&parent| {
            // p starts a child whose id exists: its whole commit fails.
            let child = if parent == "p" { "c-p".to_string() } else { format!("c-{parent}") };
            let store = store.clone();
            async move { store.commit("w1", parent, &child_of(parent, &child)).await }
        });
        let results = futures_util::future::join_all(commits).await;
        assert!(matches!(&results[0], Err(StoreError::Conflict(_))), "{name}: {:?}", results[0]);
        for (parent, result) in parents.iter().zip(&results).skip(1) {
            assert!(result.is_ok(), "{name}: {parent}: {result:?}");
            let child = store.run(&format!("c-{parent}")).await.unwrap();
            assert_eq!(child.map(|c| c.parent_run_id), Some(Some(parent.to_string())), "{name}");
        }
        let step = store.steps("p").await.unwrap().into_iter().find(|s| s.step_id == "a");
        assert_eq!(step.unwrap().state, Some(json!({"child_run": "c-p"})), "{name}");
        assert_eq!(store.runs(&RunFilter::default()).await.unwrap().len(), 12, "{name}");
    }
}

#[tokio::test]
async fn a_child_run_exists_exactly_when_its_parents_commit_does() {
    for (name, store, _dir) in backends().await {
        with_definition(&*store).await;
        store.create_run(new_run("p", None, false)).await.unwrap();
        let now = now_ms();
        store.claim("w1", lease(now), 10, None).await.unwrap();
        store.claim("w2", lease(now + 5_000), 10, None).await.unwrap();
        // w1 lost the lease: neither the child nor the step's state exists.
        let err = store.commit("w1", "p", &start_child("c1")).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(Conflict::LeaseLost(_))), "{name}: {err}");
        assert!(store.run("c1").await.unwrap().is_none(), "{name}: no child without its parent");
        // w2 holds it: both, in one commit.
        store.commit("w2", "p", &start_child("c2")).await.unwrap();
        let child = store.run("c2").await.unwrap().unwrap();
        assert_eq!(child.status, RunStatus::Queued, "{name}");
        assert_eq!(child.parent_run_id.as_deref(), Some("p"), "{name}");
        assert_eq!(child.root_run_id, "p", "{name}");
        assert_eq!(store.steps("c2").await.unwrap().len(), 2, "{name}");
        let step = store.steps("p").await.unwrap().into_iter().find(|s| s.step_id == "a");
        assert_eq!(step.unwrap().state, Some(json!({"child_run": "c2"})), "{name}");
        // A child that cannot be created (its id exists) fails the whole commit.
        let err = store.commit("w2", "p", &start_child("c2")).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{name}: {err}");
    }
}

#[tokio::test]
async fn a_database_that_cannot_be_opened_is_unavailable_not_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the database file should be: SQLite cannot open it.
    let path = dir.path().join("db");
    std::fs::create_dir(&path).unwrap();
    let err = open(&format!("sqlite://{}", path.display())).await.err().unwrap();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    let err = open("mysql://x").await.err().unwrap();
    assert!(matches!(err, StoreError::Config(_)), "{err:?}");
}

#[tokio::test]
async fn a_database_migrated_by_a_newer_lifeboat_is_schema_behind() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("newer.db").display());
    drop(open(&url).await.unwrap());
    // A migration this binary does not know, as a newer lifeboat leaves it.
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', 1, x'00', 0)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    drop(conn);
    let err = open(&url).await.err().unwrap();
    assert!(matches!(err, StoreError::SchemaBehind(_)), "{err:?}");
    assert!(err.to_string().contains("upgrade lifeboat"), "{err}");
}

/// A burst of submissions at once (group-committed on SQLite, runs written
/// together): every run is created whole, with its audit entry, the chain
/// holds, and a duplicate in the same burst is still recognised.
#[tokio::test]
async fn a_burst_of_submissions_creates_every_run_with_its_audit_entry() {
    for (name, store, _dir) in backends().await {
        with_definition(&*store).await;
        let audited = |run: NewRun| NewRun {
            audit: Some(NewAudit {
                actor: "alice".into(),
                action: "run".into(),
                run_id: None,
                step_id: None,
                payload: json!({"workflow": "wf"}),
            }),
            ..run
        };
        let deduped =
            |id: &str| NewRun { dedupe_key: Some("am:fp".into()), ..new_run(id, None, false) };
        let mut runs: Vec<NewRun> =
            (0..60).map(|i| audited(new_run(&format!("burst-{i:02}"), None, false))).collect();
        runs.push(deduped("dup-1"));
        runs.push(deduped("dup-2"));
        let created = futures_util::future::join_all(runs.into_iter().map(|run| {
            let store = store.clone();
            async move { store.create_run(run).await.unwrap() }
        }))
        .await;
        let started = created.iter().filter(|c| matches!(c, Created::Run(_))).count();
        assert_eq!(started, 61, "{name}: 60 runs and one of the duplicates: {created:?}");
        for i in 0..60 {
            let id = format!("burst-{i:02}");
            let run = store.run(&id).await.unwrap().unwrap_or_else(|| panic!("{name}: {id}"));
            assert_eq!(run.status, RunStatus::Queued, "{name}");
            let steps = store.steps(&id).await.unwrap();
            assert_eq!(steps.len(), 2, "{name}: {id}");
            let events = store.events(&id, 0).await.unwrap();
            assert_eq!(events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(), ["queued"]);
        }
        let log = store.audit_list(0, 1000).await.unwrap();
        assert_eq!(log.len(), 60, "{name}");
        let mut named: Vec<&str> = log.iter().filter_map(|e| e.run_id.as_deref()).collect();
        named.sort();
        named.dedup();
        assert_eq!(named.len(), 60, "{name}: one entry per run");
        let walk = audit::walk(&*store, None, &Default::default()).await.unwrap();
        assert!(walk.broken.is_none(), "{name}: {:?}", walk.broken);
        assert_eq!(walk.verified, 60, "{name}");
    }
}

/// A request for a run that is not there (pruned a moment ago, or a wrong
/// id) is refused as not found, and leaves no request or event behind.
#[tokio::test]
async fn a_request_for_a_missing_run_is_not_found_and_writes_nothing() {
    for (name, store, _dir) in backends().await {
        let err = store
            .request(NewRequest {
                run_id: "gone".into(),
                kind: RequestKind::Cancel,
                step_id: None,
                data: None,
                actor: "alice".into(),
            })
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NotFound(ref id) if id == "gone"), "{name}: {err}");
        assert!(store.open_requests("gone").await.unwrap().is_empty(), "{name}");
        assert!(store.events("gone", 0).await.unwrap().is_empty(), "{name}");
    }
}

#[tokio::test]
async fn a_drill_keeps_its_mode_spec_and_verdict_and_is_listed_as_a_drill() {
    for (name, store, _dir) in backends().await {
        with_definition(&*store).await;
        let spec = json!({"faults": [{"step": "a", "fault": "fail"}]});
        let drill = NewRun {
            mode: RunMode::Drill,
            scenario: Some("happy".into()),
            drill: Some(spec.clone()),
            ..new_run("d1", None, false)
        };
        store.create_run(drill).await.unwrap();
        store.create_run(new_run("l1", None, false)).await.unwrap();
        let live = store.run("l1").await.unwrap().unwrap();
        assert_eq!((live.mode, live.scenario, live.drill), (RunMode::Live, None, None), "{name}");
        let now = now_ms();
        assert_eq!(store.claim("w1", lease(now), 10, None).await.unwrap().len(), 2, "{name}");
        let verdict = json!({"passed": true, "expectations": []});
        let update = RunUpdate { verdict: Some(verdict.clone()), ..Default::default() };
        store.commit("w1", "d1", &[Change::Run(update)]).await.unwrap();
        let run = store.run("d1").await.unwrap().unwrap();
        assert_eq!(run.mode, RunMode::Drill, "{name}");
        assert_eq!(run.scenario.as_deref(), Some("happy"), "{name}");
        assert_eq!(run.drill, Some(spec), "{name}");
        assert_eq!(run.verdict, Some(verdict), "{name}");
        // A retried drill is active again: its verdict is cleared for the next end.
        let reopen = RunUpdate { reopen: true, ..Default::default() };
        store.commit("w1", "d1", &[Change::Run(reopen)]).await.unwrap();
        assert_eq!(store.run("d1").await.unwrap().unwrap().verdict, None, "{name}");
        let ids = |runs: Vec<RunRecord>| runs.into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(store.drills(None, 10).await.unwrap()), ["d1"], "{name}");
        assert_eq!(ids(store.drills(Some("wf"), 10).await.unwrap()), ["d1"], "{name}");
        assert!(store.drills(Some("other"), 10).await.unwrap().is_empty(), "{name}");
    }
}

#[tokio::test]
async fn runs_are_searched_by_a_substring_any_case_and_counted_by_filter() {
    for (name, store, _dir) in backends().await {
        with_definition(&*store).await;
        for id in ["a_b-1", "axb-1", "a%c-1", r"a\d-1"] {
            store.create_run(new_run(id, None, false)).await.unwrap();
        }
        let mut drill = new_run("drill-1", None, false);
        drill.mode = RunMode::Drill;
        store.create_run(drill).await.unwrap();
        let search = |text: &str| RunFilter { search: Some(text.into()), ..RunFilter::default() };
        let ids = |runs: Vec<RunRecord>| runs.into_iter().map(|r| r.id).collect::<Vec<_>>();
        // `_`, `%` and `\` are characters, not wildcards or escapes; case does not count.
        assert_eq!(ids(store.runs(&search("A_B")).await.unwrap()), ["a_b-1"], "{name}");
        assert_eq!(ids(store.runs(&search("%")).await.unwrap()), ["a%c-1"], "{name}");
        assert_eq!(ids(store.runs(&search(r"\")).await.unwrap()), [r"a\d-1"], "{name}");
        assert_eq!(store.runs(&search("WF")).await.unwrap().len(), 5, "{name}: the workflow");
        assert_eq!(store.count_runs(&search("-1")).await.unwrap(), 5, "{name}");
        assert_eq!(store.count_runs(&search("zzz")).await.unwrap(), 0, "{name}");
        let drills = RunFilter { mode: Some(RunMode::Drill), ..RunFilter::default() };
        assert_eq!(ids(store.runs(&drills).await.unwrap()), ["drill-1"], "{name}");
        let live_x = RunFilter { mode: Some(RunMode::Live), ..search("x") };
        assert_eq!(store.count_runs(&live_x).await.unwrap(), 1, "{name}");
        // The cursor and limit do not change a count.
        let paged = RunFilter { limit: Some(1), before: Some("axb-1".into()), ..search("-1") };
        assert_eq!(store.count_runs(&paged).await.unwrap(), 5, "{name}");
        let failed = RunFilter { status: Some(RunStatus::Failed), ..RunFilter::default() };
        assert_eq!(store.count_runs(&failed).await.unwrap(), 0, "{name}");
    }
}

#[tokio::test]
async fn every_runs_events_are_read_after_a_cursor_in_order() {
    for (name, store, _dir) in backends().await {
        with_definition(&*store).await;
        assert_eq!(store.last_event_id().await.unwrap(), 0, "{name}: no events yet");
        for id in ["r1", "r2", "r3"] {
            store.create_run(new_run(id, None, false)).await.unwrap();
        }
        let all = store.events_after(0, 100).await.unwrap();
        let runs: Vec<&str> = all.iter().map(|e| e.run_id.as_str()).collect();
        assert_eq!(runs, ["r1", "r2", "r3"], "{name}: one `queued` event each, in order");
        let last = all.last().unwrap().id;
        assert_eq!(store.last_event_id().await.unwrap(), last, "{name}");
        assert!(store.events_after(last, 100).await.unwrap().is_empty(), "{name}");
        let first_two = store.events_after(0, 2).await.unwrap();
        assert_eq!(first_two.len(), 2, "{name}: the limit");
        let rest = store.events_after(first_two[1].id, 100).await.unwrap();
        assert_eq!(rest.iter().map(|e| e.id).collect::<Vec<_>>(), [last], "{name}");
    }
}
