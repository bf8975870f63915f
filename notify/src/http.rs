//! What the HTTP channels share: the client, URL checks, and how a response
//! or a transport error becomes [`Delivered`] or [`SendError`].

use std::time::Duration;

use reqwest::{Response, StatusCode, Url};

use crate::channel::{ConfigError, TIMEOUT};
use crate::message::{Delivered, SendError, truncate};

/// A client with the per-request timeout. Redirects are not followed: a
/// notification endpoint that redirects is misconfigured, and following it
/// could carry a signed body somewhere unintended.
pub(crate) fn client(channel: &str) -> Result<reqwest::Client, ConfigError> {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("lifeboat/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ConfigError::invalid(channel, format!("cannot build HTTP client: {e}")))
}

/// Parses an http(s) URL. `what` names the value without revealing it (a
/// Slack webhook URL is a secret).
pub(crate) fn parse_url(channel: &str, what: &str, url: &str) -> Result<Url, ConfigError> {
    let parsed = Url::parse(url)
        .map_err(|e| ConfigError::invalid(channel, format!("{what} is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(ConfigError::invalid(channel, format!("{what} must be an http(s) URL")));
    }
    Ok(parsed)
}

/// Probes the origin of `url` (never its path, which may hold a secret):
/// the host resolves, a connection opens and, for https, the TLS handshake
/// succeeds. A `HEAD /` carries no message; any HTTP answer proves the rest.
pub(crate) async fn probe_origin(client: &reqwest::Client, url: &Url) -> Result<String, String> {
    let host = url.host_str().unwrap_or_default().to_string();
    let port = url.port_or_known_default().unwrap_or(443);
    let addresses = tokio::time::timeout(TIMEOUT, tokio::net::lookup_host((host.as_str(), port)))
        .await
        .map_err(|_| format!("{host} did not resolve within {}s", TIMEOUT.as_secs()))?
        .map_err(|e| format!("{host} does not resolve: {e}"))?
        .count();
    let mut origin = url.clone();
    origin.set_path("/");
    origin.set_query(None);
    origin.set_fragment(None);
    let _ = origin.set_username("");
    let _ = origin.set_password(None);
    let response = client.head(origin).send().await.map_err(|e| match transport_error(e) {
        SendError::Retryable { message, .. } | SendError::Permanent(message) => {
            format!("{host}:{port}: {message}")
        }
    })?;
    let tls = if url.scheme() == "https" { ", TLS handshake ok" } else { "" };
    Ok(format!(
        "{host}:{port} resolves ({addresses} address{}){tls}, HTTP {} to HEAD /",
        if addresses == 1 { "" } else { "es" },
        response.status().as_u16()
    ))
}

/// Sends one request and turns what happens into the attempt's outcome:
/// the one way every HTTP channel delivers.
pub(crate) async fn deliver(request: reqwest::RequestBuilder) -> Result<Delivered, SendError> {
    let response = request.send().await.map_err(transport_error)?;
    outcome(response).await
}

/// A transport error: always worth another try (connection refused, reset,
/// timeout, DNS). The message drops the URL, which may hold a secret.
pub(crate) fn transport_error(e: reqwest::Error) -> SendError {
    let what = if e.is_timeout() {
        format!("timed out after {}s", TIMEOUT.as_secs())
    } else if e.is_connect() {
        "could not connect".to_string()
    } else {
        "request failed".to_string()
    };
    let mut cause = String::new();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    let e = e.without_url();
    let detail = if cause.is_empty() { e.to_string() } else { cause };
    SendError::retryable(format!("{what}: {detail}"))
}

/// Turns a response into the outcome of the attempt: 2xx delivered;
/// 408, 429 and 5xx retryable (honouring `Retry-After`); anything else
/// permanent. The body (up to 300 characters) goes into the message.
pub(crate) async fn outcome(response: Response) -> Result<Delivered, SendError> {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
    let body = response.text().await.unwrap_or_default();
    let body = truncate(body.trim(), 300);
    let said = if body.is_empty() { String::new() } else { format!(": {body}") };
    if status.is_success() {
        return Ok(Delivered { detail: format!("HTTP {}{said}", status.as_u16()) });
    }
    let message = format!("HTTP {status}{said}");
    if status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
    {
        Err(SendError::Retryable { message, retry_after })
    } else {
        Err(SendError::Permanent(message))
    }
}

/// `Retry-After`: delay seconds, or an HTTP-date (a date in the past means
/// now).
pub(crate) fn parse_retry_after(
    value: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some((when.to_utc() - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers one request with 405 and hands back what it read.
    async fn one_answer() -> (Url, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let served = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = socket.read(&mut buf).await.unwrap();
            socket
                .write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        (Url::parse(&format!("http://127.0.0.1:{port}/services/T0/B0/secret?k=v")).unwrap(), served)
    }

    #[tokio::test]
    async fn a_probe_asks_the_origin_never_the_secret_path() {
        let (url, served) = one_answer().await;
        let said = probe_origin(&client("hook").unwrap(), &url).await.unwrap();
        assert!(said.contains("resolves (1 address)") && said.contains("HTTP 405"), "{said}");
        let request = served.await.unwrap();
        assert!(request.starts_with("HEAD / HTTP/1.1"), "{request}");
        assert!(!request.contains("secret"), "{request}");
    }

    #[tokio::test]
    async fn a_probe_names_a_host_that_does_not_resolve_or_a_port_that_refuses() {
        let c = client("hook").unwrap();
        let url = Url::parse("https://no-such-host.invalid/x").unwrap();
        let e = probe_origin(&c, &url).await.unwrap_err();
        assert!(e.contains("no-such-host.invalid does not resolve"), "{e}");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = Url::parse(&format!("http://127.0.0.1:{port}/x")).unwrap();
        let e = probe_origin(&c, &url).await.unwrap_err();
        assert!(e.contains(&format!("127.0.0.1:{port}: could not connect")), "{e}");
    }

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let now = chrono::Utc.with_ymd_and_hms(2015, 10, 21, 7, 28, 0).unwrap();
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn only_http_urls_are_accepted() {
        assert!(parse_url("c", "url", "http://127.0.0.1:9/x").is_ok());
        assert!(parse_url("c", "url", "ftp://example.com/").is_err());
        assert!(parse_url("c", "url", "nope").is_err());
    }
}
