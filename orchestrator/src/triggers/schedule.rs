//! Schedule triggers: cron ticks in an IANA time zone start runs.
//!
//! Each tick fires **exactly once**, whatever the number of `serve` replicas
//! and restarts: the run is created together with a `(schedule, tick)` row
//! whose primary key the database enforces (`NewRun.schedule_tick`), so a
//! second replica racing for the same tick gets `Created::Duplicate`. The
//! process only remembers which ticks it has already looked at, to avoid
//! asking again.
//!
//! Ticks missed while no replica was running are handled by the schedule's
//! `catch_up`: `none` skips them, `latest` fires the newest one, `all` fires
//! each (at most [`MAX_CATCH_UP`], the newest, with a warning). A tick counts
//! as missed when it came due before this scheduler started watching the
//! schedule; a schedule that has never fired starts from now (no back-fill).
//!
//! Time comes from a [`Clock`]. Production uses the system clock; the
//! end-to-end tests set `LIFEBOAT_SCHEDULE_CLOCK=<speed>x@<anchor unix ms>`
//! (every replica given the same value reads the same time), which makes
//! schedule time run `speed` times faster than the wall clock from `anchor`,
//! so minute-level crons tick every second. The variable is for tests only
//! and `serve` warns when it is set.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat};
use chrono_tz::Tz;
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::catalog::WorkflowSource;
use crate::compile::CompiledWorkflow;
use crate::exec::drill::{self, DrillError, DrillRequest};
use crate::exec::engine::{Engine, SubmitKeys};
use crate::model::{CatchUp, Schedule, ScheduleMode};
use crate::store::{Created, NewAudit};

/// At most this many missed ticks of one schedule fire after downtime.
pub const MAX_CATCH_UP: usize = 100;

/// The scheduler looks at its schedules at least this often (catalog
/// changes, the clock jumping).
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// Test-only: `<speed>x@<anchor unix ms>`, see the module documentation.
pub const CLOCK_ENV: &str = "LIFEBOAT_SCHEDULE_CLOCK";

// ---------------------------------------------------------------------------
// Schedules of a set of workflows.

/// One schedule trigger of one workflow.
#[derive(Debug, Clone)]
pub struct Entry {
    /// `<workflow>#<index>` (0-based index in `triggers`, as the catalog's
    /// `TriggerRef::id`). Fired ticks and audit entries are recorded under it.
    pub id: String,
    pub workflow: Arc<CompiledWorkflow>,
    /// 0-based index in `triggers`.
    pub trigger: usize,
    pub schedule: Schedule,
}

/// The stable id of a workflow's `index`-th (0-based) trigger.
pub fn schedule_id(workflow: &str, index: usize) -> String {
    format!("{workflow}#{index}")
}

/// Every schedule trigger of `workflows`, by workflow then trigger order.
pub fn entries(workflows: &[Arc<CompiledWorkflow>]) -> Vec<Entry> {
    let mut out: Vec<Entry> = workflows
        .iter()
        .flat_map(|wf| {
            wf.definition.triggers.iter().enumerate().filter_map(move |(i, t)| {
                t.schedule.as_ref().map(|s| Entry {
                    id: schedule_id(&wf.name, i),
                    workflow: wf.clone(),
                    trigger: i,
                    schedule: s.clone(),
                })
            })
        })
        .collect();
    out.sort_by(|a, b| a.workflow.name.cmp(&b.workflow.name).then(a.trigger.cmp(&b.trigger)));
    out
}

// ---------------------------------------------------------------------------
// Tick arithmetic (pure).

fn zoned(tz: Tz, ms: i64) -> Option<DateTime<Tz>> {
    // Cron has second resolution: drop the milliseconds (towards the past).
    DateTime::from_timestamp_millis(ms.div_euclid(1000) * 1000).map(|t| t.with_timezone(&tz))
}

/// A tick as RFC 3339 in the schedule's time zone (`2024-06-01T02:00:00+02:00`).
pub fn tick_text(schedule: &Schedule, ms: i64) -> String {
    zoned(schedule.timezone.0, ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, false))
        .unwrap_or_else(|| ms.to_string())
}

