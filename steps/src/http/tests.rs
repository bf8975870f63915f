//! The http step: parsing, requests against a local server, redirects and the destination policy.

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
        let (_, retryable, _) = failure(request(format!("{base}/status/{code}")).run(&ctx()).await);
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
    c.http = HttpClient::new(Policy::new(&PolicyConfig { allow: rules(allow), deny: rules(deny) }));
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
    assert!(error.contains("address 127.0.0.1, which no [http] allow entry matches"), "{error}");
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
