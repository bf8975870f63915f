//! The HTTP side of `lifeboat serve`: webhooks (`hooks`, with what they
//! refuse before starting anything in `hook_guard`), the REST API (`api`,
//! `sse`), health and metrics (`health`), with authentication (`auth`) and
//! one JSON error shape (`error`); the web UI (`ui`) and the pages one-click
//! links in notifications open (`confirm`); the accept loop with its
//! connection limits and timeouts (`listener`).
//!
//! Everything a request changes goes through the store (runs, requests,
//! audit entries); the server holds only the catalog of workflows and the
//! secrets it read at start, so any number of replicas can answer.

pub mod api;
pub mod auth;
pub mod confirm;
pub mod controls;
pub mod drills;
pub mod error;
mod event_order;
pub mod health;
pub mod hook_guard;
mod hook_payload;
pub mod hooks;
pub mod listener;
pub mod me;
pub mod readiness;
pub mod sse;
pub mod systemd;
pub mod ui;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::app::Ctx;
use crate::catalog::Catalog;
use crate::exec::engine::Engine;

/// How long one request (other than an event stream) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What every handler shares.
pub struct App {
    pub ctx: Ctx,
    pub engine: Arc<Engine>,
    pub catalog: Arc<Catalog>,
    pub ids: auth::Identities,
    /// Cancelled on SIGTERM/Ctrl-C: event streams end, `/readyz` says 503.
    pub shutdown: CancellationToken,
    /// Open event streams per user (`[server] max_streams_per_user`).
    pub streams: sse::Streams,
    /// Hook rate limits and the throttled audit of refusals.
    pub hook_guard: hook_guard::HookGuard,
}

impl App {
    pub fn new(
        ctx: Ctx,
        engine: Arc<Engine>,
        catalog: Arc<Catalog>,
        ids: auth::Identities,
        shutdown: CancellationToken,
    ) -> App {
        let streams = sse::Streams::new(ctx.config.server.max_streams_per_user);
        App { ctx, engine, catalog, ids, shutdown, streams, hook_guard: Default::default() }
    }
}

pub type AppState = Arc<App>;

/// Every route of the HTTP API (docs/api.md).
pub fn router(app: AppState) -> Router {
    let bounded = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/hooks/{name}", post(hooks::receive))
        .route("/api/v1/workflows", get(api::list_workflows))
        .route("/api/v1/workflows/{name}", get(api::get_workflow))
        .route("/api/v1/workflows/{name}/graph.svg", get(ui::workflow_svg))
        .route("/api/v1/me", get(me::me))
        .route("/api/v1/pending", get(me::pending))
        .route("/api/v1/workflows/{name}/runs", post(api::start_run))
        .route("/api/v1/workflows/{name}/drills", post(drills::start_drill))
        .route("/api/v1/drills", get(drills::list_drills))
        .route("/api/v1/drills/freshness", get(drills::freshness))
        .route("/api/v1/runs", get(api::list_runs))
        .route("/api/v1/runs/count", get(api::count_runs))
        .route("/api/v1/runs/{id}", get(api::get_run))
        .route("/api/v1/runs/{id}/cancel", post(controls::cancel))
        .route("/api/v1/runs/{id}/pause", post(controls::pause))
        .route("/api/v1/runs/{id}/resume", post(controls::resume))
        .route("/api/v1/runs/{id}/steps/{step}", get(api::get_step))
        .route("/api/v1/runs/{id}/steps/{step}/skip", post(controls::skip))
        .route("/api/v1/runs/{id}/steps/{step}/mark", post(controls::mark))
        .route("/api/v1/runs/{id}/timeline.svg", get(ui::timeline_svg))
        .route("/api/v1/runs/{id}/retry", post(api::retry_run))
        .route("/api/v1/runs/{id}/steps/{step}/approve", post(api::approve))
        .route("/api/v1/runs/{id}/steps/{step}/reject", post(api::reject))
        .route("/api/v1/runs/{id}/steps/{step}/ack", post(api::ack))
        .route("/api/v1/runs/{id}/graph.svg", get(ui::graph_svg))
        .route("/", get(ui::index))
        .route("/runs/{id}", get(ui::index))
        .route("/waiting", get(ui::index))
        .route("/workflows", get(ui::index))
        .route("/workflows/{name}", get(ui::index))
        .route("/confirm/{token}", get(confirm::page).post(confirm::submit))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ));
    let streams = Router::new()
        .route("/api/v1/runs/{id}/events", get(sse::events))
        .route("/api/v1/events", get(sse::all_events));
    Router::new()
        .merge(bounded)
        .merge(streams)
        .route_layer(axum::middleware::from_fn(observe))
        .fallback(api::not_found)
        .with_state(app)
}

