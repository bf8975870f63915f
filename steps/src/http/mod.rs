//! `http`: one HTTP request; 5xx, 429 and connection errors are retryable,
//! other 4xx not. Where it may connect is the destination policy's call
//! (`policy.rs`, enforced by `connect.rs`); redirects are followed only
//! when the step asks, hop by hop, here.

mod connect;
pub mod policy;

use indexmap::IndexMap;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{StatusCode, Url};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{AttemptContext, ConfigProblem, Outcome, Step};

pub use connect::HttpClient;
pub use policy::{Policy, PolicyConfig, Refused};

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
/// Redirects are not followed unless `follow_redirects` (then up to 10, to
/// the same origin unless `allow_cross_origin`). Outputs: `status`,
/// `headers` (lower-case names; repeated headers joined with `, `), `body`
/// (text, at most `max_output_bytes`), `body_truncated`, and `json` when
/// the whole body is JSON. A failed status keeps these outputs, so the
/// operator sees the reply.
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
    /// Follow redirects (301, 302, 303, 307, 308; at most 10), each hop
    /// checked against the `[http]` destination policy. Default: a redirect
    /// is the reply.
    #[serde(default)]
    pub follow_redirects: bool,
    /// With `follow_redirects`, also follow a redirect to another origin
    /// (scheme, host or port); `headers` are never sent to another origin.
    #[serde(default)]
    pub allow_cross_origin: bool,
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
        if self.allow_cross_origin && !self.follow_redirects {
            problems.push(
                ConfigProblem::new(
                    &["allow_cross_origin"],
                    "`allow_cross_origin` has no effect without `follow_redirects: true`",
                )
                .with_help("add `follow_redirects: true`, or remove `allow_cross_origin`"),
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

/// Redirects followed at most, when a step follows them.
pub const MAX_REDIRECTS: usize = 10;

impl Step for Config {
    async fn run(&self, ctx: &AttemptContext) -> Outcome {
        let reply = match ctx.bounded(self.exchange(ctx)).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(failed)) => return failed,
            Err(interrupted) => return interrupted.outcome(None, crate::empty_outputs()),
        };
        let Reply { target, status, headers, body, truncated } = reply;
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
        if status.is_redirection()
            && !self.follow_redirects
            && let Some(location) = outputs["headers"].get("location").and_then(Value::as_str)
        {
            error = format!(
                "{error} (a redirect to `{location}`, not followed: set `follow_redirects: true` to follow it)"
            );
        } else if let Some(snippet) = body_snippet(&outputs["body"]) {
            error = format!("{error}: {snippet}");
        }
        Outcome::Failed { error, retryable: is_retryable_status(status), outputs }
    }
}

/// The final reply of an exchange (after any redirects followed).
struct Reply {
    /// `METHOD URL` of the request that got it, for messages.
    target: String,
    status: StatusCode,
    headers: Map<String, Value>,
    body: Vec<u8>,
    truncated: bool,
}

