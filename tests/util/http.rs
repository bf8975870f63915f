//! HTTP tests: `lifeboat serve` with its API on a free loopback port, JSON
//! replies, pages read as text, and Alertmanager payloads.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::process::Serve;
use super::sandbox::Sandbox;

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// A running `lifeboat serve` and a client for its HTTP API.
pub struct Api {
    pub base: String,
    pub serve: Serve,
    pub log: PathBuf,
    client: reqwest::blocking::Client,
}

/// A response: status code and body (JSON if it parses, else a string).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    /// The `{error: {message}}` of an error response.
    pub fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }
}

impl Api {
    /// Starts `lifeboat serve` in `sb` listening on a fresh port, and waits
    /// (up to 30 s) until `/healthz` answers.
    pub fn start(sb: &Sandbox) -> Api {
        Api::start_with(sb, &["serve"])
    }

    /// `start`, with `args` instead of just `serve` (global flags first).
    pub fn start_with(sb: &Sandbox, args: &[&str]) -> Api {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let log = sb.path(&format!("serve-http-{port}.log"));
        let file = std::fs::File::create(&log).expect("serve log");
        let child = sb
            .command(args)
            .env("LIFEBOAT_SERVER__LISTEN", &addr)
            .env("LIFEBOAT_LOG", "warn,lifeboat_orchestrator=info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("serve log"))
            .stderr(file)
            .spawn()
            .expect("start lifeboat serve");
        let mut api = Api {
            base: format!("http://{addr}"),
            serve: Serve::from(child),
            log,
            client: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let health = api.client.get(format!("{}/healthz", api.base)).send();
            if health.is_ok_and(|r| r.status() == 200) {
                return api;
            }
            if !api.serve.alive() || Instant::now() > deadline {
                panic!("lifeboat serve did not come up on {addr}:\n{}", api.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn client(&self) -> &reqwest::blocking::Client {
        &self.client
    }

    /// Sends a request built by `build` and reads the reply.
    pub fn send(&self, request: reqwest::blocking::RequestBuilder) -> Reply {
        let response = request.send().expect("HTTP request");
        let status = response.status().as_u16();
        let text = response.text().unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply { status, body }
    }

    /// `GET path` with a bearer token (`None`: without one).
    pub fn get(&self, path: &str, token: Option<&str>) -> Reply {
        let mut req = self.client.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        self.send(req)
    }

    /// `POST path` with a JSON body and a bearer token.
    pub fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        let mut req = self.client.post(self.url(path)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        self.send(req)
    }

    /// Polls `GET /api/v1/runs/{id}` until `done` holds; panics after `timeout`.
    pub fn wait_run(
        &self,
        token: &str,
        id: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let reply = self.get(&format!("/api/v1/runs/{id}"), Some(token));
            if reply.status == 200 && done(&reply.body) {
                return reply.body;
            }
            if Instant::now() > deadline {
                panic!("run {id} did not reach the expected state in {timeout:?}: {reply:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The status of `step` in a run document (`""` if absent).
    pub fn step_status<'a>(doc: &'a Value, id: &str) -> &'a str {
        doc["steps"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["id"] == id))
            .and_then(|s| s["status"].as_str())
            .unwrap_or("")
    }
}

/// An Alertmanager webhook payload (version 4) with one alert per label set.
pub fn alertmanager_payload(status: &str, alerts: &[(&str, Value)]) -> Value {
    let alerts: Vec<Value> = alerts
        .iter()
        .map(|(fingerprint, labels)| {
            serde_json::json!({
                "status": status,
                "labels": labels,
                "annotations": {"summary": "test alert"},
                "startsAt": "2024-05-01T10:00:00Z",
                "endsAt": if status == "resolved" { "2024-05-01T10:05:00Z" } else { "0001-01-01T00:00:00Z" },
                "generatorURL": "http://prometheus.example/graph",
                "fingerprint": fingerprint,
            })
        })
        .collect();
    serde_json::json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"SiteDown\"}",
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "lifeboat",
        "groupLabels": {"alertname": "SiteDown"},
        "commonLabels": {"alertname": "SiteDown"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093",
        "alerts": alerts,
    })
}

/// A response read as text, with its headers.
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Page {
    /// A header's value, or "" without it.
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

impl Api {
    /// Sends a request built by `build` and reads the reply as text.
    pub fn page(&self, request: reqwest::blocking::RequestBuilder) -> Page {
        let response = request.send().expect("HTTP request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        Page { status, headers, text: response.text().unwrap_or_default() }
    }

    /// `POST path` with an `application/x-www-form-urlencoded` body of `fields`.
    pub fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let encode = |s: &str| -> String {
            s.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                        (b as char).to_string()
                    }
                    b' ' => "+".to_string(),
                    b => format!("%{b:02X}"),
                })
                .collect()
        };
        let body: Vec<String> =
            fields.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
        self.page(
            self.client
                .post(self.url(path))
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(body.join("&")),
        )
    }
}
