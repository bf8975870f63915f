//! Helpers shared by the end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The workspace root: tests run from there so paths in messages are stable.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// `lifeboat` with a clean, colourless environment, run from the workspace root.
pub fn lifeboat(args: &[&str]) -> Output {
    lifeboat_in(&root(), args)
}

/// `lifeboat` run from `dir` (where no `lifeboat.toml` is picked up unless `dir` has one).
pub fn lifeboat_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("LIFEBOAT_CONFIG")
        .env_remove("LIFEBOAT_DATABASE_URL")
        .output()
        .expect("run lifeboat")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A fresh, empty directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

// ---------------------------------------------------------------------------
// Executor tests: a scratch directory with its own SQLite database.

/// Executor settings that make takeover after a crash quick, in the
/// sandbox's `lifeboat.toml` (picked up from the working directory).
/// `LIFEBOAT_EXECUTOR__*` variables (`Sandbox::env`) override them.
pub const FAST_EXECUTOR: &str =
    "[executor]\nlease = \"2s\"\nheartbeat = \"500ms\"\npoll = \"100ms\"\n";

/// A path under `tests/fixtures/exec/`, absolute.
pub fn exec_fixture(name: &str) -> String {
    root().join("tests/fixtures/exec").join(name).display().to_string()
}

/// `LIFEBOAT_E2E_BACKEND=postgres` (set by scripts/test.sh for its second
/// pass) runs every end-to-end test against Postgres instead of SQLite.
pub fn on_postgres() -> bool {
    std::env::var("LIFEBOAT_E2E_BACKEND").is_ok_and(|b| b == "postgres")
}

