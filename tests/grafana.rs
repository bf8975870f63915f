//! A `grafana` hook (Grafana Alerting's webhook contact point) through the
//! real `lifeboat serve`, fed the payloads Grafana documents
//! (`tests/fixtures/grafana/`): each alert starts its own run with Grafana's
//! fields in `alert.*`, a repeated alert is deduplicated by its
//! fingerprint, a resolved one cancels its run (`cancel_on_resolve`), and
//! hostile bodies get a 4xx naming the field while serve goes on.

use std::time::Duration;

use serde_json::{Value, json};

use crate::util::{Api, Sandbox, root};

const HOOK_TOKEN: &str = "grafana-hook-token";
const VIC: &str = "vic-token"; // a viewer (util::USERS)

const HOOK: &str = r#"
[hooks.grafana]
format = "grafana"
bearer_token_env = "LIFEBOAT_HOOK_TOKEN"
max_alerts = 5
"#;

/// Started by a SiteDown alert from Grafana; waits at an approval gate, so
/// it stays active for the dedupe and the cancel.
const SITE_DOWN: &str = r#"name: grafana-site-down
inputs:
  site: { type: string, required: true, pattern: "^dc[0-9]+$" }
  load: { type: string, default: "" }
  dashboard: { type: string, default: "" }
triggers:
  - webhook: grafana
    match: { alertname: SiteDown, grafana_folder: DR, site: "~dc[0-9]+" }
    inputs:
      site: "{{alert.labels.site}}"
      load: "{{alert.values.B}}"
      dashboard: "{{alert.dashboardURL}}"
    cancel_on_resolve: true
steps:
  gate:
    uses: approval
    with: { approvers: [bob] }
"#;

fn fixture(name: &str) -> Value {
    let path = root().join("tests/fixtures/grafana").join(name);
    let text = std::fs::read_to_string(&path).expect("read a Grafana fixture");
    serde_json::from_str(&text).expect("a Grafana fixture is JSON")
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list of ids: {v}"))
        .iter()
        .map(|i| i.as_str().expect("id").to_string())
        .collect()
}

fn api(name: &str) -> (Sandbox, Api) {
    let sb = Sandbox::new(name)
        .with_users(&["vic", "bob"])
        .config(HOOK)
        .env("LIFEBOAT_HOOK_TOKEN", HOOK_TOKEN);
    std::fs::create_dir_all(sb.path("workflows")).unwrap();
    sb.write("workflows/grafana-site-down.yaml", SITE_DOWN);
    let api = Api::start(&sb);
    (sb, api)
}

fn post(api: &Api, body: &Value) -> crate::util::Reply {
    api.post("/hooks/grafana", Some(HOOK_TOKEN), body)
}

#[test]
fn grafana_alerts_start_runs_deduplicate_by_fingerprint_and_cancel_on_resolve() {
    let (_sb, api) = api("grafana-hook");
    let firing = fixture("firing.json");

    let first = post(&api, &firing);
    assert_eq!(first.status, 202, "{first:?}");
    let runs = ids(&first.body["runs"]);
    assert_eq!(runs.len(), 2, "one run per alert: {first:?}");

    let doc = api.get(&format!("/api/v1/runs/{}", runs[0]), Some(VIC)).body;
    assert_eq!(
        doc["inputs"],
        json!({"site": "dc01", "load": "97.3", "dashboard": "https://grafana.example/d/sites-overview?orgId=1"}),
        "{doc:#}"
    );
    assert_eq!(doc["trigger"]["hook"], "grafana");
    assert_eq!(doc["trigger"]["fingerprint"], "c6eadffa33fcdf37");
    let payload = &doc["trigger"]["payload"];
    assert_eq!(payload["state"], "alerting");
    assert_eq!(payload["title"], "[FIRING:2] SiteDown DR (dr)");
    assert_eq!(payload["orgId"], 1);
    assert_eq!(payload["externalURL"], "https://grafana.example/");
    assert!(payload["silenceURL"].as_str().unwrap_or("").contains("matcher=site%3Ddc01"));
    let other = api.get(&format!("/api/v1/runs/{}", runs[1]), Some(VIC)).body;
    assert_eq!(other["inputs"]["site"], "dc02");
    for run in &runs {
        api.wait_run(VIC, run, Duration::from_secs(30), |d| {
            Api::step_status(d, "gate") == "waiting"
        });
    }

    // Grafana repeats a group's notification: nothing starts twice.
    let again = post(&api, &firing);
    assert_eq!(again.status, 202, "{again:?}");
    assert_eq!(again.body["runs"], json!([]), "{again:?}");
    let mut dup = ids(&again.body["deduplicated"]);
    dup.sort();
    let mut want = runs.clone();
    want.sort();
    assert_eq!(dup, want, "deduplicated by fingerprint");

    // dc01 resolves: its run is cancelled, dc02's goes on.
    let resolved = post(&api, &fixture("resolved.json"));
    assert_eq!(resolved.status, 202, "{resolved:?}");
    assert_eq!(resolved.body["runs"], json!([]), "a resolved alert starts nothing");
    assert_eq!(ids(&resolved.body["cancelled"]), [runs[0].as_str()]);
    api.wait_run(VIC, &runs[0], Duration::from_secs(30), |d| d["status"] == "cancelled");
    let still = api.get(&format!("/api/v1/runs/{}", runs[1]), Some(VIC)).body;
    assert_eq!(still["status"], "waiting", "{still:#}");

    // dc01 fires again: a new run (its old one has ended); dc02 deduplicated.
    let refire = post(&api, &firing);
    let new = ids(&refire.body["runs"]);
    assert_eq!(new.len(), 1, "{refire:?}");
    assert_ne!(new[0], runs[0]);
    assert_eq!(ids(&refire.body["deduplicated"]), [runs[1].as_str()]);
}

