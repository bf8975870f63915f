//! `lifeboat doctor` through the real binary, against real servers: an SMTP
//! server that requires a login, an HTTP receiver, a SQL connection, and
//! the database itself; and `serve` exporting the same checks as
//! `lifeboat_readiness`.

use std::time::Duration;

use serde_json::Value;

use crate::util::{Api, Receiver, Sandbox, SmtpSink, eventually, lifeboat_in, stderr, stdout};

const WORKFLOW: &str = "name: ready
notify:
  - on: [failed]
    channels: [status-hook]
steps:
  check:
    uses: shell
    with: { command: [\"true\"] }
";

/// A sandbox whose channels reach `sink` (as `user`/`password`) and `hook`.
fn sandbox(name: &str, sink: &SmtpSink, hook: &Receiver, password: &str) -> Sandbox {
    let config = format!(
        "\
         [channels.mail]\ntype = \"email\"\nsmtp_url = \"smtp://127.0.0.1:{}\"\n\
         from = \"lifeboat@example.org\"\nto = [\"oncall@example.org\"]\n\
         username_env = \"DOCTOR_SMTP_USER\"\npassword_env = \"DOCTOR_SMTP_PASSWORD\"\n\n\
         [channels.status-hook]\ntype = \"webhook\"\nurl = \"{}\"\n\n\
         [connections.reporting]\nurl_env = \"DOCTOR_REPORTING_URL\"\n",
        sink.port,
        hook.url("/hooks/status?token=secret-path")
    );
    let sb = Sandbox::new(name).config(&config);
    std::fs::create_dir_all(sb.path("workflows")).unwrap();
    sb.write("workflows/ready.yaml", WORKFLOW);
    let reporting = sb.path("reporting.db");
    std::fs::write(&reporting, b"").unwrap();
    sb.env("DOCTOR_SMTP_USER", "lifeboat")
        .env("DOCTOR_SMTP_PASSWORD", password)
        .env("DOCTOR_REPORTING_URL", &format!("sqlite://{}", reporting.display()))
}

fn checks(doc: &Value) -> &Vec<Value> {
    doc["checks"].as_array().unwrap_or_else(|| panic!("no checks in {doc:#}"))
}

fn finding<'a>(doc: &'a Value, check: &str, target: &str) -> &'a Value {
    checks(doc)
        .iter()
        .find(|c| c["check"] == check && c["target"] == target)
        .unwrap_or_else(|| panic!("no {check} {target} in {doc:#}"))
}

#[test]
fn a_healthy_setup_passes_every_check_and_sends_nothing_unless_asked() {
    let sink = SmtpSink::with_login(crate::util::scratch("doctor-ok-mail"), "lifeboat:s3cret");
    let hook = Receiver::start();
    let sb = sandbox("doctor-ok", &sink, &hook, "s3cret");
    sb.ok(&["migrate"]);

    let out = sb.lifeboat(&["doctor", "--json"]);

    let doc: Value = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(&out), stderr(&out)));
    assert_eq!(out.status.code(), Some(0), "{doc:#}");
    assert_eq!(doc["ok"], true);
    let not_passing: Vec<&Value> = checks(&doc)
        .iter()
        .filter(|c| c["status"] != "pass" && !(c["check"] == "replicas" && c["status"] == "warn"))
        .collect();
    assert!(not_passing.is_empty(), "{not_passing:#?}");
    let mail = &finding(&doc, "channel", "mail")["detail"];
    assert!(mail.as_str().unwrap().contains("EHLO and login accepted"), "{mail}");
    assert_eq!(finding(&doc, "connection", "reporting")["status"], "pass");
    assert_eq!(finding(&doc, "program", "true")["status"], "pass");
    assert_eq!(finding(&doc, "workflow", "workflows/ready.yaml")["status"], "pass");
    assert!(
        finding(&doc, "database", &doc_target(&sb))["detail"]
            .as_str()
            .unwrap()
            .contains("migrations applied")
    );
    // The webhook's origin was probed; no message went out.
    assert!(hook.requests().is_empty(), "{:?}", hook.requests());
    let probes = hook.probes();
    assert!(!probes.is_empty() && probes.iter().all(|p| p.path == "/"), "{probes:?}");
    assert!(std::fs::read_dir(&sink.dir).unwrap().next().is_none(), "a mail was sent");

    let out = sb.lifeboat(&["doctor", "--send-test"]);

    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    let posted = hook.wait_requests(1, Duration::from_secs(10));
    assert_eq!(posted[0].json()["event"], "test", "{:?}", posted[0].json());
    assert!(
        eventually(Duration::from_secs(10), || std::fs::read_dir(&sink.dir)
            .unwrap()
            .flatten()
            .any(|e| e.path().extension().is_some_and(|x| x == "json"))),
        "no test mail arrived"
    );
    assert!(stdout(&out).contains("test message delivered"), "{}", stdout(&out));
}