/// A fresh database on the test Postgres server; its URL.
fn postgres_database(name: &str) -> String {
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

/// One test's world: a scratch directory (the working directory of every
/// `lifeboat` process, so steps write their files there) with a
/// `lifeboat.toml` and a SQLite file.
pub struct Sandbox {
    pub dir: PathBuf,
    pub db: PathBuf,
    pub url: String,
    envs: Vec<(String, String)>,
}

impl Sandbox {
    pub fn new(name: &str) -> Sandbox {
        let dir = scratch(name);
        let db = dir.join("lifeboat.db");
        let url = if on_postgres() {
            postgres_database(name)
        } else {
            format!("sqlite://{}", db.display())
        };
        std::fs::write(dir.join("lifeboat.toml"), FAST_EXECUTOR).expect("write lifeboat.toml");
        Sandbox { dir, db, url, envs: Vec::new() }
    }

    /// Appends `toml` to the sandbox's `lifeboat.toml` (channels, users, ...).
    pub fn config(self, toml: &str) -> Sandbox {
        let path = self.dir.join("lifeboat.toml");
        let text = std::fs::read_to_string(&path).expect("read lifeboat.toml");
        std::fs::write(&path, format!("{text}\n{toml}")).expect("write lifeboat.toml");
        self
    }

    /// Without `lifeboat.toml`: defaults and `LIFEBOAT_*` variables only.
    pub fn without_config(self) -> Sandbox {
        std::fs::remove_file(self.dir.join("lifeboat.toml")).expect("remove lifeboat.toml");
        self
    }

    /// An environment variable for every `lifeboat` process of this sandbox.
    pub fn env(mut self, key: &str, value: &str) -> Sandbox {
        self.envs.retain(|(k, _)| k != key);
        self.envs.push((key.into(), value.into()));
        self
    }

    /// `lifeboat --database-url URL ARGS…` run in the sandbox directory.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lifeboat"));
        cmd.arg("--database-url").arg(&self.url).args(args);
        cmd.current_dir(&self.dir)
            .env("NO_COLOR", "1")
            .env_remove("LIFEBOAT_CONFIG")
            .env_remove("LIFEBOAT_DATABASE_URL");
        for (k, _) in std::env::vars() {
            if k.starts_with("LIFEBOAT_") {
                cmd.env_remove(k);
            }
        }
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs `lifeboat ARGS…` to its end; kills it and fails the test after a minute.
    pub fn lifeboat(&self, args: &[&str]) -> Output {
        output_within(self.command(args), Duration::from_secs(60))
    }

    /// Like `lifeboat`, but the command must exit 0.
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.lifeboat(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "lifeboat {args:?} failed:\n{}{}",
            stdout(&out),
            stderr(&out)
        );
        out
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A file the steps wrote, or "" if they did not.
    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    /// The non-empty lines of a file the steps wrote.
    pub fn lines(&self, name: &str) -> Vec<String> {
        self.read(name).lines().filter(|l| !l.trim().is_empty()).map(String::from).collect()
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).expect("write sandbox file");
        path
    }

    /// `run WORKFLOW -i…` without `--wait`: queues the run, returns its id.
    pub fn enqueue(&self, workflow: &str, inputs: &[&str]) -> String {
        let mut args = vec!["run", workflow];
        for i in inputs {
            args.extend(["-i", i]);
        }
        let out = self.ok(&args);
        let id = stdout(&out).trim().to_string();
        assert!(id.len() >= 32 && !id.contains(' '), "`run` printed no run id: {id:?}");
        id
    }

    /// `run WORKFLOW -i… --wait --json`: (exit code, the final run document).
    pub fn run_wait(&self, workflow: &str, inputs: &[&str]) -> (Option<i32>, Value) {
        let mut args = vec!["run", workflow, "--wait", "--json"];
        for i in inputs {
            args.extend(["-i", i]);
        }
        let out = self.lifeboat(&args);
        let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("`run --wait --json` printed no JSON ({e}):\n{}{}", stdout(&out), stderr(&out))
        });
        (out.status.code(), doc)
    }

    /// `show RUN --json`.
    pub fn show(&self, run: &str) -> Value {
        let out = self.ok(&["show", run, "--json"]);
        serde_json::from_slice(&out.stdout).expect("show --json prints JSON")
    }

    /// `runs --json` (all of them).
    pub fn runs(&self) -> Vec<Value> {
        let out = self.ok(&["runs", "--json", "--limit", "1000"]);
        serde_json::from_slice(&out.stdout).expect("runs --json prints JSON")
    }

    /// Polls `show RUN --json` until `done` holds; panics with the last document after `timeout`.
    pub fn wait_for(&self, run: &str, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let doc = self.show(run);
            if done(&doc) {
                return doc;
            }
            if Instant::now() > deadline {
                panic!("run {run} did not reach the expected state in {timeout:?}:\n{doc:#}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the run has ended (a terminal status).
    pub fn wait_finished(&self, run: &str, timeout: Duration) -> Value {
        self.wait_for(run, timeout, |d| is_terminal(d["status"].as_str().unwrap_or("")))
    }

    /// Starts `lifeboat serve` in the background; its output goes to `serve-N.log`.
    pub fn serve(&self) -> Serve {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = std::fs::File::create(self.path(&format!("serve-{n}.log"))).expect("serve log");
        let child = self
            .command(&["serve"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("serve log"))
            .stderr(log)
            .spawn()
            .expect("start lifeboat serve");
        Serve { child: Some(child) }
    }
}

/// `cmd`'s output; kills it and panics if it is still running after `timeout`
/// (a hung command must fail its test, not hang the suite).
pub fn output_within(cmd: Command, timeout: Duration) -> Output {
    output_or_timeout(cmd, timeout).unwrap_or_else(|e| panic!("{e}"))
}

/// `cmd`'s output, or (after killing it) why not, if it is still running after `timeout`.
pub fn output_or_timeout(mut cmd: Command, timeout: Duration) -> Result<Output, String> {
    use std::io::Read;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run lifeboat");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for lifeboat") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let (out, err) = (out.join().unwrap_or_default(), err.join().unwrap_or_default());
            return Err(format!(
                "{cmd:?} still running after {timeout:?}; killed it. Output so far:\n{}{}",
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&err)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

pub fn is_terminal(status: &str) -> bool {
    matches!(status, "succeeded" | "failed" | "rolled_back" | "rollback_failed" | "cancelled")
}

/// A background `lifeboat serve`, SIGKILLed when dropped (also when a test panics).
pub struct Serve {
    child: Option<Child>,
}

impl Serve {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// `kill -9`, then reap it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl From<Child> for Serve {
    fn from(child: Child) -> Serve {
        Serve { child: Some(child) }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The step of a `show --json` document.
pub fn step<'a>(doc: &'a Value, id: &str) -> &'a Value {
    doc["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"] == id))
        .unwrap_or_else(|| panic!("no step `{id}` in {doc:#}"))
}

/// The forward attempts of a step.
pub fn attempts<'a>(doc: &'a Value, id: &str) -> Vec<&'a Value> {
    step(doc, id)["attempts"]
        .as_array()
        .map(|a| a.iter().filter(|a| a["phase"] != "rollback").collect())
        .unwrap_or_default()
}

