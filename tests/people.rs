//! People and notifications (issue #6), through the real binary against
//! real servers: email to a real SMTP server (`notify/tests/smtp_sink.py`),
//! Slack, PagerDuty and signed webhooks to a local recording HTTP server
//! (`util::Receiver`, scriptable: 429 then 200, 400, 503), retries and
//! permanent failures through the durable outbox, `kill -9` of `lifeboat
//! serve` with notifications, an approval and an escalation pending,
//! approval rules (N-of-M, requester excluded, roles over the API,
//! rejection rolls back, timeouts) and escalation timing with sub-second
//! tiers. Assertions read `show --json`, the receivers and the store
//! (outbox, events, step state) directly.

use std::collections::BTreeMap;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::{
    Answer, Api, Receiver, Sandbox, SmtpSink, eventually, ms, output_within, stderr, stdout, step,
};

// --- helpers -----------------------------------------------------------------

/// Writes `workflows/NAME.yaml` (found by name by `run` and `serve`).
fn workflow(sb: &Sandbox, name: &str, text: &str) {
    std::fs::create_dir_all(sb.path("workflows")).expect("create workflows/");
    sb.write(&format!("workflows/{name}.yaml"), text);
}

/// `lifeboat serve` on a migrated database (a fresh SQLite file migrated by
/// `serve` and a `run` at once fails: see the report of issue #6).
fn serve(sb: &Sandbox) -> crate::util::Serve {
    sb.ok(&["migrate"]);
    sb.serve()
}

/// `lifeboat ARGS…` as OS user `user` (the CLI's actor without `--as`).
fn as_user(sb: &Sandbox, user: &str, args: &[&str]) -> Output {
    let mut cmd = sb.command(args);
    cmd.env("USER", user).env_remove("LOGNAME");
    output_within(cmd, Duration::from_secs(60))
}

/// `lifeboat approve|reject|ack RUN STEP` as OS user `user`; must succeed.
fn decide(sb: &Sandbox, user: &str, verb: &str, run: &str, step: &str, comment: Option<&str>) {
    let mut args = vec![verb, run, step];
    if let Some(c) = comment {
        args.extend(["--comment", c]);
    }
    let out = as_user(sb, user, &args);
    assert_eq!(out.status.code(), Some(0), "{user} {verb}: {}{}", stdout(&out), stderr(&out));
}

/// `lifeboat approve…` as `user` that must be refused with `why`.
fn refused(sb: &Sandbox, user: &str, args: &[&str], why: &str) {
    let out = as_user(sb, user, args);
    assert_eq!(out.status.code(), Some(1), "{user} {args:?} was not refused: {}", stdout(&out));
    assert!(stderr(&out).contains(why), "{user} {args:?}: expected `{why}` in:\n{}", stderr(&out));
}

/// Queues a run of `workflow` started by OS user `user`; its id.
fn enqueue_as(sb: &Sandbox, user: &str, workflow: &str) -> String {
    let out = as_user(sb, user, &["run", workflow]);
    assert_eq!(out.status.code(), Some(0), "run {workflow}: {}{}", stdout(&out), stderr(&out));
    stdout(&out).trim().to_string()
}

fn status(doc: &Value) -> &str {
    doc["status"].as_str().unwrap_or("")
}

fn step_status<'a>(doc: &'a Value, id: &str) -> &'a str {
    step(doc, id)["status"].as_str().unwrap_or("")
}

/// Waits until step `id` of `run` has `want` status.
fn wait_step(sb: &Sandbox, run: &str, id: &str, want: &str) -> Value {
    sb.wait_for(run, Duration::from_secs(30), |d| {
        d["steps"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["id"] == id && s["status"] == want))
    })
}

/// One row of the outbox.
#[derive(Debug, Clone)]
struct Row {
    key: String,
    event: String,
    channel: String,
    status: String,
    attempts: u32,
    error: Option<String>,
    detail: Option<String>,
}

fn outbox(sb: &Sandbox, run: &str) -> Vec<Row> {
    sb.rows(&format!(
        "SELECT dedupe_key, event, channel, status, CAST(attempts AS TEXT), last_error, detail \
         FROM outbox WHERE run_id = '{run}' ORDER BY id"
    ))
    .into_iter()
    .map(|r| Row {
        key: r[0].clone().unwrap_or_default(),
        event: r[1].clone().unwrap_or_default(),
        channel: r[2].clone().unwrap_or_default(),
        status: r[3].clone().unwrap_or_default(),
        attempts: r[4].as_deref().and_then(|a| a.parse().ok()).unwrap_or(0),
        error: r[5].clone(),
        detail: r[6].clone(),
    })
    .collect()
}

/// Waits until no outbox row of `run` is pending; the rows.
fn outbox_settled(sb: &Sandbox, run: &str, timeout: Duration) -> Vec<Row> {
    if !eventually(timeout, || outbox(sb, run).iter().all(|r| r.status != "pending")) {
        panic!("outbox of {run} still has pending rows after {timeout:?}: {:#?}", outbox(sb, run));
    }
    outbox(sb, run)
}

/// A run event: (kind, step, data, at ms).
#[derive(Debug, Clone)]
struct Ev {
    kind: String,
    step: Option<String>,
    data: Value,
    at: i64,
}

fn events(sb: &Sandbox, run: &str) -> Vec<Ev> {
    sb.rows(&format!(
        "SELECT kind, step_id, CAST(data AS TEXT), CAST(at AS TEXT) FROM events \
         WHERE run_id = '{run}' ORDER BY id"
    ))
    .into_iter()
    .map(|r| Ev {
        kind: r[0].clone().unwrap_or_default(),
        step: r[1].clone(),
        data: r[2].as_deref().and_then(|d| serde_json::from_str(d).ok()).unwrap_or(Value::Null),
        at: r[3].as_deref().and_then(|a| a.parse().ok()).unwrap_or(0),
    })
    .collect()
}

fn events_of<'a>(evs: &'a [Ev], kind: &str) -> Vec<&'a Ev> {
    evs.iter().filter(|e| e.kind == kind).collect()
}

/// The durable state of a step (`steps.state`).
fn step_state(sb: &Sandbox, run: &str, id: &str) -> Value {
    let rows = sb.rows(&format!(
        "SELECT CAST(state AS TEXT) FROM steps WHERE run_id = '{run}' AND step_id = '{id}'"
    ));
    rows.first()
        .and_then(|r| r[0].as_deref())
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null)
}

/// Requests a receiver answered 2xx, counted per `Idempotency-Key`.
fn delivered_per_key(r: &Receiver) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for req in r.requests().iter().filter(|q| q.ok()) {
        let key = req.header("idempotency-key").unwrap_or("(none)").to_string();
        *out.entry(key).or_insert(0) += 1;
    }
    out
}

/// `name` → `type = "webhook"` to `url`.
fn webhook_channel(name: &str, url: &str) -> String {
    format!("[channels.{name}]\ntype = \"webhook\"\nurl = \"{url}\"\n")
}

