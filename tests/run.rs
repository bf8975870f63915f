//! The executor's semantics, through the real binary against real SQLite
//! files: `run`, `serve`, `show`, `logs`, `cancel`, `retry`, `skip`, `mark`,
//! `pending`. Each test has its own scratch directory and database; steps
//! write their files into it (it is the working directory of every process).
//! Workflows live in `tests/fixtures/exec/`.

use std::time::Duration;

use serde_json::Value;

use crate::util::{
    Sandbox, attempts, eventually, exec_fixture, ms, pid_alive, stderr, stdout, step,
};

const SECRET: &str = "s3cr3t-value";

/// Configuration the notify and approval fixtures refer to.
const EMAIL: &str = "[channels.oncall-email]\ntype = \"email\"\nsmtp_url = \"smtp://127.0.0.1:2525\"\nfrom = \"lifeboat@example.com\"\nto = [\"sre@example.com\"]\n";

/// Waits until no worker holds `run` (it has nothing to do until someone
/// acts on it); false if one still does after 30 s.
fn released(sb: &Sandbox, run: &str) -> bool {
    let held = format!("SELECT id FROM runs WHERE id = '{run}' AND lease_owner IS NOT NULL");
    eventually(Duration::from_secs(30), || sb.rows(&held).is_empty())
}

fn status(doc: &Value) -> &str {
    doc["status"].as_str().unwrap_or_else(|| panic!("no status in {doc:#}"))
}

fn step_status<'a>(doc: &'a Value, id: &str) -> &'a str {
    step(doc, id)["status"].as_str().unwrap_or_else(|| panic!("step {id} has no status"))
}

/// The statuses of a step's forward attempts, in order.
fn attempt_statuses(doc: &Value, id: &str) -> Vec<String> {
    attempts(doc, id).iter().map(|a| a["status"].as_str().unwrap_or("?").to_string()).collect()
}

/// A value rendered by a template is text; numbers may also come back as numbers.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

// --- retries, timeouts -----------------------------------------------------

#[test]
fn failed_attempts_are_retried_with_backoff_and_recorded() {
    let sb = Sandbox::new("run-retry-backoff");
    let (code, doc) = sb.run_wait(&exec_fixture("retry-counter.yaml"), &["fails=2"]);
    assert_eq!(code, Some(0), "{doc:#}");
    assert_eq!(status(&doc), "succeeded");
    assert_eq!(sb.read("count").trim(), "3", "the step ran three times");
    assert_eq!(attempt_statuses(&doc, "flaky"), ["failed", "failed", "succeeded"]);
    let tries = attempts(&doc, "flaky");
    for (k, a) in tries.iter().enumerate() {
        assert_eq!(a["n"], k as u64 + 1, "attempts are numbered from 1: {a}");
        assert!(a["worker"].as_str().is_some_and(|w| !w.is_empty()), "attempt without worker: {a}");
    }
    assert!(
        tries[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("exit status 3") && e.contains("failure 1 of 2")),
        "the error names the exit status and the last stderr line: {}",
        tries[0]["error"]
    );
    assert!(tries[2]["error"].is_null(), "{}", tries[2]);
    // Exponential backoff from 300ms without jitter: 300ms, then 600ms.
    let gap = |k: usize| ms(&tries[k + 1]["started_at"]) - ms(&tries[k]["finished_at"]);
    assert!(gap(0) >= 295, "first retry after {}ms, expected >= 300ms", gap(0));
    assert!(gap(1) >= 595, "second retry after {}ms, expected >= 600ms", gap(1));
    assert!(gap(1) > gap(0), "the backoff grows: {}ms then {}ms", gap(0), gap(1));
    assert!(gap(1) < 3000, "the second retry waited {}ms", gap(1));
    assert_eq!(step(&doc, "flaky")["outputs"]["json"]["try"], 3);
    assert_eq!(text(&doc["outputs"]["succeeded_at_try"]), "3");
}

#[test]
fn exhausted_retries_fail_the_run_with_exit_1() {
    let sb = Sandbox::new("run-retry-exhausted");
    let (code, doc) = sb.run_wait(&exec_fixture("retry-counter.yaml"), &["fails=99"]);
    assert_eq!(code, Some(1), "{doc:#}");
    assert_eq!(status(&doc), "failed");
    assert_eq!(sb.read("count").trim(), "3", "exactly `attempts: 3` executions");
    assert_eq!(attempt_statuses(&doc, "flaky"), ["failed", "failed", "failed"]);
    assert_eq!(step_status(&doc, "flaky"), "failed");
    let error = step(&doc, "flaky")["error"].as_str().unwrap_or_default();
    assert!(error.contains("failure 3 of 99"), "the step error is the last attempt's: {error}");
    let run_error = doc["error"].as_str().unwrap_or_default();
    assert!(run_error.contains("flaky"), "the run error names the failed step: {run_error}");
    assert!(doc["finished_at"].is_string(), "{doc:#}");
}

#[test]
fn a_timeout_kills_the_step_and_its_grandchildren() {
    let sb = Sandbox::new("run-timeout");
    let started = std::time::Instant::now();
    let (code, doc) = sb.run_wait(&exec_fixture("timeout.yaml"), &[]);
    let took = started.elapsed();
    assert_eq!(code, Some(1), "{doc:#}");
    assert_eq!(status(&doc), "failed");
    assert_eq!(step_status(&doc, "slow"), "failed");
    let tries = attempts(&doc, "slow");
    assert_eq!(tries.len(), 1, "{doc:#}");
    let a = tries[0];
    let error = a["error"].as_str().unwrap_or_default();
    assert!(error.contains("timed out"), "the error says it timed out: {error}");
    let lasted = ms(&a["finished_at"]) - ms(&a["started_at"]);
    assert!((450..3000).contains(&lasted), "the 500ms attempt lasted {lasted}ms");
    assert!(took < Duration::from_secs(10), "`run --wait` took {took:?} for a 500ms timeout");
    assert!(!sb.path("finished").exists(), "the script ran past its timeout");
    for file in ["child.pid", "grandchild.pid"] {
        let pid: u32 = sb.read(file).trim().parse().unwrap_or_else(|_| panic!("{file} missing"));
        assert!(
            eventually(Duration::from_secs(3), || !pid_alive(pid)),
            "{file}: process {pid} survived the timeout"
        );
    }
}

// --- failure handling --------------------------------------------------------

