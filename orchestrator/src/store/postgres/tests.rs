//! Postgres-only behaviour (the shared stories are in `conformance.rs`).

use std::sync::Arc;

use serde_json::json;

use super::*;

/// Connect options for a fresh, empty database.
async fn fresh_database() -> Option<PgConnectOptions> {
    let url = std::env::var("LIFEBOAT_TEST_POSTGRES_URL").ok().filter(|u| !u.is_empty())?;
    let admin = PgConnectOptions::from_str(&url).unwrap();
    let name = format!("pgtest_{}", uuid::Uuid::now_v7().simple());
    let mut conn = PgConnection::connect_with(&admin).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    Some(admin.database(&name))
}

/// The tables of `schema`, by name.
async fn tables_in(pool: &PgPool, schema: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = $1 ORDER BY tablename",
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .unwrap()
}

use crate::store::conformance::{new_run, with_definition};

mod schemas;

/// Several replicas starting at once on an empty database: one creates the
/// schema and migrates, the others wait and find it in place. Several
/// rounds, each on a new database: one round catches a `CREATE SCHEMA`
/// outside the lock only now and then.
#[tokio::test]
async fn replicas_starting_together_migrate_once() {
    for _round in 0..6 {
        let Some(options) = fresh_database().await else { return };
        let opens: Vec<_> =
            (0..8).map(|_| tokio::spawn(PostgresStore::open_with(options.clone()))).collect();
        let mut stores = Vec::new();
        for open in opens {
            stores.push(open.await.unwrap().unwrap());
        }
        let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM lifeboat._sqlx_migrations")
            .fetch_one(&stores[0].pool)
            .await
            .unwrap();
        assert_eq!(applied, MIGRATOR.iter().count() as i64);
        assert_eq!(tables_in(&stores[0].pool, "public").await, Vec::<String>::new());
        // No replica kept a migration lock on this database.
        let locks: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_one(&stores[0].pool)
        .await
        .unwrap();
        assert_eq!(locks, 0);
    }
}

/// `on_conflict: skip` across replicas: of many simultaneous creations
/// with one key, exactly one run is made and every other names it.
#[tokio::test]
async fn racing_replicas_create_one_run_per_skip_key() {
    let Some(options) = fresh_database().await else { return };
    let mut replicas = Vec::new();
    for _ in 0..4 {
        replicas.push(Arc::new(PostgresStore::open_with(options.clone()).await.unwrap()));
    }
    with_definition(&*replicas[0]).await;
    for round in 0..5 {
        let key = format!("failover-dc{round}");
        let tasks: Vec<_> = (0..12)
            .map(|i| {
                let store = replicas[i % replicas.len()].clone();
                let run = new_run(&format!("r{round}-{i:02}"), Some(&key), true);
                tokio::spawn(async move { store.create_run(run).await.unwrap() })
            })
            .collect();
        let mut made = Vec::new();
        let mut skipped_for = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Created::Run(id) => made.push(id),
                Created::Skipped { active } => skipped_for.push(active),
                other => panic!("round {round}: {other:?}"),
            }
        }
        assert_eq!(made.len(), 1, "round {round}: {made:?}");
        assert!(skipped_for.iter().all(|a| *a == made[0]), "round {round}");
    }
}

/// Postgres text and jsonb cannot hold NUL; a step that prints one must
/// not make its run's commits fail forever.
#[tokio::test]
async fn nul_characters_are_stored_replaced() {
    let Some(options) = fresh_database().await else { return };
    let store = PostgresStore::open_with(options).await.unwrap();
    with_definition(&store).await;
    let mut run = new_run("r1", None, false);
    run.inputs = json!({"k\0": "v\0"});
    store.create_run(run).await.unwrap();
    store.claim("w1", Lease { now: now_ms(), duration_ms: 10_000 }, 1, None).await.unwrap();
    let mut step = StepRecord::pending("r1", "a");
    step.status = StepStatus::Failed;
    step.error = Some("bad\0byte".into());
    step.outputs = Some(json!({"stdout": ["a\0b"]}));
    store.commit("w1", "r1", &[Change::Step(step)]).await.unwrap();
    let a = store.steps("r1").await.unwrap().into_iter().find(|s| s.step_id == "a").unwrap();
    assert_eq!(a.error.as_deref(), Some("bad\u{FFFD}byte"));
    assert_eq!(a.outputs, Some(json!({"stdout": ["a\u{FFFD}b"]})));
    let r = store.run("r1").await.unwrap().unwrap();
    assert_eq!(r.inputs, json!({"k\u{FFFD}": "v\u{FFFD}"}));
}

/// A run's events are written under its row lock: an operator request
/// racing the owner's commits never lands below an id a reader has passed.
#[tokio::test]
async fn a_runs_events_commit_in_id_order() {
    let Some(options) = fresh_database().await else { return };
    let store = Arc::new(PostgresStore::open_with(options).await.unwrap());
    with_definition(&*store).await;
    store.create_run(new_run("r1", None, false)).await.unwrap();
    store.claim("w1", Lease { now: now_ms(), duration_ms: 60_000 }, 1, None).await.unwrap();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..100 {
                let event = Change::Event {
                    at: now_ms(),
                    kind: crate::events::RunEvent::StatusUpdate,
                    step_id: None,
                    data: Some(serde_json::json!({ "tick": i })),
                };
                store.commit("w1", "r1", &[event]).await.unwrap();
            }
        })
    };
    let requester = {
        let store = store.clone();
        tokio::spawn(async move {
            for _ in 0..30 {
                store
                    .request(NewRequest {
                        run_id: "r1".into(),
                        kind: RequestKind::Pause,
                        step_id: None,
                        data: None,
                        actor: "alice".into(),
                    })
                    .await
                    .unwrap();
            }
        })
    };
    // A tailer, as `run --wait` follows progress: never misses an event.
    let mut seen = Vec::new();
    let mut after = 0;
    while !(writer.is_finished() && requester.is_finished()) {
        for e in store.events("r1", after).await.unwrap() {
            after = e.id;
            seen.push(e.id);
        }
    }
    for e in store.events("r1", after).await.unwrap() {
        seen.push(e.id);
    }
    writer.await.unwrap();
    requester.await.unwrap();
    let all: Vec<i64> = store.events("r1", 0).await.unwrap().into_iter().map(|e| e.id).collect();
    assert_eq!(all.len(), 1 + 100 + 30);
    assert_eq!(seen, all, "the tailer missed events");
}
