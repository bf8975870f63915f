//! `shell`: run an argv `command` (no shell parser involved) or a `script`
//! with `bash -euo pipefail`. The compiler rejects templates inside
//! `script` (see `ActionKind::untemplated_fields`).

use std::ffi::OsStr;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::process::{Captured, DRAIN_GRACE, GroupGuard, capture};
use crate::{AttemptContext, ConfigProblem, Outcome, Step};

/// Runs a program. Templated values never reach a shell parser: `command` is
/// an argv list, and `script` receives values only through `env`.
///
/// The program runs in its own process group, with stdin from /dev/null,
/// the worker's environment (less `LIFEBOAT_*` and `AttemptContext::env_remove`),
/// then `env`, then the attempt's `LIFEBOAT_*` variables. When it exits,
/// times out or is cancelled, whatever is left of its process group is
/// killed: start long-lived services through the service manager instead.
/// Outputs: `exit_code` (null if killed by a signal, then `signal` names
/// it), `stdout`, `stderr`, `stdout_truncated`, `stderr_truncated`, and
/// `json`: the last non-empty stdout line, when it is a JSON object.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Program and arguments, each a template; executed directly, without a shell.
    pub command: Option<Vec<String>>,
    /// Bash script run with `bash -euo pipefail`. Not templated: pass values through `env`.
    pub script: Option<String>,
    /// Extra environment variables (values are templates).
    #[serde(default)]
    pub env: IndexMap<String, String>,
    /// Working directory (template); defaults to the orchestrator's. A
    /// relative program path (one containing `/`) is resolved from it.
    pub workdir: Option<String>,
}

impl Config {
    pub fn compile(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        match (&self.command, &self.script) {
            (None, None) => problems.push(
                ConfigProblem::new(&[], "a shell step needs `command` or `script`")
                    .with_help("use `command: [prog, arg, ...]` to run a program directly"),
            ),
            (Some(_), Some(_)) => problems.push(ConfigProblem::new(
                &["script"],
                "`command` and `script` are exclusive; keep one",
            )),
            (Some(argv), None) if argv.is_empty() => problems
                .push(ConfigProblem::new(&["command"], "`command` must name a program to run")),
            _ => {}
        }
        for name in self.env.keys() {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                problems.push(ConfigProblem::new(
                    &["env", name],
                    format!("`{name}` is not a valid environment variable name"),
                ));
            } else if crate::LIFEBOAT_VARS.contains(&name.as_str()) {
                problems.push(ConfigProblem::new(
                    &["env", name],
                    format!(
                        "`{name}` is set by lifeboat for every attempt and cannot be overridden"
                    ),
                ));
            }
        }
        problems
    }
}

impl Step for Config {
    async fn run(&self, ctx: &AttemptContext) -> Outcome {
        let (program, args): (&str, Vec<&str>) = match (&self.command, &self.script) {
            (Some(argv), None) if !argv.is_empty() => {
                (&argv[0], argv[1..].iter().map(String::as_str).collect())
            }
            (None, Some(script)) => ("bash", vec!["-euo", "pipefail", "-c", script]),
            _ => return Outcome::fatal("a shell step needs exactly one of `command` or `script`"),
        };
        if let Some(dir) = &self.workdir
            && !Path::new(dir).is_dir()
        {
            return Outcome::fatal(format!("workdir `{dir}` does not exist or is not a directory"));
        }
        let spawned = crate::process::spawn(program, &args, |cmd| self.configure(cmd, ctx)).await;
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => return self.spawn_failure(program, &e),
        };
        let Some(pid) = child.id() else {
            return Outcome::retryable(format!("`{program}` exited before its pid was known"));
        };
        let mut group = GroupGuard::new(pid);
        if let Some(on_spawn) = &ctx.on_spawn {
            on_spawn(pid);
        }

        let stop = CancellationToken::new();
        let max = ctx.max_output_bytes;
        let stdout = child.stdout.take().map(|p| tokio::spawn(capture(p, max, stop.clone())));
        let stderr = child.stderr.take().map(|p| tokio::spawn(capture(p, max, stop.clone())));

        let waited = ctx.bounded(child.wait()).await;
        // Whatever happened, nothing the step started outlives it.
        group.kill();
        let (status, interrupted) = match waited {
            Ok(Ok(status)) => (Some(status), None),
            Ok(Err(e)) => {
                let _ = child.start_kill();
                let _ = tokio::time::timeout(DRAIN_GRACE, child.wait()).await;
                return Outcome::retryable(format!("could not wait for `{program}`: {e}"));
            }
            Err(interrupted) => {
                // The leader may have left its group; kill it by pid too.
                // A process stuck in the kernel (a hung NFS mount) dies only
                // when the call returns: do not hold the attempt for it;
                // tokio reaps it once it is gone.
                let _ = child.start_kill();
                let _ = tokio::time::timeout(DRAIN_GRACE, child.wait()).await;
                (None, Some(interrupted))
            }
        };