#[test]
fn rollbacks_run_in_reverse_dependency_order() {
    let sb = Sandbox::new("run-rollback");
    let (code, doc) = sb.run_wait(&exec_fixture("rollback.yaml"), &[]);
    assert_eq!(code, Some(1), "{doc:#}");
    assert_eq!(status(&doc), "rolled_back", "{doc:#}");
    assert_eq!(
        sb.lines("order"),
        [
            "do a",
            "do b",
            "do c",
            "do d",
            "undo-start c",
            "undo-end c",
            "undo-start b",
            "undo-end b",
            "undo-start a",
            "undo-end a",
        ]
    );
    for id in ["a", "b", "c"] {
        assert_eq!(step_status(&doc, id), "rolled_back", "{doc:#}");
        let phases: Vec<&Value> = step(&doc, id)["attempts"].as_array().unwrap().iter().collect();
        assert!(
            phases.iter().any(|a| a["phase"] == "rollback" && a["status"] == "succeeded"),
            "step {id}: the rollback attempt is recorded: {phases:?}"
        );
    }
    assert_eq!(step_status(&doc, "d"), "failed");
}

/// A rollback of a pure kind (`set`, or an automatic rollback with nothing
/// to undo) ends: it once stayed `running`, and the run `rolling_back`, forever.
#[test]
fn a_pure_rollback_ends_the_rollback() {
    let sb = Sandbox::new("run-pure-rollback");
    let file = sb.write(
        "pure-rollback.yaml",
        "name: pure-rollback\nsteps:\n  a:\n    uses: set\n    with: { x: 1 }\n    rollback: { uses: set, with: { undone: yes } }\n  b:\n    needs: [a]\n    uses: assert\n    with: { that: 'false' }\n",
    );
    let (code, doc) = sb.run_wait(file.to_str().unwrap(), &[]);
    assert_eq!(code, Some(1), "{doc:#}");
    assert_eq!(status(&doc), "rolled_back", "{doc:#}");
    assert_eq!(step_status(&doc, "a"), "rolled_back", "{doc:#}");
}

#[test]
fn on_failure_stop_fails_the_run_without_rolling_back() {
    let sb = Sandbox::new("run-rollback-stop");
    let source = std::fs::read_to_string(exec_fixture("rollback.yaml")).unwrap();
    let stop = source.replacen("name: rollback\n", "name: rollback-stop\non_failure: stop\n", 1);
    assert_ne!(source, stop);
    let file = sb.write("rollback-stop.yaml", &stop);
    let (code, doc) = sb.run_wait(file.to_str().unwrap(), &[]);
    assert_eq!(code, Some(1), "{doc:#}");
    assert_eq!(status(&doc), "failed", "{doc:#}");
    assert_eq!(sb.lines("order"), ["do a", "do b", "do c", "do d"], "nothing was undone");
    for id in ["a", "b", "c"] {
        assert_eq!(step_status(&doc, id), "succeeded", "{doc:#}");
    }
}

// --- scheduling ----------------------------------------------------------------

#[test]
fn a_step_skipped_by_when_does_not_block_its_dependents() {
    let sb = Sandbox::new("run-when-skip");
    let (code, doc) = sb.run_wait(&exec_fixture("when-skip.yaml"), &[]);
    assert_eq!(code, Some(0), "{doc:#}");
    assert_eq!(step_status(&doc, "deep_check"), "skipped");
    assert!(attempts(&doc, "deep_check").is_empty(), "a skipped step has no attempt");
    assert_eq!(step_status(&doc, "after"), "succeeded");
    assert_eq!(sb.lines("ran"), ["after saw skipped"]);

    // The control: when the condition holds, the step runs.
    let sb = Sandbox::new("run-when-run");
    let (code, doc) = sb.run_wait(&exec_fixture("when-skip.yaml"), &["mode=full"]);
    assert_eq!(code, Some(0), "{doc:#}");
    assert_eq!(sb.lines("ran"), ["deep_check", "after saw succeeded"]);
}

#[test]
fn independent_steps_run_in_parallel() {
    let sb = Sandbox::new("run-parallel");
    let (code, doc) = sb.run_wait(&exec_fixture("parallel.yaml"), &[]);
    assert_eq!(code, Some(0), "{doc:#}");
    let mut start = std::collections::HashMap::new();
    let mut end = std::collections::HashMap::new();
    for line in sb.lines("times") {
        let f: Vec<&str> = line.split_whitespace().collect();
        let ns: i128 = f[2].parse().expect("a timestamp");
        match f[1] {
            "start" => start.insert(f[0].to_string(), ns),
            _ => end.insert(f[0].to_string(), ns),
        };
    }
    assert_eq!((start.len(), end.len()), (2, 2), "{:?}", sb.lines("times"));
    let last_start = *start.values().max().unwrap();
    let first_end = *end.values().min().unwrap();
    assert!(last_start < first_end, "both steps were running at once: {:?}", sb.lines("times"));
    let span_ms = (end.values().max().unwrap() - start.values().min().unwrap()) / 1_000_000;
    assert!(span_ms < 1900, "two 1s steps took {span_ms}ms from first start to last end");
}

#[test]
fn step_outputs_and_parsed_json_flow_into_later_templates() {
    let sb = Sandbox::new("run-outputs");
    let (code, doc) = sb.run_wait(&exec_fixture("outputs.yaml"), &["site=dc07"]);
    assert_eq!(code, Some(0), "{doc:#}");
    let probe = &step(&doc, "probe")["outputs"];
    assert_eq!(probe["exit_code"], 0);
    assert_eq!(probe["json"]["role"], "primary", "the last stdout line, parsed: {probe:#}");
    assert_eq!(probe["json"]["lag"], 3, "JSON keeps its types: {probe:#}");
    assert!(probe["stdout"].as_str().unwrap_or_default().starts_with("probing dc07\n"));
    assert_eq!(
        step(&doc, "report")["outputs"]["stdout"],
        "dc07 is primary (lag 3, ok true, exit 0)"
    );
}

#[test]
fn a_script_may_print_nested_json() {
    // `script` is not templated, so `}}` in it (nested JSON) is plain text.
    let sb = Sandbox::new("run-script-nested-json");
    let file = sb.write(
        "nested.yaml",
        "name: nested\nsteps:\n  probe:\n    uses: shell\n    with:\n      script: |\n        echo '{\"role\": {\"name\": \"primary\"}}'\n",
    );
    let (code, doc) = sb.run_wait(file.to_str().unwrap(), &[]);
    assert_eq!(code, Some(0), "{doc:#}");
    assert_eq!(step(&doc, "probe")["outputs"]["json"]["role"]["name"], "primary");
}

