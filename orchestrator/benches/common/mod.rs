//! Shared by the benchmarks that drive the real `lifeboat` binary
//! (`front_door.rs`, `api.rs`): which binary, a free port, and a `serve`
//! process that is killed when dropped (also when a benchmark panics).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary under test: this build's, or `LIFEBOAT_BENCH_BIN`.
pub fn binary() -> PathBuf {
    std::env::var_os("LIFEBOAT_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_lifeboat")))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A running `lifeboat serve`, answering at `base`; killed on drop.
pub struct Serve {
    child: Child,
    pub base: String,
}

impl Serve {
    /// Starts `command` (a `lifeboat … serve` command) on a free loopback
    /// port and waits until `/healthz` answers.
    pub fn start(mut command: Command) -> Serve {
        let addr = format!("127.0.0.1:{}", free_port());
        let child = command
            .env("LIFEBOAT_SERVER__LISTEN", &addr)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start lifeboat serve");
        let serve = Serve { child, base: format!("http://{addr}") };
        let deadline = Instant::now() + Duration::from_secs(30);
        while reqwest::blocking::get(format!("{}/healthz", serve.base)).map(|r| r.status()).ok()
            != Some(reqwest::StatusCode::OK)
        {
            assert!(Instant::now() < deadline, "serve did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        serve
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
