//! Shared fixtures: a sample message, a recording HTTP server, and the SMTP
//! sink (tests/smtp_sink.py, a real aiosmtpd server).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use lifeboat_notify::{Context, Event, Message, Templates};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The built-in incident message for a failed run.
pub fn message(event: Event) -> Message {
    let ctx = Context::sample(event.name());
    let rendered = Templates::load(None).unwrap().render("incident", &ctx).unwrap();
    Message::new(&ctx, rendered)
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Clone)]
struct Reply {
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: &'static str,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

/// An HTTP server on 127.0.0.1:0 that records every request and answers
/// each with `status`, `headers` and `body`. Stops when dropped.
pub struct Recorder {
    pub url: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorder {
    pub async fn start(
        status: u16,
        headers: &[(&'static str, &str)],
        body: &'static str,
    ) -> Recorder {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let reply = Reply {
            status: StatusCode::from_u16(status).unwrap(),
            headers: headers
                .iter()
                .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_str(v).unwrap()))
                .collect(),
            body,
            requests: requests.clone(),
        };
        async fn handle(
            State(reply): State<Reply>,
            uri: axum::http::Uri,
            headers: HeaderMap,
            body: Bytes,
        ) -> Response {
            reply.requests.lock().unwrap().push(Recorded {
                path: uri.path().to_string(),
                query: uri.query().map(str::to_string),
                headers,
                body,
            });
            let mut response = (reply.status, reply.body).into_response();
            for (k, v) in reply.headers {
                response.headers_mut().insert(k, v);
            }
            response
        }
        let app = axum::Router::new().fallback(handle).with_state(reply);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Recorder { url, requests, task }
    }

    pub async fn ok() -> Recorder {
        Recorder::start(200, &[], "ok").await
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    pub fn only_request(&self) -> Recorded {
        let requests = self.requests();
        assert_eq!(requests.len(), 1, "expected exactly one request");
        requests.into_iter().next().unwrap()
    }
}

/// A URL on which nothing listens.
pub async fn refused_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/hook")
}

/// The aiosmtpd sink from tests/smtp_sink.py. Stops when dropped.
pub struct SmtpSink {
    pub port: u16,
    pub dir: tempfile::TempDir,
    _child: tokio::process::Child,
}

impl SmtpSink {
    /// `rcpt_reply`: refuse every recipient with this SMTP code.
    pub async fn start(rcpt_reply: Option<&str>) -> SmtpSink {
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp_sink.py");
        let mut cmd = tokio::process::Command::new("python3");
        cmd.arg(&script).arg(dir.path());
        if let Some(code) = rcpt_reply {
            cmd.arg(code);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 must be installed to run the email tests");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        let mut stdout = BufReader::new(stdout);
        let read = stdout.read_line(&mut line);
        tokio::time::timeout(Duration::from_secs(20), read).await.unwrap().unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| {
            panic!("smtp_sink.py did not start (is aiosmtpd installed? `pip install aiosmtpd`): {line:?}")
        });
        SmtpSink { port, dir, _child: child }
    }

    /// The messages received so far, in order.
    pub fn messages(&self) -> Vec<serde_json::Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        files.iter().map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()).collect()
    }
}
