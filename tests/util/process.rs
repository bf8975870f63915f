//! Running the `lifeboat` binary: commands with a clean environment, scratch
//! directories, outputs with a deadline, background processes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

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

/// A background `lifeboat serve`, SIGKILLed when dropped (also when a test panics).
pub struct Serve {
    child: Option<Child>,
    /// Where its API listens, when the test chose it (`Sandbox::serve`).
    addr: Option<String>,
}

impl Serve {
    /// `child`, listening on `addr`.
    pub fn listening(child: Child, addr: String) -> Serve {
        Serve { child: Some(child), addr: Some(addr) }
    }

    /// Where its API listens (`host:port`), if known.
    pub fn addr(&self) -> Option<&str> {
        self.addr.as_deref()
    }

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
        Serve { child: Some(child), addr: None }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill9();
    }
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

/// A tool a test needs is missing: under `scripts/test.sh` (which installs
/// it through scripts/deps.sh and sets `LIFEBOAT_REQUIRE_TOOLS`) the test
/// fails, so CI can never pass by skipping it; elsewhere it says so and the
/// caller skips.
pub fn tool_missing(what: &str) {
    if std::env::var_os("LIFEBOAT_REQUIRE_TOOLS").is_some() {
        panic!("{what}, and scripts/test.sh requires it: run scripts/deps.sh");
    }
    eprintln!("{what} (scripts/deps.sh installs it): skipping");
}