// --- email over a real SMTP server ---------------------------------------------

const RESTORE: &str = r#"name: restore-orders
description: Restore the orders database from last night's backup.
inputs:
  service: { type: string, default: orders-db }
  severity: { type: string, default: P2 }
notify:
  - on: [started, succeeded]
    channels: [mail]
steps:
  restore:
    uses: set
    with: { restored: "{{inputs.service}}" }
  tell:
    needs: [restore]
    uses: notify
    with:
      channels: [mail]
      subject: "Restore of {{inputs.service}} done"
      body: "Restored {{steps.restore.outputs.restored}} in run {{run.id}}."
"#;

#[test]
fn email_reaches_a_real_smtp_server_with_recipients_text_html_and_run_link() {
    let sb = Sandbox::new("people-email");
    let sink = SmtpSink::start(sb.path("mail"), None);
    let sb = sb.config(&format!(
        "[server]\npublic_url = \"http://lifeboat.test:8080/\"\n\
         [channels.mail]\ntype = \"email\"\nsmtp_url = \"{}\"\nfrom = \"lifeboat@example.com\"\n\
         to = [\"sre@example.com\", \"dba@example.com\"]\n",
        sink.url()
    ));
    sb.write("restore.yaml", RESTORE);
    let (code, doc) = sb.run_wait("restore.yaml", &[]);
    assert_eq!(code, Some(0), "{doc:#}");
    let run = doc["id"].as_str().expect("run id").to_string();
    let link = format!("http://lifeboat.test:8080/runs/{run}");

    let mails = sink.wait_messages(3, Duration::from_secs(20));
    assert_eq!(mails.len(), 3, "started, the notify step, succeeded: {mails:#?}");
    let by_subject = |s: &str| {
        mails
            .iter()
            .find(|m| m["subject"] == s)
            .unwrap_or_else(|| panic!("no mail with subject {s:?}: {mails:#?}"))
    };
    for m in &mails {
        assert_eq!(m["mail_from"], "lifeboat@example.com", "{m:#}");
        assert_eq!(m["rcpt_tos"], json!(["sre@example.com", "dba@example.com"]), "{m:#}");
        let to = m["to"].as_str().unwrap_or("");
        assert!(to.contains("sre@example.com") && to.contains("dba@example.com"), "{m:#}");
        assert!(m["from"].as_str().unwrap_or("").contains("lifeboat@example.com"), "{m:#}");
    }

    let started = by_subject("[P2] Recovery started: restore-orders is running (orders-db)");
    assert_eq!(started["content_type"], "multipart/alternative", "{started:#}");
    let text = started["text"].as_str().expect("a text part");
    let html = started["html"].as_str().expect("an HTML part");
    for needle in [
        format!("Incident ID:         {run}"),
        "Severity:            P2".into(),
        "Affected Service:    orders-db".into(),
        "Description:         Restore the orders database from last night's backup.".into(),
        link.clone(),
    ] {
        assert!(text.contains(&needle), "text part lacks {needle:?}:\n{text}");
    }
    assert!(!text.contains("8080//runs"), "public_url's trailing slash doubled:\n{text}");
    assert!(
        html.contains(&format!("<a href=\"{link}\">")),
        "HTML part lacks the run link:\n{html}"
    );
    assert!(html.contains("Recovery started: restore-orders is running"), "{html}");
    assert!(html.contains("<td>orders-db</td>"), "{html}");

    let done = by_subject("[P2] Recovery succeeded: restore-orders finished (orders-db)");
    assert_eq!(done["content_type"], "multipart/alternative");
    let done_text = done["text"].as_str().unwrap_or("");
    assert!(
        done_text.contains("Completed: restore, tell") && done_text.contains(&link),
        "{done:#}"
    );

    let told = by_subject("Restore of orders-db done");
    assert_eq!(told["content_type"], "text/plain", "inline body is text only: {told:#}");
    assert_eq!(
        told["text"].as_str().unwrap_or("").trim(),
        format!("Restored orders-db in run {run}.")
    );

    let rows = outbox(&sb, &run);
    assert_eq!(rows.len(), 3, "{rows:#?}");
    for r in &rows {
        assert_eq!(
            (r.channel.as_str(), r.status.as_str(), r.attempts),
            ("mail", "delivered", 1),
            "{r:?}"
        );
        let detail = r.detail.as_deref().unwrap_or("");
        assert!(detail.contains("250") && detail.contains("sre@example.com"), "{r:?}");
    }
}

// --- Slack, PagerDuty, signed webhook ------------------------------------------

const FAILOVER: &str = r#"name: db-failover
description: Fail the orders database over to dc02.
inputs:
  database: { type: string, default: orders-db }
  severity: { type: string, default: P0 }
notify:
  - on: [started, succeeded]
    channels: [chat, pager, hook]
steps:
  promote:
    uses: set
    with: { ok: "yes" }
"#;

const HOOK_SECRET: &str = "whsec-4f1a";

