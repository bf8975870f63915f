//! Several processes on one SQLite file: a `serve` and concurrent
//! `run --wait`s cooperate through leases; every step runs exactly once.

use std::collections::HashMap;
use std::time::Duration;

use crate::util::{Sandbox, exec_fixture};

#[test]
fn serve_and_run_wait_share_one_database_without_running_a_step_twice() {
    let sb = Sandbox::new("shared")
        .env("LIFEBOAT_EXECUTOR__LEASE", "2s")
        .env("LIFEBOAT_EXECUTOR__HEARTBEAT", "300ms")
        .env("LIFEBOAT_EXECUTOR__POLL", "50ms");
    let wf = exec_fixture("shared.yaml");
    let queued: Vec<String> = (0..10).map(|_| sb.enqueue(&wf, &[])).collect();
    let _serve = sb.serve();
    let waited: Vec<(Option<i32>, serde_json::Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(|| sb.run_wait(&wf, &[]))).collect();
        handles.into_iter().map(|h| h.join().expect("run --wait thread")).collect()
    });
    for (code, doc) in &waited {
        assert_eq!(*code, Some(0), "run --wait failed: {doc}");
        assert_eq!(doc["status"], "succeeded", "{doc}");
    }
    for id in &queued {
        let doc = sb.wait_finished(id, Duration::from_secs(30));
        assert_eq!(doc["status"], "succeeded", "{doc}");
    }
    // No crash happened, so each step of each run executed exactly once.
    let mut executions: HashMap<(String, String), usize> = HashMap::new();
    for line in sb.lines("ledger") {
        let mut parts = line.split_whitespace();
        let (run, step) = (parts.next().unwrap().to_string(), parts.next().unwrap().to_string());
        *executions.entry((run, step)).or_default() += 1;
    }
    assert_eq!(executions.len(), (queued.len() + waited.len()) * 3, "{executions:?}");
    assert!(executions.values().all(|&n| n == 1), "a step ran twice: {executions:?}");
}
