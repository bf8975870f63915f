//! The front door of `lifeboat serve` under hostile or careless traffic:
//! slow and idle connections, connection and stream caps, exposure by
//! default (non-loopback bind, /metrics, hook names), webhook volume and
//! replays, and decisions answered with what will really happen.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::{Api, Sandbox, alertmanager_payload, free_port, output_within, stderr, stdout};

const HOOK_TOKEN: &str = "hook-token-123";
const HMAC_SECRET: &str = "hmac-secret-xyz";
const ALICE: &str = "alice-token"; // operator
const BOB: &str = "bob-token"; // approver
const CAROL: &str = "carol-token"; // approver

const HOOKS: &str = r#"
[hooks.alertmanager]
format = "alertmanager"
bearer_token_env = "LIFEBOAT_HOOK_TOKEN"
[hooks.signed]
format = "json"
hmac_secret_env = "LIFEBOAT_HOOK_SECRET"
"#;

/// Started by any SiteDown alert; waits at a gate two people must pass.
const GATED: &str = r#"name: gated
inputs:
  site: { type: string, default: dc01 }
triggers:
  - webhook: alertmanager
    match: { alertname: SiteDown }
    inputs: { site: "{{alert.labels.site}}" }
  - webhook: signed
    match: { type: incident }
    inputs: { site: "{{event.site}}" }
steps:
  gate:
    uses: approval
    with: { approvers: [bob, carol], min_approvals: 2 }
  done:
    needs: [gate]
    uses: set
    with: { site: "{{inputs.site}}" }
"#;

/// A sandbox with users, hooks, the `gated` workflow and `extra` config.
fn sandbox(name: &str, extra: &str) -> Sandbox {
    let sb = Sandbox::new(name)
        .config(&format!("{extra}\n{HOOKS}"))
        .with_users(&["alice", "bob", "carol"])
        .env("LIFEBOAT_HOOK_TOKEN", HOOK_TOKEN)
        .env("LIFEBOAT_HOOK_SECRET", HMAC_SECRET);
    std::fs::create_dir_all(sb.path("workflows")).expect("workflows dir");
    sb.write("workflows/gated.yaml", GATED);
    sb
}

fn host_port(api: &Api) -> String {
    api.base.trim_start_matches("http://").to_string()
}

/// A raw connection to the server.
fn connect(api: &Api) -> TcpStream {
    let stream = TcpStream::connect(host_port(api)).expect("connect to serve");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

/// Waits until the server closes `stream` (EOF or reset); when it did, or
/// `None` if it was still open at `deadline`. Data it sends first is skipped.
fn closed_at(stream: &mut TcpStream, deadline: Instant) -> Option<Instant> {
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        stream.set_read_timeout(Some(left.max(Duration::from_millis(1)))).expect("read timeout");
        match stream.read(&mut buf) {
            Ok(0) => return Some(Instant::now()),
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None;
            }
            Err(_) => return Some(Instant::now()),
        }
    }
}

/// Sends `GET path` on a raw kept-alive connection.
fn send_get(stream: &mut TcpStream, path: &str) {
    write!(stream, "GET {path} HTTP/1.1\r\nHost: lifeboat\r\n\r\n").expect("send request");
}

/// Reads one whole answer (status line, headers, `Content-Length` body);
/// its status code, or 0 if the connection broke first.
fn read_status(stream: &mut TcpStream) -> u16 {
    let read = || -> std::io::Result<u16> {
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut length = 0usize;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body)?;
        Ok(status)
    };
    read().unwrap_or(0)
}

