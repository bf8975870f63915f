//! `POST /hooks/{name}`: alerts and events start workflows.
//!
//! An alert group — Alertmanager's (webhook version 4) or Grafana
//! Alerting's (webhook contact point, version 1), read by `hook_payload` —
//! fans out to one trigger per alert, keyed by its fingerprint; a `json`
//! hook's body is one event. Each `webhook: <name>` trigger
//! of the catalog whose `match` holds renders its inputs (strict templates
//! over `alert.*` / `event.*`), checks them against the workflow's
//! declarations and submits a run with a dedupe key, so a repeated alert
//! finds its active run instead of starting another (enforced by the store,
//! also across replicas). Every trigger is audited as `hook:<name>`.
//! Before any of that, `hook_guard` refuses floods, oversized payloads and
//! replayed signed requests.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use regex::Regex;
use serde_json::{Value, json};

use super::AppState;
use super::error::{ApiError, read_body, require_json};
use super::hook_guard::Refusal;
use super::hook_payload::{Incoming, parse};
use crate::catalog::TriggerRef;
use crate::config::HookFormat;
use crate::exec::engine::SubmitKeys;
use crate::model::AlertStatus;
use crate::store::{Created, NewAudit, RunFilter, RunStatus, now_ms};

/// What the request did, as answered with 202.
#[derive(Debug, Default, serde::Serialize)]
pub struct Outcome {
    pub runs: Vec<String>,
    pub deduplicated: Vec<String>,
    /// Not started: the concurrency key was busy (`on_conflict: skip`); the active run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    /// Runs cancelled because their alert resolved (`cancel_on_resolve`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cancelled: Vec<String>,
    /// Alerts whose inputs a workflow refused, when others in the same payload started.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<Value>,
}

pub async fn receive(
    State(app): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Outcome>), ApiError> {
    // The configured names are not listed: they would tell a caller which
    // hooks exist to try tokens on.
    let Some(hook) = app.ids.hooks.get(&name) else {
        return Err(ApiError::not_found(format!("no hook `{name}`")));
    };
    let span = crate::telemetry::webhook_span(&name, &headers);
    let result =
        tracing::Instrument::instrument(handle(&app, hook, &headers, body), span.clone()).await;
    let outcome = match &result {
        Ok(o) if !o.runs.is_empty() => "started",
        Ok(o) if !o.deduplicated.is_empty() || !o.skipped.is_empty() => "deduplicated",
        Ok(o) if !o.cancelled.is_empty() => "cancelled",
        Ok(_) => "ignored",
        Err(e) if e.status == StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        Err(e) if matches!(e.code, "too_many_alerts" | "replayed") => e.code,
        Err(e) if e.status == StatusCode::UNAUTHORIZED => "unauthorized",
        Err(e) if e.status.is_client_error() => "rejected",
        Err(_) => "error",
    };
    crate::metrics::webhook(&name, outcome);
    if let Ok(o) = &result {
        let runs = (o.runs.iter().map(|r| (r.as_str(), "started")))
            .chain(o.deduplicated.iter().map(|r| (r.as_str(), "deduplicated")))
            .chain(o.skipped.iter().map(|r| (r.as_str(), "skipped")))
            .chain(o.cancelled.iter().map(|r| (r.as_str(), "cancelled")));
        crate::telemetry::webhook_answered(&span, outcome, runs);
    } else {
        crate::telemetry::webhook_answered(&span, outcome, []);
    }
    result.map(|o| (StatusCode::ACCEPTED, Json(o)))
}

