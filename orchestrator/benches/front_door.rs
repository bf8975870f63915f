//! Front-door benchmarks: the real `lifeboat` binary, measured the way
//! users meet it, on SQLite.
//!
//! - `front_door/webhook_accepted`: `POST /hooks/bench` (JSON, bearer
//!   token) until `202`: HTTP, authentication, matching, rendering the
//!   trigger's inputs and committing the run with its audit entry.
//! - `front_door/http_steps_20`: `lifeboat run http20 --wait` as a process,
//!   twenty `http` GETs against a server on 127.0.0.1 (the destination
//!   policy, redirect handling and redaction are all on this path).
//! - `front_door/validate_runbooks`: `lifeboat validate` of the example
//!   runbooks as a process.
//!
//! `LIFEBOAT_BENCH_BIN=/path/to/lifeboat` measures another build instead
//! (point it at an older release build for a before/after comparison; set
//! `LIFEBOAT_BENCH_NO_HOOK_LIMITS=1` for a build that predates the hook
//! rate limit, whose configuration keys it would refuse).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Serve, binary};
use criterion::{Criterion, criterion_group, criterion_main};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repository root").to_path_buf()
}

/// A keep-alive HTTP/1.1 server answering every request `200 {}`.
fn tiny_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut out = stream;
                let mut line = String::new();
                loop {
                    // Headers up to the blank line; GETs carry no body.
                    loop {
                        line.clear();
                        match reader.read_line(&mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" => break,
                            Ok(_) => {}
                        }
                    }
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
                    if out.write_all(answer).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new(server_port: u16) -> Sandbox {
        let dir = tempfile::tempdir().expect("tempdir");
        let workflows = dir.path().join("workflows");
        std::fs::create_dir_all(&workflows).expect("workflows dir");
        let mut config = String::from(
            "[[users]]\nname = \"ops\"\ntoken_env = \"LIFEBOAT_BENCH_TOKEN\"\nroles = [\"operator\"]\n\
             [hooks.bench]\nformat = \"json\"\nbearer_token_env = \"LIFEBOAT_BENCH_HOOK\"\n",
        );
        if std::env::var_os("LIFEBOAT_BENCH_NO_HOOK_LIMITS").is_none() {
            // The benchmark sends far more than a real hook's rate.
            config.push_str("rate_per_minute = 10000000\nburst = 1000000\n");
        }
        std::fs::write(dir.path().join("lifeboat.toml"), config).expect("config");
        std::fs::write(
            workflows.join("hooked.yaml"),
            "name: hooked\ninputs: { service: { type: string } }\ntriggers:\n  - webhook: bench\n    inputs: { service: \"{{event.service}}\" }\nsteps:\n  a: { uses: set, with: { s: \"{{inputs.service}}\" } }\n",
        )
        .expect("workflow");
        let mut http = String::from("name: http20\nsteps:\n");
        for i in 0..20 {
            let needs = if i == 0 { String::new() } else { format!(", needs: [g{}]", i - 1) };
            http.push_str(&format!(
                "  g{i}: {{ uses: http, with: {{ url: \"http://127.0.0.1:{server_port}/x/{i}\", headers: {{ X-Api-Key: k }} }}{needs} }}\n"
            ));
        }
        std::fs::write(workflows.join("http20.yaml"), http).expect("workflow");
        Sandbox { dir }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(binary());
        let url = format!("sqlite://{}", self.dir.path().join("lb.db").display());
        cmd.arg("--database-url").arg(url).args(args).current_dir(self.dir.path());
        cmd.env("LIFEBOAT_BENCH_TOKEN", "ops-token").env("LIFEBOAT_BENCH_HOOK", "hook-token");
        cmd.env("LIFEBOAT_LOG", "error").env("NO_COLOR", "1");
        cmd
    }

    fn serve(&self) -> Serve {
        Serve::start(self.command(&["serve"]))
    }
}

fn benches(c: &mut Criterion) {
    let port = tiny_server();
    let sb = Sandbox::new(port);
    let mut group = c.benchmark_group("front_door");
    group.sample_size(20).measurement_time(Duration::from_secs(10));

    let serve = sb.serve();
    let base = serve.base.clone();
    let client = reqwest::blocking::Client::new();
    let mut n = 0u64;
    group.bench_function("webhook_accepted", |b| {
        b.iter(|| {
            n += 1;
            let reply = client
                .post(format!("{base}/hooks/bench"))
                .bearer_auth("hook-token")
                .json(&serde_json::json!({ "service": format!("svc-{n}") }))
                .send()
                .expect("POST /hooks/bench");
            assert_eq!(reply.status(), 202, "{}", reply.text().unwrap_or_default());
        })
    });
    drop(serve);

    group.bench_function("http_steps_20", |b| {
        b.iter(|| {
            let out = sb.command(&["run", "http20", "--wait"]).output().expect("run --wait");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        })
    });

    let runbooks = repo().join("workflows");
    group.bench_function("validate_runbooks", |b| {
        b.iter(|| {
            let out = Command::new(binary())
                .args(["validate", runbooks.to_str().expect("utf-8 path")])
                .current_dir(repo())
                .output()
                .expect("validate");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        })
    });
    group.finish();
}

criterion_group!(front_door, benches);
criterion_main!(front_door);
