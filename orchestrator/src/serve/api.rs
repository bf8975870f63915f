//! `/api/v1`: workflows (with their graphs), runs (start, list, show,
//! cancel, retry) and people's decisions (approve, reject, ack). Every
//! request carries a user's bearer token; its roles gate the endpoint and
//! its name is the actor in the audit log.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::AppState;
use super::auth::Need;
use super::error::{ApiError, optional_json};
use crate::compile::CompiledWorkflow;
use crate::exec::engine::SubmitKeys;
use crate::store::{
    Created, NewAudit, NewRequest, RequestKind, RunFilter, RunMode, RunRecord, RunStatus,
};
use crate::views::{RunDocument, RunView};

type ApiResult<T = Json<Value>> = Result<T, ApiError>;

/// Upper bound of `limit` on `GET /runs`.
const MAX_LIMIT: u32 = 1000;

async fn audit(
    app: &AppState,
    actor: &str,
    action: &str,
    run_id: Option<&str>,
    step_id: Option<&str>,
    payload: Value,
) -> Result<(), ApiError> {
    app.ctx
        .store
        .audit_append(NewAudit {
            actor: actor.to_string(),
            action: action.to_string(),
            run_id: run_id.map(String::from),
            step_id: step_id.map(String::from),
            payload,
        })
        .await?;
    Ok(())
}

fn workflow_summary(wf: &CompiledWorkflow) -> Value {
    let def = &wf.definition;
    json!({
        "name": wf.name,
        "description": def.description,
        "file": wf.file,
        "hash": wf.hash,
        "objectives": def.objectives,
        "inputs": def.inputs,
        "triggers": def.triggers,
        "steps": wf.steps.len(),
    })
}

/// Nodes (in file order, with kind, wave and marks), edges (need -> step) and waves.
fn graph(wf: &CompiledWorkflow) -> Value {
    let mut wave_of = vec![0usize; wf.steps.len()];
    for (w, wave) in wf.waves.iter().enumerate() {
        for &i in wave {
            wave_of[i] = w;
        }
    }
    let nodes: Vec<Value> = wf
        .steps
        .iter()
        .map(|s| {
            let def = &s.definition;
            json!({
                "id": s.id,
                "kind": s.body.kind.name(),
                "needs": s.needs.iter().map(|&n| &wf.steps[n].id).collect::<Vec<_>>(),
                "wave": wave_of[s.index],
                "when": def.when.is_some(),
                "for_each": def.for_each.is_some(),
                "idempotent": def.idempotent,
                "irreversible": def.irreversible,
                "continue_on_failure": def.continue_on_failure,
                "rollback": s.rollback.as_ref().map(|r| r.kind.name()),
            })
        })
        .collect();
    let edges: Vec<Value> = wf
        .steps
        .iter()
        .flat_map(|s| s.needs.iter().map(move |&n| json!({"from": wf.steps[n].id, "to": s.id})))
        .collect();
    let waves: Vec<Vec<&str>> = wf
        .waves
        .iter()
        .map(|wave| wave.iter().map(|&i| wf.steps[i].id.as_str()).collect())
        .collect();
    json!({"nodes": nodes, "edges": edges, "waves": waves, "mermaid": crate::viz::mermaid(wf)})
}

pub async fn list_workflows(State(app): State<AppState>, headers: HeaderMap) -> ApiResult {
    app.ids.authorize(&headers, Need::Read)?;
    let snapshot = app.catalog.snapshot();
    let mut list = Vec::with_capacity(snapshot.workflows.len());
    for wf in snapshot.workflows.values() {
        let mut summary = workflow_summary(wf);
        summary["last_run"] = last_run(&app, &wf.name).await?;
        list.push(summary);
    }
    Ok(Json(Value::Array(list)))
}

/// The newest run of `workflow` (`{id, status, mode, created_at,
/// finished_at}`), or `null`: one step down the workflow's index.
async fn last_run(app: &AppState, workflow: &str) -> Result<Value, ApiError> {
    let filter =
        RunFilter { workflow: Some(workflow.to_string()), limit: Some(1), ..RunFilter::default() };
    Ok(match app.ctx.store.runs(&filter).await?.first() {
        Some(run) => {
            let v = RunView::from(run);
            json!({"id": v.id, "status": v.status, "mode": v.mode, "created_at": v.created_at, "finished_at": v.finished_at})
        }
        None => Value::Null,
    })
}

