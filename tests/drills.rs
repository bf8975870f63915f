//! `lifeboat drill` and `lifeboat drills` through the real binary: run
//! modes, scenarios and their verdicts, faults injected into the executor,
//! the refusal of unprotected irreversible steps, and bad input.

use std::time::Duration;

use serde_json::Value;

use crate::util::{Sandbox, attempts, stderr, stdout, step};

/// `a` changes the world and has a rollback that records itself; `flaky`
/// retries; `cutover` is irreversible and skipped in a drill; `page` is
/// replaced by a `set` in a drill; the output tells which mode ran.
const RUNBOOK: &str = r#"
name: failover
objectives: { rto: 1m }
outputs: { mode: "{{steps.mark.outputs.mode}}" }
steps:
  mark: { uses: set, with: { mode: "{{run.mode}}" } }
  a:
    uses: shell
    needs: [mark]
    with: { command: [sh, -c, "echo a >> ran"] }
    rollback: { uses: shell, with: { command: [sh, -c, "echo undo-a >> ran"] } }
  flaky:
    uses: shell
    needs: [a]
    retry: { attempts: 2, delay: 100ms, jitter: false }
    with: { command: [sh, -c, "echo flaky >> ran"] }
  cutover:
    uses: shell
    needs: [flaky]
    irreversible: true
    drill: skip
    with: { command: [sh, -c, "echo cutover >> ran"] }
  page:
    uses: shell
    needs: [cutover]
    with: { command: [sh, -c, "echo paged-for-real >> ran"] }
    drill: { uses: set, with: { paged: "no" } }
drills:
  happy:
    expect:
      status: succeeded
      steps: { cutover: skipped, page: succeeded }
      outputs: { mode: drill }
      recovery_within: 30s
  wrong:
    expect:
      steps: { cutover: succeeded }
"#;

fn sandbox(name: &str, text: &str) -> (Sandbox, String) {
    let sb = Sandbox::new(name);
    let file = sb.write("failover.yaml", text).display().to_string();
    (sb, file)
}

/// `drill … --wait --json`: (exit code, the final run document).
fn drill_wait(sb: &Sandbox, args: &[&str]) -> (Option<i32>, Value) {
    let mut all = vec!["drill"];
    all.extend(args);
    all.extend(["--wait", "--json"]);
    let out = sb.lifeboat(&all);
    let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("`drill --wait --json` printed no JSON ({e}):\n{}{}", stdout(&out), stderr(&out))
    });
    (out.status.code(), doc)
}

#[test]
fn a_scenario_that_holds_passes_skips_and_substitutes_and_is_listed_as_passed() {
    let (sb, file) = sandbox("drill-pass", RUNBOOK);
    let (code, doc) = drill_wait(&sb, &[&file, "--scenario", "happy"]);
    assert_eq!(code, Some(0), "{doc:#}");
    assert_eq!((doc["mode"].as_str(), doc["scenario"].as_str()), (Some("drill"), Some("happy")));
    assert_eq!(doc["outputs"]["mode"], "drill", "{{run.mode}} reads the mode");
    assert_eq!(doc["verdict"]["passed"], true, "{doc:#}");
    assert_eq!(doc["verdict"]["expectations"].as_array().unwrap().len(), 5, "{doc:#}");
    // Skipped and substituted steps never touched the world.
    assert_eq!(sb.lines("ran"), ["a", "flaky"]);
    assert_eq!(step(&doc, "cutover")["status"], "skipped");
    assert_eq!(step(&doc, "page")["outputs"]["paged"], "no");

    let out = sb.ok(&["drills", "failover", "--json"]);
    let history: Value = serde_json::from_slice(&out.stdout).unwrap();
    let d = &history["drills"][0];
    assert_eq!((d["run"].as_str(), d["scenario"].as_str()), (doc["id"].as_str(), Some("happy")));
    assert_eq!((d["passed"].as_bool(), d["rto_ms"].as_u64()), (Some(true), Some(60_000)));
    assert!(d["recovery_ms"].as_i64().is_some_and(|ms| ms >= 0), "{d:#}");
    let table = stdout(&sb.ok(&["drills"]));
    assert!(
        table.lines().nth(1).is_some_and(|l| l.contains("happy") && l.contains("passed")),
        "{table}"
    );
    let runs = stdout(&sb.ok(&["runs"]));
    assert!(runs.contains(" drill "), "{runs}");
    // A live run of the same file is `live` and does everything.
    let (code, live) = sb.run_wait(&file, &[]);
    assert_eq!((code, live["mode"].as_str()), (Some(0), Some("live")), "{live:#}");
    assert!(live.get("verdict").is_none(), "{live:#}");
    assert_eq!(sb.lines("ran")[2..], ["a", "flaky", "cutover", "paged-for-real"]);
}