        let readers = async {
            let out = match stdout {
                Some(task) => task.await.unwrap_or_default(),
                None => Captured::default(),
            };
            let err = match stderr {
                Some(task) => task.await.unwrap_or_default(),
                None => Captured::default(),
            };
            (out, err)
        };
        tokio::pin!(readers);
        let (out, err) = match tokio::time::timeout(DRAIN_GRACE, &mut readers).await {
            Ok(captured) => captured,
            Err(_) => {
                stop.cancel();
                readers.await
            }
        };

        let outputs = outputs(status, &out, &err);
        if let Some(interrupted) = interrupted {
            return interrupted.outcome(Some("process group killed"), outputs);
        }
        match status {
            Some(status) if status.success() => Outcome::Succeeded { outputs },
            Some(status) => {
                let mut error = describe_status(status);
                if let Some(line) = last_line(&err.tail_text()) {
                    error = format!("{error}: {line}");
                }
                Outcome::Failed { error, retryable: true, outputs }
            }
            None => Outcome::retryable("process status unknown"),
        }
    }
}

impl Config {
    /// Everything about the program's process but its standard input
    /// (/dev/null) and its process group (its own): `process::spawn`'s.
    fn configure(&self, cmd: &mut Command, ctx: &AttemptContext) {
        for (name, _) in std::env::vars_os() {
            let inherited_lifeboat = name.to_str().is_some_and(|n| n.starts_with("LIFEBOAT_"));
            if inherited_lifeboat || ctx.env_remove.iter().any(|r| OsStr::new(r) == name) {
                cmd.env_remove(&name);
            }
        }
        cmd.envs(&self.env);
        for (name, value) in ctx.lifeboat_vars() {
            cmd.env(name, value);
        }
        if let Some(dir) = &self.workdir {
            cmd.current_dir(dir);
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.kill_on_drop(true);
    }

    /// Why `program` did not start, said so an operator can fix it.
    fn spawn_failure(&self, program: &str, e: &io::Error) -> Outcome {
        let dir = self.workdir.as_deref().unwrap_or(".");
        match e.kind() {
            io::ErrorKind::NotFound if program.contains('/') => Outcome::fatal(format!(
                "command `{program}` not found (relative paths are resolved from `{dir}`); \
                 check the path or use an absolute path"
            )),
            io::ErrorKind::NotFound => {
                let path = match self.env.get("PATH") {
                    Some(path) => path.clone(),
                    None => std::env::var("PATH").unwrap_or_default(),
                };
                Outcome::fatal(format!(
                    "command `{program}` not found (searched PATH={path}); \
                     install it or use an absolute path"
                ))
            }
            io::ErrorKind::PermissionDenied => Outcome::fatal(format!(
                "command `{program}` is not executable (permission denied); \
                 check its mode (chmod +x) and its directory's permissions"
            )),
            io::ErrorKind::InvalidInput => Outcome::fatal(format!(
                "cannot start `{program}`: {e} (an argument or `env` value contains a NUL byte)"
            )),
            _ if e.raw_os_error() == Some(nix::libc::ENOEXEC) => Outcome::fatal(format!(
                "`{program}` is not a program this system can run (exec format error); \
                 a script needs a `#!` line"
            )),
            // Out of processes, memory or file descriptors: may pass.
            _ => Outcome::retryable(format!("cannot start `{program}`: {e}")),
        }
    }
}

fn outputs(status: Option<ExitStatus>, out: &Captured, err: &Captured) -> Value {
    let mut outputs = Map::new();
    outputs.insert("exit_code".into(), json!(status.and_then(|s| s.code())));
    if let Some(signal) = status.and_then(|s| s.signal()) {
        outputs.insert("signal".into(), json!(signal_name(signal)));
    }
    outputs.insert("stdout".into(), json!(out.text()));
    outputs.insert("stderr".into(), json!(err.text()));
    outputs.insert("stdout_truncated".into(), json!(out.truncated()));
    outputs.insert("stderr_truncated".into(), json!(err.truncated()));
    if let Some(line) = last_line(&out.tail_text())
        && let Ok(object @ Value::Object(_)) = serde_json::from_str(line)
    {
        outputs.insert("json".into(), object);
    }
    Value::Object(outputs)
}

/// The last line of `text` that is not blank, trimmed.
fn last_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).rfind(|l| !l.is_empty())
}

fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {}", signal_name(signal)),
        (None, None) => format!("ended with {status}"),
    }
}

fn signal_name(signal: i32) -> String {
    match nix::sys::signal::Signal::try_from(signal) {
        Ok(s) => s.as_str().to_owned(),
        Err(_) => signal.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Config {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn command_and_script_are_exclusive() {
        let c = parse("command: [echo]\nscript: echo\n");
        assert_eq!(c.compile()[0].path, vec!["script"]);
    }

    #[test]
    fn missing_program_is_reported() {
        assert_eq!(parse("env: {}\n").compile().len(), 1);
        assert_eq!(parse("command: []\n").compile()[0].path, vec!["command"]);
    }

    #[test]
    fn lifeboat_variables_cannot_be_set_in_env() {
        let c = parse("command: [true]\nenv: {LIFEBOAT_RUN_ID: x}\n");
        assert_eq!(c.compile()[0].path, vec!["env", "LIFEBOAT_RUN_ID"]);
    }

    fn argv(args: &[&str]) -> Config {
        Config {
            command: Some(args.iter().map(|s| s.to_string()).collect()),
            script: None,
            env: IndexMap::new(),
            workdir: None,
        }
    }

    fn script(text: &str) -> Config {
        Config { command: None, script: Some(text.into()), env: IndexMap::new(), workdir: None }
    }

    fn ctx() -> AttemptContext {
        AttemptContext::new("run-1", "step-a", 2)
    }

    fn outputs_of(outcome: &Outcome) -> &Map<String, Value> {
        outcome.outputs().as_object().expect("outputs are an object")
    }

    fn stdout_of(outcome: &Outcome) -> &str {
        outputs_of(outcome)["stdout"].as_str().unwrap()
    }

    /// Alive and not a zombie (a killed process whose parent has not reaped
    /// it yet is dead for our purpose).
    fn is_alive(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => {
                let state = stat.rsplit(')').next().unwrap_or("").split_whitespace().next();
                !matches!(state, Some("Z" | "X"))
            }
            Err(_) => false,
        }
    }

    /// Waits up to 5 s for `pid` to die.
    async fn wait_dead(pid: u32) -> bool {
        for _ in 0..100 {
            if !is_alive(pid) {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        false
    }

    #[tokio::test]
    async fn argv_is_passed_literally_and_never_parsed_by_a_shell() {
        let dir = tempfile::tempdir().unwrap();
        let mut c =
            argv(&["printf", "%s\n", "; touch x", "$(touch y)", "`touch z`", "a && touch w"]);
        c.workdir = Some(dir.path().to_str().unwrap().into());
        let outcome = c.run(&ctx()).await;
        assert!(outcome.is_success(), "{outcome:?}");
        assert_eq!(stdout_of(&outcome), "; touch x\n$(touch y)\n`touch z`\na && touch w\n");
        for name in ["x", "y", "z", "w"] {
            assert!(!dir.path().join(name).exists(), "{name} was created");
        }
    }

    #[tokio::test]
    async fn script_receives_values_only_through_env() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = script(r#"echo "hello $NAME""#);
        c.env.insert("NAME".into(), "world; touch pwned $(touch pwned2)".into());
        c.workdir = Some(dir.path().to_str().unwrap().into());
        let outcome = c.run(&ctx()).await;
        assert_eq!(stdout_of(&outcome), "hello world; touch pwned $(touch pwned2)\n");
        assert!(!dir.path().join("pwned").exists());
        assert!(!dir.path().join("pwned2").exists());
    }

    #[tokio::test]
    async fn script_runs_with_errexit_nounset_and_pipefail() {
        let outcome = script("false | true\necho not reached").run(&ctx()).await;
        assert_eq!(outputs_of(&outcome)["exit_code"], json!(1));
        assert_eq!(stdout_of(&outcome), "");
        let outcome = script("echo \"$UNSET_VARIABLE_FOR_TEST\"").run(&ctx()).await;
        assert!(!outcome.is_success());
    }

    #[tokio::test]
    async fn nonzero_exit_is_a_retryable_failure_naming_the_last_stderr_line() {
        let outcome =
            script("echo partial; echo first >&2; echo 'disk full' >&2; exit 3").run(&ctx()).await;
        let Outcome::Failed { error, retryable, outputs } = &outcome else { panic!("{outcome:?}") };
        assert_eq!(error, "exit status 3: disk full");
        assert!(retryable);
        assert_eq!(outputs["exit_code"], json!(3));
        assert_eq!(outputs["stdout"], json!("partial\n"));
        assert_eq!(outputs["stderr"], json!("first\ndisk full\n"));
    }

    #[tokio::test]
    async fn success_reports_exit_code_zero_and_both_streams() {
        let outcome = argv(&["bash", "-c", "echo out; echo err >&2"]).run(&ctx()).await;
        assert_eq!(
            outcome,
            Outcome::succeeded(json!({
                "exit_code": 0, "stdout": "out\n", "stderr": "err\n",
                "stdout_truncated": false, "stderr_truncated": false,
            }))
        );
    }

    #[tokio::test]
    async fn last_stdout_line_is_parsed_as_json_when_an_object() {
        let outcome = script("echo starting; echo '{\"role\": \"primary\", \"lag\": 0}'; echo")
            .run(&ctx())
            .await;
        assert_eq!(outputs_of(&outcome)["json"], json!({"role": "primary", "lag": 0}));

        for last in ["'[1, 2]'", "42", "'not json {'", "'{\"a\": 1}' ; echo trailing"] {
            let outcome = script(&format!("echo {last}")).run(&ctx()).await;
            assert!(!outputs_of(&outcome).contains_key("json"), "{last}: {outcome:?}");
        }
    }

    #[tokio::test]
    async fn output_is_bounded_and_the_child_never_blocks() {
        let mut c = ctx();
        c.max_output_bytes = 1000;
        // 5 MB on each stream: far beyond a pipe buffer.
        let outcome = script(
            "head -c 5000000 /dev/zero | tr '\\0' a; echo; echo '{\"done\": true}'
             head -c 5000000 /dev/zero | tr '\\0' b >&2; echo >&2; echo 'last words' >&2; exit 4",
        )
        .run(&c)
        .await;
        let Outcome::Failed { error, outputs, .. } = &outcome else { panic!("{outcome:?}") };
        assert_eq!(error, "exit status 4: last words");
        assert_eq!(outputs["stdout_truncated"], json!(true));
        assert_eq!(outputs["stderr_truncated"], json!(true));
        for stream in ["stdout", "stderr"] {
            let text = outputs[stream].as_str().unwrap();
            assert!(text.len() < 1100, "{stream} is {} bytes", text.len());
            assert!(text.contains("bytes omitted"));
        }
        assert_eq!(outputs["json"], json!({"done": true}));
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_process_group_including_grandchildren() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let mut c = ctx();
        c.timeout = Some(std::time::Duration::from_millis(500));
        let spawned = std::sync::Arc::new(std::sync::Mutex::new(None));
        let record = spawned.clone();
        c.on_spawn = Some(Box::new(move |pid| *record.lock().unwrap() = Some(pid)));
        let mut step = script("sleep 60 & echo $! > \"$PIDFILE\"; wait");
        step.env.insert("PIDFILE".into(), pidfile.to_str().unwrap().into());

        let started = std::time::Instant::now();
        let outcome = step.run(&c).await;
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        let Outcome::Failed { error, retryable, .. } = &outcome else { panic!("{outcome:?}") };
        assert_eq!(error, "timed out after 500ms; process group killed");
        assert!(retryable);

        let leader = spawned.lock().unwrap().expect("on_spawn was called");
        let grandchild: u32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        assert!(wait_dead(grandchild).await, "grandchild {grandchild} survived");
        assert!(wait_dead(leader).await, "leader {leader} survived");
    }

    #[tokio::test]
    async fn processes_left_behind_after_a_normal_exit_are_killed() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let mut step = script("sleep 60 >/dev/null 2>&1 & echo $! > \"$PIDFILE\"");
        step.env.insert("PIDFILE".into(), pidfile.to_str().unwrap().into());
        let outcome = step.run(&ctx()).await;
        assert!(outcome.is_success(), "{outcome:?}");
        let background: u32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        assert!(wait_dead(background).await, "background process {background} survived");
    }

    #[tokio::test]
    async fn cancellation_kills_the_group_and_is_not_retryable() {
        let c = ctx();
        let cancel = c.cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            cancel.cancel();
        });
        let outcome = argv(&["sleep", "60"]).run(&c).await;
        let Outcome::Failed { error, retryable, .. } = &outcome else { panic!("{outcome:?}") };
        assert_eq!(error, "cancelled; process group killed");
        assert!(!retryable);
    }

    #[tokio::test]
    async fn dropping_the_attempt_kills_its_process_group() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let tx = std::sync::Mutex::new(Some(tx));
        let mut c = ctx();
        c.on_spawn = Some(Box::new(move |pid| {
            if let Some(tx) = tx.lock().unwrap().take() {
                let _ = tx.send(pid);
            }
        }));
        let step = argv(&["sleep", "60"]);
        let task = tokio::spawn(async move { step.run(&c).await });
        let pid = rx.await.unwrap();
        assert!(is_alive(pid));
        task.abort();
        assert!(wait_dead(pid).await, "{pid} survived its dropped attempt");
    }

    #[test]
    fn child_dies_with_the_thread_that_spawned_it() {
        // PR_SET_PDEATHSIG: the kernel kills the child when its parent dies.
        // Simulated by leaking the attempt (so no guard runs) and letting the
        // spawning thread end.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let mut c = ctx();
                let tx = std::sync::Mutex::new(tx);
                c.on_spawn = Some(Box::new(move |pid| {
                    let _ = tx.lock().unwrap().send(pid);
                }));
                let step: &'static Config = Box::leak(Box::new(argv(&["sleep", "60"])));
                let c: &'static AttemptContext = Box::leak(Box::new(c));
                let mut attempt = Box::pin(step.run(c));
                // Polled long enough to spawn; the child sleeps 60 s.
                let _ =
                    tokio::time::timeout(std::time::Duration::from_millis(200), attempt.as_mut())
                        .await;
                std::mem::forget(attempt);
            });
            std::mem::forget(rt);
        })
        .join()
        .unwrap();
        let pid = rx.recv().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while is_alive(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(!is_alive(pid), "{pid} outlived the thread that spawned it");
    }

    #[tokio::test]
    async fn exit_by_signal_is_named() {
        let outcome = script("kill -9 $$").run(&ctx()).await;
        let Outcome::Failed { error, retryable, outputs } = &outcome else { panic!("{outcome:?}") };
        assert_eq!(error, "killed by signal SIGKILL");
        assert!(retryable);
        assert_eq!(outputs["exit_code"], Value::Null);
        assert_eq!(outputs["signal"], json!("SIGKILL"));
    }

    #[tokio::test]
    async fn missing_program_names_it_and_the_path_searched() {
        let mut c = argv(&["lifeboat-no-such-program", "x"]);
        c.env.insert("PATH".into(), "/nonexistent/bin:/usr/bin".into());
        let outcome = c.run(&ctx()).await;
        assert_eq!(
            outcome,
            Outcome::fatal(
                "command `lifeboat-no-such-program` not found (searched \
                 PATH=/nonexistent/bin:/usr/bin); install it or use an absolute path"
            )
        );
    }

    #[tokio::test]
    async fn missing_relative_program_names_the_workdir() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = argv(&["./estate", "fence"]);
        c.workdir = Some(dir.path().to_str().unwrap().into());
        let Outcome::Failed { error, retryable, .. } = c.run(&ctx()).await else { panic!() };
        assert!(
            error.starts_with("command `./estate` not found (relative paths are resolved from")
        );
        assert!(!retryable);
    }

    #[tokio::test]
    async fn missing_workdir_is_reported_before_spawning() {
        let mut c = argv(&["true"]);
        c.workdir = Some("/nonexistent/lifeboat-dir".into());
        assert_eq!(
            c.run(&ctx()).await,
            Outcome::fatal(
                "workdir `/nonexistent/lifeboat-dir` does not exist or is not a directory"
            )
        );
    }

    #[tokio::test]
    async fn program_runs_in_workdir() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = argv(&["pwd", "-P"]);
        c.workdir = Some(dir.path().to_str().unwrap().into());
        let outcome = c.run(&ctx()).await;
        let expected = format!("{}\n", dir.path().canonicalize().unwrap().display());
        assert_eq!(stdout_of(&outcome), expected);
    }

    #[tokio::test]
    async fn every_attempt_gets_the_lifeboat_variables() {
        let mut c = ctx();
        c.idempotency_key = "run-1/step-a".into();
        let outcome = script(
            "echo \"$LIFEBOAT_RUN_ID|$LIFEBOAT_STEP_ID|$LIFEBOAT_ATTEMPT|$LIFEBOAT_IDEMPOTENCY_KEY\"",
        )
        .run(&c)
        .await;
        assert_eq!(stdout_of(&outcome), "run-1|step-a|2|run-1/step-a\n");
    }

    #[tokio::test]
    async fn env_remove_hides_worker_variables() {
        let mut c = ctx();
        c.env_remove = vec!["HOME".into()];
        let outcome = script("echo \"${HOME-unset}\"").run(&c).await;
        assert_eq!(stdout_of(&outcome), "unset\n");
    }

    #[tokio::test]
    async fn stdin_is_empty() {
        let outcome = argv(&["cat"]).run(&ctx()).await;
        assert!(outcome.is_success(), "{outcome:?}");
        assert_eq!(stdout_of(&outcome), "");
    }
}