/// `GET path` on a raw kept-alive connection; the status code.
fn raw_get(stream: &mut TcpStream, path: &str) -> u16 {
    send_get(stream, path);
    read_status(stream)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

#[test]
fn healthz_stays_fast_under_200_slow_connections_which_are_closed_after_header_read_timeout() {
    let sb = sandbox(
        "front-slow-headers",
        "[server]\nheader_read_timeout = \"4s\"\nidle_timeout = \"6s\"\n",
    );
    let api = Api::start(&sb);
    let opened = Instant::now();
    let mut slow: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut s = connect(&api);
            s.write_all(b"GET /heal").expect("partial request line");
            s
        })
        .collect();
    let mut idle: Vec<TcpStream> = (0..20).map(|_| connect(&api)).collect();

    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let mut times = Vec::new();
    for _ in 0..100 {
        let t = Instant::now();
        let r = client.get(api.url("/healthz")).send().expect("healthz");
        assert_eq!(r.status(), 200);
        times.push(t.elapsed());
    }
    times.sort();
    let (p50, p99) = (percentile(&times, 0.50), percentile(&times, 0.99));
    eprintln!("/healthz under 200 slow + 20 idle connections: p50 {p50:?}, p99 {p99:?}");
    assert!(p99 < Duration::from_millis(200), "p99 {p99:?} (p50 {p50:?})");

    // Every slow client is cut off once its head is 4s late, not before.
    let deadline = opened + Duration::from_secs(30);
    for (i, s) in slow.iter_mut().enumerate() {
        let at = closed_at(s, deadline)
            .unwrap_or_else(|| panic!("slow connection {i} still open after 30s"));
        assert!(at - opened >= Duration::from_millis(3500), "closed too early: {:?}", at - opened);
    }
    // Connections that never sent anything: the idle timeout (6s).
    for (i, s) in idle.iter_mut().enumerate() {
        let at = closed_at(s, deadline)
            .unwrap_or_else(|| panic!("idle connection {i} still open after 30s"));
        assert!(at - opened >= Duration::from_millis(5500), "closed too early: {:?}", at - opened);
    }
    assert_eq!(client.get(api.url("/healthz")).send().expect("healthz").status(), 200);
}

#[test]
fn a_keep_alive_connection_is_closed_after_idle_timeout_not_header_read_timeout() {
    let sb = sandbox(
        "front-keep-alive",
        "[server]\nheader_read_timeout = \"1s\"\nidle_timeout = \"3s\"\n",
    );
    let api = Api::start(&sb);
    let mut s = connect(&api);
    assert_eq!(raw_get(&mut s, "/healthz"), 200);
    // Idle for longer than the header timeout: still open, and reused.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(raw_get(&mut s, "/healthz"), 200, "kept alive past header_read_timeout");
    let answered = Instant::now();
    let at = closed_at(&mut s, answered + Duration::from_secs(20))
        .expect("an idle keep-alive connection is closed");
    let idle = at - answered;
    assert!(idle >= Duration::from_millis(2500), "closed after {idle:?}, before idle_timeout");
}

#[test]
fn connections_over_max_connections_are_answered_503_and_the_server_recovers() {
    let sb = sandbox("front-max-conns", "[server]\nmax_connections = 10\n");
    let api = Api::start(&sb);
    let mut streams: Vec<TcpStream> = (0..16)
        .map(|_| {
            let mut s = connect(&api);
            send_get(&mut s, "/healthz");
            s
        })
        .collect();
    let codes: Vec<u16> = streams.iter_mut().map(read_status).collect();
    let ok = codes.iter().filter(|c| **c == 200).count();
    let refused = codes.iter().filter(|c| **c == 503).count();
    // The test client's own kept-alive connection may hold one of the 10.
    assert!((9..=10).contains(&ok), "at most 10 open: {codes:?}");
    assert!(refused >= 1 && ok + refused >= 15, "the others are answered 503: {codes:?}");
    let over = reqwest::blocking::get(api.url("/healthz")).expect("an answer, not a reset");
    assert_eq!(over.status(), 503);
    assert_eq!(over.headers()["retry-after"], "1");
    let text = over.text().unwrap_or_default();
    assert!(text.contains("max_connections"), "{text}");
    drop(streams);
    assert!(
        crate::util::eventually(Duration::from_secs(20), || {
            reqwest::blocking::get(api.url("/healthz")).is_ok_and(|r| r.status() == 200)
        }),
        "the server takes connections again once they close"
    );
}

