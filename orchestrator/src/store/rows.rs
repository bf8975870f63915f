//! Rows to domain types, once for both backends. A backend says only how to
//! read one cell of its rows (`Cells`: JSON is TEXT in SQLite and `jsonb` in
//! Postgres, booleans are integers in SQLite); a value that does not decode
//! is `StoreError::Corrupt`, naming its run and step.

use serde_json::Value;

use super::*;

/// One cell of a row, read as a domain value.
pub(crate) trait Cells {
    fn text(&self, col: &str) -> Result<String>;
    fn opt_text(&self, col: &str) -> Result<Option<String>>;
    fn int(&self, col: &str) -> Result<i64>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>>;
    fn flag(&self, col: &str) -> Result<bool>;
    /// A JSON column (`None`: NULL).
    fn json(&self, col: &str) -> Result<Option<Value>>;
}

/// `impl Cells for $row`: text and integers read as such on every backend
/// (`try_get`); the backend gives `flag` and `json`, which differ.
macro_rules! impl_cells {
    ($row:ty { $($own:tt)* }) => {
        impl Cells for $row {
            fn text(&self, col: &str) -> Result<String> {
                Ok(self.try_get(col)?)
            }
            fn opt_text(&self, col: &str) -> Result<Option<String>> {
                Ok(self.try_get(col)?)
            }
            fn int(&self, col: &str) -> Result<i64> {
                Ok(self.try_get(col)?)
            }
            fn opt_int(&self, col: &str) -> Result<Option<i64>> {
                Ok(self.try_get(col)?)
            }
            $($own)*
        }
    };
}
pub(crate) use impl_cells;

/// A stored count (attempts, a pgid) as the `u32` the domain uses.
pub(crate) fn count(n: i64, what: &str) -> Result<u32> {
    u32::try_from(n).map_err(|_| StoreError::corrupt(format!("{what} {n} out of range")))
}

/// JSON stored as text.
pub(crate) fn parse_json(text: Option<String>) -> Result<Option<Value>> {
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| StoreError::corrupt(format!("bad JSON in store: {e}")))
    })
    .transpose()
}

/// Decodes stored pins, naming what is wrong with corrupt ones.
fn pins_from_json(value: Value) -> Result<Pins> {
    serde_json::from_value(value)
        .map_err(|e| StoreError::corrupt(format!("run pins are not a map of names to hashes: {e}")))
}

fn parsed<T>(value: String, what: &str, parse: impl Fn(&str) -> Option<T>) -> Result<T> {
    parse(&value).ok_or_else(|| StoreError::corrupt(format!("unknown {what} `{value}`")))
}

pub(crate) fn run_row(row: &impl Cells) -> Result<RunRecord> {
    let id = row.text("id")?;
    let decode = || -> Result<RunRecord> {
        Ok(RunRecord {
            id: id.clone(),
            workflow: row.text("workflow")?,
            definition_hash: row.text("definition_hash")?,
            status: parsed(row.text("status")?, "run status", RunStatus::parse)?,
            inputs: row.json("inputs")?.unwrap_or(Value::Null),
            outputs: row.json("outputs")?,
            trigger: row.json("trigger")?.unwrap_or(Value::Null),
            concurrency_key: row.opt_text("concurrency_key")?,
            parent_run_id: row.opt_text("parent_run_id")?,
            parent_step_id: row.opt_text("parent_step_id")?,
            root_run_id: row.text("root_run_id")?,
            cancelled_by: row.opt_text("cancelled_by")?,
            paused: row.flag("paused")?,
            error: row.opt_text("error")?,
            created_at: row.int("created_at")?,
            started_at: row.opt_int("started_at")?,
            finished_at: row.opt_int("finished_at")?,
            wake_at: row.opt_int("wake_at")?,
            lease_owner: row.opt_text("lease_owner")?,
            lease_expires_at: row.opt_int("lease_expires_at")?,
            pins: row.json("pins")?.map(pins_from_json).transpose()?,
            mode: parsed(row.text("mode")?, "run mode", RunMode::parse)?,
            scenario: row.opt_text("scenario")?,
            drill: row.json("drill")?,
            verdict: row.json("verdict")?,
        })
    };
    decode().map_err(|e| e.in_run(&id, None))
}

pub(crate) fn step_row(row: &impl Cells) -> Result<StepRecord> {
    let (run_id, step_id) = (row.text("run_id")?, row.text("step_id")?);
    let decode = || -> Result<StepRecord> {
        Ok(StepRecord {
            run_id: run_id.clone(),
            step_id: step_id.clone(),
            status: parsed(row.text("status")?, "step status", StepStatus::parse)?,
            attempts: count(row.int("attempts")?, "attempts")?,
            outputs: row.json("outputs")?,
            error: row.opt_text("error")?,
            started_at: row.opt_int("started_at")?,
            finished_at: row.opt_int("finished_at")?,
            wake_at: row.opt_int("wake_at")?,
            state: row.json("state")?,
            rollback: row.opt_text("rollback")?,
        })
    };
    decode().map_err(|e| e.in_run(&run_id, Some(&step_id)))
}

