//! `lifeboat serve` over real HTTP on loopback: webhooks (Alertmanager and
//! signed JSON), the REST API with users and roles, event streams, health
//! and metrics. Each test starts its own server on a fresh port with its
//! own database (SQLite, or Postgres with LIFEBOAT_E2E_BACKEND=postgres).

use std::time::Duration;

use serde_json::{Value, json};

use crate::util::{
    Api, Sandbox, alertmanager_payload, events_of, follow, is_terminal, until, users_toml,
};

const HOOK_TOKEN: &str = "hook-token-123";
const HMAC_SECRET: &str = "hmac-secret-xyz";
const ALICE: &str = "alice-token"; // operator
const VIC: &str = "vic-token"; // viewer
const BOB: &str = "bob-token"; // approver
const ROOT: &str = "root-token"; // admin

/// The users of every test here (from `util::USERS`).
const USERS: &[&str] = &["alice", "vic", "bob", "root"];

const HOOKS: &str = r#"
[hooks.alertmanager]
format = "alertmanager"
bearer_token_env = "LIFEBOAT_HOOK_TOKEN"
[hooks.signed]
format = "json"
hmac_secret_env = "LIFEBOAT_HOOK_SECRET"
"#;

/// Started by a SiteDown alert; waits at an approval gate (so it stays active).
const SITE_DOWN: &str = r#"name: site-down
inputs:
  site: { type: string, required: true, pattern: "^dc[0-9]+$" }
  severity: { type: string, enum: [P0, P1], default: P1 }
triggers:
  - webhook: alertmanager
    match: { alertname: SiteDown, site: "~dc[0-9]+|bad.*" }
    inputs: { site: "{{alert.labels.site}}", severity: P0 }
    cancel_on_resolve: true
steps:
  gate:
    uses: approval
    with: { approvers: [bob] }
  done:
    needs: [gate]
    uses: set
    with: { site: "{{inputs.site}}" }
"#;

/// Started by a signed JSON event, deduplicated by the event's id.
const INCIDENT: &str = r#"name: incident
inputs:
  service: { type: string, required: true }
triggers:
  - webhook: signed
    match: { type: incident }
    inputs: { service: "{{event.service}}" }
    dedupe: "{{event.id}}"
steps:
  gate:
    uses: approval
    with: { approvers: [bob] }
"#;

const QUICK: &str = "name: quick\ninputs:\n  n: { type: integer, default: 1 }\nsteps:\n  a: { uses: set, with: { n: \"{{inputs.n}}\" } }\n  b: { needs: [a], uses: set, with: { ok: \"yes\" } }\n";

fn sandbox(name: &str) -> Sandbox {
    let sb = Sandbox::new(name)
        .with_users(USERS)
        .config(HOOKS)
        .env("LIFEBOAT_HOOK_TOKEN", HOOK_TOKEN)
        .env("LIFEBOAT_HOOK_SECRET", HMAC_SECRET);
    std::fs::create_dir_all(sb.path("workflows")).expect("workflows dir");
    sb.write("workflows/site-down.yaml", SITE_DOWN);
    sb.write("workflows/incident.yaml", INCIDENT);
    sb.write("workflows/quick.yaml", QUICK);
    sb
}

/// A run of `site-down` for `site`, started by alice and waiting at its gate.
fn waiting_at_gate(api: &Api, site: &str) -> String {
    let inputs = json!({"inputs": {"site": site}});
    let started = api.post("/api/v1/workflows/site-down/runs", Some(ALICE), &inputs);
    assert_eq!(started.status, 201, "{started:?}");
    let id = started.body["id"].as_str().expect("run id").to_string();
    api.wait_run(VIC, &id, Duration::from_secs(30), |d| Api::step_status(d, "gate") == "waiting");
    id
}

fn alert(api: &Api, status: &str, fingerprint: &str, site: &str) -> crate::util::Reply {
    let body = alertmanager_payload(
        status,
        &[(fingerprint, json!({"alertname": "SiteDown", "site": site}))],
    );
    api.post("/hooks/alertmanager", Some(HOOK_TOKEN), &body)
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list of ids: {v}"))
        .iter()
        .map(|i| i.as_str().expect("id").to_string())
        .collect()
}