/// The first tick strictly after `after_ms`.
pub fn next_tick(schedule: &Schedule, after_ms: i64) -> Option<i64> {
    let start = zoned(schedule.timezone.0, after_ms)?;
    schedule.cron.cron.find_next_occurrence(&start, false).ok().map(|t| t.timestamp_millis())
}

/// The next `n` ticks strictly after `after_ms`.
pub fn next_ticks(schedule: &Schedule, after_ms: i64, n: usize) -> Vec<i64> {
    let mut out = Vec::with_capacity(n);
    let mut from = after_ms;
    while out.len() < n {
        match next_tick(schedule, from) {
            Some(t) => {
                out.push(t);
                from = t;
            }
            None => break,
        }
    }
    out
}

/// Ticks in `(floor, upto]`, newest first, at most `limit` of them.
pub fn ticks_back(schedule: &Schedule, floor: i64, upto: i64, limit: usize) -> Vec<i64> {
    let mut out = Vec::new();
    let Some(mut cursor) = zoned(schedule.timezone.0, upto) else { return out };
    let mut inclusive = true;
    while out.len() < limit {
        match schedule.cron.cron.find_previous_occurrence(&cursor, inclusive) {
            Ok(t) if t.timestamp_millis() > floor => {
                out.push(t.timestamp_millis());
                cursor = t;
                inclusive = false;
            }
            _ => break,
        }
    }
    out
}

/// What to do with the ticks of one schedule that are due.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Ticks to fire now, oldest first.
    pub fire: Vec<i64>,
    /// Missed ticks left out by `catch_up` (or over the cap).
    pub skipped: usize,
    /// More ticks were due than were counted (over [`MAX_CATCH_UP`]).
    pub more: bool,
}

/// The ticks due in `(floor, now]`: `floor` is the newest tick already
/// handled (fired, or the schedule's start), `since` when this scheduler
/// began watching. Ticks after `since` came due while it watched and always
/// fire; older ones were missed during downtime and follow `catch_up`.
pub fn plan(schedule: &Schedule, floor: i64, since: i64, now: i64) -> Plan {
    let ticks = ticks_back(schedule, floor, now, MAX_CATCH_UP + 1);
    let more = ticks.len() > MAX_CATCH_UP;
    let (mut fire, missed): (Vec<i64>, Vec<i64>) =
        ticks.into_iter().take(MAX_CATCH_UP).partition(|&t| t > since);
    let chosen = match schedule.catch_up {
        CatchUp::None => 0,
        CatchUp::Latest => missed.len().min(1),
        CatchUp::All => missed.len(),
    };
    fire.extend(&missed[..chosen]);
    fire.reverse();
    Plan { fire, skipped: missed.len() - chosen, more }
}

// ---------------------------------------------------------------------------
// Clocks.

/// Where the scheduler gets the time from.
pub trait Clock: Send + Sync {
    /// Schedule time, ms since the Unix epoch.
    fn now_ms(&self) -> i64;
    /// Wall-clock time until schedule time reaches `at_ms` (zero if past).
    fn real_until(&self, at_ms: i64) -> Duration;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        crate::store::now_ms()
    }
    fn real_until(&self, at_ms: i64) -> Duration {
        Duration::from_millis((at_ms - self.now_ms()).max(0) as u64)
    }
}

/// Schedule time running `speed` times faster than the system clock from
/// `anchor_ms` on (tests: minutes pass in seconds). Replicas given the same
/// anchor and speed agree on the time.
#[derive(Debug, Clone, Copy)]
pub struct ScaledClock {
    pub anchor_ms: i64,
    pub speed: u32,
}

impl Clock for ScaledClock {
    fn now_ms(&self) -> i64 {
        let real = crate::store::now_ms();
        self.anchor_ms + (real - self.anchor_ms) * i64::from(self.speed)
    }
    fn real_until(&self, at_ms: i64) -> Duration {
        let ahead = (at_ms - self.now_ms()).max(0) as u64;
        Duration::from_millis(ahead.div_ceil(u64::from(self.speed.max(1))))
    }
}

/// The clock `LIFEBOAT_SCHEDULE_CLOCK` asks for, else the system clock.
pub fn clock_from_env() -> Result<Arc<dyn Clock>, String> {
    match std::env::var(CLOCK_ENV) {
        Ok(text) if !text.trim().is_empty() => parse_clock(text.trim()).map(|c| Arc::new(c) as _),
        _ => Ok(Arc::new(SystemClock)),
    }
}

