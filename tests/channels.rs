//! The Teams and Opsgenie channels through the real binary, posting to a
//! local recording HTTP server (`util::Receiver`): the exact payloads of a
//! run's notifications, an Opsgenie alert created, acknowledged and closed
//! with an escalation and its run, retries through the durable outbox, and
//! a drill's marks (its own alias, `[DRILL]`).

use std::time::Duration;

use serde_json::{Value, json};

use crate::util::{Answer, Api, Receiver, Sandbox, eventually};

const OPSGENIE_KEY: &str = "0b9ae5b4-1f2c-4d8e-9a77-3c1d2e4f5a6b";
/// What Opsgenie answers an accepted request with.
const ACCEPTED: &str = r#"{"result":"Request will be processed","took":0.204,"requestId":"7d3e1f2a-9b8c-4d5e-8f6a-1b2c3d4e5f60"}"#;

/// `[channels.teams]` and `[channels.ops]` posting to the two receivers.
fn sandbox(name: &str, teams: &Receiver, ops: &Receiver) -> Sandbox {
    teams.answer_by_default(Answer { status: 202, headers: Vec::new(), body: String::new() });
    ops.answer_by_default(Answer { status: 202, headers: Vec::new(), body: ACCEPTED.into() });
    Sandbox::new(name)
        .config(&format!(
            "[server]\npublic_url = \"http://lifeboat.test:8080\"\n\
             [channels.teams]\ntype = \"teams\"\nwebhook_url_env = \"TEAMS_WEBHOOK_URL\"\n\
             [channels.ops]\ntype = \"opsgenie\"\napi_key_env = \"OPSGENIE_API_KEY\"\napi_url = \"{}\"\n",
            ops.url("/og"),
        ))
        .env("TEAMS_WEBHOOK_URL", &teams.url("/workflows/2f1c/triggers/manual/paths/invoke?sig=s3cr3t"))
        .env("OPSGENIE_API_KEY", OPSGENIE_KEY)
}

/// One row of the outbox: (channel, event, status, attempts).
fn outbox(sb: &Sandbox, run: &str) -> Vec<(String, String, String, u32)> {
    sb.rows(&format!(
        "SELECT channel, event, status, CAST(attempts AS TEXT) FROM outbox \
         WHERE run_id = '{run}' ORDER BY id"
    ))
    .into_iter()
    .map(|r| {
        let text = |i: usize| r[i].clone().unwrap_or_default();
        (text(0), text(1), text(2), text(3).parse().unwrap_or(0))
    })
    .collect()
}

fn outbox_settled(sb: &Sandbox, run: &str) -> Vec<(String, String, String, u32)> {
    let settled = eventually(Duration::from_secs(30), || {
        outbox(sb, run).iter().all(|(_, _, status, _)| status != "pending")
    });
    assert!(settled, "outbox of {run} still pending: {:#?}", outbox(sb, run));
    outbox(sb, run)
}

const DB_FAILOVER: &str = r#"name: db-failover
inputs:
  database: { type: string, default: orders-db }
  severity: { type: string, default: P1 }
notify:
  - on: [started, succeeded]
    channels: [teams, ops]
steps:
  promote:
    uses: set
    with: { ok: "yes" }
"#;

