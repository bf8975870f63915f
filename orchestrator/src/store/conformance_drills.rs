//! Behaviour stories of drill freshness and measured recovery times on
//! every backend: a verdict is its scenario's freshness in the same commit,
//! an overdue period is claimed once with its notifications, and the last
//! successful runs of a mode come back with their steps' timings.

use serde_json::json;

use super::conformance::{backends, lease, new_run, with_definition};
use super::*;

/// Ends run `id` (claimed by `w1`) as `status` at `at`, with a verdict if given.
async fn end(store: &dyn Store, id: &str, status: RunStatus, at: i64, passed: Option<bool>) {
    let update = RunUpdate {
        status: Some(status),
        started_at: Some(at - 1_000),
        finished_at: Some(at),
        verdict: passed.map(|p| json!({"passed": p, "expectations": []})),
        ..Default::default()
    };
    let step = |step: &str, from: i64, to: i64| {
        Change::Step(StepRecord {
            status: StepStatus::Succeeded,
            started_at: Some(from),
            finished_at: Some(to),
            ..StepRecord::pending(id, step)
        })
    };
    let changes = [Change::Run(update), step("a", at - 1_000, at - 400), step("b", at - 400, at)];
    store.commit("w1", id, &changes).await.unwrap();
}

fn drill(id: &str, scenario: Option<&str>) -> NewRun {
    NewRun {
        mode: RunMode::Drill,
        scenario: scenario.map(String::from),
        ..new_run(id, None, false)
    }
}

#[tokio::test]
async fn a_verdict_is_its_scenarios_freshness_newest_per_outcome() {
    for (name, store, _dir) in backends().await {
        with_definition(&*store).await;
        for run in [drill("d1", Some("happy")), drill("d2", Some("happy")), drill("d3", None)] {
            store.create_run(run).await.unwrap();
        }
        store.create_run(drill("d4", Some("happy"))).await.unwrap();
        store.create_run(new_run("l1", None, false)).await.unwrap();
        assert_eq!(store.claim("w1", lease(now_ms()), 10, None).await.unwrap().len(), 5);
        end(&*store, "d1", RunStatus::Succeeded, 1_000_000, Some(true)).await;
        end(&*store, "d2", RunStatus::RolledBack, 2_000_000, Some(false)).await;
        end(&*store, "d3", RunStatus::Succeeded, 3_000_000, Some(true)).await;
        // A verdict older than the one recorded (a drill that ended earlier,
        // committed later) does not replace it.
        end(&*store, "d4", RunStatus::Succeeded, 500_000, Some(true)).await;
        // A live run has no verdict and no freshness.
        end(&*store, "l1", RunStatus::Succeeded, 4_000_000, None).await;
        let mut marks = store.drill_marks("wf").await.unwrap();
        marks.sort_by_key(|m| m.at);
        let got: Vec<(Option<&str>, bool, &str, i64)> = marks
            .iter()
            .map(|m| (m.scenario.as_deref(), m.passed, m.run_id.as_str(), m.at))
            .collect();
        assert_eq!(
            got,
            [
                (Some("happy"), true, "d1", 1_000_000),
                (Some("happy"), false, "d2", 2_000_000),
                (None, true, "d3", 3_000_000),
            ],
            "{name}"
        );
        assert!(store.drill_marks("other").await.unwrap().is_empty(), "{name}");
    }
}

fn claim(periods: &[(&str, i64)], now: i64) -> OverdueClaim {
    OverdueClaim {
        workflow: "wf".into(),
        periods: periods.iter().map(|(s, d)| (s.to_string(), *d)).collect(),
        now,
        notifications: vec![NewNotification {
            dedupe_key: format!("drill_overdue/wf/mail/{now}"),
            step_id: None,
            event: "drill_overdue".into(),
            channel: "mail".into(),
            message: json!({"subject": "overdue"}),
            at: now,
        }],
        audit: NewAudit {
            actor: "lifeboat".into(),
            action: "drill_overdue".into(),
            run_id: None,
            step_id: None,
            payload: json!({"workflow": "wf"}),
        },
    }
}

#[tokio::test]
async fn an_overdue_period_is_claimed_once_with_its_notification() {
    for (name, store, _dir) in backends().await {
        let first = store.claim_drill_overdue(&claim(&[("happy", 0), ("", 0)], 10)).await.unwrap();
        assert_eq!(first, [("happy".to_string(), 0), (String::new(), 0)], "{name}");
        // Another replica, the same periods: nothing claimed, nothing queued.
        assert!(
            store
                .claim_drill_overdue(&claim(&[("happy", 0), ("", 0)], 20))
                .await
                .unwrap()
                .is_empty(),
            "{name}"
        );
        // A new period of one scenario: claimed alone, notified again.
        let next = store.claim_drill_overdue(&claim(&[("happy", 500), ("", 0)], 30)).await.unwrap();
        assert_eq!(next, [("happy".to_string(), 500)], "{name}");
        let outbox = store.outbox(&OverdueClaim::subject("wf")).await.unwrap();
        let keys: Vec<&str> = outbox.iter().map(|o| o.dedupe_key.as_str()).collect();
        assert_eq!(keys, ["drill_overdue/wf/mail/10", "drill_overdue/wf/mail/30"], "{name}");
        assert_eq!(outbox[0].event, "drill_overdue", "{name}");
        let audit = store.audit_list(0, 10).await.unwrap();
        assert_eq!(audit.len(), 2, "{name}");
        assert_eq!(audit[1].payload["claimed"], json!([{"scenario": "happy", "due_at": 500}]));
    }
}

#[tokio::test]
async fn recovery_samples_are_the_last_successful_runs_of_a_mode_with_their_steps() {
    for (name, store, _dir) in backends().await {
        with_definition(&*store).await;
        for id in ["l1", "l2", "l3", "l4"] {
            store.create_run(new_run(id, None, false)).await.unwrap();
        }
        store.create_run(drill("l5", Some("happy"))).await.unwrap();
        assert_eq!(store.claim("w1", lease(now_ms()), 10, None).await.unwrap().len(), 5);
        end(&*store, "l1", RunStatus::Succeeded, 10_000, None).await;
        end(&*store, "l2", RunStatus::Succeeded, 20_000, None).await;
        end(&*store, "l3", RunStatus::Failed, 30_000, None).await;
        end(&*store, "l4", RunStatus::Succeeded, 40_000, None).await;
        end(&*store, "l5", RunStatus::Succeeded, 50_000, Some(true)).await;
        let live = store.recovery_samples("wf", RunMode::Live, 2).await.unwrap();
        let ids: Vec<&str> = live.iter().map(|s| s.run_id.as_str()).collect();
        assert_eq!(ids, ["l4", "l2"], "{name}: newest first, failed runs left out");
        assert_eq!((live[0].started_at, live[0].finished_at), (Some(39_000), Some(40_000)));
        let mut steps = live[0].steps.clone();
        steps.sort();
        assert_eq!(steps, [("a".into(), 39_000, 39_600), ("b".into(), 39_600, 40_000)], "{name}");
        let drills = store.recovery_samples("wf", RunMode::Drill, 20).await.unwrap();
        assert_eq!(drills.len(), 1, "{name}");
        assert_eq!(drills[0].run_id, "l5", "{name}");
        assert!(store.recovery_samples("other", RunMode::Live, 20).await.unwrap().is_empty());
    }
}