async fn handle(
    app: &AppState,
    hook: &super::auth::Hook,
    headers: &HeaderMap,
    body: Body,
) -> Result<Outcome, ApiError> {
    if !hook.needs_body_to_verify() {
        hook.verify(headers, &[])?;
    }
    require_json(headers)?;
    let bytes = read_body(headers, body).await?;
    let signed = if hook.needs_body_to_verify() { hook.verify(headers, &bytes)? } else { None };
    // Only authenticated requests spend the hook's rate: strangers cannot
    // use it up (their failures are throttled in `auth`).
    if let Err(wait) = app.hook_guard.take(hook, std::time::Instant::now()) {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        let detail = json!({"rate_per_minute": hook.rate_per_minute, "burst": hook.burst});
        app.hook_guard
            .refused(app.ctx.store.as_ref(), &hook.name, Refusal::RateLimited, detail)
            .await;
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "hook `{name}` takes {} requests a minute, {} at once ([hooks.{name}] rate_per_minute, burst); try again in {secs}s",
                hook.rate_per_minute,
                hook.burst,
                name = hook.name
            ),
        )
        .retry_after(secs));
    }
    let incoming = parse(hook.format, &bytes)?;
    if incoming.len() > hook.max_alerts {
        let detail = json!({"alerts": incoming.len(), "max_alerts": hook.max_alerts});
        app.hook_guard
            .refused(app.ctx.store.as_ref(), &hook.name, Refusal::TooManyAlerts, detail)
            .await;
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_alerts",
            format!(
                "the payload carries {} alerts; hook `{name}` takes at most {} per request ([hooks.{name}] max_alerts); nothing was started",
                incoming.len(),
                hook.max_alerts,
                name = hook.name
            ),
        ));
    }
    if let Some(proof) = signed {
        refuse_replay(app, &hook.name, &proof).await?;
    }
    process(app, hook, incoming).await
}

/// A signed request is acted on once: its signature is remembered (in the
/// store, across replicas) until its timestamp leaves the window.
async fn refuse_replay(
    app: &AppState,
    hook: &str,
    proof: &lifeboat_notify::signature::Verified,
) -> Result<(), ApiError> {
    use lifeboat_notify::signature::DEFAULT_WINDOW_SECS;
    let expires_at = (proof.timestamp + DEFAULT_WINDOW_SECS + 1).saturating_mul(1000);
    let seen = app.ctx.store.remember_signature(hook, &proof.mac, now_ms(), expires_at).await?;
    if !seen.replay {
        return Ok(());
    }
    let detail = json!({"timestamp": proof.timestamp});
    app.hook_guard.refused(app.ctx.store.as_ref(), hook, Refusal::Replayed, detail).await;
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "replayed",
        format!(
            "hook `{hook}` already accepted this signed request (t={}); a replay starts nothing: sign each request with its own timestamp",
            proof.timestamp
        ),
    ))
}

/// Matches every alert or event against the hook's triggers and starts,
/// deduplicates or cancels runs.
async fn process(
    app: &AppState,
    hook: &super::auth::Hook,
    incoming: Vec<Incoming>,
) -> Result<Outcome, ApiError> {
    let triggers = app.catalog.snapshot().webhook_triggers(&hook.name);
    let actor = format!("hook:{}", hook.name);
    let mut out = Outcome::default();
    let mut refusals: Vec<String> = Vec::new();
    for ev in &incoming {
        for t in &triggers {
            let trigger = t.trigger();
            if !matches(trigger, ev) {
                continue;
            }
            let starts_on = trigger.on.unwrap_or(AlertStatus::Firing);
            if ev.status == AlertStatus::Resolved
                && starts_on == AlertStatus::Firing
                && trigger.cancel_on_resolve
            {
                cancel_resolved(app, &hook.name, t, ev, &actor, &mut out).await?;
            }
            if ev.status != starts_on {
                continue;
            }
            match start(app, &hook.name, t, ev, &actor).await? {
                Ok(Created::Run(id)) => out.runs.push(id),
                Ok(Created::Duplicate { existing }) => out.deduplicated.push(existing),
                Ok(Created::Skipped { active }) => out.skipped.push(active),
                Err(why) => {
                    out.rejected.push(json!({
                        "workflow": t.workflow.name,
                        "fingerprint": ev.fingerprint,
                        "error": why,
                    }));
                    refusals.push(why);
                }
            }
        }
    }
    let started = out.runs.len() + out.deduplicated.len() + out.skipped.len();
    if started == 0 && !refusals.is_empty() {
        return Err(ApiError::unprocessable(refusals.join("; ")));
    }
    Ok(out)
}

/// Label equality, or `~regex` matched against the whole value.
fn matches(trigger: &crate::model::Trigger, ev: &Incoming) -> bool {
    trigger.matchers.iter().all(|(key, want)| {
        let Some(have) = ev.field(key) else { return false };
        match want.strip_prefix('~') {
            Some(pattern) => anchored(pattern).is_some_and(|re| re.is_match(&have)),
            None => have == *want,
        }
    })
}

