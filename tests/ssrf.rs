//! `http` steps cannot be sent anywhere a payload says: redirects only when
//! a step asks (and never with its headers to another origin), the `[http]`
//! destination policy checked on every address, and LB028 at validate time.
//! Every server here listens on 127.0.0.1.

use std::time::Duration;

use serde_json::Value;

use crate::util::{Answer, Receiver, Sandbox, attempts, lifeboat, scratch, stderr, stdout, step};

const API_KEY: &str = "k-7f3a9c2e41";

/// A workflow of independent-looking http steps run one after the other,
/// each allowed to fail so the next still runs. `steps`: (id, `with` flow map).
fn workflow(steps: &[(&str, String)]) -> String {
    let mut text = String::from("name: ssrf\nsteps:\n");
    let mut previous: Option<&str> = None;
    for (id, with) in steps {
        text.push_str(&format!("  {id}:\n    uses: http\n    continue_on_failure: true\n"));
        text.push_str("    retry: { attempts: 3, delay: 100ms }\n");
        if let Some(p) = previous {
            text.push_str(&format!("    needs: [{p}]\n"));
        }
        text.push_str(&format!("    with: {with}\n"));
        previous = Some(id);
    }
    text
}

fn run(sb: &Sandbox, steps: &[(&str, String)]) -> Value {
    sb.write("ssrf.yaml", &workflow(steps));
    let (_, doc) = sb.run_wait("ssrf.yaml", &[]);
    doc
}

/// The error of the step's only attempt: a refused destination is never retried.
fn only_error(doc: &Value, id: &str) -> String {
    let tries = attempts(doc, id);
    assert_eq!(tries.len(), 1, "step `{id}` was retried:\n{doc:#}");
    assert_eq!(step(doc, id)["status"], "failed", "{doc:#}");
    tries[0]["error"].as_str().unwrap_or_else(|| panic!("no error in {doc:#}")).to_string()
}

fn port(receiver: &Receiver) -> &str {
    receiver.base.rsplit(':').next().expect("a port")
}

#[test]
fn a_redirect_to_another_origin_is_not_followed_and_never_carries_the_api_key() {
    let (start, elsewhere) = (Receiver::start(), Receiver::start());
    start.answer_by_default(Answer::status(302).header("Location", &elsewhere.url("/stolen")));
    let sb = Sandbox::new("ssrf-redirect").env("LIFEBOAT_SECRET_API_KEY", API_KEY);
    let url = start.url("/start");
    let headers = "headers: { X-Api-Key: \"{{secrets.API_KEY}}\" }";
    let doc = run(
        &sb,
        &[
            ("by_default", format!("{{ url: \"{url}\", {headers} }}")),
            (
                "same_origin_only",
                format!("{{ url: \"{url}\", {headers}, follow_redirects: true }}"),
            ),
            (
                "cross_origin",
                format!(
                    "{{ url: \"{url}\", {headers}, follow_redirects: true, allow_cross_origin: true }}"
                ),
            ),
        ],
    );

    let error = only_error(&doc, "by_default");
    assert!(error.contains("returned 302"), "{error}");
    assert!(error.contains("not followed: set `follow_redirects: true`"), "{error}");
    let error = only_error(&doc, "same_origin_only");
    assert!(error.contains("another origin; not followed"), "{error}");
    // Followed on request, but without the step's headers.
    assert_eq!(step(&doc, "cross_origin")["status"], "succeeded", "{doc:#}");

    assert_eq!(start.requests().len(), 3);
    assert!(start.requests().iter().all(|r| r.header("x-api-key") == Some(API_KEY)));
    let arrived = elsewhere.requests();
    assert_eq!(arrived.len(), 1, "only the opted-in step reaches the other origin");
    assert_eq!(arrived[0].path, "/stolen");
    assert_eq!(arrived[0].header("x-api-key"), None, "{:?}", arrived[0].headers);
    assert!(arrived[0].header("x-lifeboat-run-id").is_some());
}

#[test]
fn numeric_and_metadata_hosts_are_refused_without_a_retry() {
    let target = Receiver::start();
    let sb = Sandbox::new("ssrf-literal").config("[http]\ndeny = [\"127.0.0.0/8\"]\n");
    let numeric = format!("http://2130706433:{}/numeric", port(&target));
    let doc = run(
        &sb,
        &[
            ("numeric", format!("{{ url: \"{numeric}\" }}")),
            ("metadata", "{ url: \"http://169.254.169.254/latest/meta-data/\" }".to_string()),
        ],
    );
    let error = only_error(&doc, "numeric");
    assert!(error.contains("destination refused"), "{error}");
    assert!(
        error.contains("address 127.0.0.1, which [http] deny entry `127.0.0.0/8` refuses"),
        "{error}"
    );
    assert!(error.contains(&format!("(`url`: `{numeric}`)")), "{error}");
    let error = only_error(&doc, "metadata");
    assert!(error.contains("address 169.254.169.254, a cloud metadata address"), "{error}");
    assert!(target.requests().is_empty(), "a refused request went out");
}

