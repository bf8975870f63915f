//! The `file` notification channel and `[drill]` through the real binary:
//! a run's rendered notifications arrive in a directory, one file each, in
//! order; a bad `[drill]` or `dir` is refused naming file and line.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::util::{Sandbox, eventually, stderr};

const CHANNELS: &str = "[channels.drops-json]\ntype = \"file\"\ndir = \"notifications\"\n\n\
                        [channels.drops-eml]\ntype = \"file\"\ndir = \"mail/inbox\"\nformat = \"eml\"\n";

const WORKFLOW: &str = "name: filed
notify:
  - on: [started, succeeded]
    channels: [drops-json, drops-eml]
steps:
  tell:
    uses: notify
    with:
      channels: [drops-json]
      subject: \"Failover complete: dc02 is primary\"
      body: \"dc01 is fenced.\"
";

/// The names in `dir`, sorted (hidden ones too: a temporary file left
/// behind would show).
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn notifications(doc: &Value) -> &Vec<Value> {
    doc["notifications"].as_array().unwrap_or_else(|| panic!("no notifications in {doc:#}"))
}

#[test]
fn a_run_writes_each_notification_as_a_file_in_order() {
    let sb = Sandbox::new("notify-files").config(CHANNELS);
    let workflow = sb.write("filed.yaml", WORKFLOW);

    let (code, doc) = sb.run_wait(workflow.to_str().unwrap(), &[]);

    assert_eq!(code, Some(0), "{doc:#}");
    let run = doc["id"].as_str().expect("the run id").to_string();
    let json_dir = sb.path("notifications");
    let eml_dir = sb.path("mail/inbox");
    assert!(
        eventually(Duration::from_secs(30), || names(&json_dir).len() == 3
            && names(&eml_dir).len() == 2),
        "json: {:?}, eml: {:?}",
        names(&json_dir),
        names(&eml_dir)
    );

    // Names sort in the order the run's events happened, and say what each is.
    let json = names(&json_dir);
    let suffixes: Vec<&str> = json.iter().map(|n| &n[n.find("-filed-").unwrap()..]).collect();
    assert_eq!(suffixes, ["-filed-started.json", "-filed-notify.json", "-filed-succeeded.json"]);
    let messages: Vec<Value> = json
        .iter()
        .map(|n| serde_json::from_slice(&std::fs::read(json_dir.join(n)).unwrap()).unwrap())
        .collect();
    for m in &messages {
        assert_eq!(m["run_id"], run.as_str());
        assert_eq!(m["drill"], false, "a live run is not marked a drill");
        assert_eq!(m["data"]["run"]["mode"], "live");
    }
    assert_eq!(messages[0]["subject"], "[P1] Recovery started: filed is running (filed)");
    assert_eq!(messages[1]["subject"], "Failover complete: dc02 is primary");
    assert_eq!(messages[1]["text"], "dc01 is fenced.");
    assert_eq!(messages[2]["action"], "resolve");

    let eml = names(&eml_dir);
    assert!(eml[0].ends_with("-filed-started.eml") && eml[1].ends_with("-filed-succeeded.eml"));
    let started = std::fs::read_to_string(eml_dir.join(&eml[0])).unwrap();
    assert!(
        started.contains("Subject: [P1] Recovery started: filed is running (filed)\r\n"),
        "{started}"
    );
    assert!(started.contains(&format!("X-Lifeboat-Run: {run}\r\n")), "{started}");
    assert!(started.contains("X-Lifeboat-Channel: drops-eml\r\n"), "{started}");
    assert!(started.contains("Incident ID:"), "the text part is the rendered template");

    // The run's record says where each one went.
    let doc = sb.show(&run);
    let delivered: Vec<&Value> = notifications(&doc).iter().collect();
    assert_eq!(delivered.len(), 5);
    for n in delivered {
        assert_eq!(n["status"], "delivered", "{n:#}");
        let detail = n["detail"].as_str().unwrap();
        let written = detail.strip_prefix("wrote ").expect("the path written");
        assert!(Path::new(written).is_file(), "{detail}");
    }
}