fn parse_clock(text: &str) -> Result<ScaledClock, String> {
    let bad = || {
        format!("{CLOCK_ENV}=`{text}`: expected <speed>x@<anchor unix ms>, e.g. 60x@1718000000000")
    };
    let (speed, anchor) = text.split_once("x@").ok_or_else(bad)?;
    let speed: u32 = speed.parse().map_err(|_| bad())?;
    let anchor_ms: i64 = anchor.parse().map_err(|_| bad())?;
    if speed == 0 {
        return Err(bad());
    }
    Ok(ScaledClock { anchor_ms, speed })
}

// ---------------------------------------------------------------------------
// The scheduler.

/// What this scheduler remembers of one schedule (nothing that matters:
/// forgetting it only means asking the database again).
#[derive(Debug, Clone, Copy)]
struct Watch {
    /// When this scheduler first saw the schedule.
    since: i64,
    /// Every tick up to here has been handled.
    cursor: Option<i64>,
}

/// Why a tick did not fire.
#[derive(Debug)]
enum FireError {
    /// The database: try the tick again shortly.
    Transient(crate::exec::ExecError),
    /// The tick can never fire (its inputs do not render or check).
    Permanent(String),
}

/// Fires the schedules of a [`WorkflowSource`]'s workflows.
pub struct Scheduler<S: ?Sized> {
    engine: Arc<Engine>,
    source: Arc<S>,
    clock: Arc<dyn Clock>,
    watches: HashMap<String, Watch>,
}

/// The scheduler of `lifeboat serve`: runs until `shutdown`. Uses the
/// system clock unless `LIFEBOAT_SCHEDULE_CLOCK` is set (tests).
pub async fn run<S>(engine: Arc<Engine>, catalog: Arc<S>, shutdown: CancellationToken)
where
    S: WorkflowSource + ?Sized,
{
    let clock = match clock_from_env() {
        Ok(clock) => clock,
        Err(e) => {
            tracing::error!(error = %e, "Ignoring a bad schedule clock; using the system clock.");
            Arc::new(SystemClock)
        }
    };
    if std::env::var_os(CLOCK_ENV).is_some() {
        tracing::warn!(
            clock = %std::env::var(CLOCK_ENV).unwrap_or_default(),
            "Schedules run on a test clock ({CLOCK_ENV}); unset it in production."
        );
    }
    Scheduler::new(engine, catalog, clock).run(shutdown).await
}

impl<S: WorkflowSource + ?Sized> Scheduler<S> {
    pub fn new(engine: Arc<Engine>, source: Arc<S>, clock: Arc<dyn Clock>) -> Self {
        Scheduler { engine, source, clock, watches: HashMap::new() }
    }

    /// Fires due ticks, then sleeps until the next one (at most a second,
    /// so a changed set of workflows is seen within it), until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        tracing::info!("Scheduler started.");
        loop {
            let (next, retry) = self.pass().await;
            let mut wait = next.map(|t| self.clock.real_until(t)).unwrap_or(MAX_SLEEP);
            if retry {
                wait = wait.max(MAX_SLEEP);
            }
            let wait = wait.min(MAX_SLEEP);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        tracing::info!("Scheduler stopped.");
    }

