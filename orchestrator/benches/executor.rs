//! Executor benchmarks on SQLite (WAL, synchronous=FULL: durable as in
//! production): chain40 (40 sequential steps), fan100 (1 -> 100 parallel ->
//! 1), burst (500 runs x 3 steps started at once, reported in steps/s).
//! Each measures from "run created" to "run finished and committed".

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
    _dir: tempfile::TempDir,
}

fn bench_engine() -> Bench {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let engine = runtime.block_on(async {
        let store = store::open(&url).await.unwrap();
        Engine::new(
            store,
            EngineOptions { poll: Duration::from_millis(5), max_runs: 1000, ..Default::default() },
        )
    });
    Bench { runtime, engine, _dir: dir }
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
    let b = bench_engine();
    for (name, wf) in [("chain40", chain(40)), ("fan100", fan(100))] {
        c.bench_function(&format!("executor/sqlite/{name}"), |bench| {
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
    let wf = chain(3);
    let mut group = c.benchmark_group("executor/sqlite");
    group.sample_size(10).throughput(criterion::Throughput::Elements(1500));
    group.bench_function("burst_500x3", |bench| {
        bench.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let b = bench_engine();
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
                    let started = Instant::now();
                    let shutdown = tokio_util::sync::CancellationToken::new();
                    let worker = {
                        let engine = b.engine.clone();
                        let shutdown = shutdown.clone();
                        tokio::spawn(async move { engine.work(shutdown, None).await })
                    };
                    loop {
                        let done = b
                            .engine
                            .store
                            .runs(&store::RunFilter {
                                status: Some(RunStatus::Succeeded),
                                workflow: None,
                                limit: Some(1000),
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
                    let _ = worker.await;
                    took
                });
            }
            total
        })
    });
    group.finish();
}

criterion_group! {
    name = executor;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(5));
    targets = single_runs, burst
}
criterion_main!(executor);
