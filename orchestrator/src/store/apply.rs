//! How a transition is written, once for both backends: the lease check
//! (fencing), the order in which a batch of `Change`s is applied, "last
//! write wins" for a step written twice, and a run created with its audit
//! entry. A backend supplies only the SQL of each piece (`Writer`, over its
//! open transaction) and its transaction handling.

use serde_json::Value;

use super::*;

/// An attempt's end, as `Change::AttemptFinished` carries it.
pub(crate) struct FinishedAttempt<'a> {
    pub step_id: &'a str,
    pub phase: Phase,
    pub n: u32,
    pub status: AttemptStatus,
    pub finished_at: i64,
    pub error: Option<&'a str>,
    pub stdout: Option<&'a str>,
    pub stderr: Option<&'a str>,
}

/// An event to insert; ids follow the order of the slice.
pub(crate) struct NewEvent<'a> {
    pub at: i64,
    pub kind: &'a str,
    pub step_id: Option<&'a str>,
    pub data: Option<&'a Value>,
}

/// The SQL of each piece of a transition, inside one open transaction.
#[async_trait::async_trait]
pub(crate) trait Writer: Send {
    /// The run's lease owner, locking the run's row where the backend can
    /// (`None`: no such run).
    async fn lease_owner(&mut self, run_id: &str) -> Result<Option<Option<String>>>;
    /// Creates a run unless its concurrency key, dedupe key or schedule tick
    /// says it exists already; writes nothing then.
    async fn insert_run(&mut self, run: &NewRun) -> Result<Created>;
    /// Appends the next audit entry (serialized with every other append).
    async fn append_audit(&mut self, entry: NewAudit) -> Result<AuditRecord>;
    async fn update_run(&mut self, run_id: &str, update: &RunUpdate) -> Result<()>;
    /// Extends every lease `worker` holds and its heartbeat; the runs still
    /// held, in id order.
    async fn renew_leases(&mut self, worker: &str, lease: Lease) -> Result<Vec<String>>;
    /// Inserts or replaces step rows (each step at most once).
    async fn put_steps(&mut self, run_id: &str, steps: &[&StepRecord]) -> Result<()>;
    async fn insert_attempts(&mut self, run_id: &str, attempts: &[&AttemptRecord]) -> Result<()>;
    async fn set_pgid(
        &mut self,
        run_id: &str,
        step_id: &str,
        phase: Phase,
        n: u32,
        pgid: u32,
    ) -> Result<()>;
    async fn finish_attempt(&mut self, run_id: &str, end: FinishedAttempt<'_>) -> Result<()>;
    async fn insert_events(&mut self, run_id: &str, events: &[NewEvent<'_>]) -> Result<()>;
    async fn request_done(&mut self, id: i64, at: i64) -> Result<()>;
    /// Makes `run_id` due now (`woken`, so a release keeps it due).
    async fn wake(&mut self, run_id: &str) -> Result<()>;
    /// Gives the run back, claimable at `wake_at` unless it was woken.
    async fn release(&mut self, run_id: &str, wake_at: Option<i64>) -> Result<()>;
    /// Queues a notification (nothing if its dedupe key exists).
    async fn notify(&mut self, run_id: &str, notification: &NewNotification) -> Result<()>;
    /// Records a drill's verdict in `drill_freshness` (if newer).
    async fn mark_drill(&mut self, run_id: &str, passed: bool, at: i64) -> Result<()>;
    /// Inserts an overdue period unless it exists: whether this did.
    async fn claim_period(
        &mut self,
        workflow: &str,
        scenario: &str,
        due_at: i64,
        now: i64,
    ) -> Result<bool>;
}

/// The SQL of the hot writes shared by both backends (`$N` parameters,
/// which SQLite's writer binds by number), named for `plans.rs`.
pub(crate) const RENEW: &str = "UPDATE runs SET lease_expires_at = $1 \
     WHERE lease_owner = $2 AND lease_expires_at >= $3 RETURNING id";
pub(crate) const HEARTBEAT: &str = "UPDATE workers SET heartbeat_at = $1 WHERE id = $2";
pub(crate) const REQUEST_DONE: &str = "UPDATE requests SET done_at = $1 WHERE id = $2";
pub(crate) const WAKE: &str = "UPDATE runs SET wake_at = NULL, woken = true WHERE id = $1";
pub(crate) const RELEASE_IN_COMMIT: &str = "UPDATE runs SET lease_owner = NULL, lease_expires_at = NULL, \
     wake_at = CASE WHEN woken = true THEN NULL ELSE $1 END WHERE id = $2";
/// A run's lease owner (Postgres adds `FOR UPDATE`).
pub(crate) const LEASE_OWNER: &str = "SELECT lease_owner FROM runs WHERE id = $1";
/// `on_conflict: skip`: the active run holding a concurrency key.
pub(crate) const ACTIVE_WITH_CONCURRENCY_KEY: &str = concat!(
    "SELECT id FROM runs WHERE concurrency_key = $1 AND status IN ",
    active!(),
    " ORDER BY id LIMIT 1"
);
/// A webhook's dedupe check: the active run of a workflow with this key.
pub(crate) const ACTIVE_WITH_DEDUPE_KEY: &str = concat!(
    "SELECT id FROM runs WHERE workflow = $1 AND dedupe_key = $2 AND status IN ",
    active!(),
    " LIMIT 1"
);
/// Whether a schedule tick fired.
pub(crate) const TICK_FIRED: &str =
    "SELECT run_id FROM schedule_ticks WHERE schedule = $1 AND tick_at = $2";

/// A drill's verdict as its scenario's freshness: the newest per outcome.
pub(crate) const MARK_DRILL: &str = "INSERT INTO drill_freshness (workflow, scenario, verdict, run_id, at) \
     SELECT workflow, COALESCE(scenario, ''), $2, id, $3 FROM runs WHERE id = $1 AND mode = 'drill' \
     ON CONFLICT (workflow, scenario, verdict) DO UPDATE SET run_id = excluded.run_id, at = excluded.at \
     WHERE excluded.at >= drill_freshness.at";
/// An overdue period of a drill scenario, claimed once (`drill_overdue`).
pub(crate) const CLAIM_PERIOD: &str = "INSERT INTO drill_overdue (workflow, scenario, due_at, fired_at) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (workflow, scenario, due_at) DO NOTHING";

/// Applies `changes` if `worker` holds the lease on `run_id` (fencing).
pub(crate) async fn commit(
    w: &mut impl Writer,
    worker: &str,
    run_id: &str,
    changes: &[Change],
) -> Result<()> {
    check_lease(w, worker, run_id).await?;
    apply_all(w, run_id, changes).await
}

/// Whether `worker` holds the lease on `run_id`: `NotFound` or `LeaseLost`
/// if not. Writes nothing, so a refusal needs nothing undone.
pub(crate) async fn check_lease(w: &mut impl Writer, worker: &str, run_id: &str) -> Result<()> {
    match w.lease_owner(run_id).await? {
        None => Err(StoreError::NotFound(run_id.to_string())),
        Some(Some(owner)) if owner == worker => Ok(()),
        Some(_) => Err(Conflict::LeaseLost(run_id.to_string()).into()),
    }
}

/// Whether `e` is `check_lease`'s refusal (rather than a failed statement).
pub(crate) fn is_refusal(e: &StoreError) -> bool {
    matches!(e, StoreError::NotFound(_) | StoreError::Conflict(Conflict::LeaseLost(_)))
}

/// A run and, with it, its audit entry. A schedule tick that already fired
/// (another replica, or before a restart) is routine and not audited.
pub(crate) async fn create(w: &mut impl Writer, run: &NewRun) -> Result<Created> {
    let created = w.insert_run(run).await?;
    let routine = run.schedule_tick.is_some() && !matches!(created, Created::Run(_));
    if let Some(entry) = run.audit.clone().filter(|_| !routine) {
        w.append_audit(entry.about(&created)).await?;
    }
    Ok(created)
}

/// Claims the periods of `claim` nobody claimed yet and, if it claimed
/// any, queues its notifications (keyed by `OverdueClaim::subject`) and
/// appends its audit entry (the last lock, as in every commit).
pub(crate) async fn claim_overdue(
    w: &mut impl Writer,
    claim: &OverdueClaim,
) -> Result<Vec<(String, i64)>> {
    let mut claimed = Vec::new();
    for (scenario, due_at) in &claim.periods {
        if w.claim_period(&claim.workflow, scenario, *due_at, claim.now).await? {
            claimed.push((scenario.clone(), *due_at));
        }
    }
    if claimed.is_empty() {
        return Ok(claimed);
    }
    let subject = OverdueClaim::subject(&claim.workflow);
    for n in &claim.notifications {
        w.notify(&subject, n).await?;
    }
    let mut audit = claim.audit.clone();
    if let Some(map) = audit.payload.as_object_mut() {
        let periods: Vec<Value> = claimed
            .iter()
            .map(|(s, due)| serde_json::json!({"scenario": s, "due_at": due}))
            .collect();
        map.insert("claimed".into(), Value::Array(periods));
    }
    w.append_audit(audit).await?;
    Ok(claimed)
}

/// Applies a batch in a fixed order that respects what depends on what
/// (a run exists before anything names it, an attempt before it is
/// updated), with step rows, new attempts and events each written in one
/// go. The audit append lock is always the last lock a commit takes.
pub(crate) async fn apply_all(w: &mut impl Writer, run_id: &str, changes: &[Change]) -> Result<()> {
    let mut created = Vec::new();
    for change in changes {
        if let Change::CreateRun(run) = change {
            match w.insert_run(run).await? {
                Created::Run(_) => created.push(run),
                other => {
                    return Err(Conflict::Exists(format!(
                        "run {} was not created with this transition: {other:?}",
                        run.id
                    ))
                    .into());
                }
            }
        }
    }
    for change in changes {
        if let Change::Run(update) = change {
            w.update_run(run_id, update).await?;
            // A verdict is its scenario's freshness, in the same commit.
            if let Some(passed) = update.verdict_passed() {
                w.mark_drill(run_id, passed, update.finished_at.unwrap_or_else(now_ms)).await?;
            }
        }
    }
    let steps = last_write_wins(changes);
    if !steps.is_empty() {
        w.put_steps(run_id, &steps).await?;
    }
    let attempts: Vec<&AttemptRecord> = changes
        .iter()
        .filter_map(|c| match c {
            Change::AttemptStarted(a) => Some(a),
            _ => None,
        })
        .collect();
    if !attempts.is_empty() {
        w.insert_attempts(run_id, &attempts).await?;
    }
    for change in changes {
        match change {
            Change::AttemptPgid { step_id, phase, n, pgid } => {
                w.set_pgid(run_id, step_id, *phase, *n, *pgid).await?;
            }
            Change::AttemptFinished {
                step_id,
                phase,
                n,
                status,
                finished_at,
                error,
                stdout,
                stderr,
            } => {
                let end = FinishedAttempt {
                    step_id,
                    phase: *phase,
                    n: *n,
                    status: *status,
                    finished_at: *finished_at,
                    error: error.as_deref(),
                    stdout: stdout.as_deref(),
                    stderr: stderr.as_deref(),
                };
                w.finish_attempt(run_id, end).await?;
            }
            _ => {}
        }
    }
    let events: Vec<NewEvent<'_>> = changes
        .iter()
        .filter_map(|c| match c {
            Change::Event { at, kind, step_id, data } => Some(NewEvent {
                at: *at,
                kind: kind.as_str(),
                step_id: step_id.as_deref(),
                data: data.as_ref(),
            }),
            _ => None,
        })
        .collect();
    if !events.is_empty() {
        w.insert_events(run_id, &events).await?;
    }
    for change in changes {
        match change {
            Change::RequestDone { id, at } => w.request_done(*id, *at).await?,
            Change::WakeRun { run_id } => w.wake(run_id).await?,
            Change::Release { wake_at } => w.release(run_id, *wake_at).await?,
            Change::Notify(n) => w.notify(run_id, n).await?,
            _ => {}
        }
    }
    for run in created {
        if let Some(entry) = run.audit.clone() {
            w.append_audit(entry.about(&Created::Run(run.id.clone()))).await?;
        }
    }
    for change in changes {
        if let Change::Audit(entry) = change {
            w.append_audit(entry.clone()).await?;
        }
    }
    Ok(())
}

/// Each step's last row in the batch, as if applied one by one (and one
/// upsert may not touch a row twice).
fn last_write_wins(changes: &[Change]) -> Vec<&StepRecord> {
    let mut steps: Vec<&StepRecord> = Vec::new();
    for change in changes {
        if let Change::Step(s) = change {
            steps.retain(|p| p.step_id != s.step_id);
            steps.push(s);
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_row_of_a_step_wins_and_keeps_its_place() {
        let row =
            |id: &str, status| Change::Step(StepRecord { status, ..StepRecord::pending("r", id) });
        let changes = [
            row("a", StepStatus::Running),
            row("b", StepStatus::Running),
            row("a", StepStatus::Succeeded),
        ];
        let steps = last_write_wins(&changes);
        let got: Vec<_> = steps.iter().map(|s| (s.step_id.as_str(), s.status)).collect();
        assert_eq!(got, [("b", StepStatus::Running), ("a", StepStatus::Succeeded)]);
    }
}
