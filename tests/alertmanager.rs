//! A real Alertmanager (Debian's `prometheus-alertmanager`, installed by
//! .ci/run) delivering to `lifeboat serve`: an alert posted to Alertmanager's
//! v2 API reaches `/hooks/alertmanager` with a bearer token and starts the
//! matching workflow.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::{Api, Sandbox, free_port};

const HOOK_TOKEN: &str = "am-hook-token";
const VIEWER: &str = "vic-token"; // util::USERS

const HOOK: &str = r#"
[hooks.alertmanager]
format = "alertmanager"
bearer_token_env = "LIFEBOAT_HOOK_TOKEN"
"#;

const FAILOVER: &str = r#"name: am-failover
inputs:
  site: { type: string, required: true }
  summary: { type: string, default: "" }
triggers:
  - webhook: alertmanager
    match: { alertname: SiteDown, severity: "~critical|page" }
    inputs: { site: "{{alert.labels.site}}", summary: "{{alert.annotations.summary}}" }
steps:
  note: { uses: set, with: { site: "{{inputs.site}}", from: "{{alert.externalURL}}" } }
"#;

/// Alertmanager as a child process, killed on drop.
struct Alertmanager(Child);

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn binary() -> String {
    ["prometheus-alertmanager", "alertmanager"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()))
        .map(String::from)
        .unwrap_or_else(|| {
            panic!(
                "Alertmanager is not installed: `apt-get install prometheus-alertmanager` (.ci/run does)"
            )
        })
}

#[test]
fn an_alert_sent_through_a_real_alertmanager_starts_the_matching_workflow() {
    let sb = Sandbox::new("alertmanager-real")
        .with_users(&["vic"])
        .config(HOOK)
        .env("LIFEBOAT_HOOK_TOKEN", HOOK_TOKEN);
    std::fs::create_dir_all(sb.path("workflows")).unwrap();
    sb.write("workflows/am-failover.yaml", FAILOVER);
    let api = Api::start(&sb);

    let am_port = free_port();
    let am_config = format!(
        r#"route:
  receiver: lifeboat
  group_by: [alertname, site]
  group_wait: 200ms
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: lifeboat
    webhook_configs:
      - url: "{}/hooks/alertmanager"
        send_resolved: false
        http_config:
          authorization:
            type: Bearer
            credentials: "{HOOK_TOKEN}"
"#,
        api.base
    );
    let config_path = sb.write("alertmanager.yml", &am_config);
    std::fs::create_dir_all(sb.path("am-data")).unwrap();
    let log = std::fs::File::create(sb.path("alertmanager.log")).unwrap();
    let child = Command::new(binary())
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!("--storage.path={}", sb.path("am-data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
        .arg("--cluster.listen-address=")
        .arg("--log.level=debug")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start alertmanager");
    let _am = Alertmanager(child);
    let am = format!("http://127.0.0.1:{am_port}");
    let client = reqwest::blocking::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !client.get(format!("{am}/-/ready")).send().is_ok_and(|r| r.status().is_success()) {
        assert!(
            Instant::now() < deadline,
            "Alertmanager did not become ready:\n{}",
            sb.read("alertmanager.log")
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let alerts = json!([{
        "labels": {"alertname": "SiteDown", "severity": "critical", "site": "dc42"},
        "annotations": {"summary": "dc42 is down"},
        "generatorURL": "http://prometheus.example/graph"
    }, {
        "labels": {"alertname": "DiskFull", "severity": "critical", "site": "dc43"},
        "annotations": {"summary": "not ours"}
    }]);
    let posted =
        client.post(format!("{am}/api/v2/alerts")).json(&alerts).send().expect("post alerts");
    assert!(posted.status().is_success(), "Alertmanager refused the alerts: {posted:?}");

    let deadline = Instant::now() + Duration::from_secs(60);
    let run = loop {
        let runs = api.get("/api/v1/runs?workflow=am-failover", Some(VIEWER));
        if let Some(first) = runs.body.as_array().and_then(|r| r.first()) {
            break first.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no run started within 60s.\nalertmanager log:\n{}\nserve log:\n{}",
            sb.read("alertmanager.log"),
            api.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(run["inputs"], json!({"site": "dc42", "summary": "dc42 is down"}));
    let id = run["id"].as_str().unwrap();
    let doc = api.wait_run(VIEWER, id, Duration::from_secs(30), |d| d["status"] == "succeeded");
    assert_eq!(doc["trigger"]["hook"], "alertmanager");
    let fingerprint = doc["trigger"]["fingerprint"].as_str().unwrap_or("");
    assert!(!fingerprint.is_empty(), "Alertmanager's fingerprint is kept: {doc:#}");
    let external = &doc["trigger"]["payload"]["externalURL"];
    assert!(external.as_str().is_some_and(|u| u.starts_with("http")), "{doc:#}");
    assert_eq!(&doc["steps"][0]["outputs"]["from"], external, "alert.externalURL reaches steps");
    let all = api.get("/api/v1/runs", Some(VIEWER)).body;
    assert_eq!(all.as_array().map(Vec::len), Some(1), "DiskFull matches no trigger: {all:#}");
}
