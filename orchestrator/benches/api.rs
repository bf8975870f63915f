//! Front-door benchmark: the real `lifeboat serve`, driven through its HTTP
//! API the way users start runs, reporting latency distributions and
//! throughputs as one line per scenario and a Markdown table at the end.
//!
//! ```text
//! cargo bench -p lifeboat-orchestrator --bench api -- [--scenario chain,fan,burst,webhook,wait,history]
//!     [--runs N] [--backend sqlite|postgres] [--history 0,10000,100000] [--poll 5ms]
//! ```
//!
//! - `chain` / `fan`: chain40 (40 steps in a line) and fan100 (1 → 100 → 1),
//!   with `set` steps and with `shell` steps running `true`.
//!   `POST /api/v1/workflows/{name}/runs`, then `GET /api/v1/runs/{id}` every
//!   millisecond until the run has ended, `--runs` times (default 30) one
//!   after another. End to end (client) p50/p90/max, the run's own time
//!   (`created_at` → `finished_at`) and its queueing (`created_at` →
//!   `started_at`).
//! - `burst`: 16 keep-alive clients POST 500 runs of 3 `set` steps; runs/s
//!   until the last POST is answered, steps/s until the last run's
//!   `finished_at`.
//! - `webhook`: JSON alerts (bearer token, each distinct) to `/hooks/bench`
//!   at a steady 500/s for 5 s from 16 clients; latency = the first step's
//!   `started_at` minus the client's send time (same clock; the server
//!   records milliseconds, so figures are ±1 ms).
//! - `wait`: `lifeboat run chain40 --wait --json` as a process (no serve):
//!   its wall time against the run's own time.
//! - `history`: the database seeded with N finished 3-step runs (see
//!   `api/seed.rs`), then `GET /api/v1/runs?limit=50`, the same filtered to
//!   `status=waiting` (the API has no `pending`), `lifeboat pending --json`
//!   as a process, and the burst.
//!
//! Each scenario gets a fresh directory, database (on Postgres a fresh
//! schema `bench_…` of `LIFEBOAT_BENCH_POSTGRES_URL` or
//! `LIFEBOAT_TEST_POSTGRES_URL`, dropped afterwards) and port, and the
//! default `[executor]` settings unless `--poll` is given.
//! `LIFEBOAT_BENCH_BIN=/path/to/lifeboat` measures another build.

mod common;
#[path = "api/seed.rs"]
mod seed;

use std::fmt::Write as _;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Serve, binary};
use serde_json::Value;

const TOKEN: &str = "ops-token";
const HOOK_TOKEN: &str = "hook-token";
const CLIENTS: usize = 16;
const BURST_RUNS: usize = 500;
const WEBHOOK_RATE: u64 = 500;
const WEBHOOK_SECS: u64 = 5;

#[derive(Clone, Copy, PartialEq)]
enum Scenario {
    Chain,
    Fan,
    Burst,
    Webhook,
    Wait,
    History,
}

struct Opts {
    scenarios: Vec<Scenario>,
    runs: usize,
    postgres: Option<String>,
    history: Vec<u64>,
    poll: Option<String>,
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "{problem}\nusage: cargo bench --bench api -- [--scenario chain,fan,burst,webhook,wait,history] \
         [--runs N] [--backend sqlite|postgres] [--history 0,10000,100000] [--poll DURATION]"
    );
    std::process::exit(2)
}

