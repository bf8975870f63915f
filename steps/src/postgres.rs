//! `postgres`: operate a Postgres streaming-replication pair (status,
//! wait for catch-up, fence/unfence a primary, promote a standby, a
//! read-only check query) on a named connection or a URL.

use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgRow};
use sqlx::{ConnectOptions, Connection, Executor, Row};

use crate::failure::Failure;
use crate::sql::{bind_params, params, postgres_row};
use crate::{AttemptContext, ConfigProblem, Outcome, Step};

/// What a `postgres` step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Role, recovery, LSNs, replay lag and the connected standbys.
    Status,
    /// Polls until the replay lag is within `max_lag_bytes`/`max_lag_seconds`.
    WaitForCatchup,
    /// Makes the server refuse writes and ends the other client sessions.
    Fence,
    /// Undoes `fence`: writes accepted again.
    Unfence,
    /// Promotes a standby (`pg_promote(wait => true)`); refuses on a primary.
    Promote,
    /// One read-only query (in a READ ONLY transaction); its row as `row`.
    QueryOne,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Status => "status",
            Action::WaitForCatchup => "wait_for_catchup",
            Action::Fence => "fence",
            Action::Unfence => "unfence",
            Action::Promote => "promote",
            Action::QueryOne => "query_one",
        }
    }

    /// Changes the server (for `plan`'s audit of unprotected mutations).
    pub fn mutates(self) -> bool {
        matches!(self, Action::Fence | Action::Unfence | Action::Promote)
    }

    /// The `with` fields this action reads besides `action`, `connection`, `url`.
    fn fields(self) -> &'static [&'static str] {
        match self {
            Action::WaitForCatchup => {
                &["max_lag_bytes", "max_lag_seconds", "within_seconds", "interval_ms"]
            }
            Action::QueryOne => &["query", "params"],
            Action::Status | Action::Fence | Action::Unfence | Action::Promote => &[],
        }
    }
}

/// Operates one Postgres server of a streaming-replication pair.
///
/// A named `connection` is resolved by the executor from `[connections]`
/// in lifeboat.toml (its URL comes from the environment); this crate never
/// reads configuration. Errors name the connection (or the URL without its
/// password) and say what to do. Which fields apply depends on `action`:
/// `wait_for_catchup` takes `max_lag_bytes` and/or `max_lag_seconds` (both
/// must hold when both are given), `within_seconds` (default 60) and
/// `interval_ms` (default 500); `query_one` takes `query` and `params`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub action: Action,
    /// A connection named under `[connections]` in lifeboat.toml.
    pub connection: Option<String>,
    /// A `postgres://` URL (template); exclusive with `connection`.
    pub url: Option<String>,
    /// `wait_for_catchup`: the most replay lag accepted, in bytes of WAL.
    pub max_lag_bytes: Option<u64>,
    /// `wait_for_catchup`: the most replay lag accepted, in seconds.
    pub max_lag_seconds: Option<f64>,
    /// `wait_for_catchup`: give up after this many seconds (default 60).
    pub within_seconds: Option<u64>,
    /// `wait_for_catchup`: milliseconds between polls (default 500).
    pub interval_ms: Option<u64>,
    /// `query_one`: the statement; `$1` placeholders, never templates, for values.
    pub query: Option<String>,
    /// `query_one`: values bound to the placeholders (templates).
    pub params: Option<Vec<Value>>,
}

const DEFAULT_WITHIN: Duration = Duration::from_secs(60);
const DEFAULT_INTERVAL: Duration = Duration::from_millis(500);

