//! `/healthz` (the process answers), `/readyz` (the database answers: 503
//! while it does not) and `/metrics` (Prometheus text; a bearer token when
//! `[server] metrics_token_env` names one).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::error::ApiError;

/// How long `/readyz` waits for the database.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

pub async fn readyz(State(app): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    match tokio::time::timeout(PING_TIMEOUT, app.ctx.store.ping()).await {
        Ok(Ok(())) if !app.shutdown.is_cancelled() => Ok(Json(json!({"status": "ready"}))),
        Ok(Ok(())) => Err(ApiError::unavailable("shutting down")),
        Ok(Err(e)) => Err(ApiError::unavailable(format!("database not reachable: {e}"))),
        Err(_) => Err(ApiError::unavailable(format!(
            "database did not answer within {}s",
            PING_TIMEOUT.as_secs()
        ))),
    }
}

pub async fn metrics(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.ids.authorize_metrics(&headers)?;
    match tokio::time::timeout(PING_TIMEOUT, app.ctx.store.run_counts()).await {
        Ok(Ok(counts)) => crate::metrics::set_run_counts(&counts),
        Ok(Err(e)) => tracing::warn!(error = %e, "Metrics: cannot count runs."),
        Err(_) => tracing::warn!("Metrics: counting runs timed out."),
    }
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        crate::metrics::encode(),
    )
        .into_response())
}