fn opts() -> Opts {
    use Scenario::*;
    let mut o = Opts {
        scenarios: vec![Chain, Fan, Burst, Webhook, Wait],
        runs: 30,
        postgres: None,
        history: vec![0, 10_000, 100_000],
        poll: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value =
            |name: &str| args.next().unwrap_or_else(|| usage(&format!("{name} needs a value")));
        match arg.as_str() {
            // cargo bench passes `--bench` to harness-less benchmarks.
            "--bench" => {}
            "--scenario" => {
                o.scenarios = value("--scenario")
                    .split(',')
                    .map(|s| match s.trim() {
                        "chain" => Chain,
                        "fan" => Fan,
                        "burst" => Burst,
                        "webhook" => Webhook,
                        "wait" => Wait,
                        "history" => History,
                        other => usage(&format!("unknown scenario `{other}`")),
                    })
                    .collect()
            }
            "--runs" => {
                o.runs = value("--runs").parse().unwrap_or_else(|_| usage("--runs: not a number"))
            }
            "--backend" => match value("--backend").as_str() {
                "sqlite" => o.postgres = None,
                "postgres" => {
                    let url = std::env::var("LIFEBOAT_BENCH_POSTGRES_URL")
                        .or_else(|_| std::env::var("LIFEBOAT_TEST_POSTGRES_URL"))
                        .unwrap_or_else(|_| {
                            usage("--backend postgres: set LIFEBOAT_BENCH_POSTGRES_URL or LIFEBOAT_TEST_POSTGRES_URL")
                        });
                    o.postgres = Some(url)
                }
                other => usage(&format!("unknown backend `{other}`")),
            },
            "--history" => {
                o.history = value("--history")
                    .split(',')
                    .map(|s| s.trim().parse().unwrap_or_else(|_| usage("--history: not a number")))
                    .collect()
            }
            "--poll" => o.poll = Some(value("--poll")),
            other => usage(&format!("unknown option `{other}`")),
        }
    }
    o
}

fn unix_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs_f64() * 1000.0
}

/// An RFC 3339 time of a run document, as unix milliseconds.
fn ms(v: &Value) -> Option<f64> {
    let t = chrono::DateTime::parse_from_rfc3339(v.as_str()?).ok()?;
    Some(t.timestamp_millis() as f64)
}

fn ended(run: &Value) -> bool {
    matches!(
        run["status"].as_str(),
        Some("succeeded" | "failed" | "rolled_back" | "rollback_failed" | "cancelled")
    )
}

/// Nearest-rank percentile of `v` (sorted here), in the unit of `v`.
fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn dist(v: &mut [f64], p: f64) -> String {
    let (a, b, c) = (pct(v, 50.0), pct(v, p), pct(v, 100.0));
    format!("p50 {a:.1} / p{p} {b:.1} / max {c:.1} ms")
}

fn chain(n: usize, body: &str) -> String {
    let mut s = String::new();
    for i in 0..n {
        let needs = if i == 0 { String::new() } else { format!(", needs: [s{}]", i - 1) };
        let _ = writeln!(s, "  s{i}: {{ {body}{needs} }}");
    }
    s
}

fn fan(n: usize, body: &str) -> String {
    let mut s = format!("  start: {{ {body} }}\n");
    let all: Vec<String> = (0..n).map(|i| format!("p{i}")).collect();
    for p in &all {
        let _ = writeln!(s, "  {p}: {{ {body}, needs: [start] }}");
    }
    let _ = writeln!(s, "  end: {{ {body}, needs: [{}] }}", all.join(", "));
    s
}

const SET: &str = "uses: set, with: { x: 1 }";
const SHELL: &str = "uses: shell, with: { command: [\"true\"] }";

/// A scenario's world: a directory with `lifeboat.toml` and the benchmark
/// workflows, and its own database.
struct Sandbox {
    dir: tempfile::TempDir,
    url: String,
    /// Postgres: the server URL and the schema to drop afterwards.
    pg: Option<(String, String)>,
}