/// Starts a run of `gated` through the API and waits until its gate waits.
fn gated_run(api: &Api) -> String {
    let started =
        api.post("/api/v1/workflows/gated/runs", Some(ALICE), &json!({"inputs": {"site": "dc07"}}));
    assert_eq!(started.status, 201, "{started:?}");
    let id = started.body["id"].as_str().expect("run id").to_string();
    api.wait_run(ALICE, &id, Duration::from_secs(30), |d| Api::step_status(d, "gate") == "waiting");
    id
}

#[test]
fn event_streams_per_user_are_capped_and_not_cut_by_the_idle_timeout() {
    let sb = sandbox(
        "front-streams",
        "[server]\nmax_streams_per_user = 2\nheader_read_timeout = \"1s\"\nidle_timeout = \"1s\"\n",
    );
    let api = Api::start(&sb);
    let run = gated_run(&api);
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let open = |token: &str| {
        client
            .get(api.url(&format!("/api/v1/runs/{run}/events")))
            .bearer_auth(token)
            .send()
            .expect("events")
    };
    let first = open(BOB);
    let second = open(BOB);
    assert_eq!((first.status().as_u16(), second.status().as_u16()), (200, 200));
    let third = open(BOB);
    assert_eq!(third.status(), 429);
    assert!(third.headers().contains_key("retry-after"));
    let text = third.text().unwrap_or_default();
    assert!(text.contains("max_streams_per_user"), "{text}");
    assert_eq!(open(CAROL).status(), 200, "the cap is per user");

    // Longer than idle_timeout: a stream in flight is not idle.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(open(BOB).status(), 429, "both streams are still open");
    let approved =
        api.post(&format!("/api/v1/runs/{run}/steps/gate/approve"), Some(BOB), &json!({}));
    assert_eq!(approved.status, 200, "{approved:?}");
    let mut lines = BufReader::new(first).lines();
    let seen = lines.by_ref().map_while(Result::ok).find(|l| l.contains("approval_recorded"));
    assert!(seen.is_some(), "the stream still delivers events");

    drop(second);
    drop(lines);
    assert!(
        crate::util::eventually(Duration::from_secs(40), || open(BOB).status() == 200),
        "closed streams free their slots"
    );
}

#[test]
fn serve_refuses_a_non_loopback_address_without_users_naming_the_fix() {
    let sb = Sandbox::new("front-exposed");
    let port = free_port();
    let mut cmd = sb.command(&["serve"]);
    cmd.env("LIFEBOAT_SERVER__LISTEN", format!("0.0.0.0:{port}"));
    let out = output_within(cmd, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(1), "{}{}", stdout(&out), stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("0.0.0.0") && err.contains("[[users]]"), "{err}");
    assert!(err.contains("token_env = \"LIFEBOAT_TOKEN_ALICE\""), "an example: {err}");
    assert!(err.contains("listen = \"127.0.0.1:"), "the other way out: {err}");

    // With users it starts, and says /metrics is open.
    let sb = sandbox("front-exposed-users", "");
    let log = sb.path("serve.log");
    let file = std::fs::File::create(&log).expect("log");
    let child = sb
        .command(&["serve"])
        .env("LIFEBOAT_SERVER__LISTEN", format!("0.0.0.0:{port}"))
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log"))
        .stderr(file)
        .spawn()
        .expect("serve");
    let _serve = crate::util::Serve::from(child);
    let url = format!("http://127.0.0.1:{port}/healthz");
    assert!(
        crate::util::eventually(Duration::from_secs(30), || {
            reqwest::blocking::get(&url).is_ok_and(|r| r.status() == 200)
        }),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("metrics_token_env"), "{text}");
}

