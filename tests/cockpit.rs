//! The API behind the web UI's cockpit, over real HTTP on loopback: who am
//! I (`/me`), what waits for me (`/pending`), the operator controls (pause,
//! resume, skip, mark) with their audit entries, a step in full (attempts
//! with stdout), run counts and search, the 422's per-field answer, every
//! run's event stream, and the timeline and catalog pictures. SQLite, or
//! Postgres with LIFEBOAT_E2E_BACKEND=postgres.

use std::time::Duration;

use serde_json::{Value, json};

use crate::util::{Api, Sandbox, follow, until};

const OLGA: &str = "olga-token"; // operator and approver
const BOB: &str = "bob-token"; // approver
const VIC: &str = "vic-token"; // viewer

/// Prints to stdout, waits at a two-approval gate, then promotes.
const GATED: &str = r#"name: gated
objectives: { rto: 10m }
inputs:
  site: { type: string, default: dc1, pattern: "^dc[0-9]+$" }
  replicas: { type: integer, default: 2 }
steps:
  check:
    uses: shell
    with: { command: [echo, "lag 0 bytes"] }
  gate:
    needs: [check]
    uses: approval
    with: { approvers: [olga, bob, carol], min_approvals: 2, exclude_requester: true, message: "promote {{inputs.site}}", timeout: 1h }
  promote:
    needs: [gate]
    uses: set
    irreversible: true
    with: { site: "{{inputs.site}}" }
"#;

fn sandbox(name: &str) -> Sandbox {
    let sb = Sandbox::new(name)
        .with_users(&["bob", "carol", "vic"])
        .with_user("olga", &["operator", "approver"]);
    std::fs::create_dir_all(sb.path("workflows")).expect("workflows dir");
    sb.write("workflows/gated.yaml", GATED);
    sb
}

/// A run of `gated` started by olga, once its gate waits.
fn waiting(api: &Api, site: &str) -> String {
    let created =
        api.post("/api/v1/workflows/gated/runs", Some(OLGA), &json!({"inputs": {"site": site}}));
    assert_eq!(created.status, 201, "{created:?}");
    let run = created.body["id"].as_str().expect("run id").to_string();
    api.wait_run(VIC, &run, Duration::from_secs(30), |d| Api::step_status(d, "gate") == "waiting");
    run
}

#[test]
fn me_and_pending_say_who_may_decide_what() {
    let sb = sandbox("cockpit-pending");
    let api = Api::start(&sb);
    let me = api.get("/api/v1/me", Some(OLGA));
    assert_eq!(me.status, 200, "{me:?}");
    assert_eq!(
        me.body,
        json!({"name": "olga", "roles": ["operator", "approver"], "may": {"read": true, "operate": true, "decide": true}})
    );
    assert_eq!(api.get("/api/v1/me", Some(VIC)).body["may"]["operate"], false);
    assert_eq!(api.get("/api/v1/me", None).status, 401);

    let run = waiting(&api, "dc2");
    let all = api.get("/api/v1/pending", Some(OLGA)).body;
    let item = &all.as_array().expect("a list")[0];
    assert_eq!(item["run"], run.as_str());
    assert_eq!(item["step"], "gate");
    assert_eq!(item["waiting_for"], "approval");
    assert_eq!(item["may_decide"], false, "olga started it: {item:#}");
    assert!(item["why_not"].as_str().unwrap().contains("exclude_requester"), "{item:#}");
    let gate = &item["gate"];
    assert_eq!(gate["min"], 2);
    assert_eq!(gate["people"], json!(["olga", "bob", "carol"]));
    assert_eq!(gate["requester"], "olga");
    assert_eq!(gate["message"], "promote dc2");
    assert!(gate["deadline"].is_string(), "{gate:#}");
    assert_eq!(api.get("/api/v1/pending?mine=true", Some(OLGA)).body, json!([]));
    assert_eq!(api.get("/api/v1/pending?mine=true", Some(BOB)).body.as_array().unwrap().len(), 1);
    let vic = api.get("/api/v1/pending", Some(VIC)).body;
    assert!(vic[0]["why_not"].as_str().unwrap().contains("approver or admin"), "{vic:#}");

    // One approval of two: the run document shows who, and it still waits.
    let approved = api.post(
        &format!("/api/v1/runs/{run}/steps/gate/approve"),
        Some(BOB),
        &json!({"comment": "lag ok"}),
    );
    assert_eq!(approved.status, 200, "{approved:?}");
    let doc = api.wait_run(VIC, &run, Duration::from_secs(30), |d| {
        d["steps"][1]["gate"]["approvals"].as_array().is_some_and(|a| a.len() == 1)
    });
    let step = &doc["steps"][1];
    assert_eq!(step["kind"], "approval");
    assert_eq!(step["needs"], json!(["check"]));
    assert_eq!(step["gate"]["approvals"][0]["by"], "bob");
    assert_eq!(step["gate"]["approvals"][0]["comment"], "lag ok");
    assert_eq!(doc["steps"][2]["irreversible"], true);
    assert_eq!(doc["rto_ms"], 600_000);
    let bob = api.get("/api/v1/pending?mine=true", Some(BOB)).body;
    assert_eq!(bob, json!([]), "bob has approved: another person must");
}