pub(crate) fn attempt_row(row: &impl Cells) -> Result<AttemptRecord> {
    let (run_id, step_id) = (row.text("run_id")?, row.text("step_id")?);
    let decode = || -> Result<AttemptRecord> {
        Ok(AttemptRecord {
            run_id: run_id.clone(),
            step_id: step_id.clone(),
            phase: parsed(row.text("phase")?, "phase", Phase::parse)?,
            n: count(row.int("n")?, "attempt number")?,
            status: parsed(row.text("status")?, "attempt status", AttemptStatus::parse)?,
            worker: row.text("worker")?,
            pgid: row.opt_int("pgid")?.map(|p| count(p, "pgid")).transpose()?,
            started_at: row.int("started_at")?,
            finished_at: row.opt_int("finished_at")?,
            error: row.opt_text("error")?,
            stdout: row.opt_text("stdout")?,
            stderr: row.opt_text("stderr")?,
        })
    };
    decode().map_err(|e| e.in_run(&run_id, Some(&step_id)))
}

pub(crate) fn event_row(row: &impl Cells) -> Result<EventRecord> {
    let run_id = row.text("run_id")?;
    let step_id = row.opt_text("step_id")?;
    let decode = || -> Result<EventRecord> {
        Ok(EventRecord {
            id: row.int("id")?,
            run_id: run_id.clone(),
            at: row.int("at")?,
            kind: row.text("kind")?,
            step_id: step_id.clone(),
            data: row.json("data")?,
        })
    };
    decode().map_err(|e| e.in_run(&run_id, step_id.as_deref()))
}

pub(crate) fn request_row(row: &impl Cells) -> Result<RequestRecord> {
    let run_id = row.text("run_id")?;
    let step_id = row.opt_text("step_id")?;
    let decode = || -> Result<RequestRecord> {
        Ok(RequestRecord {
            id: row.int("id")?,
            run_id: run_id.clone(),
            kind: parsed(row.text("kind")?, "request", RequestKind::parse)?,
            step_id: step_id.clone(),
            data: row.json("data")?,
            actor: row.text("actor")?,
            at: row.int("at")?,
        })
    };
    decode().map_err(|e| e.in_run(&run_id, step_id.as_deref()))
}

pub(crate) fn outbox_row(row: &impl Cells) -> Result<OutboxRecord> {
    let run_id = row.text("run_id")?;
    let step_id = row.opt_text("step_id")?;
    let decode = || -> Result<OutboxRecord> {
        Ok(OutboxRecord {
            id: row.int("id")?,
            dedupe_key: row.text("dedupe_key")?,
            run_id: run_id.clone(),
            step_id: step_id.clone(),
            event: row.text("event")?,
            channel: row.text("channel")?,
            message: row.json("message")?.unwrap_or_default(),
            status: parsed(row.text("status")?, "outbox status", OutboxStatus::parse)?,
            attempts: count(row.int("attempts")?, "outbox attempts")?,
            next_at: row.int("next_at")?,
            last_error: row.opt_text("last_error")?,
            detail: row.opt_text("detail")?,
            created_at: row.int("created_at")?,
            finished_at: row.opt_int("finished_at")?,
        })
    };
    decode().map_err(|e| e.in_run(&run_id, step_id.as_deref()))
}

/// The audit payload is TEXT on both backends: the exact bytes its hash covers.
pub(crate) fn audit_row(row: &impl Cells) -> Result<AuditRecord> {
    Ok(AuditRecord {
        id: row.int("id")?,
        at: row.int("at")?,
        actor: row.text("actor")?,
        action: row.text("action")?,
        run_id: row.opt_text("run_id")?,
        step_id: row.opt_text("step_id")?,
        payload: parse_json(Some(row.text("payload")?))?.unwrap_or_default(),
        payload_sha256: row.text("payload_sha256")?,
        prev_hash: row.text("prev_hash")?,
        hash: row.text("hash")?,
    })
}

pub(crate) fn definition_row(row: &impl Cells) -> Result<Definition> {
    Ok(Definition {
        hash: row.text("hash")?,
        workflow: row.text("workflow")?,
        file: row.text("file")?,
        source: row.text("source")?,
    })
}

/// Workers with the leases each holds, from the `workers` rows and
/// `(run id, owner, expires)` of every leased run.
pub(crate) fn worker_rows(
    rows: &[impl Cells],
    leases: &[(String, String, i64)],
) -> Result<Vec<WorkerStatus>> {
    rows.iter()
        .map(|r| {
            let id = r.text("id")?;
            Ok(WorkerStatus {
                host: r.text("host")?,
                pid: count(r.int("pid")?, "pid")?,
                started_at: r.int("started_at")?,
                heartbeat_at: r.int("heartbeat_at")?,
                leases: leases
                    .iter()
                    .filter(|(_, owner, _)| *owner == id)
                    .map(|(run, _, expires)| (run.clone(), *expires))
                    .collect(),
                id,
            })
        })
        .collect()
}

/// `run_counts` rows `(status, count)` as domain values.
pub(crate) fn parse_counts(rows: Vec<(String, i64)>) -> Result<Vec<(RunStatus, i64)>> {
    rows.into_iter().map(|(s, n)| Ok((parsed(s, "run status", RunStatus::parse)?, n))).collect()
}
