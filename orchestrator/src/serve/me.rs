//! Who is asking, and what waits for them: `GET /api/v1/me` (the signed-in
//! user's name and what their roles allow, so the web UI offers only the
//! controls that would be accepted) and `GET /api/v1/pending` (every step
//! waiting for a person, each saying whether this user may decide it and,
//! if not, why — the same check `people::decide` makes).

use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::auth::Need;
use super::error::ApiError;
use crate::exec::people::{Awaiting, Decision, GateView, refusal};
use crate::store::StepStatus;
use crate::views::{GateDoc, Time};

/// `GET /api/v1/me`: `{"name", "roles", "may": {"read", "operate", "decide"}}`.
pub async fn me(State(app): State<AppState>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let user = app.ids.authorize(&headers, Need::Read)?;
    Ok(Json(json!({
        "name": user.name,
        "roles": user.roles,
        "may": {
            "read": true,
            "operate": user.may(Need::Operate),
            "decide": user.may(Need::Decide),
        },
    })))
}

#[derive(Debug, Default, Deserialize)]
pub struct PendingQuery {
    /// `true`: only the steps this user may decide.
    mine: Option<bool>,
}

/// `GET /api/v1/pending[?mine=true]`: steps waiting for people, oldest run
/// first, each with `run`, `workflow`, `step`, `waiting_for` (`approval`,
/// `ack` or `decision` for a step in `needs_human`), `gate`, `since`,
/// `may_decide` and `why_not`.
pub async fn pending(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<PendingQuery>,
) -> Result<Json<Value>, ApiError> {
    let user = app.ids.authorize(&headers, Need::Read)?.clone();
    let waiting = app.ctx.store.pending_people().await?;
    let mut out = Vec::new();
    for (run, step) in &waiting {
        let gate = GateView::read(step.state.as_ref()).unwrap_or_default();
        let awaiting = gate.awaiting;
        if step.status != StepStatus::NeedsHuman && awaiting.is_none() {
            continue;
        }
        // A step in `needs_human` is settled by an operator (skip, mark,
        // retry); a gate by its approvers.
        let why_not = match awaiting {
            Some(a) => {
                let decision = if a == Awaiting::Ack { Decision::Ack } else { Decision::Approve };
                if user.may(Need::Decide) {
                    refusal(&gate, &user.name, decision)
                } else {
                    Some(format!(
                        "{} may not decide: the approver or admin role is needed",
                        user.name
                    ))
                }
            }
            None if user.may(Need::Operate) => None,
            None => Some(format!(
                "{} may not settle it: the operator or admin role is needed",
                user.name
            )),
        };
        if q.mine == Some(true) && why_not.is_some() {
            continue;
        }
        out.push(json!({
            "run": run.id,
            "workflow": run.workflow,
            "mode": run.mode,
            "step": step.step_id,
            "status": step.status,
            "waiting_for": awaiting.map_or("decision", Awaiting::as_str),
            "since": Time(step.started_at),
            "error": step.error,
            "gate": GateDoc::read(step.state.as_ref()),
            "may_decide": why_not.is_none(),
            "why_not": why_not,
        }));
    }
    Ok(Json(Value::Array(out)))
}