#[test]
fn workflow_outputs_are_rendered_into_the_run() {
    let sb = Sandbox::new("run-workflow-outputs");
    let id = sb.enqueue(&exec_fixture("outputs.yaml"), &[]);
    let serve = sb.serve();
    let doc = sb.wait_finished(&id, Duration::from_secs(30));
    drop(serve);
    assert_eq!(status(&doc), "succeeded", "{doc:#}");
    assert_eq!(text(&doc["outputs"]["role"]), "primary");
    assert_eq!(text(&doc["outputs"]["site"]), "dc02", "the default input");
    assert_eq!(text(&doc["outputs"]["summary"]), "dc02 is primary (lag 3, ok true, exit 0)");
    assert_eq!(doc["inputs"]["site"], "dc02");
    for key in ["id", "workflow", "started_at", "finished_at"] {
        assert!(doc[key].is_string(), "`{key}` missing from show --json: {doc:#}");
    }
    assert_eq!(doc["id"], id.as_str());
    assert_eq!(doc["workflow"], "outputs");
    assert!(ms(&doc["finished_at"]) >= ms(&doc["started_at"]));
    // `runs --json` carries the outputs too, without the steps.
    let runs = sb.runs();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["outputs"], doc["outputs"]);
    assert!(runs[0].get("steps").is_none(), "{:#}", runs[0]);
}

#[test]
fn a_sub_workflow_runs_as_a_child_and_its_outputs_reach_the_parent() {
    let sb = Sandbox::new("run-subflow");
    let dir = exec_fixture("subflow");
    let out = sb.lifeboat(&["--workflows", &dir, "run", "parent", "-i", "name=bob", "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    let runs = sb.runs();
    assert_eq!(runs.len(), 2, "a parent and a child run: {runs:#?}");
    let parent = runs.iter().find(|r| r["workflow"] == "parent").expect("parent run");
    let child = runs.iter().find(|r| r["workflow"] == "child").expect("child run");
    assert_eq!(child["parent_run_id"], parent["id"]);
    assert_eq!(child["status"], "succeeded");
    assert_eq!(child["inputs"]["who"], "bob");
    let doc = sb.show(parent["id"].as_str().unwrap());
    assert_eq!(status(&doc), "succeeded");
    assert_eq!(step(&doc, "call")["outputs"]["greeting"], "hello bob");
    assert_eq!(step(&doc, "echo")["outputs"]["stdout"], "parent got hello bob");
    assert_eq!(text(&doc["outputs"]["said"]), "hello bob");
}

#[test]
fn every_finished_child_wakes_its_parent() {
    // A child run that ends while its parent is handing itself back (the
    // parent's release after `child_started`) must still wake the parent.
    // The window is small: many parents at once, on a busy machine.
    let sb = Sandbox::new("run-subflow-many");
    sb.ok(&["migrate"]);
    let dir = exec_fixture("subflow");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hogs: Vec<_> = (0..3)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                }
            })
        })
        .collect();
    let runs: Vec<_> = (0..16)
        .map(|k| {
            let cmd = sb.command(&[
                "--workflows",
                &dir,
                "run",
                "parent",
                "-i",
                &format!("name=p{k}"),
                "--wait",
            ]);
            std::thread::spawn(move || crate::util::output_or_timeout(cmd, Duration::from_secs(20)))
        })
        .collect();
    let results: Vec<Result<std::process::Output, String>> =
        runs.into_iter().map(|t| t.join().expect("join")).collect();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for h in hogs {
        let _ = h.join();
    }
    let hung: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    let stuck: Vec<String> = sb
        .runs()
        .iter()
        .filter(|r| r["workflow"] == "parent" && r["status"] != "succeeded")
        .map(|r| {
            let doc = sb.show(r["id"].as_str().unwrap());
            let child = step(&doc, "call")["outputs"].clone();
            format!(
                "{} {} (step call {}, outputs {child})",
                r["id"],
                r["status"],
                step_status(&doc, "call")
            )
        })
        .collect();
    let children =
        sb.runs().iter().filter(|r| r["workflow"] == "child" && r["status"] == "succeeded").count();
    assert!(
        hung.is_empty() && stuck.is_empty(),
        "{} of 16 `run parent --wait` hung; parents not finished although {children} children \
         succeeded:\n{}\n{}",
        hung.len(),
        stuck.join("\n"),
        hung.iter().map(|h| h.as_str()).collect::<Vec<_>>().join("\n")
    );
    for r in results.into_iter().flatten() {
        assert_eq!(r.status.code(), Some(0), "{}{}", stdout(&r), stderr(&r));
    }
}

#[test]
fn for_each_sequential_runs_items_one_at_a_time_in_order() {
    let sb = Sandbox::new("run-for-each");
    let (code, doc) = sb.run_wait(&exec_fixture("for-each.yaml"), &[]);
    assert_eq!(code, Some(0), "{doc:#}");
    assert_eq!(sb.lines("traffic"), ["10", "25", "50", "100"]);
    let items = step(&doc, "shift")["outputs"]["items"].as_array().cloned().unwrap_or_default();
    let order: Vec<String> = items.iter().map(|i| text(&i["item"])).collect();
    assert_eq!(order, ["10", "25", "50", "100"], "outputs in item order: {items:#?}");
    assert_eq!(items[3]["outputs"]["json"]["pct"], 100);
}

#[test]
fn poll_repeats_the_action_until_the_condition_holds() {
    let sb = Sandbox::new("run-poll");
    let (code, doc) = sb.run_wait(&exec_fixture("poll.yaml"), &[]);
    assert_eq!(code, Some(0), "{doc:#}");
    assert_eq!(sb.read("polls").trim(), "3", "polled until the counter reached 3, then stopped");
    assert_eq!(step(&doc, "until_ready")["outputs"]["json"]["count"], 3);
    assert_eq!(attempts(&doc, "until_ready").len(), 1, "polling is one attempt");
}

#[test]
fn concurrency_skip_does_not_start_a_second_run_with_the_same_key() {
    let sb = Sandbox::new("run-concurrency");
    let wf = exec_fixture("concurrency.yaml");
    let first = sb.enqueue(&wf, &["site=dc01"]);
    let out = sb.ok(&["run", &wf, "-i", "site=dc01"]);
    let said = stdout(&out);
    assert!(said.contains("not started"), "{said}");
    assert!(said.contains(&first), "the message names the active run: {said}");
    let out = sb.ok(&["run", &wf, "-i", "site=dc01", "--json"]);
    let skipped: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(skipped["skipped"], true);
    assert_eq!(skipped["active"], first.as_str());
    // `--wait` on a skipped run exits 1: nothing ran.
    let out = sb.lifeboat(&["run", &wf, "-i", "site=dc01", "--wait"]);
    assert_eq!(out.status.code(), Some(1), "{}{}", stdout(&out), stderr(&out));
    // Another key starts.
    let other = sb.enqueue(&wf, &["site=dc02"]);
    assert_ne!(first, other);
    assert_eq!(sb.runs().len(), 2, "{:#?}", sb.runs());
    // Once the first run has ended, the key is free again.
    let serve = sb.serve();
    sb.wait_finished(&first, Duration::from_secs(30));
    drop(serve);
    sb.enqueue(&wf, &["site=dc01"]);
    assert_eq!(sb.runs().len(), 3);
}