impl Sandbox {
    fn new(o: &Opts) -> Sandbox {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = tempfile::tempdir().expect("tempdir");
        let workflows = dir.path().join("workflows");
        std::fs::create_dir_all(&workflows).expect("workflows dir");
        let mut config = String::from(
            "[[users]]\nname = \"ops\"\ntoken_env = \"LIFEBOAT_BENCH_TOKEN\"\nroles = [\"operator\"]\n\
             [hooks.bench]\nformat = \"json\"\nbearer_token_env = \"LIFEBOAT_BENCH_HOOK\"\n",
        );
        if std::env::var_os("LIFEBOAT_BENCH_NO_HOOK_LIMITS").is_none() {
            config.push_str("rate_per_minute = 10000000\nburst = 1000000\n");
        }
        if let Some(poll) = &o.poll {
            let _ = write!(config, "[executor]\npoll = \"{poll}\"\n");
        }
        std::fs::write(dir.path().join("lifeboat.toml"), config).expect("config");
        let files = [
            ("chain40", chain(40, SET)),
            ("chain40_shell", chain(40, SHELL)),
            ("fan100", fan(100, SET)),
            ("fan100_shell", fan(100, SHELL)),
            ("burst3", chain(3, SET)),
        ];
        for (name, steps) in files {
            std::fs::write(
                workflows.join(format!("{name}.yaml")),
                format!("name: {name}\nsteps:\n{steps}"),
            )
            .expect("workflow");
        }
        std::fs::write(
            workflows.join("hooked.yaml"),
            "name: hooked\ninputs: { service: { type: string } }\ntriggers:\n  - webhook: bench\n    \
             inputs: { service: \"{{event.service}}\" }\nsteps:\n  a: { uses: set, with: { s: \"{{inputs.service}}\" } }\n",
        )
        .expect("workflow");
        let (url, pg) = match &o.postgres {
            None => (format!("sqlite://{}", dir.path().join("lb.db").display()), None),
            Some(server) => {
                let schema =
                    format!("bench_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
                let sep = if server.contains('?') { '&' } else { '?' };
                (format!("{server}{sep}schema={schema}"), Some((server.clone(), schema)))
            }
        };
        Sandbox { dir, url, pg }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(binary());
        cmd.arg("--database-url").arg(&self.url).args(args).current_dir(self.dir.path());
        cmd.env("LIFEBOAT_BENCH_TOKEN", TOKEN).env("LIFEBOAT_BENCH_HOOK", HOOK_TOKEN);
        cmd.env("LIFEBOAT_LOG", "error").env("NO_COLOR", "1");
        cmd
    }

    fn serve(&self) -> Serve {
        Serve::start(self.command(&["serve"]))
    }

    fn seed_target(&self) -> seed::Target<'_> {
        match &self.pg {
            None => seed::Target::Sqlite { url: &self.url },
            Some((url, schema)) => seed::Target::Postgres { url, schema },
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some((server, schema)) = &self.pg {
            let _ = Command::new("psql")
                .args([server.as_str(), "-qc", &format!("DROP SCHEMA IF EXISTS {schema} CASCADE")])
                .output();
        }
    }
}

/// A keep-alive API client of one serve.
struct Api {
    http: reqwest::blocking::Client,
    base: String,
}

impl Api {
    fn new(serve: &Serve) -> Api {
        Api { http: reqwest::blocking::Client::new(), base: serve.base.clone() }
    }

    fn start(&self, workflow: &str) -> String {
        let reply = self
            .http
            .post(format!("{}/api/v1/workflows/{workflow}/runs", self.base))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({}))
            .send()
            .expect("POST runs");
        assert_eq!(reply.status(), 201, "start {workflow}");
        let body: Value = reply.json().expect("run id");
        body["id"].as_str().expect("id").to_string()
    }

    fn get(&self, path: &str) -> Value {
        let reply =
            self.http.get(format!("{}{path}", self.base)).bearer_auth(TOKEN).send().expect("GET");
        assert!(reply.status().is_success(), "GET {path}: {}", reply.status());
        reply.json().expect("JSON")
    }

    fn run(&self, id: &str) -> Value {
        self.get(&format!("/api/v1/runs/{id}"))
    }

    /// Reads the run every `every` until it has ended, and checks it succeeded.
    fn until_ended(&self, id: &str, every: Duration) -> Value {
        loop {
            let run = self.run(id);
            if ended(&run) {
                assert_eq!(run["status"], "succeeded", "run {id}: {}", run["error"]);
                return run;
            }
            std::thread::sleep(every);
        }
    }
}

/// One printed line and one table row.
struct Report {
    rows: Vec<(String, String)>,
    backend: &'static str,
}