/// An RFC 3339 timestamp of a `show --json` document, in milliseconds since the epoch.
pub fn ms(v: &Value) -> i64 {
    let text = v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}"));
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("`{text}` is not RFC 3339: {e}"))
        .timestamp_millis()
}

/// Whether a process is alive (a zombie counts as dead).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap_or("").split_whitespace().next();
            !matches!(state, Some("Z" | "X"))
        }
        Err(_) => false,
    }
}

/// Waits up to `timeout` for `check` to hold.
pub fn eventually(timeout: Duration, check: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    check()
}

// ---------------------------------------------------------------------------
// Direct database access (tamper tests) and a fast schedule clock.

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
                let mut conn =
                    sqlx::PgConnection::connect(&self.url).await.expect("connect postgres");
                sqlx::query(statement).execute(&mut conn).await.map(|r| r.rows_affected())
            };
            done.unwrap_or_else(|e| panic!("{statement}: {e}"))
        })
    }

    /// Makes schedule time run `speed` times faster than the wall clock for
    /// every `lifeboat` process of this sandbox (`LIFEBOAT_SCHEDULE_CLOCK`),
    /// from an anchor on a whole minute: a minute tick then falls on real
    /// times `anchor + k * 60/speed` seconds. Returns the clock.
    pub fn fast_schedule_clock(self, speed: i64) -> (Sandbox, FastClock) {
        let now = chrono::Utc::now().timestamp_millis();
        let clock = FastClock { anchor_ms: now - now.rem_euclid(60_000), speed };
        let value = format!("{speed}x@{}", clock.anchor_ms);
        (self.env("LIFEBOAT_SCHEDULE_CLOCK", &value), clock)
    }
}

/// The schedule clock of `Sandbox::fast_schedule_clock`, as the test sees it.
#[derive(Debug, Clone, Copy)]
pub struct FastClock {
    pub anchor_ms: i64,
    pub speed: i64,
}

impl FastClock {
    /// Schedule time now, ms.
    pub fn now(&self) -> i64 {
        let real = chrono::Utc::now().timestamp_millis();
        self.anchor_ms + (real - self.anchor_ms) * self.speed
    }

    /// Real ms between two minute ticks.
    pub fn tick_real_ms(&self) -> i64 {
        60_000 / self.speed
    }

    /// Sleeps until `fraction` (0..1) of the way between two minute ticks,
    /// `ticks_later` ticks from now (0: the next such instant).
    pub fn sleep_to_phase(&self, fraction: f64, ticks_later: i64) {
        let real = chrono::Utc::now().timestamp_millis();
        let period = self.tick_real_ms();
        let into = (real - self.anchor_ms).rem_euclid(period);
        let target = (fraction * period as f64) as i64;
        let mut wait = (target - into).rem_euclid(period);
        if wait == 0 {
            wait = period;
        }
        std::thread::sleep(Duration::from_millis((wait + ticks_later * period) as u64));
    }
}

/// A schedule tick (RFC 3339) in ms.
pub fn tick_ms(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("tick `{text}` is not RFC 3339: {e}"))
        .timestamp_millis()
}

// ---------------------------------------------------------------------------
// HTTP tests: `lifeboat serve` with its API on a free loopback port.

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// A running `lifeboat serve` and a client for its HTTP API.
pub struct Api {
    pub base: String,
    pub serve: Serve,
    pub log: PathBuf,
    client: reqwest::blocking::Client,
}

/// A response: status code and body (JSON if it parses, else a string).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    /// The `{error: {message}}` of an error response.
    pub fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }
}

