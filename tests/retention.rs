//! Retention end to end: `lifeboat prune` (dry run, then for real) and the
//! pruner of `serve`, killed with `kill -9` in the middle of a prune, on the
//! backend under test. After any of it: no row of a deleted run is left, no
//! remaining run lost a row, and `audit verify` passes.

use std::time::Duration;

use serde_json::Value;

use crate::util::{Api, Sandbox, crash_seed, eventually, stderr, stdout};

const DAY: i64 = 86_400_000;

const CHAIN: &str = "name: chain\nsteps:\n  a:\n    uses: set\n    with: { n: 1 }\n  b:\n    needs: [a]\n    uses: set\n    with: { n: 2 }\n  c:\n    needs: [b]\n    uses: set\n    with: { n: 3 }\n";

/// The tables holding rows keyed by a run (every migration's `run_id`
/// column but the audit log's and the schedule ticks').
const RUN_TABLES: [&str; 5] = ["steps", "attempts", "events", "requests", "outbox"];

fn sandbox(name: &str) -> Sandbox {
    let sb = Sandbox::new(name);
    std::fs::create_dir_all(sb.path("workflows")).expect("workflows dir");
    sb.write("workflows/chain.yaml", CHAIN);
    sb
}

/// A finished run of `chain`, executed here; its id.
fn finished_run(sb: &Sandbox) -> String {
    let (code, doc) = sb.run_wait("chain", &[]);
    assert_eq!(code, Some(0), "{doc:#}");
    doc["id"].as_str().expect("run id").to_string()
}

fn count(sb: &Sandbox, query: &str) -> i64 {
    let rows = sb.rows(&format!("SELECT CAST(({query}) AS TEXT)"));
    rows[0][0].as_deref().unwrap_or("0").parse().expect("a count")
}

/// Rows of runs that no longer exist, per table: must be none.
fn orphans(sb: &Sandbox) -> Vec<(&'static str, i64)> {
    RUN_TABLES
        .iter()
        .map(|t| {
            (
                *t,
                count(
                    sb,
                    &format!("SELECT COUNT(*) FROM {t} WHERE run_id NOT IN (SELECT id FROM runs)"),
                ),
            )
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

fn prune_json(sb: &Sandbox, args: &[&str]) -> Value {
    let mut all = vec!["prune", "--json"];
    all.extend(args);
    let out = sb.ok(&all);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)))
}

#[test]
fn prune_deletes_old_runs_whole_after_a_dry_run_says_what_and_the_audit_log_verifies() {
    let sb = sandbox("retention-prune");
    let old: Vec<String> = (0..2).map(|_| finished_run(&sb)).collect();
    let recent = finished_run(&sb);
    let queued = sb.enqueue("chain", &[]);
    // Ended 100 days ago; the queued run was created as long ago.
    sb.sql(&format!(
        "UPDATE runs SET finished_at = finished_at - {} WHERE id IN ('{}', '{}')",
        100 * DAY,
        old[0],
        old[1]
    ));
    sb.sql(&format!(
        "UPDATE runs SET created_at = created_at - {} WHERE id = '{queued}'",
        100 * DAY
    ));
    let events_of_old = count(
        &sb,
        &format!("SELECT COUNT(*) FROM events WHERE run_id IN ('{}', '{}')", old[0], old[1]),
    );

    // Retention is off by default: without --older-than, nothing to go by.
    let refused = sb.lifeboat(&["prune"]);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("--older-than"), "{}", stderr(&refused));

    let would = prune_json(&sb, &["--older-than", "30d", "--dry-run"]);
    assert_eq!(would["dry_run"], true);
    assert_eq!(would["pruned"]["runs"], 2, "{would:#}");
    assert_eq!(would["pruned"]["steps"], 6, "{would:#}");
    assert_eq!(would["pruned"]["attempts"], 6, "{would:#}");
    assert_eq!(would["pruned"]["events"], events_of_old, "{would:#}");
    assert!(would["oldest_ended_at"].is_string(), "{would:#}");
    assert_eq!(count(&sb, "SELECT COUNT(*) FROM runs"), 4, "a dry run deletes nothing");

    let done = prune_json(&sb, &["--older-than", "30d"]);
    assert_eq!(done["pruned"], would["pruned"], "the dry run counted what went");
    for id in &old {
        assert_eq!(sb.lifeboat(&["show", id]).status.code(), Some(3), "{id} is gone");
    }
    sb.ok(&["show", &recent]);
    sb.ok(&["show", &queued]);
    assert_eq!(orphans(&sb), []);
    // The audit log keeps the pruned runs' entries, says what went, and verifies.
    sb.ok(&["audit", "verify"]);
    let audit: Vec<Value> =
        serde_json::from_slice(&sb.ok(&["audit", "list", "--json"]).stdout).expect("JSON");
    assert!(audit.iter().any(|e| e["run_id"].as_str() == Some(old[0].as_str())), "kept");
    let prune = audit.iter().find(|e| e["action"] == "prune").expect("a prune entry");
    assert_eq!(prune["payload"]["pruned"]["runs"], 2, "{prune:#}");

    // Nothing is left to go; the text output says so.
    let again = sb.ok(&["prune", "--older-than", "30d"]);
    assert!(stdout(&again).starts_with("nothing to delete"), "{}", stdout(&again));
}

