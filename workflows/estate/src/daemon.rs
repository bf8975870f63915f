//! `estate serve`: the estate itself. Owns `state.json` and the site
//! databases, runs the application (writes on the primary) and replication
//! (replicas replay with their lag), and exposes the HTTP control plane.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::SqlitePool;
use tokio::sync::{Mutex, Notify};

use crate::db;
use crate::state::{ErrorFault, Estate, Refusal, SITES, weights_line};

/// How often the application writes and replicas replay.
const TICK: Duration = Duration::from_millis(200);

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

struct Inner {
    estate: Estate,
    pools: BTreeMap<String, SqlitePool>,
}

#[derive(Clone)]
struct App {
    inner: Arc<Mutex<Inner>>,
    dir: PathBuf,
    shutdown: Arc<Notify>,
}

type Reply = Result<Json<Value>, Response>;

fn refused(r: Refusal) -> Response {
    let status = match r {
        Refusal::Invalid(_) => StatusCode::BAD_REQUEST,
        Refusal::Conflict(_) => StatusCode::CONFLICT,
    };
    (status, Json(json!({"error": r.message()}))).into_response()
}

fn failed(message: String) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": message}))).into_response()
}

fn state_file(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

pub fn pid_file(dir: &Path) -> PathBuf {
    dir.join("daemon.pid")
}

fn save(dir: &Path, estate: &Estate) -> Result<(), String> {
    let tmp = dir.join("state.json.tmp");
    let text = serde_json::to_string_pretty(estate).map_err(|e| e.to_string())?;
    std::fs::write(&tmp, text).map_err(|e| format!("write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, state_file(dir)).map_err(|e| format!("save state: {e}"))
}

/// Runs the estate until `POST /shutdown`, SIGTERM/SIGINT, or its pidfile
/// is removed or taken over (its state directory was deleted or reset).
pub async fn serve(dir: PathBuf, port: u16) -> Result<(), String> {
    std::fs::create_dir_all(dir.join("sites"))
        .map_err(|e| format!("create {}: {e}", dir.display()))?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| format!("listen on 127.0.0.1:{port}: {e}"))?;
    let pid = std::process::id();
    std::fs::write(pid_file(&dir), format!("{pid}\n")).map_err(|e| format!("pidfile: {e}"))?;

    let fresh = !state_file(&dir).exists();
    let estate = if fresh {
        Estate::fresh()
    } else {
        let text = std::fs::read_to_string(state_file(&dir)).map_err(|e| e.to_string())?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", state_file(&dir).display()))?
    };
    let mut pools = BTreeMap::new();
    for site in estate.sites.keys() {
        pools.insert(site.clone(), db::open_site(&dir.join(format!("sites/{site}.db"))).await?);
    }
    if fresh {
        for pool in pools.values() {
            db::seed(pool, now_ms()).await?;
        }
        save(&dir, &estate)?;
    }
    let app = App {
        inner: Arc::new(Mutex::new(Inner { estate, pools })),
        dir: dir.clone(),
        shutdown: Arc::new(Notify::new()),
    };
    eprintln!("estate: serving {} on 127.0.0.1:{port} (pid {pid})", dir.display());

    tokio::spawn(run_world(app.clone()));
    tokio::spawn(watch_pidfile(app.clone(), pid));
    let stop = app.shutdown.clone();
    let router = routes(app.clone());
    let signals = async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = stop.notified() => {}
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    axum::serve(listener, router)
        .with_graceful_shutdown(signals)
        .await
        .map_err(|e| e.to_string())?;
    if std::fs::read_to_string(pid_file(&dir)).is_ok_and(|p| p.trim() == pid.to_string()) {
        let _ = std::fs::remove_file(pid_file(&dir));
    }
    eprintln!("estate: stopped");
    Ok(())
}

/// A daemon whose pidfile is gone (state directory deleted) has nobody to
/// stop it: it stops itself rather than leak.
async fn watch_pidfile(app: App, pid: u32) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let ours =
            std::fs::read_to_string(pid_file(&app.dir)).is_ok_and(|p| p.trim() == pid.to_string());
        if !ours {
            eprintln!("estate: pidfile removed or taken over; stopping");
            app.shutdown.notify_one();
            return;
        }
    }
}