// --- operator controls --------------------------------------------------------

#[test]
fn cancel_ends_a_waiting_run_cancelled_after_its_rollbacks() {
    let sb = Sandbox::new("run-cancel");
    let id = sb.enqueue(&exec_fixture("cancel.yaml"), &[]);
    let serve = sb.serve();
    sb.wait_for(&id, Duration::from_secs(30), |d| step_status(d, "hold") == "waiting");
    let out = sb.ok(&["cancel", &id]);
    assert!(stdout(&out).contains("requested"), "{}", stdout(&out));
    let doc = sb.wait_finished(&id, Duration::from_secs(30));
    drop(serve);
    assert_eq!(status(&doc), "cancelled", "{doc:#}");
    assert_eq!(sb.lines("trail"), ["prepared", "undo prepare"]);
    assert_eq!(step_status(&doc, "prepare"), "rolled_back");
    assert_eq!(step_status(&doc, "hold"), "cancelled");
    assert_eq!(step_status(&doc, "after"), "cancelled");
    // A finished run cannot be cancelled again.
    let out = sb.lifeboat(&["cancel", &id]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("already ended"), "{}", stderr(&out));
}

#[test]
fn cancel_no_rollback_leaves_succeeded_steps_alone() {
    let sb = Sandbox::new("run-cancel-no-rollback");
    let id = sb.enqueue(&exec_fixture("cancel.yaml"), &[]);
    let serve = sb.serve();
    sb.wait_for(&id, Duration::from_secs(30), |d| step_status(d, "hold") == "waiting");
    sb.ok(&["cancel", &id, "--no-rollback"]);
    let doc = sb.wait_finished(&id, Duration::from_secs(30));
    drop(serve);
    assert_eq!(status(&doc), "cancelled", "{doc:#}");
    assert_eq!(sb.lines("trail"), ["prepared"]);
    assert_eq!(step_status(&doc, "prepare"), "succeeded");
}

#[test]
fn cancel_kills_a_running_step() {
    let sb = Sandbox::new("run-cancel-shell");
    let id = sb.enqueue(&exec_fixture("cancel-shell.yaml"), &[]);
    let serve = sb.serve();
    assert!(eventually(Duration::from_secs(30), || sb.path("long.pid").exists()), "never started");
    let pid: u32 = sb.read("long.pid").trim().parse().expect("pid");
    sb.ok(&["cancel", &id]);
    let doc = sb.wait_finished(&id, Duration::from_secs(15));
    drop(serve);
    assert_eq!(status(&doc), "cancelled", "{doc:#}");
    assert_eq!(step_status(&doc, "long"), "cancelled");
    assert_ne!(attempts(&doc, "long")[0]["status"], "running", "attempt left running: {doc:#}");
    assert!(eventually(Duration::from_secs(3), || !pid_alive(pid)), "the step's process survived");
    assert_eq!(sb.read("trail"), "");
}

#[test]
fn pause_holds_new_steps_until_resume() {
    let sb = Sandbox::new("run-pause");
    let id = sb.enqueue(&exec_fixture("pause.yaml"), &[]);
    let serve = sb.serve();
    assert!(eventually(Duration::from_secs(30), || sb.path("first.started").exists()));
    sb.ok(&["pause", &id]);
    // The running step finishes; the next one does not start.
    sb.wait_for(&id, Duration::from_secs(30), |d| step_status(d, "first") == "succeeded");
    assert!(released(&sb, &id), "the worker kept the paused run");
    let doc = sb.show(&id);
    assert_eq!(step_status(&doc, "second"), "pending", "{doc:#}");
    assert_eq!(doc["paused"], true, "{doc:#}");
    assert_eq!(sb.lines("trail"), ["first"]);
    sb.ok(&["resume", &id]);
    let doc = sb.wait_finished(&id, Duration::from_secs(30));
    drop(serve);
    assert_eq!(status(&doc), "succeeded", "{doc:#}");
    assert_eq!(sb.lines("trail"), ["first", "second"]);
    // The history says when the worker applied each request, and for whom:
    // an event stream learns the run is paused from an event, not a poll.
    let logs = stdout(&sb.ok(&["logs", &id]));
    let applied: Vec<&str> =
        logs.lines().filter(|l| l.contains(" paused") || l.contains(" resumed")).collect();
    assert_eq!(applied.len(), 2, "{logs}");
    assert!(applied[0].contains("paused") && applied[1].contains("resumed"), "{logs}");
}