impl Config {
    /// Sends the request, and each redirect hop when the step follows
    /// them, checking every destination; reads the last reply's body.
    async fn exchange(&self, ctx: &AttemptContext) -> Result<Reply, Outcome> {
        let first = self.url().map_err(Outcome::fatal)?;
        // Validated once; each hop takes one or the other.
        let all_headers = self.header_map(ctx, true).map_err(Outcome::fatal)?;
        let lifeboat_headers = self.header_map(ctx, false).map_err(Outcome::fatal)?;
        let client = ctx.http.client().map_err(Outcome::fatal)?;
        let mut method = self.method.as_reqwest();
        let mut send_body = true;
        let mut url = first.clone();
        let mut hops = 0;
        loop {
            let target = format!("{method} {url}");
            if let Err(refused) = ctx.http.policy().check_url(&url) {
                return Err(Outcome::fatal(self.refusal(&target, &refused)));
            }
            // The step's headers (credentials, API keys) go to its own origin only.
            let headers = if url.origin() == first.origin() {
                all_headers.clone()
            } else {
                lifeboat_headers.clone()
            };
            let mut request = client.request(method.clone(), url.clone()).headers(headers);
            if send_body {
                if let Some(json) = &self.json {
                    request = request.json(json);
                } else if let Some(body) = &self.body {
                    request = request.body(body.clone());
                }
            }
            let response = request.send().await.map_err(|e| self.request_failure(&target, &e))?;
            let status = response.status();
            let next = match self.redirect(&url, &response) {
                None => {
                    let headers = header_outputs(response.headers());
                    let (body, truncated) = read_bounded(response, ctx.max_output_bytes)
                        .await
                        .map_err(|e| self.request_failure(&target, &e))?;
                    return Ok(Reply { target, status, headers, body, truncated });
                }
                Some(next) => next.map_err(|e| Outcome::fatal(format!("{target}: {e}")))?,
            };
            if next.origin() != first.origin() && !self.allow_cross_origin {
                return Err(Outcome::fatal(format!(
                    "{target} redirected ({status}) to {next}, another origin; not followed: set `allow_cross_origin: true` to follow it (the step's `headers` are not sent there)"
                )));
            }
            hops += 1;
            if hops > MAX_REDIRECTS {
                return Err(Outcome::fatal(format!(
                    "`url` `{}`: more than {MAX_REDIRECTS} redirects (the last from {target} to {next})",
                    self.url.trim()
                )));
            }
            // 303, and 301/302 after a POST, become a GET without a body (as browsers do).
            if status == StatusCode::SEE_OTHER
                || (matches!(status, StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND)
                    && method == reqwest::Method::POST)
            {
                if method != reqwest::Method::HEAD {
                    method = reqwest::Method::GET;
                }
                send_body = false;
            }
            url = next;
        }
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

    /// The request's headers; `own`: with the step's `headers` (else only
    /// lifeboat's, for another origin).
    fn header_map(&self, ctx: &AttemptContext, own: bool) -> Result<HeaderMap, String> {
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
        if own {
            for (name, value) in &self.headers {
                insert(name, value)?;
            }
        }
        insert("x-lifeboat-run-id", &ctx.run_id)?;
        insert("x-lifeboat-step-id", &ctx.step_id)?;
        insert("x-lifeboat-attempt", &ctx.attempt.to_string())?;
        Ok(headers)
    }

    /// Where a redirect reply sends the request next, when this step
    /// follows redirects and `response` is one (301, 302, 303, 307, 308
    /// with a `Location`).
    fn redirect(&self, url: &Url, response: &reqwest::Response) -> Option<Result<Url, String>> {
        use reqwest::header::LOCATION;
        let status = response.status();
        let followed = matches!(
            status,
            StatusCode::MOVED_PERMANENTLY
                | StatusCode::FOUND
                | StatusCode::SEE_OTHER
                | StatusCode::TEMPORARY_REDIRECT
                | StatusCode::PERMANENT_REDIRECT
        );
        if !self.follow_redirects || !followed {
            return None;
        }
        let location = response.headers().get(LOCATION)?;
        let next = location
            .to_str()
            .map_err(|_| format!("redirected ({status}) to a `Location` that is not text"))
            .and_then(|l| {
                url.join(l).map_err(|e| format!("redirected ({status}) to `{l}`, not a URL: {e}"))
            })
            .and_then(|next| match next.scheme() {
                "http" | "https" => Ok(next),
                other => Err(format!(
                    "redirected ({status}) to {next}: `{other}` is not http or https; not followed"
                )),
            });
        Some(next)
    }

    /// The message of a refused destination: the step's `url` as written,
    /// the host, the address and the rule.
    fn refusal(&self, target: &str, refused: &Refused) -> String {
        format!(
            "{target}: destination refused by the [http] policy of lifeboat.toml: {refused} (`url`: `{}`)",
            self.url.trim()
        )
    }

    /// A request that got no (complete) response: the network or the
    /// server's connection failed, which another attempt may not meet; a
    /// request that could not be built or a refused destination will never
    /// pass.
    fn request_failure(&self, target: &str, e: &reqwest::Error) -> Outcome {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = source {
            if let Some(refused) = err.downcast_ref::<Refused>() {
                return Outcome::fatal(self.refusal(target, refused));
            }
            source = err.source();
        }
        request_failure(target, e)
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
    use std::time::Duration;

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
        /// `/big`: 100 kB of `x`; `/slow`: answers after 10 s;
        /// `/redirect/N?to=URL` (URL percent-encoded): status N to URL;
        /// `/loop`: 302 to itself.
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
            let mut location = None;
            let (status, body) = if path == "/echo" {
                let echo = json!({
                    "method": method, "query": query, "headers": headers,
                    "body": String::from_utf8_lossy(&body),
                });
                (StatusCode::OK, echo.to_string())
            } else if let Some(code) = path.strip_prefix("/status/") {
                let status = StatusCode::from_u16(code.parse().unwrap()).unwrap();
                (status, format!("{{\"error\": \"status {code}\"}}"))
            } else if let Some(code) = path.strip_prefix("/redirect/") {
                let to = query.strip_prefix("to=").unwrap_or("/echo");
                location =
                    Some(percent_encoding::percent_decode_str(to).decode_utf8_lossy().into_owned());
                (StatusCode::from_u16(code.parse().unwrap()).unwrap(), String::new())
            } else if path == "/loop" {
                location = Some("/loop".to_owned());
                (StatusCode::FOUND, String::new())
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
            if let Some(location) = location {
                headers.insert("location", HeaderValue::from_str(&location).unwrap());
            }
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
            follow_redirects: false,
            allow_cross_origin: false,
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

    /// `{base}/redirect/{status}?to={to}`.
    fn redirecting(base: &str, status: u16, to: &str) -> Config {
        let to = percent_encoding::utf8_percent_encode(to, percent_encoding::NON_ALPHANUMERIC);
        request(format!("{base}/redirect/{status}?to={to}"))
    }

    fn with_policy(allow: &[&str], deny: &[&str]) -> AttemptContext {
        let rules = |list: &[&str]| {
            list.iter().map(|s| policy::Rule::try_from(s.to_string()).unwrap()).collect()
        };
        let mut c = ctx();
        c.http =
            HttpClient::new(Policy::new(&PolicyConfig { allow: rules(allow), deny: rules(deny) }));
        c
    }

    #[tokio::test]
    async fn a_redirect_is_the_reply_unless_the_step_follows_it() {
        let base = server::start().await;
        let (error, retryable, out) =
            failure(redirecting(&base, 302, &format!("{base}/echo")).run(&ctx()).await);
        assert!(!retryable);
        assert_eq!(out["status"], json!(302));
        assert!(
            error.ends_with(&format!(
                "returned 302 Found, expected 2xx (a redirect to `{base}/echo`, not followed: set `follow_redirects: true` to follow it)"
            )),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_followed_redirect_to_the_same_origin_keeps_the_steps_headers() {
        let base = server::start().await;
        let mut c = redirecting(&base, 307, "/echo");
        c.follow_redirects = true;
        c.method = Method::Post;
        c.headers.insert("X-Api-Key".into(), "k-123".into());
        c.json = Some(json!({"a": 1}));
        let out = success(c.run(&ctx()).await);
        let echo = &out["json"];
        assert_eq!(echo["headers"]["x-api-key"], json!("k-123"));
        // 307 repeats the method and the body.
        assert_eq!(echo["method"], json!("POST"));
        assert_eq!(echo["body"], json!("{\"a\":1}"));
    }

    #[tokio::test]
    async fn see_other_turns_a_post_into_a_get_without_a_body() {
        let base = server::start().await;
        let mut c = redirecting(&base, 303, "/echo");
        c.follow_redirects = true;
        c.method = Method::Post;
        c.body = Some("payload".into());
        let echo = &success(c.run(&ctx()).await)["json"];
        assert_eq!(echo["method"], json!("GET"));
        assert_eq!(echo["body"], json!(""));
    }

    #[tokio::test]
    async fn a_redirect_to_another_origin_is_not_followed_without_allow_cross_origin() {
        let (base, other) = (server::start().await, server::start().await);
        let mut c = redirecting(&base, 302, &format!("{other}/echo"));
        c.follow_redirects = true;
        c.headers.insert("X-Api-Key".into(), "k-123".into());
        let (error, retryable, _) = failure(c.run(&ctx()).await);
        assert!(!retryable);
        assert!(
            error.contains(&format!(
                "redirected (302 Found) to {other}/echo, another origin; not followed: set `allow_cross_origin: true`"
            )),
            "{error}"
        );
    }

    #[tokio::test]
    async fn across_origins_the_steps_headers_stay_behind() {
        let (base, other) = (server::start().await, server::start().await);
        let mut c = redirecting(&base, 302, &format!("{other}/echo"));
        c.follow_redirects = true;
        c.allow_cross_origin = true;
        c.headers.insert("X-Api-Key".into(), "k-123".into());
        c.headers.insert("Authorization".into(), "Bearer t0k3n".into());
        let sent = &success(c.run(&ctx()).await)["json"]["headers"];
        assert!(sent.get("x-api-key").is_none(), "{sent}");
        assert!(sent.get("authorization").is_none(), "{sent}");
        assert_eq!(sent["x-lifeboat-run-id"], json!("run-7"));
    }

    #[tokio::test]
    async fn endless_redirects_fail_permanently() {
        let base = server::start().await;
        let mut c = request(format!("{base}/loop"));
        c.follow_redirects = true;
        let (error, retryable, _) = failure(c.run(&ctx()).await);
        assert!(!retryable);
        assert!(error.contains("more than 10 redirects"), "{error}");
    }

    #[tokio::test]
    async fn metadata_addresses_are_refused_by_default_in_any_form() {
        for url in [
            "http://169.254.169.254/latest/meta-data/",
            "http://[::ffff:a9fe:a9fe]/",
            "http://2852039166/",
        ] {
            let (error, retryable, _) = failure(request(url.into()).run(&ctx()).await);
            assert!(!retryable, "{url}");
            assert!(error.contains("destination refused by the [http] policy"), "{error}");
            assert!(error.contains("address 169.254.169.254, a cloud metadata address"), "{error}");
            assert!(error.ends_with(&format!("(`url`: `{url}`)")), "{error}");
        }
    }

    #[tokio::test]
    async fn a_numeric_host_is_judged_as_its_address() {
        let base = server::start().await;
        let port = base.rsplit(':').next().unwrap();
        let c = with_policy(&[], &["127.0.0.0/8"]);
        let url = format!("http://2130706433:{port}/echo");
        let (error, retryable, _) = failure(request(url.clone()).run(&c).await);
        assert!(!retryable);
        assert_eq!(
            error,
            format!(
                "GET http://127.0.0.1:{port}/echo: destination refused by the [http] policy of lifeboat.toml: address 127.0.0.1, which [http] deny entry `127.0.0.0/8` refuses (`url`: `{url}`)"
            )
        );
    }

    #[tokio::test]
    async fn a_name_resolving_into_a_denied_network_is_refused_permanently() {
        let base = server::start().await;
        let port = base.rsplit(':').next().unwrap();
        let c = with_policy(&[], &["127.0.0.0/8", "::1"]);
        let (error, retryable, _) =
            failure(request(format!("http://localhost:{port}/echo")).run(&c).await);
        assert!(!retryable, "{error}");
        assert!(error.contains("host `localhost` resolves to "), "{error}");
        assert!(error.contains("which [http] deny entry `"), "{error}");
    }

    #[tokio::test]
    async fn an_allow_list_admits_what_it_names() {
        let base = server::start().await;
        let port = base.rsplit(':').next().unwrap();
        let c = with_policy(&["localhost"], &[]);
        success(request(format!("http://localhost:{port}/echo")).run(&c).await);
        let (error, _, _) = failure(request(format!("{base}/echo")).run(&c).await);
        assert!(
            error.contains("address 127.0.0.1, which no [http] allow entry matches"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn every_redirect_hop_is_checked_against_the_policy() {
        let base = server::start().await;
        let port = base.rsplit(':').next().unwrap();
        // 127.0.0.1 exactly is allowed; the rest of 127/8 is not.
        let c = with_policy(&["127.0.0.1"], &["127.0.0.0/8"]);
        let mut step = redirecting(&base, 302, &format!("http://127.0.0.2:{port}/echo"));
        step.follow_redirects = true;
        step.allow_cross_origin = true;
        let (error, retryable, _) = failure(step.run(&c).await);
        assert!(!retryable);
        assert!(
            error.starts_with(&format!(
                "GET http://127.0.0.2:{port}/echo: destination refused by the [http] policy of lifeboat.toml: address 127.0.0.2"
            )),
            "{error}"
        );
    }

    #[test]
    fn allow_cross_origin_needs_follow_redirects() {
        let p = parse("url: http://x\nallow_cross_origin: true\n").compile();
        assert_eq!(p[0].path, vec!["allow_cross_origin"]);
        assert!(
            parse("url: http://x\nfollow_redirects: true\nallow_cross_origin: true\n")
                .compile()
                .is_empty()
        );
    }
}