impl Report {
    fn line(&mut self, scenario: String, figures: String) {
        println!("{:<7} {scenario:<28} {figures}", self.backend);
        self.rows.push((scenario, figures));
    }
}

fn latency(o: &Opts, r: &mut Report, workflow: &str) {
    let sb = Sandbox::new(o);
    let serve = sb.serve();
    let api = Api::new(&serve);
    let (mut e2e, mut own, mut queued) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..o.runs {
        let t = Instant::now();
        let id = api.start(workflow);
        let run = api.until_ended(&id, Duration::from_millis(1));
        e2e.push(t.elapsed().as_secs_f64() * 1000.0);
        let created = ms(&run["created_at"]).expect("created_at");
        own.push(ms(&run["finished_at"]).expect("finished_at") - created);
        queued.push(ms(&run["started_at"]).expect("started_at") - created);
    }
    r.line(
        format!("{workflow} (n={})", o.runs),
        format!(
            "end to end {}; run's own p50 {:.1} / max {:.1} ms; queued p50 {:.1} ms",
            dist(&mut e2e, 90.0),
            pct(&mut own, 50.0),
            pct(&mut own, 100.0),
            pct(&mut queued, 50.0)
        ),
    );
}

/// 500 runs of burst3 from 16 clients: (runs/s created, steps/s end to end).
/// Waits for the end in the database (see `seed::Db`), then checks every
/// run succeeded through the API.
fn burst(sb: &Sandbox, serve: &Serve) -> (f64, f64) {
    let mut db = seed::Db::open(&sb.seed_target());
    let start = unix_ms();
    let t = Instant::now();
    let next = AtomicUsize::new(0);
    let ids = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..CLIENTS {
            s.spawn(|| {
                let api = Api::new(serve);
                while next.fetch_add(1, Ordering::Relaxed) < BURST_RUNS {
                    let id = api.start("burst3");
                    ids.lock().expect("ids").push(id);
                }
            });
        }
    });
    let created = t.elapsed().as_secs_f64();
    while db.active() > 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let last = db.last_finished("burst3", start as i64) as f64;
    let api = Api::new(serve);
    for id in ids.into_inner().expect("ids") {
        api.until_ended(&id, Duration::from_millis(5));
    }
    let total = (last - start) / 1000.0;
    (BURST_RUNS as f64 / created, (BURST_RUNS * 3) as f64 / total)
}

fn burst_line(o: &Opts, r: &mut Report) {
    let sb = Sandbox::new(o);
    let serve = sb.serve();
    let (created, steps) = burst(&sb, &serve);
    r.line(
        format!("burst {BURST_RUNS}x3 set"),
        format!("created {created:.0} runs/s; end to end {steps:.0} steps/s"),
    );
}

fn webhook(o: &Opts, r: &mut Report) {
    let sb = Sandbox::new(o);
    let serve = sb.serve();
    let total = (WEBHOOK_RATE * WEBHOOK_SECS) as usize;
    let next = AtomicUsize::new(0);
    let sent = Mutex::new(Vec::with_capacity(total));
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..CLIENTS {
            s.spawn(|| {
                let http = reqwest::blocking::Client::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return;
                    }
                    let due = t0 + Duration::from_micros(i as u64 * 1_000_000 / WEBHOOK_RATE);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let at = unix_ms();
                    let reply = http
                        .post(format!("{}/hooks/bench", serve.base))
                        .bearer_auth(HOOK_TOKEN)
                        .json(&serde_json::json!({ "service": format!("svc-{i}") }))
                        .send()
                        .expect("POST /hooks/bench");
                    assert_eq!(reply.status(), 202, "hook");
                    let body: Value = reply.json().expect("hook answer");
                    let id = body["runs"][0].as_str().expect("a run started").to_string();
                    sent.lock().expect("sent").push((at, id));
                }
            });
        }
    });
    let rate = total as f64 / t0.elapsed().as_secs_f64();
    let api = Api::new(&serve);
    let mut lat = Vec::new();
    for (at, id) in sent.into_inner().expect("sent") {
        let run = api.until_ended(&id, Duration::from_millis(5));
        let first = run["steps"][0]["started_at"].clone();
        lat.push(ms(&first).expect("first step started_at") - at);
    }
    r.line(
        format!("webhook→first step ({total})"),
        format!("{}; sent at {rate:.0}/s", dist(&mut lat, 99.0)),
    );
}

