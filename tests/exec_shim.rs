//! `lifeboat-exec`, the launcher shell steps start through
//! (steps/src/process/): found beside the binary, used by `serve`, and
//! with or without it a step's process dies with its worker (`kill -9`),
//! starts with SIGPIPE at its default, and a program that cannot start
//! fails with the same error.

use std::time::Duration;

use serde_json::Value;

use crate::util::{Sandbox, eventually, exec_fixture, pid_alive, stdout, step};

/// The shim `cargo` built beside the `lifeboat` under test.
const SHIM: &str = env!("CARGO_BIN_EXE_lifeboat-exec");

/// Starts `cancel-shell.yaml` (its step writes its pid, then sleeps) under
/// `serve`, kills `serve` with SIGKILL and checks that the step's process
/// died with it, before any other worker could take the run over.
/// Returns the pid `serve` had and whether the step's `sleep` (in the
/// step's process group) died too.
fn step_dies_with_its_killed_worker(sb: &Sandbox) -> (u32, bool) {
    let run = sb.enqueue(&exec_fixture("cancel-shell.yaml"), &[]);
    let mut serve = sb.serve();
    let serve_pid = serve.pid();
    assert!(
        eventually(Duration::from_secs(30), || !sb.read("long.pid").is_empty()),
        "never started"
    );
    // Killed only once the group is on record, which is after the guardian
    // was told: a worker killed between its `posix_spawn` and telling the
    // guardian (a few microseconds, stretched on a loaded machine) leaves
    // the group to the next worker's recovery instead (guard.rs).
    crate::run::wait_for_pgid(sb, &run, "long");
    let leader: u32 = sb.read("long.pid").trim().parse().expect("pid");
    assert!(pid_alive(leader));
    serve.kill9();
    let died = eventually(Duration::from_secs(3), || !pid_alive(leader));
    let group_died = eventually(Duration::from_secs(3), || group_members(leader).is_empty());
    // Without a guardian its `sleep` has no parent-death signal (taking the
    // run over kills the group): do not leave it behind.
    let _ = std::process::Command::new("kill").args(["-9", "--", &format!("-{leader}")]).status();
    assert!(died, "the step's process {leader} outlived its worker, killed with SIGKILL");
    (serve_pid, group_died)
}

/// The processes whose process group is `pgid` (from `/proc/*/stat`).
fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().is_some_and(|stat| {
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(2)?.parse::<u32>().ok())
                    == Some(pgid)
            })
        })
        .collect()
}

/// A wrapper for the shim that records how `serve` calls it, then is the
/// shim; with `refuse_guard`, it exits at once when asked to guard.
fn recording_shim(sb: Sandbox, refuse_guard: bool) -> Sandbox {
    let calls = sb.path("shim-calls");
    let refuse = if refuse_guard { "[ \"$1\" = --guard ] && exit 1\n" } else { "" };
    let wrapper = sb.write(
        "shim.sh",
        &format!(
            "#!/bin/sh\necho \"$1 $2\" >> '{}'\n{refuse}exec '{SHIM}' \"$@\"\n",
            calls.display()
        ),
    );
    make_executable(&wrapper);
    sb.env("LIFEBOAT_EXEC_SHIM", wrapper.to_str().unwrap())
}

#[test]
fn a_step_guarded_by_lifeboat_exec_dies_with_its_killed_worker() {
    let sb = recording_shim(Sandbox::new("exec-shim-kill9"), false);
    let (_, group_died) = step_dies_with_its_killed_worker(&sb);
    assert!(group_died, "the guardian kills the step's whole process group");
    // One guardian for the worker; the step's program started directly.
    assert_eq!(sb.lines("shim-calls"), ["--guard "], "how `serve` called the shim");
}

#[test]
fn without_a_guardian_lifeboat_exec_launches_the_step_and_it_dies_with_its_worker() {
    let sb = recording_shim(Sandbox::new("exec-shim-launcher-kill9"), true);
    let (serve_pid, _) = step_dies_with_its_killed_worker(&sb);
    assert_eq!(
        sb.lines("shim-calls"),
        ["--guard ".to_string(), format!("{serve_pid} bash")],
        "`serve` tried a guardian, then launched through the shim naming itself the parent"
    );
}

#[test]
fn without_lifeboat_exec_a_step_still_dies_with_its_killed_worker() {
    let sb = Sandbox::new("exec-shim-off-kill9").env("LIFEBOAT_EXEC_SHIM", "");
    step_dies_with_its_killed_worker(&sb);
}