#[test]
fn a_denied_network_refuses_a_host_name_that_resolves_into_it() {
    let target = Receiver::start();
    let sb = Sandbox::new("ssrf-resolved").config("[http]\ndeny = [\"127.0.0.0/8\", \"::1\"]\n");
    let url = format!("http://localhost:{}/by-name", port(&target));
    let doc = run(&sb, &[("by_name", format!("{{ url: \"{url}\" }}"))]);
    let error = only_error(&doc, "by_name");
    assert!(error.contains("host `localhost` resolves to "), "{error}");
    assert!(error.contains("which [http] deny entry `"), "{error}");
    assert!(target.requests().is_empty(), "a refused request went out");
}

#[test]
fn an_allow_listed_host_is_reached_and_nothing_else() {
    let target = Receiver::start();
    let sb = Sandbox::new("ssrf-allow").config("[http]\nallow = [\"localhost\"]\n");
    let doc = run(
        &sb,
        &[
            ("listed", format!("{{ url: \"http://localhost:{}/listed\" }}", port(&target))),
            ("unlisted", format!("{{ url: \"{}\" }}", target.url("/unlisted"))),
        ],
    );
    assert_eq!(step(&doc, "listed")["status"], "succeeded", "{doc:#}");
    let error = only_error(&doc, "unlisted");
    assert!(error.contains("address 127.0.0.1, which no [http] allow entry matches"), "{error}");
    let paths: Vec<String> =
        target.wait_requests(1, Duration::from_secs(5)).iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/listed"]);
}

const PROBE: &str = "name: probe
inputs:
  target: { type: string }
  site: { type: string, enum: [dc1, dc2] }
triggers:
  - webhook: alertmanager
    inputs: { target: \"{{alert.labels.instance}}\" }
steps:
  scrape:
    uses: http
    with: { url: \"http://{{alert.labels.instance}}/metrics\" }
  health:
    uses: http
    with: { url: \"http://{{inputs.site}}.estate.internal/health?from={{alert.labels.instance}}\" }
  trace:
    uses: shell
    with: { command: [curl, -s, \"{{inputs.target}}\"] }
";

#[test]
fn validate_warns_when_a_payload_decides_a_destination_or_an_option() {
    let dir = scratch("ssrf-validate");
    std::fs::write(dir.join("probe.yaml"), PROBE).unwrap();
    let file = dir.join("probe.yaml");
    let file = file.to_str().unwrap();

    let out = lifeboat(&["validate", file]);
    assert_eq!(out.status.code(), Some(0), "warnings only: valid\n{}", stderr(&out));
    let text = stderr(&out);
    assert!(
        text.contains("warning[LB028]: step `scrape`: `with.url`: `alert.labels.instance` (the trigger's payload) decides where the request goes"),
        "{text}"
    );
    assert!(
        text.contains("warning[LB028]: step `trace`: `with.command.2`: `inputs.target` (input `target`, declared without `enum` or `pattern`) starts an argument of `curl`"),
        "{text}"
    );
    assert!(!text.contains("step `health`"), "a path or an enum input is fine:\n{text}");
    assert!(stdout(&out).contains("(0 errors, 2 warnings)"), "{}", stdout(&out));

    let out = lifeboat(&["validate", "--json", file]);
    assert_eq!(out.status.code(), Some(0));
    let files: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(files[0]["valid"], true);
    let codes: Vec<(&str, &str)> = files[0]["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["code"].as_str().unwrap(), d["severity"].as_str().unwrap()))
        .collect();
    assert_eq!(codes, [("LB028", "warning"), ("LB028", "warning")]);
}

#[test]
fn the_example_runbooks_and_valid_fixtures_raise_no_warning() {
    for (dir, config) in
        [("workflows", "lifeboat.toml"), ("tests/fixtures/valid", "tests/fixtures/lifeboat.toml")]
    {
        let out = lifeboat(&["validate", "--config", config, dir]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(!stderr(&out).contains("warning["), "{dir}:\n{}", stderr(&out));
    }
}