impl Api {
    /// Starts `lifeboat serve` in `sb` listening on a fresh port, and waits
    /// (up to 30 s) until `/healthz` answers.
    pub fn start(sb: &Sandbox) -> Api {
        Api::start_with(sb, &["serve"])
    }

    /// `start`, with `args` instead of just `serve` (global flags first).
    pub fn start_with(sb: &Sandbox, args: &[&str]) -> Api {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let log = sb.path(&format!("serve-http-{port}.log"));
        let file = std::fs::File::create(&log).expect("serve log");
        let child = sb
            .command(args)
            .env("LIFEBOAT_SERVER__LISTEN", &addr)
            .env("LIFEBOAT_LOG", "warn,lifeboat_orchestrator=info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("serve log"))
            .stderr(file)
            .spawn()
            .expect("start lifeboat serve");
        let mut api = Api {
            base: format!("http://{addr}"),
            serve: Serve::from(child),
            log,
            client: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let health = api.client.get(format!("{}/healthz", api.base)).send();
            if health.is_ok_and(|r| r.status() == 200) {
                return api;
            }
            if !api.serve.alive() || Instant::now() > deadline {
                panic!("lifeboat serve did not come up on {addr}:\n{}", api.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn client(&self) -> &reqwest::blocking::Client {
        &self.client
    }

    /// Sends a request built by `build` and reads the reply.
    pub fn send(&self, request: reqwest::blocking::RequestBuilder) -> Reply {
        let response = request.send().expect("HTTP request");
        let status = response.status().as_u16();
        let text = response.text().unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply { status, body }
    }

    /// `GET path` with a bearer token (`None`: without one).
    pub fn get(&self, path: &str, token: Option<&str>) -> Reply {
        let mut req = self.client.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        self.send(req)
    }

    /// `POST path` with a JSON body and a bearer token.
    pub fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        let mut req = self.client.post(self.url(path)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        self.send(req)
    }

    /// Polls `GET /api/v1/runs/{id}` until `done` holds; panics after `timeout`.
    pub fn wait_run(
        &self,
        token: &str,
        id: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let reply = self.get(&format!("/api/v1/runs/{id}"), Some(token));
            if reply.status == 200 && done(&reply.body) {
                return reply.body;
            }
            if Instant::now() > deadline {
                panic!("run {id} did not reach the expected state in {timeout:?}: {reply:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The status of `step` in a run document (`""` if absent).
    pub fn step_status<'a>(doc: &'a Value, id: &str) -> &'a str {
        doc["steps"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["id"] == id))
            .and_then(|s| s["status"].as_str())
            .unwrap_or("")
    }
}

/// An Alertmanager webhook payload (version 4) with one alert per label set.
pub fn alertmanager_payload(status: &str, alerts: &[(&str, Value)]) -> Value {
    let alerts: Vec<Value> = alerts
        .iter()
        .map(|(fingerprint, labels)| {
            serde_json::json!({
                "status": status,
                "labels": labels,
                "annotations": {"summary": "test alert"},
                "startsAt": "2024-05-01T10:00:00Z",
                "endsAt": if status == "resolved" { "2024-05-01T10:05:00Z" } else { "0001-01-01T00:00:00Z" },
                "generatorURL": "http://prometheus.example/graph",
                "fingerprint": fingerprint,
            })
        })
        .collect();
    serde_json::json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"SiteDown\"}",
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "lifeboat",
        "groupLabels": {"alertname": "SiteDown"},
        "commonLabels": {"alertname": "SiteDown"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093",
        "alerts": alerts,
    })
}

// ---------------------------------------------------------------------------
// Notification receivers (tests/people.rs): a scriptable recording HTTP
// server, the real SMTP sink, and raw reads of the store.

/// What a [`Receiver`] answers to one request.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn status(status: u16) -> Answer {
        Answer { status, headers: Vec::new(), body: format!("status {status}") }
    }

    pub fn header(mut self, name: &str, value: &str) -> Answer {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// One request a [`Receiver`] got, and the status it answered.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub at: Instant,
    pub answered: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("request body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body))
        })
    }

    pub fn ok(&self) -> bool {
        (200..300).contains(&self.answered)
    }
}

#[derive(Default)]
struct ReceiverState {
    script: std::collections::VecDeque<Answer>,
    default: Option<Answer>,
    requests: Vec<Received>,
}

/// An HTTP/1.1 server on 127.0.0.1:0 that records every request and
/// answers from a script (then a default, 200 unless changed). Each
/// connection is closed after one exchange. Stops when dropped.
pub struct Receiver {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    state: std::sync::Arc<std::sync::Mutex<ReceiverState>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    addr: std::net::SocketAddr,
}

impl Receiver {
    pub fn start() -> Receiver {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind receiver");
        let addr = listener.local_addr().expect("receiver address");
        let state = std::sync::Arc::new(std::sync::Mutex::new(ReceiverState::default()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, st) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || {
                    let _ = Receiver::exchange(conn, &s);
                });
            }
        });
        Receiver { base: format!("http://{addr}"), state, stop, addr }
    }

    fn exchange(
        conn: std::net::TcpStream,
        state: &std::sync::Mutex<ReceiverState>,
    ) -> std::io::Result<()> {
        use std::io::{BufRead, Read, Write};
        conn.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut reader = std::io::BufReader::new(conn.try_clone()?);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let length = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let answer = {
            let mut st = state.lock().unwrap();
            let answer = st
                .script
                .pop_front()
                .or_else(|| st.default.clone())
                .unwrap_or_else(|| Answer::status(200));
            st.requests.push(Received {
                method,
                path,
                headers,
                body,
                at: Instant::now(),
                answered: answer.status,
            });
            answer
        };
        let mut out = format!(
            "HTTP/1.1 {} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n",
            answer.status,
            answer.body.len()
        );
        for (k, v) in &answer.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        out.push_str(&answer.body);
        let mut conn = conn;
        conn.write_all(out.as_bytes())?;
        conn.flush()?;
        let _ = conn.shutdown(std::net::Shutdown::Both);
        Ok(())
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Answers the next requests with `answers`, in order, then the default.
    pub fn script(&self, answers: Vec<Answer>) {
        self.state.lock().unwrap().script.extend(answers);
    }

    /// What every unscripted request gets from now on.
    pub fn answer_by_default(&self, answer: Answer) {
        self.state.lock().unwrap().default = Some(answer);
    }

    pub fn requests(&self) -> Vec<Received> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Waits until `n` requests came in; panics after `timeout`.
    pub fn wait_requests(&self, n: usize, timeout: Duration) -> Vec<Received> {
        if !eventually(timeout, || self.requests().len() >= n) {
            let got: Vec<String> = self
                .requests()
                .iter()
                .map(|r| format!("{} {} -> {}", r.method, r.path, r.answered))
                .collect();
            panic!("{} received {} of {n} requests in {timeout:?}: {got:#?}", self.base, got.len());
        }
        self.requests()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(self.addr);
    }
}

