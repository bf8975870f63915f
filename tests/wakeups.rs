//! Wake-ups instead of polls: runs created through the API, by a CLI in
//! another process, a timer coming due and a request for a running step all
//! reach `serve`'s worker at once. Every test sets the poll interval to 20 s,
//! so a run picked up in time can only have been woken: a broken wake-up
//! fails the test instead of passing slowly.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::{Api, Sandbox, is_terminal, ms, on_postgres, token};

/// Far longer than any assertion below waits: only a wake-up is in time.
const POLL: &str = "20s";

/// What "at once" means here: far below the poll, with room for a loaded CI
/// machine.
const PROMPT_MS: i64 = 2_000;

const CHAIN: &str = "name: chain\nsteps:\n  a: { uses: set }\n  b: { uses: set, needs: [a] }\n  c: { uses: set, needs: [b] }\n";

const SLEEPER: &str =
    "name: sleeper\nsteps:\n  nap:\n    uses: shell\n    with: { command: [sleep, \"2\"] }\n";

fn sandbox(name: &str) -> Sandbox {
    let sb = Sandbox::new(name)
        .with_users(&["alice"])
        .env("LIFEBOAT_EXECUTOR__POLL", POLL)
        .env("LIFEBOAT_EXECUTOR__LEASE", "30s")
        .env("LIFEBOAT_EXECUTOR__HEARTBEAT", "5s");
    std::fs::create_dir_all(sb.path("workflows")).expect("workflows dir");
    sb.write("workflows/chain.yaml", CHAIN);
    sb.write("workflows/sleeper.yaml", SLEEPER);
    sb
}

/// Milliseconds from the run's creation to its start, from its recorded
/// timestamps.
fn queued_for(doc: &Value) -> i64 {
    ms(&doc["started_at"]) - ms(&doc["created_at"])
}

fn ended(doc: &Value) -> bool {
    is_terminal(doc["status"].as_str().unwrap_or(""))
}

#[test]
fn a_run_submitted_through_the_api_starts_at_once() {
    let sb = sandbox("wake-api");
    let api = Api::start(&sb);
    let alice = token("alice");
    for _ in 0..3 {
        let reply = api.post("/api/v1/workflows/chain/runs", Some(&alice), &json!({}));
        assert_eq!(reply.status, 201, "{reply:?}");
        let id = reply.body["id"].as_str().expect("run id").to_string();
        let doc = api.wait_run(&alice, &id, Duration::from_secs(10), ended);
        assert_eq!(doc["status"], "succeeded", "{doc:#}");
        assert!(queued_for(&doc) < PROMPT_MS, "queued {} ms: {doc:#}", queued_for(&doc));
    }
}

#[test]
fn a_cli_run_without_wait_is_picked_up_by_a_running_serve() {
    let sb = sandbox("wake-cli");
    let _api = Api::start(&sb);
    for _ in 0..3 {
        let id = sb.enqueue("chain", &[]);
        let doc = sb.wait_finished(&id, Duration::from_secs(10));
        assert_eq!(doc["status"], "succeeded", "{doc:#}");
        assert!(queued_for(&doc) < PROMPT_MS, "queued {} ms: {doc:#}", queued_for(&doc));
    }
}

#[test]
fn a_timer_fires_on_time_not_at_the_next_poll() {
    let sb = sandbox("wake-timer");
    sb.write(
        "workflows/pause.yaml",
        "name: pause\nsteps:\n  hold: { uses: wait, with: { duration: 3s } }\n  after: { uses: set, needs: [hold] }\n",
    );
    let _api = Api::start(&sb);
    let id = sb.enqueue("pause", &[]);
    let doc = sb.wait_finished(&id, Duration::from_secs(15));
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    // The run was handed back for the wait (longer than a driver holds a
    // run for a timer) and claimed again when it came due.
    let waited = ms(&doc["finished_at"]) - ms(&doc["started_at"]);
    assert!((3_000..3_000 + PROMPT_MS).contains(&waited), "waited {waited} ms: {doc:#}");
}

#[test]
fn a_cancel_from_another_process_stops_a_running_step_at_once() {
    let sb = sandbox("wake-cancel");
    sb.write(
        "workflows/long.yaml",
        "name: long\nsteps:\n  nap:\n    uses: shell\n    with: { command: [sleep, \"60\"] }\n",
    );
    let _api = Api::start(&sb);
    let id = sb.enqueue("long", &[]);
    sb.wait_for(&id, Duration::from_secs(10), |d| d["steps"][0]["status"] == "running");
    let asked = Instant::now();
    sb.ok(&["cancel", &id]);
    let doc = sb.wait_finished(&id, Duration::from_secs(10));
    assert_eq!(doc["status"], "cancelled", "{doc:#}");
    let took = asked.elapsed();
    assert!(took < Duration::from_millis(PROMPT_MS as u64 + 1_000), "cancel took {took:?}");
}

/// Two replicas on one database, two runs at a time each: four runs created
/// by a CLI (a process that does not listen) all start at once, so both
/// replicas heard the ring. On Postgres the listening connections are then
/// killed: they come back, and no run is lost.
#[test]
fn two_replicas_hand_work_to_each_other() {
    let sb = sandbox("wake-replicas").env("LIFEBOAT_EXECUTOR__MAX_RUNS", "2");
    sb.ok(&["migrate"]);
    let (a, b) = (Api::start(&sb), Api::start(&sb));
    let batch = |n: usize| -> Vec<String> { (0..n).map(|_| sb.enqueue("sleeper", &[])).collect() };
    let first = batch(4);
    for id in &first {
        let doc = sb.wait_finished(id, Duration::from_secs(20));
        assert_eq!(doc["status"], "succeeded", "{doc:#}");
        assert!(queued_for(&doc) < PROMPT_MS, "queued {} ms: {doc:#}", queued_for(&doc));
    }
    let workers: std::collections::HashSet<String> = first
        .iter()
        .map(|id| sb.show(id)["steps"][0]["attempts"][0]["worker"].as_str().unwrap_or("").into())
        .collect();
    assert_eq!(workers.len(), 2, "both replicas worked: {workers:?}");
    if !on_postgres() {
        return;
    }
    let killed = sb.rows(
        "SELECT CAST(pg_terminate_backend(pid) AS TEXT) FROM pg_stat_activity \
         WHERE query LIKE 'LISTEN %' AND datname = current_database() AND pid <> pg_backend_pid()",
    );
    assert_eq!(killed.len(), 2, "each replica listens on a connection: {killed:?}");
    let second = batch(4);
    for id in &second {
        let doc = sb.wait_finished(id, Duration::from_secs(60));
        assert_eq!(doc["status"], "succeeded", "{doc:#}");
    }
    let logs = format!("{}{}", a.log_text(), b.log_text());
    assert!(logs.contains("wake-ups"), "the lost listener is logged:\n{logs}");
}
