//! High availability on Postgres: several `lifeboat serve` replicas share one
//! database. The guarantees of `crash.rs` (no run lost, a recorded success
//! never runs again, every execution is a recorded attempt, attempts never
//! overlap, dependencies hold) must survive `kill -9` of any replica and a
//! restart of the Postgres server itself. The ledger checks are `crash.rs`'s.
//!
//! These tests need a Postgres server: `LIFEBOAT_TEST_POSTGRES_URL` (a user
//! that may CREATE DATABASE; each test makes an `ha_<random>` database) and,
//! for the server restart, `LIFEBOAT_TEST_POSTGRES_DIR` (a cluster made by
//! `scripts/pg.sh`). `scripts/test.sh` starts one. Without them they print a
//! note and pass. `LIFEBOAT_TEST_HA_SEED=N` replays a kill schedule.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::crash::{Ledger, check_run, parse_ledger};
use crate::util::{Sandbox, Serve, exec_fixture, is_terminal, output_within, stderr, stdout};

/// The tests of this file one at a time: a Postgres restart must not hit the other test.
static SERIAL: Mutex<()> = Mutex::new(());

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// The test server's URL, or `None` (after a note) when there is none.
fn postgres_url(test: &str) -> Option<String> {
    // The pass that runs every test on Postgres shares the server with all of
    // them: restarting it there would break the others. These tests already
    // ran in the first pass, where only they use Postgres.
    if crate::util::on_postgres() {
        eprintln!("note: {test} runs in the SQLite pass only (it restarts the shared server)");
        return None;
    }
    match std::env::var("LIFEBOAT_TEST_POSTGRES_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            eprintln!(
                "note: {test} skipped: LIFEBOAT_TEST_POSTGRES_URL is not set \
                 (scripts/test.sh starts a throwaway Postgres and sets it)"
            );
            None
        }
    }
}

fn seed() -> u64 {
    std::env::var("LIFEBOAT_TEST_HA_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(42)
    })
}

/// `psql URL -c SQL`, which must succeed.
fn psql(url: &str, sql: &str) {
    let mut cmd = Command::new("psql");
    cmd.arg(url).args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql]);
    let out = output_within(cmd, Duration::from_secs(30));
    assert!(out.status.success(), "psql -c {sql:?} failed:\n{}{}", stdout(&out), stderr(&out));
}

/// A fresh `ha_<random>` database on the test server; a sandbox (scratch
/// directory, fast executor settings) whose commands all use it.
fn sandbox(name: &str, base: &str) -> (Sandbox, String) {
    let db = format!("ha_{:016x}", fastrand::u64(..));
    psql(base, &format!("CREATE DATABASE {db}"));
    let mut sb = Sandbox::new(name)
        .env("LIFEBOAT_EXECUTOR__LEASE", "1500ms")
        .env("LIFEBOAT_EXECUTOR__HEARTBEAT", "300ms")
        .env("LIFEBOAT_EXECUTOR__POLL", "100ms")
        // Few runs per replica: the runs spread over the replicas (one would
        // otherwise claim them all), and a kill always interrupts some.
        .env("LIFEBOAT_EXECUTOR__MAX_RUNS", "8");
    sb.url = lifeboat_orchestrator::store::postgres::with_database(base, &db);
    (sb, db)
}

/// The pid in a worker id (`HOST-PID-SUFFIX`).
fn worker_pid(worker: &str) -> Option<u32> {
    worker.rsplit('-').nth(1).and_then(|p| p.parse().ok())
}

