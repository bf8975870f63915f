//! The web UI and one-click confirmation links, over real HTTP on loopback:
//! `GET /confirm/{token}` only shows a form, its `POST` decides as the
//! person whose API token it carries; `/` serves the app; the run's graph
//! comes coloured by step status; the page shows control characters from
//! step output visibly; the cockpit runs an incident in a real browser.
//! SQLite, or Postgres with LIFEBOAT_E2E_BACKEND=postgres.

use std::time::Duration;

use lifeboat_orchestrator::exec::links::{LINK_VALIDITY_SECS, LinkSigner};
use lifeboat_orchestrator::exec::people::Decision;
use serde_json::{Value, json};

use crate::util::{Api, Page, Sandbox};

const LINK_SECRET: &str = "link-secret-for-tests";

/// Prepares, waits for bob's approval, then finishes.
const FAILOVER: &str = r#"name: failover
steps:
  prepare:
    uses: set
    with: { ready: "yes" }
  approve:
    needs: [prepare]
    uses: approval
    with: { approvers: [bob], message: "promote <dc02> & fence dc01" }
  done:
    needs: [approve]
    uses: set
    with: { ok: "yes" }
"#;

/// A sandbox with the users and the workflow; `links`: with a link secret.
fn sandbox(name: &str, links: bool) -> Sandbox {
    let mut sb = Sandbox::new(name).with_users(&["alice", "bob", "carol", "vic"]);
    if links {
        sb = sb.env("LIFEBOAT_LINK_SECRET", LINK_SECRET);
    }
    std::fs::create_dir_all(sb.path("workflows")).expect("workflows dir");
    sb.write("workflows/failover.yaml", FAILOVER);
    sb
}

