//! `http`: one HTTP request; 5xx, 429 and connection errors are retryable,
//! other 4xx not.

use std::sync::OnceLock;
use std::time::Duration;

use indexmap::IndexMap;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Client, StatusCode, Url};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{AttemptContext, ConfigProblem, Outcome, Step};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    #[default]
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
}

/// Sends one HTTP request and checks its status.
///
/// Every request carries `Idempotency-Key` (unless `headers` sets it) and
/// `X-Lifeboat-Run-Id`, `X-Lifeboat-Step-Id`, `X-Lifeboat-Attempt`.
/// Redirects are followed (up to 10). Outputs: `status`, `headers` (lower-case
/// names; repeated headers joined with `, `), `body` (text, at most
/// `max_output_bytes`), `body_truncated`, and `json` when the whole body is
/// JSON. A failed status keeps these outputs, so the operator sees the reply.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// HTTP method (default GET).
    #[serde(default)]
    pub method: Method,
    /// Absolute `http://` or `https://` URL (template).
    pub url: String,
    /// Request headers (values are templates).
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    /// Query parameters appended to the URL (values are templates).
    #[serde(default)]
    pub query: IndexMap<String, String>,
    /// JSON request body; exclusive with `body`.
    pub json: Option<serde_json::Value>,
    /// Raw request body (template); exclusive with `json`.
    pub body: Option<String>,
    /// Accepted status codes (default: any 2xx).
    pub expect_status: Option<Vec<u16>>,
}

impl Config {
    pub fn compile(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if self.json.is_some() && self.body.is_some() {
            problems
                .push(ConfigProblem::new(&["body"], "`json` and `body` are exclusive; keep one"));
        }
        let url = self.url.trim();
        if !(crate::is_templated(url) || url.starts_with("http://") || url.starts_with("https://"))
        {
            problems.push(
                ConfigProblem::new(&["url"], format!("`{url}` is not an http:// or https:// URL"))
                    .with_help("write the full URL, e.g. http://127.0.0.1:9100/health"),
            );
        }
        if let Some(codes) = &self.expect_status {
            for (i, code) in codes.iter().enumerate() {
                // 0 stands for a templated code, checked when the step starts.
                if *code != 0 && !(100..=599).contains(code) {
                    problems.push(ConfigProblem::new(
                        &["expect_status", &i.to_string()],
                        format!("{code} is not an HTTP status code (100-599)"),
                    ));
                }
            }
        }
        problems
    }
}

impl Method {
    fn as_reqwest(self) -> reqwest::Method {
        match self {
            Method::Get => reqwest::Method::GET,
            Method::Head => reqwest::Method::HEAD,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Patch => reqwest::Method::PATCH,
            Method::Delete => reqwest::Method::DELETE,
        }
    }
}

/// Bound on establishing a connection, so an unreachable site fails (and is
/// retried) instead of waiting for the OS's TCP timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// One client per process: it pools connections and loads TLS roots once.
fn client() -> Result<&'static Client, String> {
    static CLIENT: OnceLock<Result<Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            Client::builder()
                .user_agent(concat!("lifeboat/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(CONNECT_TIMEOUT)
                .build()
                .map_err(|e| format!("cannot set up the HTTP client: {}", error_chain(&e)))
        })
        .as_ref()
        .map_err(Clone::clone)
}

impl Step for Config {
    async fn run(&self, ctx: &AttemptContext) -> Outcome {
        let method = self.method.as_reqwest();
        let url = match self.url() {
            Ok(url) => url,
            Err(error) => return Outcome::fatal(error),
        };
        let headers = match self.header_map(ctx) {
            Ok(headers) => headers,
            Err(error) => return Outcome::fatal(error),
        };
        let client = match client() {
            Ok(client) => client,
            Err(error) => return Outcome::fatal(error),
        };
        let mut request = client.request(method.clone(), url.clone()).headers(headers);
        if let Some(json) = &self.json {
            request = request.json(json);
        } else if let Some(body) = &self.body {
            request = request.body(body.clone());
        }
        let target = format!("{method} {url}");
        let exchange = async {
            let response = request.send().await?;
            let status = response.status();
            let headers = header_outputs(response.headers());
            let (body, truncated) = read_bounded(response, ctx.max_output_bytes).await?;
            Ok::<_, reqwest::Error>((status, headers, body, truncated))
        };
        let (status, headers, body, truncated) = match ctx.bounded(exchange).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => return request_failure(&target, &e),
            Err(interrupted) => return interrupted.outcome(None, crate::empty_outputs()),
        };

