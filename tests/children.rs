//! Child workflows are catalog names, resolved by declared name and pinned
//! when the run tree starts: editing the directory afterwards changes
//! nothing for a run already under way.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::util::{Sandbox, is_terminal, step};

const PARENT: &str = "name: parent
steps:
  pause:
    uses: wait
    with: { duration: 1s }
  call:
    needs: [pause]
    uses: workflow
    with: { workflow: child }
outputs: { said: \"{{steps.call.outputs.said}}\" }
";

fn child(word: &str) -> String {
    format!(
        "name: child\nsteps:\n  say:\n    uses: set\n    with: {{ said: {word} }}\noutputs: {{ said: \"{{{{steps.say.outputs.said}}}}\" }}\n"
    )
}

#[test]
fn a_child_is_found_by_its_declared_name_and_pinned_when_the_parent_starts() {
    let sb = Sandbox::new("children-pinned");
    let dir = sb.path("workflows");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("parent.yaml"), PARENT).unwrap();
    // The file's stem is not the workflow's name: lookup is by `name:`.
    std::fs::write(dir.join("not-the-name.yaml"), child("before")).unwrap();
    let run = sb.enqueue("parent", &[]);
    std::fs::write(dir.join("not-the-name.yaml"), child("after")).unwrap();
    let _serve = sb.serve();
    let doc = sb.wait_finished(&run, Duration::from_secs(60));
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert_eq!(step(&doc, "call")["outputs"]["said"], "before", "the pinned child ran");
    // A new run pins the edited child.
    let run = sb.enqueue("parent", &[]);
    let doc = sb.wait_finished(&run, Duration::from_secs(60));
    assert_eq!(step(&doc, "call")["outputs"]["said"], "after", "{doc:#}");
}

#[test]
fn a_child_missing_when_the_parent_started_fails_its_step_saying_so() {
    let sb = Sandbox::new("children-missing");
    let dir = sb.path("workflows");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("parent.yaml"), PARENT).unwrap();
    let run = sb.enqueue("parent", &[]);
    // Added after the parent started: not pinned, so not run.
    std::fs::write(dir.join("child.yaml"), child("late")).unwrap();
    let _serve = sb.serve();
    let doc = sb.wait_finished(&run, Duration::from_secs(60));
    assert_eq!(doc["status"], "failed", "{doc:#}");
    let error = step(&doc, "call")["error"].as_str().unwrap_or("").to_string();
    assert!(
        error.contains("child workflow `child`") && error.contains("when this run started"),
        "{error}"
    );
}

#[test]
fn the_cli_finds_a_workflow_by_its_declared_name_like_the_api() {
    let sb = Sandbox::new("children-cli-name");
    let dir = sb.path("workflows");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("chain.yaml"), "name: crashchain\nsteps:\n  a: { uses: set }\n")
        .unwrap();
    let (code, doc) = sb.run_wait("crashchain", &[]);
    assert_eq!(code, Some(0), "{doc:#}");
    assert_eq!(doc["workflow"], "crashchain");
    let out = sb.lifeboat(&["run", "chain"]);
    assert_eq!(out.status.code(), Some(3), "exit 3: not found");
    let err = crate::util::stderr(&out);
    assert!(err.contains("no workflow `chain`") && err.contains("crashchain"), "{err}");
    // A path still works.
    let out = sb.lifeboat(&["run", dir.join("chain.yaml").to_str().unwrap(), "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", crate::util::stderr(&out));
}

/// Parents of the kill -9 test, and the `workflow` steps each has.
const CRASH_PARENTS: usize = 10;
const CRASH_CALLS: usize = 12;

/// A parent whose steps start children in pairs, one pair after another:
/// child starts all along the kill schedule, each a moment where a crash
/// could separate the child from its parent's state.
fn fan_out_parent() -> String {
    let mut yaml = String::from("name: fanout\nsteps:\n");
    for i in 0..CRASH_CALLS {
        let needs = if i < 2 { String::new() } else { format!("    needs: [call{}]\n", i - 2) };
        yaml +=
            &format!("  call{i}:\n{needs}    uses: workflow\n    with: {{ workflow: child }}\n");
    }
    yaml
}

#[test]
fn kill_9_while_parents_start_children_leaves_exactly_one_child_per_step() {
    let sb = Sandbox::for_crashes("children-crash");
    let seed = crate::util::crash_seed("children crash test");
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = sb.path("workflows");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("fanout.yaml"), fan_out_parent()).unwrap();
    std::fs::write(dir.join("child.yaml"), child("hi")).unwrap();
    let parents: Vec<String> = (0..CRASH_PARENTS).map(|_| sb.enqueue("fanout", &[])).collect();

    let mut serve = sb.serve();
    for kill in 0..20 {
        std::thread::sleep(Duration::from_millis(rng.u64(30..500)));
        assert!(serve.alive(), "seed {seed}: serve exited on its own before kill {kill}");
        serve.kill9();
        serve = sb.serve();
    }
    let expected = CRASH_PARENTS * (CRASH_CALLS + 1);
    let deadline = Instant::now() + Duration::from_secs(90);
    let runs = loop {
        let runs = sb.runs();
        let parents_done = parents.iter().all(|p| {
            runs.iter().any(|r| r["id"] == *p && is_terminal(r["status"].as_str().unwrap_or("")))
        });
        if parents_done && runs.iter().all(|r| is_terminal(r["status"].as_str().unwrap_or(""))) {
            break runs;
        }
        if Instant::now() >= deadline {
            let active: Vec<String> = runs
                .iter()
                .filter(|r| !is_terminal(r["status"].as_str().unwrap_or("")))
                .map(|r| format!("{} {} {}", r["id"], r["workflow"], r["status"]))
                .collect();
            let ids: Vec<&str> = runs
                .iter()
                .filter(|r| !is_terminal(r["status"].as_str().unwrap_or("")))
                .filter_map(|r| r["id"].as_str())
                .collect();
            let logs = sb.serve_logs();
            let about: Vec<&str> =
                logs.lines().filter(|l| ids.iter().any(|id| l.contains(id))).collect();
            let tail: Vec<&str> = logs.lines().rev().take(20).collect();
            panic!(
                "seed {seed}: runs still active 90s after the last kill ({} of {expected} runs \
                 exist); active:\n{}\nwhat the serve logs say of them:\n{}\nlast serve log \
                 lines (newest first):\n{}",
                runs.len(),
                active.join("\n"),
                about.join("\n"),
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    drop(serve);

    // (parent, step) -> the child runs that name it.
    let mut children: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for r in runs.iter().filter(|r| r["trigger"]["kind"] == "workflow") {
        let key = (r["trigger"]["parent"].to_string(), r["trigger"]["step"].to_string());
        children.entry(key).or_default().push(r["id"].to_string());
    }
    let mut violations = Vec::new();
    for parent in &parents {
        let doc = sb.show(parent);
        if doc["status"] != "succeeded" {
            violations.push(format!("parent {parent} ended {} ({})", doc["status"], doc["error"]));
        }
        for i in 0..CRASH_CALLS {
            let key = (format!("{parent:?}"), format!("\"call{i}\""));
            let found = children.get(&key).map_or(0, Vec::len);
            if found != 1 {
                violations.push(format!("parent {parent}: step call{i} has {found} child runs"));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "seed {seed}: {} violations:\n{}",
        violations.len(),
        violations.join("\n")
    );
    assert_eq!(runs.len(), expected, "seed {seed}: one run per parent and per step");
}