    /// One look at every schedule: fires what is due. Returns the earliest
    /// next tick, and whether something must be tried again.
    pub async fn pass(&mut self) -> (Option<i64>, bool) {
        let now = self.clock.now_ms();
        let entries = entries(&self.source.workflows());
        self.watches.retain(|id, _| entries.iter().any(|e| &e.id == id));
        let mut next: Option<i64> = None;
        let mut retry = false;
        for entry in &entries {
            let watch =
                *self.watches.entry(entry.id.clone()).or_insert(Watch { since: now, cursor: None });
            let floor = match watch.cursor {
                Some(cursor) => cursor,
                None => match self.engine.store.last_tick(&entry.id).await {
                    // Never fired: start from when we first saw it (no back-fill).
                    Ok(last) => last.unwrap_or(watch.since),
                    Err(e) => {
                        tracing::warn!(schedule = %entry.id, error = %e, "Could not read the schedule's last tick; retrying.");
                        retry = true;
                        continue;
                    }
                },
            };
            let cursor = self.handle(entry, floor, watch.since, now).await;
            retry |= cursor < now;
            self.watches.insert(entry.id.clone(), Watch { cursor: Some(cursor), ..watch });
            if let Some(t) = next_tick(&entry.schedule, cursor) {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        }
        (next, retry)
    }

    /// Fires the due ticks of one schedule; returns the new cursor (`now`,
    /// or just before a tick that must be tried again).
    async fn handle(&self, entry: &Entry, floor: i64, since: i64, now: i64) -> i64 {
        let plan = plan(&entry.schedule, floor, since, now);
        if plan.skipped > 0 || plan.more {
            let count = format!("{}{}", plan.skipped, if plan.more { "+" } else { "" });
            match entry.schedule.catch_up {
                CatchUp::All => tracing::warn!(
                    schedule = %entry.id, missed = %count, fired = plan.fire.len(),
                    "More ticks were missed than catch_up fires at once ({MAX_CATCH_UP}); firing the newest."
                ),
                catch_up => tracing::info!(
                    schedule = %entry.id, missed = %count, ?catch_up,
                    "Skipping ticks missed while no scheduler ran."
                ),
            }
        }
        for tick in plan.fire {
            match self.fire(entry, tick).await {
                Ok(()) => {}
                Err(FireError::Permanent(why)) => {
                    tracing::error!(
                        schedule = %entry.id, workflow = %entry.workflow.name,
                        tick = %tick_text(&entry.schedule, tick), error = %why,
                        "Schedule tick cannot start a run; skipping it."
                    );
                }
                Err(FireError::Transient(e)) => {
                    tracing::warn!(
                        schedule = %entry.id, tick = %tick_text(&entry.schedule, tick), error = %format!("{e:#}"),
                        "Could not fire the schedule tick; retrying."
                    );
                    return tick - 1;
                }
            }
        }
        now
    }

    /// Starts the run of one tick (unless another replica already did).
    async fn fire(&self, entry: &Entry, tick: i64) -> Result<(), FireError> {
        let wf = &entry.workflow;
        let at = tick_text(&entry.schedule, tick);
        let trigger = json!({"kind": "schedule", "schedule": entry.id, "tick": at});
        let event = json!({
            "kind": "schedule",
            "schedule": entry.id,
            "tick": at,
            "cron": entry.schedule.cron.as_str(),
            "timezone": entry.schedule.timezone.as_str(),
        });
        if entry.schedule.mode == ScheduleMode::Drill {
            return self.fire_drill(entry, tick, &event).await;
        }
        let inputs = trigger_inputs(wf, entry.trigger, &event).map_err(FireError::Permanent)?;
        // Written with the run, in its commit: a crash between the two
        // cannot leave a fired tick unaudited.
        let audit = NewAudit {
            actor: format!("schedule:{}", entry.id),
            action: "run".into(),
            run_id: None,
            step_id: None,
            payload: json!({"workflow": wf.name, "inputs": inputs, "trigger": trigger}),
        };
        let keys = SubmitKeys {
            schedule_tick: Some((entry.id.clone(), tick)),
            audit: Some(audit),
            ..Default::default()
        };
        let created = self
            .engine
            .submit_with(wf, inputs.clone(), trigger.clone(), None, false, keys)
            .await
            .map_err(|e| {
                if e.store().is_some() {
                    FireError::Transient(e)
                } else {
                    FireError::Permanent(format!("{e:#}"))
                }
            })?;
        self.created(entry, &at, created);
        Ok(())
    }

    /// Starts the drill of one tick (`mode: drill`), its scenario's inputs
    /// under the trigger's, with the same once-per-tick key as a live run.
    async fn fire_drill(&self, entry: &Entry, tick: i64, event: &Value) -> Result<(), FireError> {
        let wf = &entry.workflow;
        let at = tick_text(&entry.schedule, tick);
        let scenario = entry.schedule.scenario.as_ref().map(|s| s.value.as_str());
        let given = trigger_given(wf, entry.trigger, event).map_err(FireError::Permanent)?;
        let actor = format!("schedule:{}", entry.id);
        let trigger = json!({
            "kind": "schedule", "schedule": entry.id, "tick": at, "scenario": scenario, "by": actor,
        });
        let request = DrillRequest {
            scenario,
            injects: &[],
            inputs: given,
            started_by: &actor,
            drive_here: false,
            schedule_tick: Some((entry.id.clone(), tick)),
            trigger: Some(trigger),
        };
        match drill::start(&self.engine, wf, request).await {
            Ok((created, _)) => {
                self.created(entry, &at, created);
                Ok(())
            }
            Err(DrillError::Exec(e)) if e.store().is_some() => Err(FireError::Transient(e)),
            Err(e) => Err(FireError::Permanent(format!("{e:#}"))),
        }
    }

    /// Logs (and counts) what a tick's submission did.
    fn created(&self, entry: &Entry, at: &str, created: Created) {
        let wf = &entry.workflow;
        match created {
            Created::Run(run) => {
                crate::metrics::schedule_fired(&wf.name);
                tracing::info!(schedule = %entry.id, workflow = %wf.name, tick = %at, run = %run, mode = ?entry.schedule.mode, "Schedule fired.");
            }
            Created::Duplicate { existing } => {
                tracing::debug!(schedule = %entry.id, tick = %at, run = %existing, "Tick already fired (another replica, or before a restart).");
            }
            Created::Skipped { active } => {
                tracing::info!(schedule = %entry.id, tick = %at, active = %active, "Tick not started: the concurrency key is busy (on_conflict: skip).");
            }
        }
    }
}

/// A schedule trigger's `inputs`, rendered over `event` and checked
/// against the workflow's declarations (defaults filled in).
pub fn trigger_inputs(
    wf: &CompiledWorkflow,
    trigger: usize,
    event: &Value,
) -> Result<Value, String> {
    let given = trigger_given(wf, trigger, event)?;
    crate::exec::inputs::resolve(given, &wf.definition.inputs).map_err(|errors| errors.join("; "))
}

/// The inputs a schedule trigger sets, rendered over `event` and typed,
/// before defaults (a scheduled drill lays them over its scenario's).
fn trigger_given(
    wf: &CompiledWorkflow,
    trigger: usize,
    event: &Value,
) -> Result<Map<String, Value>, String> {
    let mut pairs = Vec::new();
    let context = json!({"event": event});
    let context = handlebars::Context::wraps(&context).map_err(|e| e.to_string())?;
    if let Some(t) = wf.definition.triggers.get(trigger) {
        for name in t.inputs.keys() {
            let key = format!("triggers.{trigger}.inputs.{name}");
            let value = match wf.templates.get(&key) {
                Some(template) => crate::exec::render::render(template, &context)
                    .map_err(|e| format!("trigger input `{name}`: {e}"))?,
                None => t.inputs[name].value.clone(),
            };
            pairs.push(format!("{name}={value}"));
        }
    }
    crate::exec::inputs::parse_pairs(&pairs, &wf.definition.inputs)
}

// ---------------------------------------------------------------------------
// Listing (`lifeboat schedules`).

/// One schedule as `lifeboat schedules --json` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleInfo {
    pub id: String,
    pub workflow: String,
    pub cron: String,
    pub timezone: String,
    pub catch_up: CatchUp,
    /// `live`, or `drill` with its scenario.
    pub mode: ScheduleMode,
    pub scenario: Option<String>,
    /// The newest tick that fired (RFC 3339 in the schedule's zone).
    pub last_tick: Option<String>,
    /// The next ticks after now.
    pub next: Vec<String>,
}