#[test]
fn slack_pagerduty_and_webhook_get_exact_payloads_and_a_valid_signature() {
    let (slack, pd, hook) = (Receiver::start(), Receiver::start(), Receiver::start());
    let sb = Sandbox::new("people-http")
        .config(&format!(
            "[server]\npublic_url = \"http://lifeboat.test:8080\"\n\
             [channels.chat]\ntype = \"slack\"\nwebhook_url_env = \"SLACK_URL\"\n\
             [channels.pager]\ntype = \"pagerduty\"\nrouting_key_env = \"PD_ROUTING_KEY\"\nurl = \"{}\"\n\
             {}hmac_secret_env = \"HOOK_SECRET\"\n",
            pd.url("/v2/enqueue"),
            webhook_channel("hook", &hook.url("/lifeboat")),
        ))
        .env("SLACK_URL", &slack.url("/services/T000/B000/XXXX"))
        .env("PD_ROUTING_KEY", "R0UT1NGKEY")
        .env("HOOK_SECRET", HOOK_SECRET);
    sb.write("failover.yaml", FAILOVER);
    let (code, doc) = sb.run_wait("failover.yaml", &[]);
    assert_eq!(code, Some(0), "{doc:#}");
    let run = doc["id"].as_str().expect("run id").to_string();
    let link = format!("http://lifeboat.test:8080/runs/{run}");
    let started_subject = "[P0] Recovery started: db-failover is running (orders-db)";

    // Slack: Block Kit, one message per event.
    let got = slack.wait_requests(2, Duration::from_secs(15));
    assert_eq!(got.len(), 2, "{got:#?}");
    for r in &got {
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/services/T000/B000/XXXX"));
    }
    let bodies: Vec<Value> = got.iter().map(|r| r.json()).collect();
    let slack_started = bodies
        .iter()
        .find(|b| b["text"] == started_subject)
        .unwrap_or_else(|| panic!("no Slack message for `started`: {bodies:#?}"));
    assert_eq!(
        slack_started["blocks"][0],
        json!({"type": "header", "text": {"type": "plain_text", "text": started_subject, "emoji": true}})
    );
    assert_eq!(
        slack_started["blocks"][1]["fields"],
        json!([
            {"type": "mrkdwn", "text": "*Severity*\nP0"},
            {"type": "mrkdwn", "text": "*Workflow*\ndb-failover"},
            {"type": "mrkdwn", "text": format!("*Run*\n<{link}|{run}>")},
            {"type": "mrkdwn", "text": "*Event*\nstarted"},
        ])
    );
    let actions = slack_started["blocks"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(actions["elements"][0]["url"], link.as_str(), "{slack_started:#}");
    assert!(
        bodies
            .iter()
            .any(|b| b["text"] == "[P0] Recovery succeeded: db-failover finished (orders-db)")
    );

    // PagerDuty: one incident per run, triggered then resolved.
    let got = pd.wait_requests(2, Duration::from_secs(15));
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(got.iter().all(|r| r.path == "/v2/enqueue"));
    let bodies: Vec<Value> = got.iter().map(|r| r.json()).collect();
    let trigger = bodies.iter().find(|b| b["event_action"] == "trigger").expect("a trigger");
    assert_eq!(trigger["routing_key"], "R0UT1NGKEY");
    assert_eq!(trigger["dedup_key"], run.as_str());
    assert_eq!(trigger["payload"]["summary"], started_subject);
    assert_eq!(trigger["payload"]["severity"], "critical", "P0 is critical");
    assert_eq!(trigger["payload"]["source"], "orders-db");
    assert_eq!(trigger["payload"]["component"], "db-failover");
    assert_eq!(trigger["payload"]["custom_details"]["run_id"], run.as_str());
    assert_eq!(trigger["client_url"], link.as_str());
    let resolve = bodies.iter().find(|b| b["event_action"] == "resolve").expect("a resolve");
    assert_eq!(
        *resolve,
        json!({"routing_key": "R0UT1NGKEY", "event_action": "resolve", "dedup_key": run}),
        "acknowledge/resolve carry only the incident key"
    );

    // Webhook: the message as JSON, signed, with a distinct idempotency key per event.
    let got = hook.wait_requests(2, Duration::from_secs(15));
    assert_eq!(got.len(), 2, "{got:#?}");
    let now = chrono::Utc::now().timestamp();
    let mut keys = Vec::new();
    for r in &got {
        assert_eq!(r.path, "/lifeboat");
        assert_eq!(r.header("content-type"), Some("application/json"));
        let signature = r.header("x-lifeboat-signature").expect("a signature header");
        lifeboat_notify::signature::verify(HOOK_SECRET.as_bytes(), signature, &r.body, now, 300)
            .unwrap_or_else(|e| panic!("signature does not verify: {e}"));
        assert!(
            lifeboat_notify::signature::verify(b"wrong", signature, &r.body, now, 300).is_err(),
            "a wrong secret must not verify"
        );
        let body = r.json();
        assert_eq!(r.header("idempotency-key"), body["idempotency_key"].as_str());
        assert_eq!(r.header("x-lifeboat-event"), body["event"].as_str());
        assert_eq!(body["run_id"], run.as_str());
        assert_eq!(body["dedup_key"], run.as_str());
        assert_eq!(body["workflow"], "db-failover");
        assert_eq!(body["severity"], "P0");
        assert_eq!(body["source"], "orders-db");
        assert_eq!(body["link"], link.as_str());
        assert_eq!(body["data"]["run"]["id"], run.as_str());
        keys.push(body["idempotency_key"].as_str().unwrap_or("").to_string());
    }
    let events: Vec<&str> = got.iter().filter_map(|r| r.header("x-lifeboat-event")).collect();
    assert!(events.contains(&"started") && events.contains(&"succeeded"), "{events:?}");
    assert_ne!(keys[0], keys[1], "two events of one run need two idempotency keys");

    let rows = outbox(&sb, &run);
    assert_eq!(rows.len(), 6, "{rows:#?}");
    assert!(rows.iter().all(|r| r.status == "delivered" && r.attempts == 1), "{rows:#?}");
    let hook_keys: Vec<&str> =
        rows.iter().filter(|r| r.channel == "hook").map(|r| r.key.as_str()).collect();
    keys.sort();
    let mut hook_keys: Vec<String> = hook_keys.into_iter().map(String::from).collect();
    hook_keys.sort();
    assert_eq!(keys, hook_keys, "the Idempotency-Key is the outbox dedupe key");
}

// --- retries and permanent failures --------------------------------------------

const RETRIES: &str = r#"name: retries
notify:
  - on: [started]
    channels: [hook, chat, bad]
steps:
  work:
    uses: set
    with: { ok: "yes" }
"#;

#[test]
fn rate_limited_messages_are_retried_once_and_a_400_is_not_retried() {
    let (hook, chat, bad) = (Receiver::start(), Receiver::start(), Receiver::start());
    hook.script(vec![Answer::status(429).header("Retry-After", "0")]);
    chat.script(vec![Answer::status(429).header("Retry-After", "1")]);
    bad.answer_by_default(Answer::status(400));
    let sb = Sandbox::new("people-retries")
        .config(&format!(
            "{}[channels.chat]\ntype = \"slack\"\nwebhook_url_env = \"SLACK_URL\"\n{}",
            webhook_channel("hook", &hook.url("/h")),
            webhook_channel("bad", &bad.url("/b")),
        ))
        .env("SLACK_URL", &chat.url("/slack"));
    workflow(&sb, "retries", RETRIES);
    // Under `serve` (`run --wait` stops its dispatcher too early for a
    // retry: see the report of issue #6).
    let _serve = serve(&sb);
    let run = enqueue_as(&sb, "alice", "retries");
    let doc = sb.wait_finished(&run, Duration::from_secs(30));
    assert_eq!(status(&doc), "succeeded", "a failing channel never fails the run: {doc:#}");
    let rows = outbox_settled(&sb, &run, Duration::from_secs(10));
    let row = |c: &str| rows.iter().find(|r| r.channel == c).unwrap_or_else(|| panic!("{rows:#?}"));

    // 429 + Retry-After: 0, then 200: one delivery, after exactly one retry.
    let got = hook.requests();
    assert_eq!(got.iter().map(|r| r.answered).collect::<Vec<_>>(), [429, 200], "{got:#?}");
    assert_eq!(got[0].header("idempotency-key"), got[1].header("idempotency-key"));
    assert_eq!((row("hook").status.as_str(), row("hook").attempts), ("delivered", 2));
    assert_eq!(delivered_per_key(&hook).values().copied().collect::<Vec<_>>(), [1]);

    // 429 + Retry-After: 1 is honoured.
    let got = chat.requests();
    assert_eq!(got.iter().map(|r| r.answered).collect::<Vec<_>>(), [429, 200], "{got:#?}");
    let waited = got[1].at - got[0].at;
    assert!(waited >= Duration::from_millis(900), "Retry-After: 1 not honoured: {waited:?}");
    assert!(waited < Duration::from_secs(4), "retried too late: {waited:?}");
    assert_eq!((row("chat").status.as_str(), row("chat").attempts), ("delivered", 2));

    // 400 is permanent: one request, the row failed with the reason.
    assert_eq!(bad.requests().len(), 1, "{:#?}", bad.requests());
    let b = row("bad");
    assert_eq!((b.status.as_str(), b.attempts), ("failed", 1), "{b:?}");
    assert!(b.error.as_deref().unwrap_or("").contains("400"), "{b:?}");
}

const REQUIRED: &str = r#"name: required
steps:
  announce_ok:
    uses: notify
    with: { channels: [good], subject: "starting", body: "starting {{run.id}}", required: true }
  prepare:
    needs: [announce_ok]
    uses: shell
    with: { command: [sh, -c, "echo prepared >> ledger"] }
    rollback:
      uses: shell
      with: { command: [sh, -c, "echo undone >> ledger"] }
  announce:
    needs: [prepare]
    uses: notify
    with: { channels: [bad], subject: "x", body: "y", required: true }
  after:
    needs: [announce]
    uses: shell
    with: { command: [sh, -c, "echo after >> ledger"] }
"#;

#[test]
fn a_required_notify_step_fails_when_its_channel_answers_400() {
    let (good, bad) = (Receiver::start(), Receiver::start());
    bad.answer_by_default(Answer::status(400));
    let sb = Sandbox::new("people-required").config(&format!(
        "{}{}",
        webhook_channel("good", &good.url("/g")),
        webhook_channel("bad", &bad.url("/b"))
    ));
    sb.write("required.yaml", REQUIRED);
    let (code, doc) = sb.run_wait("required.yaml", &[]);
    assert_eq!(code, Some(1), "{doc:#}");
    assert_eq!(status(&doc), "rolled_back", "{doc:#}");
    assert_eq!(step_status(&doc, "announce_ok"), "succeeded");
    assert_eq!(step(&doc, "announce_ok")["outputs"]["delivered"][0]["channel"], "good", "{doc:#}");
    assert_eq!(good.requests().len(), 1);
    assert_eq!(step_status(&doc, "announce"), "failed", "{doc:#}");
    let error = step(&doc, "announce")["error"].as_str().unwrap_or("");
    assert!(error.contains("notification to bad failed") && error.contains("400"), "{error}");
    assert_eq!(bad.requests().len(), 1, "a 400 is not retried");
    assert_eq!(
        sb.lines("ledger"),
        ["prepared", "undone"],
        "`after` never ran; prepare rolled back"
    );
}

// --- approvals -----------------------------------------------------------------

/// Everyone here is a test user of `util::USERS`, except that alice, who
/// starts the runs, may also approve (so that `exclude_requester` is what
/// stops her).
fn people_sandbox(name: &str) -> Sandbox {
    Sandbox::new(name)
        .with_users(&["bob", "carol", "dave", "olga", "vic"])
        .with_user("alice", &["operator", "approver"])
        .config("[groups]\nleads = [\"alice\", \"bob\", \"carol\"]\n")
}

const TWO_KEYS: &str = r#"name: two-keys
steps:
  gate:
    uses: approval
    with: { approvers: [leads], min_approvals: 2, exclude_requester: true }
  after:
    needs: [gate]
    uses: shell
    with: { command: [sh, -c, "echo after >> ledger"] }
"#;

#[test]
fn two_of_three_distinct_approvers_and_never_the_requester() {
    let sb = people_sandbox("people-n-of-m");
    workflow(&sb, "two-keys", TWO_KEYS);
    let _serve = serve(&sb);
    let run = enqueue_as(&sb, "alice", "two-keys");
    let doc = wait_step(&sb, &run, "gate", "waiting");
    assert_eq!(doc["trigger"]["by"], "alice", "the requester is recorded: {doc:#}");
    let approve = ["approve", run.as_str(), "gate"];

    refused(&sb, "alice", &approve, "alice started this run and `exclude_requester` is set");
    refused(&sb, "dave", &approve, "dave is not among the approvers (alice, bob, carol)");
    // `--as` needs the user's own token.
    let mut cmd = sb.command(&["approve", &run, "gate", "--as", "bob"]);
    cmd.env("USER", "mallory").env("LIFEBOAT_TOKEN", "carol-token");
    let out = output_within(cmd, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stderr(&out).contains("not bob's token"), "{}", stderr(&out));

    let mut cmd = sb.command(&["approve", &run, "gate", "--as", "bob", "--comment", "checked"]);
    cmd.env("USER", "mallory").env("LIFEBOAT_TOKEN", "bob-token");
    let out = output_within(cmd, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("by bob"), "{}", stdout(&out));

    // One approval of two: applied, but the gate still waits.
    assert!(
        eventually(Duration::from_secs(15), || {
            step_state(&sb, &run, "gate")["approvals"].as_array().is_some_and(|a| a.len() == 1)
        }),
        "bob's approval was not applied: {}",
        step_state(&sb, &run, "gate")
    );
    // The approval and the gate's verdict on it are one commit: the gate
    // that recorded one approval has already decided to go on waiting.
    let doc = sb.show(&run);
    assert_eq!(step_status(&doc, "gate"), "waiting", "one approval is not enough: {doc:#}");
    assert_eq!(step_state(&sb, &run, "gate")["approvals"][0]["by"], "bob");
    assert!(sb.lines("ledger").is_empty());
    let evs = events(&sb, &run);
    let recorded = events_of(&evs, "approval_recorded");
    assert_eq!(recorded.len(), 1, "{evs:#?}");
    assert_eq!(
        (recorded[0].data["have"].clone(), recorded[0].data["need"].clone()),
        (json!(1), json!(2))
    );

    refused(&sb, "bob", &approve, "bob has already approved; another person must approve");

    decide(&sb, "carol", "approve", &run, "gate", Some("go ahead"));
    let doc = sb.wait_finished(&run, Duration::from_secs(30));
    assert_eq!(status(&doc), "succeeded", "{doc:#}");
    let out = &step(&doc, "gate")["outputs"];
    assert_eq!(out["approved_by"], json!(["bob", "carol"]), "{doc:#}");
    assert_eq!(
        out["comments"],
        json!([{"by": "bob", "comment": "checked"}, {"by": "carol", "comment": "go ahead"}])
    );
    assert_eq!(sb.lines("ledger"), ["after"]);
    // A decision on an ended run is refused.
    refused(&sb, "dave", &approve, "has already ended");
}

const REJECT: &str = r#"name: reject-me
steps:
  prepare:
    uses: shell
    with: { command: [sh, -c, "echo prepared >> ledger"] }
    rollback:
      uses: shell
      with: { command: [sh, -c, "echo undone >> ledger"] }
  gate:
    needs: [prepare]
    uses: approval
    with: { approvers: [bob] }
  promote:
    needs: [gate]
    uses: shell
    with: { command: [sh, -c, "echo promoted >> ledger"] }
"#;

#[test]
fn a_rejection_fails_the_gate_and_rolls_the_run_back() {
    let sb = people_sandbox("people-reject");
    workflow(&sb, "reject-me", REJECT);
    let _serve = serve(&sb);
    let run = enqueue_as(&sb, "alice", "reject-me");
    wait_step(&sb, &run, "gate", "waiting");
    refused(&sb, "carol", &["reject", &run, "gate"], "carol is not among the approvers (bob)");
    refused(&sb, "bob", &["ack", &run, "gate"], "waits for an approval");
    decide(&sb, "bob", "reject", &run, "gate", Some("primary is back"));
    let doc = sb.wait_finished(&run, Duration::from_secs(30));
    assert_eq!(status(&doc), "rolled_back", "{doc:#}");
    assert_eq!(step_status(&doc, "gate"), "failed");
    assert_eq!(step(&doc, "gate")["error"], "rejected by bob: primary is back");
    assert_eq!(step(&doc, "gate")["outputs"]["rejected_by"], "bob");
    assert_ne!(step_status(&doc, "promote"), "succeeded");
    assert_eq!(sb.lines("ledger"), ["prepared", "undone"], "prepare's rollback ran, promote never");
}

const IMPOSSIBLE: &str = r#"name: impossible
steps:
  prepare:
    uses: shell
    with: { command: [sh, -c, "echo prepared >> ledger"] }
    rollback:
      uses: shell
      with: { command: [sh, -c, "echo undone >> ledger"] }
  gate:
    needs: [prepare]
    uses: approval
    with: { approvers: [leads], min_approvals: 3, exclude_requester: true, timeout: 1h }
"#;

/// Three approvals from a group of three, one of whom started the run: the
/// gate can never pass, and says so at once instead of waiting an hour.
#[test]
fn an_approval_that_can_never_pass_fails_at_once() {
    let sb = people_sandbox("people-impossible");
    workflow(&sb, "impossible", IMPOSSIBLE);
    let _serve = serve(&sb);
    let run = enqueue_as(&sb, "alice", "impossible");
    let doc = sb.wait_finished(&run, Duration::from_secs(20));
    assert_eq!(status(&doc), "rolled_back", "{doc:#}");
    let error = step(&doc, "gate")["error"].as_str().unwrap_or("");
    assert!(error.contains("min_approvals: 3") && error.contains("only 2"), "{error}");
    assert_eq!(sb.lines("ledger"), ["prepared", "undone"]);
}

const SITE_DOWN: &str = r#"name: site-down
inputs:
  site: { type: string, required: true }
triggers:
  - webhook: alertmanager
    match: { alertname: SiteDown }
    inputs: { site: "{{alert.labels.site}}" }
    cancel_on_resolve: true
steps:
  fence:
    uses: shell
    with: { command: [sh, -c, "echo fencing >> ledger; sleep 5; echo fenced >> ledger"] }
  gate:
    needs: [fence]
    uses: approval
    with: { approvers: [bob] }
"#;

/// `cancel_on_resolve`: an alert that resolves before the run has passed
/// its first approval gate cancels it, also while the gate is still ahead.
#[test]
fn a_resolved_alert_cancels_a_run_that_has_not_reached_its_gate() {
    let sb = people_sandbox("people-resolve")
        .config("[hooks.alertmanager]\nformat = \"alertmanager\"\nbearer_token_env = \"LIFEBOAT_HOOK_TOKEN\"\n")
        .env("LIFEBOAT_HOOK_TOKEN", "hook-token");
    workflow(&sb, "site-down", SITE_DOWN);
    let api = Api::start(&sb);
    let labels = json!({"alertname": "SiteDown", "site": "dc07"});
    let firing = crate::util::alertmanager_payload("firing", &[("fp-7", labels.clone())]);
    let reply = api.post("/hooks/alertmanager", Some("hook-token"), &firing);
    assert_eq!(reply.status, 202, "{reply:?}");
    let run = reply.body["runs"][0].as_str().expect("a run").to_string();
    assert!(eventually(Duration::from_secs(15), || sb.lines("ledger") == ["fencing"]));
    let resolved = crate::util::alertmanager_payload("resolved", &[("fp-7", labels)]);
    let reply = api.post("/hooks/alertmanager", Some("hook-token"), &resolved);
    assert_eq!(reply.status, 202, "{reply:?}");
    assert_eq!(reply.body["cancelled"], json!([run]), "{reply:?}");
    let doc = sb.wait_finished(&run, Duration::from_secs(20));
    assert_eq!(status(&doc), "cancelled", "{doc:#}");
    assert_eq!(sb.lines("ledger"), ["fencing"], "the running step was stopped");
}

const API_GATE: &str = r#"name: api-gate
steps:
  gate:
    uses: approval
    with: { approvers: [bob, alice], exclude_requester: true }
"#;

#[test]
fn over_the_api_only_an_allowed_approver_with_the_approver_role_decides() {
    let sb = people_sandbox("people-api");
    workflow(&sb, "api-gate", API_GATE);
    let api = Api::start(&sb);
    let created = api.post("/api/v1/workflows/api-gate/runs", Some("alice-token"), &json!({}));
    assert_eq!(created.status, 201, "{created:?}");
    let run = created.body["id"].as_str().expect("run id").to_string();
    api.wait_run("olga-token", &run, Duration::from_secs(30), |d| {
        Api::step_status(d, "gate") == "waiting"
    });
    let path = format!("/api/v1/runs/{run}/steps/gate/approve");
    let body = json!({"comment": "ship it"});
    assert_eq!(api.post(&path, None, &body).status, 401);
    for token in ["vic-token", "olga-token"] {
        let reply = api.post(&path, Some(token), &body);
        assert_eq!(reply.status, 403, "{token}: {reply:?}");
        assert!(reply.message().contains("approver"), "{reply:?}");
    }
    let reply = api.post(&path, Some("alice-token"), &body);
    assert_eq!(reply.status, 403, "alice started the run: {reply:?}");
    assert!(reply.message().contains("alice started this run"), "{reply:?}");
    let reply = api.post(&path, Some("dave-token"), &body);
    assert_eq!(reply.status, 403, "dave has the role but is not listed: {reply:?}");
    assert!(reply.message().contains("not among the approvers"), "{reply:?}");
    let reply = api.post(&format!("/api/v1/runs/{run}/steps/gate/ack"), Some("bob-token"), &body);
    assert_eq!(reply.status, 409, "an approval is not acknowledged: {reply:?}");
    let reply =
        api.post(&format!("/api/v1/runs/{run}/steps/nope/approve"), Some("bob-token"), &body);
    assert_eq!(reply.status, 404, "{reply:?}");

    let reply = api.post(&path, Some("bob-token"), &body);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["by"], "bob");
    assert_eq!(reply.body["decision"], "approve");
    let doc =
        api.wait_run("bob-token", &run, Duration::from_secs(30), |d| d["status"] == "succeeded");
    let gate = doc["steps"].as_array().unwrap().iter().find(|s| s["id"] == "gate").unwrap();
    assert_eq!(gate["outputs"]["approved_by"], json!(["bob"]), "{doc:#}");
    assert_eq!(gate["outputs"]["comment"], "ship it");
    let again = api.post(&path, Some("alice-token"), &body);
    assert_eq!(again.status, 409, "the run has ended: {again:?}");
}

