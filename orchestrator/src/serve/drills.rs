//! `/api/v1` for drills: start one (a scenario, injected faults, inputs),
//! read the drill history, and the drills' freshness (per scenario, last
//! drilled when and how, overdue against `objectives.drill_every`) — the
//! same checks and documents as `lifeboat drill` and `lifeboat drills --json`.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::AppState;
use super::api::find_workflow;
use super::auth::Need;
use super::error::{ApiError, optional_json};
use crate::exec::drill::{self, DrillError, DrillRequest};
use crate::store::Created;
use crate::views::DrillView;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillBody {
    /// A scenario under the workflow's `drills:`.
    scenario: Option<String>,
    /// `STEP=FAULT`, as `--inject`.
    #[serde(default)]
    inject: Vec<String>,
    /// Override the scenario's inputs.
    #[serde(default)]
    inputs: Map<String, Value>,
}

pub async fn start_drill(
    State(app): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let user = app.ids.authorize(&headers, Need::Operate)?.name.clone();
    let wf = find_workflow(&app, &name)?;
    let body: DrillBody = optional_json(&headers, body).await?;
    let request = DrillRequest {
        scenario: body.scenario.as_deref(),
        injects: &body.inject,
        inputs: body.inputs,
        started_by: &user,
        drive_here: false,
        schedule_tick: None,
        trigger: None,
    };
    let (created, spec) = match drill::start(&app.engine, &wf, request).await {
        Ok(started) => started,
        Err(DrillError::Exec(e)) => return Err(e.into()),
        Err(e) => return Err(ApiError::unprocessable(e.to_string())),
    };
    match created {
        Created::Run(id) => Ok((
            StatusCode::CREATED,
            Json(json!({"id": id, "scenario": spec.scenario, "faults": spec.faults})),
        )),
        Created::Skipped { active } | Created::Duplicate { existing: active } => {
            Err(ApiError::conflict(format!(
                "not started: run {active} of `{}` holds the same concurrency key (on_conflict: skip)",
                wf.name
            )))
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct DrillsQuery {
    workflow: Option<String>,
    limit: Option<String>,
}

pub async fn list_drills(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<DrillsQuery>,
) -> Result<Json<Value>, ApiError> {
    app.ids.authorize(&headers, Need::Read)?;
    let limit = match q.limit.as_deref() {
        None => 50,
        Some(text) => match text.parse::<u32>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "query `limit`: `{text}` is not a number from 1 to 1000"
                )));
            }
        },
    };
    let workflow = q.workflow.as_deref().filter(|w| !w.is_empty());
    let runs = app.ctx.store.drills(workflow, limit).await?;
    let views: Vec<DrillView> = runs.iter().map(DrillView::from).collect();
    Ok(Json(serde_json::to_value(views).map_err(|e| ApiError::internal(e.to_string()))?))
}

#[derive(Debug, Deserialize)]
pub struct FreshnessQuery {
    workflow: Option<String>,
}

/// `GET /api/v1/drills/freshness[?workflow=NAME]`: every workflow's (or
/// one's) freshness, as `freshness` in `lifeboat drills --json`.
pub async fn freshness(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<FreshnessQuery>,
) -> Result<Json<Value>, ApiError> {
    app.ids.authorize(&headers, Need::Read)?;
    let workflows = match q.workflow.as_deref().filter(|w| !w.is_empty()) {
        Some(name) => vec![find_workflow(&app, name)?],
        None => app.catalog.snapshot().workflows.values().cloned().collect(),
    };
    let now = crate::store::now_ms();
    let mut out = Vec::new();
    for wf in &workflows {
        out.push(crate::exec::freshness::read(&*app.ctx.store, wf, now).await?);
    }
    Ok(Json(serde_json::to_value(out).map_err(|e| ApiError::internal(e.to_string()))?))
}
