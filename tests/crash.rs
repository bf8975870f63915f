//! The core guarantee (docs/guarantees.md), with `kill -9` on
//! a real `lifeboat serve`: no run is lost, a step whose success was
//! recorded never runs again, every execution is a recorded attempt,
//! attempts of a step never overlap, dependencies hold, durable timers
//! survive.
//!
//! The steps of `tests/fixtures/exec/crash.yaml` append `start RUN STEP N NS`
//! and `end RUN STEP N NS ok|fail` lines to `./ledger`: what really ran,
//! compared with what the store says (`show --json`). The kill schedule is
//! random; the seed is printed, `LIFEBOAT_TEST_CRASH_SEED=N` replays it.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{Sandbox, exec_fixture, is_terminal, ms};

const RUNS: usize = 30;
const KILLS: usize = 22;

/// The crash workflow's graph: step -> needs. `hold` is a durable `wait: 1s`.
const NEEDS: &[(&str, &[&str])] = &[
    ("prepare", &[]),
    ("left", &["prepare"]),
    ("right", &["prepare"]),
    ("hold", &["left"]),
    ("audit", &["left"]),
    ("finish", &["hold", "right", "audit"]),
];
const TIMER: &str = "hold";

/// One execution of a step's script, from the ledger.
#[derive(Debug, Default, Clone)]
pub(crate) struct Execution {
    start: i128,
    /// End timestamp and whether the script reported success.
    end: Option<(i128, bool)>,
}

/// (run, step) -> attempt number -> executions with that number (more than one is a bug).
pub(crate) type Ledger = HashMap<(String, String), BTreeMap<u64, Vec<Execution>>>;

fn malformed<T>(line: &str) -> T {
    panic!("malformed ledger line: {line:?}")
}

pub(crate) fn parse_ledger(text: &str) -> Ledger {
    let mut ledger = Ledger::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 {
            malformed::<()>(line);
        }
        let key = (f[1].to_string(), f[2].to_string());
        let n: u64 = f[3].parse().unwrap_or_else(|_| malformed(line));
        let at: i128 = f[4].parse().unwrap_or_else(|_| malformed(line));
        let runs = ledger.entry(key).or_default().entry(n).or_default();
        match f[0] {
            "start" => runs.push(Execution { start: at, end: None }),
            "end" => {
                let ok = f.get(5) == Some(&"ok");
                // The end belongs to the latest start of this attempt number without one.
                match runs.iter_mut().rev().find(|e| e.end.is_none()) {
                    Some(e) => e.end = Some((at, ok)),
                    None => panic!("ledger end without a start: {line:?}"),
                }
            }
            _ => malformed(line),
        }
    }
    ledger
}

/// A store attempt, from `show --json`.
#[derive(Debug)]
struct Attempt {
    n: u64,
    status: String,
    started_ms: i64,
    finished_ms: Option<i64>,
}