#[test]
fn a_directory_that_cannot_be_written_fails_the_notification_naming_the_channel() {
    let sb = Sandbox::new("notify-files-blocked")
        .config("[channels.drops-json]\ntype = \"file\"\ndir = \"blocked\"\n");
    sb.write("blocked", "a file where the directory should be");
    let workflow = sb.write(
        "blocked.yaml",
        "name: blocked\nsteps:\n  tell:\n    uses: notify\n    with: { channels: [drops-json], body: hi }\n",
    );

    let (code, doc) = sb.run_wait(workflow.to_str().unwrap(), &[]);

    assert_eq!(code, Some(0), "a failed notification does not fail the run: {doc:#}");
    let run = doc["id"].as_str().expect("the run id").to_string();
    let doc = sb.wait_for(&run, Duration::from_secs(30), |d| {
        notifications(d).iter().all(|n| n["status"] == "failed")
    });
    let error = notifications(&doc)[0]["error"].as_str().unwrap().to_string();
    assert!(error.contains("channel `drops-json`") && error.contains("blocked"), "{error}");
    assert!(error.contains("change `dir`"), "{error}");
}

#[test]
fn an_unknown_drill_channel_is_refused_naming_file_line_and_key() {
    let sb = Sandbox::new("notify-drill-typo")
        .config(&format!("{CHANNELS}\n[drill]\nchannels = [\"drops-jsn\"]\n"));
    let workflow = sb.write("filed.yaml", WORKFLOW);

    let out = sb.lifeboat(&["validate", workflow.to_str().unwrap()]);

    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    let lines = std::fs::read_to_string(sb.path("lifeboat.toml")).unwrap();
    let line = lines.lines().position(|l| l.contains("drops-jsn")).unwrap() + 1;
    assert!(
        err.contains(&format!(
            "lifeboat.toml:{line}:13: invalid configuration: drill.channels: unknown channel \
             `drops-jsn`; did you mean `drops-json`?"
        )),
        "{err}"
    );
}

#[test]
fn a_file_channel_dir_climbing_out_with_dot_dot_is_refused_at_load() {
    let sb = Sandbox::new("notify-dotdot")
        .config("[channels.drops-json]\ntype = \"file\"\ndir = \"../../elsewhere\"\n");
    let workflow = sb.write("filed.yaml", "name: f\nsteps:\n  a:\n    uses: set\n    with: {}\n");

    let out = sb.lifeboat(&["validate", workflow.to_str().unwrap()]);

    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("channels.drops-json.dir") && err.contains("`..`"), "{err}");
}

/// A drill started by `lifeboat drill` is marked from the run's stored mode
/// and routed to `[drill] channels`: the live channel's directory stays
/// empty, the drill channel gets every message, `[DRILL]` in its subject.
#[test]
fn a_drill_notifies_only_the_drill_channels_marked_as_a_drill() {
    let config = format!(
        "{CHANNELS}\n[channels.drill-box]\ntype = \"file\"\ndir = \"drills\"\n\n\
         [drill]\nchannels = [\"drill-box\"]\n"
    );
    let sb = Sandbox::new("notify-drill").config(&config);
    let workflow = sb.write("filed.yaml", WORKFLOW);

    let out = sb.lifeboat(&["drill", workflow.to_str().unwrap(), "--wait", "--json"]);

    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let drill_dir = sb.path("drills");
    // One message per live channel it stands in for: started and succeeded
    // to drops-json and drops-eml, the step's to drops-json.
    assert!(
        eventually(Duration::from_secs(30), || names(&drill_dir).len() == 5),
        "{:?}",
        names(&drill_dir)
    );
    assert!(names(&sb.path("notifications")).is_empty(), "a drill reached a live channel");
    assert!(names(&sb.path("mail/inbox")).is_empty(), "a drill reached a live channel");
    let mut live = Vec::new();
    for name in names(&drill_dir) {
        let m: Value = serde_json::from_slice(&std::fs::read(drill_dir.join(&name)).unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(m["drill"], true, "{m:#}");
        assert_eq!(m["data"]["run"]["mode"], "drill", "{m:#}");
        assert!(m["subject"].as_str().unwrap().starts_with("[DRILL] "), "{m:#}");
        live.push(m["live_channel"].as_str().unwrap_or("none").to_string());
    }
    live.sort();
    assert_eq!(live, ["drops-eml", "drops-eml", "drops-json", "drops-json", "drops-json"]);
}