/// A run of `failover` started by alice, once its gate waits.
fn waiting_run(api: &Api) -> String {
    let created = api.post("/api/v1/workflows/failover/runs", Some("alice-token"), &json!({}));
    assert_eq!(created.status, 201, "{created:?}");
    let run = created.body["id"].as_str().expect("run id").to_string();
    api.wait_run("vic-token", &run, Duration::from_secs(30), |d| {
        Api::step_status(d, "approve") == "waiting"
    });
    run
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn link(run: &str, decision: Decision, at: i64) -> String {
    format!(
        "/confirm/{}",
        LinkSigner::new(LINK_SECRET.as_bytes()).token(run, "approve", decision, at)
    )
}

/// The decisions (approve, reject, ack) anyone asked for on `run`. A
/// decision is queued before its answer is sent, so a request that decided
/// shows here by the time it returns.
fn decisions(sb: &Sandbox, run: &str) -> Vec<Vec<Option<String>>> {
    sb.rows(&format!(
        "SELECT kind, actor FROM requests WHERE run_id = '{run}' \
         AND kind IN ('approve', 'reject', 'ack')"
    ))
}

fn gate_status(api: &Api, run: &str) -> String {
    let doc = api.get(&format!("/api/v1/runs/{run}"), Some("vic-token"));
    Api::step_status(&doc.body, "approve").to_string()
}

/// An HTML page with the headers every confirmation page carries.
fn assert_html_page(page: &Page) {
    assert!(page.header("content-type").starts_with("text/html"), "{page:?}");
    let csp = page.header("content-security-policy");
    assert!(
        csp.contains("default-src 'none'")
            && csp.contains("style-src 'unsafe-inline'")
            && csp.contains("form-action 'self'"),
        "{csp}"
    );
    assert_eq!(page.header("referrer-policy"), "no-referrer");
    assert!(page.text.starts_with("<!doctype html>"), "{}", page.text);
}

#[test]
fn a_confirmation_link_decides_only_when_an_allowed_approver_posts_its_form() {
    let sb = sandbox("ui-confirm", true);
    let api = Api::start(&sb);
    let run = waiting_run(&api);
    let path = link(&run, Decision::Approve, now());

    for _ in 0..3 {
        let page = api.page(api.client().get(api.url(&path)));
        assert_eq!(page.status, 200, "{}", page.text);
        assert_html_page(&page);
        let text = &page.text;
        assert!(
            text.contains(&format!(
                "Approve step <code>approve</code> of run <code>{run}</code> (failover)?"
            )),
            "{text}"
        );
        assert!(text.contains("<dt>Step status</dt><dd>waiting</dd>"), "{text}");
        assert!(text.contains("promote &lt;dc02&gt; &amp; fence dc01"), "escaped: {text}");
        assert!(text.contains(&format!("<form method=\"post\" action=\"{path}\">")), "{text}");
        assert!(text.contains("type=\"password\""), "{text}");
    }
    assert!(decisions(&sb, &run).is_empty(), "a GET never decides");
    assert_eq!(gate_status(&api, &run), "waiting");

    let page = api.post_form(&path, &[("api_token", "not-a-token"), ("comment", "x")]);
    assert_eq!(page.status, 401, "{}", page.text);
    assert_html_page(&page);
    assert!(page.text.contains("not valid"), "{}", page.text);

    let page = api.post_form(&path, &[("api_token", "carol-token")]);
    assert_eq!(page.status, 403, "{}", page.text);
    assert!(page.text.contains("carol is not among the approvers (bob)"), "{}", page.text);
    let page = api.post_form(&path, &[("api_token", "vic-token")]);
    assert_eq!(page.status, 403, "{}", page.text);
    assert!(page.text.contains("approver or admin"), "{}", page.text);
    assert!(decisions(&sb, &run).is_empty(), "refused posts decide nothing");
    assert_eq!(gate_status(&api, &run), "waiting");

    let page = api.post_form(&path, &[("api_token", "bob-token"), ("comment", "ship it <now>")]);
    assert_eq!(page.status, 200, "{}", page.text);
    assert_html_page(&page);
    assert!(page.text.contains("Approved by bob"), "{}", page.text);
    let doc =
        api.wait_run("vic-token", &run, Duration::from_secs(30), |d| d["status"] == "succeeded");
    let gate = doc["steps"].as_array().unwrap().iter().find(|s| s["id"] == "approve").unwrap();
    assert_eq!(gate["outputs"]["approved_by"], json!(["bob"]), "{doc:#}");
    assert_eq!(gate["outputs"]["comment"], "ship it <now>");

    let out = sb.ok(&["audit", "list", "--json", "--run", &run]);
    let entries: Vec<Value> = serde_json::from_slice(&out.stdout).expect("audit list --json");
    let approvals: Vec<&Value> =
        entries.iter().filter(|e| e["action"] == "approve_requested").collect();
    assert_eq!(approvals.len(), 1, "{entries:#?}");
    assert!(entries.iter().any(|e| e["action"] == "approve_applied"), "{entries:#?}");
    assert_eq!(approvals[0]["actor"], "bob");
    assert_eq!(approvals[0]["step_id"], "approve");
    assert_eq!(approvals[0]["payload"]["comment"], "ship it <now>");

    let again = api.post_form(&path, &[("api_token", "bob-token")]);
    assert_eq!(again.status, 409, "{}", again.text);
    assert!(again.text.contains("already ended"), "{}", again.text);
    let page = api.page(api.client().get(api.url(&path)));
    assert_eq!(page.status, 409, "{}", page.text);
    assert!(!page.text.contains("<form"), "no form once decided: {}", page.text);
}

#[test]
fn expired_forged_and_oversized_confirmations_are_refused() {
    let sb = sandbox("ui-refused", true);
    let api = Api::start(&sb);
    let run = waiting_run(&api);

    let expired = link(&run, Decision::Approve, now() - LINK_VALIDITY_SECS - 60);
    let page = api.page(api.client().get(api.url(&expired)));
    assert!(matches!(page.status, 400 | 410), "{}", page.text);
    assert_html_page(&page);
    assert!(page.text.contains("This link has expired"), "{}", page.text);
    let page = api.post_form(&expired, &[("api_token", "bob-token")]);
    assert!(matches!(page.status, 400 | 410), "{}", page.text);

    let other = LinkSigner::new(b"another-secret").token(&run, "approve", Decision::Approve, now());
    let valid =
        LinkSigner::new(LINK_SECRET.as_bytes()).token(&run, "approve", Decision::Reject, now());
    // The same signature over another decision: forged.
    let (_, signature) = valid.split_once('.').unwrap();
    let approve_payload: String =
        format!("{run}\napprove\napprove").bytes().map(|b| format!("{b:02x}")).collect();
    let tampered = format!("{approve_payload}.{signature}");
    for token in
        [other.as_str(), tampered.as_str(), "garbage", "%3Cscript%3Ealert(1)%3C%2Fscript%3E"]
    {
        let path = format!("/confirm/{token}");
        let page = api.page(api.client().get(api.url(&path)));
        assert_eq!(page.status, 400, "{token}: {}", page.text);
        assert_html_page(&page);
        assert!(page.text.contains("This link is not valid"), "{}", page.text);
        assert!(!page.text.contains("<script>"), "{}", page.text);
        let page = api.post_form(&path, &[("api_token", "bob-token")]);
        assert_eq!(page.status, 400, "{token}: {}", page.text);
    }

    let path = link(&run, Decision::Approve, now());
    let big = "x".repeat(20 * 1024);
    let page = api.post_form(&path, &[("api_token", "bob-token"), ("comment", &big)]);
    assert_eq!(page.status, 413, "{}", page.text);
    let page = api.send(api.client().post(api.url(&path)).json(&json!({"api_token": "bob-token"})));
    assert_eq!(page.status, 415, "{page:?}");
    assert!(decisions(&sb, &run).is_empty(), "refused posts decide nothing");
    assert_eq!(gate_status(&api, &run), "waiting");
}

#[test]
fn without_a_link_secret_confirmation_pages_say_links_are_off() {
    let sb = sandbox("ui-nolinks", false);
    let api = Api::start(&sb);
    let token =
        LinkSigner::new(LINK_SECRET.as_bytes()).token("r", "approve", Decision::Approve, now());
    let page = api.page(api.client().get(api.url(&format!("/confirm/{token}"))));
    assert_eq!(page.status, 404, "{}", page.text);
    assert_html_page(&page);
    assert!(page.text.contains("not enabled"), "{}", page.text);
    assert!(page.text.contains("LIFEBOAT_LINK_SECRET"), "{}", page.text);
    let page = api.post_form(&format!("/confirm/{token}"), &[("api_token", "bob-token")]);
    assert_eq!(page.status, 404, "{}", page.text);
}

/// The fill of the first shape after step `id`'s group in an SVG.
fn fill_of<'a>(svg: &'a str, id: &str) -> &'a str {
    let at = svg.find(&format!("id=\"lb-step-{id}\"")).unwrap_or_else(|| panic!("no {id}: {svg}"));
    let rest = &svg[at..];
    let start = rest.find("fill=\"").expect("a fill") + 6;
    &rest[start..start + rest[start..].find('"').unwrap()]
}