fn store_attempts(step: &Value) -> Vec<Attempt> {
    step["attempts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["phase"] != "rollback")
        .map(|a| Attempt {
            n: a["n"].as_u64().expect("attempt n"),
            status: a["status"].as_str().unwrap_or("?").to_string(),
            started_ms: ms(&a["started_at"]),
            finished_ms: a["finished_at"].is_string().then(|| ms(&a["finished_at"])),
        })
        .collect()
}

const NS_PER_MS: i128 = 1_000_000;

/// Checks one finished run against the ledger; returns every violation found.
pub(crate) fn check_run(doc: &Value, ledger: &Ledger) -> Vec<String> {
    let run = doc["id"].as_str().unwrap_or("?").to_string();
    let mut bad = Vec::new();
    if doc["status"] != "succeeded" {
        bad.push(format!("run {run} ended {} ({})", doc["status"], doc["error"]));
    }
    let steps: HashMap<&str, &Value> = doc["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| (s["id"].as_str().unwrap_or("?"), s))
        .collect();
    // When each step's success ended, in ns (the ledger for scripts, the store for the timer).
    let mut done_at: HashMap<&str, i128> = HashMap::new();
    let mut first_start: HashMap<&str, i128> = HashMap::new();

    for &(id, _) in NEEDS {
        let Some(step) = steps.get(id) else {
            bad.push(format!("run {run}: step {id} missing from show --json"));
            continue;
        };
        if step["status"] != "succeeded" {
            let attempts: Vec<String> = step["attempts"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| format!("#{} {} {}", a["n"], a["status"], a["error"]))
                .collect();
            bad.push(format!(
                "run {run}: step {id} ended {} (error {}; attempts {attempts:?})",
                step["status"], step["error"]
            ));
        }
        if id == TIMER {
            // The durable timer: at least 1s between its start and its end, across crashes.
            match (step["started_at"].as_str(), step["finished_at"].as_str()) {
                (Some(_), Some(_)) => {
                    let (s, f) = (ms(&step["started_at"]), ms(&step["finished_at"]));
                    if f - s < 1000 {
                        bad.push(format!("run {run}: wait step {id} lasted {}ms < 1s", f - s));
                    }
                    first_start.insert(id, s as i128 * NS_PER_MS);
                    done_at.insert(id, f as i128 * NS_PER_MS);
                }
                _ => bad.push(format!("run {run}: wait step {id} has no start or end time")),
            }
            continue;
        }

        let attempts = store_attempts(step);
        let numbers: Vec<u64> = attempts.iter().map(|a| a.n).collect();
        let expected: Vec<u64> = (1..=attempts.len() as u64).collect();
        if numbers != expected {
            bad.push(format!("run {run}: step {id}: attempt numbers {numbers:?}"));
        }
        let succeeded: Vec<&Attempt> =
            attempts.iter().filter(|a| a.status == "succeeded").collect();
        if succeeded.len() != 1 {
            bad.push(format!("run {run}: step {id}: {} succeeded attempts", succeeded.len()));
            continue;
        }
        let win = succeeded[0];
        if attempts.last().map(|a| a.n) != Some(win.n) {
            bad.push(format!("run {run}: step {id}: attempts after the success: {attempts:?}"));
        }
        for a in &attempts {
            if !matches!(a.status.as_str(), "succeeded" | "failed" | "interrupted") {
                bad.push(format!("run {run}: step {id}: attempt {} ended {}", a.n, a.status));
            }
        }

        let empty = BTreeMap::new();
        let executions = ledger.get(&(run.clone(), id.to_string())).unwrap_or(&empty);
        // Every execution is a recorded attempt, and an attempt number runs at most once.
        for (n, runs) in executions {
            if !numbers.contains(n) {
                bad.push(format!("run {run}: step {id}: attempt {n} ran but is not in the store"));
            }
            if runs.len() > 1 {
                bad.push(format!(
                    "run {run}: step {id}: attempt {n} executed {} times",
                    runs.len()
                ));
            }
        }
        // The recorded success really ran to its end, successfully.
        let Some(win_exec) = executions.get(&win.n).and_then(|r| r.first()).cloned() else {
            bad.push(format!("run {run}: step {id}: succeeded attempt {} never ran", win.n));
            continue;
        };
        let Some((win_end, true)) = win_exec.end else {
            bad.push(format!(
                "run {run}: step {id}: succeeded attempt {} has no successful end in the ledger",
                win.n
            ));
            continue;
        };
        // A failed attempt is one whose script reported failure.
        for a in attempts.iter().filter(|a| a.status == "failed") {
            let ended = executions.get(&a.n).and_then(|r| r.first()).and_then(|e| e.end);
            if !matches!(ended, Some((_, false))) {
                bad.push(format!("run {run}: step {id}: attempt {} failed, ledger {ended:?}", a.n));
            }
        }
        // Nothing ran after the success: no later attempt, no later start.
        for (n, runs) in executions {
            for e in runs {
                if *n > win.n || e.start > win_end {
                    bad.push(format!(
                        "run {run}: step {id}: attempt {n} started after attempt {} succeeded",
                        win.n
                    ));
                }
            }
        }
        if win.finished_ms.is_some_and(|f| (f as i128) * NS_PER_MS + NS_PER_MS < win_end) {
            bad.push(format!("run {run}: step {id}: success recorded before the script ended"));
        }
        // Attempts of one step never overlap: each starts after the previous one ended
        // (its ledger end, or, if it was killed, the moment the store recorded it interrupted).
        let mut intervals: Vec<(u64, i128, i128)> = Vec::new();
        for (n, runs) in executions {
            for e in runs {
                let end = e.end.map(|(t, _)| t).or_else(|| {
                    attempts
                        .iter()
                        .find(|a| a.n == *n)
                        .and_then(|a| a.finished_ms)
                        .map(|f| f as i128 * NS_PER_MS + NS_PER_MS)
                });
                intervals.push((*n, e.start, end.unwrap_or(i128::MAX)));
            }
        }
        intervals.sort_by_key(|&(_, start, _)| start);
        for pair in intervals.windows(2) {
            let ((n1, _, end1), (n2, start2, _)) = (pair[0], pair[1]);
            if n2 <= n1 {
                bad.push(format!("run {run}: step {id}: attempt {n2} started after attempt {n1}"));
            }
            if start2 < end1 {
                bad.push(format!(
                    "run {run}: step {id}: attempt {n2} started {}ms before attempt {n1} ended",
                    (end1 - start2) / NS_PER_MS
                ));
            }
        }
        // The store recorded each attempt before its execution started.
        for a in &attempts {
            if let Some(e) = executions.get(&a.n).and_then(|r| r.first())
                && (a.started_ms as i128) * NS_PER_MS > e.start
            {
                bad.push(format!(
                    "run {run}: step {id}: attempt {} ran before it was recorded",
                    a.n
                ));
            }
        }
        if let Some(start) = intervals.first().map(|i| i.1) {
            first_start.insert(id, start);
        }
        done_at.insert(id, win_end);
    }

    // Dependency order: a step's first start is after each need's successful end.
    for &(id, needs) in NEEDS {
        let Some(&start) = first_start.get(id) else { continue };
        for need in needs {
            let Some(&done) = done_at.get(need) else { continue };
            // The timer's times are whole milliseconds from the store.
            let (start, done) = if id == TIMER || *need == TIMER {
                (start / NS_PER_MS, done / NS_PER_MS)
            } else {
                (start, done)
            };
            if start < done {
                bad.push(format!("run {run}: step {id} started before its need {need} ended"));
            }
        }
    }
    bad
}

#[test]
fn kill_9_at_random_moments_loses_no_run_and_repeats_no_completed_step() {
    let began = Instant::now();
    let sb = Sandbox::for_crashes("crash");
    let seed = crate::util::crash_seed("crash test");
    let mut rng = fastrand::Rng::with_seed(seed);

    let wf = exec_fixture("crash.yaml");
    let ids: Vec<String> = (0..RUNS).map(|_| sb.enqueue(&wf, &[])).collect();

    // Kill the worker at random moments, restarting it each time.
    let mut serve = sb.serve();
    for kill in 0..KILLS {
        std::thread::sleep(Duration::from_millis(rng.u64(80..1100)));
        assert!(
            serve.alive(),
            "serve (before kill {kill}) exited on its own; see {}/serve-*.log",
            sb.dir.display()
        );
        serve.kill9();
        serve = sb.serve();
    }
    let killed_at = began.elapsed();

    // Let the last worker finish everything.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let runs = sb.runs();
        let active: Vec<String> = runs
            .iter()
            .filter(|r| !is_terminal(r["status"].as_str().unwrap_or("")))
            .map(|r| format!("{} {}", r["id"], r["status"]))
            .collect();
        if runs.len() == RUNS && active.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "seed {seed}: {} runs still active 60s after the last kill: {active:#?}",
            active.len()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(serve);

    let ledger = parse_ledger(&sb.read("ledger"));
    let known: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
    let mut violations: Vec<String> = ledger
        .keys()
        .filter(|(run, _)| !known.contains(run.as_str()))
        .map(|(run, step)| format!("the ledger names an unknown run {run} (step {step})"))
        .collect();
    let (mut interrupted, mut attempts_total) = (0, 0);
    for id in &ids {
        let doc = sb.show(id);
        for step in doc["steps"].as_array().into_iter().flatten() {
            for a in store_attempts(step) {
                attempts_total += 1;
                interrupted += usize::from(a.status == "interrupted");
            }
        }
        violations.extend(check_run(&doc, &ledger));
    }
    let executions: usize = ledger.values().flat_map(|m| m.values()).map(Vec::len).sum();
    eprintln!(
        "crash test: {KILLS} kills in {killed_at:?}, done in {:?}; {executions} executions, \
         {attempts_total} attempts, {interrupted} interrupted",
        began.elapsed()
    );
    assert!(
        violations.is_empty(),
        "seed {seed}: {} violations (ledger: {}):\n{}",
        violations.len(),
        sb.path("ledger").display(),
        violations.join("\n")
    );
    assert!(
        interrupted > 0,
        "seed {seed}: no attempt was interrupted by the {KILLS} kills: the test did not test"
    );
    assert!(began.elapsed() < Duration::from_secs(120), "took {:?}", began.elapsed());
}

/// Spins `n` threads until the returned flag is set: a busy machine, on
/// which tasks a worker spawns start late.
fn cpu_hogs(
    n: usize,
) -> (std::sync::Arc<std::sync::atomic::AtomicBool>, Vec<std::thread::JoinHandle<()>>) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let threads = (0..n)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                }
            })
        })
        .collect();
    (stop, threads)
}