/// The application and replication, every tick.
async fn run_world(app: App) {
    loop {
        tokio::time::sleep(TICK).await;
        let inner = app.inner.lock().await;
        if let Err(e) = tick(&inner).await {
            eprintln!("estate: tick: {e}");
        }
    }
}

async fn tick(inner: &Inner) -> Result<(), String> {
    let e = &inner.estate;
    let now = now_ms();
    if let Some(writer) = e.writer() {
        db::write(&inner.pools[writer], writer, e.timeline, now).await?;
    }
    let source = &inner.pools[&e.source];
    for (name, site) in &e.sites {
        if e.replays(name) {
            db::replicate(source, &inner.pools[name], site.delay_ms, now).await?;
        }
    }
    Ok(())
}

/// Lag of `site` behind the timeline head, in seconds (0.1 s resolution).
async fn lag(inner: &Inner, site: &str) -> Result<Value, String> {
    let e = &inner.estate;
    let (_, head_ts, head_id) = db::stats(&inner.pools[&e.source]).await?;
    let (rows, ts, id) = db::stats(&inner.pools[site]).await?;
    let ms = if site == e.source { 0 } else { (head_ts - ts).max(0) };
    Ok(json!({
        "site": site, "source": e.source, "lag_seconds": (ms as f64 / 100.0).round() / 10.0,
        "behind_rows": (head_id - id).max(0), "rows": rows, "replaying": e.replays(site),
        "delay_ms": e.sites[site].delay_ms,
    }))
}

async fn status_doc(inner: &Inner) -> Result<Value, String> {
    let e = &inner.estate;
    let mut sites = serde_json::Map::new();
    for (name, s) in &e.sites {
        let lag = lag(inner, name).await?;
        sites.insert(
            name.clone(),
            json!({
                "role": s.role, "healthy": s.up, "fenced": s.fenced,
                "rows": lag["rows"], "lag_seconds": lag["lag_seconds"], "replaying": lag["replaying"],
                "error_rate": e.error_rate(name).unwrap_or(1.0), "delay_ms": s.delay_ms,
                "errors_injected": s.errors,
            }),
        );
    }
    Ok(json!({
        "sites": sites, "weights": e.weights, "primary": e.writer(), "timeline_head": e.source,
        "timeline": e.timeline, "fail_next": e.fail_next,
    }))
}

fn routes(app: App) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/status", get(status).post(status_page))
        .route("/sites/{site}/health", get(health))
        .route("/sites/{site}/role", get(role))
        .route("/sites/{site}/lag", get(get_lag).post(set_lag))
        .route("/sites/{site}/rows", get(rows))
        .route("/sites/{site}/errors", post(set_errors))
        .route("/sites/{site}/{action}", post(site_action))
        .route("/traffic", get(traffic).post(set_traffic))
        .route("/metrics/error_rate", get(error_rate))
        .route("/faults/fail-next", post(fail_next))
        .route("/snapshot", post(snapshot))
        .route("/reset", post(reset))
        .route("/shutdown", post(shutdown))
        .with_state(app)
}

async fn healthz(State(app): State<App>) -> Json<Value> {
    Json(json!({"ok": true, "pid": std::process::id(), "dir": app.dir}))
}

async fn status(State(app): State<App>) -> Reply {
    let inner = app.inner.lock().await;
    status_doc(&inner).await.map(Json).map_err(failed)
}

