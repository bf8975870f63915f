//! Executor benchmarks on SQLite (WAL, synchronous=FULL: durable as in
//! production) and, when `LIFEBOAT_TEST_POSTGRES_URL` is set (scripts/pg.sh
//! starts one), on Postgres with synchronous_commit=on: chain40 (40
//! sequential steps), fan100 (1 -> 100 parallel -> 1), burst (500 runs x 3
//! steps started at once, reported in steps/s). Each measures from "run
//! created" to "run finished and committed".

use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use lifeboat_orchestrator::compile::{CompileEnv, CompiledWorkflow, compile};
use lifeboat_orchestrator::exec::engine::{Engine, EngineOptions};
use lifeboat_orchestrator::store::{self, Created, RunStatus};
use serde_json::json;

fn workflow(name: &str, yaml_steps: &str) -> CompiledWorkflow {
    let text = format!("name: {name}\nsteps:\n{yaml_steps}");
    compile(&format!("{name}.yaml"), &text, CompileEnv::default())
        .expect("benchmark workflow compiles")
}

fn chain(n: usize) -> CompiledWorkflow {
    let mut s = String::new();
    for i in 0..n {
        let needs = if i == 0 { String::new() } else { format!(", needs: [s{}]", i - 1) };
        let _ = writeln!(s, "  s{i}: {{ uses: set, with: {{ i: {i} }}{needs} }}");
    }
    workflow("chain", &s)
}

fn fan(n: usize) -> CompiledWorkflow {
    let mut s = String::from("  start: { uses: set }\n");
    let mut all = Vec::new();
    for i in 0..n {
        let _ = writeln!(s, "  p{i}: {{ uses: set, needs: [start], with: {{ i: {i} }} }}");
        all.push(format!("p{i}"));
    }
    let _ = writeln!(s, "  end: {{ uses: set, needs: [{}] }}", all.join(", "));
    workflow("fan", &s)
}

struct Bench {
    runtime: tokio::runtime::Runtime,
    engine: Arc<Engine>,
    url: String,
    _dir: tempfile::TempDir,
}

/// The databases to measure: SQLite always, Postgres when one is given.
fn backends() -> Vec<&'static str> {
    match std::env::var("LIFEBOAT_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => vec!["sqlite", "postgres"],
        _ => vec!["sqlite"],
    }
}

/// A fresh database of `backend`: a temp file, or a new Postgres database.
async fn fresh_url(backend: &str, dir: &std::path::Path) -> String {
    if backend == "sqlite" {
        return format!("sqlite://{}", dir.join("bench.db").display());
    }
    let admin_url = std::env::var("LIFEBOAT_TEST_POSTGRES_URL").unwrap();
    store::postgres::create_scratch_database(&admin_url, "bench").await.unwrap()
}

fn bench_engine(backend: &str) -> Bench {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (engine, url) = runtime.block_on(async {
        let url = fresh_url(backend, dir.path()).await;
        let store = store::open(&url).await.unwrap();
        let engine = Engine::new(
            store,
            EngineOptions { poll: Duration::from_millis(5), max_runs: 1000, ..Default::default() },
        );
        (engine, url)
    });
    Bench { runtime, engine, url, _dir: dir }
}

/// One run, created leased to this worker and driven to the end here.
async fn one_run(engine: &Arc<Engine>, wf: &CompiledWorkflow) -> Duration {
    let Created::Run(id) =
        engine.submit(wf, json!({}), json!({"kind": "bench"}), None, true).await.unwrap()
    else {
        panic!("skipped")
    };
    let started = Instant::now();
    let end = engine.drive(&id).await.unwrap();
    let took = started.elapsed();
    assert!(
        matches!(
            end,
            lifeboat_orchestrator::exec::driver::DriveEnd::Finished(RunStatus::Succeeded)
        ),
        "{end:?}"
    );
    took
}

fn single_runs(c: &mut Criterion) {
    for backend in backends() {
        single_runs_on(c, backend);
    }
}