#[test]
fn operators_pause_resume_skip_and_mark_over_the_api_and_each_is_audited() {
    let sb = sandbox("cockpit-controls");
    let api = Api::start(&sb);
    let run = waiting(&api, "dc3");
    let path = |p: &str| format!("/api/v1/runs/{run}{p}");

    let refused = api.post(&path("/pause"), Some(VIC), &json!({}));
    assert_eq!(refused.status, 403, "{refused:?}");
    assert!(refused.message().contains("operator or admin"), "{refused:?}");
    let paused = api.post(&path("/pause"), Some(OLGA), &json!({}));
    assert_eq!(paused.status, 202, "{paused:?}");
    assert_eq!(paused.body, json!({"id": run, "requested": "pause"}));
    api.wait_run(VIC, &run, Duration::from_secs(30), |d| d["paused"] == true);
    assert_eq!(api.post(&path("/resume"), Some(OLGA), &json!({})).status, 202);
    api.wait_run(VIC, &run, Duration::from_secs(30), |d| d["paused"] == false);

    let unknown = api.post(&path("/steps/gaet/skip"), Some(OLGA), &json!({}));
    assert_eq!(unknown.status, 404, "{unknown:?}");
    assert!(unknown.message().contains("did you mean `gate`"), "{unknown:?}");
    let done = api.post(&path("/steps/check/skip"), Some(OLGA), &json!({}));
    assert_eq!(done.status, 409, "{done:?}");
    assert!(done.message().contains("already succeeded"), "{done:?}");
    let bad = api.post(&path("/steps/gate/mark"), Some(OLGA), &json!({"outcome": "maybe"}));
    assert_eq!(bad.status, 400, "{bad:?}");
    assert!(bad.message().contains("field `outcome`"), "{bad:?}");

    // Break glass: the gate marked succeeded by hand; the run goes on.
    let marked = api.post(&path("/steps/gate/mark"), Some(OLGA), &json!({"outcome": "succeeded"}));
    assert_eq!(marked.status, 202, "{marked:?}");
    assert_eq!(marked.body["requested"], "mark_succeeded");
    let doc = api.wait_run(VIC, &run, Duration::from_secs(30), |d| d["status"] == "succeeded");
    assert_eq!(Api::step_status(&doc, "promote"), "succeeded");
    let ended = api.post(&path("/pause"), Some(OLGA), &json!({}));
    assert_eq!(ended.status, 409, "{ended:?}");
    assert!(ended.message().contains("already ended"), "{ended:?}");

    let out = sb.ok(&["audit", "list", "--json", "--run", &run]);
    let entries: Vec<Value> = serde_json::from_slice(&out.stdout).expect("audit list --json");
    for action in ["pause", "resume", "mark_succeeded"] {
        let e = entries
            .iter()
            .find(|e| e["action"] == action)
            .unwrap_or_else(|| panic!("no {action}: {entries:#?}"));
        assert_eq!(e["actor"], "olga");
        assert_eq!(e["payload"]["via"], "api");
    }
    let mark = entries.iter().find(|e| e["action"] == "mark_succeeded").unwrap();
    assert_eq!(mark["payload"]["was"], "waiting");
    assert_eq!(mark["step_id"], "gate");
}

