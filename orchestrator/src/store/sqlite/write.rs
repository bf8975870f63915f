//! The SQL of each piece of a transition (`apply::Writer`) on the writer
//! thread's connection (`writer.rs`); the order and the checks are
//! `apply`'s. Statements are prepared once and cached; rows are written
//! one statement each, which in-process costs microseconds.

use rusqlite::types::FromSql;
use rusqlite::{Connection, Statement, ToSql};
use serde_json::Value;

use super::rows::json;
use crate::store::apply::{self, FinishedAttempt, NewEvent, Writer};
use crate::store::*;

/// A write transaction on the writer thread, as `apply` writes through it.
/// Its methods never wait (see `writer::now`).
pub(super) struct Tx<'a>(pub(super) &'a mut Connection);

/// Binds `values` to `stmt`: by number for `$N` and `?N` (the SQL shared
/// with Postgres numbers its parameters, and may use one twice or out of
/// order), in order for plain `?`.
fn bind(stmt: &mut Statement<'_>, values: &[&dyn ToSql]) -> rusqlite::Result<()> {
    for i in 1..=stmt.parameter_count() {
        let numbered = stmt
            .parameter_name(i)
            .and_then(|name| name.strip_prefix(['$', '?']))
            .and_then(|n| n.parse::<usize>().ok());
        let value = values
            .get(numbered.unwrap_or(i) - 1)
            .ok_or(rusqlite::Error::InvalidParameterCount(i, values.len()))?;
        stmt.raw_bind_parameter(i, value)?;
    }
    Ok(())
}

/// Runs a statement that returns no rows; the rows it changed.
pub(super) fn execute(conn: &Connection, sql: &str, values: &[&dyn ToSql]) -> Result<usize> {
    let mut stmt = conn.prepare_cached(sql)?;
    bind(&mut stmt, values)?;
    Ok(stmt.raw_execute()?)
}

/// The first column of every row `sql` returns.
pub(super) fn column<T: FromSql>(
    conn: &Connection,
    sql: &str,
    values: &[&dyn ToSql],
) -> Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    bind(&mut stmt, values)?;
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(row.get(0)?);
    }
    Ok(out)
}

/// The first column of the first row `sql` returns, if any.
pub(super) fn first<T: FromSql>(
    conn: &Connection,
    sql: &str,
    values: &[&dyn ToSql],
) -> Result<Option<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    bind(&mut stmt, values)?;
    let mut rows = stmt.raw_query();
    Ok(match rows.next()? {
        Some(row) => Some(row.get(0)?),
        None => None,
    })
}