/// `^(?:pattern)$`, compiled once per pattern (patterns come from workflow files).
fn anchored(pattern: &str) -> Option<Regex> {
    static CACHE: LazyLock<Mutex<HashMap<String, Option<Regex>>>> =
        LazyLock::new(|| Mutex::new(HashMap::new()));
    let mut cache = CACHE.lock().expect("regex cache poisoned");
    cache
        .entry(pattern.to_string())
        .or_insert_with(|| match Regex::new(&format!("^(?:{pattern})$")) {
            Ok(re) => Some(re),
            Err(e) => {
                tracing::warn!(%pattern, error = %e, "A trigger's `match` regex is invalid; it matches nothing.");
                None
            }
        })
        .clone()
}

/// The template context of a trigger: the payload as `alert` and `event`.
fn context(ev: &Incoming) -> Value {
    json!({"alert": ev.payload, "event": ev.payload})
}

fn render(t: &TriggerRef, key: &str, ctx: &handlebars::Context) -> Option<Result<String, String>> {
    let parsed = t.workflow.templates.get(key)?;
    Some(crate::exec::render::render(parsed, ctx))
}

/// The dedupe key: `<hook>:<fingerprint>` for alerts, the rendered `dedupe`
/// template for JSON events (none: every event starts a run).
fn dedupe_key(
    hook: &str,
    t: &TriggerRef,
    ev: &Incoming,
    ctx: &handlebars::Context,
) -> Result<Option<String>, String> {
    if let Some(fp) = &ev.fingerprint {
        return Ok(Some(format!("{hook}:{fp}")));
    }
    match render(t, &format!("triggers.{}.dedupe", t.index), ctx) {
        Some(Ok(key)) if key.trim().is_empty() => Ok(None),
        Some(Ok(key)) => Ok(Some(format!("{hook}:{key}"))),
        Some(Err(e)) => Err(format!("workflow `{}`: dedupe: {e}", t.workflow.name)),
        None => Ok(None),
    }
}

/// One matched trigger of a payload: its checked inputs and dedupe key, or
/// why its inputs are refused.
pub type Prepared = Result<(Value, Option<String>), String>;

/// What a payload would start, without starting anything: for each alert
/// or event and each trigger it matches, the checked inputs and dedupe key,
/// or why the inputs are refused. Pure (no store, no IO), so the webhook
/// fuzz target drives exactly the code a request runs before `submit`.
pub fn preview(
    format: HookFormat,
    bytes: &[u8],
    hook: &str,
    triggers: &[TriggerRef],
) -> Result<Vec<Prepared>, ApiError> {
    let mut out = Vec::new();
    for ev in &parse(format, bytes)? {
        for t in triggers {
            if matches(t.trigger(), ev) {
                out.push(prepare(hook, t, ev)?);
            }
        }
    }
    Ok(out)
}

/// Renders and checks a trigger's inputs and its dedupe key for one alert.
/// The inner `Err` is a refusal of this alert's inputs (422), naming the input.
fn prepare(hook: &str, t: &TriggerRef, ev: &Incoming) -> Result<Prepared, ApiError> {
    let wf = &t.workflow;
    let ctx_value = context(ev);
    let ctx =
        handlebars::Context::wraps(&ctx_value).map_err(|e| ApiError::internal(e.to_string()))?;
    let mut pairs = Vec::new();
    for name in t.trigger().inputs.keys() {
        match render(t, &format!("triggers.{}.inputs.{name}", t.index), &ctx) {
            Some(Ok(text)) => pairs.push(format!("{name}={text}")),
            Some(Err(e)) => {
                return Ok(Err(format!("workflow `{}`: input `{name}`: {e}", wf.name)));
            }
            None => {
                return Err(ApiError::internal(format!(
                    "workflow `{}`: template of input `{name}` is missing",
                    wf.name
                )));
            }
        }
    }
    let specs = &wf.definition.inputs;
    let values = match crate::exec::inputs::parse_pairs(&pairs, specs)
        .map_err(crate::exec::inputs::InputProblems::unnamed)
        .and_then(|given| crate::exec::inputs::resolve(given, specs))
    {
        Ok(v) => v,
        Err(errors) => {
            return Ok(Err(format!("workflow `{}`: {}", wf.name, errors.join("; "))));
        }
    };
    Ok(dedupe_key(hook, t, ev, &ctx).map(|key| (values, key)))
}