fn single_runs_on(c: &mut Criterion, backend: &str) {
    let b = bench_engine(backend);
    for (name, wf) in [("chain40", chain(40)), ("fan100", fan(100))] {
        c.bench_function(&format!("executor/{backend}/{name}"), |bench| {
            bench.iter_custom(|iters| {
                b.runtime.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += one_run(&b.engine, &wf).await;
                    }
                    total
                })
            })
        });
    }
}

fn burst(c: &mut Criterion) {
    for backend in backends() {
        burst_on(c, backend, 1);
        if backend == "postgres" {
            burst_on(c, backend, 3);
        }
    }
}

/// 500 runs x 3 steps queued at once, then `replicas` workers (each with its
/// own connection pool, as separate `serve` processes would have) drain them.
/// Also prints claims/s and the p99 time from "queued" to "started".
fn burst_on(c: &mut Criterion, backend: &str, replicas: usize) {
    let wf = chain(3);
    let mut group = c.benchmark_group(format!("executor/{backend}"));
    group.sample_size(10).throughput(criterion::Throughput::Elements(1500));
    let name = if replicas == 1 {
        "burst_500x3".to_string()
    } else {
        format!("burst_500x3_{replicas}_replicas")
    };
    group.bench_function(&name, |bench| {
        bench.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let b = bench_engine(backend);
                total += b.runtime.block_on(async {
                    let mut ids = Vec::new();
                    for _ in 0..500 {
                        if let Created::Run(id) = b
                            .engine
                            .submit(&wf, json!({}), json!({"kind": "bench"}), None, false)
                            .await
                            .unwrap()
                        {
                            ids.push(id);
                        }
                    }
                    let mut engines = vec![b.engine.clone()];
                    for _ in 1..replicas {
                        let store = store::open(&b.url).await.unwrap();
                        engines.push(Engine::new(
                            store,
                            EngineOptions {
                                poll: Duration::from_millis(5),
                                max_runs: 1000,
                                ..Default::default()
                            },
                        ));
                    }
                    let started = Instant::now();
                    let started_ms = store::now_ms();
                    let shutdown = tokio_util::sync::CancellationToken::new();
                    let workers: Vec<_> = engines
                        .iter()
                        .map(|engine| {
                            let engine = engine.clone();
                            let shutdown = shutdown.clone();
                            tokio::spawn(async move { engine.work(shutdown, None).await })
                        })
                        .collect();
                    loop {
                        let done = b
                            .engine
                            .store
                            .runs(&store::RunFilter {
                                status: Some(RunStatus::Succeeded),
                                workflow: None,
                                limit: Some(1000),
                                ..Default::default()
                            })
                            .await
                            .unwrap()
                            .len();
                        if done == ids.len() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    let took = started.elapsed();
                    shutdown.cancel();
                    for w in workers {
                        let _ = w.await;
                    }
                    report_dispatch(&b.engine, &ids, started_ms, &name, backend).await;
                    took
                });
            }
            total
        })
    });
    group.finish();
}

/// Claims per second and the p99 wait from "workers start" to "run started".
async fn report_dispatch(
    engine: &Arc<Engine>,
    ids: &[String],
    started_ms: i64,
    name: &str,
    backend: &str,
) {
    let mut waits = Vec::with_capacity(ids.len());
    for id in ids {
        let events = engine.store.events(id, 0).await.unwrap();
        if let Some(e) = events.iter().find(|e| e.kind == "started") {
            waits.push(e.at - started_ms);
        }
    }
    waits.sort_unstable();
    let Some(&last) = waits.last() else { return };
    let p99 = waits[(waits.len() * 99 / 100).min(waits.len() - 1)];
    let claims_per_s = waits.len() as f64 / (last.max(1) as f64 / 1000.0);
    eprintln!("  {backend}/{name}: {claims_per_s:.0} claims/s, p99 queued->started {p99} ms");
}

criterion_group! {
    name = executor;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(5));
    targets = single_runs, burst
}
criterion_main!(executor);