#[test]
fn the_web_ui_is_served_and_the_run_graph_is_coloured_by_step_status() {
    let sb = sandbox("ui-app", true);
    let api = Api::start(&sb);

    let page = api.page(api.client().get(api.url("/")));
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.header("content-type").starts_with("text/html"), "{page:?}");
    assert!(page.text.contains("<title>lifeboat</title>"));
    assert!(page.text.contains("/api/v1/runs"), "the app reads the API");
    assert!(page.text.contains("graph.svg") && page.text.contains("sessionStorage"));
    assert!(!page.text.contains("src=\"http") && !page.text.contains("href=\"http"), "no CDN");
    assert!(page.header("content-security-policy").contains("script-src 'sha256-"), "{page:?}");

    let run = waiting_run(&api);
    let linked = api.page(api.client().get(api.url(&format!("/runs/{run}"))));
    assert_eq!(linked.status, 200, "run links in notifications open the app");
    assert_eq!(linked.text, page.text);

    let graph = format!("/api/v1/runs/{run}/graph.svg");
    let anonymous = api.get(&graph, None);
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    assert_eq!(anonymous.body["error"]["code"], "unauthorized");
    let missing =
        api.get("/api/v1/runs/00000000-0000-0000-0000-000000000000/graph.svg", Some("vic-token"));
    assert_eq!(missing.status, 404, "{missing:?}");
    assert_eq!(missing.body["error"]["code"], "not_found");

    let svg = api.page(api.client().get(api.url(&graph)).bearer_auth("vic-token"));
    assert_eq!(svg.status, 200, "{}", svg.text);
    assert!(svg.header("content-type").starts_with("image/svg+xml"), "{svg:?}");
    assert!(svg.text.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(svg.text.contains("id=\"lb-step-prepare\" data-status=\"succeeded\""), "{}", svg.text);
    assert!(svg.text.contains("id=\"lb-step-approve\" data-status=\"waiting\""), "{}", svg.text);
    assert!(svg.text.contains("id=\"lb-step-done\" data-status=\"pending\""), "{}", svg.text);
    let (succeeded, waiting, pending) =
        (fill_of(&svg.text, "prepare"), fill_of(&svg.text, "approve"), fill_of(&svg.text, "done"));
    assert!(
        succeeded != waiting && waiting != pending && succeeded != pending,
        "{succeeded} {waiting} {pending}"
    );
}