        let text = String::from_utf8_lossy(&body).into_owned();
        let mut outputs = Map::new();
        outputs.insert("status".into(), json!(status.as_u16()));
        outputs.insert("headers".into(), Value::Object(headers));
        if !truncated
            && !text.trim().is_empty()
            && let Ok(parsed) = serde_json::from_str::<Value>(&text)
        {
            outputs.insert("json".into(), parsed);
        }
        outputs.insert("body".into(), Value::String(text));
        outputs.insert("body_truncated".into(), json!(truncated));
        let outputs = Value::Object(outputs);

        if self.accepts(status) {
            return Outcome::Succeeded { outputs };
        }
        let expected = match &self.expect_status {
            Some(codes) if !codes.is_empty() => {
                codes.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
            }
            _ => "2xx".to_owned(),
        };
        let mut error = format!("{target} returned {status}, expected {expected}");
        if let Some(snippet) = body_snippet(&outputs["body"]) {
            error = format!("{error}: {snippet}");
        }
        Outcome::Failed { error, retryable: is_retryable_status(status), outputs }
    }
}

impl Config {
    fn url(&self) -> Result<Url, String> {
        let mut url = Url::parse(self.url.trim())
            .map_err(|e| format!("`{}` is not a valid URL: {e}", self.url))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("`{}` is not an http:// or https:// URL", self.url));
        }
        if !self.query.is_empty() {
            url.query_pairs_mut().extend_pairs(&self.query);
        }
        Ok(url)
    }

    fn header_map(&self, ctx: &AttemptContext) -> Result<HeaderMap, String> {
        let mut headers = HeaderMap::new();
        let mut insert = |name: &str, value: &str| -> Result<(), String> {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("`{name}` is not a valid HTTP header name"))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| format!("the value of header `{name}` contains invalid characters"))?;
            headers.insert(header, value);
            Ok(())
        };
        // The workflow may set its own key (some APIs want a UUID); the
        // X-Lifeboat-* headers are always lifeboat's.
        insert("idempotency-key", &ctx.idempotency_key)?;
        for (name, value) in &self.headers {
            insert(name, value)?;
        }
        insert("x-lifeboat-run-id", &ctx.run_id)?;
        insert("x-lifeboat-step-id", &ctx.step_id)?;
        insert("x-lifeboat-attempt", &ctx.attempt.to_string())?;
        Ok(headers)
    }

    fn accepts(&self, status: StatusCode) -> bool {
        match &self.expect_status {
            Some(codes) if !codes.is_empty() => codes.contains(&status.as_u16()),
            _ => status.is_success(),
        }
    }
}

/// 5xx, 429 Too Many Requests and 408 Request Timeout may pass on retry;
/// any other unexpected status is a request the server will keep refusing.
fn is_retryable_status(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
}

/// A request that got no (complete) response: the network or the server's
/// connection failed, which another attempt may not meet; a request that
/// could not even be built will never pass.
fn request_failure(target: &str, e: &reqwest::Error) -> Outcome {
    let cause = error_chain(e);
    if e.is_builder() {
        Outcome::fatal(format!("{target}: invalid request: {cause}"))
    } else if e.is_redirect() {
        Outcome::fatal(format!("{target}: {cause}"))
    } else if e.is_connect() {
        Outcome::retryable(format!("{target}: connection failed: {cause}"))
    } else {
        Outcome::retryable(format!("{target}: {cause}"))
    }
}

/// `e` and its sources, without reqwest's repetition of the URL.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(e);
    while let Some(err) = current {
        let text = err.to_string();
        let text = match text.find(" for url (") {
            Some(at) => text[..at].to_owned(),
            None => text,
        };
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = err.source();
    }
    parts.join(": ")
}

/// Response headers as a JSON map with lower-case names.
fn header_outputs(headers: &HeaderMap) -> Map<String, Value> {
    let mut out = Map::new();
    for name in headers.keys() {
        let joined = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(", ");
        out.insert(name.as_str().to_owned(), Value::String(joined));
    }
    out
}

