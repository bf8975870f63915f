//! The web UI: one self-contained page (`ui/index.html` with `ui/app.css`
//! and the script modules of `ui/js/` inlined, embedded in the binary, no
//! external assets) served at `/`, `/runs/{id}` (the run links in
//! notifications), `/waiting`, `/workflows` and `/workflows/{name}`. The
//! page holds no data: it asks for the user's API token and reads and acts
//! through the JSON API like any client, inserting every value as text with
//! its control characters made visible (`visible()` in `ui/js/core.js`, the
//! rule of `crate::text`; tests/ui.rs checks the two agree in a real
//! browser). Also the pictures the page shows: a run's graph coloured by
//! step status, a workflow's graph, and a run's timeline against its RTO.

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::AppState;
use super::auth::Need;
use super::error::ApiError;

const INDEX: &str = include_str!("ui/index.html");
const STYLE: &str = include_str!("ui/app.css");
/// The script's modules, in order; they share one scope (`script()`).
const MODULES: [&str; 9] = [
    include_str!("ui/js/core.js"),
    include_str!("ui/js/live.js"),
    include_str!("ui/js/forms.js"),
    include_str!("ui/js/people.js"),
    include_str!("ui/js/list.js"),
    include_str!("ui/js/run.js"),
    include_str!("ui/js/drawer.js"),
    include_str!("ui/js/catalog.js"),
    include_str!("ui/js/main.js"),
];

/// The page's one script: the modules in one strict function scope, so
/// they see each other and nothing leaks onto `window`.
fn script() -> String {
    format!("\"use strict\";\n(function () {{\n{}}})();\n", MODULES.concat())
}

/// The page with its style and script inlined, and the policy that allows
/// exactly that script (by hash) and talks only to this server.
struct Assembled {
    html: String,
    csp: String,
}

fn assembled() -> &'static Assembled {
    static PAGE: OnceLock<Assembled> = OnceLock::new();
    PAGE.get_or_init(|| {
        let script = script();
        let html = INDEX.replacen("/*STYLE*/", STYLE, 1).replacen("/*SCRIPT*/", &script, 1);
        let hash = base64(&Sha256::digest(script.as_bytes()));
        let csp = format!(
            "default-src 'none'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src 'self' blob:; form-action 'none'; \
             frame-ancestors 'none'; base-uri 'none'"
        );
        Assembled { html, csp }
    })
}

/// `GET /` and `GET /runs/{id}`: the app. No token needed: it holds no data.
pub async fn index() -> Response {
    let page = assembled();
    let mut response = page.html.clone().into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    if let Ok(csp) = HeaderValue::from_str(&page.csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `GET /api/v1/runs/{id}/graph.svg`: the workflow the run is pinned to,
/// each step coloured (and labelled) by its status in the run.
pub async fn graph_svg(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.ids.authorize(&headers, Need::Read)?;
    let run = super::api::find_run(&app, &id).await?;
    let wf = app.engine.definition(&run.definition_hash).await?;
    let status: HashMap<String, String> = app
        .ctx
        .store
        .steps(&run.id)
        .await?
        .into_iter()
        .map(|s| (s.step_id, s.status.as_str().to_string()))
        .collect();
    Ok(svg_response(crate::viz::svg_with_status(&wf, &status)))
}

/// `GET /api/v1/workflows/{name}/graph.svg`: the catalog's picture of a
/// workflow, every step with its marks.
pub async fn workflow_svg(
    State(app): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.ids.authorize(&headers, Need::Read)?;
    let wf = super::api::find_workflow(&app, &name)?;
    Ok(svg_response(crate::viz::svg(&wf)))
}

/// `GET /api/v1/runs/{id}/timeline.svg`: every attempt against the run's
/// clock and its RTO (`lifeboat report --html` draws the same), up to now
/// for a run still going.
pub async fn timeline_svg(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.ids.authorize(&headers, Need::Read)?;
    let doc = super::api::document(&app, &id).await?;
    let rto = doc.rto_ms();
    let value = serde_json::to_value(&doc).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(svg_response(crate::viz::timeline::of_document(&value, rto, crate::store::now_ms())))
}

/// An SVG answer that can run nothing and load nothing, never cached.
fn svg_response(svg: String) -> Response {
    let mut response = svg.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/svg+xml; charset=utf-8"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Standard base64 with padding (for the CSP script hash).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> shift & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), want);
        }
    }

    #[test]
    fn the_page_inlines_its_script_and_style_and_the_policy_allows_only_that_script() {
        let page = assembled();
        assert!(!page.html.contains("/*SCRIPT*/") && !page.html.contains("/*STYLE*/"));
        assert!(page.html.contains(&script()) && page.html.contains(STYLE));
        assert_eq!(page.html.matches("<script").count(), 1, "one inline script, nothing loaded");
        assert!(!page.html.contains("src=\"http") && !page.html.contains("href=\"http"));
        let hash = base64(&Sha256::digest(script().as_bytes()));
        assert!(page.csp.contains(&format!("script-src 'sha256-{hash}'")));
    }
}