const TIMEOUTS: &str = r#"
  prepare:
    uses: shell
    with: { command: [sh, -c, "echo prepared-{{run.workflow}} >> ledger"] }
    rollback:
      uses: shell
      with: { command: [sh, -c, "echo undone-{{run.workflow}} >> ledger"] }
  after:
    needs: [gate]
    uses: shell
    with: { command: [sh, -c, "echo after-{{run.workflow}} >> ledger"] }
  gate:
    needs: [prepare]
    uses: approval
"#;

#[test]
fn approval_timeouts_fail_approve_or_escalate_through_the_tiers() {
    let (tier1, tier2) = (Receiver::start(), Receiver::start());
    let sb = people_sandbox("people-timeouts").config(&format!(
        "{}{}",
        webhook_channel("tier1", &tier1.url("/t1")),
        webhook_channel("tier2", &tier2.url("/t2"))
    ));
    let workflow = |name: &str, with: &str| {
        sb.write(
            &format!("{name}.yaml"),
            &format!("name: {name}\nsteps:{TIMEOUTS}    with: {with}\n"),
        );
        format!("{name}.yaml")
    };

    // on_timeout: fail (the default) fails the gate and rolls back.
    let file = workflow("t-fail", "{ approvers: [bob], timeout: 400ms }");
    let (code, doc) = sb.run_wait(&file, &[]);
    assert_eq!(code, Some(1), "{doc:#}");
    assert_eq!(status(&doc), "rolled_back", "{doc:#}");
    let gate = step(&doc, "gate");
    assert_eq!(gate["status"], "failed");
    let error = gate["error"].as_str().unwrap_or("");
    assert!(error.contains("no decision within") && error.contains("on_timeout: fail"), "{error}");
    assert_eq!(gate["outputs"]["timed_out"], true);
    let waited = ms(&gate["finished_at"]) - ms(&gate["started_at"]);
    assert!((400..3000).contains(&waited), "timed out after {waited} ms, not 400 ms");

    // on_timeout: approve lets the run continue.
    let file = workflow("t-approve", "{ approvers: [bob], timeout: 300ms, on_timeout: approve }");
    let (code, doc) = sb.run_wait(&file, &[]);
    assert_eq!(code, Some(0), "{doc:#}");
    let gate = step(&doc, "gate");
    assert_eq!(
        (gate["outputs"]["timed_out"].clone(), gate["outputs"]["approved_by"].clone()),
        (json!(true), json!([]))
    );
    let waited = ms(&gate["finished_at"]) - ms(&gate["started_at"]);
    assert!((300..3000).contains(&waited), "approved after {waited} ms, not 300 ms");

    // on_timeout: escalate pages tier 1, then tier 2, then gives up.
    let file = workflow(
        "t-escalate",
        "{ approvers: [bob], timeout: 300ms, on_timeout: escalate, escalate: { message: \"approve the failover\", tiers: [ { channels: [tier1], ack_within: 400ms }, { channels: [tier2], ack_within: 400ms } ] } }",
    );
    let (code, doc) = sb.run_wait(&file, &[]);
    assert_eq!(code, Some(1), "{doc:#}");
    let run = doc["id"].as_str().unwrap().to_string();
    let gate = step(&doc, "gate");
    assert_eq!(gate["status"], "failed");
    assert_eq!(gate["error"], "nobody decided after all 2 tiers were paged", "{doc:#}");
    let evs = events(&sb, &run);
    let at = |kind: &str| {
        events_of(&evs, kind).first().map(|e| e.at).unwrap_or_else(|| panic!("no {kind}: {evs:#?}"))
    };
    let escalated = events_of(&evs, "escalated");
    assert_eq!(escalated.len(), 2, "{evs:#?}");
    assert_eq!(
        (escalated[0].data["tier"].clone(), escalated[1].data["tier"].clone()),
        (json!(1), json!(2))
    );
    let started = ms(&gate["started_at"]);
    assert!(at("approval_timed_out") - started >= 300, "{evs:#?}");
    assert!(escalated[0].at >= at("approval_timed_out"));
    assert!(
        escalated[1].at - escalated[0].at >= 400,
        "tier 2 before tier 1's ack_within: {evs:#?}"
    );
    assert!(at("escalation_exhausted") - escalated[1].at >= 400, "{evs:#?}");
    let (t1, t2) = (tier1.requests(), tier2.requests());
    assert_eq!((t1.len(), t2.len()), (1, 1), "each tier paged once: {t1:#?} {t2:#?}");
    let page = t1[0].json();
    assert_eq!(page["event"], "escalated");
    assert!(page["text"].as_str().unwrap_or("").contains("approve the failover"), "{page:#}");
    assert!(page["subject"].as_str().unwrap_or("").contains("tier 1"), "{page:#}");
    assert!(t2[0].json()["subject"].as_str().unwrap_or("").contains("tier 2"));
    assert_eq!(
        sb.lines("ledger"),
        [
            "prepared-t-fail",
            "undone-t-fail",
            "prepared-t-approve",
            "after-t-approve",
            "prepared-t-escalate",
            "undone-t-escalate"
        ]
    );
}

