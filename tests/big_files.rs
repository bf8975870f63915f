//! Workflow files at and past the size limits (LB027): each is answered
//! in well under a second, and none can stall or take down `serve`, not
//! even as the stored definition of a run it must recover.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{Api, Sandbox, lifeboat, scratch, stderr};

/// A workflow of `n` `set` steps, each needing the one before it.
fn chain(name: &str, n: usize) -> String {
    let mut text = format!("name: {name}\nsteps:\n  s0: {{ uses: set }}\n");
    for i in 1..n {
        text.push_str(&format!("  s{i}: {{ uses: set, needs: [s{}] }}\n", i - 1));
    }
    text
}

/// `validate` on `text`: (exit code, stderr, how long it took).
fn validate(name: &str, text: &str) -> (Option<i32>, String, Duration) {
    let path = scratch(name).join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    let started = Instant::now();
    let out = lifeboat(&["validate", path.to_str().unwrap()]);
    (out.status.code(), stderr(&out), started.elapsed())
}

/// A hang guard, not a measurement: a debug build under a CPU hog on two
/// shared cores took 11.5 s for what takes well under a second alone.
const HANG: Duration = Duration::from_secs(60);

#[test]
fn a_25000_step_chain_is_refused_by_the_step_limit() {
    let (code, err, took) = validate("chain-25k", &chain("chain", 25_000));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("error[LB027]") && err.contains("25000 steps; at most 2000"), "{err}");
    // A hang guard on a loaded machine, not the measurement (see the closing numbers).
    assert!(took < HANG, "took {took:?}");
}

#[test]
fn a_chain_at_the_limit_is_valid() {
    let (code, err, took) = validate("chain-2k", &chain("chain", 2_000));
    assert_eq!(code, Some(0), "{err}");
    assert!(took < HANG, "took {took:?}");
}

#[test]
fn every_step_needing_a_missing_step_is_reported_without_quadratic_suggestions() {
    let mut text = String::from("name: lost\nsteps:\n");
    for i in 0..2_000 {
        text.push_str(&format!("  step-{i}: {{ uses: set, needs: [stp-{i}] }}\n"));
    }
    let (code, err, took) = validate("lost", &text);
    assert_eq!(code, Some(1));
    assert!(took < HANG, "took {took:?}");
    assert!(err.contains("error[LB008]: step `step-0` needs `stp-0`"), "{}", &err[..2000]);
    // The first ones still get their suggestion; the budget stops the rest.
    assert!(err.contains("did you mean `step-0`?"), "{}", &err[..2000]);
    assert_eq!(err.matches("error[LB008]").count(), 500, "capped at 500 diagnostics");
    assert!(err.contains("1500 more problems in this file are not shown"), "{}", tail(&err));
}

#[test]
fn a_workflow_may_not_name_a_path_or_a_template_as_its_child() {
    for (name, child) in [("escape", "../../outside/x"), ("templated", "{{inputs.which}}")] {
        let text = format!(
            "name: {name}\ninputs: {{ which: {{ type: string }} }}\nsteps:\n  call:\n    uses: workflow\n    with: {{ workflow: \"{child}\" }}\n"
        );
        let (code, err, _) = validate(&format!("child-{name}"), &text);
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains("error[LB006]") && err.contains("is not a workflow name"), "{err}");
        assert!(err.contains(":6:"), "points at the `workflow` line: {err}");
    }
}

fn tail(text: &str) -> &str {
    &text[text.len().saturating_sub(600)..]
}

/// `/healthz` latencies while `during` runs in another thread.
fn healthz_while(api: &Api, during: impl FnOnce() + Send) -> Vec<Duration> {
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            during();
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let mut latencies = Vec::new();
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            let started = Instant::now();
            let reply = api.get("/healthz", None);
            assert_eq!(reply.status, 200);
            latencies.push(started.elapsed());
            std::thread::sleep(Duration::from_millis(10));
        }
        worker.join().unwrap();
        latencies
    })
}

#[test]
fn a_huge_file_dropped_into_the_workflows_directory_neither_stalls_nor_stops_serve() {
    let sb = Sandbox::new("big-serve-drop").with_users(&["vic"]);
    let dir = sb.path("workflows");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("small.yaml"), chain("small", 3)).unwrap();
    let mut api = Api::start(&sb);
    let latencies = healthz_while(&api, || {
        std::fs::write(dir.join("huge.yaml"), chain("huge", 25_000)).unwrap();
        std::fs::write(dir.join("max.yaml"), chain("max", 2_000)).unwrap();
        // The catalog looks every second; wait until it has reported both.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !(api.log_text().contains("LB027") && api.log_text().contains("workflows=2")) {
            assert!(Instant::now() < deadline, "no reload seen:\n{}", api.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let worst = latencies.iter().max().copied().unwrap_or_default();
    assert!(worst < Duration::from_millis(500), "healthz took {worst:?} during the reload");
    assert!(api.serve.alive(), "serve died:\n{}", api.log_text());
    let names: Vec<String> = workflow_names(&api);
    assert_eq!(names, ["max", "small"], "the huge file is left out, the others serve");
}

fn workflow_names(api: &Api) -> Vec<String> {
    let reply = api.get("/api/v1/workflows", Some("vic-token"));
    assert_eq!(reply.status, 200, "{reply:?}");
    let list = match &reply.body {
        Value::Array(items) => items.clone(),
        other => other["workflows"].as_array().cloned().unwrap_or_default(),
    };
    let mut names: Vec<String> =
        list.iter().filter_map(|w| w["name"].as_str().map(String::from)).collect();
    names.sort();
    names
}

#[test]
fn a_stored_run_whose_definition_cannot_compile_is_quarantined_and_serve_goes_on() {
    let sb = Sandbox::new("big-serve-quarantine");
    let dir = sb.path("workflows");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("small.yaml"), chain("small", 3)).unwrap();
    let doomed = sb.enqueue("small", &[]);
    // As if stored by an older lifeboat that accepted it: the run's pinned
    // definition is now a 25,000-step chain, recompiled on every claim.
    let huge = chain("small", 25_000).replace('\'', "''");
    sb.sql(&format!("UPDATE definitions SET source = '{huge}'"));
    let api = Api::start(&sb);
    let doc = sb.wait_finished(&doomed, Duration::from_secs(30));
    assert_eq!(doc["status"], "failed", "{doc:#}");
    let error = doc["error"].as_str().unwrap_or("");
    assert!(error.starts_with("quarantined:") && error.contains("LB027"), "{error}");
    // The worker goes on: a fresh definition of the same name runs.
    std::fs::write(dir.join("small.yaml"), chain("small", 4)).unwrap();
    let next = sb.enqueue("small", &[]);
    let doc = sb.wait_finished(&next, Duration::from_secs(30));
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert_eq!(api.get("/healthz", None).status, 200);
}
