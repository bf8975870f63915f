//! `GET /api/v1/runs/{id}/events`: every transition of a run as
//! Server-Sent Events. The store is the source, so the stream shows what
//! any replica committed; it is read again at once when this process
//! commits an event of the run (the worker's live progress) or queues a
//! request for it (the doorbell), and every 200 ms for other processes'
//! commits. `Last-Event-ID` resumes after the last event a client saw. The stream ends once the run has
//! finished and its last events are sent, or when the server shuts down.
//!
//! `GET /api/v1/events`: the same for every run at once (event ids are
//! global), from now on or from `Last-Event-ID`; it never ends by itself.
//! The web UI's run list, "waiting for me" count and catalog follow it
//! instead of polling. Its events go in id order with none skipped though
//! writers commit out of id order (`event_order`).
//! A user holds at most `[server] max_streams_per_user` streams at once
//! (429 past it); a stream's slot is freed when it ends or its client leaves.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};

use super::AppState;
use super::auth::Need;
use super::error::ApiError;
use crate::store::EventRecord;

const POLL: Duration = Duration::from_millis(200);

/// Under a flood of events, a stream reads the store at most this often.
const MIN_GAP: Duration = Duration::from_millis(10);

/// Open event streams per user.
#[derive(Debug)]
pub struct Streams {
    max: usize,
    open: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
}

/// One open stream of one user; its slot is freed when dropped.
#[derive(Debug)]
pub struct Slot {
    user: String,
    open: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
}

impl Streams {
    pub fn new(max: usize) -> Streams {
        Streams { max, open: Default::default() }
    }

    /// A slot for `user`, or the 429 that says why not.
    pub fn open(&self, user: &str) -> Result<Slot, ApiError> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(user.to_string()).or_default();
        if *n >= self.max {
            return Err(ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "too_many_streams",
                format!(
                    "user `{user}` already has {} event stream{} open ([server] max_streams_per_user = {}); close one first",
                    *n,
                    if *n == 1 { "" } else { "s" },
                    self.max
                ),
            )
            .retry_after(1));
        }
        *n += 1;
        Ok(Slot { user: user.to_string(), open: self.open.clone() })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.user);
            }
        }
    }
}

/// Events of every run are read in batches of at most this many.
const BATCH: u32 = 500;

struct Cursor {
    _slot: Slot,
    app: AppState,
    /// `None`: every run's events (`/api/v1/events`).
    run_id: Option<String>,
    after: i64,
    pending: std::collections::VecDeque<EventRecord>,
    finished: bool,
    /// What wakes the stream before the poll (see the module's doc).
    progress: tokio::sync::broadcast::Receiver<EventRecord>,
    requests: tokio::sync::broadcast::Receiver<String>,
    due: tokio::sync::watch::Receiver<u64>,
    last_read: Option<tokio::time::Instant>,
    /// Every run's events wait here for a lower id still being committed.
    order: super::event_order::InOrder,
}

impl Cursor {
    /// A cursor after event `after`, of run `run_id` or (`None`) of every run.
    fn new(slot: Slot, app: AppState, run_id: Option<String>, after: i64) -> Cursor {
        let progress = app.engine.progress.subscribe();
        let doorbell = app.ctx.store.doorbell();
        let (requests, due) = (doorbell.requests(), doorbell.due());
        Cursor {
            _slot: slot,
            app,
            run_id,
            after,
            pending: Default::default(),
            finished: false,
            progress,
            requests,
            due,
            last_read: None,
            order: Default::default(),
        }
    }

