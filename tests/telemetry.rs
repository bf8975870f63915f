//! OpenTelemetry traces (issue #17), received by a real OTLP/HTTP endpoint
//! in the test (`util::OtlpReceiver`, protobuf decoded with
//! opentelemetry-proto): one trace per run whose id `show` prints, a root
//! span for the run and a child per step attempt with their attributes,
//! the same trace when another worker resumes the run after `kill -9`, a
//! webhook request linked to the run it started; and a collector that is
//! down or silent neither slows nor fails a run, its spans dropped and
//! counted.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::{Api, OtlpReceiver, Sandbox, SpanRecord, Stall, free_port, stderr, stdout};

const FLAKY: &str = "name: traced\nsteps:\n  flaky:\n    uses: shell\n    retry: { attempts: 2, delay: 100ms }\n    with: { script: \"test -f marker || { touch marker; exit 1; }\" }\n  after:\n    needs: [flaky]\n    uses: set\n    with: { ok: \"yes\" }\n";

fn traced(name: &str, endpoint: &str) -> Sandbox {
    Sandbox::new(name)
        .config(&format!(
            "[telemetry]\notlp_endpoint = \"{endpoint}\"\nservice_name = \"lifeboat-test\"\n"
        ))
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
}

fn in_trace<'a>(spans: &'a [SpanRecord], trace: &str) -> Vec<&'a SpanRecord> {
    spans.iter().filter(|s| s.trace_id == trace).collect()
}

fn root<'a>(spans: &'a [SpanRecord], trace: &str) -> Option<&'a SpanRecord> {
    spans.iter().find(|s| s.trace_id == trace && s.parent_span_id.is_empty())
}

fn attempt<'a>(spans: &'a [SpanRecord], trace: &str, step: &str, n: u32) -> Option<&'a SpanRecord> {
    spans.iter().find(|s| {
        s.trace_id == trace
            && s.attr("lifeboat.step.id") == step
            && s.attr("lifeboat.step.attempt") == n.to_string()
    })
}

#[test]
fn run_wait_sends_one_trace_per_run_a_root_and_a_child_per_attempt() {
    let collector = OtlpReceiver::start();
    let sb = traced("otel-run", &collector.endpoint())
        .env("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20collector-key");
    let file = sb.write("traced.yaml", FLAKY);
    let (code, doc) = sb.run_wait(file.to_str().unwrap(), &[]);
    assert_eq!(code, Some(0), "{doc:#}");
    let id = doc["id"].as_str().unwrap();
    let trace = doc["trace_id"].as_str().expect("the run document names its trace");
    assert_eq!(trace.len(), 32, "{trace}");
    assert_eq!(sb.show(id)["trace_id"], trace, "show --json prints the same trace id");
    let text = stdout(&sb.ok(&["show", id]));
    assert!(text.contains(&format!("trace: {trace}")), "{text}");

    // `run --wait` flushed at exit: everything is there already, sent with
    // the standard variable's headers (a hosted collector's key).
    let spans = collector.spans();
    let keys = collector.headers("authorization");
    assert!(!keys.is_empty() && keys.iter().all(|k| k == "Bearer collector-key"), "{keys:?}");
    let ours = in_trace(&spans, trace);
    assert_eq!(ours.len(), 4, "a root and three attempts: {ours:#?}");
    let root = root(&spans, trace).expect("the run's root span");
    assert_eq!(root.name, "run traced");
    assert_eq!(root.service, "lifeboat-test");
    assert_eq!(root.attr("lifeboat.workflow"), "traced");
    assert_eq!(root.attr("lifeboat.run.id"), id);
    assert_eq!(root.attr("lifeboat.run.mode"), "live");
    assert_eq!(root.attr("lifeboat.run.status"), "succeeded");
    assert_eq!(root.status, 1, "ok");
    for (step, n, kind, status) in [
        ("flaky", 1, "shell", "failed"),
        ("flaky", 2, "shell", "succeeded"),
        ("after", 1, "set", "succeeded"),
    ] {
        let span =
            attempt(&spans, trace, step, n).unwrap_or_else(|| panic!("{step} #{n}: {ours:#?}"));
        assert_eq!(span.name, format!("step {step}"));
        assert_eq!(span.parent_span_id, root.span_id, "{step} #{n} hangs under the run");
        assert_eq!(span.attr("lifeboat.workflow"), "traced");
        assert_eq!(span.attr("lifeboat.run.id"), id);
        assert_eq!(span.attr("lifeboat.step.kind"), kind);
        assert_eq!(span.attr("lifeboat.step.phase"), "forward");
        assert_eq!(span.attr("lifeboat.step.status"), status);
        assert_eq!(span.status, if status == "failed" { 2 } else { 1 });
        assert!(
            root.start_ns <= span.start_ns && span.end_ns <= root.end_ns,
            "{step} #{n} lies within the run: {root:#?} {span:#?}"
        );
    }
    let (first, second) =
        (attempt(&spans, trace, "flaky", 1).unwrap(), attempt(&spans, trace, "flaky", 2).unwrap());
    assert!(first.end_ns <= second.start_ns, "the retry comes after the failure");

    // Another run: a trace of its own.
    let (code, again) = sb.run_wait(file.to_str().unwrap(), &[]);
    assert_eq!(code, Some(0), "{again:#}");
    let other = again["trace_id"].as_str().unwrap();
    assert_ne!(other, trace);
    let spans = collector.spans();
    assert_eq!(in_trace(&spans, other).len(), 3, "root, flaky #1, after #1");
    assert_eq!(in_trace(&spans, trace).len(), 4, "the first trace got nothing more");
    assert!(
        spans.iter().all(|s| s.trace_id == trace || s.trace_id == other),
        "no stray traces: {spans:#?}"
    );
}