/// Renders the trigger's inputs and submits a run. The inner `Err` is a
/// refusal of this alert's inputs (422), naming the input.
async fn start(
    app: &AppState,
    hook: &str,
    t: &TriggerRef,
    ev: &Incoming,
    actor: &str,
) -> Result<Result<Created, String>, ApiError> {
    let wf = &t.workflow;
    let (values, key) = match prepare(hook, t, ev)? {
        Ok(prepared) => prepared,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let trigger = json!({
        "kind": "webhook",
        "hook": hook,
        "by": actor,
        "trigger": t.index,
        "dedupe_key": key,
        "fingerprint": ev.fingerprint,
        "payload": ev.payload,
    });
    // The audit entry is written in the run's own transaction (one commit per alert).
    let audit = NewAudit {
        actor: actor.to_string(),
        action: "trigger".to_string(),
        run_id: None,
        step_id: None,
        payload: json!({
            "hook": hook,
            "workflow": wf.name,
            "trigger": t.id(),
            "dedupe_key": key,
            "fingerprint": ev.fingerprint,
        }),
    };
    let created = app
        .engine
        .submit_with(
            wf,
            values,
            trigger,
            None,
            false,
            SubmitKeys { dedupe_key: key.clone(), audit: Some(audit), ..Default::default() },
        )
        .await?;
    let (outcome, run_id) = match &created {
        Created::Run(id) => ("started", id),
        Created::Duplicate { existing } => ("deduplicated", existing),
        Created::Skipped { active } => ("skipped", active),
    };
    tracing::info!(hook, workflow = %wf.name, run = %run_id, outcome, "Webhook trigger.");
    Ok(Ok(created))
}

/// A resolved alert: the active run its firing started is cancelled if it
/// has not passed its first approval gate (the engine decides that).
async fn cancel_resolved(
    app: &AppState,
    hook: &str,
    t: &TriggerRef,
    ev: &Incoming,
    actor: &str,
    out: &mut Outcome,
) -> Result<(), ApiError> {
    let Some(fp) = &ev.fingerprint else { return Ok(()) };
    let key = format!("{hook}:{fp}");
    let store = &app.ctx.store;
    for status in RunStatus::ACTIVE {
        let filter = RunFilter {
            status: Some(status),
            workflow: Some(t.workflow.name.clone()),
            limit: Some(1000),
            ..Default::default()
        };
        for run in store.runs(&filter).await? {
            if run.trigger.get("dedupe_key").and_then(Value::as_str) != Some(key.as_str()) {
                continue;
            }
            let cancelled = crate::exec::people::cancel_on_resolve(store.as_ref(), &run.id, actor)
                .await
                .map_err(|e| ApiError::internal(format!("{e:#}")))?;
            if cancelled {
                out.cancelled.push(run.id.clone());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(labels: Value) -> Incoming {
        Incoming {
            status: AlertStatus::Firing,
            fingerprint: Some("fp".into()),
            payload: json!({"labels": labels}),
        }
    }

    fn trigger(matchers: Value) -> crate::model::Trigger {
        serde_json::from_value(json!({"webhook": "am", "match": matchers})).unwrap()
    }

    #[test]
    fn labels_match_by_equality_or_anchored_regex() {
        let ev = alert(json!({"alertname": "SiteDown", "site": "dc01"}));
        assert!(matches(&trigger(json!({"alertname": "SiteDown"})), &ev));
        assert!(matches(&trigger(json!({"site": "~dc[0-9]+"})), &ev));
        assert!(!matches(&trigger(json!({"site": "~dc"})), &ev), "regexes are anchored");
        assert!(!matches(&trigger(json!({"alertname": "SiteUp"})), &ev));
        assert!(!matches(&trigger(json!({"team": "~.*"})), &ev), "a missing label never matches");
        assert!(!matches(&trigger(json!({"site": "~("})), &ev), "a bad regex matches nothing");
    }

    #[test]
    fn json_events_match_dotted_fields() {
        let ev = Incoming {
            status: AlertStatus::Firing,
            fingerprint: None,
            payload: json!({"type": "incident", "service": {"tier": 1}}),
        };
        assert!(matches(&trigger(json!({"type": "incident", "service.tier": "1"})), &ev));
        assert!(!matches(&trigger(json!({"service.name": "~.*"})), &ev));
    }
}