/// The status page: lifeboat's `status-webhook` channel posts here; each
/// message is appended to `status-page.jsonl`.
async fn status_page(State(app): State<App>, body: String) -> StatusCode {
    use std::io::Write;
    let line = json!({"at_ms": now_ms(), "message": serde_json::from_str::<Value>(&body).unwrap_or(Value::String(body))});
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(app.dir.join("status-page.jsonl"));
    match file.and_then(|mut f| writeln!(f, "{line}")) {
        Ok(()) => StatusCode::ACCEPTED,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn health(State(app): State<App>, UrlPath(site): UrlPath<String>) -> Response {
    let inner = app.inner.lock().await;
    match inner.estate.health(&site) {
        Ok(doc) if doc["healthy"] == true => Json(doc).into_response(),
        Ok(doc) => (StatusCode::SERVICE_UNAVAILABLE, Json(doc)).into_response(),
        Err(r) => refused(r),
    }
}

async fn role(State(app): State<App>, UrlPath(site): UrlPath<String>) -> Reply {
    let inner = app.inner.lock().await;
    inner.estate.role(&site).map(Json).map_err(refused)
}

async fn get_lag(State(app): State<App>, UrlPath(site): UrlPath<String>) -> Reply {
    let inner = app.inner.lock().await;
    inner.estate.site(&site).map_err(refused)?;
    lag(&inner, &site).await.map(Json).map_err(failed)
}

#[derive(Deserialize)]
struct LagBody {
    delay_ms: u64,
}

/// Fault injection: `site` replays only rows at least `delay_ms` old, and
/// is rewound to be that far behind now.
async fn set_lag(
    State(app): State<App>,
    UrlPath(site): UrlPath<String>,
    Json(body): Json<LagBody>,
) -> Reply {
    let mut inner = app.inner.lock().await;
    inner.estate.set_delay(&site, body.delay_ms).map_err(refused)?;
    if site != inner.estate.source {
        db::rewind(&inner.pools[&site], body.delay_ms, now_ms()).await.map_err(failed)?;
    }
    save(&app.dir, &inner.estate).map_err(failed)?;
    lag(&inner, &site).await.map(Json).map_err(failed)
}

async fn rows(State(app): State<App>, UrlPath(site): UrlPath<String>) -> Reply {
    let inner = app.inner.lock().await;
    inner.estate.site(&site).map_err(refused)?;
    let (rows, _, _) = db::stats(&inner.pools[&site]).await.map_err(failed)?;
    Ok(Json(json!({"site": site, "rows": rows})))
}

#[derive(Deserialize)]
struct ErrorsBody {
    rate: f64,
    #[serde(default)]
    at_weight: u32,
}

async fn set_errors(
    State(app): State<App>,
    UrlPath(site): UrlPath<String>,
    Json(body): Json<ErrorsBody>,
) -> Reply {
    let mut inner = app.inner.lock().await;
    let fault =
        (body.rate > 0.0).then_some(ErrorFault { rate: body.rate, at_weight: body.at_weight });
    inner.estate.set_errors(&site, fault).map_err(refused)?;
    save(&app.dir, &inner.estate).map_err(failed)?;
    Ok(Json(json!({"site": site, "errors_injected": fault})))
}

/// fence, unfence, promote, demote, break, heal.
async fn site_action(
    State(app): State<App>,
    UrlPath((site, action)): UrlPath<(String, String)>,
) -> Reply {
    let mut inner = app.inner.lock().await;
    let inner = &mut *inner;
    let mut doc = json!({"site": site});
    match action.as_str() {
        "fence" => inner.estate.fence(&site),
        "unfence" => inner.estate.unfence(&site),
        "break" => inner.estate.set_up(&site, false),
        "heal" => inner.estate.set_up(&site, true),
        "promote" => {
            let before = inner.estate.source.clone();
            inner.estate.promote(&site).map_err(refused)?;
            if before != site {
                // Rows the old primary took that never reached the new one
                // are lost (the RPO); replicas following the new timeline
                // drop them too.
                let (_, _, old) = db::stats(&inner.pools[&before]).await.map_err(failed)?;
                let (_, _, new) = db::stats(&inner.pools[&site]).await.map_err(failed)?;
                doc["unreplicated_rows"] = json!((old - new).max(0));
                for name in SITES {
                    if name != site && inner.estate.replays(name) {
                        db::rebase(&inner.pools[&site], &inner.pools[name])
                            .await
                            .map_err(failed)?;
                    }
                }
            }
            Ok(())
        }
        "demote" => match inner.estate.demote(&site) {
            Ok(true) => {
                let source = &inner.pools[&inner.estate.source];
                let discarded = db::rebase(source, &inner.pools[&site]).await.map_err(failed)?;
                doc["discarded_rows"] = json!(discarded);
                Ok(())
            }
            other => other.map(|_| ()),
        },
        other => {
            return Err(refused(Refusal::Invalid(format!(
                "unknown action `{other}` (fence, unfence, promote, demote, break, heal)"
            ))));
        }
    }
    .map_err(refused)?;
    save(&app.dir, &inner.estate).map_err(failed)?;
    let role = inner.estate.role(&site).map_err(refused)?;
    for (k, v) in role.as_object().expect("an object") {
        doc[k] = v.clone();
    }
    Ok(Json(doc))
}

fn weights_doc(e: &Estate) -> Value {
    json!({"weights": e.weights, "line": weights_line(&e.weights)})
}

async fn traffic(State(app): State<App>) -> Json<Value> {
    let inner = app.inner.lock().await;
    Json(weights_doc(&inner.estate))
}

#[derive(Deserialize)]
struct TrafficBody {
    weights: BTreeMap<String, u32>,
}

async fn set_traffic(State(app): State<App>, Json(body): Json<TrafficBody>) -> Reply {
    let mut inner = app.inner.lock().await;
    inner.estate.set_weights(&body.weights).map_err(refused)?;
    save(&app.dir, &inner.estate).map_err(failed)?;
    Ok(Json(weights_doc(&inner.estate)))
}

#[derive(Deserialize)]
struct SiteQuery {
    site: Option<String>,
}

async fn error_rate(State(app): State<App>, Query(q): Query<SiteQuery>) -> Reply {
    let inner = app.inner.lock().await;
    let e = &inner.estate;
    match q.site {
        Some(site) => {
            let rate = e.error_rate(&site).map_err(refused)?;
            Ok(Json(json!({"site": site, "error_rate": rate, "weight": e.weights.get(&site)})))
        }
        None => {
            let rates: BTreeMap<&String, f64> =
                e.sites.keys().map(|s| (s, e.error_rate(s).unwrap_or(1.0))).collect();
            Ok(Json(json!({"error_rates": rates})))
        }
    }
}

#[derive(Deserialize)]
struct FailNextBody {
    verb: String,
    site: String,
}

async fn fail_next(State(app): State<App>, Json(body): Json<FailNextBody>) -> Reply {
    let mut inner = app.inner.lock().await;
    inner.estate.fail_next(&body.verb, &body.site).map_err(refused)?;
    save(&app.dir, &inner.estate).map_err(failed)?;
    Ok(Json(json!({"fail_next": inner.estate.fail_next})))
}

#[derive(Deserialize)]
struct SnapshotBody {
    dest: PathBuf,
    site: Option<String>,
}

/// A consistent snapshot of the primary's database (or of `site`'s).
async fn snapshot(State(app): State<App>, Json(body): Json<SnapshotBody>) -> Reply {
    let inner = app.inner.lock().await;
    let e = &inner.estate;
    let site = body.site.unwrap_or_else(|| e.source.clone());
    if !e.site(&site).map_err(refused)?.up {
        return Err(refused(Refusal::Conflict(format!(
            "cannot snapshot {site}: it is down (snapshot a replica with --site)"
        ))));
    }
    if !body.dest.is_absolute() {
        return Err(refused(Refusal::Invalid("dest must be an absolute path".into())));
    }
    let rows = db::snapshot(&inner.pools[&site], &body.dest).await.map_err(failed)?;
    let bytes = std::fs::metadata(&body.dest).map(|m| m.len()).unwrap_or(0);
    Ok(Json(json!({"path": body.dest, "bytes": bytes, "rows": rows, "site": site})))
}

/// A fresh, healthy estate: roles, fences, weights, faults and data.
async fn reset(State(app): State<App>) -> Reply {
    let mut inner = app.inner.lock().await;
    inner.estate = Estate::fresh();
    let now = now_ms();
    for pool in inner.pools.values() {
        db::seed(pool, now).await.map_err(failed)?;
    }
    save(&app.dir, &inner.estate).map_err(failed)?;
    status_doc(&inner).await.map(Json).map_err(failed)
}

async fn shutdown(State(app): State<App>) -> Json<Value> {
    app.shutdown.notify_one();
    Json(json!({"stopping": true, "pid": std::process::id()}))
}