// --- escalation ---------------------------------------------------------------

/// How late a timer may fire on a loaded machine (CI shares two cores with
/// everything the tests start). Lower bounds are exact; upper bounds allow this.
const LOAD_SLACK_MS: i64 = 5_000;

const PAGE: &str = r#"name: page
steps:
  page:
    uses: escalate
    with:
      message: "orders-db is down"
      repeat_every: 400ms
      tiers:
        - { channels: [tier1], ack_within: 700ms }
        - { channels: [tier2, pager], ack_within: 30s }
"#;

#[test]
fn escalation_pages_tiers_in_time_repeats_updates_and_stops_on_ack() {
    let (tier1, tier2, pd) = (Receiver::start(), Receiver::start(), Receiver::start());
    let sb = people_sandbox("people-escalate")
        .config(&format!(
            "{}{}[channels.pager]\ntype = \"pagerduty\"\nrouting_key_env = \"PD_KEY\"\nurl = \"{}\"\n",
            webhook_channel("tier1", &tier1.url("/t1")),
            webhook_channel("tier2", &tier2.url("/t2")),
            pd.url("/v2/enqueue"),
        ))
        .env("PD_KEY", "pd-key-1");
    workflow(&sb, "page", PAGE);
    let _serve = serve(&sb);
    let run = enqueue_as(&sb, "alice", "page");
    // Wait for a status update that reached tier 2 (after tier 2 was paged).
    tier2.wait_requests(2, Duration::from_secs(20));
    decide(&sb, "carol", "ack", &run, "page", Some("on it"));
    let doc = sb.wait_finished(&run, Duration::from_secs(30));
    assert_eq!(status(&doc), "succeeded", "{doc:#}");
    assert_eq!(step(&doc, "page")["outputs"]["acked_by"], "carol", "{doc:#}");
    assert_eq!(step(&doc, "page")["outputs"]["tier"], 2, "{doc:#}");
    assert_eq!(step(&doc, "page")["outputs"]["comment"], "on it");
    let rows = outbox_settled(&sb, &run, Duration::from_secs(15));
    assert!(rows.iter().all(|r| r.status == "delivered"), "{rows:#?}");

    // Timing, from what the store recorded: the step started waiting at
    // `started_at` and paged tier 1 then; every later timer counts from
    // there. (Not from the `escalated` event's own time: under load it can
    // be written a while after the instant the timers were set from.)
    let started = ms(&step(&doc, "page")["started_at"]);
    let evs = events(&sb, &run);
    let escalated = events_of(&evs, "escalated");
    assert_eq!(escalated.len(), 2, "{evs:#?}");
    let (tier1_at, tier2_at) = (escalated[0].at, escalated[1].at);
    assert_eq!(escalated[1].data["tier"], 2);
    assert!(escalated.iter().all(|e| e.step.as_deref() == Some("page")), "{evs:#?}");
    assert!(tier1_at >= started, "tier 1 paged before the step started: {evs:#?}");
    assert!(tier2_at - started >= 700, "tier 2 paged before ack_within: {evs:#?}");
    assert!(tier2_at - started < 700 + LOAD_SLACK_MS, "tier 2 paged late: {}", tier2_at - started);
    let updates = events_of(&evs, "status_update");
    assert!(!updates.is_empty(), "{evs:#?}");
    assert!(updates[0].at - started >= 400, "first update before repeat_every: {evs:#?}");
    let acked = events_of(&evs, "acknowledged");
    assert_eq!(acked.len(), 1, "{evs:#?}");
    assert_eq!(acked[0].data["acked_by"], "carol");
    assert!(
        evs.iter()
            .all(|e| !(e.kind == "escalated" || e.kind == "status_update") || e.at <= acked[0].at),
        "paging went on after the ack: {evs:#?}"
    );

    // Tier 1: its page, then updates; tier 2 only from its page on.
    let t1: Vec<String> = tier1
        .requests()
        .iter()
        .map(|r| r.header("idempotency-key").unwrap_or("").to_string())
        .collect();
    assert!(t1[0].ends_with("/tier1"), "{t1:?}");
    assert!(t1.iter().any(|k| k.ends_with("/update1")), "tier 1 got status updates: {t1:?}");
    assert!(t1.iter().all(|k| !k.ends_with("/tier2")), "{t1:?}");
    let t2: Vec<String> = tier2
        .requests()
        .iter()
        .map(|r| r.header("idempotency-key").unwrap_or("").to_string())
        .collect();
    assert!(t2[0].ends_with("/tier2"), "{t2:?}");
    assert!(!t2.iter().any(|k| k.ends_with("/tier1") || k.ends_with("/update1")), "{t2:?}");
    let body = tier1.requests()[0].json();
    assert!(body["text"].as_str().unwrap_or("").contains("orders-db is down"), "{body:#}");
    assert!(body["subject"].as_str().unwrap_or("").contains("Escalated to tier 1"), "{body:#}");
    // Every message sent once per key (all receivers answered 200).
    for r in [&tier1, &tier2] {
        assert!(delivered_per_key(r).values().all(|n| *n == 1), "{:#?}", delivered_per_key(r));
    }

    // PagerDuty: triggers while paging, one acknowledge on the ack, same incident.
    let pd_bodies: Vec<Value> = pd.requests().iter().map(|r| r.json()).collect();
    assert!(
        pd_bodies.iter().all(|b| b["dedup_key"] == run.as_str() && b["routing_key"] == "pd-key-1")
    );
    let actions: Vec<&str> = pd_bodies.iter().filter_map(|b| b["event_action"].as_str()).collect();
    assert_eq!(actions.first(), Some(&"trigger"), "{pd_bodies:#?}");
    assert_eq!(actions.iter().filter(|a| **a == "acknowledge").count(), 1, "{actions:?}");
    // The run's end resolves the incident (ack and resolve may be sent together).
    assert_eq!(actions.iter().filter(|a| **a == "resolve").count(), 1, "{actions:?}");
    let n = actions.len();
    let mut tail = actions[n - 2..].to_vec();
    tail.sort();
    assert_eq!(
        tail,
        ["acknowledge", "resolve"],
        "nothing after the ack but the resolve: {actions:?}"
    );
    let ack = pd_bodies.iter().find(|b| b["event_action"] == "acknowledge").unwrap();
    assert_eq!(
        *ack,
        json!({"routing_key": "pd-key-1", "event_action": "acknowledge", "dedup_key": run})
    );
    assert!(pd_bodies[0]["payload"]["summary"].as_str().unwrap_or("").contains("tier 2"));
    assert_eq!(pd_bodies[0]["payload"]["severity"], "error", "P1 by default");

    // Nothing more after the ack: the step ended with no timer left, and
    // every request the receivers got is one of the run's settled messages.
    let timer = sb.rows(&format!(
        "SELECT CAST(wake_at AS TEXT) FROM steps WHERE run_id = '{run}' AND step_id = 'page'"
    ));
    assert_eq!(timer, [[None]], "a timer is left on the acknowledged step");
    let requests = tier1.requests().len() + tier2.requests().len() + pd.requests().len();
    assert_eq!(requests, rows.len(), "one request per message: {rows:#?}");
}