#[test]
fn hostile_grafana_payloads_get_a_4xx_naming_the_field_and_serve_goes_on() {
    let (_sb, mut api) = api("grafana-hostile");
    let firing = fixture("firing.json");
    let refused = |body: Value, status: u16, field: &str| {
        let reply = post(&api, &body);
        assert_eq!(reply.status, status, "{field}: {reply:?}");
        assert!(reply.message().contains(field), "names `{field}`: {reply:?}");
    };

    let mut no_alerts = firing.clone();
    no_alerts.as_object_mut().unwrap().remove("alerts");
    refused(no_alerts, 400, "alerts");
    let mut no_status = firing.clone();
    no_status["alerts"][1].as_object_mut().unwrap().remove("status");
    refused(no_status, 400, "alerts[1]");
    let mut bad_status = firing.clone();
    bad_status["alerts"][0]["status"] = json!("pending");
    refused(bad_status, 400, "alerts[0].status");
    let mut no_labels = firing.clone();
    no_labels["alerts"][0].as_object_mut().unwrap().remove("labels");
    refused(no_labels, 400, "alerts[0]");
    let mut version = firing.clone();
    version["version"] = json!("0");
    refused(version, 400, "version");
    let mut values = firing.clone();
    values["alerts"][0]["values"]["B"] = json!({"nested": [1, 2]});
    refused(values, 400, "alerts[0].values.B");
    let mut control = firing.clone();
    control["alerts"][0]["labels"]["site"] = json!("dc01\u{1b}]0;pwned\u{7}");
    refused(control, 400, "alerts[0].labels.site");
    let mut fingerprint = firing.clone();
    fingerprint["alerts"][1]["fingerprint"] = json!("f".repeat(10_000));
    refused(fingerprint, 400, "alerts[1].fingerprint");
    let mut many = firing.clone();
    let alert = many["alerts"][0].clone();
    many["alerts"] = json!(vec![alert; 6]);
    refused(many, 413, "max_alerts");
    refused(json!(["not", "an", "object"]), 400, "body");

    // Deep nesting: where a value is read, refused naming it; where nothing
    // is read, skipped without recursion. Never a stack overflow.
    let deep = |at: &str| {
        let body = format!(
            "{{\"version\": \"1\", \"alerts\": [{{\"status\": \"firing\", \"labels\": {{}}, {at}: {}{}}}]}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        api.send(
            api.client()
                .post(api.url("/hooks/grafana"))
                .bearer_auth(HOOK_TOKEN)
                .header("Content-Type", "application/json")
                .body(body),
        )
    };
    let reply = deep("\"values\": {\"B\"");
    assert_eq!(reply.status, 400, "{reply:?}");
    assert!(reply.message().contains("alerts[0].values.B"), "{reply:?}");
    let reply = deep("\"enrichments\"");
    assert_eq!((reply.status, &reply.body["runs"]), (202, &json!([])), "{reply:?}");
    // A raw control character inside a string is not JSON.
    let raw = r#"{"alerts": [{"status": "firing", "labels": {"site": "dc"#.to_string()
        + "\u{1}"
        + r#""}}]}"#;
    let reply = api.send(
        api.client()
            .post(api.url("/hooks/grafana"))
            .bearer_auth(HOOK_TOKEN)
            .header("Content-Type", "application/json")
            .body(raw),
    );
    assert_eq!(reply.status, 400, "{reply:?}");
    assert!(reply.message().contains("alerts[0].labels.site"), "{reply:?}");
    // Over 1 MiB.
    let mut huge = firing.clone();
    huge["message"] = json!("x".repeat(1024 * 1024 + 1));
    let reply = post(&api, &huge);
    assert_eq!(reply.status, 413, "{reply:?}");

    // Serve is alive and nothing was started; the real payload still works.
    assert_eq!(api.get("/healthz", None).status, 200);
    assert_eq!(api.get("/api/v1/runs", Some(VIC)).body, json!([]));
    assert!(api.serve.alive(), "serve survived");
    let ok = post(&api, &firing);
    assert_eq!((ok.status, ids(&ok.body["runs"]).len()), (202, 2), "{ok:?}");
}
