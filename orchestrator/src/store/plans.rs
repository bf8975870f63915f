//! The query plans of the store's hot queries, on every backend: each query
//! is explained with the very SQL text the store runs (its named constant),
//! and a plan that reads a table's history fails the test. The plans are
//! committed in docs/query-plans.md, which a test keeps current
//! (`LIFEBOAT_BLESS=1` rewrites it, as for workflows/schema.json).
//!
//! What "reads history" means:
//! - SQLite (`EXPLAIN QUERY PLAN`): a `SCAN` of a table, or of an index that
//!   is not partial (a partial index holds only active runs, pending rows…).
//!   `SEARCH` (an index range or key) is fine.
//! - Postgres (`EXPLAIN` of the generic plan, `enable_seqscan = off`): a `Seq
//!   Scan`, or an index scan with no `Index Cond` over an index that is not
//!   partial. The test database is empty, and on tiny tables Postgres rightly
//!   prefers a sequential scan; with seq scans disabled the planner still
//!   picks one exactly when no index can serve the query, so the test asks
//!   "is there an index for this", which holds whatever the data.
//! - A query marked `ordered` walks an index (or the table, by its integer
//!   key) in its `ORDER BY` order and its `LIMIT` stops the walk: a scan is
//!   fine there, a sort (which would read every match first) is not.
//!
//! Adding a query: one line in `shared`, `sqlite_only` or `postgres_only`.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use sqlx::Row;

use super::{RunFilter, RunStatus, apply, audit, history, ids, postgres, reads, sqlite};

/// One hot query: a name for the doc and the SQL the store runs.
struct Hot {
    name: String,
    sql: String,
    /// A walk in `ORDER BY` order that the `LIMIT` stops (see the module doc).
    ordered: bool,
    /// Postgres parameter types where it cannot infer them from the text
    /// (the store's driver sends them with the values).
    pg_types: Option<&'static str>,
}

fn hot(name: &str, sql: &str) -> Hot {
    Hot { name: name.into(), sql: sql.into(), ordered: false, pg_types: None }
}

impl Hot {
    fn ordered(self) -> Hot {
        Hot { ordered: true, ..self }
    }
    fn pg_types(self, types: &'static str) -> Hot {
        Hot { pg_types: Some(types), ..self }
    }
}

/// The hot queries whose text is the same on both backends.
fn shared() -> Vec<Hot> {
    let mut all = vec![
        hot("dedupe check on run creation", apply::ACTIVE_WITH_DEDUPE_KEY),
        hot(
            "active run of a concurrency key (on_conflict: skip)",
            apply::ACTIVE_WITH_CONCURRENCY_KEY,
        ),
        hot("schedule tick fired", apply::TICK_FIRED),
        hot("audit chain head (every append)", audit::LAST).ordered(),
        hot("lease renewal", apply::RENEW),
        hot("worker heartbeat", apply::HEARTBEAT),
        hot("request done", apply::REQUEST_DONE),
        hot("wake a run", apply::WAKE),
        hot("release in a commit", apply::RELEASE_IN_COMMIT).pg_types("bigint, text"),
        hot("next timer of an idle worker", reads::NEXT_WAKE_SQL),
        hot("run by id", reads::RUN),
        hot("run id by prefix", ids::BY_PREFIX),
        hot("steps of a run", reads::STEPS),
        hot("attempts of a run", reads::ATTEMPTS),
        hot("events of a run after an id", reads::EVENTS),
        hot("every run's events after an id (event stream)", reads::EVENTS_AFTER).ordered(),
        hot("newest event id (event stream start)", reads::LAST_EVENT_ID),
        hot("open requests of a run", reads::OPEN_REQUESTS),
        hot("outbox of a run", reads::OUTBOX),
        hot("live workers", reads::WORKERS),
        hot("leases held (workers)", reads::LEASES),
        hot("schedule last tick", reads::LAST_TICK),
        hot("run counts (metrics)", reads::RUN_COUNTS),
        hot("outbox backlog (metrics)", reads::OUTBOX_BACKLOG),
        hot("audit page", reads::AUDIT_LIST).ordered(),
        hot("drill history", reads::DRILLS).ordered(),
        hot("drill history of a workflow", reads::DRILLS_OF).ordered(),
        hot("drill freshness of a workflow", reads::DRILL_FRESHNESS),
        hot("record a drill's freshness (with its verdict)", apply::MARK_DRILL)
            .pg_types("text, text, bigint"),
        hot("claim a drill's overdue period", apply::CLAIM_PERIOD),
        hot("last successful runs of a mode (plan)", reads::RECOVERY_RUNS).ordered(),
        hot("their steps that succeeded (plan)", reads::RECOVERY_STEPS),
    ];
    for (status, workflow, before) in [
        (false, false, false),
        (true, false, false),
        (false, true, false),
        (true, true, false),
        (false, false, true),
        (true, false, true),
        (false, true, true),
        (true, true, true),
    ] {
        let filter = RunFilter {
            status: status.then_some(RunStatus::Failed),
            workflow: workflow.then(|| "wf".into()),
            limit: None,
            before: before.then(|| "r".into()),
            ..RunFilter::default()
        };
        let by: Vec<&str> = [(status, "status"), (workflow, "workflow"), (before, "cursor")]
            .iter()
            .filter_map(|(on, what)| on.then_some(*what))
            .collect();
        let name = match by.is_empty() {
            true => "run list".to_string(),
            false => format!("run list by {}", by.join(", ")),
        };
        all.push(Hot { name, sql: reads::runs_sql(&filter), ordered: true, pg_types: None });
    }
    all
}