/// `notify/tests/smtp_sink.py`, a real aiosmtpd SMTP server; killed when dropped.
pub struct SmtpSink {
    pub port: u16,
    pub dir: PathBuf,
    child: Child,
}

impl SmtpSink {
    /// Saves messages under `dir`; `rcpt_reply` (e.g. "550") refuses every recipient.
    pub fn start(dir: PathBuf, rcpt_reply: Option<&str>) -> SmtpSink {
        use std::io::BufRead;
        let mut cmd = Command::new("python3");
        cmd.arg(root().join("notify/tests/smtp_sink.py")).arg(&dir);
        if let Some(code) = rcpt_reply {
            cmd.arg(code);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 with aiosmtpd (pip install aiosmtpd) runs the SMTP sink");
        let stdout = child.stdout.take().expect("sink stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let Ok(port) = line.trim().parse::<u16>() else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the SMTP sink did not print its port (is aiosmtpd installed?): {line:?}");
        };
        SmtpSink { port, dir, child }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// The messages received so far, in order.
    pub fn messages(&self) -> Vec<Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.retain(|p| p.extension().is_some_and(|e| e == "json"));
        files.sort();
        files
            .iter()
            .map(|p| {
                serde_json::from_str(&std::fs::read_to_string(p).expect("read mail"))
                    .expect("mail JSON")
            })
            .collect()
    }