#[test]
fn a_run_resumed_after_kill_9_by_another_worker_stays_in_its_trace() {
    let collector = OtlpReceiver::start();
    let sb = Sandbox::for_crashes("otel-crash")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint())
        .env("OTEL_BSP_SCHEDULE_DELAY", "50");
    std::fs::create_dir_all(sb.path("workflows")).unwrap();
    sb.write(
        "workflows/resumed.yaml",
        "name: resumed\nsteps:\n  one: { uses: shell, with: { command: [\"true\"] } }\n  two: { needs: [one], uses: shell, with: { command: [sleep, \"1\"] } }\n",
    );
    let mut first = sb.serve();
    let id = sb.enqueue("resumed", &[]);
    let trace = sb.show(&id)["trace_id"].as_str().unwrap().to_string();
    // The first worker ran `one` (and exported it) and is inside `two`.
    collector.wait_spans(Duration::from_secs(30), |s| attempt(s, &trace, "one", 1).is_some());
    sb.wait_for(&id, Duration::from_secs(30), |d| {
        crate::util::step(d, "two")["status"] == "running"
    });
    first.kill9();
    let _second = sb.serve();
    let doc = sb.wait_finished(&id, Duration::from_secs(60));
    assert_eq!(doc["status"], "succeeded", "{doc:#}");

    let spans = collector.wait_spans(Duration::from_secs(30), |s| {
        root(s, &trace).is_some() && attempt(s, &trace, "two", 2).is_some()
    });
    let root = root(&spans, &trace).unwrap();
    assert_eq!(root.attr("lifeboat.run.id"), id);
    let one = attempt(&spans, &trace, "one", 1).unwrap();
    let lost = attempt(&spans, &trace, "two", 1)
        .expect("the interrupted attempt, recorded by its successor");
    let retried = attempt(&spans, &trace, "two", 2).unwrap();
    assert_eq!(lost.attr("lifeboat.step.status"), "interrupted");
    assert_eq!(lost.status, 2);
    assert_eq!(retried.attr("lifeboat.step.status"), "succeeded");
    for span in [one, lost, retried] {
        assert_eq!(
            span.parent_span_id, root.span_id,
            "every worker's spans hang under one root: {span:#?}"
        );
    }
    assert_eq!(
        spans.iter().filter(|s| s.trace_id == trace && s.parent_span_id.is_empty()).count(),
        1
    );
}

const HOOK: &str = "[hooks.ops]\nformat = \"json\"\nbearer_token_env = \"LIFEBOAT_HOOK_TOKEN\"\n";
const HOOKED: &str = "name: hooked\ninputs:\n  site: { type: string, required: true }\ntriggers:\n  - webhook: ops\n    match: { type: outage }\n    inputs: { site: \"{{event.site}}\" }\nsteps:\n  page: { uses: shell, with: { command: [echo, \"{{inputs.site}}\"] } }\n";

