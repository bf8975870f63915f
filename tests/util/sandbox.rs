//! One test's world: a scratch directory with its own `lifeboat.toml` and
//! database, and the `lifeboat` commands run in it.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::database::{on_postgres, postgres_database};
use super::documents::is_terminal;
use super::http::free_port;
use super::process::{Serve, output_within, root, scratch, stderr, stdout};

/// Executor settings that make takeover after a crash quick, in the
/// sandbox's `lifeboat.toml` (picked up from the working directory).
/// `LIFEBOAT_EXECUTOR__*` variables (`Sandbox::env`) override them.
pub const FAST_EXECUTOR: &str =
    "[executor]\nlease = \"2s\"\nheartbeat = \"500ms\"\npoll = \"100ms\"\n";

/// A path under `tests/fixtures/exec/`, absolute.
pub fn exec_fixture(name: &str) -> String {
    root().join("tests/fixtures/exec").join(name).display().to_string()
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

    /// What every `serve` of this sandbox logged (their `serve-N.log` files,
    /// N counting across the whole test binary), in start order.
    pub fn serve_logs(&self) -> String {
        let mut logs: Vec<(usize, PathBuf)> = std::fs::read_dir(&self.dir)
            .expect("read sandbox dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter_map(|p| {
                let name = p.file_name()?.to_str()?;
                let n = name.strip_prefix("serve-")?.strip_suffix(".log")?.parse().ok()?;
                Some((n, p))
            })
            .collect();
        logs.sort();
        logs.iter().map(|(_, p)| std::fs::read_to_string(p).unwrap_or_default()).collect()
    }

    /// Starts `lifeboat serve` in the background, its API on a free loopback
    /// port unless the sandbox sets `LIFEBOAT_SERVER__LISTEN` (never the
    /// default 8080, which every test's server would share with every
    /// other's); its output goes to `serve-N.log`.
    pub fn serve(&self) -> Serve {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = std::fs::File::create(self.path(&format!("serve-{n}.log"))).expect("serve log");
        let addr = match self.envs.iter().find(|(k, _)| k == "LIFEBOAT_SERVER__LISTEN") {
            Some((_, chosen)) => chosen.clone(),
            None => format!("127.0.0.1:{}", free_port()),
        };
        let child = self
            .command(&["serve"])
            .env("LIFEBOAT_SERVER__LISTEN", &addr)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("serve log"))
            .stderr(log)
            .spawn()
            .expect("start lifeboat serve");
        Serve::listening(child, addr)
    }
}

impl Sandbox {
    /// A sandbox for kill -9 tests: a short lease, heartbeat and poll, so a
    /// killed worker's runs are taken over within seconds.
    pub fn for_crashes(name: &str) -> Sandbox {
        Sandbox::new(name)
            .env("LIFEBOAT_EXECUTOR__LEASE", "1500ms")
            .env("LIFEBOAT_EXECUTOR__HEARTBEAT", "300ms")
            .env("LIFEBOAT_EXECUTOR__POLL", "100ms")
    }
}

/// The seed of a randomised kill schedule: `LIFEBOAT_TEST_CRASH_SEED` (to
/// replay one), else the clock. Printed, so a failure can be replayed.
pub fn crash_seed(test: &str) -> u64 {
    let seed = std::env::var("LIFEBOAT_TEST_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(42)
        });
    eprintln!("{test}: seed {seed} (LIFEBOAT_TEST_CRASH_SEED={seed} replays it)");
    seed
}
