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
    fn mutates(&self) -> Option<bool> {
        Some(!matches!(self.method, Method::Get | Method::Head))
    }

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
mod tests;
