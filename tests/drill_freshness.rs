//! Drill freshness and predicted RTO through the real binary (issue #14,
//! parts 4 and 5): `objectives.drill_every` and overdue scenarios in
//! `plan` and `drills`, the measured p50/p95 beside the worst case, the
//! freshness metrics of a real `serve`, the `drill_overdue` notice written
//! once by two replicas, scheduled drills fired once per tick, and the
//! compiler's checks of `mode: drill` schedules.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::util::*;

/// `slow` takes 400 ms, more than half the 600 ms RTO.
const RUNBOOK: &str = r#"
name: fresh
objectives: { rto: 600ms, drill_every: 1d }
steps:
  quick: { uses: set, with: { x: y } }
  slow:
    uses: shell
    needs: [quick]
    with: { command: [sleep, "0.4"] }
drills:
  happy: {}
  sad: {}
"#;

fn json_of(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}):\n{}{}", stdout(out), stderr(out)))
}

#[test]
fn plan_and_drills_show_freshness_overdue_scenarios_and_measured_recovery_times() {
    let sb = Sandbox::new("fresh-plan");
    let file = sb.write("fresh.yaml", RUNBOOK).display().to_string();
    sb.ok(&["migrate"]);
    let before = json_of(&sb.ok(&["drills", &file, "--json"]));
    let f = &before["freshness"][0];
    assert_eq!((f["workflow"].as_str(), f["overdue"].as_bool()), (Some("fresh"), Some(true)));
    assert_eq!(f["scenarios"][0]["summary"], "never drilled — OVERDUE (drill_every 1d)", "{f:#}");

    let out = sb.lifeboat(&["drill", &file, "--scenario", "happy", "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    for _ in 0..3 {
        let (code, doc) = sb.run_wait(&file, &[]);
        assert_eq!(code, Some(0), "{doc:#}");
    }

    let text = stdout(&sb.ok(&["plan", &file]));
    let line = |needle: &str| {
        text.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{text}"))
    };
    assert!(
        line("  happy ").contains("last drilled") && line("  happy ").ends_with("(passed)"),
        "{text}"
    );
    assert!(line("  sad ").ends_with("never drilled — OVERDUE (drill_every 1d)"), "{text}");
    assert!(line("live runs:").ends_with("(3 runs)"), "{text}");
    assert!(line("drills:    p50").ends_with("(1 run)"), "{text}");
    assert!(
        line("⚠ step slow: p95").contains("(live) alone is more than half the RTO of 600ms"),
        "{text}"
    );
    assert!(text.contains("beside the worst case of"), "{text}");

    let plan = json_of(&sb.ok(&["plan", &file, "--json"]));
    let h = &plan["history"];
    let live = &h["measured"]["live"];
    assert_eq!(live["run"]["samples"], 3, "{h:#}");
    assert!(live["run"]["p95_ms"].as_i64().is_some_and(|ms| ms >= 400), "{h:#}");
    let slow = live["steps"].as_array().unwrap().iter().find(|s| s["step"] == "slow").unwrap();
    assert!(slow["p50_ms"].as_i64().is_some_and(|ms| ms >= 400) && slow["over_half_rto"] == true);
    let quick = live["steps"].as_array().unwrap().iter().find(|s| s["step"] == "quick").unwrap();
    assert_eq!(quick["over_half_rto"], false, "{h:#}");
    assert_eq!(h["measured"]["drill"]["run"]["samples"], 1, "{h:#}");
    assert_eq!(h["freshness"]["overdue"], true, "sad was never drilled: {h:#}");
    assert_eq!(h["freshness"]["scenarios"][0]["last"]["passed"], true, "{h:#}");
    let offline = json_of(&sb.ok(&["plan", &file, "--json", "--no-history"]));
    assert!(offline.get("history").is_none(), "{offline:#}");

    let table = stdout(&sb.ok(&["drills", &file]));
    assert!(table.contains("OVERDUE") && table.contains("(passed)"), "{table}");
}

#[test]
fn plan_without_a_database_never_creates_one() {
    let sb = Sandbox::new("fresh-plan-nodb");
    if on_postgres() {
        return; // a SQLite file's absence is what this is about
    }
    let file = sb.write("fresh.yaml", RUNBOOK).display().to_string();
    let text = stdout(&sb.ok(&["plan", &file]));
    assert!(text.contains("history: no database at"), "{text}");
    assert!(!sb.db.exists(), "plan created {}", sb.db.display());
}

fn add_workflow(sb: &Sandbox, name: &str, text: &str) {
    std::fs::create_dir_all(sb.path("workflows")).expect("workflows dir");
    sb.write(&format!("workflows/{name}.yaml"), text);
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|e| e.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

fn metric(api: &Api, series: &str) -> Option<f64> {
    let reply = api.send(api.client().get(api.url("/metrics")));
    let text = reply.body.as_str().unwrap_or_default().to_string();
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
}

const STALE: &str = "name: stale
objectives: { drill_every: 1h }
notify:
  - on: [drill_overdue]
    channels: [notices]
steps:
  a: { uses: set, with: { x: y } }
drills:
  happy: {}
";

#[test]
fn two_replicas_notice_an_overdue_drill_once_and_export_its_freshness() {
    let sb = Sandbox::new("fresh-serve")
        .config(
            "[channels.notices]\ntype = \"file\"\ndir = \"notices\"\n\n[drill]\ncheck_every = \"200ms\"\n",
        )
        .with_users(&["vic"]);
    add_workflow(&sb, "stale", STALE);
    sb.ok(&["migrate"]);
    let (a, _b) = (Api::start(&sb), Api::start(&sb));
    let dir = sb.path("notices");
    assert!(
        eventually(Duration::from_secs(30), || files(&dir).len() == 1),
        "no notice: {:?}\n{}",
        files(&dir),
        a.log_text()
    );
    // Both replicas keep looking (every 200 ms) at the same overdue period.
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(files(&dir).len(), 1, "noticed more than once: {:?}", files(&dir));
    let rows = sb.rows("SELECT CAST(COUNT(*) AS TEXT) FROM outbox WHERE event = 'drill_overdue'");
    assert_eq!(rows[0][0].as_deref(), Some("1"));
    let notice: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(&files(&dir)[0])).unwrap()).unwrap();
    assert!(notice["subject"].as_str().unwrap().contains("Drill overdue: stale"), "{notice:#}");
    assert!(
        notice["text"]
            .as_str()
            .unwrap()
            .contains("happy: never drilled — OVERDUE (drill_every 1h)"),
        "{notice:#}"
    );
    assert_eq!(notice["drill"], false, "{notice:#}");
    let audit = json_of(&sb.ok(&["audit", "list", "--json"]));
    let notices = audit.as_array().unwrap().iter().filter(|e| e["action"] == "drill_overdue");
    assert_eq!(notices.count(), 1, "{audit:#}");

    assert_eq!(metric(&a, "lifeboat_drill_overdue{workflow=\"stale\"}"), Some(1.0));
    let out = sb.lifeboat(&["drill", "stale", "--scenario", "happy", "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(metric(&a, "lifeboat_drill_overdue{workflow=\"stale\"}"), Some(0.0));
    let series = "lifeboat_drill_last_timestamp_seconds{workflow=\"stale\",scenario=\"happy\",verdict=\"passed\"}";
    let at = metric(&a, series).unwrap_or_else(|| panic!("no {series}"));
    let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    assert!(at <= now && at > now - 120.0, "{at} vs {now}");
    let vic = Some("vic-token");
    let fresh = a.get("/api/v1/drills/freshness?workflow=stale", vic);
    assert_eq!(fresh.status, 200, "{:?}", fresh.body);
    assert_eq!(fresh.body[0]["overdue"], false, "{:#}", fresh.body);
    assert!(fresh.body[0]["scenarios"][0]["summary"].as_str().unwrap().ends_with("(passed)"));
    let ui = a.page(a.client().get(a.url("/")));
    assert!(ui.text.contains("/api/v1/drills/freshness"), "the web UI shows freshness");
    let wf = a.get("/api/v1/workflows/stale", vic);
    assert_eq!(wf.body["freshness"]["scenarios"][0]["last_passed"]["passed"], true);
}

const REHEARSE: &str = r#"name: rehearse
inputs:
  at: { type: string, default: "" }
  site: { type: string, default: live-site }
triggers:
  - schedule: { cron: "* * * * *", mode: drill, scenario: happy }
    inputs: { at: "{{event.tick}}" }
steps:
  a: { uses: set, with: { at: "{{inputs.at}}", site: "{{inputs.site}}" } }
drills:
  happy:
    inputs: { site: staging }
"#;

#[test]
fn a_drill_schedule_starts_one_drill_per_tick_across_two_replicas() {
    let (sb, _clock) = Sandbox::new("fresh-sched").fast_schedule_clock(60);
    add_workflow(&sb, "rehearse", REHEARSE);
    sb.ok(&["migrate"]);
    let (mut a, mut b) = (sb.serve(), sb.serve());
    let drills =
        || sb.runs().into_iter().filter(|r| r["workflow"] == "rehearse").collect::<Vec<_>>();
    assert!(eventually(Duration::from_secs(60), || drills().len() >= 4), "{:?}", drills());
    a.kill9();
    b.kill9();
    let mut per_tick: BTreeMap<String, usize> = BTreeMap::new();
    for run in drills() {
        assert_eq!(
            (run["mode"].as_str(), run["scenario"].as_str()),
            (Some("drill"), Some("happy"))
        );
        assert_eq!(run["inputs"]["site"], "staging", "the scenario's input: {run:#}");
        assert_eq!(run["inputs"]["at"], run["trigger"]["tick"], "the trigger's input: {run:#}");
        *per_tick.entry(run["trigger"]["tick"].as_str().unwrap().to_string()).or_insert(0) += 1;
    }
    assert!(per_tick.values().all(|&n| n == 1), "a tick started two drills: {per_tick:?}");
    let listed = json_of(&sb.ok(&["schedules", "--json"]));
    assert_eq!(
        (listed[0]["mode"].as_str(), listed[0]["scenario"].as_str()),
        (Some("drill"), Some("happy"))
    );
    assert!(stdout(&sb.ok(&["schedules"])).contains("drill happy"));
    let history = json_of(&sb.ok(&["drills", "rehearse", "--json"]));
    let by = history["drills"].as_array().unwrap();
    assert!(by.iter().all(|d| d["started_by"] == "schedule:rehearse#0"), "{history:#}");
}

#[test]
fn a_drill_schedule_naming_an_unknown_scenario_is_refused_with_a_suggestion() {
    let sb = Sandbox::new("fresh-validate");
    let bad = REHEARSE.replace("scenario: happy }", "scenario: hapy }");
    let file = sb.write("rehearse.yaml", &bad).display().to_string();
    let out = sb.lifeboat(&["validate", &file]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("trigger 1: no drill scenario `hapy`"), "{err}");
    assert!(err.contains("did you mean `happy`?"), "{err}");
    let line = bad.lines().position(|l| l.contains("scenario: hapy")).unwrap() + 1;
    assert!(err.contains(&format!("{file}:{line}:")), "at its line: {err}");
    let live = REHEARSE.replace("mode: drill, ", "");
    let file = sb.write("live.yaml", &live).display().to_string();
    let err = stderr(&sb.lifeboat(&["validate", &file]));
    assert!(err.contains("trigger 1: `scenario: happy` needs `mode: drill`"), "{err}");
    let overdue = STALE.replace("objectives: { drill_every: 1h }\n", "");
    let file = sb.write("stale.yaml", &overdue).display().to_string();
    let err = stderr(&sb.lifeboat(&["validate", &file]));
    assert!(err.contains("`drill_overdue` never fires without `objectives.drill_every`"), "{err}");
}

#[test]
fn a_short_drill_every_notices_each_overdue_period_once() {
    let sb = Sandbox::new("fresh-periods").config(
        "[channels.notices]\ntype = \"file\"\ndir = \"notices\"\n\n[drill]\ncheck_every = \"100ms\"\n",
    );
    add_workflow(&sb, "stale", &STALE.replace("drill_every: 1h", "drill_every: 3s"));
    sb.ok(&["migrate"]);
    let (_a, _b) = (sb.serve(), sb.serve());
    let dir = sb.path("notices");
    // First period: never drilled.
    assert!(eventually(Duration::from_secs(30), || files(&dir).len() == 1), "{:?}", files(&dir));
    let out = sb.lifeboat(&["drill", "stale", "--scenario", "happy", "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    // Second period: the pass goes stale three seconds later.
    assert!(eventually(Duration::from_secs(30), || files(&dir).len() == 2), "{:?}", files(&dir));
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(files(&dir).len(), 2, "a period noticed twice: {:?}", files(&dir));
    let second: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(&files(&dir)[1])).unwrap()).unwrap();
    let text = second["text"].as_str().unwrap();
    assert!(
        text.contains("happy: last drilled")
            && text.contains("(passed) — OVERDUE (drill_every 3s)"),
        "{text}"
    );
    let claimed =
        sb.rows("SELECT scenario, CAST(due_at AS TEXT) FROM drill_overdue ORDER BY due_at");
    assert_eq!(claimed.len(), 2, "{claimed:?}");
    assert_eq!(claimed[0][1].as_deref(), Some("0"), "never drilled: {claimed:?}");
}