fn wait(o: &Opts, r: &mut Report) {
    let sb = Sandbox::new(o);
    let (mut wall, mut own, mut diff) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..o.runs {
        let t = Instant::now();
        let out = sb.command(&["run", "chain40", "--wait", "--json"]).output().expect("run --wait");
        let w = t.elapsed().as_secs_f64() * 1000.0;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let run: Value = serde_json::from_slice(&out.stdout).expect("run document");
        let d = ms(&run["finished_at"]).expect("finished_at")
            - ms(&run["created_at"]).expect("created_at");
        wall.push(w);
        own.push(d);
        diff.push(w - d);
    }
    r.line(
        format!("run chain40 --wait (n={})", o.runs),
        format!(
            "process {}; run's own p50 {:.1} ms; difference p50 {:.1} ms",
            dist(&mut wall, 90.0),
            pct(&mut own, 50.0),
            pct(&mut diff, 50.0)
        ),
    );
}

fn timed(n: usize, mut f: impl FnMut()) -> f64 {
    let mut v: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    pct(&mut v, 50.0)
}

fn history(o: &Opts, r: &mut Report, count: u64) {
    let sb = Sandbox::new(o);
    let out = sb.command(&["run", "burst3", "--wait", "--json"]).output().expect("run --wait");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run: Value = serde_json::from_slice(&out.stdout).expect("run document");
    let template = run["id"].as_str().expect("id");
    let seeding = seed::seed(&sb.seed_target(), template, count);
    let t = Instant::now();
    let serve = sb.serve();
    let up = t.elapsed().as_secs_f64() * 1000.0;
    let api = Api::new(&serve);
    let listed = api.get("/api/v1/runs?limit=50");
    assert_eq!(listed.as_array().map(Vec::len), Some(50.min(count as usize + 1)), "run list");
    let list = timed(20, || {
        api.get("/api/v1/runs?limit=50");
    });
    let waiting = timed(20, || {
        api.get("/api/v1/runs?status=waiting&limit=50");
    });
    let pending = timed(10, || {
        let out = sb.command(&["pending", "--json"]).output().expect("pending");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    });
    let (created, steps) = burst(&sb, &serve);
    r.line(
        format!("history {count}"),
        format!(
            "seeded in {:.1} s; serve up in {up:.0} ms; burst created {created:.0} runs/s, {steps:.0} steps/s; \
             list p50 {list:.1} ms; list waiting p50 {waiting:.1} ms; `pending` process p50 {pending:.1} ms",
            seeding.as_secs_f64()
        ),
    );
}

fn main() {
    let o = opts();
    let backend = if o.postgres.is_some() { "postgres" } else { "sqlite" };
    let mut r = Report { rows: Vec::new(), backend };
    for s in &o.scenarios {
        match s {
            Scenario::Chain => {
                latency(&o, &mut r, "chain40");
                latency(&o, &mut r, "chain40_shell");
            }
            Scenario::Fan => {
                latency(&o, &mut r, "fan100");
                latency(&o, &mut r, "fan100_shell");
            }
            Scenario::Burst => burst_line(&o, &mut r),
            Scenario::Webhook => webhook(&o, &mut r),
            Scenario::Wait => wait(&o, &mut r),
            Scenario::History => {
                for &count in &o.history {
                    history(&o, &mut r, count);
                }
            }
        }
    }
    let poll = o.poll.as_deref().map(|p| format!(", [executor] poll = {p}")).unwrap_or_default();
    println!("\n| {backend}{poll} | figures |\n|---|---|");
    for (scenario, figures) in &r.rows {
        println!("| {scenario} | {figures} |");
    }
}