pub(super) fn find_workflow(
    app: &AppState,
    name: &str,
) -> Result<std::sync::Arc<CompiledWorkflow>, ApiError> {
    let snapshot = app.catalog.snapshot();
    snapshot.get(name).cloned().ok_or_else(|| {
        let hint =
            crate::suggest::did_you_mean(name, snapshot.workflows.keys().map(String::as_str))
                .map(|h| format!(" ({h})"))
                .unwrap_or_default();
        ApiError::not_found(format!("no workflow `{name}`{hint}"))
    })
}

pub async fn get_workflow(
    State(app): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    app.ids.authorize(&headers, Need::Read)?;
    let wf = find_workflow(&app, &name)?;
    let mut doc = workflow_summary(&wf);
    doc["last_run"] = last_run(&app, &wf.name).await?;
    doc["graph"] = graph(&wf);
    doc["source"] = json!(wf.source);
    let fresh = crate::exec::freshness::read(&*app.ctx.store, &wf, crate::store::now_ms()).await?;
    doc["freshness"] = json!(fresh);
    Ok(Json(doc))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartBody {
    #[serde(default)]
    inputs: Map<String, Value>,
}

pub async fn start_run(
    State(app): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let user = app.ids.authorize(&headers, Need::Operate)?.name.clone();
    let wf = find_workflow(&app, &name)?;
    let body: StartBody = optional_json(&headers, body).await?;
    let inputs = crate::exec::inputs::resolve(body.inputs, &wf.definition.inputs)
        .map_err(|problems| ApiError::invalid_inputs(&problems))?;
    let trigger = json!({"kind": "api", "by": user});
    // Written in the run's own (group-committed) transaction: no run without
    // its entry, and no second write per request.
    let audit = NewAudit {
        actor: user,
        action: "run".into(),
        run_id: None,
        step_id: None,
        payload: json!({"workflow": wf.name, "inputs": inputs}),
    };
    let keys = SubmitKeys { audit: Some(audit), ..Default::default() };
    match app.engine.submit_with(&wf, inputs, trigger, None, false, keys).await? {
        Created::Run(id) => Ok((StatusCode::CREATED, Json(json!({"id": id})))),
        Created::Skipped { active } | Created::Duplicate { existing: active } => {
            Err(ApiError::conflict(format!(
                "not started: run {active} of `{}` holds the same concurrency key (on_conflict: skip)",
                wf.name
            )))
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct RunsQuery {
    status: Option<String>,
    workflow: Option<String>,
    mode: Option<String>,
    q: Option<String>,
    limit: Option<String>,
    before: Option<String>,
}

/// The filter a runs query asks for, or the 400 naming the bad parameter.
fn run_filter(q: RunsQuery) -> Result<RunFilter, ApiError> {
    let status = match q.status.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => Some(RunStatus::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "query `status`: unknown status `{s}` (queued, running, waiting, succeeded, failed, rolling_back, rolled_back, rollback_failed, cancelled)"
            ))
        })?),
        None => None,
    };
    let limit = match q.limit.as_deref() {
        Some(text) => match text.parse::<u32>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "query `limit`: `{text}` is not a number from 1 to {MAX_LIMIT}"
                )));
            }
        },
        None => 50,
    };
    let mode = match q.mode.as_deref().filter(|m| !m.is_empty()) {
        Some("live") => Some(RunMode::Live),
        Some("drill") => Some(RunMode::Drill),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "query `mode`: unknown mode `{other}` (live, drill)"
            )));
        }
        None => None,
    };
    let search = q.q.map(|t| t.trim().to_string()).filter(|t| !t.is_empty());
    if let Some(text) = &search
        && text.chars().count() > 200
    {
        return Err(ApiError::bad_request("query `q`: longer than 200 characters"));
    }
    Ok(RunFilter {
        status,
        workflow: q.workflow.filter(|w| !w.is_empty()),
        limit: Some(limit),
        before: q.before.filter(|b| !b.is_empty()),
        mode,
        search,
    })
}

pub async fn list_runs(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<RunsQuery>,
) -> ApiResult<Response> {
    app.ids.authorize(&headers, Need::Read)?;
    let filter = run_filter(q)?;
    let runs = app.ctx.store.runs(&filter).await?;
    let mut response = view(&runs.iter().map(RunView::from).collect::<Vec<_>>())?.into_response();
    let last = runs.last().map(|r| r.id.as_str());
    if let Some(link) = next_link(&filter, runs.len(), last) {
        let link = HeaderValue::from_str(&link).map_err(|e| ApiError::internal(e.to_string()))?;
        response.headers_mut().insert(header::LINK, link);
    }
    Ok(response)
}