#[async_trait::async_trait]
impl Writer for Tx<'_> {
    async fn lease_owner(&mut self, run_id: &str) -> Result<Option<Option<String>>> {
        // BEGIN IMMEDIATE holds the write lock: nobody changes it under us.
        first(self.0, apply::LEASE_OWNER, &[&run_id])
    }

    async fn insert_run(&mut self, run: &NewRun) -> Result<Created> {
        let conn = &*self.0;
        if let (Some(key), true) = (&run.concurrency_key, run.skip_on_conflict)
            && let Some(active) = first(conn, apply::ACTIVE_WITH_CONCURRENCY_KEY, &[key])?
        {
            return Ok(Created::Skipped { active });
        }
        if let Some(key) = &run.dedupe_key
            && let Some(existing) =
                first(conn, apply::ACTIVE_WITH_DEDUPE_KEY, &[&run.workflow, key])?
        {
            return Ok(Created::Duplicate { existing });
        }
        if let Some((schedule, tick)) = &run.schedule_tick {
            if let Some(existing) = first(conn, apply::TICK_FIRED, &[schedule, tick])? {
                return Ok(Created::Duplicate { existing });
            }
            execute(
                conn,
                "INSERT INTO schedule_ticks (schedule, tick_at, run_id) VALUES (?, ?, ?)",
                &[schedule, tick, &run.id],
            )?;
        }
        super::create::insert_runs(conn, &[run])?;
        Ok(Created::Run(run.id.clone()))
    }

    async fn append_audit(&mut self, entry: NewAudit) -> Result<AuditRecord> {
        let records = super::create::append_audits(self.0, vec![entry])?;
        Ok(records.into_iter().next().expect("one entry, one record"))
    }

    async fn update_run(&mut self, run_id: &str, u: &RunUpdate) -> Result<()> {
        execute(
            self.0,
            "UPDATE runs SET status = COALESCE(?, status), started_at = COALESCE(?, started_at), \
             finished_at = CASE WHEN ? THEN NULL ELSE COALESCE(?, finished_at) END, \
             outputs = COALESCE(?, outputs), error = CASE WHEN ? THEN NULL ELSE COALESCE(?, error) END, \
             paused = COALESCE(?, paused), cancelled_by = COALESCE(?, cancelled_by), \
             inputs = COALESCE(?, inputs), verdict = CASE WHEN ? THEN NULL ELSE COALESCE(?, verdict) END WHERE id = ?",
            &[
                &u.status.map(|s| s.as_str()),
                &u.started_at,
                &u.reopen,
                &u.finished_at,
                &json(&u.outputs),
                &u.reopen,
                &u.error,
                &u.paused.map(i64::from),
                &u.cancelled_by,
                &json(&u.inputs),
                &u.reopen,
                &json(&u.verdict),
                &run_id,
            ],
        )?;
        Ok(())
    }

    async fn renew_leases(&mut self, worker: &str, lease: Lease) -> Result<Vec<String>> {
        let until = lease.now + lease.duration_ms;
        let mut ids: Vec<String> = column(self.0, apply::RENEW, &[&until, &worker, &lease.now])?;
        execute(self.0, apply::HEARTBEAT, &[&lease.now, &worker])?;
        ids.sort();
        Ok(ids)
    }

    async fn put_steps(&mut self, run_id: &str, steps: &[&StepRecord]) -> Result<()> {
        for s in steps {
            execute(
                self.0,
                "INSERT OR REPLACE INTO steps (run_id, step_id, status, attempts, outputs, error, started_at, \
                 finished_at, wake_at, state, rollback) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                &[
                    &run_id,
                    &s.step_id,
                    &s.status.as_str(),
                    &i64::from(s.attempts),
                    &json(&s.outputs),
                    &s.error,
                    &s.started_at,
                    &s.finished_at,
                    &s.wake_at,
                    &json(&s.state),
                    &s.rollback,
                ],
            )?;
        }
        Ok(())
    }

    async fn insert_attempts(&mut self, run_id: &str, attempts: &[&AttemptRecord]) -> Result<()> {
        for a in attempts {
            execute(
                self.0,
                "INSERT INTO attempts (run_id, step_id, phase, n, status, worker, pgid, started_at, finished_at, error) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                &[
                    &run_id,
                    &a.step_id,
                    &a.phase.as_str(),
                    &i64::from(a.n),
                    &a.status.as_str(),
                    &a.worker,
                    &a.pgid.map(i64::from),
                    &a.started_at,
                    &a.finished_at,
                    &a.error,
                ],
            )?;
        }
        Ok(())
    }

    async fn set_pgid(
        &mut self,
        run_id: &str,
        step_id: &str,
        phase: Phase,
        n: u32,
        pgid: u32,
    ) -> Result<()> {
        execute(
            self.0,
            "UPDATE attempts SET pgid = ? WHERE run_id = ? AND step_id = ? AND phase = ? AND n = ?",
            &[&i64::from(pgid), &run_id, &step_id, &phase.as_str(), &i64::from(n)],
        )?;
        Ok(())
    }

    async fn finish_attempt(&mut self, run_id: &str, end: FinishedAttempt<'_>) -> Result<()> {
        execute(
            self.0,
            "UPDATE attempts SET status = ?, finished_at = ?, error = ?, stdout = ?, stderr = ? \
             WHERE run_id = ? AND step_id = ? AND phase = ? AND n = ?",
            &[
                &end.status.as_str(),
                &end.finished_at,
                &end.error,
                &end.stdout,
                &end.stderr,
                &run_id,
                &end.step_id,
                &end.phase.as_str(),
                &i64::from(end.n),
            ],
        )?;
        Ok(())
    }

    async fn insert_events(&mut self, run_id: &str, events: &[NewEvent<'_>]) -> Result<()> {
        for e in events {
            execute(
                self.0,
                "INSERT INTO events (run_id, at, kind, step_id, data) VALUES (?, ?, ?, ?, ?)",
                &[&run_id, &e.at, &e.kind, &e.step_id, &e.data.map(Value::to_string)],
            )?;
        }
        Ok(())
    }

    async fn request_done(&mut self, id: i64, at: i64) -> Result<()> {
        execute(self.0, apply::REQUEST_DONE, &[&at, &id])?;
        Ok(())
    }

    async fn wake(&mut self, run_id: &str) -> Result<()> {
        execute(self.0, apply::WAKE, &[&run_id])?;
        Ok(())
    }

    async fn release(&mut self, run_id: &str, wake_at: Option<i64>) -> Result<()> {
        execute(self.0, apply::RELEASE_IN_COMMIT, &[&wake_at, &run_id])?;
        Ok(())
    }

    async fn notify(&mut self, run_id: &str, n: &NewNotification) -> Result<()> {
        execute(
            self.0,
            "INSERT INTO outbox (dedupe_key, run_id, step_id, event, channel, message, status, next_at, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?) ON CONFLICT (dedupe_key) DO NOTHING",
            &[
                &n.dedupe_key,
                &run_id,
                &n.step_id,
                &n.event,
                &n.channel,
                &n.message.to_string(),
                &n.at,
                &n.at,
            ],
        )?;
        Ok(())
    }

    async fn mark_drill(&mut self, run_id: &str, passed: bool, at: i64) -> Result<()> {
        let verdict = if passed { "passed" } else { "failed" };
        execute(self.0, apply::MARK_DRILL, &[&run_id, &verdict, &at])?;
        Ok(())
    }

    async fn claim_period(
        &mut self,
        workflow: &str,
        scenario: &str,
        due_at: i64,
        now: i64,
    ) -> Result<bool> {
        let inserted =
            execute(self.0, apply::CLAIM_PERIOD, &[&workflow, &scenario, &due_at, &now])?;
        Ok(inserted == 1)
    }
}