impl Config {
    pub fn compile(&self) -> Vec<ConfigProblem> {
        let mut problems = crate::check_connection_target(
            "postgres",
            self.connection.as_ref(),
            self.url.as_ref(),
            &["postgres://", "postgresql://"],
            "a postgres step needs a postgres:// URL",
        );
        let action = self.action;
        let given = [
            ("max_lag_bytes", self.max_lag_bytes.is_some()),
            ("max_lag_seconds", self.max_lag_seconds.is_some()),
            ("within_seconds", self.within_seconds.is_some()),
            ("interval_ms", self.interval_ms.is_some()),
            ("query", self.query.is_some()),
            ("params", self.params.is_some()),
        ];
        problems.extend(crate::fields_for_action(
            action.name(),
            action.fields(),
            &given,
            "`connection` or `url`",
        ));
        match action {
            Action::WaitForCatchup => {
                if self.max_lag_bytes.is_none() && self.max_lag_seconds.is_none() {
                    problems.push(ConfigProblem::new(
                        &["action"],
                        "`wait_for_catchup` needs `max_lag_bytes` or `max_lag_seconds` (or both)",
                    ));
                }
                if self.max_lag_seconds.is_some_and(|s| !s.is_finite() || s < 0.0) {
                    problems.push(ConfigProblem::new(
                        &["max_lag_seconds"],
                        "must be a number of seconds, 0 or more",
                    ));
                }
                if self.within_seconds == Some(0) {
                    problems.push(ConfigProblem::new(&["within_seconds"], "must be at least 1"));
                }
                if self.interval_ms == Some(0) {
                    problems.push(ConfigProblem::new(&["interval_ms"], "must be at least 1"));
                }
            }
            Action::QueryOne => match &self.query {
                None => problems.push(ConfigProblem::new(&["action"], "`query_one` needs `query`")),
                Some(q) if crate::is_templated(q) => problems.push(
                    ConfigProblem::new(
                        &["query"],
                        "templates in `query` would allow SQL injection",
                    )
                    .with_help(
                        "bind values with `$1` placeholders and `params: [\"{{inputs.x}}\"]`",
                    )
                    .about_template(),
                ),
                Some(_) => {}
            },
            _ => {}
        }
        problems
    }

    /// How errors and outputs name the server: the connection's name, or
    /// the URL without its password.
    fn label(&self, url: &str) -> String {
        match &self.connection {
            Some(name) => format!("connection `{name}`"),
            None => format!("`{}`", without_password(url)),
        }
    }
}

/// `url` with any password removed (unparseable URLs are not shown).
fn without_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => "a malformed postgres URL".to_owned(),
    }
}

impl Step for Config {
    fn mutates(&self) -> Option<bool> {
        Some(self.action.mutates())
    }

    crate::connects_by_url!();

    async fn run(&self, ctx: &AttemptContext) -> Outcome {
        let url = match crate::target_url("postgres", &self.url, &self.connection) {
            Ok(url) => url,
            Err(unresolved) => return unresolved,
        };
        let outcome = self.run_on(url, ctx).await;
        crate::failure::hide_url_password(url, outcome)
    }

    /// `fence` undoes itself: `unfence` on the same server, unless the
    /// server was already read-only (then the fence changed nothing).
    fn reversible(&self) -> bool {
        self.action == Action::Fence
    }

    fn inverse(&self, outputs: &Value) -> Result<crate::ActionConfig, String> {
        if crate::recorded(outputs, "changed")?.as_bool() == Some(false) {
            return Ok(crate::nothing_to_undo(
                "the server was already read-only before the fence: left read-only",
            ));
        }
        Ok(crate::ActionConfig::Postgres(Config { action: Action::Unfence, ..self.clone() }))
    }
}