/// Fails (after a successful API call) with its last stderr line quoted in
/// the step's error: ESC sequences, a carriage return, DEL, the 8-bit CSI
/// (U+009B) and a right-to-left override.
const HOSTILE: &str = r#"name: hostile
steps:
  noisy:
    uses: shell
    with:
      script: |
        printf 'last words \033]0;pwned\007 \033[2J over\rwrite \177 \302\23331m \342\200\256gnp.exe\n' >&2
        exit 1
"#;

#[test]
fn the_web_ui_shows_control_characters_from_step_output_visibly() {
    let sb = sandbox("ui-inject", false);
    sb.write("workflows/hostile.yaml", HOSTILE);
    let api = Api::start(&sb);
    let created = api.post("/api/v1/workflows/hostile/runs", Some("alice-token"), &json!({}));
    assert_eq!(created.status, 201, "{created:?}");
    let run = created.body["id"].as_str().expect("run id").to_string();
    api.wait_run("vic-token", &run, Duration::from_secs(30), |d| d["status"] == "failed");

    // The API returns the real text; JSON escapes C0 controls (ESC, BEL, CR).
    let raw = api
        .page(api.client().get(api.url(&format!("/api/v1/runs/{run}"))).bearer_auth("vic-token"));
    assert_eq!(raw.status, 200, "{}", raw.text);
    assert!(!raw.text.contains(['\x1b', '\x07', '\r']), "{}", raw.text);
    assert!(raw.text.contains("\\u001b]0;pwned\\u0007"), "{}", raw.text);
    let doc: Value = serde_json::from_str(&raw.text).expect("run JSON");
    let error = doc["steps"][0]["error"].as_str().expect("step error").to_string();
    assert_eq!(
        error,
        "exit status 1: last words \x1b]0;pwned\x07 \x1b[2J over\rwrite \x7f \u{9b}31m \u{202e}gnp.exe"
    );

    // The page's own script, run against this API, shows it escaped by
    // the same rule as the terminal.
    let Some(page) = render_run_page(&api, "vic-token", &run) else { return };
    assert_eq!(page["errors"], json!([]), "{page:#}");
    let steps = page["text"]["steps-body"].as_str().expect("steps table");
    let shown = lifeboat_orchestrator::text::visible(&error);
    assert!(steps.contains(shown.as_ref()), "{shown} not in {steps:?}");
    let drawer = page["text"]["drawer-body"].as_str().expect("the step drawer");
    assert!(drawer.contains(shown.as_ref()), "{shown} not in the drawer: {drawer:?}");
    assert!(drawer.contains("last words \\x1b]0;pwned"), "stderr made visible: {drawer:?}");
    assert!(
        shown
            .contains("\\x1b]0;pwned\\x07 \\x1b[2J over\\rwrite \\x7f \\u{9b}31m \\u{202e}gnp.exe"),
        "{shown}"
    );
    let mut every = vec![page["title"].as_str().unwrap_or("").to_string()];
    every.extend(
        page["text"].as_object().unwrap().values().filter_map(|v| v.as_str()).map(String::from),
    );
    every.extend(
        page["attributes"].as_array().unwrap().iter().filter_map(|v| v.as_str()).map(String::from),
    );
    for text in &every {
        assert_eq!(
            lifeboat_orchestrator::text::visible(text),
            *text,
            "raw control characters on the page"
        );
    }
}

/// What the web UI shows for run `run` in a real browser
/// (tests/ui/render.py); `None`, saying so, without chromium or Playwright.
fn render_run_page(api: &Api, token: &str, run: &str) -> Option<Value> {
    if !browser_available() {
        return None;
    }
    let root = crate::util::root();
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(root.join("tests/ui/render.py")).arg(api.url("")).args([token, run]);
    let out = crate::util::output_within(cmd, Duration::from_secs(90));
    assert!(out.status.success(), "render.py: {}", crate::util::stderr(&out));
    Some(serde_json::from_slice(&out.stdout).expect("render.py prints JSON"))
}

