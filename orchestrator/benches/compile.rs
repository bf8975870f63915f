//! Compiling a generated 1,000-step workflow with 3,000 edges and templates
//! everywhere (target: under 50 ms), and the example runbooks.

use std::fmt::Write;

use criterion::{Criterion, criterion_group, criterion_main};
use lifeboat_orchestrator::compile::{CompileEnv, compile};

/// Step `i` needs three earlier steps (deterministic pseudo-random picks),
/// and every string it has is a template reading inputs and its needs.
pub fn generated_workflow(steps: usize) -> String {
    let mut yaml = String::from(
        "name: generated\ninputs:\n  site: { type: string, default: dc01 }\n  severity: { type: string, default: P1 }\nsteps:\n",
    );
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = |bound: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % bound as u64) as usize
    };
    for i in 0..steps {
        let mut needs: Vec<usize> = Vec::new();
        if i > 0 {
            while needs.len() < 3.min(i) {
                let n = next(i);
                if !needs.contains(&n) {
                    needs.push(n);
                }
            }
        }
        let _ = writeln!(yaml, "  s{i}:");
        let _ = writeln!(yaml, "    uses: shell");
        if !needs.is_empty() {
            let list: Vec<String> = needs.iter().map(|n| format!("s{n}")).collect();
            let _ = writeln!(yaml, "    needs: [{}]", list.join(", "));
            let _ =
                writeln!(yaml, "    when: \"{{{{eq steps.s{}.status 'succeeded'}}}}\"", needs[0]);
        }
        let from =
            needs.first().map(|n| format!("{{{{steps.s{n}.outputs.stdout}}}}")).unwrap_or_default();
        let _ = writeln!(
            yaml,
            "    with:\n      command: [echo, \"{{{{inputs.site}}}}\", \"{{{{run.id}}}}\", \"{from}\"]\n      env: {{ SEVERITY: \"{{{{inputs.severity}}}}\", STEP: \"s{i}\" }}"
        );
    }
    yaml
}

fn benches(c: &mut Criterion) {
    let big = generated_workflow(1_000);
    assert!(
        compile("generated.yaml", &big, CompileEnv::default()).is_ok(),
        "generated workflow must compile"
    );
    let edges =
        compile("generated.yaml", &big, CompileEnv::default()).unwrap().graph.graph.edge_count();
    assert!(edges >= 2_990, "expected ~3000 edges, got {edges}");
    c.bench_function("compile/1000_steps_3000_edges", |b| {
        b.iter(|| {
            compile("generated.yaml", std::hint::black_box(&big), CompileEnv::default()).unwrap()
        })
    });

    let failover =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../workflows/failover.yaml"));
    if let Ok(failover) = failover {
        c.bench_function("compile/failover.yaml", |b| {
            b.iter(|| {
                compile("failover.yaml", std::hint::black_box(&failover), CompileEnv::default())
            })
        });
    }
}

criterion_group! {
    name = compile_benches;
    config = Criterion::default().sample_size(20);
    targets = benches
}
criterion_main!(compile_benches);