#[test]
fn a_wrong_expectation_fails_the_drill_with_its_expected_and_actual_line() {
    let (sb, file) = sandbox("drill-wrong", RUNBOOK);
    let out = sb.lifeboat(&["drill", &file, "--scenario", "wrong", "--wait"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    assert!(text.contains("drill verdict: FAILED"), "{text}");
    assert!(text.contains("FAIL step cutover: expected succeeded, actual skipped"), "{text}");
    let d: Value = serde_json::from_slice(&sb.ok(&["drills", "--json"]).stdout).unwrap();
    let d = &d["drills"];
    assert_eq!(
        (d[0]["status"].as_str(), d[0]["passed"].as_bool()),
        (Some("succeeded"), Some(false))
    );
}

#[test]
fn inject_fail_runs_the_real_retries_and_rollback() {
    let (sb, file) = sandbox("drill-fail", RUNBOOK);
    let (code, doc) = drill_wait(&sb, &[&file, "--inject", "flaky=fail"]);
    // No expectations: a drill is expected to succeed, and this one did not.
    assert_eq!(code, Some(1), "{doc:#}");
    assert_eq!(doc["status"], "rolled_back", "{doc:#}");
    let tries = attempts(&doc, "flaky");
    assert_eq!(tries.len(), 2, "both attempts, the retry included: {doc:#}");
    assert!(
        tries.iter().all(|a| a["error"].as_str().unwrap().contains("injected fault (drill): fail"))
    );
    // The fault replaced the action: `flaky` never ran; `a` was really undone.
    assert_eq!(sb.lines("ran"), ["a", "undo-a"]);
    assert_eq!(doc["verdict"]["expectations"][0]["actual"], "rolled_back", "{:#}", doc["verdict"]);
    assert_eq!(doc["drill"]["faults"][0]["fault"], "fail");
}

#[test]
fn inject_crash_on_a_non_idempotent_step_ends_in_needs_human() {
    let text =
        RUNBOOK.replace("retry: { attempts: 2, delay: 100ms, jitter: false }", "idempotent: false");
    let (sb, file) = sandbox("drill-crash", &text);
    let out = sb.ok(&["drill", &file, "--inject", "flaky=crash"]);
    let run = stdout(&out).trim().to_string();
    let _serve = sb.serve();
    let doc =
        sb.wait_for(&run, Duration::from_secs(30), |d| step(d, "flaky")["status"] == "needs_human");
    let tries = attempts(&doc, "flaky");
    assert_eq!(tries.len(), 1, "{doc:#}");
    assert_eq!(tries[0]["status"], "interrupted");
    assert!(
        tries[0]["error"].as_str().unwrap().contains("injected fault (drill): crash"),
        "{doc:#}"
    );
    assert_eq!(sb.lines("ran"), ["a"], "the crashed attempt never ran its action");
    let logs = stdout(&sb.ok(&["logs", &run]));
    assert!(logs.contains("fault_injected"), "{logs}");
}

#[test]
fn a_drill_killed_mid_step_resumes_and_still_gets_its_verdict() {
    let (sb, file) = sandbox("drill-kill", RUNBOOK);
    let sb =
        sb.env("LIFEBOAT_EXECUTOR__LEASE", "1500ms").env("LIFEBOAT_EXECUTOR__HEARTBEAT", "300ms");
    let out = sb.ok(&["drill", &file, "--scenario", "happy", "--inject", "flaky=delay:2s"]);
    let run = stdout(&out).trim().to_string();
    let mut first = sb.serve();
    sb.wait_for(&run, Duration::from_secs(30), |d| step(d, "flaky")["status"] == "running");
    first.kill9();
    let _second = sb.serve();
    let doc = sb.wait_finished(&run, Duration::from_secs(60));
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert_eq!(doc["verdict"]["passed"], true, "{doc:#}");
    let tries = attempts(&doc, "flaky");
    assert_eq!(
        tries[0]["status"], "interrupted",
        "the kill interrupted the delayed attempt: {doc:#}"
    );
}

#[test]
fn an_irreversible_step_without_drill_refuses_naming_its_file_and_line() {
    let text = RUNBOOK.replace("    drill: skip\n", "");
    let (sb, file) = sandbox("drill-irreversible", &text);
    let out = sb.lifeboat(&["drill", &file]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let line = text.lines().position(|l| l == "  cutover:").unwrap() + 1;
    let at = format!(
        "step `cutover` ({file}:{line}:3) is `irreversible: true` and has no `drill:` entry"
    );
    assert!(err.contains(&at), "{err}");
    assert!(sb.runs().is_empty(), "nothing started");
    let plan = stdout(&sb.ok(&["plan", &file]));
    assert!(plan.contains(&format!("a drill is refused: {at}")), "{plan}");
}

#[test]
fn unknown_steps_scenarios_and_faults_get_a_did_you_mean() {
    let (sb, file) = sandbox("drill-bad-input", RUNBOOK);
    for (args, says) in [
        (
            vec!["--inject", "flakey=fail"],
            "`failover` has no step `flakey` (did you mean `flaky`?)",
        ),
        (vec!["--scenario", "hapy"], "has no drill scenario `hapy` (did you mean `happy`?)"),
        (vec!["--inject", "flaky=crsh"], "unknown fault `crsh` (did you mean `crash`?)"),
        (vec!["--inject", "flaky"], "write STEP=FAULT"),
    ] {
        let mut all = vec!["drill", file.as_str()];
        all.extend(args);
        let out = sb.lifeboat(&all);
        assert_eq!(out.status.code(), Some(1), "{all:?}");
        assert!(stderr(&out).contains(says), "{all:?}: {}", stderr(&out));
    }
    // In the file: at its line and column, with a suggestion.
    let text = RUNBOOK.replace("steps: { cutover: succeeded }", "steps: { cutovr: succeded }");
    let bad = sb.write("bad.yaml", &text).display().to_string();
    let err = stderr(&sb.lifeboat(&["drill", &bad]));
    assert!(
        err.contains("error[LB030]: drill scenario `wrong` expects a status of `cutovr`"),
        "{err}"
    );
    assert!(
        err.contains("did you mean `cutover`?") && err.contains("did you mean `succeeded`?"),
        "{err}"
    );
    let line = text.lines().position(|l| l.contains("cutovr")).unwrap() + 1;
    assert!(err.contains(&format!("bad.yaml:{line}:")), "{err}");
    assert!(sb.runs().is_empty(), "nothing started");
}

#[test]
fn plan_lists_what_a_drill_runs_skips_and_substitutes() {
    let (sb, file) = sandbox("drill-plan", RUNBOOK);
    let plan: Value = serde_json::from_slice(&sb.ok(&["plan", &file, "--json"]).stdout).unwrap();
    let d = &plan["drill"];
    assert_eq!(d["run"], serde_json::json!(["mark", "a", "flaky"]));
    assert_eq!(d["skip"], serde_json::json!(["cutover"]));
    assert_eq!(d["substitute"], serde_json::json!([{"step": "page", "uses": "set"}]));
    assert_eq!(d["scenarios"], serde_json::json!(["happy", "wrong"]));
    assert_eq!(d["refused"], serde_json::json!([]));
}

const GATED: &str = r#"
name: gated
notify:
  - on: [approval_requested, succeeded]
    channels: [hook]
steps:
  gate: { uses: approval, with: { approvers: [bob] } }
  after: { uses: set, needs: [gate], with: { done: "yes" } }
drills:
  approved:
    expect:
      status: succeeded
      steps: { gate: succeeded }
      notified: [approval_requested, succeeded]
"#;

/// Runs `python3 -c SCRIPT` on `stdin`; its standard output.
fn python(script: &str, stdin: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "python3: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_report_of_a_drill_is_evidence_verdict_decisions_notifications_junit_and_audit() {
    let sb = Sandbox::new("drill-evidence")
        .with_users(&["bob"])
        .config("[channels.hook]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\n");
    let file = sb.write("gated.yaml", GATED).display().to_string();
    sb.ok(&["migrate"]);
    let _serve = sb.serve();
    let mut cmd = sb.command(&["drill", &file, "--scenario", "approved"]);
    cmd.env("USER", "alice");
    let out = crate::util::output_within(cmd, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let run = stdout(&out).trim().to_string();
    sb.wait_for(&run, Duration::from_secs(30), |d| step(d, "gate")["status"] == "waiting");
    let mut cmd = sb.command(&["approve", &run, "gate"]);
    cmd.env("USER", "bob").env_remove("LOGNAME");
    let out = crate::util::output_within(cmd, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    let doc = sb.wait_finished(&run, Duration::from_secs(30));
    assert_eq!(doc["verdict"]["passed"], true, "{doc:#}");

    let report: Value =
        serde_json::from_slice(&sb.ok(&["report", &run, "--format", "json"]).stdout).unwrap();
    assert_eq!(report["drill"]["scenario"], "approved", "{report:#}");
    assert_eq!(report["drill"]["started_by"], "alice", "{report:#}");
    assert_eq!(report["drill"]["verdict"]["passed"], true);
    let decisions = report["decisions"].as_array().unwrap();
    assert!(
        decisions
            .iter()
            .any(|d| d["decision"] == "approved" && d["by"] == serde_json::json!(["bob"])),
        "{decisions:#?}"
    );
    let events: Vec<&str> = report["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["event"].as_str())
        .collect();
    assert!(events.contains(&"approval_requested") && events.contains(&"succeeded"), "{events:?}");

    let text = stdout(&sb.ok(&["report", &run]));
    assert!(text.contains("drill verdict: PASSED") && text.contains("decision: "), "{text}");
    let html = sb.path("report.html").display().to_string();
    sb.ok(&["report", &run, "--html", &html]);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("Drill verdict") && page.contains("<h2>Decisions</h2>"), "{page}");
    assert!(page.contains("approved on gate by"), "{page}");

    let junit = stdout(&sb.ok(&["report", &run, "--format", "junit"]));
    let parsed = python(
        "import sys, xml.etree.ElementTree as E\n\
         root = E.fromstring(sys.stdin.read())\n\
         assert root.tag == 'testsuites', root.tag\n\
         for s in root.iter('testsuite'):\n\
         \x20   cases = s.findall('testcase')\n\
         \x20   assert int(s.get('tests')) == len(cases)\n\
         \x20   assert int(s.get('failures')) == sum(1 for c in cases if c.find('failure') is not None)\n\
         \x20   print(s.get('name'), s.get('tests'), s.get('failures'), ','.join(c.get('name') for c in cases))\n",
        &junit,
    );
    assert_eq!(
        parsed.trim(),
        "gated/approved 4 0 status,step gate,notified approval_requested,notified succeeded"
    );

    let audit: Value = serde_json::from_slice(&sb.ok(&["audit", "list", "--json"]).stdout).unwrap();
    let actions: Vec<(&str, &str)> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["run_id"] == run.as_str())
        .map(|e| (e["action"].as_str().unwrap(), e["actor"].as_str().unwrap_or("")))
        .collect();
    assert!(actions.contains(&("drill", "alice")), "{actions:?}");
    assert!(actions.iter().any(|(a, _)| *a == "drill_verdict"), "{actions:?}");
    sb.ok(&["audit", "verify"]);
}

#[test]
fn a_failed_drills_junit_has_its_failure_with_expected_and_actual() {
    let (sb, file) = sandbox("drill-junit-fail", RUNBOOK);
    let (_, doc) = drill_wait(&sb, &[&file, "--scenario", "wrong"]);
    let run = doc["id"].as_str().unwrap();
    let junit = stdout(&sb.ok(&["report", run, "--format", "junit"]));
    let parsed = python(
        "import sys, xml.etree.ElementTree as E\n\
         root = E.fromstring(sys.stdin.read())\n\
         for c in root.iter('testcase'):\n\
         \x20   f = c.find('failure')\n\
         \x20   print(c.get('name'), '|', f.get('message') if f is not None else 'ok')\n",
        &junit,
    );
    assert_eq!(
        parsed.lines().collect::<Vec<_>>(),
        ["step cutover | expected succeeded, actual skipped"]
    );
}

#[test]
fn the_api_starts_a_drill_and_lists_the_drill_history() {
    let sb = Sandbox::new("drill-api").with_users(&["alice", "vic"]);
    std::fs::create_dir_all(sb.path("workflows")).unwrap();
    sb.write("workflows/failover.yaml", RUNBOOK);
    let api = crate::util::Api::start(&sb);
    let start = |body: Value, token: &str| {
        api.post("/api/v1/workflows/failover/drills", Some(token), &body)
    };
    let bad = start(serde_json::json!({"inject": ["flakey=fail"]}), "alice-token");
    assert_eq!(bad.status, 422, "{bad:?}");
    assert!(bad.body["error"]["message"].as_str().unwrap().contains("did you mean `flaky`?"));
    assert_eq!(start(serde_json::json!({"scenario": "happy"}), "vic-token").status, 403);
    let made = start(serde_json::json!({"scenario": "happy"}), "alice-token");
    assert_eq!(made.status, 201, "{made:?}");
    let id = made.body["id"].as_str().unwrap().to_string();
    let doc = api.wait_run("vic-token", &id, Duration::from_secs(30), |d| d["verdict"].is_object());
    assert_eq!(
        (doc["mode"].as_str(), doc["verdict"]["passed"].as_bool()),
        (Some("drill"), Some(true))
    );
    let history = api.get("/api/v1/drills?workflow=failover", Some("vic-token"));
    assert_eq!(history.status, 200, "{history:?}");
    let d = &history.body[0];
    assert_eq!((d["run"].as_str(), d["scenario"].as_str()), (Some(id.as_str()), Some("happy")));
    assert_eq!((d["passed"].as_bool(), d["started_by"].as_str()), (Some(true), Some("alice")));
    let none = api.get("/api/v1/drills?workflow=other", Some("vic-token"));
    assert_eq!(none.body, serde_json::json!([]));
}

/// A scenario's people: bob approves the approval and carol acknowledges
/// the page as soon as each waits, checked and audited as those people;
/// vic, who is no approver, is refused (saying why) and the approval times
/// out as if nobody had answered.
const ANSWERED: &str = r#"
name: answered
outputs:
  approved_by: "{{json steps.ask.outputs.approved_by}}"
  acked_by: "{{steps.page.outputs.acked_by}}"
steps:
  ask: { uses: approval, with: { approvers: [leads], timeout: 1s } }
  page:
    uses: escalate
    needs: [ask]
    with: { tiers: [{ channels: [log], ack_within: 1m }] }
drills:
  answered:
    people:
      ask: { by: bob, comment: go }
      page: { by: carol }
    expect: { status: succeeded, outputs: { approved_by: "~bob", acked_by: carol } }
  not-an-approver:
    people:
      ask: { by: vic }
    expect: { status: failed, steps: { ask: failed, page: cancelled } }
"#;

#[test]
fn a_scenarios_people_answer_as_themselves_and_the_wrong_one_is_refused() {
    let sb = Sandbox::new("drill-people").config(&format!(
        "{}[groups]\nleads = [\"bob\"]\n\n[channels.log]\ntype = \"file\"\ndir = \"out\"\n",
        crate::util::users_toml(&["bob", "carol", "vic"])
    ));
    let file = sb.write("answered.yaml", ANSWERED).display().to_string();
    let (code, doc) = drill_wait(&sb, &[&file, "--scenario", "answered"]);
    assert_eq!((code, doc["verdict"]["passed"].as_bool()), (Some(0), Some(true)), "{doc:#}");
    let audit: Vec<Value> =
        serde_json::from_slice(&sb.ok(&["audit", "list", "--json"]).stdout).expect("audit JSON");
    let applied: Vec<(&str, &str)> = audit
        .iter()
        .filter(|e| e["action"].as_str().is_some_and(|a| a.ends_with("_applied")))
        .map(|e| (e["action"].as_str().unwrap(), e["actor"].as_str().unwrap()))
        .collect();
    assert_eq!(applied.len(), 2, "{audit:#?}");
    assert!(applied.contains(&("approve_applied", "bob")), "{applied:?}");
    assert!(applied.contains(&("ack_applied", "carol")), "{applied:?}");

    let (code, doc) = drill_wait(&sb, &[&file, "--scenario", "not-an-approver"]);
    assert_eq!((code, doc["verdict"]["passed"].as_bool()), (Some(0), Some(true)), "{doc:#}");
    let audit: Vec<Value> =
        serde_json::from_slice(&sb.ok(&["audit", "list", "--json"]).stdout).expect("audit JSON");
    let refused = audit
        .iter()
        .find(|e| e["action"] == "approve_refused")
        .unwrap_or_else(|| panic!("vic's approval is refused: {audit:#?}"));
    assert_eq!(refused["actor"], "vic");
    let why = refused["payload"]["reason"].as_str().unwrap_or_default();
    assert!(why.contains("vic"), "the refusal says why: {refused:#}");
}