/// The database as doctor names it (the password redacted).
fn doc_target(sb: &Sandbox) -> String {
    match sb.url.find('@') {
        Some(at) if sb.url.starts_with("postgres") => {
            let scheme = sb.url.find("://").unwrap() + 3;
            let user = sb.url[scheme..at].split(':').next().unwrap();
            format!("{}{user}:***{}", &sb.url[..scheme], &sb.url[at..])
        }
        _ => sb.url.clone(),
    }
}

#[test]
fn a_broken_setup_gets_one_line_per_problem_each_with_its_fix() {
    let sink = SmtpSink::with_login(crate::util::scratch("doctor-bad-mail"), "lifeboat:s3cret");
    let hook = Receiver::start();
    let sb = sandbox("doctor-bad", &sink, &hook, "wrong-password").config(
        "[[users]]\nname = \"ana\"\nroles = [\"operator\"]\ntoken_env = \"DOCTOR_UNSET_TOKEN\"\n",
    );
    sb.write(
        "workflows/typo.yaml",
        "name: typo\nnotify:\n  - on: [failed]\n    channels: [pagr]\nsteps:\n  a:\n    uses: shell\n    with: { command: [\"true\"] }\n",
    );
    sb.write(
        "workflows/missing.yaml",
        "name: missing\nsteps:\n  a:\n    uses: shell\n    with: { command: [\"no-such-program-doctor\"] }\n",
    );
    // Postgres on a port nobody listens on.
    let closed = crate::util::free_port();
    let url = format!("postgres://lifeboat:pw@127.0.0.1:{closed}/lifeboat");

    // On the sandbox's own database first, then on the unreachable one.
    let broken = sb.lifeboat(&["doctor"]);
    let unreachable = lifeboat_in(&sb.dir, &["--database-url", &url, "doctor", "--json"]);

    let text = stdout(&broken);
    assert_eq!(broken.status.code(), Some(1), "{text}{}", stderr(&broken));
    let doc: Value = serde_json::from_str(&stdout(&unreachable)).unwrap();

    for (line_has, fix_has) in [
        ("FAIL  channel", "username_env and password_env"),
        ("535", ""),
        ("DOCTOR_UNSET_TOKEN", "export DOCTOR_UNSET_TOKEN"),
        ("lifeboat.toml:", ""),
        ("workflows/typo.yaml", "lifeboat validate workflows/typo.yaml"),
        ("pagr", ""),
        ("no-such-program-doctor", "install it"),
        ("workflows/missing.yaml:3 step `a`", ""),
    ] {
        assert!(text.contains(line_has), "no {line_has:?} in:\n{text}");
        assert!(text.contains(fix_has), "no fix {fix_has:?} in:\n{text}");
    }
    // One line per problem, then its fix; nothing like a stack trace.
    let fails = text.lines().filter(|l| l.starts_with("FAIL")).count();
    let fixes = text.lines().filter(|l| l.trim_start().starts_with("fix:")).count();
    let warns = text.lines().filter(|l| l.starts_with("WARN")).count();
    assert!(fails >= 4, "{text}");
    assert_eq!(fixes, fails + warns, "{text}");
    for bad in ["panicked", "backtrace", "RUST_BACKTRACE", "Error {"] {
        assert!(!text.contains(bad) && !stderr(&broken).contains(bad), "{bad}:\n{text}");
    }

    assert_eq!(unreachable.status.code(), Some(1));
    let db = checks(&doc).iter().find(|c| c["check"] == "database").unwrap();
    assert_eq!(db["status"], "fail", "{db:#}");
    let detail = db["detail"].as_str().unwrap();
    assert!(detail.contains("Connection refused") || detail.contains("connect"), "{detail}");
    assert!(db["target"].as_str().unwrap().contains("lifeboat:***@"), "{db:#}");
    assert!(!stdout(&unreachable).contains(":pw@"), "the password was printed");
}

#[test]
fn serve_exports_the_checks_as_lifeboat_readiness() {
    let sink = SmtpSink::with_login(crate::util::scratch("doctor-serve-mail"), "lifeboat:s3cret");
    let hook = Receiver::start();
    let sb = sandbox("doctor-serve", &sink, &hook, "wrong-password");

    let api = Api::start(&sb);

    let scrape =
        || api.client().get(api.url("/metrics")).send().and_then(|r| r.text()).unwrap_or_default();
    assert!(
        eventually(Duration::from_secs(30), || scrape()
            .contains("lifeboat_readiness{check=\"channel\",target=\"mail\"} 0")),
        "{}",
        scrape()
    );
    let text = scrape();
    assert!(
        text.contains("lifeboat_readiness{check=\"channel\",target=\"status-hook\"} 1"),
        "{text}"
    );
    // Its own worker may register just after the first round: live or not yet.
    assert!(text.contains("lifeboat_readiness{check=\"replicas\",target=\"serve\"}"), "{text}");
    assert!(api.log_text().contains("Readiness check failing"), "{}", api.log_text());
    assert!(hook.requests().is_empty(), "serve's readiness sent a message");
}