#[test]
fn a_step_in_full_has_its_attempts_output_and_events() {
    let sb = sandbox("cockpit-step");
    let api = Api::start(&sb);
    let run = waiting(&api, "dc4");
    let step = api.get(&format!("/api/v1/runs/{run}/steps/check"), Some(VIC));
    assert_eq!(step.status, 200, "{step:?}");
    let attempt = &step.body["attempts"][0];
    assert_eq!(attempt["stdout"], "lag 0 bytes\n", "{step:?}");
    assert_eq!(attempt["status"], "succeeded");
    assert!(attempt["duration_ms"].is_i64(), "{attempt:#}");
    assert_eq!(step.body["kind"], "shell");
    assert_eq!(step.body["run"], run.as_str());
    let kinds: Vec<&str> = step.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"step_started") && kinds.contains(&"step_succeeded"), "{kinds:?}");
    let missing = api.get(&format!("/api/v1/runs/{run}/steps/chek"), Some(VIC));
    assert_eq!(missing.status, 404, "{missing:?}");
    assert!(missing.message().contains("did you mean `check`"), "{missing:?}");

    let timeline = api.page(
        api.client().get(api.url(&format!("/api/v1/runs/{run}/timeline.svg"))).bearer_auth(VIC),
    );
    assert_eq!(timeline.status, 200);
    assert!(timeline.header("content-type").starts_with("image/svg+xml"));
    assert!(
        timeline.text.contains("check #1") && timeline.text.contains("RTO 10m00s"),
        "{}",
        timeline.text
    );
    let graph =
        api.page(api.client().get(api.url("/api/v1/workflows/gated/graph.svg")).bearer_auth(VIC));
    assert_eq!(graph.status, 200);
    assert!(graph.text.contains("id=\"lb-step-promote\""), "{}", graph.text);
}

#[test]
fn runs_are_counted_searched_and_filtered_by_mode_and_inputs_refused_by_field() {
    let sb = sandbox("cockpit-list");
    let api = Api::start(&sb);
    let a = waiting(&api, "dc5");
    let _b = waiting(&api, "dc6");
    let count = api.get("/api/v1/runs/count", Some(VIC));
    assert_eq!(count.body, json!({"count": 2, "more": false}), "{count:?}");
    let prefix = &a[a.len() - 6..];
    let found = api.get(&format!("/api/v1/runs?q={}", prefix.to_uppercase()), Some(VIC)).body;
    assert_eq!(
        found.as_array().unwrap().len(),
        1,
        "case-insensitive substring of the id: {found:#}"
    );
    assert_eq!(found[0]["id"], a.as_str());
    assert_eq!(api.get("/api/v1/runs?q=GAT", Some(VIC)).body.as_array().unwrap().len(), 2);
    assert_eq!(
        api.get("/api/v1/runs?q=%25", Some(VIC)).body,
        json!([]),
        "`%` is a character, not a wildcard"
    );
    assert_eq!(api.get("/api/v1/runs/count?mode=drill", Some(VIC)).body["count"], 0);
    assert_eq!(api.get("/api/v1/runs/count?mode=live&q=gated", Some(VIC)).body["count"], 2);
    let bad = api.get("/api/v1/runs?mode=dril", Some(VIC));
    assert_eq!(bad.status, 400, "{bad:?}");
    assert!(bad.message().contains("query `mode`"), "{bad:?}");

    let refused = api.post(
        "/api/v1/workflows/gated/runs",
        Some(OLGA),
        &json!({"inputs": {"site": "x", "replicas": "two"}}),
    );
    assert_eq!(refused.status, 422, "{refused:?}");
    let fields = &refused.body["error"]["fields"];
    assert!(fields["inputs.site"].as_str().unwrap().contains("pattern"), "{refused:?}");
    assert!(fields["inputs.replicas"].as_str().is_some(), "{refused:?}");
    assert_eq!(api.get("/api/v1/runs/count", Some(VIC)).body["count"], 2, "nothing started");

    let list = api.get("/api/v1/workflows", Some(VIC)).body;
    assert_eq!(list[0]["last_run"]["id"], _b.as_str(), "{list:#}");
}

#[test]
fn every_runs_events_stream_from_now_and_resume_after_last_event_id() {
    let sb = sandbox("cockpit-events");
    let api = Api::start(&sb);
    let before = waiting(&api, "dc7");
    let open = || api.client().get(api.url("/api/v1/events")).bearer_auth(VIC);
    let response = open().send().expect("event stream");
    assert_eq!(response.status(), 200);
    let rx = follow(response);
    let run = waiting(&api, "dc8");
    let events = until(&rx, &run, "approval_requested");
    assert!(events.iter().all(|e| e.2["run"] != before.as_str()), "from now on: {events:?}");
    assert!(events.iter().any(|e| e.1 == "started" && e.2["run"] == run.as_str()), "{events:?}");
    let ids: Vec<i64> = events.iter().map(|e| e.0).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    // Resumed after the first of them: the rest again, nothing before.
    let resumed =
        follow(open().header("Last-Event-ID", ids[0].to_string()).send().expect("stream"));
    let again = until(&resumed, &run, "approval_requested");
    assert_eq!(again.iter().map(|e| e.0).collect::<Vec<_>>(), ids[1..].to_vec());
    assert_eq!(api.get("/api/v1/events", None).status, 401);
    let bad = api.send(
        api.client().get(api.url("/api/v1/events")).bearer_auth(VIC).header("Last-Event-ID", "x"),
    );
    assert_eq!(bad.status, 400, "{bad:?}");
}