    /// Waits until the store may hold something new for this stream: an
    /// event committed here or a request queued (of its run, for a run's
    /// stream), a run made due (for every run's), or the poll. `false`:
    /// the server is shutting down.
    async fn changed(&mut self) -> bool {
        // The senders live in the app this cursor holds: no channel closes
        // under it, and a lagged one (rings dropped) is a reason to read.
        let poll = tokio::time::sleep(POLL);
        tokio::pin!(poll);
        loop {
            let about_us = |run: &str| self.run_id.as_deref().is_none_or(|id| id == run);
            tokio::select! {
                _ = self.app.shutdown.cancelled() => return false,
                _ = &mut poll => break,
                event = self.progress.recv() => match event {
                    Ok(e) if !about_us(&e.run_id) => continue,
                    _ => break,
                },
                run = self.requests.recv() => match run {
                    Ok(run) if !about_us(&run) => continue,
                    _ => break,
                },
                _ = self.due.changed(), if self.run_id.is_none() => break,
            }
        }
        // Many wake-ups close together are one read.
        if let Some(last) = self.last_read {
            tokio::time::sleep_until(last + MIN_GAP).await;
        }
        !self.app.shutdown.is_cancelled()
    }
}

fn to_sse(e: &EventRecord) -> Event {
    let at = chrono::DateTime::from_timestamp_millis(e.at)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    let data = serde_json::json!({
        "id": e.id,
        "run": e.run_id,
        "at": at,
        "kind": e.kind,
        "step": e.step_id,
        "data": e.data,
    });
    Event::default().id(e.id.to_string()).event(e.kind.clone()).data(data.to_string())
}

/// The `Last-Event-ID` header's event id, if sent.
fn last_event_id(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    match headers.get("last-event-id").map(|v| v.to_str().map(str::parse::<i64>)) {
        None => Ok(None),
        Some(Ok(Ok(n))) => Ok(Some(n)),
        Some(_) => Err(ApiError::bad_request("header `Last-Event-ID` is not an event id")),
    }
}

/// `GET /api/v1/runs/{id}/events`.
pub async fn events(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let user = app.ids.authorize(&headers, Need::Read)?.name.clone();
    let run_id = super::api::find_run(&app, &id).await?.id;
    let after = last_event_id(&headers)?.unwrap_or(0);
    let slot = app.streams.open(&user)?;
    Ok(follow(Cursor::new(slot, app, Some(run_id), after)))
}

/// `GET /api/v1/events`: every run's events from now on (or after
/// `Last-Event-ID`).
pub async fn all_events(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let user = app.ids.authorize(&headers, Need::Read)?.name.clone();
    let after = match last_event_id(&headers)? {
        Some(n) => n,
        None => app.ctx.store.last_event_id().await?,
    };
    let slot = app.streams.open(&user)?;
    Ok(follow(Cursor::new(slot, app, None, after)))
}

/// The stream of `cursor`'s events, read from the store.
fn follow(cursor: Cursor) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(e) = c.pending.pop_front() {
                let event = to_sse(&e);
                return Some((Ok(event), c));
            }
            if c.finished || c.app.shutdown.is_cancelled() {
                return None;
            }
            c.last_read = Some(tokio::time::Instant::now());
            let store = &c.app.ctx.store;
            // Status first: the final transition commits with its events,
            // so a run seen finished has all its events readable now.
            let finished = match &c.run_id {
                None => false,
                Some(run_id) => match store.run(run_id).await {
                    Ok(run) => run.is_none_or(|r| r.status.is_terminal()),
                    Err(e) => {
                        tracing::warn!(run = %run_id, error = %e, "Event stream: cannot read the run; retrying.");
                        false
                    }
                },
            };
            let batch = match &c.run_id {
                Some(run_id) => store.events(run_id, c.after).await,
                None => store
                    .events_after(c.after, BATCH)
                    .await
                    .map(|batch| c.order.release(c.after, batch, crate::store::now_ms())),
            };
            match batch {
                Ok(batch) => {
                    if let Some(last) = batch.last() {
                        c.after = last.id;
                    }
                    c.pending.extend(batch);
                    c.finished = finished;
                }
                Err(e) => {
                    tracing::warn!(run = ?c.run_id, error = %e, "Event stream: cannot read events; retrying.");
                }
            }
            if c.pending.is_empty() && !c.finished && !c.changed().await {
                return None;
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