// --- kill -9 with people and notifications pending ------------------------------

const CRASHY: &str = r#"name: crashy
notify:
  - on: [started, approval_requested, escalated, succeeded]
    channels: [hook]
steps:
  gate:
    uses: approval
    with: { approvers: [bob] }
  page:
    uses: escalate
    with:
      tiers:
        - { channels: [tier1], ack_within: 1500ms }
        - { channels: [tier2], ack_within: 1m }
"#;

#[test]
fn kill_9_loses_no_notification_sends_none_twice_and_keeps_gates_and_timers() {
    let (hook, tier1, tier2) = (Receiver::start(), Receiver::start(), Receiver::start());
    hook.answer_by_default(Answer::status(503));
    let sb = people_sandbox("people-kill9")
        .config(&format!(
            "{}{}{}",
            webhook_channel("hook", &hook.url("/h")),
            webhook_channel("tier1", &tier1.url("/t1")),
            webhook_channel("tier2", &tier2.url("/t2"))
        ))
        .env("LIFEBOAT_NOTIFY_BACKOFF_MS", "100");
    workflow(&sb, "crashy", CRASHY);
    let mut serve = serve(&sb);
    let run = enqueue_as(&sb, "alice", "crashy");

    // Tier 1 paged, the hook refusing (503) and being retried, the gate waiting.
    tier1.wait_requests(1, Duration::from_secs(20));
    hook.wait_requests(3, Duration::from_secs(20));
    wait_step(&sb, &run, "gate", "waiting");
    // Between two retry rounds (none in flight), then kill -9.
    let last = hook.requests().last().unwrap().at;
    std::thread::sleep(Duration::from_millis(60).saturating_sub(last.elapsed()));
    serve.kill9();
    let killed = Instant::now();
    let evs = events(&sb, &run);
    let tier1_at = events_of(&evs, "escalated")[0].at;
    assert_eq!(events_of(&evs, "escalated").len(), 1, "killed after tier 1 only: {evs:#?}");
    let pending = outbox(&sb, &run);
    assert!(pending.iter().any(|r| r.channel == "hook" && r.status == "pending"), "{pending:#?}");

    // Down past tier 1's ack_within: tier 2 must be paged after the restart.
    std::thread::sleep(Duration::from_millis(2000));
    assert!(tier2.requests().is_empty(), "tier 2 paged by a dead server?");
    let late: Vec<Duration> =
        hook.requests().iter().map(|r| r.at.saturating_duration_since(killed)).collect();
    let late: Vec<&Duration> = late.iter().filter(|d| **d > Duration::from_millis(200)).collect();
    assert!(late.is_empty(), "the killed server still sends: {late:?} after the kill");
    let _serve2 = sb.serve();
    let restarted = Instant::now();
    let t2 = tier2.wait_requests(1, Duration::from_secs(20));
    assert!(t2[0].at > restarted, "tier 2 paged after the restart");
    let evs = events(&sb, &run);
    let escalated = events_of(&evs, "escalated");
    assert_eq!(escalated.len(), 2, "{evs:#?}");
    assert!(escalated[1].at - tier1_at >= 1500, "tier 2 before ack_within: {evs:#?}");
    assert!(killed.elapsed() < Duration::from_secs(60));

    // The gate survived the crash: still waiting for bob.
    let doc = sb.show(&run);
    assert_eq!(step_status(&doc, "gate"), "waiting", "{doc:#}");
    assert_eq!(step_status(&doc, "page"), "waiting", "{doc:#}");
    assert_eq!(step_state(&sb, &run, "gate")["people"], json!(["bob"]));

    // The receiver recovers: every pending message is delivered.
    hook.answer_by_default(Answer::status(200));
    decide(&sb, "bob", "approve", &run, "gate", None);
    decide(&sb, "carol", "ack", &run, "page", None);
    let doc = sb.wait_finished(&run, Duration::from_secs(30));
    assert_eq!(status(&doc), "succeeded", "{doc:#}");
    assert_eq!(step(&doc, "page")["outputs"]["tier"], 2);
    let rows = outbox_settled(&sb, &run, Duration::from_secs(30));
    assert!(rows.iter().all(|r| r.status == "delivered"), "nothing lost: {rows:#?}");
    let events_sent: Vec<&str> =
        rows.iter().filter(|r| r.channel == "hook").map(|r| r.event.as_str()).collect();
    for e in ["started", "approval_requested", "escalated", "succeeded"] {
        assert!(events_sent.contains(&e), "no {e} notification: {events_sent:?}");
    }
    assert_eq!(events_sent.iter().filter(|e| **e == "escalated").count(), 2, "{events_sent:?}");

    // Nothing sent twice: one 2xx per idempotency key, one key per outbox row.
    for (name, r, channel) in
        [("hook", &hook, "hook"), ("tier1", &tier1, "tier1"), ("tier2", &tier2, "tier2")]
    {
        let per_key = delivered_per_key(r);
        assert!(per_key.values().all(|n| *n == 1), "{name} got a message twice: {per_key:#?}");
        let mut want: Vec<String> =
            rows.iter().filter(|x| x.channel == channel).map(|x| x.key.clone()).collect();
        want.sort();
        assert_eq!(per_key.keys().cloned().collect::<Vec<_>>(), want, "{name}");
    }
    assert_eq!(tier1.requests().len(), 1, "tier 1 paged once across the restart");
    assert_eq!(tier2.requests().len(), 1, "tier 2 paged once");

    // Another crash and restart after the end: nothing is sent again.
    drop(_serve2);
    let before = (hook.requests().len(), tier1.requests().len(), tier2.requests().len());
    // Nothing is left for a server to send: every message settled, no timer.
    assert!(outbox(&sb, &run).iter().all(|r| r.status != "pending"), "{:#?}", outbox(&sb, &run));
    let timers = sb
        .rows(&format!("SELECT step_id FROM steps WHERE run_id = '{run}' AND wake_at IS NOT NULL"));
    assert!(timers.is_empty(), "timers left on an ended run: {timers:?}");
    let serve3 = sb.serve();
    let registered = format!("SELECT id FROM workers WHERE pid = {}", serve3.pid());
    assert!(eventually(Duration::from_secs(30), || !sb.rows(&registered).is_empty()));
    assert_eq!(before, (hook.requests().len(), tier1.requests().len(), tier2.requests().len()));
    assert_eq!(outbox(&sb, &run).len(), rows.len());
}