/// One span per request (`http.method`, `http.route`, `http.status`) and
/// the request metrics, labelled by route pattern, never by raw path.
async fn observe(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let span = tracing::info_span!(
        "http.request",
        http.method = %method,
        http.route = %route,
        http.status = tracing::field::Empty,
    );
    let started = Instant::now();
    let response = next.run(req).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let secs = started.elapsed().as_secs_f64();
    span.record("http.status", status);
    span.in_scope(|| tracing::debug!(status, ms = secs * 1000.0, "Request answered."));
    crate::metrics::http_request(&method, &route, status, secs);
    response
}

/// Tasks that run beside the workers and the HTTP server until `shutdown`:
/// the catalog's reloads, the scheduler, the overdue-drill watcher
/// (`triggers/overdue.rs`), the notification dispatcher, and
/// the retention pruner (`crate::retention::run`).
pub fn spawn_background(app: &AppState) -> Vec<JoinHandle<()>> {
    vec![
        tokio::spawn(
            app.catalog.clone().watch(crate::catalog::DEFAULT_CHECK_EVERY, app.shutdown.clone()),
        ),
        tokio::spawn(crate::triggers::schedule::run(
            app.engine.clone(),
            app.catalog.clone(),
            app.shutdown.clone(),
        )),
        tokio::spawn(crate::triggers::overdue::run(
            app.engine.clone(),
            app.catalog.clone(),
            app.ctx.config.drill.check_every.0,
            app.shutdown.clone(),
        )),
        tokio::spawn(app.ctx.dispatcher(&app.engine).run(app.shutdown.clone())),
        tokio::spawn(crate::retention::run(
            app.ctx.store.clone(),
            app.ctx.config.retention.clone(),
            format!("serve {}", app.engine.opts.worker_id),
            app.shutdown.clone(),
        )),
        tokio::spawn(readiness::run(app.ctx.clone(), app.shutdown.clone())),
    ]
}

/// `[server] listen` as an address, or an error saying what is expected.
pub fn listen_addr(listen: &str) -> Result<std::net::SocketAddr, crate::config::ConfigError> {
    listen.parse().map_err(|e| {
        crate::config::ConfigError::Invalid(format!(
            "[server] listen = `{listen}` is not an address like 127.0.0.1:8080: {e}"
        ))
    })
}

/// Refuses to expose the server beyond this machine with nobody configured
/// to use it: on a non-loopback address, `[[users]]` must say who may call
/// the API. Warns when `/metrics` would be open to the network.
pub fn exposure_check(
    addr: std::net::SocketAddr,
    config: &crate::config::Config,
    ids: &auth::Identities,
) -> Result<(), String> {
    if addr.ip().is_loopback() {
        return Ok(());
    }
    if ids.users.is_empty() {
        return Err(format!(
            "[server] listen = \"{addr}\" is reachable from other machines, but no [[users]] are configured: \
             nobody could be told apart from anyone else. Add a user whose token is in an environment variable, e.g.\n\n  \
             [[users]]\n  name = \"alice\"\n  token_env = \"LIFEBOAT_TOKEN_ALICE\"\n  roles = [\"admin\"]\n\n\
             or listen on loopback only: [server] listen = \"127.0.0.1:{}\"",
            addr.port()
        ));
    }
    if config.server.metrics_token_env.is_none() {
        eprintln!(
            "lifeboat serve: warning: /metrics on {addr} answers anyone who can reach it; set [server] metrics_token_env to require a bearer token"
        );
    }
    Ok(())
}

/// One attempt to bind `addr`: `None` if the address is taken (then
/// [`bind`] keeps trying in the background), an error for anything else.
pub async fn bind_now(
    addr: std::net::SocketAddr,
) -> std::io::Result<Option<tokio::net::TcpListener>> {
    match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => Ok(Some(l)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            eprintln!(
                "lifeboat serve: error: cannot listen on {addr}: {e}; runs are still executed but the API and webhooks are not served until it is free (retrying every 5s)"
            );
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Binds `addr`; while the address is taken (another process, an old
/// replica shutting down), keeps retrying every few seconds instead of
/// exiting, since the workers beside it must go on executing runs either
/// way. `None`: shut down before it could bind. Other errors (no such
/// address, no permission) are returned at once.
pub async fn bind(
    addr: std::net::SocketAddr,
    shutdown: &CancellationToken,
) -> std::io::Result<Option<tokio::net::TcpListener>> {
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => return Ok(Some(l)),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = shutdown.cancelled() => return Ok(None),
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Serves `router` on `listener` until `shutdown`, then lets requests in
/// flight finish (event streams end at once), under `[server]`'s
/// connection limits and timeouts.
pub async fn serve_http(app: AppState, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    let shutdown = app.shutdown.clone();
    let limits = listener::Limits::from_config(&app.ctx.config.server);
    listener::serve(listener, router(app), limits, shutdown).await
}
