//! The API's one error shape: `{"error": {"code", "message"}}` with the
//! right status, and the request-body helpers that produce it (1 MiB cap,
//! content type, JSON parsed with the failing field's path in the message).

use axum::Json;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

/// Request bodies (hooks and API) are refused above this size.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable, machine-readable: `bad_request`, `unauthorized`, …
    pub code: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header (429, 503).
    pub retry_after: Option<u64>,
    /// Per-field messages (`{"inputs.site": "…"}`), so a form can show each
    /// at its field; the body's `fields`, left out when empty.
    pub fields: Vec<(String, String)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), retry_after: None, fields: Vec::new() }
    }

    /// 422 for inputs a workflow refuses: every message, and each at its
    /// field (`inputs.NAME`) in `fields`.
    pub fn invalid_inputs(problems: &crate::exec::inputs::InputProblems) -> Self {
        let mut error = Self::unprocessable(problems.join("; "));
        error.fields = problems
            .0
            .iter()
            .filter(|p| !p.input.is_empty())
            .map(|p| (format!("inputs.{}", p.input), p.message.clone()))
            .collect();
        error
    }

    /// Adds `Retry-After: secs` to the answer.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, message = %self.message, "Request failed.");
        }
        let mut body = json!({"error": {"code": self.code, "message": self.message}});
        if !self.fields.is_empty() {
            let fields: serde_json::Map<String, serde_json::Value> =
                self.fields.into_iter().map(|(k, v)| (k, v.into())).collect();
            body["error"]["fields"] = fields.into();
        }
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        response
    }
}

/// Statuses by variant (docs/exit-codes.md): a database outage is a 503 the
/// client may retry, never a 4xx that blames its request.
fn store_error(e: &crate::store::StoreError, message: String) -> ApiError {
    use crate::store::StoreError;
    match e {
        StoreError::NotFound(_) => ApiError::not_found(message),
        StoreError::Ambiguous { .. } => ApiError::new(StatusCode::CONFLICT, "ambiguous", message),
        StoreError::Conflict(_) => ApiError::conflict(message),
        StoreError::Unavailable(_) | StoreError::SchemaBehind(_) => {
            ApiError::unavailable(message).retry_after(5)
        }
        StoreError::Corrupt { .. }
        | StoreError::Config(_)
        | StoreError::Database(_)
        | StoreError::Sqlite(_) => ApiError::internal(message),
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        store_error(&e, e.to_string())
    }
}

/// Statuses by variant: a run's own template that does not render with the
/// inputs sent is the request's fault (422); the rest is ours (500) or the
/// database's (by `store_error`).
impl From<crate::exec::ExecError> for ApiError {
    fn from(e: crate::exec::ExecError) -> Self {
        use crate::exec::ExecError;
        let message = e.to_string();
        match &e {
            ExecError::Store(store) => store_error(store, message),
            ExecError::Render { .. } => ApiError::unprocessable(message),
            ExecError::CorruptState { .. }
            | ExecError::DefinitionMissing(_)
            | ExecError::Quarantine(_)
            | ExecError::Background(_) => ApiError::internal(message),
        }
    }
}

/// Refuses a body that is not `application/json` (parameters such as
/// `charset` are allowed).
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            if ct.is_empty() {
                "missing Content-Type: send the body as application/json".to_string()
            } else {
                format!("Content-Type `{ct}` is not supported: send the body as application/json")
            },
        ))
    }
}

/// An oversized body is still read (and dropped) up to this much before the
/// 413 goes out, so the client sees the answer instead of a reset
/// connection; beyond it the connection is simply closed.
const DRAIN_BYTES: usize = 8 * MAX_BODY_BYTES;

/// Reads the whole body, refusing more than `MAX_BODY_BYTES` (413), whether
/// `Content-Length` says so or the body turns out longer.
pub async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt;
    let too_large = ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("request body is larger than {MAX_BODY_BYTES} bytes (1 MiB)"),
    );
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > DRAIN_BYTES as u64) {
        return Err(too_large);
    }
    let mut body = body;
    let mut buf = Vec::with_capacity(declared.unwrap_or(0).min(MAX_BODY_BYTES as u64) as usize);
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        seen += data.len();
        if seen > DRAIN_BYTES {
            return Err(too_large);
        }
        if seen <= MAX_BODY_BYTES {
            buf.extend_from_slice(&data);
        }
    }
    if seen > MAX_BODY_BYTES {
        return Err(too_large);
    }
    Ok(Bytes::from(buf))
}

/// Parses JSON; the error names the field by its path (`alerts[0].labels`).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            ApiError::bad_request(format!("body is not valid: {inner}"))
        } else {
            ApiError::bad_request(format!("field `{path}`: {inner}"))
        }
    })
}

/// An optional JSON body: empty means `T::default()`.
pub async fn optional_json<T: DeserializeOwned + Default>(
    headers: &HeaderMap,
    body: Body,
) -> Result<T, ApiError> {
    let bytes = read_body(headers, body).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    require_json(headers)?;
    parse_json(&bytes)
}

#[cfg(test)]
mod store_tests {
    use super::*;
    use crate::store::{Conflict, StoreError};

    #[test]
    fn store_errors_answer_by_variant() {
        let status = |e: StoreError| ApiError::from(e).status;
        assert_eq!(status(StoreError::NotFound("r".into())), StatusCode::NOT_FOUND);
        let ambiguous = StoreError::Ambiguous { prefix: "0".into(), candidates: vec!["01".into()] };
        assert_eq!(status(ambiguous), StatusCode::CONFLICT);
        assert_eq!(status(Conflict::LeaseLost("r".into()).into()), StatusCode::CONFLICT);
        assert_eq!(status(StoreError::Unavailable("disk".into())), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status(StoreError::SchemaBehind("x".into())), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status(StoreError::corrupt("x")), StatusCode::INTERNAL_SERVER_ERROR);
        let exec = |e: crate::exec::ExecError| ApiError::from(e).status;
        let outage = crate::exec::ExecError::Store(StoreError::Unavailable("io".into()));
        assert_eq!(exec(outage), StatusCode::SERVICE_UNAVAILABLE);
        let key = crate::exec::ExecError::Render { what: "concurrency key", message: "x".into() };
        assert_eq!(exec(key), StatusCode::UNPROCESSABLE_ENTITY);
        let missing = crate::exec::ExecError::DefinitionMissing("abc".into());
        assert_eq!(exec(missing), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
