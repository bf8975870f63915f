//! History for the `history` scenario of `api.rs`: copies of one real
//! finished run, written straight into the database with `INSERT … SELECT`
//! over a counter (the API creates a few hundred runs a second; a million
//! would take an hour).
//!
//! Every row of the template run (`runs`, `steps`, `attempts`, `events`,
//! `audit`) is copied once per seeded run, with a new UUIDv7-shaped id
//! whose time part is the copy's creation time, and every `*_at` time
//! shifted so that the copies are spaced [`SPACING_MS`] apart and all older
//! than the template. Columns are read from the database, so a column added
//! by a later migration is copied as it is. The copied audit entries break
//! the hash chain (the database is thrown away after the benchmark).

use std::time::{Duration, Instant};

use sqlx::{Connection, Row};

/// Time between two seeded runs' creation.
const SPACING_MS: i64 = 10;
/// Seeded runs per transaction.
const BATCH: u64 = 100_000;
/// The tables holding a run's rows, parents first, with the column naming the run.
const TABLES: [(&str, &str); 5] = [
    ("runs", "id"),
    ("steps", "run_id"),
    ("attempts", "run_id"),
    ("events", "run_id"),
    ("audit", "run_id"),
];

/// Where to seed: a SQLite file, or a Postgres database and schema.
pub enum Target<'a> {
    Sqlite { url: &'a str },
    Postgres { url: &'a str, schema: &'a str },
}

enum Conn {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl Conn {
    async fn execute(&mut self, sql: &str) -> u64 {
        let done = match self {
            Conn::Sqlite(c) => sqlx::raw_sql(sql).execute(c).await.map(|r| r.rows_affected()),
            Conn::Postgres(c) => sqlx::raw_sql(sql).execute(c).await.map(|r| r.rows_affected()),
        };
        done.unwrap_or_else(|e| panic!("seeding history: {e}\n{sql}"))
    }

    async fn strings(&mut self, sql: &str) -> Vec<String> {
        match self {
            Conn::Sqlite(c) => sqlx::query(sql)
                .fetch_all(c)
                .await
                .map(|rows| rows.iter().map(|r| r.get::<String, _>(0)).collect::<Vec<_>>()),
            Conn::Postgres(c) => sqlx::query(sql)
                .fetch_all(c)
                .await
                .map(|rows| rows.iter().map(|r| r.get::<String, _>(0)).collect::<Vec<_>>()),
        }
        .unwrap_or_else(|e| panic!("seeding history: {e}\n{sql}"))
    }

    async fn integer(&mut self, sql: &str) -> i64 {
        match self {
            Conn::Sqlite(c) => sqlx::query_scalar(sql).fetch_one(c).await,
            Conn::Postgres(c) => sqlx::query_scalar(sql).fetch_one(c).await,
        }
        .unwrap_or_else(|e| panic!("seeding history: {e}\n{sql}"))
    }
}

/// Seeds `count` copies of the finished run `template`; returns how long it took.
pub fn seed(target: &Target<'_>, template: &str, count: u64) -> Duration {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(seed_async(target, template, count))
}

async fn seed_async(target: &Target<'_>, template: &str, count: u64) -> Duration {
    let started = Instant::now();
    let mut conn = match target {
        Target::Sqlite { url } => {
            Conn::Sqlite(sqlx::SqliteConnection::connect(url).await.expect("open SQLite"))
        }
        Target::Postgres { url, schema } => {
            let mut c = sqlx::PgConnection::connect(url).await.expect("connect to Postgres");
            sqlx::raw_sql(&format!("SET search_path TO {schema}"))
                .execute(&mut c)
                .await
                .expect("search_path");
            Conn::Postgres(c)
        }
    };
    assert!(!template.contains('\''), "run id {template:?}");
    let created =
        conn.integer(&format!("SELECT created_at FROM runs WHERE id = '{template}'")).await;
    let mut selects = Vec::new();
    let mut expected = Vec::new();
    for (table, key) in TABLES {
        let mine = format!("SELECT COUNT(*) FROM {table} WHERE {key} = '{template}'");
        let all = conn.integer(&format!("SELECT COUNT(*) FROM {table}")).await;
        expected.push((table, all + conn.integer(&mine).await * count as i64));
        let columns = match target {
            Target::Sqlite { .. } => {
                conn.strings(&format!("SELECT name FROM pragma_table_info('{table}') ORDER BY cid"))
                    .await
            }
            Target::Postgres { schema, .. } => {
                conn.strings(&format!(
                    "SELECT column_name::text FROM information_schema.columns \
                     WHERE table_schema = '{schema}' AND table_name = '{table}' ORDER BY ordinal_position"
                ))
                .await
            }
        };
        selects.push(copy_sql(target, table, key, &columns, template, created));
    }
    if let Target::Postgres { .. } = target {
        // The store writes audit ids itself (the hash chain numbers them),
        // so the sequence the copies draw from may lag behind.
        for table in ["events", "audit"] {
            conn.integer(&format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), \
                 (SELECT COALESCE(MAX(id), 0) + 1 FROM {table}), false)"
            ))
            .await;
        }
    }
    let mut lo = 1;
    while lo <= count {
        let hi = (lo + BATCH - 1).min(count);
        conn.execute("BEGIN").await;
        for sql in &selects {
            let sql = sql.replace("{lo}", &lo.to_string()).replace("{hi}", &hi.to_string());
            conn.execute(&sql).await;
        }
        conn.execute("COMMIT").await;
        lo = hi + 1;
    }
    for (table, rows) in expected {
        let now = conn.integer(&format!("SELECT COUNT(*) FROM {table}")).await;
        assert_eq!(now, rows, "seeded rows of `{table}`");
    }
    match target {
        // Leave no multi-gigabyte WAL for serve's first checkpoint to pay.
        Target::Sqlite { .. } => conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").await,
        // As autovacuum would have by the time a real database held this history.
        Target::Postgres { .. } => conn.execute("ANALYZE").await,
    };
    started.elapsed()
}

