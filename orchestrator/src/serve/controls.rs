//! The operator controls over HTTP — cancel, pause, resume, skip, mark —
//! checked, queued and audited by `exec::controls`, the same as the CLI's.
//! Each answers `202 {"id", "requested"}`: the run's worker applies it.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::auth::Need;
use super::error::{ApiError, optional_json};
use crate::exec::controls::{self, Control, ControlError};

type Accepted = Result<(StatusCode, Json<Value>), ApiError>;

/// The operator making the request, or the 401/403 that says why not.
fn operator(app: &AppState, headers: &HeaderMap) -> Result<String, ApiError> {
    Ok(app.ids.authorize(headers, Need::Operate)?.name.clone())
}

async fn send(app: &AppState, user: &str, run: &str, control: Control) -> Accepted {
    let queued = controls::request(app.ctx.store.as_ref(), run, control, user, "api")
        .await
        .map_err(|e| match e {
            ControlError::NotFound(m) => ApiError::not_found(m),
            ControlError::Conflict(m) => ApiError::conflict(m),
            ControlError::Store(e) => ApiError::from(e),
        })?;
    Ok((StatusCode::ACCEPTED, Json(json!({"id": queued.run_id, "requested": queued.requested}))))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    #[serde(default)]
    no_rollback: bool,
}

/// `POST /api/v1/runs/{id}/cancel`, body `{"no_rollback": false}`.
pub async fn cancel(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Accepted {
    let user = operator(&app, &headers)?;
    let body: CancelBody = optional_json(&headers, body).await?;
    send(&app, &user, &id, Control::Cancel { rollback: !body.no_rollback }).await
}

/// `POST /api/v1/runs/{id}/pause`: no new step starts until resumed.
pub async fn pause(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Accepted {
    send(&app, &operator(&app, &headers)?, &id, Control::Pause).await
}

/// `POST /api/v1/runs/{id}/resume`.
pub async fn resume(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Accepted {
    send(&app, &operator(&app, &headers)?, &id, Control::Resume).await
}

/// `POST /api/v1/runs/{id}/steps/{step}/skip`.
pub async fn skip(
    State(app): State<AppState>,
    Path((id, step)): Path<(String, String)>,
    headers: HeaderMap,
) -> Accepted {
    send(&app, &operator(&app, &headers)?, &id, Control::Skip { step }).await
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Outcome {
    Succeeded,
    Failed,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarkBody {
    outcome: Outcome,
}

/// `POST /api/v1/runs/{id}/steps/{step}/mark`, body `{"outcome":
/// "succeeded"|"failed"}`: break-glass, for a step a person finished (or
/// gave up on) by hand.
pub async fn mark(
    State(app): State<AppState>,
    Path((id, step)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Accepted {
    let user = operator(&app, &headers)?;
    let bytes = super::error::read_body(&headers, body).await?;
    super::error::require_json(&headers)?;
    let body: MarkBody = super::error::parse_json(&bytes)?;
    let succeeded = matches!(body.outcome, Outcome::Succeeded);
    send(&app, &user, &id, Control::Mark { step, succeeded }).await
}