#[test]
fn metrics_require_the_token_named_by_metrics_token_env() {
    let config = "[server]\nmetrics_token_env = \"LIFEBOAT_METRICS_TOKEN\"\n";
    let unset = sandbox("front-metrics-unset", config);
    let out = unset.lifeboat(&["serve"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("metrics_token_env variable LIFEBOAT_METRICS_TOKEN is not set"));

    let sb = sandbox("front-metrics", config).env("LIFEBOAT_METRICS_TOKEN", "scrape-me");
    let api = Api::start(&sb);
    let none = api.send(api.client().get(api.url("/metrics")));
    assert_eq!(none.status, 401, "{none:?}");
    assert!(none.message().contains("metrics_token_env"), "{none:?}");
    let wrong = api.get("/metrics", Some(BOB));
    assert_eq!(wrong.status, 401, "{wrong:?}");
    let right = api.get("/metrics", Some("scrape-me"));
    assert_eq!(right.status, 200, "{right:?}");
    assert!(right.body.as_str().is_some_and(|t| t.contains("lifeboat_http_requests")));
    assert_eq!(api.get("/healthz", None).status, 200, "health stays open");
}

#[test]
fn an_unknown_hook_is_404_without_naming_the_configured_ones() {
    let sb = sandbox("front-unknown-hook", "");
    let api = Api::start(&sb);
    let reply = api.post("/hooks/nope", Some(HOOK_TOKEN), &json!({}));
    assert_eq!(reply.status, 404, "{reply:?}");
    assert!(reply.message().contains("nope"), "{reply:?}");
    let text = reply.body.to_string();
    assert!(!text.contains("alertmanager") && !text.contains("signed"), "{text}");
}

/// `audit list --json` entries with `action`.
fn audit(sb: &Sandbox, action: &str) -> Vec<Value> {
    let out = sb.ok(&["audit", "list", "--json", "--limit", "1000"]);
    let entries: Value = serde_json::from_slice(&out.stdout).expect("audit list --json");
    let entries = entries.as_array().cloned().unwrap_or_default();
    entries.into_iter().filter(|e| e["action"] == action).collect()
}

/// An Alertmanager payload of `n` distinct SiteDown alerts.
fn storm(n: usize) -> Value {
    let alerts: Vec<(String, Value)> = (0..n)
        .map(|i| (format!("fp{i}"), json!({"alertname": "SiteDown", "site": format!("dc{i}")})))
        .collect();
    let refs: Vec<(&str, Value)> = alerts.iter().map(|(f, l)| (f.as_str(), l.clone())).collect();
    alertmanager_payload("firing", &refs)
}

#[test]
fn a_payload_over_max_alerts_is_refused_413_and_starts_nothing() {
    let sb = sandbox("front-max-alerts", "");
    let api = Api::start(&sb);
    let reply = api.post("/hooks/alertmanager", Some(HOOK_TOKEN), &storm(100));
    assert_eq!(reply.status, 413, "{reply:?}");
    let message = reply.message();
    assert!(message.contains("100 alerts") && message.contains("at most 50"), "{message}");
    assert!(message.contains("[hooks.alertmanager] max_alerts"), "{message}");
    assert_eq!(api.get("/api/v1/runs", Some(ALICE)).body, json!([]), "nothing started");
    let ok = api.post("/hooks/alertmanager", Some(HOOK_TOKEN), &storm(3));
    assert_eq!(ok.status, 202, "{ok:?}");
    assert_eq!(ok.body["runs"].as_array().map(Vec::len), Some(3));
    let refused = audit(&sb, "hook_refused");
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert_eq!(refused[0]["actor"], "hook:alertmanager");
    assert_eq!(refused[0]["payload"]["reason"], "too_many_alerts");
    assert_eq!(refused[0]["payload"]["alerts"], 100);
}

#[test]
fn a_hook_over_its_rate_is_answered_429_with_retry_after_and_audited_once() {
    let sb = sandbox(
        "front-hook-rate",
        "[hooks.slow]\nformat = \"json\"\nbearer_token_env = \"LIFEBOAT_HOOK_TOKEN\"\nrate_per_minute = 6\nburst = 2\n",
    );
    let api = Api::start(&sb);
    let event = json!({"type": "nothing-matches"});
    for _ in 0..2 {
        let ok = api.post("/hooks/slow", Some(HOOK_TOKEN), &event);
        assert_eq!(ok.status, 202, "{ok:?}");
    }
    let over = api
        .client()
        .post(api.url("/hooks/slow"))
        .bearer_auth(HOOK_TOKEN)
        .json(&event)
        .send()
        .expect("hook");
    assert_eq!(over.status(), 429);
    let retry: u64 = over.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=10).contains(&retry), "one request per 10s: Retry-After {retry}");
    let text = over.text().unwrap();
    assert!(text.contains("[hooks.slow] rate_per_minute"), "{text}");
    for _ in 0..30 {
        assert_eq!(api.post("/hooks/slow", Some(HOOK_TOKEN), &event).status, 429);
    }
    // Other hooks have their own bucket.
    assert_eq!(api.post("/hooks/alertmanager", Some(HOOK_TOKEN), &storm(1)).status, 202);
    let refused = audit(&sb, "hook_refused");
    assert_eq!(refused.len(), 1, "a flood is audited once per minute: {refused:#?}");
    assert_eq!(refused[0]["payload"]["reason"], "rate_limited");
    assert_eq!(refused[0]["payload"]["rate_per_minute"], 6);
}

