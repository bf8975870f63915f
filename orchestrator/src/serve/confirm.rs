//! `/confirm/{token}`: where a one-click link in a notification lands.
//!
//! The GET only shows what the link asks (run, step, its state, the
//! decision) with a form; it never decides, because mail scanners and link
//! previewers follow links. The form's POST decides, as the person whose
//! lifeboat API token it carries, through the same `people::decide` as the
//! CLI and the API (approvers, requester, N-of-M, queue, audit).
//!
//! Every answer is a small HTML page that loads nothing, under a strict
//! Content-Security-Policy and `Referrer-Policy: no-referrer` (the token is
//! in the URL).

use std::fmt::Write;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::AppState;
use super::auth::Need;
use crate::exec::links::LinkTarget;
use crate::exec::people::{Awaiting, DecideError, Decision, GateView, decide};
use crate::store::{RunRecord, StepRecord, StepStatus};

/// The form holds an API token and a comment: nothing bigger is needed.
pub const MAX_FORM_BYTES: usize = 16 * 1024;

/// Pages load nothing, post only to this server, and cannot be framed.
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// An HTML answer: a status, a title and already-escaped body markup.
pub struct Page {
    status: StatusCode,
    title: String,
    body: String,
}

impl Page {
    /// A page with one heading and one paragraph of plain text.
    fn message(status: StatusCode, title: &str, text: &str) -> Page {
        Page {
            status,
            title: title.to_string(),
            body: format!("<h1>{}</h1>\n<p>{}</p>\n", escape(title), escape(text)),
        }
    }
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = self.status.as_u16(), title = %self.title, "Confirmation page failed.");
        }
        let html = format!(
            "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>{} · lifeboat</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n{}</main>\n</body>\n</html>\n",
            escape(&self.title),
            self.body
        );
        let mut response = (self.status, html).into_response();
        let h = response.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
        h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
        h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        response
    }
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;background:#f8fafc;color:#0f172a}\
main{max-width:40rem;margin:2rem auto;padding:1.5rem 2rem;background:#fff;border:1px solid #e2e8f0;border-radius:8px}\
h1{font-size:1.3rem;line-height:1.4}code{font-family:ui-monospace,Menlo,Consolas,monospace;background:#f1f5f9;padding:0 .25em;border-radius:3px}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:.3rem 1rem}dt{color:#475569}dd{margin:0}\
label{display:block;margin-top:1rem;font-weight:600}input,textarea{width:100%;box-sizing:border-box;font:inherit;padding:.4rem;margin-top:.25rem}\
button{margin-top:1.2rem;font:inherit;font-weight:600;padding:.5rem 1.2rem;border-radius:6px;border:1px solid #1e3a8a;background:#1d4ed8;color:#fff;cursor:pointer}\
button.reject{background:#b91c1c;border-color:#7f1d1d}.note{color:#475569;font-size:.9rem}";

/// Escapes text for HTML content and quoted attribute values; control
/// characters (a message may quote step output) are made visible.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in crate::text::visible(text).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The link's target, or the page that says why there is none.
fn verify(app: &AppState, token: &str) -> Result<LinkTarget, Page> {
    let Some(signer) = &app.ctx.notifier.links else {
        return Err(Page::message(
            StatusCode::NOT_FOUND,
            "One-click links are not enabled",
            &format!(
                "This server signs no confirmation links: the variable {} ([server] link_secret_env) is not set. Decide with `lifeboat approve`, the API or the web UI instead.",
                app.ctx.config.server.link_secret_env
            ),
        ));
    };
    signer.verify(token, now_secs()).map_err(|why| {
        if why == crate::exec::links::LinkError::Expired {
            Page::message(
                StatusCode::GONE,
                "This link has expired",
                "Confirmation links are valid for 24 hours. Decide with `lifeboat approve`, the API or the web UI instead.",
            )
        } else {
            Page::message(
                StatusCode::BAD_REQUEST,
                "This link is not valid",
                "The link is damaged or was not signed by this server. Copy the whole link from the message, or decide with `lifeboat approve`, the API or the web UI.",
            )
        }
    })
}

fn internal(what: &str, e: impl std::fmt::Display) -> Page {
    Page::message(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        &format!("{what}: {e}. Try again in a moment; the server log has the details."),
    )
}

/// The run and the step a link names, or the page that says they are gone.
async fn load(app: &AppState, target: &LinkTarget) -> Result<(RunRecord, StepRecord), Page> {
    let gone = || {
        Page::message(
            StatusCode::NOT_FOUND,
            "No such run or step",
            &format!(
                "Run {} has no step `{}` in this server's database.",
                target.run_id, target.step_id
            ),
        )
    };
    let store = &app.ctx.store;
    let run = store
        .run(&target.run_id)
        .await
        .map_err(|e| internal("cannot read the run", e))?
        .ok_or_else(gone)?;
    let steps = store.steps(&run.id).await.map_err(|e| internal("cannot read the steps", e))?;
    let step = steps.into_iter().find(|s| s.step_id == target.step_id).ok_or_else(gone)?;
    Ok((run, step))
}

fn verb(decision: Decision) -> &'static str {
    match decision {
        Decision::Approve => "Approve",
        Decision::Reject => "Reject",
        Decision::Ack => "Acknowledge",
    }
}

fn past(decision: Decision) -> &'static str {
    match decision {
        Decision::Approve => "approved",
        Decision::Reject => "rejected",
        Decision::Ack => "acknowledged",
    }
}

/// "Approve step `gate` of run 0190… (failover)?" as HTML.
fn question(target: &LinkTarget, run: &RunRecord) -> String {
    format!(
        "{} step <code>{}</code> of run <code>{}</code> ({})?",
        verb(target.decision),
        escape(&target.step_id),
        escape(&run.id),
        escape(&run.workflow)
    )
}

/// The run's and the step's facts as a definition list.
fn facts(run: &RunRecord, step: &StepRecord) -> String {
    let mut rows: Vec<(&str, String)> = vec![
        ("Run", format!("<code>{}</code>", escape(&run.id))),
        ("Workflow", escape(&run.workflow)),
        ("Run status", escape(run.status.as_str())),
        ("Step", format!("<code>{}</code>", escape(&step.step_id))),
        ("Step status", escape(step.status.as_str())),
    ];
    let state = step.state.clone().unwrap_or(Value::Null);
    // A state that cannot be read shows no gate facts; deciding says why.
    let gate = GateView::read(Some(&state)).unwrap_or_default();
    if let Some(awaiting) = gate.awaiting {
        rows.push(("Waiting for", awaiting.described().to_string()));
    }
    if let Some(message) = state.get("message").and_then(Value::as_str) {
        rows.push(("Message", escape(message)));
    }
    if !gate.people.is_empty() {
        rows.push(("Approvers", escape(&gate.people.join(", "))));
    }
    if gate.awaiting == Some(Awaiting::Approval) {
        let approvals: Vec<&str> = gate.approvals.iter().map(|a| a.by.as_str()).collect();
        let so_far =
            if approvals.is_empty() { "none yet".to_string() } else { approvals.join(", ") };
        let (have, min) = (approvals.len(), gate.min());
        rows.push(("Approvals", escape(&format!("{have} of {min} needed: {so_far}"))));
    }
    if let Some(requester) = &gate.requester {
        rows.push(("Started by", escape(&format!("{requester} (may not decide)"))));
    }
    if let Some(deadline) = state
        .get("deadline")
        .and_then(Value::as_i64)
        .and_then(chrono::DateTime::from_timestamp_millis)
    {
        rows.push((
            "Decide before",
            escape(&deadline.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        ));
    }
    let mut out = String::from("<dl>\n");
    for (k, v) in rows {
        let _ = writeln!(out, "<dt>{k}</dt><dd>{v}</dd>");
    }
    out.push_str("</dl>\n");
    out
}

/// `GET /confirm/{token}`: what the link asks, and a form to do it. Changes nothing.
pub async fn page(State(app): State<AppState>, Path(token): Path<String>) -> Page {
    let target = match verify(&app, &token) {
        Ok(t) => t,
        Err(page) => return page,
    };
    let (run, step) = match load(&app, &target).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let title = format!("{} step {} of run {}", verb(target.decision), target.step_id, run.id);
    let mut body = format!("<h1>{}</h1>\n{}", question(&target, &run), facts(&run, &step));
    if run.status.is_terminal() || step.status != StepStatus::Waiting {
        let _ = writeln!(
            body,
            "<p><strong>Nothing to decide any more:</strong> {}</p>",
            escape(&if run.status.is_terminal() {
                format!("the run has ended ({}).", run.status)
            } else {
                format!("the step is {}, not waiting for a decision.", step.status)
            })
        );
        return Page { status: StatusCode::CONFLICT, title, body };
    }
    let button = if target.decision == Decision::Reject { " class=\"reject\"" } else { "" };
    let _ = write!(
        body,
        "<form method=\"post\" action=\"/confirm/{token}\">\n\
         <label for=\"api_token\">Your lifeboat API token</label>\n\
         <input id=\"api_token\" name=\"api_token\" type=\"password\" autocomplete=\"current-password\" required>\n\
         <label for=\"comment\">Comment (optional)</label>\n\
         <textarea id=\"comment\" name=\"comment\" rows=\"3\" maxlength=\"2000\"></textarea>\n\
         <button type=\"submit\"{button}>{verb}</button>\n\
         </form>\n\
         <p class=\"note\">The token says who decides; it is sent to this server only and the decision is written to the audit log under your name.</p>\n",
        token = escape(&token),
        verb = verb(target.decision),
    );
    Page { status: StatusCode::OK, title, body }
}

/// The form's fields: `api_token` and `comment`.
#[derive(Debug, Default, PartialEq, Eq)]
struct Form {
    api_token: String,
    comment: Option<String>,
}

/// `application/x-www-form-urlencoded` into the two fields we read;
/// others are ignored.
fn parse_form(bytes: &[u8]) -> Form {
    let mut form = Form::default();
    for pair in bytes.split(|&b| b == b'&') {
        let mut kv = pair.splitn(2, |&b| b == b'=');
        let key = percent_decode(kv.next().unwrap_or_default());
        let value = percent_decode(kv.next().unwrap_or_default());
        match key.as_str() {
            "api_token" => form.api_token = value.trim().to_string(),
            "comment" => {
                let c = value.trim();
                form.comment = (!c.is_empty()).then(|| c.to_string());
            }
            _ => {}
        }
    }
    form
}

/// `+` is a space, `%XX` a byte; a malformed escape stays as it is.
fn percent_decode(input: &[u8]) -> String {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < input.len() => {
                let hex = std::str::from_utf8(&input[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The whole body, or the page refusing one over `MAX_FORM_BYTES`.
async fn read_form(headers: &HeaderMap, body: Body) -> Result<Form, Page> {
    use http_body_util::BodyExt;
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(Page::message(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Send the form",
            "This address takes the confirmation form (application/x-www-form-urlencoded); open the link in a browser and submit the form.",
        ));
    }
    let too_large = || {
        Page::message(
            StatusCode::PAYLOAD_TOO_LARGE,
            "The form is too large",
            &format!(
                "The form may hold at most {} KiB; shorten the comment.",
                MAX_FORM_BYTES / 1024
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_FORM_BYTES as u64) {
        return Err(too_large());
    }
    let bytes = http_body_util::Limited::new(body, MAX_FORM_BYTES)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                too_large()
            } else {
                Page::message(
                    StatusCode::BAD_REQUEST,
                    "The form did not arrive",
                    &format!("Cannot read the request body: {e}."),
                )
            }
        })?
        .to_bytes();
    Ok(parse_form(&bytes))
}

/// `POST /confirm/{token}`: checks the link again, authenticates the API
/// token in the form, and decides as that user.
pub async fn submit(
    State(app): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Page {
    let target = match verify(&app, &token) {
        Ok(t) => t,
        Err(page) => return page,
    };
    let form = match read_form(&headers, body).await {
        Ok(f) => f,
        Err(page) => return page,
    };
    // The form's token is checked exactly as a bearer header would be
    // (digest, constant-time comparison against every user, roles).
    let mut auth = HeaderMap::new();
    let bearer = HeaderValue::from_str(&format!("Bearer {}", form.api_token)).ok();
    let user = match bearer {
        Some(v) if !form.api_token.is_empty() => {
            auth.insert(header::AUTHORIZATION, v);
            app.ids.authorize(&auth, Need::Decide).map(|u| u.name.clone())
        }
        _ => Err(super::error::ApiError::unauthorized("no API token")),
    };
    let user = match user {
        Ok(name) => name,
        Err(e) if e.status == StatusCode::FORBIDDEN => {
            return Page::message(StatusCode::FORBIDDEN, "Not allowed", &e.message);
        }
        Err(_) => {
            return Page::message(
                StatusCode::UNAUTHORIZED,
                "That API token is not valid",
                "Nothing was decided. Go back and enter your own lifeboat API token (the one your CLI or API client uses).",
            );
        }
    };
    let decision = target.decision;
    let outcome = decide(
        app.ctx.store.as_ref(),
        &target.run_id,
        &target.step_id,
        &user,
        decision,
        form.comment,
    )
    .await;
    let (run_id, step) = (&target.run_id, &target.step_id);
    match outcome {
        Ok(_) => {
            let title = format!("{} by {user}", capitalize(past(decision)));
            let body = format!(
                "<h1>{}</h1>\n<p>Step <code>{}</code> of run <code>{}</code>: {} by {}. The run's worker applies it within a moment; the decision is in the audit log.</p>\n",
                escape(&title),
                escape(step),
                escape(run_id),
                past(decision),
                escape(&user)
            );
            Page { status: StatusCode::OK, title, body }
        }
        Err(DecideError::Forbidden(why)) => Page::message(
            StatusCode::FORBIDDEN,
            "Not allowed",
            &format!("Nothing was decided: {why}."),
        ),
        Err(DecideError::NotWaiting(why)) => Page::message(
            StatusCode::CONFLICT,
            "Nothing to decide any more",
            &format!("Nothing was decided: {why}."),
        ),
        Err(DecideError::NotFound(why)) => {
            Page::message(StatusCode::NOT_FOUND, "No such run or step", &why)
        }
        Err(DecideError::Store(e)) => internal("cannot record the decision", e),
    }
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_plus_percent_and_ignore_other_fields() {
        let form = parse_form(b"api_token=a%2Bb%3D&comment=ship+it%21+%C3%A9&x=1");
        assert_eq!(form, Form { api_token: "a+b=".into(), comment: Some("ship it! é".into()) });
        assert_eq!(parse_form(b"comment=+&api_token=").comment, None);
        assert_eq!(percent_decode(b"100%"), "100%");
        assert_eq!(percent_decode(b"%zz%4"), "%zz%4");
    }

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(escape(r#"<a href="x">&'"#), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        assert_eq!(escape("\x1b]0;<t>\x07"), "\\x1b]0;&lt;t&gt;\\x07");
    }
}