/// Whether Debian's chromium and Playwright for Python are here; when not,
/// the test fails under scripts/test.sh and is skipped, saying so, elsewhere.
fn browser_available() -> bool {
    let chromium =
        std::env::var("LIFEBOAT_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_string());
    let playwright =
        std::process::Command::new("python3").args(["-c", "import playwright"]).output();
    let ok =
        std::path::Path::new(&chromium).exists() && playwright.is_ok_and(|o| o.status.success());
    if !ok {
        crate::util::tool_missing("chromium or Playwright for Python is missing");
    }
    ok
}

/// A P1 failover that olga (operator and approver) starts and that two of
/// olga, bob and root must approve, but not whoever started it
/// (`exclude_requester`); `promote` after the gate is irreversible. The
/// site's pattern is Rust regex syntax a browser cannot check, so the
/// server's answer is what the form shows.
const P1_FAILOVER: &str = r#"name: p1-failover
description: Promote the standby after the primary is lost.
objectives: { rto: 5m, rpo: 30s }
inputs:
  severity: { type: string, enum: [P0, P1, P2, P3], default: P1 }
  site: { type: string, default: dc1, pattern: '\Adc[0-9]+\z', description: the site to promote }
steps:
  prepare:
    uses: shell
    with: { command: [echo, replica lag 0 bytes] }
  approve:
    needs: [prepare]
    uses: approval
    with:
      approvers: [olga, bob, root]
      min_approvals: 2
      exclude_requester: true
      message: "promote {{inputs.site}}"
      timeout: 1h
  promote:
    needs: [approve]
    uses: set
    irreversible: true
    with: { promoted: "{{inputs.site}}" }
  done:
    needs: [promote]
    uses: set
    with: { ok: "yes" }
"#;

/// Fails at `c` unless `fix` is `yes`, after `b`, which has a rollback.
const FLAKY: &str = r#"name: flaky
inputs:
  fix: { type: string, enum: ["no", "yes"], default: "no" }
steps:
  a:
    uses: set
    with: { x: "1" }
  b:
    needs: [a]
    uses: shell
    with: { command: [echo, b] }
    rollback: { uses: shell, with: { command: [echo, undo-b] } }
  c:
    needs: [b]
    uses: shell
    with: { script: 'test "$FIX" = yes', env: { FIX: "{{inputs.fix}}" } }
"#;

/// The cockpit in a real browser (tests/ui/cockpit.py: Debian's chromium
/// through Playwright for Python; its docstring lists what it covers: sign-in,
/// the waiting-for-me count, refusals next to the button, the step drawer,
/// the start form with a server field error, pause/resume, retry from a step
/// of a rolled-back run, a cut connection resumed, the 400 px layout, the
/// irreversible warning, live updates, search and counts, axe-core). Never
/// skipped under scripts/test.sh (`browser_available`).
#[test]
fn the_web_ui_runs_an_incident_in_a_real_browser() {
    if !browser_available() {
        return;
    }
    let sb = Sandbox::new("ui-browser")
        .with_users(&["bob", "vic", "root"])
        .with_user("olga", &["operator", "approver"]);
    std::fs::create_dir_all(sb.path("workflows")).expect("workflows dir");
    sb.write("workflows/p1-failover.yaml", P1_FAILOVER);
    sb.write("workflows/flaky.yaml", FLAKY);
    let api = Api::start(&sb);
    let start = |workflow: &str| {
        let created =
            api.post(&format!("/api/v1/workflows/{workflow}/runs"), Some("olga-token"), &json!({}));
        assert_eq!(created.status, 201, "{created:?}");
        created.body["id"].as_str().expect("run id").to_string()
    };
    let flaky = start("flaky");
    api.wait_run("vic-token", &flaky, Duration::from_secs(30), |d| d["status"] == "rolled_back");
    let run = start("p1-failover");
    api.wait_run("vic-token", &run, Duration::from_secs(30), |d| {
        Api::step_status(d, "approve") == "waiting"
    });

    let root = crate::util::root();
    let artifacts = root.join("target/ui-artifacts");
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(root.join("tests/ui/cockpit.py"))
        .arg(api.url(""))
        .arg(&run)
        .arg(&flaky)
        .arg(&artifacts);
    let out = crate::util::output_within(cmd, Duration::from_secs(240));
    assert!(
        out.status.success(),
        "cockpit.py failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        crate::util::stderr(&out)
    );

    let done = api.get(&format!("/api/v1/runs/{run}"), Some("vic-token"));
    assert_eq!(done.body["status"], "succeeded", "{done:?}");
    let retried = api.get(&format!("/api/v1/runs/{flaky}"), Some("vic-token"));
    assert_eq!(retried.body["status"], "succeeded", "{retried:?}");
    assert_eq!(retried.body["inputs"]["fix"], "yes", "{retried:?}");
}
