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
    scrape_outbox_and_workers(&app).await;
    scrape_drill_freshness(&app).await;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        crate::metrics::encode(),
    )
        .into_response())
}

/// The scrape-time gauges of the outbox and the live workers; a failure
/// leaves the last values and is logged, like the run counts.
async fn scrape_outbox_and_workers(app: &AppState) {
    let store = &app.ctx.store;
    let now = crate::store::now_ms();
    match tokio::time::timeout(PING_TIMEOUT, store.outbox_backlog()).await {
        Ok(Ok((pending, oldest))) => {
            let age = oldest.map_or(0.0, |at| (now - at).max(0) as f64 / 1000.0);
            crate::metrics::set_outbox_backlog(pending, age);
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "Metrics: cannot read the outbox backlog."),
        Err(_) => tracing::warn!("Metrics: reading the outbox backlog timed out."),
    }
    let lease = app.ctx.config.executor.lease.as_millis() as i64;
    match tokio::time::timeout(PING_TIMEOUT, store.workers(now - lease)).await {
        Ok(Ok(workers)) => crate::metrics::set_workers_live(workers.len() as i64),
        Ok(Err(e)) => tracing::warn!(error = %e, "Metrics: cannot read the workers."),
        Err(_) => tracing::warn!("Metrics: reading the workers timed out."),
    }
}

/// Drill freshness of the catalog's workflows: each scenario's newest drill
/// per verdict, and whether a workflow with `drill_every` is overdue — one
/// read by key per workflow (`drill_freshness`). A failure leaves the last
/// values, like the other scrape-time gauges.
async fn scrape_drill_freshness(app: &AppState) {
    let now = crate::store::now_ms();
    let snapshot = app.catalog.snapshot();
    let read = async {
        let mut last = Vec::new();
        let mut overdue = Vec::new();
        for wf in snapshot.workflows.values() {
            let fresh = crate::exec::freshness::read(&*app.ctx.store, wf, now).await?;
            for s in &fresh.scenarios {
                for d in [&s.last_passed, &s.last_failed].into_iter().flatten() {
                    last.push((wf.name.clone(), s.scenario.clone(), d.passed, d.at_ms));
                }
            }
            if fresh.drill_every.is_some() {
                overdue.push((wf.name.clone(), fresh.overdue));
            }
        }
        Ok::<_, crate::store::StoreError>((last, overdue))
    };
    match tokio::time::timeout(PING_TIMEOUT, read).await {
        Ok(Ok((last, overdue))) => crate::metrics::set_drill_freshness(&last, &overdue),
        Ok(Err(e)) => tracing::warn!(error = %e, "Metrics: cannot read drill freshness."),
        Err(_) => tracing::warn!("Metrics: reading drill freshness timed out."),
    }
}
