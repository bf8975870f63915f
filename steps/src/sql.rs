//! `sql`: one query against a named connection or a URL, with bound params.

use std::str::FromStr;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection, Either, Executor};

use crate::failure::Failure;
use crate::{AttemptContext, ConfigProblem, Outcome, Step};

mod values;

pub(crate) use values::postgres_row;
use values::sqlite_row;

/// Runs one SQL statement; rows come back as JSON objects.
///
/// The driver is chosen by the URL's scheme: `sqlite:` or `postgres://` /
/// `postgresql://`. A named `connection` must be resolved by the caller
/// (the executor reads `[connections]` in lifeboat.toml) into `url` before
/// the step runs: this crate never reads configuration.
///
/// `params` are bound in order: strings, numbers, booleans and null as such,
/// arrays and objects as their JSON text. Postgres types each placeholder
/// from its value (text for strings and null), so cast where the column is
/// not text: `WHERE id = $1::int`.
///
/// Outputs: `rows` (an array of objects, column name -> JSON value),
/// `rows_affected`, and `rows_truncated` when the rows' JSON exceeded
/// `max_output_bytes` and the rest were not read.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// A connection named under `[connections]` in lifeboat.toml.
    pub connection: Option<String>,
    /// A `sqlite://` or `postgres://` URL (template); exclusive with `connection`.
    pub url: Option<String>,
    /// The statement; use `?`/`$1` placeholders, never templates, for values.
    pub query: String,
    /// Values bound to the placeholders (templates).
    #[serde(default)]
    pub params: Vec<serde_json::Value>,
}

impl Config {
    pub fn compile(&self) -> Vec<ConfigProblem> {
        let mut problems = crate::check_connection_target(
            "sql",
            self.connection.as_ref(),
            self.url.as_ref(),
            &["sqlite:", "postgres://", "postgresql://"],
            "only sqlite: and postgres:// URLs are supported",
        );
        if crate::is_templated(&self.query) {
            problems.push(
                ConfigProblem::new(&["query"], "templates in `query` would allow SQL injection")
                    .with_help("bind values with placeholders and `params: [\"{{inputs.x}}\"]`")
                    .about_template(),
            );
        }
        problems
    }
}

impl Step for Config {
    /// A query that starts `SELECT`, `WITH`, `SHOW` or `EXPLAIN` only reads.
    fn mutates(&self) -> Option<bool> {
        let first = self.query.split_whitespace().next().unwrap_or("").to_ascii_lowercase();
        Some(!matches!(first.as_str(), "select" | "with" | "show" | "explain"))
    }

    crate::connects_by_url!();

    async fn run(&self, ctx: &AttemptContext) -> Outcome {
        let url = match crate::target_url("sql", &self.url, &self.connection) {
            Ok(url) => url,
            Err(unresolved) => return unresolved,
        };
        let work = run_on(url, &self.query, &self.params, ctx.max_output_bytes);
        match ctx.bounded(work).await {
            Ok(Ok(rows)) => Outcome::succeeded(rows.outputs()),
            Ok(Err(failure)) => failure.into_outcome(),
            Err(interrupted) => interrupted.outcome(None, crate::empty_outputs()),
        }
    }
}

/// One statement on the backend `url` names.
async fn run_on(url: &str, sql: &str, values: &[Value], max: usize) -> Result<Rows, Failure> {
    if url.starts_with("sqlite:") {
        run_sqlite(url, sql, values, max).await
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        run_postgres(url, sql, values, max).await
    } else {
        Err(Failure::fatal("only sqlite: and postgres:// URLs are supported"))
    }
}

/// Whether `url` takes a connection and answers `SELECT 1` within
/// `timeout` (`lifeboat doctor`'s check of a `[connections.X]`).
pub(crate) async fn probe(url: &str) -> Result<String, String> {
    run_on(url, "SELECT 1", &[], 1024)
        .await
        .map(|_| "connected, SELECT 1".into())
        .map_err(|f| f.error)
}