#[test]
fn one_worker_never_drives_a_run_twice() {
    // No crash here: one `serve`, many queued runs, a busy machine. Each run
    // must be driven by one driver at a time, so no attempt is interrupted
    // and nothing fails. A lease far longer than the load can delay a
    // heartbeat: losing it would rightly stop and repeat steps, which is
    // not what this test is about (the crash tests cover takeover).
    let sb = Sandbox::new("crash-one-driver").env("LIFEBOAT_EXECUTOR__LEASE", "60s");
    let wf = exec_fixture("crash.yaml");
    let ids: Vec<String> = (0..40).map(|_| sb.enqueue(&wf, &[])).collect();
    let (stop, hogs) = cpu_hogs(3);
    let serve = sb.serve();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut finished = false;
    while Instant::now() < deadline {
        let runs = sb.runs();
        if runs.iter().all(|r| is_terminal(r["status"].as_str().unwrap_or(""))) {
            finished = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for h in hogs {
        let _ = h.join();
    }
    drop(serve);
    let ledger = parse_ledger(&sb.read("ledger"));
    let mut problems = Vec::new();
    if !finished {
        problems.push("not every run finished within 60s".to_string());
    }
    for id in &ids {
        let doc = sb.show(id);
        if doc["status"] != "succeeded" {
            problems.push(format!("run {id} ended {} ({})", doc["status"], doc["error"]));
        }
        for step in doc["steps"].as_array().into_iter().flatten() {
            let sid = step["id"].as_str().unwrap_or("?");
            let statuses: Vec<String> =
                store_attempts(step).into_iter().map(|a| a.status).collect();
            let expected: &[&str] = match sid {
                TIMER => &[],
                "right" => &["failed", "succeeded"],
                _ => &["succeeded"],
            };
            if statuses != expected {
                problems.push(format!(
                    "run {id}: step {sid}: attempts {statuses:?}, expected {expected:?}"
                ));
            }
            let executions: usize = ledger
                .get(&(id.clone(), sid.to_string()))
                .map(|m| m.values().map(Vec::len).sum())
                .unwrap_or(0);
            if executions != expected.len() {
                problems.push(format!("run {id}: step {sid} executed {executions} times"));
            }
        }
    }
    let log = sb.serve_logs();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).take(5).collect();
    assert!(
        problems.is_empty() && errors.is_empty(),
        "{} problems:\n{}\nserve errors:\n{}",
        problems.len(),
        problems.join("\n"),
        errors.join("\n")
    );
}