    /// Waits until `n` messages arrived; panics after `timeout`.
    pub fn wait_messages(&self, n: usize, timeout: Duration) -> Vec<Value> {
        if !eventually(timeout, || self.messages().len() >= n) {
            panic!("the SMTP sink got {:#?}, not {n} messages, in {timeout:?}", self.messages());
        }
        self.messages()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sandbox {
    /// Rows of a query straight on the sandbox's database, every column as
    /// text (write `CAST(x AS TEXT)` for non-text columns; both backends).
    pub fn rows(&self, query: &str) -> Vec<Vec<Option<String>>> {
        use sqlx::{Connection, Row};
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        runtime.block_on(async {
            if self.url.starts_with("sqlite:") {
                let mut conn =
                    sqlx::SqliteConnection::connect(&self.url).await.expect("open sqlite");
                let rows = sqlx::query(query).fetch_all(&mut conn).await;
                let rows = rows.unwrap_or_else(|e| panic!("{query}: {e}"));
                rows.iter()
                    .map(|r| {
                        (0..r.len())
                            .map(|i| r.try_get::<Option<String>, _>(i).expect("text column"))
                            .collect()
                    })
                    .collect()
            } else {
                let mut conn =
                    sqlx::PgConnection::connect(&self.url).await.expect("connect postgres");
                let rows = sqlx::query(query).fetch_all(&mut conn).await;
                let rows = rows.unwrap_or_else(|e| panic!("{query}: {e}"));
                rows.iter()
                    .map(|r| {
                        (0..r.len())
                            .map(|i| r.try_get::<Option<String>, _>(i).expect("text column"))
                            .collect()
                    })
                    .collect()
            }
        })
    }
}

// ---------------------------------------------------------------------------
// Pages (tests/ui.rs): HTML and SVG answers with their headers.

/// A response read as text, with its headers.
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Page {
    /// A header's value, or "" without it.
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

impl Api {
    /// Sends a request built by `build` and reads the reply as text.
    pub fn page(&self, request: reqwest::blocking::RequestBuilder) -> Page {
        let response = request.send().expect("HTTP request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        Page { status, headers, text: response.text().unwrap_or_default() }
    }

    /// `POST path` with an `application/x-www-form-urlencoded` body of `fields`.
    pub fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let encode = |s: &str| -> String {
            s.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                        (b as char).to_string()
                    }
                    b' ' => "+".to_string(),
                    b => format!("%{b:02X}"),
                })
                .collect()
        };
        let body: Vec<String> =
            fields.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
        self.page(
            self.client
                .post(self.url(path))
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(body.join("&")),
        )
    }
}

// ---------------------------------------------------------------------------
// Test users: one place for who exists, their roles and their tokens.

/// `(name, roles)`; each one's token is `<name>-token`, read from
/// `LIFEBOAT_TOKEN_<NAME>`.
pub const USERS: &[(&str, &[&str])] = &[
    ("alice", &["operator"]),
    ("bob", &["approver"]),
    ("carol", &["approver"]),
    ("vic", &["viewer"]),
    ("root", &["admin"]),
];

/// `[[users]]` entries for `names` (from [`USERS`]).
pub fn users_toml(names: &[&str]) -> String {
    let mut out = String::new();
    for name in names {
        let (_, roles) = USERS.iter().find(|(n, _)| n == name).expect("a known test user");
        let roles: Vec<String> = roles.iter().map(|r| format!("\"{r}\"")).collect();
        out.push_str(&format!(
            "[[users]]\nname = \"{name}\"\ntoken_env = \"LIFEBOAT_TOKEN_{}\"\nroles = [{}]\n",
            name.to_uppercase(),
            roles.join(", ")
        ));
    }
    out
}

impl Sandbox {
    /// Adds the test users `names` to the configuration, with their tokens.
    pub fn with_users(self, names: &[&str]) -> Sandbox {
        let mut sb = self.config(&users_toml(names));
        for name in names {
            sb = sb
                .env(&format!("LIFEBOAT_TOKEN_{}", name.to_uppercase()), &format!("{name}-token"));
        }
        sb
    }
}