fn signed(api: &Api, body: &[u8], at: i64, secret: &str) -> crate::util::Reply {
    let signature = lifeboat_notify::signature::sign(secret.as_bytes(), at, body);
    api.send(
        api.client()
            .post(api.url("/hooks/signed"))
            .header("Content-Type", "application/json")
            .header("X-Lifeboat-Signature", signature)
            .body(body.to_vec()),
    )
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[test]
fn serve_answers_health_readiness_and_metrics_without_a_token() {
    let sb = sandbox("serve-health");
    let api = Api::start(&sb);
    let health = api.get("/healthz", None);
    assert_eq!((health.status, &health.body["status"]), (200, &json!("ok")));
    let ready = api.get("/readyz", None);
    assert_eq!(ready.status, 200, "{ready:?}");
    assert_eq!(alert(&api, "firing", "m1", "dc01").status, 202);
    let metrics = api.send(api.client().get(api.url("/metrics")));
    assert_eq!(metrics.status, 200);
    let text = metrics.body.as_str().expect("metrics are text").to_string();
    // Counters fed by the executor (runs started/finished, step durations,
    // schedule fires, notifications) appear once they have a sample.
    for family in [
        "# TYPE lifeboat_runs gauge",
        "lifeboat_runs{status=\"queued\"}",
        "lifeboat_runs{status=\"waiting\"} 0",
        "# TYPE lifeboat_lease_takeovers counter",
        "lifeboat_webhook_requests_total{hook=\"alertmanager\",outcome=\"started\"} 1",
        "lifeboat_http_requests_total{method=\"GET\",route=\"/healthz\",code=\"200\"}",
        "lifeboat_http_request_duration_seconds_bucket{",
    ] {
        assert!(text.contains(family), "/metrics lacks `{family}`:\n{text}");
    }
}

#[test]
fn serve_api_refuses_missing_or_wrong_tokens_and_too_low_roles() {
    let sb = sandbox("serve-auth");
    let api = Api::start(&sb);
    let none = api.get("/api/v1/runs", None);
    assert_eq!(none.status, 401, "{none:?}");
    assert_eq!(none.body["error"]["code"], "unauthorized");
    assert_eq!(api.get("/api/v1/runs", Some("not-a-token")).status, 401);
    assert_eq!(api.get("/api/v1/runs", Some(VIC)).status, 200, "a viewer reads");
    let start = api.post("/api/v1/workflows/quick/runs", Some(VIC), &json!({}));
    assert_eq!(start.status, 403, "a viewer cannot start runs: {start:?}");
    assert!(start.message().contains("vic"), "{start:?}");
    let start = api.post("/api/v1/workflows/quick/runs", Some(BOB), &json!({}));
    assert_eq!(start.status, 403, "an approver cannot start runs: {start:?}");
    let started = api.post("/api/v1/workflows/quick/runs", Some(ALICE), &json!({}));
    assert_eq!(started.status, 201, "{started:?}");
    let id = started.body["id"].as_str().unwrap().to_string();
    let approve = api.post(&format!("/api/v1/runs/{id}/steps/a/approve"), Some(ALICE), &json!({}));
    assert_eq!(approve.status, 403, "an operator cannot approve: {approve:?}");
    let cancel = api.post(&format!("/api/v1/runs/{id}/cancel"), Some(BOB), &json!({}));
    assert_eq!(cancel.status, 403, "an approver cannot cancel: {cancel:?}");
    assert_eq!(api.post("/api/v1/workflows/quick/runs", Some(ROOT), &json!({})).status, 201);
}

#[test]
fn serve_throttles_token_guessing_but_not_valid_tokens() {
    let sb = sandbox("serve-guessing");
    let api = Api::start(&sb);
    let codes: Vec<u16> =
        (0..60).map(|i| api.get("/api/v1/runs", Some(&format!("guess-{i}"))).status).collect();
    assert!(codes[..50].iter().all(|&c| c == 401), "{codes:?}");
    let limited = api.get("/api/v1/runs", Some("guess-again"));
    assert_eq!(limited.status, 429, "{limited:?}");
    assert_eq!(limited.body["error"]["code"], "rate_limited");
    assert_eq!(api.get("/api/v1/runs", Some(VIC)).status, 200, "a valid token still works");
}

#[test]
fn serve_api_lists_workflows_starts_shows_and_pages_runs() {
    let sb = sandbox("serve-api-runs");
    let api = Api::start(&sb);
    let list = api.get("/api/v1/workflows", Some(VIC));
    assert_eq!(list.status, 200);
    let names: Vec<&str> =
        list.body.as_array().unwrap().iter().map(|w| w["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["incident", "quick", "site-down"]);
    let wf = api.get("/api/v1/workflows/site-down", Some(VIC));
    assert_eq!(wf.status, 200);
    assert_eq!(wf.body["graph"]["edges"], json!([{"from": "gate", "to": "done"}]));
    assert_eq!(wf.body["graph"]["waves"], json!([["gate"], ["done"]]));
    assert_eq!(wf.body["graph"]["nodes"][0]["kind"], "approval");
    assert_eq!(wf.body["inputs"]["site"]["pattern"], "^dc[0-9]+$");
    let missing = api.get("/api/v1/workflows/site-dwn", Some(VIC));
    assert_eq!(missing.status, 404);
    assert!(missing.message().contains("site-down"), "a hint: {missing:?}");

    let bad = api.post("/api/v1/workflows/quick/runs", Some(ALICE), &json!({"inputs": {"n": "x"}}));
    assert_eq!(bad.status, 422, "{bad:?}");
    assert!(bad.message().contains("`n`"), "{bad:?}");
    let bad = api.post("/api/v1/workflows/quick/runs", Some(ALICE), &json!({"inputs": [1]}));
    assert_eq!(bad.status, 400, "{bad:?}");
    assert!(bad.message().contains("inputs"), "names the field: {bad:?}");
    let text = api.send(
        api.client()
            .post(api.url("/api/v1/workflows/quick/runs"))
            .bearer_auth(ALICE)
            .header("Content-Type", "text/plain")
            .body("n=1"),
    );
    assert_eq!(text.status, 415, "{text:?}");

    let mut started = Vec::new();
    for n in 1..=3 {
        let r = api.post("/api/v1/workflows/quick/runs", Some(ALICE), &json!({"inputs": {"n": n}}));
        assert_eq!(r.status, 201, "{r:?}");
        started.push(r.body["id"].as_str().unwrap().to_string());
    }
    let doc =
        api.wait_run(VIC, &started[2], Duration::from_secs(30), |d| d["status"] == "succeeded");
    assert_eq!(doc["inputs"]["n"], 3);
    assert_eq!(doc["steps"][1]["id"], "b");
    assert_eq!(doc["steps"][0]["attempts"].as_array().map(Vec::len), Some(1), "{doc:#}");
    let cli = sb.show(&started[2]);
    assert_eq!(cli, doc, "the API shows a run as `lifeboat show --json` does");

    let page = api.get("/api/v1/runs?workflow=quick&limit=2", Some(VIC));
    assert_eq!(page.status, 200);
    let first = page.body.as_array().unwrap();
    assert_eq!(first.len(), 2);
    assert_eq!(first[0]["id"], started[2].as_str(), "newest first");
    assert!(first[0].get("steps").is_none());
    let next =
        api.get(&format!("/api/v1/runs?workflow=quick&limit=2&before={}", started[1]), Some(VIC));
    assert_eq!(next.body.as_array().unwrap().len(), 1);
    assert_eq!(next.body[0]["id"], started[0].as_str());
    let none = api.get("/api/v1/runs?workflow=site-down", Some(VIC));
    assert_eq!(none.body, json!([]));
    assert_eq!(api.get("/api/v1/runs?status=sleeping", Some(VIC)).status, 400);
    assert_eq!(api.get("/api/v1/runs?limit=0", Some(VIC)).status, 400);
    assert_eq!(api.get("/api/v1/runs/0000-nope", Some(VIC)).status, 404);
    assert_eq!(api.get("/api/v1/nothing-here", Some(VIC)).status, 404);
}

#[test]
fn serve_api_cancels_retries_and_takes_decisions() {
    let sb = sandbox("serve-api-control");
    let api = Api::start(&sb);
    let id = waiting_at_gate(&api, "dc03");
    let early = api.post(&format!("/api/v1/runs/{id}/steps/done/approve"), Some(BOB), &json!({}));
    assert_eq!(early.status, 409, "step not waiting: {early:?}");
    let unknown = api.post(&format!("/api/v1/runs/{id}/steps/nope/approve"), Some(BOB), &json!({}));
    assert_eq!(unknown.status, 404, "{unknown:?}");
    let ack = api.post(&format!("/api/v1/runs/{id}/steps/gate/ack"), Some(BOB), &json!({}));
    assert_eq!(ack.status / 100, 4, "an approval gate is not acknowledged: {ack:?}");
    let ok = api.post(
        &format!("/api/v1/runs/{id}/steps/gate/approve"),
        Some(BOB),
        &json!({"comment": "go"}),
    );
    assert_eq!(ok.status, 200, "{ok:?}");
    let doc = api.wait_run(VIC, &id, Duration::from_secs(30), |d| d["status"] == "succeeded");
    assert_eq!(Api::step_status(&doc, "done"), "succeeded");
    let cancel = api.post(&format!("/api/v1/runs/{id}/cancel"), Some(ALICE), &json!({}));
    assert_eq!(cancel.status, 409, "a finished run cannot be cancelled: {cancel:?}");
    let retry = api.post(&format!("/api/v1/runs/{id}/retry"), Some(ALICE), &json!({"from": "dne"}));
    assert_eq!(retry.status, 400, "{retry:?}");
    assert!(retry.message().contains("`from`") && retry.message().contains("done"), "{retry:?}");
    let retry =
        api.post(&format!("/api/v1/runs/{id}/retry"), Some(ALICE), &json!({"from": "done"}));
    assert_eq!(retry.status, 202, "{retry:?}");

    let second = api
        .post("/api/v1/workflows/site-down/runs", Some(ALICE), &json!({"inputs": {"site": "dc04"}}))
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let cancel = api.post(&format!("/api/v1/runs/{second}/cancel"), Some(ALICE), &json!({}));
    assert_eq!(cancel.status, 202, "{cancel:?}");
    api.wait_run(VIC, &second, Duration::from_secs(30), |d| d["status"] == "cancelled");

    let audit = sb.ok(&["audit", "list", "--json", "--limit", "100"]);
    let entries: Value = serde_json::from_slice(&audit.stdout).expect("audit list --json");
    let entries = entries
        .as_array()
        .cloned()
        .or_else(|| entries["entries"].as_array().cloned())
        .unwrap_or_default();
    let seen: Vec<(String, String)> = entries
        .iter()
        .map(|e| {
            (e["actor"].as_str().unwrap_or("").into(), e["action"].as_str().unwrap_or("").into())
        })
        .collect();
    for want in [
        ("alice", "run"),
        ("bob", "approve_requested"),
        ("bob", "approve_applied"),
        ("alice", "retry"),
        ("alice", "cancel"),
    ] {
        assert!(
            seen.iter().any(|(a, b)| a == want.0 && b == want.1),
            "no audit entry {want:?} in {seen:?}"
        );
    }
}

#[test]
fn serve_streams_a_runs_events_and_resumes_after_last_event_id() {
    let sb = sandbox("serve-sse");
    let api = Api::start(&sb);
    let id = waiting_at_gate(&api, "dc05");
    let response = api
        .client()
        .get(api.url(&format!("/api/v1/runs/{id}/events")))
        .bearer_auth(VIC)
        .send()
        .expect("event stream");
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    // The stream is open (its head arrived): what happens now reaches it live.
    let approve = api.post(&format!("/api/v1/runs/{id}/steps/gate/approve"), Some(BOB), &json!({}));
    assert_eq!(approve.status, 200, "{approve:?}");
    let events = read_events(response);
    assert!(events.len() >= 3, "{events:?}");
    let event_ids: Vec<i64> = events.iter().map(|(id, _, _)| *id).collect();
    assert!(event_ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {event_ids:?}");
    let kinds: Vec<&str> = events.iter().map(|(_, kind, _)| kind.as_str()).collect();
    assert!(kinds.iter().any(|k| k.contains("succeeded")), "{kinds:?}");
    let last = events.last().unwrap();
    assert_eq!(last.2["run"], id.as_str());
    let doc = api.get(&format!("/api/v1/runs/{id}"), Some(VIC)).body;
    assert!(is_terminal(doc["status"].as_str().unwrap()), "the stream ended with the run");

    let resume_after = events[events.len() - 2].0;
    let resumed = api
        .client()
        .get(api.url(&format!("/api/v1/runs/{id}/events")))
        .bearer_auth(VIC)
        .header("Last-Event-ID", resume_after.to_string())
        .send()
        .expect("event stream");
    let rest = read_events(resumed);
    assert_eq!(rest.len(), 1, "only events after Last-Event-ID: {rest:?}");
    assert_eq!(rest[0].0, last.0);
    assert_eq!(api.get(&format!("/api/v1/runs/{id}/events"), None).status, 401);
}

/// Each event reaches an open stream as its worker commits it, not at the
/// stream's next look at the store (every 200 ms, for other replicas):
/// the delay from an event's own timestamp to its arrival is a few
/// milliseconds. (Polled, half the delays would exceed 100 ms.)
#[test]
fn a_streams_events_arrive_as_they_are_committed_not_at_the_next_poll() {
    let sb = sandbox("serve-sse-push");
    let steps: String = (0..8)
        .map(|i| {
            let needs = if i == 0 { String::new() } else { format!(", needs: [w{}]", i - 1) };
            format!("  w{i}: {{ uses: wait, with: {{ duration: 120ms }}{needs} }}\n")
        })
        .collect();
    sb.write("workflows/waits.yaml", &format!("name: waits\nsteps:\n{steps}"));
    let api = Api::start(&sb);
    let id = api.post("/api/v1/workflows/waits/runs", Some(ALICE), &json!({})).body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let response = api
        .client()
        .get(api.url(&format!("/api/v1/runs/{id}/events")))
        .bearer_auth(VIC)
        .send()
        .expect("event stream");
    let mut delays = Vec::new();
    for (_, kind, event) in events_of(response) {
        let arrived = chrono::Utc::now().timestamp_millis();
        let at = chrono::DateTime::parse_from_rfc3339(event["at"].as_str().unwrap()).unwrap();
        // Events committed before the stream opened arrive with its head.
        if kind == "step_succeeded" && event["step"] != "w0" {
            delays.push(arrived - at.timestamp_millis());
        }
    }
    assert_eq!(delays.len(), 7, "every later step's end arrived: {delays:?}");
    delays.sort_unstable();
    assert!(delays[3] < 60, "median delay {} ms: {delays:?}", delays[3]);
}

/// Reads an SSE stream to its end: (id, event, data) of each event.
fn read_events(response: reqwest::blocking::Response) -> Vec<(i64, String, Value)> {
    events_of(response).collect()
}

/// On Postgres an event's id is taken when it is inserted and seen when its
/// transaction commits: a slow writer's event commits after events with
/// higher ids. The stream of every run's events still sends it, in id
/// order, instead of moving past it for good.
#[test]
fn every_runs_event_stream_sends_an_event_committed_after_higher_ids_in_order() {
    if !crate::util::on_postgres() {
        eprintln!(
            "note: out-of-order commits are a Postgres matter (LIFEBOAT_E2E_BACKEND=postgres)"
        );
        return;
    }
    let sb = sandbox("serve-sse-order");
    let api = Api::start(&sb);
    let id = waiting_at_gate(&api, "dc09");
    let response =
        api.client().get(api.url("/api/v1/events")).bearer_auth(VIC).send().expect("event stream");
    let rx = follow(response);
    let slow = sb.event_in_open_transaction(&id);
    let approve = api.post(&format!("/api/v1/runs/{id}/steps/gate/approve"), Some(BOB), &json!({}));
    assert_eq!(approve.status, 200, "{approve:?}");
    api.wait_run(VIC, &id, Duration::from_secs(30), |d| is_terminal(d["status"].as_str().unwrap()));
    let slow_id = slow.commit();

    let seen = until(&rx, &id, "succeeded");
    let ids: Vec<i64> = seen.iter().map(|(n, _, _)| *n).collect();
    assert!(ids.contains(&slow_id), "event {slow_id}, committed last, was skipped: {ids:?}");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in id order: {ids:?}");
}

#[test]
fn serve_alert_starts_one_run_and_repeats_are_deduplicated_and_audited() {
    let sb = sandbox("serve-hook-dedupe");
    let api = Api::start(&sb);
    let first = alert(&api, "firing", "fp-1", "dc07");
    assert_eq!(first.status, 202, "{first:?}");
    let runs = ids(&first.body["runs"]);
    assert_eq!(runs.len(), 1);
    assert_eq!(first.body["deduplicated"], json!([]));
    let again = alert(&api, "firing", "fp-1", "dc07");
    assert_eq!(again.status, 202);
    assert_eq!(again.body["runs"], json!([]));
    assert_eq!(ids(&again.body["deduplicated"]), runs);
    let other = alert(&api, "firing", "fp-2", "dc08");
    assert_eq!(ids(&other.body["runs"]).len(), 1, "another fingerprint starts its own run");
    let unmatched = alert(&api, "firing", "fp-3", "eu-west");
    assert_eq!(
        (unmatched.status, &unmatched.body["runs"]),
        (202, &json!([])),
        "no trigger matches"
    );

    let doc = api.get(&format!("/api/v1/runs/{}", runs[0]), Some(VIC)).body;
    assert_eq!(doc["inputs"], json!({"site": "dc07", "severity": "P0"}));
    assert_eq!(doc["trigger"]["kind"], "webhook");
    assert_eq!(doc["trigger"]["payload"]["externalURL"], "http://alertmanager.example:9093");

    let audit = sb.ok(&["audit", "list", "--json", "--limit", "100"]);
    let text = String::from_utf8_lossy(&audit.stdout).to_string();
    assert!(text.contains("hook:alertmanager"), "{text}");
    assert_eq!(text.matches("\"deduplicated\"").count(), 1, "{text}");
    assert_eq!(text.matches("\"started\"").count(), 2, "{text}");
}

#[test]
fn serve_fifty_concurrent_identical_alerts_start_exactly_one_run() {
    let sb = sandbox("serve-hook-concurrent");
    let api = Api::start(&sb);
    let body = alertmanager_payload(
        "firing",
        &[("same", json!({"alertname": "SiteDown", "site": "dc09"}))],
    );
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(50));
    let replies: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|_| {
                let (barrier, body, api) = (barrier.clone(), body.clone(), &api);
                s.spawn(move || {
                    barrier.wait();
                    let r = api.post("/hooks/alertmanager", Some(HOOK_TOKEN), &body);
                    assert_eq!(r.status, 202, "{r:?}");
                    r.body
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let started: Vec<String> = replies.iter().flat_map(|r| ids(&r["runs"])).collect();
    let deduplicated: Vec<String> = replies.iter().flat_map(|r| ids(&r["deduplicated"])).collect();
    assert_eq!(started.len(), 1, "exactly one run: {replies:?}");
    assert_eq!(deduplicated.len(), 49);
    assert!(deduplicated.iter().all(|d| *d == started[0]));
    let runs = api.get("/api/v1/runs?workflow=site-down", Some(VIC)).body;
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs:#}");
}

#[test]
fn serve_resolved_alert_cancels_the_run_waiting_at_its_first_approval() {
    let sb = sandbox("serve-hook-resolved");
    let api = Api::start(&sb);
    let run = ids(&alert(&api, "firing", "fp-r", "dc11").body["runs"]).remove(0);
    api.wait_run(VIC, &run, Duration::from_secs(30), |d| Api::step_status(d, "gate") == "waiting");
    let resolved = alert(&api, "resolved", "fp-r", "dc11");
    assert_eq!(resolved.status, 202, "{resolved:?}");
    assert_eq!(resolved.body["runs"], json!([]), "a resolved alert starts nothing");
    assert_eq!(ids(&resolved.body["cancelled"]), [run.as_str()]);
    api.wait_run(VIC, &run, Duration::from_secs(30), |d| d["status"] == "cancelled");
    let again = alert(&api, "firing", "fp-r", "dc11");
    assert_eq!(ids(&again.body["runs"]).len(), 1, "the alert firing again starts a new run");
}

#[test]
fn serve_hooks_refuse_bad_requests_with_the_right_status() {
    let sb = sandbox("serve-hook-errors");
    let api = Api::start(&sb);
    let body =
        alertmanager_payload("firing", &[("e1", json!({"alertname": "SiteDown", "site": "dc01"}))]);
    let unknown = api.post("/hooks/nagios", Some(HOOK_TOKEN), &body);
    assert_eq!(unknown.status, 404, "{unknown:?}");
    assert!(!unknown.message().contains("alertmanager"), "never lists the hooks: {unknown:?}");
    assert_eq!(api.post("/hooks/alertmanager", None, &body).status, 401);
    let wrong = api.post("/hooks/alertmanager", Some("guess"), &body);
    assert_eq!((wrong.status, wrong.body["error"]["code"].as_str()), (401, Some("unauthorized")));
    let form = api.send(
        api.client()
            .post(api.url("/hooks/alertmanager"))
            .bearer_auth(HOOK_TOKEN)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body("a=b"),
    );
    assert_eq!(form.status, 415, "{form:?}");
    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(1024 * 1024 + 10));
    let large = api.send(
        api.client()
            .post(api.url("/hooks/alertmanager"))
            .bearer_auth(HOOK_TOKEN)
            .header("Content-Type", "application/json")
            .body(big),
    );
    assert_eq!(large.status, 413, "{large:?}");
    let malformed = api.send(
        api.client()
            .post(api.url("/hooks/alertmanager"))
            .bearer_auth(HOOK_TOKEN)
            .header("Content-Type", "application/json")
            .body("{\"alerts\": [ {\"status\": "),
    );
    assert_eq!(malformed.status, 400, "{malformed:?}");
    let mut typed = body.clone();
    typed["alerts"][0]["labels"]["site"] = json!(7);
    let wrong_type = api.post("/hooks/alertmanager", Some(HOOK_TOKEN), &typed);
    assert_eq!(wrong_type.status, 400, "{wrong_type:?}");
    assert!(
        wrong_type.message().contains("alerts[0].labels.site"),
        "names the field: {wrong_type:?}"
    );
    let mut status = body.clone();
    status["alerts"][0]["status"] = json!("burning");
    let bad_status = api.post("/hooks/alertmanager", Some(HOOK_TOKEN), &status);
    assert_eq!(bad_status.status, 400);
    assert!(bad_status.message().contains("alerts[0].status"), "{bad_status:?}");
    let rejected = alert(&api, "firing", "e2", "bad-site");
    assert_eq!(rejected.status, 422, "the pattern refuses the input: {rejected:?}");
    assert!(rejected.message().contains("`site`"), "names the input: {rejected:?}");
    let runs = api.get("/api/v1/runs", Some(VIC)).body;
    assert_eq!(runs, json!([]), "nothing started");
}

#[test]
fn serve_signed_json_hooks_check_the_hmac_and_its_timestamp() {
    let sb = sandbox("serve-hook-hmac");
    let api = Api::start(&sb);
    let body =
        serde_json::to_vec(&json!({"type": "incident", "id": "INC-1", "service": "db"})).unwrap();
    let first_at = now();
    let ok = signed(&api, &body, first_at, HMAC_SECRET);
    assert_eq!(ok.status, 202, "{ok:?}");
    let run = ids(&ok.body["runs"]);
    assert_eq!(run.len(), 1);
    let doc = api.get(&format!("/api/v1/runs/{}", run[0]), Some(VIC)).body;
    assert_eq!(doc["inputs"]["service"], "db");
    // Signed anew, at another second than the first (the same second would
    // be the same signature: a replay), whenever this line runs.
    let dup = signed(&api, &body, first_at - 1, HMAC_SECRET);
    assert_eq!(dup.status, 202, "{dup:?}");
    assert_eq!(ids(&dup.body["deduplicated"]), run, "same event id: deduplicated");

    let forged = signed(&api, &body, now(), "wrong-secret");
    assert_eq!(forged.status, 401, "{forged:?}");
    let stale = signed(&api, &body, now() - 600, HMAC_SECRET);
    assert_eq!(stale.status, 401, "a replayed old request: {stale:?}");
    assert!(stale.message().contains("window"), "{stale:?}");
    let altered = {
        let signature = lifeboat_notify::signature::sign(HMAC_SECRET.as_bytes(), now(), &body);
        api.send(
            api.client()
                .post(api.url("/hooks/signed"))
                .header("Content-Type", "application/json")
                .header("X-Lifeboat-Signature", signature)
                .body(br#"{"type": "incident", "id": "INC-2", "service": "evil"}"#.to_vec()),
        )
    };
    assert_eq!(altered.status, 401, "{altered:?}");
    let unsigned = api.send(
        api.client()
            .post(api.url("/hooks/signed"))
            .header("Content-Type", "application/json")
            .body(body.clone()),
    );
    assert_eq!(unsigned.status, 401);
    let not_object = signed(&api, b"[1, 2]", now(), HMAC_SECRET);
    assert_eq!(not_object.status, 400, "{not_object:?}");
    let missing = signed(&api, br#"{"type": "incident", "id": "INC-3"}"#, now(), HMAC_SECRET);
    assert_eq!(missing.status, 422, "no service: {missing:?}");
    assert!(missing.message().contains("service"), "{missing:?}");
}

#[test]
fn serve_refuses_to_start_with_a_missing_secret_naming_its_owner() {
    let sb = Sandbox::new("serve-config-errors")
        .config(&users_toml(USERS))
        .config(HOOKS)
        .env("LIFEBOAT_TOKEN_ALICE", ALICE);
    let out = sb.lifeboat(&["serve"]);
    assert_ne!(out.status.code(), Some(0));
    let err = crate::util::stderr(&out);
    assert!(err.contains("user `vic`") && err.contains("LIFEBOAT_TOKEN_VIC"), "{err}");
    assert!(err.contains("hook `alertmanager`") && err.contains("LIFEBOAT_HOOK_TOKEN"), "{err}");
    assert!(err.contains("hook `signed`") && err.contains("LIFEBOAT_HOOK_SECRET"), "{err}");
    assert!(!err.contains("user `alice`"), "alice's token is set: {err}");
}

#[test]
fn serve_stops_gracefully_on_sigterm_and_logs_json_when_asked() {
    let sb = sandbox("serve-sigterm");
    let api = Api::start_with(&sb, &["--log-format", "json", "serve"]);
    assert_eq!(alert(&api, "firing", "t1", "dc12").status, 202);
    let pid = api.serve.pid();
    let killed = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    assert!(killed.is_ok_and(|s| s.success()));
    assert!(
        crate::util::eventually(Duration::from_secs(20), || !crate::util::pid_alive(pid)),
        "serve did not stop on SIGTERM:\n{}",
        api.log_text()
    );
    let log = api.log_text();
    assert!(log.contains("lifeboat serve: stopped"), "{log}");
    assert!(api.client().get(api.url("/healthz")).send().is_err(), "no longer listening");
    let json_lines: Vec<Value> =
        log.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).collect();
    assert!(
        json_lines.iter().any(|l| l["message"].as_str().is_some_and(|m| m.contains("catalog"))),
        "tracing logs are JSON objects with --log-format json:\n{log}"
    );
}

/// `lifeboat ARGS…` against `url` instead of the sandbox's database.
fn lifeboat_on(sb: &Sandbox, url: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .arg("--database-url")
        .arg(url)
        .args(args)
        .current_dir(&sb.dir)
        .env_remove("LIFEBOAT_DATABASE_URL")
        .output()
        .expect("run lifeboat")
}

#[test]
fn exit_codes_tell_invalid_input_from_not_found_from_a_database_outage() {
    let sb = sandbox("serve-exit-codes");
    let code = |out: &std::process::Output| out.status.code();
    assert_eq!(code(&sb.lifeboat(&["runs", "--status", "bogus"])), Some(1), "invalid input");
    assert_eq!(code(&sb.lifeboat(&["show", "0000dead"])), Some(3), "no such run");
    assert_eq!(code(&sb.lifeboat(&["run", "no-such-workflow"])), Some(3), "no such workflow");
    // A database that cannot be opened (a directory where its file should be).
    std::fs::create_dir_all(sb.path("gone.db")).unwrap();
    let url = format!("sqlite://{}", sb.path("gone.db").display());
    let out = lifeboat_on(&sb, &url, &["runs"]);
    let err = crate::util::stderr(&out);
    assert_eq!(code(&out), Some(4), "database unavailable: {err}");
    assert!(err.contains("database unavailable"), "{err}");
}

/// On Postgres only: a SQLite file cannot be taken away from a running
/// server (its open connections keep the file), so the SQLite run of the
/// suite checks the CLI's side in the test above.
#[test]
fn a_database_outage_is_a_503_from_the_api_and_exit_4_from_the_cli() {
    if !crate::util::on_postgres() {
        eprintln!("note: the database outage test runs with LIFEBOAT_E2E_BACKEND=postgres");
        return;
    }
    let sb = sandbox("serve-outage");
    let api = Api::start(&sb);
    assert_eq!(api.get("/api/v1/runs", Some(ROOT)).status, 200);
    // The database goes away under the running server.
    let admin = std::env::var("LIFEBOAT_TEST_POSTGRES_URL").unwrap();
    let db = sb.url.rsplit('/').next().unwrap().split('?').next().unwrap().to_string();
    let out = std::process::Command::new("psql")
        .arg(&admin)
        .args(["-qAt", "-c", &format!("DROP DATABASE {db} WITH (FORCE)")])
        .output()
        .expect("run psql");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let reply = api.get("/api/v1/runs", Some(ROOT));
    assert_eq!(reply.status, 503, "{reply:?}\n{}", api.log_text());
    assert_eq!(reply.body["error"]["code"], "unavailable", "{reply:?}");
    let out = sb.lifeboat(&["runs"]);
    assert_eq!(out.status.code(), Some(4), "{}", crate::util::stderr(&out));
}

/// Every `Sandbox::serve` listens on a port of its own, so servers of tests
/// running at once (or of two test processes) never share one: both answer,
/// and neither waits for the other's port to be free.
#[test]
fn servers_of_two_sandboxes_listen_on_ports_of_their_own() {
    let (first, second) = (sandbox("serve-port-a"), sandbox("serve-port-b"));
    let servers = [(&first, first.serve()), (&second, second.serve())];
    assert_ne!(servers[0].1.addr(), servers[1].1.addr());
    let client = reqwest::blocking::Client::new();
    for (sb, serve) in &servers {
        let addr = serve.addr().expect("Sandbox::serve chooses the address");
        let healthy =
            || client.get(format!("http://{addr}/healthz")).send().is_ok_and(|r| r.status() == 200);
        let up = crate::util::eventually(Duration::from_secs(30), healthy);
        let logs = sb.serve_logs();
        assert!(up, "serve on {addr} did not answer:\n{logs}");
        assert!(!logs.contains("cannot listen"), "waited for a port:\n{logs}");
    }
}