#[test]
fn a_webhook_request_is_linked_to_the_run_it_started_and_joins_its_callers_trace() {
    let collector = OtlpReceiver::start();
    let sb = traced("otel-webhook", &collector.endpoint())
        .with_users(&["vic"])
        .config(HOOK)
        .env("LIFEBOAT_HOOK_TOKEN", "hook-token");
    std::fs::create_dir_all(sb.path("workflows")).unwrap();
    sb.write("workflows/hooked.yaml", HOOKED);
    let api = Api::start(&sb);
    let (caller_trace, caller_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let reply = api.send(
        api.client()
            .post(api.url("/hooks/ops"))
            .bearer_auth("hook-token")
            .header("traceparent", format!("00-{caller_trace}-{caller_span}-01"))
            .json(&json!({"type": "outage", "site": "dc1"})),
    );
    assert_eq!(reply.status, 202, "{reply:?}");
    let id = reply.body["runs"][0].as_str().expect("a run started").to_string();
    let doc =
        api.wait_run("vic-token", &id, Duration::from_secs(30), |d| d["status"] == "succeeded");
    let trace = doc["trace_id"].as_str().expect("the API's run document names its trace");

    let spans = collector.wait_spans(Duration::from_secs(30), |s| {
        root(s, trace).is_some()
            && attempt(s, trace, "page", 1).is_some()
            && s.iter().any(|s| s.name == "POST /hooks/ops")
    });
    let hook = spans.iter().find(|s| s.name == "POST /hooks/ops").unwrap();
    assert_eq!(
        (hook.trace_id.as_str(), hook.parent_span_id.as_str()),
        (caller_trace, caller_span),
        "the caller's traceparent is the request's parent"
    );
    assert_eq!(hook.attr("lifeboat.hook"), "ops");
    assert_eq!(hook.attr("lifeboat.webhook.outcome"), "started");
    let root = root(&spans, trace).unwrap();
    assert_eq!(hook.links.len(), 1, "{hook:#?}");
    let (link_trace, link_span, link_attrs) = &hook.links[0];
    assert_eq!(
        (link_trace.as_str(), link_span.as_str()),
        (trace, root.span_id.as_str()),
        "the link points at the run's root span"
    );
    assert_eq!(link_attrs.get("lifeboat.run.id").map(String::as_str), Some(id.as_str()));
    assert_eq!(link_attrs.get("lifeboat.link").map(String::as_str), Some("started"));
    let page = attempt(&spans, trace, "page", 1).unwrap();
    assert_eq!(page.parent_span_id, root.span_id);
    assert_eq!(page.attr("lifeboat.step.kind"), "shell");
    assert_eq!(root.attr("lifeboat.workflow"), "hooked");
    assert!(spans.iter().all(|s| s.service == "lifeboat-test"));
}

const QUICK: &str = "name: quick\nsteps:\n  a: { uses: shell, with: { command: [\"true\"] } }\n  b: { needs: [a], uses: shell, with: { command: [\"true\"] } }\n  c: { needs: [b], uses: set, with: { ok: \"yes\" } }\n";

/// `run --wait` of QUICK: (wall time, the run's own recorded time in ms).
fn timed_run(sb: &Sandbox) -> (Duration, i64) {
    let file = sb.path("quick.yaml");
    let began = Instant::now();
    let (code, doc) = sb.run_wait(file.to_str().unwrap(), &[]);
    let wall = began.elapsed();
    assert_eq!((code, doc["status"].as_str()), (Some(0), Some("succeeded")), "{doc:#}");
    (wall, crate::util::ms(&doc["finished_at"]) - crate::util::ms(&doc["created_at"]))
}

#[test]
fn a_collector_that_is_down_or_silent_neither_slows_nor_fails_a_run() {
    let plain = Sandbox::new("otel-off");
    plain.write("quick.yaml", QUICK);
    let (baseline, baseline_run) = timed_run(&plain);

    let closed = format!("http://127.0.0.1:{}", free_port());
    let stall = Stall::start();
    for (n, (what, endpoint)) in [
        ("a closed port", closed.as_str()),
        ("a collector that never answers", stall.base.as_str()),
    ]
    .into_iter()
    .enumerate()
    {
        let sb = traced(&format!("otel-down-{n}"), endpoint);
        sb.write("quick.yaml", QUICK);
        let (wall, run) = timed_run(&sb);
        eprintln!(
            "{what}: run {run}ms (without traces {baseline_run}ms), command {wall:?} (without {baseline:?})"
        );
        assert!(
            run < baseline_run + 1000,
            "{what}: the run took {run}ms, {baseline_run}ms without traces"
        );
        // At worst the command waits 2s at exit for its spans (never 10s,
        // the export timeout).
        assert!(
            wall < baseline + Duration::from_millis(2000 + 1500),
            "{what}: `run --wait` took {wall:?}, {baseline:?} without traces"
        );
    }
    assert!(
        stall.accepted.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "the exporter did try the silent collector"
    );
}

#[test]
fn serve_counts_the_spans_it_cannot_export_and_says_so_once() {
    let closed = format!("http://127.0.0.1:{}", free_port());
    let sb = traced("otel-dropped", &closed)
        .with_users(&["alice"])
        .env("OTEL_EXPORTER_OTLP_TIMEOUT", "500");
    std::fs::create_dir_all(sb.path("workflows")).unwrap();
    sb.write("workflows/quick.yaml", QUICK);
    let api = Api::start(&sb);
    for _ in 0..3 {
        let started = api.post("/api/v1/workflows/quick/runs", Some("alice-token"), &json!({}));
        assert_eq!(started.status, 201, "{started:?}");
    }
    let dropped = |api: &Api| -> f64 {
        let metrics = api.get("/metrics", None);
        let text = metrics.body.as_str().unwrap_or_default().to_string();
        text.lines()
            .filter(|l| {
                l.starts_with("lifeboat_otlp_spans_dropped_total{reason=\"export_failed\"}")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let counted = crate::util::eventually(Duration::from_secs(30), || dropped(&api) >= 12.0);
    assert!(
        counted,
        "3 runs of 4 spans each are counted as dropped: {}\n{}",
        dropped(&api),
        api.log_text()
    );
    let runs = api.get("/api/v1/runs", Some("alice-token"));
    let all: &Vec<Value> = runs.body.as_array().or(runs.body["runs"].as_array()).expect("runs");
    assert!(all.iter().all(|r| r["status"] == "succeeded"), "{all:#?}");
    let log = api.log_text();
    assert_eq!(log.matches("Trace spans are being dropped").count(), 1, "logged once:\n{log}");
    assert!(log.contains(&closed), "the log names the endpoint:\n{log}");
}

#[test]
fn a_bad_endpoint_is_refused_naming_the_file_key_or_variable() {
    let sb = Sandbox::new("otel-bad").config("[telemetry]\notlp_endpoint = \"collector:4317\"\n");
    sb.write("quick.yaml", QUICK);
    let out = sb.lifeboat(&["run", sb.path("quick.yaml").to_str().unwrap(), "--wait"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "lifeboat.toml:7:17: invalid configuration: telemetry.otlp_endpoint: `collector:4317`"
        ),
        "the file, line, column and key: {err}"
    );
    assert!(err.contains("http://collector:4318"), "{err}");

    let sb =
        Sandbox::new("otel-bad-env").env("OTEL_EXPORTER_OTLP_ENDPOINT", "grpc://collector:4317");
    sb.write("quick.yaml", QUICK);
    let out = sb.lifeboat(&["run", sb.path("quick.yaml").to_str().unwrap(), "--wait"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("OTEL_EXPORTER_OTLP_ENDPOINT: `grpc://collector:4317`"), "{err}");
}

#[test]
fn a_child_runs_trace_is_its_own_and_links_to_its_parents_root() {
    let collector = OtlpReceiver::start();
    let sb = traced("otel-child", &collector.endpoint());
    std::fs::create_dir_all(sb.path("workflows")).unwrap();
    sb.write(
        "workflows/parent.yaml",
        "name: parent\nsteps:\n  call:\n    uses: workflow\n    with: { workflow: child }\n",
    );
    sb.write(
        "workflows/child.yaml",
        "name: child\nsteps:\n  say: { uses: set, with: { said: hi } }\n",
    );
    let (code, doc) = sb.run_wait("parent", &[]);
    assert_eq!(code, Some(0), "{doc:#}");
    let (parent, parent_trace) = (doc["id"].as_str().unwrap(), doc["trace_id"].as_str().unwrap());
    let child = sb.runs().into_iter().find(|r| r["workflow"] == "child").expect("the child run");
    assert_eq!(child["parent_run_id"], parent);
    let child_trace = child["trace_id"].as_str().unwrap().to_string();
    assert_ne!(child_trace, parent_trace, "one trace per run");

    let spans = collector.wait_spans(Duration::from_secs(30), |s| {
        root(s, parent_trace).is_some() && root(s, &child_trace).is_some()
    });
    let (parent_root, child_root) =
        (root(&spans, parent_trace).unwrap(), root(&spans, &child_trace).unwrap());
    assert_eq!(child_root.attr("lifeboat.run.parent_id"), parent);
    let links: Vec<(&str, &str)> =
        child_root.links.iter().map(|(t, s, _)| (t.as_str(), s.as_str())).collect();
    assert_eq!(
        links,
        [(parent_trace, parent_root.span_id.as_str())],
        "the child links to its parent's root"
    );
    assert!(
        attempt(&spans, &child_trace, "say", 1)
            .is_some_and(|s| s.parent_span_id == child_root.span_id)
    );
    assert_eq!(
        in_trace(&spans, parent_trace).len(),
        1,
        "a `workflow` step has no attempt, so no span"
    );
}

#[test]
fn a_full_export_queue_drops_and_counts_spans_instead_of_waiting() {
    let stall = Stall::start();
    let sb = traced("otel-queue-full", &stall.base)
        .with_users(&["alice"])
        .env("OTEL_BSP_MAX_QUEUE_SIZE", "2")
        .env("OTEL_BSP_SCHEDULE_DELAY", "20");
    std::fs::create_dir_all(sb.path("workflows")).unwrap();
    sb.write("workflows/quick.yaml", QUICK);
    let api = Api::start(&sb);
    let began = Instant::now();
    let ids: Vec<String> = (0..3)
        .map(|_| {
            let started = api.post("/api/v1/workflows/quick/runs", Some("alice-token"), &json!({}));
            assert_eq!(started.status, 201, "{started:?}");
            started.body["id"].as_str().expect("run id").to_string()
        })
        .collect();
    for id in &ids {
        api.wait_run("alice-token", id, Duration::from_secs(30), |d| d["status"] == "succeeded");
    }
    // The collector holds its first request for the 10 s export timeout;
    // the runs did not wait for it.
    assert!(began.elapsed() < Duration::from_secs(8), "runs took {:?}", began.elapsed());
    let full = || -> f64 {
        let metrics = api.get("/metrics", None).body.as_str().unwrap_or_default().to_string();
        metrics
            .lines()
            .filter(|l| l.starts_with("lifeboat_otlp_spans_dropped_total{reason=\"queue_full\"}"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    // 12 spans (a root is sent just after its run's end is committed), at
    // most 2 waiting and 2 in the stuck export.
    let counted = crate::util::eventually(Duration::from_secs(5), || full() >= 8.0);
    assert!(counted, "spans dropped for want of room: {}", full());
}

#[test]
fn a_drills_trace_says_it_is_a_drill_names_its_scenario_and_shows_an_injected_crash() {
    let collector = OtlpReceiver::start();
    let sb = traced("otel-drill", &collector.endpoint());
    let file = sb.write(
        "failover.yaml",
        "name: failover\nsteps:\n  cut:\n    uses: shell\n    with: { command: [\"true\"] }\n    drill: { uses: set, with: { cut: \"no\" } }\ndrills:\n  dry:\n    expect: { status: succeeded }\n",
    );
    let out = sb.lifeboat(&[
        "drill",
        file.to_str().unwrap(),
        "--scenario",
        "dry",
        "--inject",
        "cut=crash",
        "--wait",
        "--json",
    ]);
    let doc: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}{}", stdout(&out), stderr(&out)));
    assert_eq!(out.status.code(), Some(0), "{doc:#}");
    let trace = doc["trace_id"].as_str().unwrap();
    let spans = collector.spans();
    let root = root(&spans, trace).expect("the drill's root");
    assert_eq!(root.attr("lifeboat.run.mode"), "drill");
    assert_eq!(root.attr("lifeboat.drill.scenario"), "dry");
    let crashed = attempt(&spans, trace, "cut", 1).expect("the attempt the injected crash ended");
    assert_eq!(crashed.attr("lifeboat.step.status"), "interrupted");
    assert_eq!(crashed.parent_span_id, root.span_id);
    let cut = attempt(&spans, trace, "cut", 2).expect("the substituted attempt, retried");
    assert_eq!((cut.attr("lifeboat.run.mode"), cut.attr("lifeboat.step.kind")), ("drill", "set"));
    assert_eq!(cut.attr("lifeboat.step.status"), "succeeded");
}