/// At most `max` bytes of the body; the rest is not read.
async fn read_bounded(
    mut response: reqwest::Response,
    max: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = max - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

/// The start of a failed reply's body, on one line, for the error message.
fn body_snippet(body: &Value) -> Option<String> {
    const MAX_CHARS: usize = 200;
    let text = body.as_str()?.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() {
        return None;
    }
    if text.chars().count() <= MAX_CHARS {
        return Some(text);
    }
    Some(format!("{}...", text.chars().take(MAX_CHARS).collect::<String>()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Config {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn relative_url_is_rejected() {
        assert_eq!(parse("url: /health\n").compile()[0].path, vec!["url"]);
    }

    #[test]
    fn templated_url_is_checked_at_run_time() {
        assert!(parse("url: \"{{inputs.base}}/health\"\n").compile().is_empty());
    }

    #[test]
    fn status_out_of_range_names_the_index() {
        let p = parse("url: http://x\nexpect_status: [200, 999]\n").compile();
        assert_eq!(p[0].path, vec!["expect_status", "1"]);
    }

    #[test]
    fn method_is_upper_case() {
        assert_eq!(parse("url: http://x\nmethod: POST\n").method, Method::Post);
    }

    mod server {
        //! A real HTTP server on 127.0.0.1:0 for the tests.
        use axum::body::{Body, to_bytes};
        use axum::extract::Request;
        use axum::http::{HeaderValue, StatusCode};
        use axum::response::Response;
        use serde_json::{Map, Value, json};

        /// `/echo`: 200 with the request as JSON; `/status/N`: status N;
        /// `/big`: 100 kB of `x`; `/slow`: answers after 10 s.
        async fn handle(req: Request) -> Response {
            let path = req.uri().path().to_owned();
            let query = req.uri().query().unwrap_or("").to_owned();
            let method = req.method().to_string();
            let headers: Map<String, Value> = req
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), json!(v.to_str().unwrap_or("?"))))
                .collect();
            let body = to_bytes(req.into_body(), 1 << 20).await.unwrap();
            let (status, body) = if path == "/echo" {
                let echo = json!({
                    "method": method, "query": query, "headers": headers,
                    "body": String::from_utf8_lossy(&body),
                });
                (StatusCode::OK, echo.to_string())
            } else if let Some(code) = path.strip_prefix("/status/") {
                let status = StatusCode::from_u16(code.parse().unwrap()).unwrap();
                (status, format!("{{\"error\": \"status {code}\"}}"))
            } else if path == "/big" {
                (StatusCode::OK, "x".repeat(100_000))
            } else if path == "/slow" {
                tokio::time::sleep(std::time::Duration::from_secs(10)).await;
                (StatusCode::OK, String::new())
            } else {
                (StatusCode::NOT_FOUND, String::new())
            };
            let mut response = Response::new(Body::from(body));
            *response.status_mut() = status;
            let headers = response.headers_mut();
            headers.insert("X-Reply-Header", HeaderValue::from_static("yes"));
            headers.append("x-multi", HeaderValue::from_static("a"));
            headers.append("x-multi", HeaderValue::from_static("b"));
            response
        }

        /// Starts the server; returns its base URL.
        pub(super) async fn start() -> String {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let app = axum::Router::new().fallback(handle);
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            format!("http://{addr}")
        }
    }

    fn request(url: String) -> Config {
        Config {
            method: Method::Get,
            url,
            headers: IndexMap::new(),
            query: IndexMap::new(),
            json: None,
            body: None,
            expect_status: None,
        }
    }

    fn ctx() -> AttemptContext {
        let mut ctx = AttemptContext::new("run-7", "verify", 3);
        ctx.timeout = Some(Duration::from_secs(10));
        ctx
    }

    fn failure(outcome: Outcome) -> (String, bool, Value) {
        match outcome {
            Outcome::Failed { error, retryable, outputs } => (error, retryable, outputs),
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    fn success(outcome: Outcome) -> Value {
        match outcome {
            Outcome::Succeeded { outputs } => outputs,
            other => panic!("expected success, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn every_request_carries_idempotency_key_and_lifeboat_headers() {
        let base = server::start().await;
        let out = success(request(format!("{base}/echo")).run(&ctx()).await);
        let sent = &out["json"]["headers"];
        assert_eq!(sent["idempotency-key"], json!("run-7/verify"));
        assert_eq!(sent["x-lifeboat-run-id"], json!("run-7"));
        assert_eq!(sent["x-lifeboat-step-id"], json!("verify"));
        assert_eq!(sent["x-lifeboat-attempt"], json!("3"));
        assert_eq!(out["json"]["method"], json!("GET"));
    }

    #[tokio::test]
    async fn post_sends_json_query_and_headers() {
        let base = server::start().await;
        let mut c = request(format!("{base}/echo?fixed=1"));
        c.method = Method::Post;
        c.query.insert("site".into(), "dc 02&x=y".into());
        c.headers.insert("Authorization".into(), "Bearer t0k3n".into());
        c.headers.insert("Idempotency-Key".into(), "custom-key".into());
        c.json = Some(json!({"target": "dc02", "force": true}));
        let out = success(c.run(&ctx()).await);
        let echo = &out["json"];
        assert_eq!(echo["method"], json!("POST"));
        assert_eq!(echo["query"], json!("fixed=1&site=dc+02%26x%3Dy"));
        assert_eq!(echo["headers"]["authorization"], json!("Bearer t0k3n"));
        assert_eq!(echo["headers"]["idempotency-key"], json!("custom-key"));
        assert_eq!(echo["headers"]["content-type"], json!("application/json"));
        let body: Value = serde_json::from_str(echo["body"].as_str().unwrap()).unwrap();
        assert_eq!(body, json!({"target": "dc02", "force": true}));
    }

    #[tokio::test]
    async fn raw_body_is_sent_verbatim() {
        let base = server::start().await;
        let mut c = request(format!("{base}/echo"));
        c.method = Method::Put;
        c.headers.insert("content-type".into(), "text/plain".into());
        c.body = Some("promote dc02\n".into());
        let out = success(c.run(&ctx()).await);
        assert_eq!(out["json"]["method"], json!("PUT"));
        assert_eq!(out["json"]["body"], json!("promote dc02\n"));
        assert_eq!(out["json"]["headers"]["content-type"], json!("text/plain"));
    }

    #[tokio::test]
    async fn outputs_have_status_lower_case_headers_body_and_json() {
        let base = server::start().await;
        let out = success(request(format!("{base}/status/202")).run(&ctx()).await);
        assert_eq!(out["status"], json!(202));
        assert_eq!(out["headers"]["x-reply-header"], json!("yes"));
        assert_eq!(out["headers"]["x-multi"], json!("a, b"));
        assert_eq!(out["body"], json!("{\"error\": \"status 202\"}"));
        assert_eq!(out["json"], json!({"error": "status 202"}));
        assert_eq!(out["body_truncated"], json!(false));
    }

    #[tokio::test]
    async fn server_errors_and_429_are_retryable() {
        let base = server::start().await;
        for code in [500, 502, 503, 429] {
            let (error, retryable, out) =
                failure(request(format!("{base}/status/{code}")).run(&ctx()).await);
            assert!(retryable, "{code}");
            assert_eq!(out["status"], json!(code));
            assert!(
                error.starts_with(&format!("GET {base}/status/{code} returned {code} ")),
                "{error}"
            );
            assert!(
                error.ends_with(&format!("expected 2xx: {{\"error\": \"status {code}\"}}")),
                "{error}"
            );
        }
    }

    #[tokio::test]
    async fn client_errors_are_not_retryable() {
        let base = server::start().await;
        for code in [400, 401, 404, 409] {
            let (_, retryable, _) =
                failure(request(format!("{base}/status/{code}")).run(&ctx()).await);
            assert!(!retryable, "{code}");
        }
    }

    #[tokio::test]
    async fn expect_status_replaces_the_2xx_default() {
        let base = server::start().await;
        let mut c = request(format!("{base}/status/503"));
        c.expect_status = Some(vec![503]);
        assert_eq!(success(c.run(&ctx()).await)["status"], json!(503));

        let mut c = request(format!("{base}/status/200"));
        c.expect_status = Some(vec![201, 204]);
        let (error, retryable, _) = failure(c.run(&ctx()).await);
        assert!(error.contains("returned 200 OK, expected 201, 204"), "{error}");
        assert!(!retryable);
    }

    #[tokio::test]
    async fn connection_refused_is_retryable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let (error, retryable, _) =
            failure(request(format!("http://127.0.0.1:{port}/health")).run(&ctx()).await);
        assert!(retryable);
        assert!(
            error.starts_with(&format!("GET http://127.0.0.1:{port}/health: connection failed")),
            "{error}"
        );
        assert!(error.to_lowercase().contains("connection refused"), "{error}");
    }

    #[tokio::test]
    async fn body_is_bounded() {
        let base = server::start().await;
        let mut c = ctx();
        c.max_output_bytes = 1000;
        let out = success(request(format!("{base}/big")).run(&c).await);
        assert_eq!(out["body"].as_str().unwrap().len(), 1000);
        assert_eq!(out["body_truncated"], json!(true));
        assert!(out.get("json").is_none());
    }

    #[tokio::test]
    async fn timeout_comes_from_the_context_and_is_retryable() {
        let base = server::start().await;
        let mut c = ctx();
        c.timeout = Some(Duration::from_millis(200));
        let (error, retryable, _) = failure(request(format!("{base}/slow")).run(&c).await);
        assert_eq!(error, "timed out after 200ms");
        assert!(retryable);
    }

    #[tokio::test]
    async fn invalid_url_or_header_is_not_retryable() {
        let (error, retryable, _) = failure(request("not a url".into()).run(&ctx()).await);
        assert!(error.starts_with("`not a url` is not a valid URL"), "{error}");
        assert!(!retryable);

        let mut c = request("http://127.0.0.1:9/".into());
        c.headers.insert("bad header".into(), "x".into());
        let (error, retryable, _) = failure(c.run(&ctx()).await);
        assert_eq!(error, "`bad header` is not a valid HTTP header name");
        assert!(!retryable);
    }
}