// --- known bugs ------------------------------------------------------------------

const VERBATIM: &str = r#"name: verbatim
inputs:
  note: { type: string }
steps:
  tell:
    uses: notify
    with: { channels: [hook], subject: "note: {{inputs.note}}", body: "said: {{inputs.note}}" }
"#;

/// A notify step's `subject`/`body` are rendered when the step starts (like
/// every `with` string) and then rendered AGAIN as templates when queued
/// (`notify_inline` -> `Templates::render_inline`): a value with `{{` (an
/// alert label, an input) is evaluated as a template, or breaks the message.
#[test]
fn a_notify_step_sends_rendered_values_verbatim() {
    let hook = Receiver::start();
    let sb = Sandbox::new("people-verbatim").config(&webhook_channel("hook", &hook.url("/h")));
    sb.write("verbatim.yaml", VERBATIM);
    let (code, doc) = sb.run_wait("verbatim.yaml", &["note={{run.id}} {{#if"]);
    assert_eq!(code, Some(0), "{doc:#}");
    let got = hook.wait_requests(1, Duration::from_secs(10));
    let body = got[0].json();
    assert_eq!(body["subject"], "note: {{run.id}} {{#if", "{body:#}");
    assert_eq!(body["text"], "said: {{run.id}} {{#if", "{body:#}");
}