impl Config {
    async fn run_on(&self, url: &str, ctx: &AttemptContext) -> Outcome {
        let server = Server { url, label: self.label(url) };
        // The last lag seen by `wait_for_catchup`, for the error if time runs out.
        let last_lag = Mutex::new(None::<Lag>);
        let work = async {
            match self.action {
                Action::Status => server.status().await,
                Action::WaitForCatchup => self.wait_for_catchup(&server, &last_lag).await,
                Action::Fence => server.fence().await,
                Action::Unfence => server.unfence().await,
                Action::Promote => server.promote().await,
                Action::QueryOne => {
                    let query = self.query.as_deref().unwrap_or_default();
                    server.query_one(query, self.params.as_deref().unwrap_or_default()).await
                }
            }
        };
        match ctx.bounded(work).await {
            Ok(Ok(outputs)) => Outcome::succeeded(outputs),
            Ok(Err(failure)) => failure.into_outcome(),
            Err(interrupted) => {
                let lag = last_lag.lock().map(|l| *l).unwrap_or(None);
                match (interrupted.outcome(None, crate::empty_outputs()), lag) {
                    (Outcome::Failed { error, retryable, .. }, Some(lag)) => Outcome::Failed {
                        error: format!(
                            "{error} waiting for {} to catch up; last replay lag {}",
                            server.label,
                            lag.describe()
                        ),
                        retryable,
                        outputs: lag.outputs(),
                    },
                    (outcome, _) => outcome,
                }
            }
        }
    }
}

impl Config {
    async fn wait_for_catchup(
        &self,
        server: &Server<'_>,
        last: &Mutex<Option<Lag>>,
    ) -> Result<Value, Failure> {
        let within = self.within_seconds.map(Duration::from_secs).unwrap_or(DEFAULT_WITHIN);
        let interval = self.interval_ms.map(Duration::from_millis).unwrap_or(DEFAULT_INTERVAL);
        let started = Instant::now();
        let mut conn = server.connect().await?;
        loop {
            let Some(lag) = server.lag(&mut conn).await? else {
                if started.elapsed() >= within {
                    return Err(Failure::retryable(format!(
                        "{} is a primary and no standby connected to it within {} s \
                         (pg_stat_replication stayed empty); start the standby or point the \
                         step at it",
                        server.label,
                        within.as_secs()
                    )));
                }
                tokio::time::sleep(interval).await;
                continue;
            };
            if let Ok(mut l) = last.lock() {
                *l = Some(lag);
            }
            let bytes_ok = self.max_lag_bytes.is_none_or(|max| lag.bytes <= max as i64);
            let seconds_ok = self.max_lag_seconds.is_none_or(|max| lag.seconds <= max);
            if bytes_ok && seconds_ok {
                let mut outputs = lag.outputs();
                outputs["waited_ms"] = json!(started.elapsed().as_millis() as u64);
                let _ = conn.close().await;
                return Ok(outputs);
            }
            if started.elapsed() >= within {
                return Err(Failure::retryable(format!(
                    "{}: replay lag did not drop within {} s (last: {}; bound: {}); check the \
                     standby's replication (pg_stat_wal_receiver, recovery_min_apply_delay) \
                     or raise the bound if the RPO allows",
                    server.label,
                    within.as_secs(),
                    lag.describe(),
                    self.bound()
                )));
            }
            tokio::time::sleep(interval).await;
        }
    }

    fn bound(&self) -> String {
        let mut parts = Vec::new();
        if let Some(b) = self.max_lag_bytes {
            parts.push(format!("{b} bytes"));
        }
        if let Some(s) = self.max_lag_seconds {
            parts.push(format!("{s} s"));
        }
        parts.join(" and ")
    }
}

/// A replay lag measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Lag {
    in_recovery: bool,
    bytes: i64,
    seconds: f64,
}

impl Lag {
    fn describe(&self) -> String {
        format!("{} bytes, {:.1} s", self.bytes, self.seconds)
    }

    fn outputs(&self) -> Value {
        json!({
            "role": role(self.in_recovery),
            "replay_lag_bytes": self.bytes,
            "replay_lag_seconds": self.seconds,
        })
    }
}

fn role(in_recovery: bool) -> &'static str {
    if in_recovery { "standby" } else { "primary" }
}

/// A standby: WAL received but not yet replayed (and the age of the last
/// replayed transaction while some is pending).
const STANDBY_LAG: &str = "\
    COALESCE(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), 0)::int8, \
    CASE WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0::float8 \
    ELSE COALESCE(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0)::float8 END";

/// One server, as errors name it.
struct Server<'a> {
    url: &'a str,
    label: String,
}