#[test]
fn teams_and_opsgenie_get_exact_payloads_and_the_alert_closes_with_the_run() {
    let (teams, ops) = (Receiver::start(), Receiver::start());
    let sb = sandbox("channels-exact", &teams, &ops);
    sb.write("failover.yaml", DB_FAILOVER);
    let (code, doc) = sb.run_wait("failover.yaml", &[]);
    assert_eq!(code, Some(0), "{doc:#}");
    let run = doc["id"].as_str().expect("run id").to_string();
    let link = format!("http://lifeboat.test:8080/runs/{run}");
    let started = "[P1] Recovery started: db-failover is running (orders-db)";

    // Teams: one message per event, each one Adaptive Card.
    let got = teams.wait_requests(2, Duration::from_secs(15));
    assert_eq!(got.len(), 2, "{got:#?}");
    for r in &got {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/workflows/2f1c/triggers/manual/paths/invoke?sig=s3cr3t");
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
    let bodies: Vec<Value> = got.iter().map(|r| r.json()).collect();
    let card = |b: &Value| b["attachments"][0]["content"].clone();
    let first = bodies
        .iter()
        .find(|b| card(b)["body"][0]["inlines"][0]["text"] == started)
        .unwrap_or_else(|| panic!("no Teams card for `started`: {bodies:#?}"));
    let text = card(first)["body"][2]["inlines"][0]["text"].as_str().unwrap_or("").to_string();
    assert!(text.contains("db-failover"), "the template's text: {text}");
    assert_eq!(
        *first,
        json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": null,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "msteams": {"width": "Full"},
                    "body": [
                        {"type": "RichTextBlock", "inlines": [{"type": "TextRun", "text": started, "size": "Large", "weight": "Bolder", "color": "Attention"}]},
                        {"type": "FactSet", "facts": [
                            {"title": "Severity", "value": "P1"},
                            {"title": "Workflow", "value": "db-failover"},
                            {"title": "Run", "value": run},
                            {"title": "Event", "value": "started"},
                        ]},
                        {"type": "RichTextBlock", "separator": true, "inlines": [{"type": "TextRun", "text": text}]},
                    ],
                    "actions": [{"type": "Action.OpenUrl", "title": "Open run", "url": link}],
                },
            }],
        })
    );
    let second = bodies.iter().find(|b| !std::ptr::eq(*b, first)).unwrap();
    assert_eq!(card(second)["body"][0]["inlines"][0]["color"], "Good", "{second:#}");
    assert_eq!(
        card(second)["body"][1]["facts"][4],
        json!({"title": "Status", "value": "resolved"})
    );

    // Opsgenie: the alert created for the run, then closed by alias.
    let got = ops.wait_requests(2, Duration::from_secs(15));
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(
        got.iter().all(|r| r.header("authorization") == Some(&*format!("GenieKey {OPSGENIE_KEY}")))
    );
    assert_eq!((got[0].method.as_str(), got[0].path.as_str()), ("POST", "/og/v2/alerts"));
    let create = got[0].json();
    let description = create["description"].as_str().unwrap_or("").to_string();
    assert!(description.ends_with(&format!("\n\nRun: {link}")), "{description}");
    assert_eq!(
        create,
        json!({
            "message": started,
            "alias": run,
            "description": description,
            "priority": "P2",
            "source": "lifeboat",
            "entity": "orders-db",
            "tags": ["lifeboat", "db-failover", "started"],
            "details": {
                "run_id": run,
                "workflow": "db-failover",
                "event": "started",
                "severity": "P1",
                "drill": "false",
                "link": link,
            },
        })
    );
    assert_eq!(got[1].path, format!("/og/v2/alerts/{run}/close?identifierType=alias"));
    assert_eq!(
        got[1].json(),
        json!({
            "source": "lifeboat",
            "user": "lifeboat",
            "note": "[P1] Recovery succeeded: db-failover finished (orders-db)",
        })
    );

    let rows = outbox_settled(&sb, &run);
    assert_eq!(rows.len(), 4, "{rows:#?}");
    assert!(rows.iter().all(|(_, _, s, n)| s == "delivered" && *n == 1), "{rows:#?}");
}

const PAGE: &str = r#"name: page-ops
steps:
  page:
    uses: escalate
    with:
      message: "orders-db is down"
      tiers:
        - { channels: [ops, teams], ack_within: 5m }
"#;

#[test]
fn an_opsgenie_alert_is_acknowledged_with_the_escalation_and_closed_with_the_run() {
    let (teams, ops) = (Receiver::start(), Receiver::start());
    let sb = sandbox("channels-ack", &teams, &ops).with_users(&["alice", "carol"]);
    std::fs::create_dir_all(sb.path("workflows")).unwrap();
    sb.write("workflows/page-ops.yaml", PAGE);
    let api = Api::start(&sb);
    let started = api.post("/api/v1/workflows/page-ops/runs", Some("alice-token"), &json!({}));
    assert_eq!(started.status, 201, "{started:?}");
    let run = started.body["id"].as_str().unwrap().to_string();
    ops.wait_requests(1, Duration::from_secs(30));
    let ack = api.post(
        &format!("/api/v1/runs/{run}/steps/page/ack"),
        Some("carol-token"),
        &json!({"comment": "on it"}),
    );
    assert_eq!(ack.status / 100, 2, "{ack:?}");
    api.wait_run("carol-token", &run, Duration::from_secs(30), |d| d["status"] == "succeeded");
    let rows = outbox_settled(&sb, &run);
    assert!(rows.iter().all(|(_, _, s, _)| s == "delivered"), "{rows:#?}");

    let got = ops.requests();
    let paths: Vec<&str> = got.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/og/v2/alerts".to_string(),
            format!("/og/v2/alerts/{run}/acknowledge?identifierType=alias"),
            format!("/og/v2/alerts/{run}/close?identifierType=alias"),
        ],
        "created, acknowledged, closed: {got:#?}"
    );
    let create = got[0].json();
    assert_eq!(create["alias"], run.as_str());
    assert!(
        create["description"].as_str().unwrap_or("").contains("orders-db is down"),
        "{create:#}"
    );
    assert_eq!(create["priority"], "P2", "P1 by default");
    assert_eq!(got[1].json()["source"], "lifeboat");
    // Teams only gets the page: an acknowledgement and a close are for
    // channels that keep an incident.
    let cards = teams.requests();
    assert_eq!(cards.len(), 1, "{cards:#?}");
}

const RETRIED: &str = r#"name: retried
notify:
  - on: [started]
    channels: [teams, ops]
steps:
  work: { uses: set, with: { ok: "yes" } }
"#;