fn signed(api: &Api, body: &[u8], header: &str) -> crate::util::Reply {
    api.send(
        api.client()
            .post(api.url("/hooks/signed"))
            .header("Content-Type", "application/json")
            .header("X-Lifeboat-Signature", header)
            .body(body.to_vec()),
    )
}

#[test]
fn a_replayed_signed_request_is_refused_409_on_any_replica_and_audited() {
    let sb = sandbox("front-replay", "");
    let a = Api::start(&sb);
    let b = Api::start(&sb);
    let body = serde_json::to_vec(&json!({"type": "incident", "site": "dc03"})).unwrap();
    let now = chrono::Utc::now().timestamp();
    let header = lifeboat_notify::signature::sign(HMAC_SECRET.as_bytes(), now, &body);
    let first = signed(&a, &body, &header);
    assert_eq!(first.status, 202, "{first:?}");
    assert_eq!(first.body["runs"].as_array().map(Vec::len), Some(1));

    let replay = signed(&a, &body, &header);
    assert_eq!(replay.status, 409, "{replay:?}");
    assert!(replay.message().contains("already accepted"), "{replay:?}");
    let elsewhere = signed(&b, &body, &header);
    assert_eq!(elsewhere.status, 409, "another replica knows it too: {elsewhere:?}");
    let (t, mac) = header.split_once(",v1=").unwrap();
    let respelled = format!("v1={}, {t}", mac.to_uppercase());
    assert_eq!(signed(&b, &body, &respelled).status, 409, "the same proof, spelled otherwise");

    // Signed anew (another timestamp): a new request, started (no dedupe key).
    let fresh = lifeboat_notify::signature::sign(HMAC_SECRET.as_bytes(), now - 1, &body);
    assert_eq!(signed(&a, &body, &fresh).status, 202);
    let runs = a.get("/api/v1/runs", Some(ALICE)).body;
    assert_eq!(runs.as_array().map(Vec::len), Some(2), "{runs:#}");
    let refused = audit(&sb, "hook_refused");
    assert!(!refused.is_empty() && refused.len() <= 2, "one per replica at most: {refused:#?}");
    assert!(refused.iter().all(|e| e["payload"]["reason"] == "replayed"), "{refused:#?}");
    assert_eq!(refused[0]["payload"]["timestamp"], now);
}

