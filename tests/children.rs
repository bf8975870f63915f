//! Child workflows are catalog names, resolved by declared name and pinned
//! when the run tree starts: editing the directory afterwards changes
//! nothing for a run already under way.

use std::time::Duration;

use crate::util::{Sandbox, step};

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
    assert_eq!(out.status.code(), Some(1));
    let err = crate::util::stderr(&out);
    assert!(err.contains("no workflow `chain`") && err.contains("crashchain"), "{err}");
    // A path still works.
    let out = sb.lifeboat(&["run", dir.join("chain.yaml").to_str().unwrap(), "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", crate::util::stderr(&out));
}