/// `GET /api/v1/runs/count`: how many runs the list's filters match, up to
/// 10,000 (`{"count": 10000, "more": true}` past it: counting further
/// would walk history).
pub async fn count_runs(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<RunsQuery>,
) -> ApiResult {
    app.ids.authorize(&headers, Need::Read)?;
    let filter = run_filter(q)?;
    let n = app.ctx.store.count_runs(&filter).await?;
    let cap = crate::store::COUNT_CAP;
    Ok(Json(json!({"count": n.min(cap), "more": n > cap})))
}

/// The next page after a full page of runs, as a `Link` header (`rel="next"`:
/// the same filters, `before` the page's last id). A keyset cursor, so a
/// page costs the same however deep it is. `None` when the page (`count`
/// runs, the last `last`) is not full.
fn next_link(filter: &RunFilter, count: usize, last: Option<&str>) -> Option<String> {
    let limit = filter.limit.unwrap_or(50);
    let last = last.filter(|_| count == limit as usize)?;
    let mut query = vec![format!("limit={limit}")];
    if let Some(status) = filter.status {
        query.push(format!("status={status}"));
    }
    if let Some(workflow) = &filter.workflow {
        query.push(format!("workflow={}", percent(workflow)));
    }
    if let Some(mode) = filter.mode {
        query.push(format!("mode={}", mode.as_str()));
    }
    if let Some(search) = &filter.search {
        query.push(format!("q={}", percent(search)));
    }
    query.push(format!("before={}", percent(last)));
    Some(format!("</api/v1/runs?{}>; rel=\"next\"", query.join("&")))
}

/// `text` percent-encoded for a query string (RFC 3986's unreserved kept).
fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A view (`crate::views`) as the answer: the CLI's `--json` prints the same.
fn view(v: &impl serde::Serialize) -> ApiResult {
    serde_json::to_value(v).map(Json).map_err(|e| ApiError::internal(e.to_string()))
}

/// A run by id (or unique prefix), 404 if there is none.
pub(super) async fn find_run(app: &AppState, id: &str) -> Result<RunRecord, ApiError> {
    // No such run: 404; an ambiguous prefix: 409 with the candidates.
    let id = app.ctx.store.resolve_run_id(id).await?;
    app.ctx.store.run(&id).await?.ok_or_else(|| ApiError::not_found(format!("run {id} not found")))
}

pub async fn get_run(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    app.ids.authorize(&headers, Need::Read)?;
    view(&document(&app, &id).await?)
}

/// The run document of run `id`, its steps shaped by the pinned definition
/// from the engine's cache (compiled once, isolated).
pub(super) async fn document(app: &AppState, id: &str) -> Result<RunDocument, ApiError> {
    let run = find_run(app, id).await?;
    let definition = match app.engine.definition(&run.definition_hash).await {
        Ok(wf) => Some(wf),
        Err(e) => {
            tracing::warn!(run = %run.id, error = %e, "The run's definition does not compile; showing the run without it.");
            None
        }
    };
    Ok(RunDocument::load_with(app.ctx.store.as_ref(), run, definition).await?)
}