/// Waits until all `expected` runs are terminal, calling `tick` between polls.
/// Returns the runs still active if the deadline passes.
fn wait_all_terminal(
    sb: &Sandbox,
    expected: usize,
    timeout: Duration,
    mut tick: impl FnMut(),
) -> Result<(), Vec<String>> {
    let deadline = Instant::now() + timeout;
    loop {
        tick();
        let runs = sb.runs();
        let active: Vec<String> = runs
            .iter()
            .filter(|r| !is_terminal(r["status"].as_str().unwrap_or("")))
            .map(|r| format!("{} {}", r["id"], r["status"]))
            .collect();
        if runs.len() == expected && active.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(active);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The store's rows of the runs not finished (lease, timer, pause) and their
/// steps, for a failure message.
fn stuck_runs(sb: &Sandbox) -> String {
    let sql = "SELECT id, status, paused, woken, wake_at, lease_owner, lease_expires_at, \
               (extract(epoch from clock_timestamp()) * 1000)::bigint AS now_ms FROM runs \
               WHERE status NOT IN ('succeeded', 'failed', 'rolled_back', 'rollback_failed', \
               'cancelled')";
    let mut cmd = Command::new("psql");
    cmd.arg(&sb.url).env("PGOPTIONS", "-c search_path=lifeboat").args(["-X", "-c", sql]);
    let mut text = match crate::util::output_or_timeout(cmd, Duration::from_secs(30)) {
        Ok(out) => format!("{}{}", stdout(&out), stderr(&out)),
        Err(e) => e,
    };
    for run in sb.runs().iter().filter(|r| !is_terminal(r["status"].as_str().unwrap_or(""))) {
        let doc = sb.show(run["id"].as_str().unwrap_or("?"));
        text.push_str(&format!("run {}:\n", doc["id"]));
        for step in doc["steps"].as_array().into_iter().flatten() {
            let attempts: Vec<String> = step["attempts"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| format!("{} {} {}", a["n"], a["status"], a["worker"]))
                .collect();
            text.push_str(&format!(
                "  {} {} started {} finished {} attempts {attempts:?}\n",
                step["id"], step["status"], step["started_at"], step["finished_at"]
            ));
        }
    }
    text
}

/// What the store says about every run, checked against the ledger.
struct Verdict {
    docs: Vec<Value>,
    violations: Vec<String>,
    executions: usize,
    attempts: usize,
    interrupted: usize,
}

fn verdict(sb: &Sandbox, ids: &[String]) -> Verdict {
    let ledger: Ledger = parse_ledger(&sb.read("ledger"));
    let known: HashSet<&str> = ids.iter().map(String::as_str).collect();
    let mut violations: Vec<String> = ledger
        .keys()
        .filter(|(run, _)| !known.contains(run.as_str()))
        .map(|(run, step)| format!("the ledger names an unknown run {run} (step {step})"))
        .collect();
    let (mut attempts, mut interrupted) = (0, 0);
    let mut docs = Vec::new();
    for id in ids {
        let doc = sb.show(id);
        for a in forward_attempts(&doc) {
            attempts += 1;
            interrupted += usize::from(a["status"] == "interrupted");
        }
        violations.extend(check_run(&doc, &ledger));
        docs.push(doc);
    }
    let executions = ledger.values().flat_map(|m| m.values()).map(Vec::len).sum();
    Verdict { docs, violations, executions, attempts, interrupted }
}

fn forward_attempts(doc: &Value) -> impl Iterator<Item = &Value> {
    doc["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["attempts"].as_array().into_iter().flatten())
        .filter(|a| a["phase"] != "rollback")
}

/// The first ERROR lines of the serve logs in the sandbox, and how many there are.
fn serve_errors(sb: &Sandbox) -> (usize, Vec<String>) {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(&sb.dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    logs.retain(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("serve-")));
    logs.sort();
    let mut count = 0;
    let mut first = Vec::new();
    for log in logs {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains("ERROR") || l.contains("Error:")) {
            count += 1;
            if first.len() < 8 {
                let name = log.file_name().unwrap_or_default().to_string_lossy().into_owned();
                first.push(format!("{name}: {line}"));
            }
        }
    }
    (count, first)
}

#[test]
fn three_replicas_killed_at_random_lose_no_run() {
    const RUNS: usize = 50;
    const REPLICAS: usize = 3;
    const KILLS: usize = 18;
    let Some(base) = postgres_url("three_replicas_killed_at_random_lose_no_run") else {
        return;
    };
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let began = Instant::now();
    let seed = seed();
    eprintln!("ha test: seed {seed} (LIFEBOAT_TEST_HA_SEED={seed} replays the kill schedule)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let (sb, db) = sandbox("ha-replicas", &base);

    let wf = exec_fixture("crash.yaml");
    let ids: Vec<String> = (0..RUNS).map(|_| sb.enqueue(&wf, &[])).collect();

    // Worker pid -> replica slot, to tell a takeover by another replica from a restart.
    let mut slot_of: HashMap<u32, usize> = HashMap::new();
    let mut replicas: Vec<Option<Serve>> = Vec::new();
    for slot in 0..REPLICAS {
        let serve = sb.serve();
        slot_of.insert(serve.pid(), slot);
        replicas.push(Some(serve));
    }

    // Each tick: bring the replica killed last tick back, then kill one at random.
    for kill in 0..KILLS {
        std::thread::sleep(Duration::from_millis(rng.u64(100..900)));
        for (slot, r) in replicas.iter_mut().enumerate() {
            match r {
                Some(serve) => assert!(
                    serve.alive(),
                    "seed {seed}: replica {slot} (before kill {kill}) exited on its own; \
                     see {}/serve-*.log",
                    sb.dir.display()
                ),
                None => {
                    let serve = sb.serve();
                    slot_of.insert(serve.pid(), slot);
                    *r = Some(serve);
                }
            }
        }
        let victim = rng.usize(0..REPLICAS);
        if let Some(mut serve) = replicas[victim].take() {
            serve.kill9();
        }
    }
    for (slot, r) in replicas.iter_mut().enumerate() {
        if r.is_none() {
            let serve = sb.serve();
            slot_of.insert(serve.pid(), slot);
            *r = Some(serve);
        }
    }
    let killed_at = began.elapsed();

    let finished = wait_all_terminal(&sb, RUNS, Duration::from_secs(45), || {
        for (slot, serve) in replicas.iter_mut().flatten().enumerate() {
            assert!(serve.alive(), "seed {seed}: replica {slot} exited on its own after the kills");
        }
    });
    drop(replicas);
    if let Err(active) = finished {
        panic!(
            "seed {seed}: {} runs still active 45s after the last kill: {active:#?}\n{}",
            active.len(),
            stuck_runs(&sb)
        );
    }

    let v = verdict(&sb, &ids);
    // Takeover: a step whose attempts were made by more than one worker, and
    // among those, attempts that moved to another replica (not its restart).
    let (mut multi_worker_steps, mut cross_replica) = (0, 0);
    for doc in &v.docs {
        for step in doc["steps"].as_array().into_iter().flatten() {
            let workers: Vec<&str> = step["attempts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| a["phase"] != "rollback")
                .filter_map(|a| a["worker"].as_str())
                .collect();
            if workers.iter().collect::<BTreeSet<_>>().len() > 1 {
                multi_worker_steps += 1;
            }
            let slots: Vec<Option<usize>> = workers
                .iter()
                .map(|w| worker_pid(w).and_then(|p| slot_of.get(&p).copied()))
                .collect();
            cross_replica += slots
                .windows(2)
                .filter(|w| w[0].is_some() && w[1].is_some() && w[0] != w[1])
                .count();
        }
    }
    eprintln!(
        "ha test: {KILLS} kills of {REPLICAS} replicas in {killed_at:?}, done in {:?}; \
         {} executions, {} attempts, {} interrupted; {multi_worker_steps} steps attempted by \
         more than one worker, {cross_replica} attempt hand-overs to another replica",
        began.elapsed(),
        v.executions,
        v.attempts,
        v.interrupted
    );
    assert!(
        v.violations.is_empty(),
        "seed {seed}: {} violations (ledger: {}):\n{}",
        v.violations.len(),
        sb.path("ledger").display(),
        v.violations.join("\n")
    );
    assert!(v.interrupted > 0, "seed {seed}: no attempt was interrupted by the {KILLS} kills");
    assert!(
        multi_worker_steps > 0,
        "seed {seed}: no step was attempted by more than one worker: no takeover happened"
    );
    assert!(began.elapsed() < Duration::from_secs(90), "took {:?}", began.elapsed());
    psql(&base, &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
}

/// Whether this process runs as root.
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// `pg_ctl restart -m fast` of the test cluster, as the cluster's owner.
fn restart_postgres(dir: &str) -> Duration {
    let data = format!("{dir}/data");
    let pg_ctl = format!("{PG_BIN}/pg_ctl");
    let log = format!("{dir}/postgres.log");
    let args = ["-D", &data, "-l", &log, "-m", "fast", "-w", "-t", "60", "restart"];
    let mut cmd = if is_root() {
        let owner = Command::new("stat").args(["-c", "%U", &data]).output().expect("stat");
        let owner = String::from_utf8_lossy(&owner.stdout).trim().to_string();
        if owner.is_empty() || owner == "root" {
            Command::new(&pg_ctl)
        } else {
            let mut c = Command::new("runuser");
            c.args(["-u", &owner, "--", &pg_ctl]);
            c
        }
    } else {
        Command::new(&pg_ctl)
    };
    // The cluster's owner must be able to read the working directory.
    cmd.args(args).current_dir(dir);
    let t = Instant::now();
    let out = output_within(cmd, Duration::from_secs(90));
    assert!(out.status.success(), "pg_ctl restart failed:\n{}{}", stdout(&out), stderr(&out));
    t.elapsed()
}

#[test]
fn postgres_restart_during_runs_loses_nothing() {
    const RUNS: usize = 20;
    const REPLICAS: usize = 2;
    let Some(base) = postgres_url("postgres_restart_during_runs_loses_nothing") else {
        return;
    };
    let Some(pg_dir) = std::env::var("LIFEBOAT_TEST_POSTGRES_DIR").ok().filter(|d| !d.is_empty())
    else {
        eprintln!(
            "note: postgres_restart_during_runs_loses_nothing skipped: \
             LIFEBOAT_TEST_POSTGRES_DIR is not set (a server of your own is not restarted)"
        );
        return;
    };
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let began = Instant::now();
    let (sb, db) = sandbox("ha-pg-restart", &base);
    let wf = exec_fixture("crash.yaml");

    // Half the runs first; the rest after the first restart, so both restarts
    // land while runs are in progress.
    let mut ids: Vec<String> = (0..RUNS / 2).map(|_| sb.enqueue(&wf, &[])).collect();
    let mut replicas: Vec<Serve> = (0..REPLICAS).map(|_| sb.serve()).collect();
    // Replicas that exited on their own (and were restarted): (replica, when).
    let mut exits: Vec<(usize, Duration)> = Vec::new();
    let revive = |replicas: &mut Vec<Serve>, exits: &mut Vec<(usize, Duration)>| {
        for (slot, serve) in replicas.iter_mut().enumerate() {
            if !serve.alive() {
                exits.push((slot, began.elapsed()));
                *serve = sb.serve();
            }
        }
    };

    let mut outages = Vec::new();
    std::thread::sleep(Duration::from_millis(700));
    outages.push((began.elapsed(), restart_postgres(&pg_dir)));
    revive(&mut replicas, &mut exits);
    ids.extend((0..RUNS - RUNS / 2).map(|_| sb.enqueue(&wf, &[])));
    std::thread::sleep(Duration::from_millis(1200));
    outages.push((began.elapsed(), restart_postgres(&pg_dir)));
    revive(&mut replicas, &mut exits);

    let finished =
        wait_all_terminal(&sb, RUNS, Duration::from_secs(45), || revive(&mut replicas, &mut exits));
    drop(replicas);
    let (errors, first_errors) = serve_errors(&sb);
    let report = format!(
        "Postgres restarts at (elapsed, pg_ctl took) {outages:?}; serve replicas that exited \
         on their own and were restarted: {} {exits:?}; {errors} ERROR lines in serve logs{}",
        exits.len(),
        if first_errors.is_empty() {
            String::new()
        } else {
            format!(", first:\n{}", first_errors.join("\n"))
        }
    );
    if let Err(active) = finished {
        panic!(
            "{} runs still active 45s after the restarts: {active:#?}\n{report}\n{}",
            active.len(),
            stuck_runs(&sb)
        );
    }

    let v = verdict(&sb, &ids);
    eprintln!(
        "ha test (postgres restart): done in {:?}; {} executions, {} attempts, {} interrupted; \
         {report}",
        began.elapsed(),
        v.executions,
        v.attempts,
        v.interrupted
    );
    assert!(
        v.violations.is_empty(),
        "{} violations (ledger: {}):\n{}\n{report}",
        v.violations.len(),
        sb.path("ledger").display(),
        v.violations.join("\n")
    );
    assert!(began.elapsed() < Duration::from_secs(90), "took {:?}", began.elapsed());
    psql(&base, &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
}

/// The lease is the takeover bound: a replica killed mid-step has its run
/// picked up by another replica within the lease (plus one poll), and the
/// interrupted step runs again there as a new attempt.
#[test]
fn takeover_happens_within_the_lease_time() {
    const LEASE_MS: i64 = 1_500;
    const POLL_MS: i64 = 100;
    let Some(base) = postgres_url("takeover_happens_within_the_lease_time") else {
        return;
    };
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (sb, db) = sandbox("ha-takeover", &base);
    let wf = sb.write(
        "slow.yaml",
        "name: slow\nsteps:\n  work:\n    uses: shell\n    with: { command: [sleep, \"3\"] }\n",
    );
    let mut delays = Vec::new();
    for round in 0..3 {
        let run = sb.enqueue(wf.to_str().unwrap(), &[]);
        let mut first = sb.serve();
        let doc = sb.wait_for(&run, Duration::from_secs(20), |d| {
            crate::util::attempts(d, "work").iter().any(|a| a["status"] == "running")
        });
        let first_worker =
            crate::util::attempts(&doc, "work")[0]["worker"].as_str().unwrap().to_string();
        let second = sb.serve();
        // Let the second replica come up and register before the kill.
        std::thread::sleep(Duration::from_millis(500));
        let killed_at = chrono::Utc::now().timestamp_millis();
        first.kill9();
        let doc = sb.wait_for(&run, Duration::from_secs(20), |d| {
            crate::util::attempts(d, "work").len() >= 2
        });
        let next = crate::util::attempts(&doc, "work")[1];
        assert_ne!(next["worker"].as_str(), Some(first_worker.as_str()), "round {round}");
        let delay = crate::util::ms(&next["started_at"]) - killed_at;
        delays.push(delay);
        drop(second);
        drop(first);
        assert!(
            delay <= LEASE_MS + 2 * POLL_MS + 400,
            "round {round}: the run was taken over {delay} ms after the kill; lease {LEASE_MS} ms"
        );
    }
    eprintln!("ha test: takeover {delays:?} ms after kill -9 (lease {LEASE_MS} ms)");
    psql(&base, &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
}