/// Holds `run`'s lease as a stuck worker would (once its own worker has
/// released it), so decisions stay queued while the test looks.
fn hold_lease(sb: &Sandbox, run: &str) {
    let far = chrono::Utc::now().timestamp_millis() + 600_000;
    let hold = format!(
        "UPDATE runs SET lease_owner = 'stuck-worker', lease_expires_at = {far} \
         WHERE id = '{run}' AND lease_owner IS NULL"
    );
    assert!(
        crate::util::eventually(Duration::from_secs(30), || sb.sql(&hold) == 1),
        "the worker never released run {run}"
    );
}

#[test]
fn a_decision_that_cannot_take_effect_is_refused_409_and_the_audit_shows_request_then_outcome() {
    let sb = sandbox("front-decisions", "");
    let api = Api::start(&sb);
    let run = gated_run(&api);
    hold_lease(&sb, &run);
    let approve = format!("/api/v1/runs/{run}/steps/gate/approve");
    let reject = format!("/api/v1/runs/{run}/steps/gate/reject");
    let first = api.post(&approve, Some(BOB), &json!({"comment": "looks right"}));
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.body["status"], "queued");
    let twice = api.post(&approve, Some(BOB), &json!({}));
    assert_eq!(twice.status, 409, "{twice:?}");
    assert!(twice.message().contains("already queued"), "{twice:?}");
    let turned = api.post(&reject, Some(BOB), &json!({}));
    assert_eq!(turned.status, 409, "{turned:?}");
    assert!(turned.message().contains("contradictory rejection"), "{turned:?}");
    let mut cli = sb.command(&["approve", &run, "gate", "--as", "bob"]);
    cli.env("LIFEBOAT_TOKEN", BOB);
    let out = output_within(cli, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stderr(&out).contains("already queued"), "{}", stderr(&out));
    // Carol's approval makes two: the gate will pass, so a rejection cannot win.
    assert_eq!(api.post(&approve, Some(CAROL), &json!({})).status, 200);
    let late = api.post(&reject, Some(BOB), &json!({}));
    assert_eq!(late.status, 409, "{late:?}");
    // A request that got past the checks anyway (an older replica): the
    // driver refuses it, and the audit log says so.
    let forged = format!(
        "INSERT INTO requests (run_id, kind, step_id, data, actor, at) VALUES ('{run}', 'approve', 'gate', NULL, 'mallory', 0)"
    );
    assert_eq!(sb.sql(&forged), 1);
    assert!(audit(&sb, "approve_applied").is_empty(), "nothing applied yet");

    let release =
        format!("UPDATE runs SET lease_owner = NULL, lease_expires_at = NULL WHERE id = '{run}'");
    assert_eq!(sb.sql(&release), 1);
    let doc = api.wait_run(ALICE, &run, Duration::from_secs(60), |d| d["status"] == "succeeded");
    let gate = doc["steps"].as_array().unwrap().iter().find(|s| s["id"] == "gate").unwrap();
    assert_eq!(gate["outputs"]["approved_by"], json!(["bob", "carol"]), "{doc:#}");
    let entries = sb.ok(&["audit", "list", "--json", "--run", &run]);
    let entries: Vec<Value> = serde_json::from_slice(&entries.stdout).expect("audit list --json");
    let decisions: Vec<(String, String)> = entries
        .iter()
        .filter(|e| e["step_id"] == "gate")
        .map(|e| (e["actor"].as_str().unwrap().into(), e["action"].as_str().unwrap().into()))
        .collect();
    let pairs: Vec<(&str, &str)> =
        decisions.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert_eq!(
        pairs,
        [
            ("bob", "approve_requested"),
            ("carol", "approve_requested"),
            ("bob", "approve_applied"),
            ("carol", "approve_applied"),
            ("mallory", "approve_refused"),
        ],
        "{entries:#?}"
    );
    let refused = entries.iter().find(|e| e["action"] == "approve_refused").unwrap();
    assert!(refused["payload"]["reason"].as_str().unwrap().contains("succeeded"), "{refused:#}");
    assert_eq!(sb.ok(&["audit", "verify"]).status.code(), Some(0));
}