/// `GET /api/v1/runs/{id}/steps/{step}`: one step in full — what the run
/// document says of it, plus each attempt's stdout and stderr and the
/// step's events (decisions, escalations, retries) — for the web UI's
/// step drawer.
pub async fn get_step(
    State(app): State<AppState>,
    Path((id, step)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    app.ids.authorize(&headers, Need::Read)?;
    let doc = document(&app, &id).await?;
    let Some(record) = doc.steps.iter().find(|s| s.step_id == step) else {
        let hint =
            crate::suggest::did_you_mean(&step, doc.steps.iter().map(|s| s.step_id.as_str()))
                .map(|h| format!(" ({h})"))
                .unwrap_or_default();
        return Err(ApiError::not_found(format!("run {} has no step `{step}`{hint}", doc.run.id)));
    };
    let events = app.ctx.store.events(&doc.run.id, 0).await?;
    crate::views::step_detail(record, &doc, &events)
        .map(Json)
        .map_err(|e| ApiError::internal(e.to_string()))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBody {
    from: Option<String>,
    #[serde(default)]
    inputs: Map<String, Value>,
}

/// `lifeboat retry`'s checks and request, over HTTP.
pub async fn retry_run(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let user = app.ids.authorize(&headers, Need::Operate)?.name.clone();
    let body: RetryBody = optional_json(&headers, body).await?;
    let run = find_run(&app, &id).await?;
    let wf = app.engine.definition(&run.definition_hash).await?;
    if let Some(from) = &body.from
        && wf.step(from).is_none()
    {
        let hint = crate::suggest::did_you_mean(from, wf.steps.iter().map(|s| s.id.as_str()))
            .map(|h| format!(" ({h})"))
            .unwrap_or_default();
        return Err(ApiError::bad_request(format!(
            "field `from`: run {} has no step `{from}`{hint}",
            run.id
        )));
    }
    if !body.inputs.is_empty() {
        let mut merged = run.inputs.as_object().cloned().unwrap_or_default();
        merged.extend(body.inputs.clone());
        crate::exec::inputs::resolve(merged, &wf.definition.inputs)
            .map_err(|problems| ApiError::invalid_inputs(&problems))?;
    }
    if !run.status.is_terminal() && body.from.is_none() && body.inputs.is_empty() {
        return Err(ApiError::conflict(format!(
            "run {} is {}; retry a finished run, or name a step with `from`",
            run.id, run.status
        )));
    }
    let data = json!({"from": body.from, "inputs": body.inputs});
    app.ctx
        .store
        .request(NewRequest {
            run_id: run.id.clone(),
            kind: RequestKind::Retry,
            step_id: body.from.clone(),
            data: Some(data.clone()),
            actor: user.clone(),
        })
        .await?;
    audit(&app, &user, "retry", Some(&run.id), body.from.as_deref(), data).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"id": run.id, "requested": "retry"}))))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecideBody {
    comment: Option<String>,
}

async fn decide(
    app: AppState,
    run: String,
    step: String,
    headers: HeaderMap,
    body: Body,
    decision: crate::exec::people::Decision,
) -> ApiResult {
    use crate::exec::people::DecideError;
    let user = app.ids.authorize(&headers, Need::Decide)?.name.clone();
    let body: DecideBody = optional_json(&headers, body).await?;
    let run_id = crate::exec::people::decide(
        app.ctx.store.as_ref(),
        &run,
        &step,
        &user,
        decision,
        body.comment,
    )
    .await
    .map_err(|e| match e {
        DecideError::NotFound(m) => ApiError::not_found(m),
        DecideError::NotWaiting(m) => ApiError::conflict(m),
        DecideError::Forbidden(m) => ApiError::forbidden(m),
        DecideError::Store(e) => ApiError::from(e),
    })?;
    // Queued: the run's worker applies it (the audit log then says
    // `<decision>_applied`, or `_refused` if the step moved on meanwhile).
    Ok(Json(json!({
        "id": run_id, "step": step, "decision": decision.name(), "by": user, "status": "queued"
    })))
}

pub async fn approve(
    State(app): State<AppState>,
    Path((run, step)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    decide(app, run, step, headers, body, crate::exec::people::Decision::Approve).await
}

pub async fn reject(
    State(app): State<AppState>,
    Path((run, step)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    decide(app, run, step, headers, body, crate::exec::people::Decision::Reject).await
}

pub async fn ack(
    State(app): State<AppState>,
    Path((run, step)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    decide(app, run, step, headers, body, crate::exec::people::Decision::Ack).await
}

/// Unknown paths under `/api/v1` answer with the JSON error shape.
pub async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; the endpoints are listed in lifeboat's docs/api.md")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_page_links_to_the_next_with_the_same_filters() {
        let filter = RunFilter {
            status: Some(RunStatus::Failed),
            workflow: Some("site down".into()),
            limit: Some(2),
            before: None,
            mode: Some(RunMode::Drill),
            search: Some("db 1".into()),
        };
        assert_eq!(
            next_link(&filter, 2, Some("0193-b")).as_deref(),
            Some(
                "</api/v1/runs?limit=2&status=failed&workflow=site%20down&mode=drill&q=db%201&before=0193-b>; rel=\"next\""
            )
        );
        assert_eq!(next_link(&filter, 1, Some("0193-b")), None, "the last page");
        assert_eq!(next_link(&RunFilter::default(), 0, None), None);
    }
}