impl Failure {
    /// Could not connect: the database may come back (a failover in
    /// progress, a restarting server); a malformed URL will not.
    fn connect(e: sqlx::Error) -> Self {
        let retryable = !matches!(e, sqlx::Error::Configuration(_));
        Self { error: format!("cannot connect: {}", describe(&e)), retryable }
    }

    /// The statement failed: a broken connection, a lock or a serialization
    /// conflict may pass on retry; a SQL error will not.
    fn statement(e: sqlx::Error) -> Self {
        let retryable = match &e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(db) => db.code().is_some_and(|code| is_transient_code(&code)),
            _ => false,
        };
        Self { error: describe(&e), retryable }
    }
}

/// SQLite BUSY/LOCKED (and their extended codes); Postgres connection
/// exceptions (08), serialization failure and deadlock (40001, 40P01),
/// insufficient resources (53) and operator intervention such as a server
/// shutting down (57P01-57P03).
fn is_transient_code(code: &str) -> bool {
    let sqlite_primary = code.parse::<i64>().ok().map(|c| c & 0xff);
    matches!(sqlite_primary, Some(5 | 6))
        || code.starts_with("08")
        || code.starts_with("53")
        || matches!(code, "40001" | "40P01" | "57P01" | "57P02" | "57P03")
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

/// What a statement returned.
struct Rows {
    rows: Vec<Value>,
    affected: u64,
    truncated: bool,
}

impl Rows {
    fn outputs(self) -> Value {
        json!({
            "rows": self.rows,
            "rows_affected": self.affected,
            "rows_truncated": self.truncated,
        })
    }
}

/// Reads results until the end or until the rows' JSON passes `max` bytes.
async fn collect<R, Q>(
    mut stream: BoxStream<'_, Result<Either<Q, R>, sqlx::Error>>,
    max: usize,
    affected: fn(&Q) -> u64,
    to_json: fn(&R) -> Result<Value, String>,
) -> Result<Rows, Failure> {
    let mut out = Rows { rows: Vec::new(), affected: 0, truncated: false };
    // The size of the `rows` array's JSON: brackets, and a comma per row.
    let mut size = 1usize;
    while let Some(item) = stream.next().await {
        match item.map_err(Failure::statement)? {
            Either::Left(result) => out.affected += affected(&result),
            Either::Right(row) => {
                let value = to_json(&row).map_err(Failure::fatal)?;
                size += value.to_string().len() + 1;
                if size > max {
                    out.truncated = true;
                    break;
                }
                out.rows.push(value);
            }
        }
    }
    Ok(out)
}

/// A parameter as bound: JSON scalars keep their type.
pub(crate) enum Param {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

/// `$query` with `$params` (a `&[Param]`) bound in order: one binding for
/// both backends and both kinds that run SQL (`sql`, `postgres`).
macro_rules! bind_params {
    ($query:expr, $params:expr) => {{
        let mut query = $query;
        for param in $params {
            query = match param {
                $crate::sql::Param::Null => query.bind(None::<String>),
                $crate::sql::Param::Bool(b) => query.bind(*b),
                $crate::sql::Param::Int(i) => query.bind(*i),
                $crate::sql::Param::Float(f) => query.bind(*f),
                $crate::sql::Param::Text(s) => query.bind(s.as_str()),
            };
        }
        query
    }};
}
pub(crate) use bind_params;

pub(crate) fn params(values: &[Value]) -> Vec<Param> {
    values
        .iter()
        .map(|v| match v {
            Value::Null => Param::Null,
            Value::Bool(b) => Param::Bool(*b),
            Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => Param::Int(i),
                // Beyond i64 (a u64): its decimal text keeps every digit.
                (None, _) if n.is_u64() => Param::Text(n.to_string()),
                (None, Some(f)) => Param::Float(f),
                (None, None) => Param::Text(n.to_string()),
            },
            Value::String(s) => Param::Text(s.clone()),
            Value::Array(_) | Value::Object(_) => Param::Text(v.to_string()),
        })
        .collect()
}

/// Defines `$name`, running one statement on one backend's connection: the
/// same steps on both (connect, bind `params`, read rows up to `max`,
/// close), only the sqlx types differ.
macro_rules! runner {
    ($name:ident, $options:ty, $connection:ty, $result:ty, $decode:path) => {
        async fn $name(
            url: &str,
            sql: &str,
            values: &[Value],
            max: usize,
        ) -> Result<Rows, Failure> {
            let options = <$options>::from_str(url).map_err(Failure::connect)?;
            let mut conn: $connection = options.connect().await.map_err(Failure::connect)?;
            let params = params(values);
            let query = bind_params!(sqlx::query(sql), &params);
            let rows =
                collect(conn.fetch_many(query), max, |r: &$result| r.rows_affected(), $decode)
                    .await;
            let _ = conn.close().await;
            rows
        }
    };
}

runner!(
    run_sqlite,
    SqliteConnectOptions,
    SqliteConnection,
    sqlx::sqlite::SqliteQueryResult,
    sqlite_row
);
runner!(run_postgres, PgConnectOptions, PgConnection, sqlx::postgres::PgQueryResult, postgres_row);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_probe_connects_and_names_what_failed() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("probe.db");
        std::fs::write(&db, b"").unwrap();
        let url = format!("sqlite://{}", db.display());
        let ok = crate::probe(&url, std::time::Duration::from_secs(5)).await.unwrap();
        assert!(ok.starts_with("connected, SELECT 1 in"), "{ok}");
        let missing = dir.path().join("absent.db");
        let e = crate::probe(
            &format!("sqlite://{}", missing.display()),
            std::time::Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert!(e.starts_with("cannot connect"), "{e}");
        let e = crate::probe("mysql://x", std::time::Duration::from_secs(1)).await.unwrap_err();
        assert!(e.contains("only sqlite: and postgres://"), "{e}");
    }

    #[test]
    fn templated_query_is_rejected() {
        let c: Config =
            serde_saphyr::from_str("url: sqlite://x.db\nquery: select {{inputs.x}}\n").unwrap();
        assert_eq!(c.compile()[0].path, vec!["query"]);
    }

    #[test]
    fn needs_a_target() {
        let c: Config = serde_saphyr::from_str("query: select 1\n").unwrap();
        assert_eq!(c.compile().len(), 1);
    }

    fn ctx() -> AttemptContext {
        AttemptContext::new("run-1", "check_db", 1)
    }

    fn sql(url: &str, query: &str, params: Vec<Value>) -> Config {
        Config { connection: None, url: Some(url.into()), query: query.into(), params }
    }

    fn success(outcome: Outcome) -> Value {
        match outcome {
            Outcome::Succeeded { outputs } => outputs,
            other => panic!("expected success, got {other:?}"),
        }
    }

    /// A new SQLite database file in a temp dir, with table `sites`.
    async fn database() -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("estate.db").display());
        let create = sql(
            &url,
            "CREATE TABLE sites (name TEXT PRIMARY KEY, weight INTEGER, lag REAL, \
             primary_site BOOLEAN, note TEXT, blob BLOB)",
            vec![],
        );
        success(create.run(&ctx()).await);
        (dir, url)
    }

    #[tokio::test]
    async fn sqlite_insert_binds_params_in_order_and_select_returns_rows() {
        let (_dir, url) = database().await;
        let insert = sql(
            &url,
            "INSERT INTO sites (name, weight, lag, primary_site, note) VALUES (?, ?, ?, ?, ?)",
            vec![json!("dc01"), json!(50), json!(0.25), json!(true), Value::Null],
        );
        let out = success(insert.run(&ctx()).await);
        assert_eq!(out, json!({"rows": [], "rows_affected": 1, "rows_truncated": false}));

        let select = sql(
            &url,
            "SELECT name, weight, lag, primary_site, note FROM sites WHERE name = ?",
            vec![json!("dc01")],
        );
        let out = success(select.run(&ctx()).await);
        assert_eq!(
            out["rows"],
            json!([{"name": "dc01", "weight": 50, "lag": 0.25, "primary_site": true, "note": null}])
        );
    }

    #[tokio::test]
    async fn params_are_bound_never_spliced_into_the_query() {
        let (_dir, url) = database().await;
        let hostile = "x'); DROP TABLE sites; --";
        let insert = sql(&url, "INSERT INTO sites (name) VALUES (?)", vec![json!(hostile)]);
        success(insert.run(&ctx()).await);
        let out = success(sql(&url, "SELECT name FROM sites", vec![]).run(&ctx()).await);
        assert_eq!(out["rows"], json!([{"name": hostile}]));
    }

    #[tokio::test]
    async fn update_reports_rows_affected() {
        let (_dir, url) = database().await;
        for name in ["dc01", "dc02", "dc03"] {
            success(
                sql(&url, "INSERT INTO sites (name, weight) VALUES (?, 10)", vec![json!(name)])
                    .run(&ctx())
                    .await,
            );
        }
        let update =
            sql(&url, "UPDATE sites SET weight = ? WHERE name <> ?", vec![json!(0), json!("dc02")]);
        assert_eq!(success(update.run(&ctx()).await)["rows_affected"], json!(2));
    }

    #[tokio::test]
    async fn blobs_come_back_as_hex_and_json_params_as_text() {
        let (_dir, url) = database().await;
        let insert = sql(
            &url,
            "INSERT INTO sites (name, note, blob) VALUES (?, ?, X'00ff10')",
            vec![json!("dc01"), json!({"k": [1, 2]})],
        );
        success(insert.run(&ctx()).await);
        let out = success(sql(&url, "SELECT note, blob FROM sites", vec![]).run(&ctx()).await);
        assert_eq!(out["rows"], json!([{"note": "{\"k\":[1,2]}", "blob": "\\x00ff10"}]));
    }

    #[tokio::test]
    async fn rows_are_bounded_by_max_output_bytes() {
        let (_dir, url) = database().await;
        let fill = sql(
            &url,
            "INSERT INTO sites (name) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100) \
             SELECT 'site-' || i FROM n",
            vec![],
        );
        assert_eq!(success(fill.run(&ctx()).await)["rows_affected"], json!(100));
        let mut c = ctx();
        c.max_output_bytes = 200;
        let out = success(sql(&url, "SELECT name FROM sites", vec![]).run(&c).await);
        assert_eq!(out["rows_truncated"], json!(true));
        let rows = out["rows"].as_array().unwrap();
        assert!(!rows.is_empty() && rows.len() < 100, "{} rows", rows.len());
        assert!(out["rows"].to_string().len() <= 200);
    }

    #[tokio::test]
    async fn sql_errors_are_not_retryable() {
        let (_dir, url) = database().await;
        let outcome = sql(&url, "SELEC name FROM sites", vec![]).run(&ctx()).await;
        let Outcome::Failed { error, retryable, .. } = outcome else { panic!("{outcome:?}") };
        assert!(error.contains("syntax error"), "{error}");
        assert!(!retryable);

        let outcome =
            sql(&url, "INSERT INTO sites (name) VALUES (?)", vec![json!("a")]).run(&ctx()).await;
        assert!(outcome.is_success());
        let outcome =
            sql(&url, "INSERT INTO sites (name) VALUES (?)", vec![json!("a")]).run(&ctx()).await;
        let Outcome::Failed { error, retryable, .. } = outcome else { panic!("{outcome:?}") };
        assert!(error.contains("UNIQUE constraint failed"), "{error}");
        assert!(!retryable);
    }

    #[tokio::test]
    async fn unreachable_database_is_retryable() {
        let outcome =
            sql("sqlite:///nonexistent-dir/lifeboat/x.db", "SELECT 1", vec![]).run(&ctx()).await;
        let Outcome::Failed { error, retryable, .. } = outcome else { panic!("{outcome:?}") };
        assert!(error.starts_with("cannot connect: "), "{error}");
        assert!(retryable);

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let url = format!("postgres://lifeboat@127.0.0.1:{port}/app");
        let outcome = sql(&url, "SELECT 1", vec![]).run(&ctx()).await;
        let Outcome::Failed { error, retryable, .. } = outcome else { panic!("{outcome:?}") };
        assert!(error.starts_with("cannot connect: "), "{error}");
        assert!(retryable);
    }

    #[tokio::test]
    async fn an_unresolved_connection_name_fails_clearly() {
        let c = Config {
            connection: Some("appdb".into()),
            url: None,
            query: "SELECT 1".into(),
            params: vec![],
        };
        let Outcome::Failed { error, retryable, .. } = c.run(&ctx()).await else { panic!() };
        assert!(error.starts_with("connection `appdb` was not resolved to a URL"), "{error}");
        assert!(!retryable);
    }

    #[tokio::test]
    async fn in_memory_sqlite_works_without_a_file() {
        let out = success(
            sql(
                "sqlite::memory:",
                "SELECT 1 AS one, 'two' AS two, NULL AS three, 2.5 AS four",
                vec![],
            )
            .run(&ctx())
            .await,
        );
        assert_eq!(out["rows"], json!([{"one": 1, "two": "two", "three": null, "four": 2.5}]));
    }

    /// Runs against a real server when `LIFEBOAT_TEST_POSTGRES_URL` is set
    /// (CI with Postgres); otherwise there is nothing to connect to.
    #[tokio::test]
    async fn postgres_round_trip_when_a_server_is_given() {
        let Ok(url) = std::env::var("LIFEBOAT_TEST_POSTGRES_URL") else {
            eprintln!("LIFEBOAT_TEST_POSTGRES_URL not set: skipping the Postgres round trip");
            return;
        };
        let query = "SELECT $1::text AS t, $2::int8 AS i, $3::float8 AS f, $4::bool AS b, \
                     $5::text AS n, 12345.678::numeric AS num, '{\"a\": 1}'::jsonb AS j, \
                     '2024-02-29 01:02:03.5+00'::timestamptz AS ts, DATE '2024-02-29' AS d, \
                     '00112233-4455-6677-8899-aabbccddeeff'::uuid AS u, '\\x00ff'::bytea AS by";
        let c =
            sql(&url, query, vec![json!("dc01"), json!(7), json!(0.5), json!(true), Value::Null]);
        let out = success(c.run(&ctx()).await);
        assert_eq!(
            out["rows"],
            json!([{
                "t": "dc01", "i": 7, "f": 0.5, "b": true, "n": null, "num": "12345.678",
                "j": {"a": 1}, "ts": "2024-02-29T01:02:03.5Z", "d": "2024-02-29",
                "u": "00112233-4455-6677-8899-aabbccddeeff", "by": "\\x00ff",
            }])
        );
        let c = sql(&url, "SELECT '1 day'::interval AS iv", vec![]);
        assert_eq!(
            c.run(&ctx()).await,
            Outcome::fatal(
                "column `iv` has type INTERVAL, which lifeboat cannot turn into JSON; \
                 cast it in the query, e.g. `iv::text`"
            )
        );
        let Outcome::Failed { error, retryable, .. } =
            sql(&url, "SELECT 1/0", vec![]).run(&ctx()).await
        else {
            panic!()
        };
        assert_eq!(error, "division by zero (code 22012)");
        assert!(!retryable);
        let c = sql(
            &url,
            "WITH t(x) AS (VALUES (1), (2), (3)) SELECT x FROM t WHERE x >= $1::int",
            vec![json!("2")],
        );
        assert_eq!(success(c.run(&ctx()).await)["rows"], json!([{"x": 2}, {"x": 3}]));
    }
}