#[test]
fn per_workflow_retention_from_the_config_keeps_a_runbooks_runs_longer() {
    let sb = sandbox("retention-config")
        .config("[retention]\nruns = \"30d\"\n[retention.workflows]\nchain = \"400d\"\n");
    let run = finished_run(&sb);
    sb.sql(&format!(
        "UPDATE runs SET finished_at = finished_at - {} WHERE id = '{run}'",
        100 * DAY
    ));
    let kept = prune_json(&sb, &[]);
    assert_eq!(kept["pruned"]["runs"], 0, "{kept:#}");
    sb.ok(&["show", &run]);
    // --older-than overrides the whole of [retention].
    let gone = prune_json(&sb, &["--older-than", "30d", "--workflow", "chain"]);
    assert_eq!(gone["pruned"]["runs"], 1, "{gone:#}");
}

/// Drill evidence outlives ordinary history: a drill that ended 100 days
/// ago survives both `[retention] runs = "30d"` and `prune --older-than
/// 30d`, which take a live run as old; it goes once past `drills`.
#[test]
fn a_drill_run_is_kept_past_the_runs_retention_until_its_own() {
    let sb = sandbox("retention-drills").config("[retention]\nruns = \"30d\"\ndrills = \"200d\"\n");
    let live = finished_run(&sb);
    let drilled = sb.ok(&["drill", "chain", "--wait", "--json"]);
    let drill: Value = serde_json::from_slice(&drilled.stdout).expect("the drill's document");
    assert_eq!(drill["mode"], "drill", "{drill:#}");
    let drill = drill["id"].as_str().expect("run id").to_string();
    let age = |days: i64| {
        sb.sql(&format!(
            "UPDATE runs SET finished_at = finished_at - {} WHERE id IN ('{live}', '{drill}')",
            days * DAY
        ));
    };
    age(100);
    assert_eq!(prune_json(&sb, &[])["pruned"]["runs"], 1);
    assert_eq!(sb.lifeboat(&["show", &live]).status.code(), Some(3), "the live run went");
    assert_eq!(prune_json(&sb, &["--older-than", "30d"])["pruned"]["runs"], 0, "even by hand");
    sb.ok(&["show", &drill]);
    age(150);
    assert_eq!(prune_json(&sb, &[])["pruned"]["runs"], 1, "past `drills`, it goes");
    assert_eq!(sb.lifeboat(&["show", &drill]).status.code(), Some(3));
    assert_eq!(orphans(&sb), []);
}