impl ScheduleInfo {
    pub fn new(entry: &Entry, last_tick: Option<i64>, now: i64, upcoming: usize) -> ScheduleInfo {
        let s = &entry.schedule;
        ScheduleInfo {
            id: entry.id.clone(),
            workflow: entry.workflow.name.clone(),
            cron: s.cron.as_str().to_string(),
            timezone: s.timezone.as_str().to_string(),
            catch_up: s.catch_up,
            mode: s.mode,
            scenario: s.scenario.as_ref().map(|n| n.value.clone()),
            last_tick: last_tick.map(|t| tick_text(s, t)),
            next: next_ticks(s, now, upcoming).into_iter().map(|t| tick_text(s, t)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(cron: &str, tz: &str, catch_up: CatchUp) -> Schedule {
        Schedule {
            cron: cron.parse().unwrap(),
            timezone: tz.parse().unwrap(),
            catch_up,
            mode: Default::default(),
            scenario: None,
        }
    }

    fn ms(rfc3339: &str) -> i64 {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().timestamp_millis()
    }

    fn texts(s: &Schedule, ticks: &[i64]) -> Vec<String> {
        ticks.iter().map(|&t| tick_text(s, t)).collect()
    }

    #[test]
    fn ticks_follow_the_time_zone_across_daylight_saving() {
        let s = schedule("0 2 * * *", "Europe/Paris", CatchUp::Latest);
        // 02:00 Paris is 00:00 UTC in summer and 01:00 UTC in winter.
        assert_eq!(next_tick(&s, ms("2024-06-01T12:00:00Z")), Some(ms("2024-06-02T00:00:00Z")));
        assert_eq!(next_tick(&s, ms("2024-12-01T12:00:00Z")), Some(ms("2024-12-02T01:00:00Z")));
        assert_eq!(tick_text(&s, ms("2024-06-02T00:00:00Z")), "2024-06-02T02:00:00+02:00");
        // 31 March 2024: 02:00 does not exist in Paris; the day still gets a tick.
        let around = next_ticks(&s, ms("2024-03-30T12:00:00Z"), 2);
        assert_eq!(around.len(), 2);
        assert!(around[0] > ms("2024-03-30T12:00:00Z") && around[0] < ms("2024-04-01T00:00:00Z"));
    }

    #[test]
    fn the_next_tick_is_strictly_after_and_ignores_milliseconds() {
        let s = schedule("*/5 * * * *", "UTC", CatchUp::Latest);
        let t = ms("2024-06-01T10:05:00Z");
        assert_eq!(next_tick(&s, t), Some(ms("2024-06-01T10:10:00Z")));
        assert_eq!(next_tick(&s, t + 400), Some(ms("2024-06-01T10:10:00Z")));
        assert_eq!(next_tick(&s, t - 1), Some(t));
    }

    #[test]
    fn ticks_back_are_newest_first_within_the_window() {
        let s = schedule("0 * * * *", "UTC", CatchUp::All);
        let ticks = ticks_back(&s, ms("2024-06-01T07:00:00Z"), ms("2024-06-01T10:00:00Z"), 10);
        assert_eq!(
            texts(&s, &ticks),
            ["2024-06-01T10:00:00+00:00", "2024-06-01T09:00:00+00:00", "2024-06-01T08:00:00+00:00"]
        );
        assert_eq!(
            ticks_back(&s, ms("2024-06-01T07:00:00Z"), ms("2024-06-01T10:00:00Z"), 2).len(),
            2
        );
    }

    #[test]
    fn a_tick_that_comes_due_while_watching_fires() {
        let s = schedule("* * * * *", "UTC", CatchUp::None);
        let since = ms("2024-06-01T10:00:30Z");
        let p = plan(&s, since, since, ms("2024-06-01T10:01:00.200Z"));
        assert_eq!(p, Plan { fire: vec![ms("2024-06-01T10:01:00Z")], skipped: 0, more: false });
        // Nothing new since the last look.
        let p = plan(&s, ms("2024-06-01T10:01:00.200Z"), since, ms("2024-06-01T10:01:30Z"));
        assert!(p.fire.is_empty());
    }

    #[test]
    fn missed_ticks_follow_catch_up() {
        // Last fired 10:00; down until 10:03:30 (ticks 10:01, 10:02, 10:03 missed);
        // the scheduler looks again at 10:04:00.5 (10:04 came due while watching).
        let last = ms("2024-06-01T10:00:00Z");
        let since = ms("2024-06-01T10:03:30Z");
        let now = ms("2024-06-01T10:04:00.500Z");
        let at = |catch_up| {
            let s = schedule("* * * * *", "UTC", catch_up);
            let p = plan(&s, last, since, now);
            (texts(&s, &p.fire), p.skipped)
        };
        let t = |m: u32| format!("2024-06-01T10:0{m}:00+00:00");
        assert_eq!(at(CatchUp::None), (vec![t(4)], 3));
        assert_eq!(at(CatchUp::Latest), (vec![t(3), t(4)], 2));
        assert_eq!(at(CatchUp::All), (vec![t(1), t(2), t(3), t(4)], 0));
    }

    #[test]
    fn catch_up_all_is_bounded_to_the_newest_ticks() {
        let s = schedule("* * * * *", "UTC", CatchUp::All);
        let now = ms("2024-06-01T12:00:00Z");
        let p = plan(&s, ms("2024-06-01T00:00:00Z"), now, now);
        assert_eq!(p.fire.len(), MAX_CATCH_UP);
        assert!(p.more);
        assert_eq!(*p.fire.last().unwrap(), now);
        assert!(p.fire.windows(2).all(|w| w[0] < w[1]), "oldest first");
    }

    #[test]
    fn the_scaled_clock_runs_faster_from_its_anchor() {
        let clock = parse_clock("60x@1000").unwrap();
        let real = crate::store::now_ms();
        let virt = clock.now_ms();
        assert!((virt - (1000 + (real - 1000) * 60)).abs() < 60_000);
        let d = clock.real_until(virt + 60_000);
        assert!(d <= Duration::from_millis(1000) && d >= Duration::from_millis(900), "{d:?}");
        assert!(parse_clock("60").is_err() && parse_clock("0x@5").is_err());
    }

    proptest::proptest! {
        #[test]
        fn plans_fire_due_ticks_once_oldest_first_and_every_live_tick(
            step in 1u32..30,
            mode in 0usize..3,
            floor_back in 0i64..7_200_000,
            since_back in 0i64..7_200_000,
        ) {
            let catch_up = [CatchUp::None, CatchUp::Latest, CatchUp::All][mode];
            let s = schedule(&format!("*/{step} * * * *"), "America/New_York", catch_up);
            let now = ms("2024-11-03T06:30:00Z"); // around New York's DST change
            let (floor, since) = (now - floor_back, now - since_back);
            let p = plan(&s, floor, since, now);
            proptest::prop_assert!(p.fire.len() <= MAX_CATCH_UP);
            proptest::prop_assert!(p.fire.windows(2).all(|w| w[0] < w[1]));
            proptest::prop_assert!(p.fire.iter().all(|&t| t > floor && t <= now));
            let live: Vec<i64> = ticks_back(&s, floor.max(since), now, MAX_CATCH_UP)
                .into_iter().rev().collect();
            proptest::prop_assert!(live.iter().all(|t| p.fire.contains(t)));
            let missed_fired = p.fire.len() - live.len();
            match catch_up {
                CatchUp::None => proptest::prop_assert_eq!(missed_fired, 0),
                CatchUp::Latest => proptest::prop_assert!(missed_fired <= 1),
                CatchUp::All => proptest::prop_assert!(p.more || p.skipped == 0),
            }
        }
    }

    // -- The scheduler against a real store ---------------------------------

    use std::sync::atomic::{AtomicI64, Ordering};

    struct ManualClock(AtomicI64);

    impl Clock for ManualClock {
        fn now_ms(&self) -> i64 {
            self.0.load(Ordering::SeqCst)
        }
        fn real_until(&self, _: i64) -> Duration {
            Duration::ZERO
        }
    }

    const WF: &str = "name: tick\ninputs:\n  at: { type: string, required: true }\ntriggers:\n  - schedule: { cron: \"* * * * *\", catch_up: all }\n    inputs: { at: \"{{event.tick}}\" }\nsteps:\n  a: { uses: set }\n";

    async fn world() -> (tempfile::TempDir, Arc<Engine>, Arc<Vec<Arc<CompiledWorkflow>>>) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = crate::store::open(&url).await.unwrap();
        let engine = Engine::new(store, Default::default());
        let wf = crate::compile::compile("tick.yaml", WF, Default::default()).unwrap();
        (dir, engine, Arc::new(vec![Arc::new(wf)]))
    }

    async fn ticks_fired(engine: &Engine) -> Vec<String> {
        let runs = engine.store.runs(&Default::default()).await.unwrap();
        let mut ticks: Vec<String> =
            runs.iter().map(|r| r.inputs["at"].as_str().unwrap().to_string()).collect();
        ticks.sort();
        ticks
    }

    #[tokio::test]
    async fn two_schedulers_fire_each_tick_once_and_catch_up_after_downtime() {
        let (_dir, engine, wfs) = world().await;
        let clock = Arc::new(ManualClock(AtomicI64::new(ms("2024-06-01T10:00:30Z"))));
        let mut a = Scheduler::new(engine.clone(), wfs.clone(), clock.clone());
        let mut b = Scheduler::new(engine.clone(), wfs.clone(), clock.clone());
        // First sight: nothing is back-filled.
        a.pass().await;
        b.pass().await;
        assert!(ticks_fired(&engine).await.is_empty());
        for m in 1..=3 {
            clock.0.store(ms(&format!("2024-06-01T10:0{m}:00.100Z")), Ordering::SeqCst);
            b.pass().await;
            a.pass().await;
        }
        let t = |m: u32| format!("2024-06-01T10:0{m}:00+00:00");
        assert_eq!(ticks_fired(&engine).await, [t(1), t(2), t(3)]);
        let audit = engine.store.audit_list(0, 100).await.unwrap();
        assert_eq!(audit.len(), 3);
        assert_eq!(audit[0].actor, "schedule:tick#0");
        // Both stop; 10:04..10:06 pass; a new scheduler catches up (all).
        clock.0.store(ms("2024-06-01T10:06:30Z"), Ordering::SeqCst);
        let mut c = Scheduler::new(engine.clone(), wfs.clone(), clock.clone());
        let (next, retry) = c.pass().await;
        assert!(!retry);
        assert_eq!(next, Some(ms("2024-06-01T10:07:00Z")));
        assert_eq!(ticks_fired(&engine).await, [t(1), t(2), t(3), t(4), t(5), t(6)]);
        assert_eq!(
            engine.store.last_tick("tick#0").await.unwrap(),
            Some(ms("2024-06-01T10:06:00Z"))
        );
    }

    const DRILL_WF: &str = "name: tick\ninputs:\n  at: { type: string, default: none }\n  site: { type: string, default: dc01 }\ntriggers:\n  - schedule: { cron: \"* * * * *\", mode: drill, scenario: happy }\n    inputs: { at: \"{{event.tick}}\" }\nsteps:\n  a: { uses: set, with: { site: \"{{inputs.site}}\" } }\ndrills:\n  happy:\n    inputs: { site: dc09 }\n";

    #[tokio::test]
    async fn a_drill_schedule_starts_one_drill_per_tick_with_its_scenario() {
        let (_dir, engine, _) = world().await;
        let wf = crate::compile::compile("tick.yaml", DRILL_WF, Default::default())
            .unwrap_or_else(|r| panic!("{}", r.render(false)));
        let wfs = Arc::new(vec![Arc::new(wf)]);
        let clock = Arc::new(ManualClock(AtomicI64::new(ms("2024-06-01T10:00:30Z"))));
        let mut a = Scheduler::new(engine.clone(), wfs.clone(), clock.clone());
        let mut b = Scheduler::new(engine.clone(), wfs.clone(), clock.clone());
        a.pass().await;
        b.pass().await;
        clock.0.store(ms("2024-06-01T10:01:00.100Z"), Ordering::SeqCst);
        a.pass().await;
        b.pass().await;
        let runs = engine.store.runs(&Default::default()).await.unwrap();
        assert_eq!(runs.len(), 1, "one drill for the tick, whichever replica");
        let run = &runs[0];
        assert_eq!(run.mode, crate::store::RunMode::Drill);
        assert_eq!(run.scenario.as_deref(), Some("happy"));
        // The scenario's inputs, under the trigger's.
        assert_eq!(run.inputs["site"], "dc09");
        assert_eq!(run.inputs["at"], "2024-06-01T10:01:00+00:00");
        assert_eq!(run.trigger["kind"], "schedule");
        let audit = engine.store.audit_list(0, 10).await.unwrap();
        assert_eq!(audit.len(), 1);
        assert_eq!(
            (audit[0].actor.as_str(), audit[0].action.as_str()),
            ("schedule:tick#0", "drill")
        );
    }
}