#[test]
fn a_throttled_teams_card_and_a_failing_opsgenie_create_are_retried_through_the_outbox() {
    let (teams, ops) = (Receiver::start(), Receiver::start());
    let sb = sandbox("channels-retry", &teams, &ops).with_users(&["alice"]);
    teams.script(vec![Answer::status(429).header("Retry-After", "1")]);
    ops.script(vec![Answer::status(503)]);
    std::fs::create_dir_all(sb.path("workflows")).unwrap();
    sb.write("workflows/retried.yaml", RETRIED);
    let api = Api::start(&sb);
    let started = api.post("/api/v1/workflows/retried/runs", Some("alice-token"), &json!({}));
    assert_eq!(started.status, 201, "{started:?}");
    let run = started.body["id"].as_str().unwrap().to_string();
    api.wait_run("alice-token", &run, Duration::from_secs(30), |d| d["status"] == "succeeded");
    let queued = eventually(Duration::from_secs(30), || outbox(&sb, &run).len() == 2);
    assert!(queued, "{:#?}", outbox(&sb, &run));
    let rows = outbox_settled(&sb, &run);
    assert_eq!(
        rows.iter().map(|(c, _, s, n)| (c.as_str(), s.as_str(), *n)).collect::<Vec<_>>(),
        [("teams", "delivered", 2), ("ops", "delivered", 2)],
        "{rows:#?}"
    );
    let got = teams.requests();
    assert_eq!(got.iter().map(|r| r.answered).collect::<Vec<_>>(), [429, 202]);
    assert!(got[1].at - got[0].at >= Duration::from_millis(900), "Retry-After: 1 honoured");
    assert_eq!(got[0].body, got[1].body, "the same card both times");
    let got = ops.requests();
    assert_eq!(got.iter().map(|r| r.answered).collect::<Vec<_>>(), [503, 202]);
    assert_eq!(got[0].json(), got[1].json(), "the same alert both times");
    assert!(got.iter().all(|r| r.path == "/og/v2/alerts"));
}

const DRILLED: &str = r#"name: drilled
notify:
  - on: [started]
    channels: [teams, ops]
steps:
  work: { uses: set, with: { ok: "yes" } }
drills:
  happy:
    expect: { status: succeeded }
"#;

#[test]
fn a_drill_is_marked_on_teams_and_gets_its_own_opsgenie_alias() {
    let (teams, ops) = (Receiver::start(), Receiver::start());
    let sb = sandbox("channels-drill", &teams, &ops);
    let file = sb.write("drilled.yaml", DRILLED).display().to_string();
    let out = sb.lifeboat(&["drill", &file, "--scenario", "happy", "--wait", "--json"]);
    let doc: Value = serde_json::from_slice(&out.stdout).expect("drill --json");
    assert_eq!(out.status.code(), Some(0), "{doc:#}");
    let run = doc["id"].as_str().unwrap().to_string();

    let create = ops.wait_requests(1, Duration::from_secs(15))[0].json();
    assert_eq!(create["alias"], format!("drill-{run}"), "never the live alert's alias");
    assert!(create["message"].as_str().unwrap_or("").starts_with("[DRILL] "), "{create:#}");
    assert_eq!(create["details"]["drill"], "true");
    assert_eq!(create["tags"][3], "drill");

    let body = teams.wait_requests(1, Duration::from_secs(15))[0].json();
    let card = &body["attachments"][0]["content"];
    let heading = card["body"][0]["inlines"][0]["text"].as_str().unwrap_or("");
    assert!(heading.starts_with("[DRILL] "), "{body:#}");
    assert_eq!(card["body"][1]["inlines"][0]["color"], "Warning", "the drill note: {body:#}");
    let facts = card["body"][2]["facts"].as_array().unwrap();
    assert!(facts.contains(&json!({"title": "Mode", "value": "drill"})), "{body:#}");
}

#[test]
fn a_misconfigured_channel_is_refused_at_its_line_naming_the_key() {
    let sb = Sandbox::new("channels-config").config(
        "[channels.ops]\ntype = \"opsgenie\"\napi_key_env = \"OPSGENIE_API_KEY\"\n\
         api_url = \"https://api.eu.opsgenie.com/v2?x=1\"\n",
    );
    sb.write("w.yaml", "name: w\nsteps:\n  a: { uses: set }\n");
    let out = sb.lifeboat(&["validate", "w.yaml"]);
    let err = crate::util::stderr(&out);
    assert_ne!(out.status.code(), Some(0), "{err}");
    let line = crate::util::FAST_EXECUTOR.lines().count() + 5;
    assert!(
        err.contains(&format!(
            "lifeboat.toml:{line}:11: invalid configuration: channels.ops.api_url"
        )),
        "{err}"
    );

    let sb = Sandbox::new("channels-config-key")
        .config("[channels.chat]\ntype = \"teams\"\nwebhook_url = \"https://x.example/\"\n");
    sb.write("w.yaml", "name: w\nsteps:\n  a: { uses: set }\n");
    let out = sb.lifeboat(&["validate", "w.yaml"]);
    let err = crate::util::stderr(&out);
    let line = crate::util::FAST_EXECUTOR.lines().count() + 2;
    assert!(
        err.contains(&format!("lifeboat.toml:{line}:1: invalid configuration: channels.chat: ")),
        "{err}"
    );
    assert!(err.contains("webhook_url"), "{err}");
}