impl Server<'_> {
    async fn connect(&self) -> Result<PgConnection, Failure> {
        let options = PgConnectOptions::from_str(self.url)
            .map_err(|e| Failure::fatal(format!("{}: the URL is not valid: {e}", self.label)))?;
        options.connect().await.map_err(|e| {
            Failure::retryable(format!(
                "{}: cannot connect: {}; check that the server is up and reachable and that \
                 the URL (user, password, port) is right",
                self.label,
                describe(&e)
            ))
        })
    }

    fn failed(&self, doing: &str) -> impl Fn(sqlx::Error) -> Failure + '_ {
        let doing = doing.to_owned();
        move |e| Failure::query(&self.label, &doing, e)
    }

    async fn in_recovery(&self, conn: &mut PgConnection) -> Result<bool, Failure> {
        let row = conn
            .fetch_one("SELECT pg_is_in_recovery()")
            .await
            .map_err(self.failed("reading pg_is_in_recovery()"))?;
        row.try_get(0).map_err(self.failed("reading pg_is_in_recovery()"))
    }

    /// The replay lag: on a standby, of what it received; on a primary, of
    /// its most lagging standby (`None`: no standby connected). A standby
    /// that has not reported a replay position yet lags by all the WAL.
    async fn lag(&self, conn: &mut PgConnection) -> Result<Option<Lag>, Failure> {
        if self.in_recovery(conn).await? {
            let row = conn
                .fetch_one(format!("SELECT {STANDBY_LAG}").as_str())
                .await
                .map_err(self.failed("reading the replay lag"))?;
            return Ok(Some(Lag {
                in_recovery: true,
                bytes: row.try_get(0).map_err(self.failed("reading the replay lag"))?,
                seconds: row.try_get(1).map_err(self.failed("reading the replay lag"))?,
            }));
        }
        let row = conn
            .fetch_one(
                "SELECT count(*), \
                 COALESCE(max(pg_wal_lsn_diff(pg_current_wal_lsn(), \
                 COALESCE(replay_lsn, '0/0'::pg_lsn))), 0)::int8, \
                 COALESCE(max(extract(epoch FROM replay_lag)), 0)::float8 \
                 FROM pg_stat_replication",
            )
            .await
            .map_err(self.failed("reading pg_stat_replication"))?;
        let standbys: i64 = row.try_get(0).map_err(self.failed("reading pg_stat_replication"))?;
        if standbys == 0 {
            return Ok(None);
        }
        Ok(Some(Lag {
            in_recovery: false,
            bytes: row.try_get(1).map_err(self.failed("reading pg_stat_replication"))?,
            seconds: row.try_get(2).map_err(self.failed("reading pg_stat_replication"))?,
        }))
    }

    async fn status(&self) -> Result<Value, Failure> {
        let mut conn = self.connect().await?;
        let in_recovery = self.in_recovery(&mut conn).await?;
        let read = self.failed("reading the status");
        let lsns = if in_recovery {
            "SELECT pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text"
        } else {
            "SELECT pg_current_wal_lsn()::text, NULL::text"
        };
        let row = conn.fetch_one(lsns).await.map_err(&read)?;
        let current_lsn: Option<String> = row.try_get(0).map_err(&read)?;
        let replay_lsn: Option<String> = row.try_get(1).map_err(&read)?;
        let row = conn
            .fetch_one("SELECT current_setting('default_transaction_read_only') = 'on'")
            .await
            .map_err(&read)?;
        let read_only: bool = row.try_get(0).map_err(&read)?;
        let (bytes, seconds) = match self.lag(&mut conn).await? {
            Some(lag) if in_recovery => (lag.bytes, lag.seconds),
            _ => (0, 0.0),
        };
        let standbys = if in_recovery {
            Vec::new()
        } else {
            conn.fetch_all(
                "SELECT application_name, host(client_addr), state, sync_state, \
                 sent_lsn::text, replay_lsn::text, \
                 pg_wal_lsn_diff(pg_current_wal_lsn(), COALESCE(replay_lsn, '0/0'::pg_lsn))::int8, \
                 COALESCE(extract(epoch FROM replay_lag), 0)::float8 \
                 FROM pg_stat_replication ORDER BY application_name, pid",
            )
            .await
            .map_err(self.failed("reading pg_stat_replication"))?
            .iter()
            .map(standby)
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.failed("reading pg_stat_replication"))?
        };
        let _ = conn.close().await;
        Ok(json!({
            "role": role(in_recovery),
            "in_recovery": in_recovery,
            "read_only": read_only,
            "current_lsn": current_lsn,
            "replay_lsn": replay_lsn,
            "replay_lag_bytes": bytes,
            "replay_lag_seconds": seconds,
            "standbys": standbys,
        }))
    }

    /// The server's configured `default_transaction_read_only` as this
    /// session sees it (`reset_val`: what `RESET` would go back to).
    async fn configured_read_only(&self, conn: &mut PgConnection) -> Result<bool, Failure> {
        let row = conn
            .fetch_one(
                "SELECT reset_val = 'on' FROM pg_settings \
                 WHERE name = 'default_transaction_read_only'",
            )
            .await
            .map_err(self.failed("reading default_transaction_read_only"))?;
        row.try_get(0).map_err(self.failed("reading default_transaction_read_only"))
    }

    /// `ALTER SYSTEM` for `default_transaction_read_only`, reloaded, and
    /// waited for until this session sees it. Returns the value before.
    async fn set_read_only(&self, conn: &mut PgConnection, on: bool) -> Result<bool, Failure> {
        let was = self.configured_read_only(conn).await?;
        let alter = if on {
            "ALTER SYSTEM SET default_transaction_read_only = on"
        } else {
            "ALTER SYSTEM RESET default_transaction_read_only"
        };
        let doing = if on { "fencing (ALTER SYSTEM)" } else { "unfencing (ALTER SYSTEM)" };
        // This session stays writable whatever the server's default is.
        conn.execute("SET default_transaction_read_only = off")
            .await
            .map_err(self.failed(doing))?;
        conn.execute(alter).await.map_err(|e| {
            let mut f = Failure::query(&self.label, doing, e);
            if f.error.contains("42501") {
                f.error.push_str("; the connection's user must be a superuser or be granted ALTER SYSTEM ON PARAMETER default_transaction_read_only");
            }
            f
        })?;
        conn.execute("SELECT pg_reload_conf()").await.map_err(self.failed("reloading"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.configured_read_only(conn).await? != on {
            if Instant::now() >= deadline {
                return Err(Failure::retryable(format!(
                    "{}: the reloaded configuration did not take effect within 10 s",
                    self.label
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(was)
    }

    async fn fence(&self) -> Result<Value, Failure> {
        let mut conn = self.connect().await?;
        let in_recovery = self.in_recovery(&mut conn).await?;
        let was = self.set_read_only(&mut conn, true).await?;
        // Sessions opened before the reload may hold writable transactions
        // (or a session-level setting): end every other client session.
        let row = conn
            .fetch_one(
                "SELECT COALESCE(array_agg(pid ORDER BY pid) \
                 FILTER (WHERE pg_terminate_backend(pid)), '{}') FROM pg_stat_activity \
                 WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
            )
            .await
            .map_err(self.failed("terminating client sessions"))?;
        let terminated: Vec<i32> =
            row.try_get(0).map_err(self.failed("terminating client sessions"))?;
        let _ = conn.close().await;
        Ok(json!({
            "role": role(in_recovery),
            "read_only": true,
            "was_read_only": was,
            "changed": !was,
            "terminated_sessions": terminated,
        }))
    }

    async fn unfence(&self) -> Result<Value, Failure> {
        let mut conn = self.connect().await?;
        let in_recovery = self.in_recovery(&mut conn).await?;
        let was = self.set_read_only(&mut conn, false).await?;
        let _ = conn.close().await;
        Ok(json!({
            "role": role(in_recovery),
            "read_only": false,
            "was_read_only": was,
            "changed": was,
        }))
    }

    async fn promote(&self) -> Result<Value, Failure> {
        let started = Instant::now();
        let mut conn = self.connect().await?;
        if !self.in_recovery(&mut conn).await? {
            return Err(Failure::fatal(format!(
                "{} is already a primary (not in recovery): refusing to promote it; if an \
                 earlier attempt promoted it, the promotion is done (check with `action: \
                 status`), otherwise point the step at the standby",
                self.label
            )));
        }
        let row = conn
            .fetch_one("SELECT pg_promote(wait => true, wait_seconds => 60)")
            .await
            .map_err(self.failed("promoting (pg_promote)"))?;
        let promoted: bool = row.try_get(0).map_err(self.failed("promoting (pg_promote)"))?;
        if !promoted || self.in_recovery(&mut conn).await? {
            return Err(Failure::retryable(format!(
                "{}: pg_promote() did not take the server out of recovery within 60 s; \
                 check its log",
                self.label
            )));
        }
        let row = conn
            .fetch_one("SELECT pg_current_wal_lsn()::text")
            .await
            .map_err(self.failed("reading the new primary's LSN"))?;
        let lsn: String = row.try_get(0).map_err(self.failed("reading the new primary's LSN"))?;
        let _ = conn.close().await;
        Ok(json!({
            "role": "primary",
            "promoted": true,
            "current_lsn": lsn,
            "took_ms": started.elapsed().as_millis() as u64,
        }))
    }

    async fn query_one(&self, query: &str, values: &[Value]) -> Result<Value, Failure> {
        let mut conn = self.connect().await?;
        let mut tx = conn.begin().await.map_err(self.failed("starting a transaction"))?;
        tx.execute("SET TRANSACTION READ ONLY")
            .await
            .map_err(self.failed("starting a transaction"))?;
        let params = params(values);
        let q = bind_params!(sqlx::query(query), &params);
        let rows: Vec<PgRow> = tx.fetch_all(q).await.map_err(self.failed("running the query"))?;
        let _ = tx.rollback().await;
        let _ = conn.close().await;
        match rows.as_slice() {
            [] => Ok(json!({"found": false, "row": null})),
            [row] => Ok(json!({"found": true, "row": postgres_row(row).map_err(Failure::fatal)?})),
            _ => Err(Failure::fatal(format!(
                "{}: the query returned {} rows; `query_one` takes at most one (add a WHERE \
                 or LIMIT 1)",
                self.label,
                rows.len()
            ))),
        }
    }
}

fn standby(row: &PgRow) -> Result<Value, sqlx::Error> {
    Ok(json!({
        "application_name": row.try_get::<Option<String>, _>(0)?,
        "client_addr": row.try_get::<Option<String>, _>(1)?,
        "state": row.try_get::<Option<String>, _>(2)?,
        "sync_state": row.try_get::<Option<String>, _>(3)?,
        "sent_lsn": row.try_get::<Option<String>, _>(4)?,
        "replay_lsn": row.try_get::<Option<String>, _>(5)?,
        "replay_lag_bytes": row.try_get::<i64, _>(6)?,
        "replay_lag_seconds": row.try_get::<f64, _>(7)?,
    }))
}

impl Failure {
    /// A statement failed: a dropped connection or a server shutting down
    /// may pass on retry; an SQL error (a write refused, no privilege) not.
    fn query(label: &str, doing: &str, e: sqlx::Error) -> Self {
        let retryable = match &e {
            sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => true,
            sqlx::Error::Database(db) => db.code().is_some_and(|c| {
                c.starts_with("08") || c.starts_with("53") || c.starts_with("57P")
            }),
            _ => false,
        };
        Self { error: format!("{label}: {doing}: {}", describe(&e)), retryable }
    }
}

fn describe(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => format!("{} (code {code})", db.message()),
            None => db.message().to_owned(),
        },
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;