fn sqlite_only() -> Vec<Hot> {
    vec![
        hot("claim due runs", sqlite::CLAIM),
        hot("release", sqlite::RELEASE),
        hot("lease owner (fencing a commit)", apply::LEASE_OWNER),
        hot("pending (steps waiting for people)", sqlite::PENDING_PEOPLE),
        hot("outbox claim (dispatcher)", sqlite::OUTBOX_CLAIM),
    ]
}

fn postgres_only() -> Vec<Hot> {
    vec![
        hot("claim due runs", postgres::CLAIM),
        hot("release", postgres::RELEASE).pg_types("bigint, text, text"),
        hot("lease owner (fencing a commit)", postgres::write::LEASE_OWNER_FOR_UPDATE),
        hot("pending (steps waiting for people)", postgres::PENDING_PEOPLE),
        hot("pending: their runs", postgres::RUNS_BY_IDS),
        hot("outbox claim (dispatcher)", postgres::OUTBOX_CLAIM),
    ]
}

/// A query's plan as text, and what in it reads history.
struct Explained {
    plan: String,
    problems: Vec<String>,
}

async fn explain_sqlite(conn: &mut sqlx::SqliteConnection, hot: &Hot) -> Explained {
    let partial: BTreeSet<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND sql LIKE '% WHERE %'",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap()
    .into_iter()
    .collect();
    // Unbound parameters are NULL to SQLite; the plan does not depend on them.
    let rows = sqlx::query(&format!("EXPLAIN QUERY PLAN {}", hot.sql))
        .fetch_all(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", hot.name));
    let mut depth = std::collections::HashMap::new();
    let (mut plan, mut problems) = (String::new(), Vec::new());
    for row in &rows {
        let (id, parent, detail): (i64, i64, String) = (row.get(0), row.get(1), row.get(3));
        let d = depth.get(&parent).map_or(0, |d| d + 1);
        depth.insert(id, d);
        writeln!(plan, "{}{detail}", "  ".repeat(d)).unwrap();
        let scan = detail.starts_with("SCAN ");
        let index = detail.split(" INDEX ").nth(1).and_then(|s| s.split_whitespace().next());
        let sorts = detail.starts_with("USE TEMP B-TREE FOR ORDER BY");
        match (scan, index) {
            (true, Some(index)) if partial.contains(index) => {}
            (true, _) if hot.ordered => {}
            (true, _) => problems.push(detail.clone()),
            _ if sorts && hot.ordered => problems.push(detail.clone()),
            _ => {}
        }
    }
    Explained { plan, problems }
}

/// The highest `$N` in `sql`: how many parameters it takes.
fn parameters(sql: &str) -> usize {
    let mut most = 0;
    for (i, _) in sql.match_indices('$') {
        let digits: String = sql[i + 1..].chars().take_while(char::is_ascii_digit).collect();
        most = most.max(digits.parse().unwrap_or(0));
    }
    most
}

async fn explain_postgres(conn: &mut sqlx::PgConnection, hot: &Hot) -> Explained {
    let partial: BTreeSet<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         WHERE i.indpred IS NOT NULL",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let n = parameters(&hot.sql);
    let types = hot.pg_types.map(|t| format!("({t})")).unwrap_or_default();
    // Statements of our own by name, never `DEALLOCATE ALL` (sqlx caches its own).
    sqlx::raw_sql(&format!("PREPARE hot {types} AS {}", hot.sql))
        .execute(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", hot.name));
    let args = match n {
        0 => String::new(),
        n => format!("({})", vec!["NULL"; n].join(", ")),
    };
    let lines: Vec<String> = sqlx::raw_sql(&format!("EXPLAIN (COSTS OFF) EXECUTE hot{args}"))
        .fetch_all(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", hot.name))
        .iter()
        .map(|row| row.get(0))
        .collect();
    sqlx::raw_sql("DEALLOCATE hot").execute(&mut *conn).await.unwrap();
    // A node is a line with its attribute lines (`Index Cond: …`) below it.
    let mut nodes: Vec<(String, Vec<String>)> = Vec::new();
    for line in &lines {
        let text = line.trim_start();
        if nodes.is_empty() || text.starts_with("->") {
            nodes.push((text.trim_start_matches("->").trim().to_string(), Vec::new()));
        } else if let Some(node) = nodes.last_mut() {
            node.1.push(text.to_string());
        }
    }
    let mut problems = Vec::new();
    for (node, attributes) in &nodes {
        let index = node
            .split(" using ")
            .nth(1)
            .or_else(|| node.strip_prefix("Bitmap Index Scan on "))
            .and_then(|s| s.split_whitespace().next());
        let has_cond = attributes.iter().any(|a| a.starts_with("Index Cond:"));
        let sorts = node.starts_with("Sort") || node.starts_with("Incremental Sort");
        if node.starts_with("Seq Scan") {
            problems.push(node.clone());
        } else if let (true, Some(index)) = (node.contains("Index"), index) {
            if !has_cond && !partial.contains(index) && !hot.ordered {
                problems.push(node.clone());
            }
        } else if sorts && hot.ordered {
            problems.push(node.clone());
        }
    }
    Explained { plan: lines.join("\n") + "\n", problems }
}

/// The doc section of one backend: each query, its SQL and its plan; and
/// every query whose plan reads history.
fn section(title: &str, explained: &[(&Hot, Explained)]) -> (String, Vec<String>) {
    let mut doc = format!("## {title}\n");
    let mut failures = Vec::new();
    for (hot, e) in explained {
        let sql = hot.sql.split_whitespace().collect::<Vec<_>>().join(" ");
        write!(doc, "\n### {}\n\n```sql\n{sql}\n```\n\n```text\n{}```\n", hot.name, e.plan)
            .unwrap();
        for p in &e.problems {
            failures.push(format!("{title}, {}: reads history: `{p}`\n{}", hot.name, e.plan));
        }
    }
    (doc, failures)
}

async fn sqlite_section() -> (String, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let store =
        sqlite::SqliteStore::open(&format!("sqlite://{}", dir.path().join("p.db").display()))
            .await
            .unwrap();
    let mut conn = store.pool.acquire().await.unwrap();
    let queries: Vec<Hot> = shared().into_iter().chain(sqlite_only()).collect();
    let mut explained = Vec::new();
    for hot in &queries {
        explained.push((hot, explain_sqlite(&mut conn, hot).await));
    }
    section("SQLite", &explained)
}

async fn postgres_section(url: &str) -> (String, Vec<String>) {
    let url = postgres::create_scratch_database(url, "plans").await.unwrap();
    let store = postgres::PostgresStore::open(&url).await.unwrap();
    let mut conn = store.pool.acquire().await.unwrap();
    sqlx::raw_sql("SET enable_seqscan = off; SET plan_cache_mode = force_generic_plan")
        .execute(&mut *conn)
        .await
        .unwrap();
    let queries: Vec<Hot> = shared().into_iter().chain(postgres_only()).collect();
    let mut explained = Vec::new();
    for hot in &queries {
        explained.push((hot, explain_postgres(&mut conn, hot).await));
    }
    sqlx::raw_sql("RESET ALL").execute(&mut *conn).await.unwrap();
    section("Postgres", &explained)
}

const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/query-plans.md");

/// `doc` with the text between `<!-- name -->` and `<!-- /name -->` replaced.
fn replace_part(doc: &str, name: &str, text: &str) -> String {
    let (open, close) = (format!("<!-- {name} -->\n"), format!("<!-- /{name} -->"));
    let start = doc.find(&open).unwrap_or_else(|| panic!("{DOC}: no `{open}`")) + open.len();
    let end = doc.find(&close).unwrap_or_else(|| panic!("{DOC}: no `{close}`"));
    format!("{}{text}{}", &doc[..start], &doc[end..])
}

/// The plans in docs/query-plans.md are the current ones, on each backend
/// under test (Postgres's half when `LIFEBOAT_TEST_POSTGRES_URL` is set).
async fn check(name: &str, (part, failures): (String, Vec<String>)) {
    assert!(failures.is_empty(), "hot queries that read history:\n\n{}", failures.join("\n"));
    let doc = std::fs::read_to_string(DOC).unwrap();
    let current = replace_part(&doc, name, &part);
    if current != doc {
        if std::env::var_os("LIFEBOAT_BLESS").is_some() {
            std::fs::write(DOC, current).unwrap();
        } else {
            panic!(
                "docs/query-plans.md is stale ({name}): rerun with LIFEBOAT_BLESS=1 to rewrite it, \
                 and review the diff"
            );
        }
    }
}

#[tokio::test]
async fn no_hot_query_reads_history_on_sqlite() {
    check("sqlite", sqlite_section().await).await;
}

#[tokio::test]
async fn no_hot_query_reads_history_on_postgres() {
    let Some(url) = std::env::var("LIFEBOAT_TEST_POSTGRES_URL").ok().filter(|u| !u.is_empty())
    else {
        return;
    };
    check("postgres", postgres_section(&url).await).await;
}

/// The checks themselves, on plans known to be bad: a scan of every step, a
/// sort under a limit, and what this test is for — the claim and `pending`
/// as they were before migration 0006, which slowed down as history grew.
#[tokio::test]
async fn plans_that_read_history_are_caught() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("p.db").display());
    let store = sqlite::SqliteStore::open(&url).await.unwrap();
    // One connection: it sees its own schema change at once.
    let conn = &mut *store.pool.acquire().await.unwrap();
    let bad = hot("every step", "SELECT * FROM steps WHERE status = $1");
    assert!(!explain_sqlite(conn, &bad).await.problems.is_empty());
    let sorted =
        hot("sorted", "SELECT * FROM runs WHERE workflow = $1 ORDER BY created_at LIMIT 5");
    assert!(!explain_sqlite(conn, &sorted.ordered()).await.problems.is_empty());
    sqlx::raw_sql(history::UNDO_0006).execute(&mut *conn).await.unwrap();
    for (name, sql) in [("claim", history::OLD_CLAIM), ("pending", history::OLD_PENDING)] {
        let e = explain_sqlite(conn, &hot(name, sql)).await;
        assert!(!e.problems.is_empty(), "{name}:\n{}", e.plan);
    }
}

#[test]
fn parameters_are_counted_by_the_highest_number() {
    assert_eq!(parameters("SELECT $1, $12, $3"), 12);
    assert_eq!(parameters("SELECT 1"), 0);
}