#[test]
fn retry_from_a_failed_step_with_new_inputs_does_not_repeat_earlier_steps() {
    let sb = Sandbox::new("run-retry-from");
    let (code, doc) = sb.run_wait(&exec_fixture("retry-from.yaml"), &[]);
    assert_eq!(code, Some(1), "{doc:#}");
    assert_eq!(status(&doc), "failed");
    let id = doc["id"].as_str().unwrap().to_string();
    assert_eq!(sb.lines("executions"), ["prepare", "promote healthy=false"]);

    let out = sb.lifeboat(&["retry", &id, "--from", "promote", "-i", "healthy=true", "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(
        sb.lines("executions"),
        ["prepare", "promote healthy=false", "promote healthy=true", "verify"],
        "prepare, which had succeeded, ran once"
    );
    let doc = sb.show(&id);
    assert_eq!(status(&doc), "succeeded", "{doc:#}");
    assert_eq!(doc["inputs"]["healthy"], true, "the run keeps the corrected inputs");
    assert_eq!(attempt_statuses(&doc, "prepare"), ["succeeded"]);
    assert_eq!(attempt_statuses(&doc, "promote"), ["failed", "succeeded"]);
    let numbers: Vec<u64> =
        attempts(&doc, "promote").iter().map(|a| a["n"].as_u64().unwrap()).collect();
    assert_eq!(numbers, [1, 2], "attempt numbers keep counting across the retry");
    assert_eq!(attempt_statuses(&doc, "verify"), ["succeeded"]);
}

#[test]
fn retry_rejects_a_step_that_does_not_exist() {
    let sb = Sandbox::new("run-retry-unknown-step");
    let (code, doc) = sb.run_wait(&exec_fixture("retry-from.yaml"), &[]);
    assert_eq!(code, Some(1));
    let id = doc["id"].as_str().unwrap();
    let out = sb.lifeboat(&["retry", id, "--from", "promot"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("did you mean `promote`"), "{}", stderr(&out));
}

/// Waits until the running attempt of `step` has its process group
/// recorded (the worker commits it right after spawning; a successor kills
/// that group on takeover). Polls the attempts table; panics after 30s.
pub fn wait_for_pgid(sb: &Sandbox, run: &str, step: &str) -> u32 {
    let query = format!(
        "SELECT CAST(pgid AS TEXT) FROM attempts WHERE run_id = '{run}' AND step_id = '{step}' \
         AND status = 'running' AND pgid IS NOT NULL"
    );
    let found = || sb.rows(&query).first().and_then(|r| r[0].as_deref()?.parse().ok());
    assert!(
        eventually(Duration::from_secs(30), || found().is_some()),
        "the process group of `{step}` in run {run} was never recorded"
    );
    found().expect("recorded")
}

/// Starts the `needs-human` workflow under `serve`, kills the worker with
/// SIGKILL while the `idempotent: false` step runs, and lets a new worker
/// take the run over: the step must wait for a person.
fn interrupted_non_idempotent_step(sb: &Sandbox) -> (String, crate::util::Serve) {
    let id = sb.enqueue(&exec_fixture("needs-human.yaml"), &[]);
    let mut first = sb.serve();
    assert!(
        eventually(Duration::from_secs(30), || sb.path("promote.pid").exists()),
        "promote never started"
    );
    let orphan: u32 = sb.read("promote.pid").trim().parse().expect("pid");
    wait_for_pgid(sb, &id, "promote");
    first.kill9();
    let second = sb.serve();
    let doc = sb.wait_for(&id, Duration::from_secs(30), |d| step_status(d, "promote") != "running");
    assert_eq!(step_status(&doc, "promote"), "needs_human", "{doc:#}");
    assert_eq!(attempt_statuses(&doc, "promote"), ["interrupted"], "{doc:#}");
    assert!(
        eventually(Duration::from_secs(3), || !pid_alive(orphan)),
        "the interrupted attempt's process ({orphan}) was not killed on takeover"
    );
    assert!(!sb.read("trail").contains("promote finished"), "{}", sb.read("trail"));
    let out = sb.ok(&["pending", "--json"]);
    let pending: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(
        pending.as_array().is_some_and(|p| p.iter().any(|w| w["run"] == id.as_str()
            && w["step"] == "promote"
            && w["status"] == "needs_human")),
        "pending lists the step: {pending:#}"
    );
    // Nothing moves until a person decides: the worker let go of the run.
    assert!(released(sb, &id), "the worker kept a run that waits for a person");
    assert_eq!(step_status(&sb.show(&id), "promote"), "needs_human");
    assert!(!sb.read("trail").contains("verify"));
    (id, second)
}

#[test]
fn skip_resolves_a_needs_human_step() {
    let sb = Sandbox::new("run-needs-human-skip");
    let (id, serve) = interrupted_non_idempotent_step(&sb);
    sb.ok(&["skip", &id, "promote"]);
    let doc = sb.wait_finished(&id, Duration::from_secs(30));
    drop(serve);
    assert_eq!(status(&doc), "succeeded", "{doc:#}");
    assert_eq!(step_status(&doc, "promote"), "skipped");
    assert_eq!(step_status(&doc, "verify"), "succeeded");
    assert_eq!(sb.lines("trail"), ["fence", "promote started 1", "verify"]);
    let out = sb.ok(&["pending", "--json"]);
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap(), serde_json::json!([]));
}

#[test]
fn mark_succeeded_resolves_a_needs_human_step() {
    let sb = Sandbox::new("run-needs-human-mark-ok");
    let (id, serve) = interrupted_non_idempotent_step(&sb);
    sb.ok(&["mark", &id, "promote", "succeeded"]);
    let doc = sb.wait_finished(&id, Duration::from_secs(30));
    drop(serve);
    assert_eq!(status(&doc), "succeeded", "{doc:#}");
    assert_eq!(step_status(&doc, "promote"), "succeeded");
    assert_eq!(attempt_statuses(&doc, "promote"), ["interrupted"], "marking runs nothing");
    assert_eq!(sb.lines("trail"), ["fence", "promote started 1", "verify"]);
}

#[test]
fn mark_failed_fails_the_run() {
    let sb = Sandbox::new("run-needs-human-mark-failed");
    let (id, serve) = interrupted_non_idempotent_step(&sb);
    sb.ok(&["mark", &id, "promote", "failed"]);
    let doc = sb.wait_finished(&id, Duration::from_secs(30));
    drop(serve);
    assert_eq!(status(&doc), "failed", "{doc:#}");
    assert_eq!(step_status(&doc, "promote"), "failed");
    assert_eq!(step_status(&doc, "verify"), "cancelled");
    assert_eq!(sb.lines("trail"), ["fence", "promote started 1"]);
}

#[test]
fn retry_from_resolves_a_needs_human_step() {
    let sb = Sandbox::new("run-needs-human-retry");
    let (id, serve) = interrupted_non_idempotent_step(&sb);
    sb.ok(&["retry", &id, "--from", "promote", "-i", "hold=0"]);
    let doc = sb.wait_finished(&id, Duration::from_secs(30));
    drop(serve);
    assert_eq!(status(&doc), "succeeded", "{doc:#}");
    assert_eq!(attempt_statuses(&doc, "promote"), ["interrupted", "succeeded"]);
    assert_eq!(
        sb.lines("trail"),
        ["fence", "promote started 1", "promote started 2", "promote finished 2", "verify"]
    );
}

/// Skips or marks (`decision`) the running `long` step of `cancel-shell`:
/// by the time the step shows the decision, its attempt has ended (its
/// row no longer `running`) and its process is gone.
fn decide_a_running_step(name: &str, decision: &[&str], step_after: &str, run_after: &str) {
    let sb = Sandbox::new(name);
    let id = sb.enqueue(&exec_fixture("cancel-shell.yaml"), &[]);
    let serve = sb.serve();
    assert!(eventually(Duration::from_secs(30), || sb.path("long.pid").exists()), "never started");
    let pid: u32 = sb.read("long.pid").trim().parse().expect("pid");
    let mut args = vec![decision[0], id.as_str(), "long"];
    args.extend(&decision[1..]);
    sb.ok(&args);
    let doc = sb.wait_for(&id, Duration::from_secs(30), |d| step_status(d, "long") != "running");
    assert_eq!(step_status(&doc, "long"), step_after, "{doc:#}");
    let tried = attempts(&doc, "long");
    assert_eq!(tried.len(), 1, "{doc:#}");
    assert_ne!(tried[0]["status"], "running", "the attempt row was left running: {doc:#}");
    assert!(!tried[0]["finished_at"].is_null(), "the attempt has no end: {doc:#}");
    assert!(!pid_alive(pid), "the step's process ({pid}) outlived the decision");
    let doc = sb.wait_finished(&id, Duration::from_secs(30));
    drop(serve);
    assert_eq!(status(&doc), run_after, "{doc:#}");
    assert_ne!(attempts(&doc, "long")[0]["status"], "running", "{doc:#}");
    assert_eq!(sb.read("trail"), "");
}

#[test]
fn skip_stops_a_running_attempt_and_records_its_end() {
    decide_a_running_step("run-skip-running", &["skip"], "skipped", "succeeded");
}

#[test]
fn mark_stops_a_running_attempt_and_records_its_end() {
    decide_a_running_step("run-mark-running", &["mark", "succeeded"], "succeeded", "succeeded");
    decide_a_running_step("run-mark-running-failed", &["mark", "failed"], "failed", "failed");
}

#[test]
fn skip_and_mark_name_unknown_steps() {
    let sb = Sandbox::new("run-skip-unknown");
    let id = sb.enqueue(&exec_fixture("cancel.yaml"), &[]);
    let out = sb.lifeboat(&["skip", &id, "hodl"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("did you mean `hold`"), "{}", stderr(&out));
    let out = sb.lifeboat(&["mark", &id, "afterr", "succeeded"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("did you mean `after`"), "{}", stderr(&out));
}

// --- security -------------------------------------------------------------------

/// Everything the database holds: every file of SQLite (the WAL holds
/// recent commits), or every table of Postgres as text.
fn database_bytes(sb: &Sandbox) -> Vec<(String, Vec<u8>)> {
    if crate::util::on_postgres() {
        return ["definitions", "runs", "steps", "attempts", "events", "requests"]
            .iter()
            .map(|table| {
                let sql = format!("SELECT t::text FROM {table} t");
                let out = std::process::Command::new("psql")
                    .arg(&sb.url)
                    .env("PGOPTIONS", "-c search_path=lifeboat")
                    .args(["-qAt", "-c", &sql])
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                (table.to_string(), out.stdout)
            })
            .collect();
    }
    let mut files = Vec::new();
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let path = format!("{}{suffix}", sb.db.display());
        if let Ok(bytes) = std::fs::read(&path) {
            files.push((path, bytes));
        }
    }
    assert!(!files.is_empty(), "no database at {}", sb.db.display());
    files
}

fn assert_secret_nowhere(sb: &Sandbox, texts: &[(&str, String)]) {
    for (what, text) in texts {
        assert!(!text.contains(SECRET), "{what} contains the secret:\n{text}");
    }
    for (path, bytes) in database_bytes(sb) {
        let found = bytes.windows(SECRET.len()).position(|w| w == SECRET.as_bytes());
        assert!(found.is_none(), "{path} contains the secret at byte {}", found.unwrap_or(0));
    }
}

#[test]
fn secrets_are_redacted_from_outputs_logs_and_the_database() {
    let sb = Sandbox::new("run-redact").env("LIFEBOAT_SECRET_TOKEN", SECRET);
    let out = sb.lifeboat(&["run", &exec_fixture("redact.yaml"), "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    let id = sb.runs()[0]["id"].as_str().unwrap().to_string();
    let doc = sb.show(&id);
    // The steps did receive the value...
    assert_eq!(step(&doc, "echo")["outputs"]["stdout"], "token=***\n");
    assert_eq!(step(&doc, "script")["outputs"]["json"]["token"], "***");
    assert_eq!(attempt_statuses(&doc, "script"), ["failed", "succeeded"]);
    assert!(
        attempts(&doc, "script")[0]["error"].as_str().is_some_and(|e| e.contains("***")),
        "{doc:#}"
    );
    // ...and it was never stored or shown.
    let logs = sb.ok(&["logs", &id]);
    assert!(stdout(&logs).contains("stdout has ***"), "{}", stdout(&logs));
    assert!(stdout(&logs).contains("failing with ***"), "{}", stdout(&logs));
    let show_text = stdout(&sb.ok(&["show", &id]));
    assert_secret_nowhere(
        &sb,
        &[
            ("`run --wait` output", format!("{}{}", stdout(&out), stderr(&out))),
            ("show --json", doc.to_string()),
            ("show", show_text),
            ("logs", stdout(&logs)),
            ("logs script", stdout(&sb.ok(&["logs", &id, "script"]))),
        ],
    );
}

#[test]
fn secrets_in_a_notify_message_are_not_stored() {
    let sb = Sandbox::new("run-redact-notify").env("LIFEBOAT_SECRET_TOKEN", SECRET).config(EMAIL);
    let (code, doc) = sb.run_wait(&exec_fixture("redact-notify.yaml"), &[]);
    assert_eq!(code, Some(0), "{doc:#}");
    let id = doc["id"].as_str().unwrap();
    let logs = stdout(&sb.ok(&["logs", id]));
    assert_secret_nowhere(&sb, &[("show --json", doc.to_string()), ("logs", logs)]);
}

#[test]
fn secrets_in_an_approval_message_are_not_stored() {
    let sb = Sandbox::new("run-redact-approval")
        .env("LIFEBOAT_SECRET_TOKEN", SECRET)
        .with_user("alice", &["approver"]);
    let file = sb.write(
        "approval.yaml",
        "name: approval\nsteps:\n  ok:\n    uses: approval\n    with: { approvers: [alice], message: \"token {{secrets.TOKEN}}\" }\n",
    );
    let id = sb.enqueue(file.to_str().unwrap(), &[]);
    let serve = sb.serve();
    let doc = sb.wait_for(&id, Duration::from_secs(30), |d| step_status(d, "ok") == "waiting");
    drop(serve);
    let logs = stdout(&sb.ok(&["logs", &id]));
    let pending = stdout(&sb.ok(&["pending", "--json"]));
    assert_secret_nowhere(
        &sb,
        &[("show --json", doc.to_string()), ("logs", logs), ("pending", pending)],
    );
}

#[test]
fn secrets_cannot_be_passed_to_a_child_workflow() {
    // The child's inputs are stored with its run: a secret there is refused
    // before anything runs.
    let sb = Sandbox::new("run-redact-child").env("LIFEBOAT_SECRET_TOKEN", SECRET);
    let dir = exec_fixture("");
    let out = sb.lifeboat(&["--workflows", &dir, "run", "redact-child", "--wait"]);
    assert_eq!(out.status.code(), Some(1), "{}{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("LB015"), "{}", stderr(&out));
    assert!(sb.runs().is_empty(), "{:#?}", sb.runs());
    assert_secret_nowhere(&sb, &[("run --wait", format!("{}{}", stdout(&out), stderr(&out)))]);
}

#[test]
fn secrets_cannot_be_stored_as_workflow_outputs() {
    let sb = Sandbox::new("run-redact-outputs").env("LIFEBOAT_SECRET_TOKEN", SECRET);
    let out = sb.lifeboat(&["run", &exec_fixture("redact-outputs.yaml"), "--wait"]);
    assert_eq!(out.status.code(), Some(1), "{}{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("LB015"), "{}", stderr(&out));
    assert!(sb.runs().is_empty());
}

#[test]
fn shell_metacharacters_in_inputs_are_never_executed() {
    let sb = Sandbox::new("run-injection");
    let values = [
        "; touch pwned_semicolon",
        "$(touch pwned_subst)",
        "`touch pwned_backtick`",
        "x && touch pwned_and | touch pwned_pipe > pwned_redirect",
    ];
    let inputs: Vec<String> =
        ["a", "b", "c", "d"].iter().zip(values).map(|(k, v)| format!("{k}={v}")).collect();
    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let (code, doc) = sb.run_wait(&exec_fixture("inject.yaml"), &inputs);
    assert_eq!(code, Some(0), "{doc:#}");
    let literal = format!("{}\n", values.join("\n"));
    assert_eq!(
        step(&doc, "argv")["outputs"]["stdout"],
        literal.as_str(),
        "argv passes values verbatim"
    );
    assert_eq!(
        step(&doc, "env")["outputs"]["stdout"],
        literal.as_str(),
        "env passes values verbatim"
    );
    assert_eq!(
        step(&doc, "joined")["outputs"]["stdout"],
        format!("{}\n", values.join(" ")).as_str()
    );
    let created: Vec<String> = std::fs::read_dir(&sb.dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("pwned"))
        .collect();
    assert!(created.is_empty(), "an input was executed: {created:?}");
    assert!(sb.path("unquoted").exists(), "the unquoted echo ran");
}

// --- bad input ------------------------------------------------------------------

fn assert_input_error(sb: &Sandbox, args: &[&str], expected: &[&str]) {
    assert_exit(sb, args, 1, expected);
}

/// `lifeboat ARGS…` exits `code` (docs/exit-codes.md) naming every `expected` part.
fn assert_exit(sb: &Sandbox, args: &[&str], code: i32, expected: &[&str]) {
    let out = sb.lifeboat(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(code), "lifeboat {args:?}:\n{}{err}", stdout(&out));
    for part in expected {
        assert!(err.contains(part), "lifeboat {args:?}: `{part}` missing from:\n{err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn an_unknown_workflow_is_named_with_a_suggestion() {
    let sb = Sandbox::new("run-bad-workflow");
    let dir = exec_fixture("");
    let out = sb.lifeboat(&["--workflows", &dir, "run", "inputz", "-i", "site=dc01"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "exit 3: not found:\n{err}");
    for part in ["no workflow `inputz`", "did you mean `inputs`"] {
        assert!(err.contains(part), "`{part}` missing from:\n{err}");
    }
    assert!(sb.runs().is_empty(), "nothing was started");
}

#[test]
fn a_missing_required_input_is_named() {
    let sb = Sandbox::new("run-bad-missing");
    assert_input_error(&sb, &["run", &exec_fixture("inputs.yaml")], &["input `site` is required"]);
    assert!(sb.runs().is_empty());
}

#[test]
fn an_ill_typed_input_is_named() {
    let sb = Sandbox::new("run-bad-type");
    let wf = exec_fixture("inputs.yaml");
    assert_input_error(
        &sb,
        &["run", &wf, "-i", "site=dc01", "-i", "count=many"],
        &["input `count`", "`many` is not an integer"],
    );
    assert_input_error(&sb, &["run", &wf, "-i", "site=paris"], &["input `site`", "^dc[0-9]+$"]);
    assert!(sb.runs().is_empty());
}

#[test]
fn an_unknown_input_gets_a_did_you_mean() {
    let sb = Sandbox::new("run-bad-unknown-input");
    assert_input_error(
        &sb,
        &["run", &exec_fixture("inputs.yaml"), "-i", "sitee=dc01"],
        &["input `sitee` is not declared", "did you mean `site`"],
    );
    assert!(sb.runs().is_empty());
}

#[test]
fn an_unknown_run_is_named() {
    let sb = Sandbox::new("run-bad-run-id");
    sb.ok(&["migrate"]);
    for args in [&["show", "0000dead"][..], &["cancel", "0000dead"], &["logs", "0000dead"]] {
        assert_exit(&sb, args, 3, &["0000dead"]);
    }
}

#[test]
fn a_corrupt_database_is_reported_and_left_untouched() {
    if crate::util::on_postgres() {
        return; // about SQLite files
    }
    let sb = Sandbox::new("run-bad-corrupt-db");
    let garbage: Vec<u8> = (0..8192u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(&sb.db, &garbage).unwrap();
    for args in
        [&["runs"][..], &["run", &exec_fixture("inputs.yaml"), "-i", "site=dc01"], &["serve"]]
    {
        // Exit 4: the database cannot be used (not "invalid input").
        assert_exit(
            &sb,
            args,
            4,
            &["cannot open database", sb.db.to_str().unwrap(), "not a database"],
        );
        assert_eq!(
            std::fs::read(&sb.db).unwrap(),
            garbage,
            "lifeboat {args:?} modified the corrupt file"
        );
    }
}

#[test]
fn an_unusable_database_path_is_reported() {
    let mut sb = Sandbox::new("run-bad-db-path");
    let file = sb.write("not-a-dir", "a regular file\n");
    let under_file = format!("sqlite://{}/lifeboat.db", file.display());
    let a_dir = format!("sqlite://{}", sb.dir.display());
    for url in [under_file, a_dir] {
        sb.url = url.clone();
        assert_exit(&sb, &["runs"], 4, &["cannot open database", &url]);
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "a regular file\n");
    // A directory we may not enter (meaningless as root, who may enter anything).
    let locked = sb.path("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    if std::fs::read_dir(&locked).is_err() {
        let url = format!("sqlite://{}/lifeboat.db", locked.display());
        sb.url = url.clone();
        assert_exit(&sb, &["runs"], 4, &["cannot open database", &url]);
    }
    std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

// --- the worker ------------------------------------------------------------------

/// CPU time (user + system) a process has used, from /proc (clock ticks of 10ms).
fn cpu_ms(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    // After the command: state(0) ppid(1) ... utime(11) stime(12).
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks * 10
}

#[test]
fn a_worker_waiting_on_a_step_does_not_spin() {
    let sb = Sandbox::new("run-idle-worker");
    let id = sb.enqueue(&exec_fixture("cancel-shell.yaml"), &[]);
    let serve = sb.serve();
    assert!(eventually(Duration::from_secs(30), || sb.path("long.pid").exists()), "never started");
    let before = cpu_ms(serve.pid());
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu_ms(serve.pid()) - before;
    sb.ok(&["cancel", &id]);
    sb.wait_finished(&id, Duration::from_secs(30));
    drop(serve);
    assert!(used < 600, "`serve` used {used}ms of CPU in 3s while its only step slept");
}

// --- configuration --------------------------------------------------------------

#[test]
fn executor_settings_from_the_environment_apply_without_a_config_file() {
    // docs/config.md: executor keys also from env. A 2s lease from the environment
    // means a dead worker's step is retried within seconds, not after the
    // default 30s.
    let sb = Sandbox::new("run-env-lease")
        .without_config()
        .env("LIFEBOAT_EXECUTOR__LEASE", "2s")
        .env("LIFEBOAT_EXECUTOR__HEARTBEAT", "500ms")
        .env("LIFEBOAT_EXECUTOR__POLL", "100ms");
    let id = sb.enqueue(&exec_fixture("cancel-shell.yaml"), &[]);
    let mut first = sb.serve();
    assert!(eventually(Duration::from_secs(30), || sb.path("long.pid").exists()), "never started");
    let orphan: u32 = sb.read("long.pid").trim().parse().expect("pid");
    wait_for_pgid(&sb, &id, "long");
    first.kill9();
    let killed = std::time::Instant::now();
    let second = sb.serve();
    let taken_over =
        eventually(Duration::from_secs(12), || attempts(&sb.show(&id), "long").len() >= 2);
    let waited = killed.elapsed();
    let _ = sb.lifeboat(&["cancel", &id]);
    sb.wait_finished(&id, Duration::from_secs(30));
    drop(second);
    if pid_alive(orphan) {
        let _ = std::process::Command::new("kill").args(["-9", &orphan.to_string()]).status();
    }
    assert!(
        taken_over,
        "the run was not taken over {waited:?} after its worker died (lease 2s from LIFEBOAT_EXECUTOR__LEASE)"
    );
}

#[test]
fn the_database_url_from_the_environment_is_used_without_a_config_file() {
    let sb = Sandbox::new("run-env-database-url").without_config();
    let db = sb.path("from-env.db");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_lifeboat"));
    cmd.args(["migrate"])
        .current_dir(&sb.dir)
        .env_remove("LIFEBOAT_CONFIG")
        .env("LIFEBOAT_DATABASE_URL", format!("sqlite://{}", db.display()));
    let out = crate::util::output_within(cmd, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("from-env.db"), "{}", stdout(&out));
    assert!(db.exists(), "LIFEBOAT_DATABASE_URL was ignored");
    assert!(!sb.path("lifeboat.db").exists(), "the default database was used instead");
}

#[test]
fn report_draws_a_timeline_of_every_attempt_against_the_rto() {
    let sb = Sandbox::new("run-report");
    let file = sb.write(
        "timed.yaml",
        "name: timed\nobjectives: { rto: 1m }\nsteps:\n  flaky:\n    uses: shell\n    retry: { attempts: 2, delay: 100ms }\n    with: { script: \"test -f marker || { touch marker; exit 1; }\" }\n  after:\n    needs: [flaky]\n    uses: set\n    with: { ok: \"yes\" }\n",
    );
    let (code, doc) = sb.run_wait(file.to_str().unwrap(), &[]);
    assert_eq!(code, Some(0), "{doc:#}");
    let id = doc["id"].as_str().unwrap();
    let html = sb.path("report.html");
    let out = sb.ok(&["report", id, "--html", html.to_str().unwrap()]);
    let text = stdout(&out);
    assert!(text.contains("within the RTO of 1m00s"), "{text}");
    assert!(
        text.contains("flaky #1") && text.contains("flaky #2"),
        "every attempt is a bar: {text}"
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("<svg") && page.contains("flaky #2") && page.contains("RTO 1m00s"),
        "{page}"
    );
}

#[test]
fn a_run_over_its_rto_says_so_exactly_once() {
    let sb = Sandbox::new("run-rto-once");
    sb.write(
        "slow.yaml",
        "name: slow\nobjectives: { rto: 300ms }\nsteps:\n  work:\n    uses: shell\n    with: { command: [sleep, \"1.5\"] }\n",
    );
    let out = sb.lifeboat(&["run", "slow.yaml", "--wait", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let logs = stdout(&sb.ok(&["logs", doc["id"].as_str().unwrap()]));
    assert_eq!(logs.matches("rto_breached").count(), 1, "{logs}");
}

/// `runs --before RUN` pages back through history by keyset: the page
/// after a page is the runs older than its last, none repeated or skipped.
#[test]
fn runs_before_a_run_lists_the_next_page() {
    let sb = Sandbox::new("runs-before");
    sb.write("one.yaml", "name: one\nsteps:\n  a: { uses: set }\n");
    let mut started: Vec<String> = (0..5).map(|_| sb.enqueue("one.yaml", &[])).collect();
    started.reverse();
    let page = |args: &[&str]| -> Vec<String> {
        let out = sb.ok(&[&["runs", "--json", "--limit", "2"][..], args].concat());
        let doc: Value = serde_json::from_str(&stdout(&out)).expect("runs --json");
        doc.as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()).collect()
    };
    let mut seen = page(&[]);
    while seen.len() < started.len() {
        let next = page(&["--before", seen.last().unwrap()]);
        assert!(!next.is_empty(), "{seen:?}");
        seen.extend(next);
    }
    assert_eq!(seen, started, "newest first, each once");
    assert!(page(&["--before", &started[4]]).is_empty(), "nothing older than the first");
}

/// Every printing command treats a reader that went away (`lifeboat … | head`)
/// as the end of its output: exit 0, no panic.
#[test]
fn commands_into_a_reader_that_stops_early_exit_normally_without_a_panic() {
    let sb = Sandbox::new("runs-broken-pipe");
    sb.write("one.yaml", "name: one\nsteps:\n  a: { uses: set }\n");
    let mut run = String::new();
    for _ in 0..40 {
        run = sb.enqueue("one.yaml", &[]);
    }
    let commands: [&[&str]; 5] = [
        &["runs", "--limit", "1000"],
        &["runs", "--limit", "1000", "--json"],
        &["audit", "list"],
        &["show", &run, "--json"],
        &["schema"],
    ];
    for args in commands {
        let mut cmd = sb.command(args);
        cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("spawn lifeboat");
        // The reader goes away before anything is written (`lifeboat … | head -0`).
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait for lifeboat");
        let err = stderr(&out);
        assert!(!err.contains("panicked"), "lifeboat {args:?}: {err}");
        assert_eq!(out.status.code(), Some(0), "lifeboat {args:?}: {err}");
    }
}

/// Processes that open one fresh database at once all migrate it: a process
/// that loses the race to change the schema (a table or a column another one
/// just added) sees the winner's work and goes on, instead of failing with
/// "duplicate column name".
#[test]
fn processes_opening_a_fresh_database_together_all_migrate_it() {
    for round in 0..4 {
        let sb = Sandbox::new(&format!("run-migrate-race-{round}"));
        let children: Vec<_> = (0..6)
            .map(|_| {
                sb.command(&["migrate"])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("spawn lifeboat migrate")
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().expect("wait for lifeboat migrate");
            assert_eq!(out.status.code(), Some(0), "round {round}: {}", stderr(&out));
        }
        // The schema is whole: a run can be listed on it.
        sb.ok(&["runs"]);
    }
}
