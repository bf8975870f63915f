//! Rows to domain types, and values as Postgres takes them (text without
//! NUL, JSONB).

use super::*;

/// Postgres text cannot hold NUL characters (SQLite can): replace them so a
/// step printing a NUL byte cannot make every commit of its run fail.
pub(super) fn text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') { Cow::Owned(s.replace('\0', "\u{FFFD}")) } else { Cow::Borrowed(s) }
}

pub(super) fn opt_text(s: &Option<String>) -> Option<Cow<'_, str>> {
    s.as_deref().map(text)
}

/// jsonb rejects `\u0000` in strings and keys: the same replacement as `text`.
pub(super) fn json(v: &Value) -> Json<Cow<'_, Value>> {
    fn has_nul(v: &Value) -> bool {
        match v {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items.iter().any(has_nul),
            Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
            _ => false,
        }
    }
    fn clean(v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(text(s).into_owned()),
            Value::Array(items) => Value::Array(items.iter().map(clean).collect()),
            Value::Object(map) => {
                Value::Object(map.iter().map(|(k, v)| (text(k).into_owned(), clean(v))).collect())
            }
            other => other.clone(),
        }
    }
    Json(if has_nul(v) { Cow::Owned(clean(v)) } else { Cow::Borrowed(v) })
}

pub(super) fn opt_json(v: &Option<Value>) -> Option<Json<Cow<'_, Value>>> {
    v.as_ref().map(json)
}

pub(super) fn count(n: i64, what: &str) -> Result<u32> {
    u32::try_from(n).map_err(|_| StoreError::Corrupt(format!("{what} {n} out of range")))
}

pub(super) fn outbox_row(row: &PgRow) -> Result<OutboxRecord> {
    let status: String = row.try_get("status")?;
    Ok(OutboxRecord {
        id: row.try_get("id")?,
        dedupe_key: row.try_get("dedupe_key")?,
        run_id: row.try_get("run_id")?,
        step_id: row.try_get("step_id")?,
        event: row.try_get("event")?,
        channel: row.try_get("channel")?,
        message: row.try_get("message")?,
        status: OutboxStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("outbox status `{status}`")))?,
        attempts: count(row.try_get("attempts")?, "outbox attempts")?,
        next_at: row.try_get("next_at")?,
        last_error: row.try_get("last_error")?,
        detail: row.try_get("detail")?,
        created_at: row.try_get("created_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

pub(super) fn run_row(row: &PgRow) -> Result<RunRecord> {
    let status: String = row.try_get("status")?;
    Ok(RunRecord {
        id: row.try_get("id")?,
        workflow: row.try_get("workflow")?,
        definition_hash: row.try_get("definition_hash")?,
        status: RunStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("run status `{status}`")))?,
        inputs: row.try_get("inputs")?,
        outputs: row.try_get("outputs")?,
        trigger: row.try_get("trigger")?,
        concurrency_key: row.try_get("concurrency_key")?,
        parent_run_id: row.try_get("parent_run_id")?,
        parent_step_id: row.try_get("parent_step_id")?,
        root_run_id: row.try_get("root_run_id")?,
        cancelled_by: row.try_get("cancelled_by")?,
        paused: row.try_get("paused")?,
        error: row.try_get("error")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        wake_at: row.try_get("wake_at")?,
        lease_owner: row.try_get("lease_owner")?,
        lease_expires_at: row.try_get("lease_expires_at")?,
        pins: row.try_get::<Option<Value>, _>("pins")?.map(super::pins_from_json).transpose()?,
    })
}

pub(super) fn step_row(row: &PgRow) -> Result<StepRecord> {
    let status: String = row.try_get("status")?;
    Ok(StepRecord {
        run_id: row.try_get("run_id")?,
        step_id: row.try_get("step_id")?,
        status: StepStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("step status `{status}`")))?,
        attempts: count(row.try_get("attempts")?, "attempts")?,
        outputs: row.try_get("outputs")?,
        error: row.try_get("error")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        wake_at: row.try_get("wake_at")?,
        state: row.try_get("state")?,
        rollback: row.try_get("rollback")?,
    })
}

pub(super) fn attempt_row(row: &PgRow) -> Result<AttemptRecord> {
    let status: String = row.try_get("status")?;
    let phase: String = row.try_get("phase")?;
    Ok(AttemptRecord {
        run_id: row.try_get("run_id")?,
        step_id: row.try_get("step_id")?,
        phase: Phase::parse(&phase)
            .ok_or_else(|| StoreError::Corrupt(format!("phase `{phase}`")))?,
        n: count(row.try_get("n")?, "attempt number")?,
        status: AttemptStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("attempt status `{status}`")))?,
        worker: row.try_get("worker")?,
        pgid: row.try_get::<Option<i64>, _>("pgid")?.map(|p| count(p, "pgid")).transpose()?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        error: row.try_get("error")?,
        stdout: row.try_get("stdout")?,
        stderr: row.try_get("stderr")?,
    })
}

pub(super) fn request_row(row: &PgRow) -> Result<RequestRecord> {
    let kind: String = row.try_get("kind")?;
    Ok(RequestRecord {
        id: row.try_get("id")?,
        run_id: row.try_get("run_id")?,
        kind: RequestKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("request `{kind}`")))?,
        step_id: row.try_get("step_id")?,
        data: row.try_get("data")?,
        actor: row.try_get("actor")?,
        at: row.try_get("at")?,
    })
}
