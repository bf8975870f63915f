//! The database under test: which backend, a fresh Postgres database per
//! test, and raw statements and queries that bypass lifeboat (tamper tests,
//! reads of recorded state).

use std::process::Command;

use super::sandbox::Sandbox;

/// `LIFEBOAT_E2E_BACKEND=postgres` (set by scripts/test.sh for its second
/// pass) runs every end-to-end test against Postgres instead of SQLite.
pub fn on_postgres() -> bool {
    std::env::var("LIFEBOAT_E2E_BACKEND").is_ok_and(|b| b == "postgres")
}

/// A fresh database on the test Postgres server; its URL.
pub(super) fn postgres_database(name: &str) -> String {
    let admin = std::env::var("LIFEBOAT_TEST_POSTGRES_URL")
        .expect("LIFEBOAT_E2E_BACKEND=postgres needs LIFEBOAT_TEST_POSTGRES_URL (scripts/test.sh sets both)");
    let db: String = format!("e2e_{}_{}", name, std::process::id())
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
        .collect();
    for sql in [format!("DROP DATABASE IF EXISTS {db}"), format!("CREATE DATABASE {db}")] {
        let out =
            Command::new("psql").arg(&admin).args(["-qAt", "-c", &sql]).output().expect("run psql");
        assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
    }
    lifeboat_orchestrator::store::postgres::with_database(&admin, &db)
}

/// Connect options for lifeboat's schema of a Postgres URL (its tables are
/// not in `public`).
fn pg_options(url: &str) -> sqlx::postgres::PgConnectOptions {
    lifeboat_orchestrator::store::postgres::connect_options(url).expect("a Postgres URL")
}

impl Sandbox {
    /// Runs one SQL statement straight on the sandbox's database, bypassing
    /// lifeboat (to tamper with it); the number of rows it touched.
    pub fn sql(&self, statement: &str) -> u64 {
        use sqlx::Connection;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        runtime.block_on(async {
            let done = if self.url.starts_with("sqlite:") {
                let mut conn =
                    sqlx::SqliteConnection::connect(&self.url).await.expect("open sqlite");
                sqlx::query(statement).execute(&mut conn).await.map(|r| r.rows_affected())
            } else {
                let mut conn = sqlx::PgConnection::connect_with(&pg_options(&self.url))
                    .await
                    .expect("connect postgres");
                sqlx::query(statement).execute(&mut conn).await.map(|r| r.rows_affected())
            };
            done.unwrap_or_else(|e| panic!("{statement}: {e}"))
        })
    }

    /// Rows of a query straight on the sandbox's database, every column as
    /// text (write `CAST(x AS TEXT)` for non-text columns; both backends).
    pub fn rows(&self, query: &str) -> Vec<Vec<Option<String>>> {
        use sqlx::Connection;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        runtime.block_on(async {
            if self.url.starts_with("sqlite:") {
                let mut conn =
                    sqlx::SqliteConnection::connect(&self.url).await.expect("open sqlite");
                as_text(&sqlx::query(query).fetch_all(&mut conn).await, query)
            } else {
                let mut conn = sqlx::PgConnection::connect_with(&pg_options(&self.url))
                    .await
                    .expect("connect postgres");
                as_text(&sqlx::query(query).fetch_all(&mut conn).await, query)
            }
        })
    }
}

/// An event inserted in a transaction still open: its id is taken, its row
/// not yet visible (a slow writer). `commit` makes it visible.
pub struct OpenEvent {
    id: i64,
    commit: std::sync::mpsc::Sender<()>,
    done: std::thread::JoinHandle<()>,
}

impl OpenEvent {
    /// Commits the transaction; the event's id.
    pub fn commit(self) -> i64 {
        self.commit.send(()).expect("the transaction's thread waits");
        self.done.join().expect("commit the open transaction");
        self.id
    }
}

impl Sandbox {
    /// Postgres only: a `status_update` event of `run` inserted in a
    /// transaction left open until `OpenEvent::commit`.
    pub fn event_in_open_transaction(&self, run: &str) -> OpenEvent {
        let (id_tx, id_rx) = std::sync::mpsc::channel();
        let (commit, commit_rx) = std::sync::mpsc::channel::<()>();
        let (options, run) = (pg_options(&self.url), run.to_string());
        let done = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(async move {
                use sqlx::Connection;
                let mut conn =
                    sqlx::PgConnection::connect_with(&options).await.expect("connect postgres");
                let mut tx = conn.begin().await.expect("begin");
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO events (run_id, at, kind) VALUES ($1, $2, 'status_update') RETURNING id",
                )
                .bind(&run)
                .bind(chrono::Utc::now().timestamp_millis())
                .fetch_one(&mut *tx)
                .await
                .expect("insert an event");
                id_tx.send(id).expect("the test waits for the id");
                let _ = commit_rx.recv();
                tx.commit().await.expect("commit");
            });
        });
        OpenEvent { id: id_rx.recv().expect("the open event's id"), commit, done }
    }
}

/// Every column of every row as text, on either backend.
fn as_text<R>(rows: &Result<Vec<R>, sqlx::Error>, query: &str) -> Vec<Vec<Option<String>>>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let rows = rows.as_ref().unwrap_or_else(|e| panic!("{query}: {e}"));
    rows.iter()
        .map(|r| {
            (0..r.len()).map(|i| r.try_get::<Option<String>, _>(i).expect("text column")).collect()
        })
        .collect()
}
