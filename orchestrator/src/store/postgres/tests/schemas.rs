//! Where lifeboat's tables live: in a schema of their own beside a
//! database's other tables, beside an older lifeboat's in `public`, and with
//! no more privileges than docs/postgres.md names.

use super::*;

/// A connection straight to the database, as its owner (bypassing lifeboat).
async fn owner(options: &PgConnectOptions) -> PgConnection {
    PgConnection::connect_with(options).await.unwrap()
}

/// A deployment as a lifeboat from before schemas left it: migrated with
/// the server's default `search_path` (so into `public`), holding run `old`.
async fn older_deployment(options: &PgConnectOptions) {
    let mut conn = owner(options).await;
    MIGRATOR.run_direct(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    let store =
        PostgresStore::open_in(options.clone(), &Schema::named("public").unwrap()).await.unwrap();
    with_definition(&store).await;
    store.create_run(new_run("old", None, false)).await.unwrap();
    store.pool.close().await;
}

/// Opens, creates a run and reads it back: lifeboat works.
async fn works(store: &PostgresStore) {
    with_definition(store).await;
    store.create_run(new_run("r1", None, false)).await.unwrap();
    assert!(store.run("r1").await.unwrap().is_some());
}

async fn schema_exists(pool: &PgPool, name: &str) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(name)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The issue's database: `public` already has a `steps` and a `runs`.
/// lifeboat migrates into its own schema, works, and leaves them as they were.
#[tokio::test]
async fn a_database_with_its_own_public_steps_table_migrates_and_works() {
    let Some(options) = fresh_database().await else { return };
    let mut conn = owner(&options).await;
    sqlx::raw_sql(
        "CREATE TABLE public.steps (id int PRIMARY KEY, name text); \
         INSERT INTO public.steps VALUES (1, 'mine'); \
         CREATE TABLE public.runs (id int PRIMARY KEY);",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let store = PostgresStore::open_with(options).await.unwrap();
    works(&store).await;
    assert_eq!(store.run("r1").await.unwrap().unwrap().status, RunStatus::Queued);
    assert_eq!(store.steps("r1").await.unwrap().len(), 2);
    store.ping().await.unwrap();
    let mine: Vec<(i32, Option<String>)> =
        sqlx::query_as("SELECT * FROM public.steps").fetch_all(&mut conn).await.unwrap();
    assert_eq!(mine, vec![(1, Some("mine".to_string()))]);
    assert_eq!(tables_in(&store.pool, "public").await, ["runs", "steps"]);
    assert!(tables_in(&store.pool, "lifeboat").await.contains(&"steps".to_string()));
}

/// Another sqlx program's `_sqlx_migrations` in `public` is not taken for an
/// older lifeboat's (its first migration's checksum differs).
#[tokio::test]
async fn another_programs_migrations_in_public_are_not_an_older_lifeboat() {
    let Some(options) = fresh_database().await else { return };
    let mut conn = owner(&options).await;
    sqlx::raw_sql(
        "CREATE TABLE public._sqlx_migrations (version BIGINT PRIMARY KEY, \
           description TEXT NOT NULL, installed_on TIMESTAMPTZ NOT NULL DEFAULT now(), \
           success BOOLEAN NOT NULL, checksum BYTEA NOT NULL, execution_time BIGINT NOT NULL); \
         INSERT INTO public._sqlx_migrations (version, description, success, checksum, \
           execution_time) VALUES (1, 'init', true, '\\x00', 0);",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let store = PostgresStore::open_with(options).await.unwrap();
    works(&store).await;
    assert_eq!(tables_in(&store.pool, "public").await, ["_sqlx_migrations"]);
    assert!(tables_in(&store.pool, "lifeboat").await.contains(&"runs".to_string()));
}

/// An upgrade does not move anyone's tables by itself: a deployment from
/// before schemas keeps working in `public`, and no `lifeboat` schema appears.
#[tokio::test]
async fn an_older_deployment_in_public_is_used_where_it_is() {
    let Some(options) = fresh_database().await else { return };
    older_deployment(&options).await;
    let store = PostgresStore::open_with(options).await.unwrap();
    assert!(store.run("old").await.unwrap().is_some());
    store.create_run(new_run("new", None, false)).await.unwrap();
    assert_eq!(store.runs(&RunFilter::default()).await.unwrap().len(), 2);
    assert!(!schema_exists(&store.pool, "lifeboat").await);
}

/// An explicitly named schema is used as named: an older deployment in
/// `public` is neither taken over nor touched.
#[tokio::test]
async fn an_explicit_schema_leaves_an_older_deployment_in_public_alone() {
    let Some(options) = fresh_database().await else { return };
    older_deployment(&options).await;
    let store =
        PostgresStore::open_in(options.clone(), &Schema::named("ops").unwrap()).await.unwrap();
    assert!(store.run("old").await.unwrap().is_none());
    let mut conn = owner(&options).await;
    let old: i64 = sqlx::query_scalar("SELECT count(*) FROM public.runs WHERE id = 'old'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(old, 1);
}

/// The statements under `<!-- move-from-public -->` in docs/postgres.md,
/// as an operator runs them.
fn documented_move() -> &'static str {
    let doc = include_str!("../../../../../docs/postgres.md");
    let block = &doc[doc.find("<!-- move-from-public -->").expect("the move's marker")..];
    let block = &block[block.find("```sql").expect("the move's SQL") + "```sql".len()..];
    &block[..block.find("```").expect("the end of the move's SQL")]
}

/// docs/postgres.md's move, run with every replica stopped, takes every table
/// of an older deployment into `lifeboat`; the next start works there.
#[tokio::test]
async fn the_documented_move_takes_an_older_deployment_into_its_schema() {
    let Some(options) = fresh_database().await else { return };
    older_deployment(&options).await;
    let mut conn = owner(&options).await;
    sqlx::raw_sql(documented_move()).execute(&mut conn).await.unwrap();
    let store = PostgresStore::open_with(options).await.unwrap();
    assert!(store.run("old").await.unwrap().is_some());
    // The identity and serial sequences moved with their tables.
    store.create_run(new_run("new", None, false)).await.unwrap();
    assert!(!store.events("new", 0).await.unwrap().is_empty());
    store.ping().await.unwrap();
    assert_eq!(tables_in(&store.pool, "public").await, Vec::<String>::new());
}

/// Two deployments share one database, told apart by `?schema=` in their URLs.
#[tokio::test]
async fn deployments_in_two_schemas_of_one_database_keep_apart() {
    let Ok(admin) = std::env::var("LIFEBOAT_TEST_POSTGRES_URL") else { return };
    if admin.is_empty() {
        return;
    }
    let url = create_scratch_database(&admin, "pgtest").await.unwrap();
    let a = PostgresStore::open(&format!("{url}?schema=team_a")).await.unwrap();
    let b = PostgresStore::open(&format!("{url}?schema=team_b")).await.unwrap();
    with_definition(&a).await;
    a.create_run(new_run("r1", None, false)).await.unwrap();
    assert!(b.run("r1").await.unwrap().is_none());
    assert!(tables_in(&a.pool, "team_b").await.contains(&"runs".to_string()));
}

/// A login role that is no superuser and owns nothing; its password is `pw`.
async fn plain_role(conn: &mut PgConnection) -> String {
    let name = format!("lbrole_{}", uuid::Uuid::now_v7().simple());
    sqlx::query(&format!(
        "CREATE ROLE {name} LOGIN PASSWORD 'pw' NOSUPERUSER NOCREATEDB NOCREATEROLE"
    ))
    .execute(conn)
    .await
    .unwrap();
    name
}

/// CONNECT (PUBLIC's by default) and CREATE on the database are all a role
/// needs for lifeboat to create its schema.
#[tokio::test]
async fn a_role_with_create_on_the_database_needs_nothing_more() {
    let Some(options) = fresh_database().await else { return };
    let mut conn = owner(&options).await;
    let role = plain_role(&mut conn).await;
    let db = options.get_database().unwrap().to_string();
    sqlx::query(&format!("GRANT CREATE ON DATABASE {db} TO {role}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let store = PostgresStore::open_with(options.username(&role).password("pw")).await.unwrap();
    works(&store).await;
}

/// Without CREATE on the database, USAGE and CREATE on a schema made for
/// lifeboat are enough.
#[tokio::test]
async fn a_role_with_usage_and_create_on_a_made_schema_needs_nothing_more() {
    let Some(options) = fresh_database().await else { return };
    let mut conn = owner(&options).await;
    let role = plain_role(&mut conn).await;
    sqlx::raw_sql(&format!("CREATE SCHEMA ops; GRANT USAGE, CREATE ON SCHEMA ops TO {role}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let options = options.username(&role).password("pw");
    let store = PostgresStore::open_in(options, &Schema::named("ops").unwrap()).await.unwrap();
    works(&store).await;
}

/// A role that may create no schema is told what to grant or create.
#[tokio::test]
async fn a_role_that_may_not_create_the_schema_is_told_what_to_grant() {
    let Some(options) = fresh_database().await else { return };
    let role = plain_role(&mut owner(&options).await).await;
    let err = PostgresStore::open_with(options.username(&role).password("pw")).await.err().unwrap();
    assert!(matches!(err, StoreError::Config(_)), "{err:?}");
    assert!(err.to_string().contains("grant the role CREATE on the database"), "{err}");
}
