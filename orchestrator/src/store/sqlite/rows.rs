//! Rows to domain types, and JSON as SQLite stores it (TEXT).

use super::*;

pub(super) fn json(value: &Option<Value>) -> Option<String> {
    value.as_ref().map(|v| v.to_string())
}

pub(super) fn pins_text(pins: &Option<super::Pins>) -> Option<String> {
    pins.as_ref().map(|p| serde_json::to_string(p).expect("a map of strings"))
}

pub(super) fn parse_json(text: Option<String>) -> Result<Option<Value>> {
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(format!("bad JSON in store: {e}")))
    })
    .transpose()
}

pub(super) fn outbox_row(row: &SqliteRow) -> Result<OutboxRecord> {
    let status: String = row.try_get("status")?;
    Ok(OutboxRecord {
        id: row.try_get("id")?,
        dedupe_key: row.try_get("dedupe_key")?,
        run_id: row.try_get("run_id")?,
        step_id: row.try_get("step_id")?,
        event: row.try_get("event")?,
        channel: row.try_get("channel")?,
        message: parse_json(row.try_get("message")?)?.unwrap_or_default(),
        status: OutboxStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown outbox status `{status}`")))?,
        attempts: row.try_get::<i64, _>("attempts")? as u32,
        next_at: row.try_get("next_at")?,
        last_error: row.try_get("last_error")?,
        detail: row.try_get("detail")?,
        created_at: row.try_get("created_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

pub(super) fn run_row(row: &SqliteRow) -> Result<RunRecord> {
    let status: String = row.try_get("status")?;
    Ok(RunRecord {
        id: row.try_get("id")?,
        workflow: row.try_get("workflow")?,
        definition_hash: row.try_get("definition_hash")?,
        status: RunStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("run status `{status}`")))?,
        inputs: parse_json(row.try_get("inputs")?)?.unwrap_or(Value::Null),
        outputs: parse_json(row.try_get("outputs")?)?,
        trigger: parse_json(row.try_get("trigger")?)?.unwrap_or(Value::Null),
        concurrency_key: row.try_get("concurrency_key")?,
        parent_run_id: row.try_get("parent_run_id")?,
        parent_step_id: row.try_get("parent_step_id")?,
        root_run_id: row.try_get("root_run_id")?,
        cancelled_by: row.try_get("cancelled_by")?,
        paused: row.try_get::<i64, _>("paused")? != 0,
        error: row.try_get("error")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        wake_at: row.try_get("wake_at")?,
        lease_owner: row.try_get("lease_owner")?,
        lease_expires_at: row.try_get("lease_expires_at")?,
        pins: parse_json(row.try_get("pins")?)?.map(super::pins_from_json).transpose()?,
    })
}

pub(super) fn step_row(row: &SqliteRow) -> Result<StepRecord> {
    let status: String = row.try_get("status")?;
    Ok(StepRecord {
        run_id: row.try_get("run_id")?,
        step_id: row.try_get("step_id")?,
        status: StepStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("step status `{status}`")))?,
        attempts: row.try_get::<i64, _>("attempts")? as u32,
        outputs: parse_json(row.try_get("outputs")?)?,
        error: row.try_get("error")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        wake_at: row.try_get("wake_at")?,
        state: parse_json(row.try_get("state")?)?,
        rollback: row.try_get("rollback")?,
    })
}

pub(super) fn attempt_row(row: &SqliteRow) -> Result<AttemptRecord> {
    let status: String = row.try_get("status")?;
    let phase: String = row.try_get("phase")?;
    Ok(AttemptRecord {
        run_id: row.try_get("run_id")?,
        step_id: row.try_get("step_id")?,
        phase: Phase::parse(&phase)
            .ok_or_else(|| StoreError::Corrupt(format!("phase `{phase}`")))?,
        n: row.try_get::<i64, _>("n")? as u32,
        status: AttemptStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("attempt status `{status}`")))?,
        worker: row.try_get("worker")?,
        pgid: row.try_get::<Option<i64>, _>("pgid")?.map(|p| p as u32),
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        error: row.try_get("error")?,
        stdout: row.try_get("stdout")?,
        stderr: row.try_get("stderr")?,
    })
}