#[test]
fn doctor_finds_lifeboat_exec_beside_the_binary() {
    let sb = Sandbox::new("exec-shim-doctor");
    std::fs::create_dir_all(sb.path("workflows")).unwrap();
    sb.write(
        "workflows/one.yaml",
        "name: one\nsteps:\n  a:\n    uses: shell\n    with: { command: [\"true\"] }\n",
    );
    let finding = |sb: &Sandbox| -> Value {
        let out = sb.lifeboat(&["doctor", "--json"]);
        let doc: Value = serde_json::from_str(&stdout(&out)).expect("doctor --json");
        let checks = doc["checks"].as_array().cloned().unwrap_or_default();
        checks
            .into_iter()
            .find(|c| c["check"] == "program" && c["target"] == "lifeboat-exec")
            .unwrap_or_else(|| panic!("no finding about lifeboat-exec: {doc:#}"))
    };

    let found = finding(&sb);
    assert_eq!(found["status"], "pass", "{found:#}");
    let shown = found["detail"].as_str().unwrap();
    assert!(shown.starts_with(&format!("{SHIM} ")), "{shown}");

    let off = finding(&sb.env("LIFEBOAT_EXEC_SHIM", ""));
    assert_eq!(off["status"], "warn", "{off:#}");
}

/// A workflow whose one step runs `{{ inputs.prog }}`.
const PROGRAM: &str = "name: program\ninputs:\n  prog: { type: string, required: true }\nsteps:\n  start:\n    uses: shell\n    with: { command: [\"{{ inputs.prog }}\"] }\n";

/// A sandbox with `program.yaml` and programs that cannot start: a text
/// file (`plain.txt`), a script whose interpreter does not exist
/// (`bad-interpreter`), a directory; and `sigign`, which prints the
/// signals it starts with ignored.
fn programs_sandbox(name: &str) -> Sandbox {
    let sb = Sandbox::new(name);
    sb.write("program.yaml", PROGRAM);
    sb.write("plain.txt", "not a program\n");
    make_executable(&sb.write("bad-interpreter", "#!/nonexistent/interpreter\n"));
    std::fs::create_dir_all(sb.path("adir")).unwrap();
    make_executable(&sb.write("sigign", "#!/bin/sh\ngrep SigIgn /proc/$$/status\n"));
    sb
}

/// The step of one `run --wait` of `program.yaml` with `prog`.
fn start(sb: &Sandbox, prog: &str) -> Value {
    let file = sb.path("program.yaml");
    let (_, doc) = sb.run_wait(file.to_str().unwrap(), &[&format!("prog={prog}")]);
    step(&doc, "start").clone()
}

#[test]
fn a_program_that_cannot_start_fails_alike_with_and_without_lifeboat_exec() {
    let shim = programs_sandbox("exec-shim-errors");
    let fork = programs_sandbox("exec-shim-errors-off").env("LIFEBOAT_EXEC_SHIM", "");
    for (prog, expected) in [
        (
            "lifeboat-no-such-program",
            "command `lifeboat-no-such-program` not found (searched PATH=",
        ),
        ("./missing", "command `./missing` not found (relative paths are resolved from `.`)"),
        ("./bad-interpreter", "command `./bad-interpreter` not found (relative paths"),
        ("./plain.txt", "command `./plain.txt` is not executable (permission denied)"),
        ("./adir", "command `./adir` is not executable (permission denied)"),
    ] {
        let [through, forked] = [start(&shim, prog), start(&fork, prog)];
        assert_eq!(through["status"], "failed", "{prog}: {through:#}");
        assert_eq!(through["error"], forked["error"], "{prog}");
        let error = through["error"].as_str().unwrap_or_default();
        assert!(error.starts_with(expected), "{prog}: {error}");
    }
}

#[test]
fn a_program_starts_with_sigpipe_at_its_default_with_and_without_lifeboat_exec() {
    let shim = programs_sandbox("exec-shim-sigpipe");
    let fork = programs_sandbox("exec-shim-sigpipe-off").env("LIFEBOAT_EXEC_SHIM", "");
    const SIGPIPE: u64 = 1 << (13 - 1);
    for sb in [&shim, &fork] {
        let started = start(sb, "./sigign");
        assert_eq!(started["status"], "succeeded", "{started:#}");
        let line = started["outputs"]["stdout"].as_str().unwrap_or_default().trim().to_string();
        let mask = line.strip_prefix("SigIgn:").map(str::trim).unwrap_or_default();
        let ignored = u64::from_str_radix(mask, 16).unwrap_or_else(|_| panic!("{line:?}"));
        assert_eq!(ignored & SIGPIPE, 0, "SIGPIPE is ignored in the step's process: {line}");
    }
}

fn make_executable(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}