/// `copies` copies of the finished run `template`, with all its rows, that
/// ended 100 days ago: history made in one statement per table.
fn seed_copies(sb: &Sandbox, template: &str, copies: usize) {
    let n = format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {copies}) "
    );
    let id = "x.id || '-' || CAST(n.i AS TEXT)";
    let run_id = "x.run_id || '-' || CAST(n.i AS TEXT)";
    sb.sql(&format!(
        "{n}INSERT INTO runs (id, workflow, definition_hash, status, inputs, outputs, trigger, \
         concurrency_key, parent_run_id, parent_step_id, root_run_id, cancelled_by, paused, error, \
         created_at, started_at, finished_at, wake_at, woken, lease_owner, lease_expires_at, dedupe_key, pins) \
         SELECT {id}, workflow, definition_hash, status, inputs, outputs, trigger, concurrency_key, \
         parent_run_id, parent_step_id, {id}, cancelled_by, paused, error, created_at, started_at, \
         finished_at - {} - n.i, wake_at, woken, lease_owner, lease_expires_at, dedupe_key, pins \
         FROM runs x, n WHERE x.id = '{template}'",
        100 * DAY
    ));
    sb.sql(&format!(
        "{n}INSERT INTO steps (run_id, step_id, status, attempts, outputs, error, started_at, \
         finished_at, wake_at, state, rollback) SELECT {run_id}, step_id, status, attempts, outputs, \
         error, started_at, finished_at, wake_at, state, rollback FROM steps x, n WHERE x.run_id = '{template}'"
    ));
    sb.sql(&format!(
        "{n}INSERT INTO attempts (run_id, step_id, phase, n, status, worker, pgid, started_at, \
         finished_at, error, stdout, stderr) SELECT {run_id}, step_id, phase, x.n, status, worker, \
         pgid, started_at, finished_at, error, stdout, stderr FROM attempts x, n WHERE x.run_id = '{template}'"
    ));
    sb.sql(&format!(
        "{n}INSERT INTO events (run_id, at, kind, step_id, data) SELECT {run_id}, at, kind, step_id, \
         data FROM events x, n WHERE x.run_id = '{template}'"
    ));
}

#[test]
fn a_serve_killed_in_the_middle_of_a_prune_leaves_every_run_whole_and_the_next_finishes_it() {
    const COPIES: i64 = 3000;
    let sb = sandbox("retention-kill")
        .config("[retention]\nruns = \"30d\"\ninterval = \"1s\"\nbatch = 3\n");
    let template = finished_run(&sb);
    seed_copies(&sb, &template, COPIES as usize);
    let per_run = |table: &str| {
        count(&sb, &format!("SELECT COUNT(*) FROM {table} WHERE run_id = '{template}'"))
    };
    let (steps, attempts, events) = (per_run("steps"), per_run("attempts"), per_run("events"));
    assert_eq!((steps, attempts), (3, 3));
    let runs = || count(&sb, "SELECT COUNT(*) FROM runs");
    assert_eq!(runs(), COPIES + 1);

    // Killed once a random number of runs (1 to half of them) is gone.
    let mut rng = fastrand::Rng::with_seed(crash_seed("retention-kill"));
    let target = COPIES + 1 - rng.i64(1..=COPIES / 2);
    let mut serve = sb.serve();
    assert!(
        eventually(Duration::from_secs(60), || runs() <= target),
        "the pruner did not get to {target} runs:\n{}",
        sb.serve_logs()
    );
    serve.kill9();
    let left = runs();
    eprintln!("killed serve with {left} of {} runs left", COPIES + 1);
    assert!(left > 1, "the prune finished before the kill; nothing was interrupted");

    // Consistent: no row of a deleted run, and every remaining run whole.
    assert_eq!(orphans(&sb), []);
    for (table, each) in [("steps", steps), ("attempts", attempts), ("events", events)] {
        let broken = count(
            &sb,
            &format!(
                "SELECT COUNT(*) FROM runs r WHERE (SELECT COUNT(*) FROM {table} t WHERE t.run_id = r.id) <> {each}"
            ),
        );
        assert_eq!(broken, 0, "runs missing some of their {table} after the kill");
    }

    // The next serve finishes the prune; the recent run stays.
    let api = Api::start(&sb);
    assert!(
        eventually(Duration::from_secs(120), || runs() == 1),
        "{} runs left:\n{}",
        runs(),
        api.log_text()
    );
    sb.ok(&["show", &template]);
    assert_eq!(orphans(&sb), []);
    sb.ok(&["audit", "verify"]);
    // Logged, counted and audited.
    let counted = format!("lifeboat_pruned_rows_total{{table=\"runs\"}} {}", left - 1);
    assert!(
        eventually(Duration::from_secs(10), || {
            api.get("/metrics", None).body.as_str().is_some_and(|m| m.contains(&counted))
        }),
        "{counted}:\n{:?}",
        api.get("/metrics", None).body
    );
    let log = api.log_text();
    assert!(log.contains("Pruned ended runs past their retention."), "{log}");
    assert!(!log.contains("Pruning failed"), "{log}");
    let audit: Vec<Value> =
        serde_json::from_slice(&sb.ok(&["audit", "list", "--json"]).stdout).expect("JSON");
    assert!(
        audit.iter().any(|e| e["action"] == "prune"
            && e["actor"].as_str().is_some_and(|a| a.starts_with("serve ")))
    );
}