/// `INSERT INTO table … SELECT` the template's rows once per `n.i` in
/// `{lo}..={hi}` (placeholders filled per batch).
fn copy_sql(
    target: &Target<'_>,
    table: &str,
    key: &str,
    columns: &[String],
    template: &str,
    created: i64,
) -> String {
    // Copy i is created (count - i + 1) spacings before the template; the
    // count is not known here, so copies go back from `created` by i
    // spacings instead (the oldest is the last one written: ids stay unique
    // because the counter is in them too).
    let offset = format!("(-n.i * {SPACING_MS})");
    let ts = format!("({created} + {offset})");
    let id = match target {
        Target::Sqlite { .. } => {
            format!("printf('%08x-%04x-7000-8000-%012x', {ts} >> 16, {ts} & 65535, n.i)")
        }
        Target::Postgres { .. } => format!(
            "lpad(to_hex({ts} >> 16), 8, '0') || '-' || lpad(to_hex({ts} & 65535), 4, '0') \
             || '-7000-8000-' || lpad(to_hex(n.i), 12, '0')"
        ),
    };
    let mut names = Vec::new();
    let mut values = Vec::new();
    for c in columns {
        let value = match c.as_str() {
            // Generated keys of the append-only tables.
            "id" if table != "runs" => continue,
            "id" | "run_id" | "root_run_id" => id.clone(),
            c if c == "at" || c.ends_with("_at") => format!("t.{c} + {offset}"),
            c => format!("t.{c}"),
        };
        names.push(c.clone());
        values.push(value);
    }
    format!(
        "INSERT INTO {table} ({}) \
         WITH RECURSIVE n(i) AS (SELECT CAST({{lo}} AS BIGINT) UNION ALL SELECT i + 1 FROM n WHERE i < {{hi}}) \
         SELECT {} FROM n, {table} AS t WHERE t.{key} = '{template}'",
        names.join(", "),
        values.join(", ")
    )
}

/// A direct connection for what the benchmark must not ask the API during a
/// measurement: `GET /api/v1/runs/{id}` resolves id prefixes with
/// `substr(id, 1, n)`, a scan of every run, so polling runs through it
/// would load the server in proportion to history.
pub struct Db {
    runtime: tokio::runtime::Runtime,
    conn: Conn,
}

impl Db {
    pub fn open(target: &Target<'_>) -> Db {
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let conn = runtime.block_on(async {
            match target {
                Target::Sqlite { url } => {
                    Conn::Sqlite(sqlx::SqliteConnection::connect(url).await.expect("open SQLite"))
                }
                Target::Postgres { url, schema } => {
                    let mut c = sqlx::PgConnection::connect(url).await.expect("connect");
                    sqlx::raw_sql(&format!("SET search_path TO {schema}"))
                        .execute(&mut c)
                        .await
                        .expect("search_path");
                    Conn::Postgres(c)
                }
            }
        });
        Db { runtime, conn }
    }

    /// Runs not ended (the predicate of the `runs_claimable` partial index).
    pub fn active(&mut self) -> i64 {
        let sql = "SELECT COUNT(*) FROM runs WHERE status IN ('queued', 'running', 'waiting', 'rolling_back')";
        self.runtime.block_on(self.conn.integer(sql))
    }

    /// The latest `finished_at` (unix ms) of `workflow`'s runs created since `since`.
    pub fn last_finished(&mut self, workflow: &str, since: i64) -> i64 {
        let sql = format!(
            "SELECT COALESCE(MAX(finished_at), 0) FROM runs WHERE workflow = '{workflow}' AND created_at >= {since}"
        );
        self.runtime.block_on(self.conn.integer(&sql))
    }
}
