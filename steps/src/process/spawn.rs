//! Starting a `shell` step's program: the leader of a new process group
//! that dies with the worker, even by `kill -9`, standard input from
//! `/dev/null`. Three ways, the first that works:
//!
//! 1. **Guarded** (normal): started directly with `posix_spawn` and
//!    registered with this worker's guardian (`guard.rs`, `lifeboat-exec
//!    --guard`), which kills the whole group when the worker dies.
//! 2. **Through `lifeboat-exec` as a launcher** (`shim.rs`), when no
//!    guardian can run: it sets `PR_SET_PDEATHSIG` and execs the program;
//!    one more exec per step (about 1 ms).
//! 3. **Forked** (no `lifeboat-exec` installed): the same calls in a
//!    `pre_exec` hook, and any hook makes std `fork` the whole server (a
//!    40-step chain of shell steps took 160 ms through `serve` with `fork`).
//!
//! `PR_SET_PDEATHSIG` (2 and 3) fires when the *thread* that started the
//! child exits (`posix_spawn`'s child is the calling thread's too), so spawn
//! from a long-lived runtime worker thread, not from `spawn_blocking`
//! (whose threads exit when idle).

use std::ffi::OsString;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;

use nix::sys::signal::Signal;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};

use super::GroupGuard;
use super::guard::Guardian;
use super::shim;

/// Names the shim to use instead of the one beside the binary; set but
/// empty, turns it off (shell steps then start through `fork`).
pub const EXEC_SHIM_ENV: &str = "LIFEBOAT_EXEC_SHIM";

/// Whether shell steps start through `lifeboat-exec`, and which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecShim {
    /// This executable, an absolute path.
    Found(PathBuf),
    /// Turned off: `LIFEBOAT_EXEC_SHIM` is set and empty.
    Off,
    /// No executable file where it was looked for (beside the binary, or
    /// where `LIFEBOAT_EXEC_SHIM` says).
    Missing(PathBuf),
}

impl ExecShim {
    pub fn path(&self) -> Option<&Path> {
        match self {
            ExecShim::Found(path) => Some(path),
            ExecShim::Off | ExecShim::Missing(_) => None,
        }
    }
}

/// The shim of this process: looked for once, on first use.
pub fn exec_shim() -> &'static ExecShim {
    static SHIM: OnceLock<ExecShim> = OnceLock::new();
    SHIM.get_or_init(|| find(std::env::var_os(EXEC_SHIM_ENV), std::env::current_exe()))
}

/// `env` (the value of `LIFEBOAT_EXEC_SHIM`) or `lifeboat-exec` in the
/// directory of `exe` (the running binary, symbolic links resolved).
fn find(env: Option<OsString>, exe: io::Result<PathBuf>) -> ExecShim {
    let candidate = match env {
        Some(value) if value.is_empty() => return ExecShim::Off,
        Some(value) => PathBuf::from(value),
        None => match exe.as_deref().ok().and_then(Path::parent) {
            Some(dir) => dir.join(shim::NAME),
            None => return ExecShim::Missing(PathBuf::from(shim::NAME)),
        },
    };
    // Absolute: a relative path would be resolved from each step's workdir.
    let candidate = std::path::absolute(&candidate).unwrap_or(candidate);
    if is_executable(&candidate) {
        ExecShim::Found(candidate)
    } else {
        ExecShim::Missing(candidate)
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Starts `program` with `args` in a process group of its own that dies
/// with this thread, through the shim when there is one. `configure` sets
/// everything else but standard input and the process group. An error is
/// the one std gives for a failed spawn of `program`, shim or not.
pub(crate) async fn spawn(
    program: &str,
    args: &[&str],
    configure: impl Fn(&mut Command),
) -> io::Result<Child> {
    spawn_with(exec_shim().path(), program, args, configure).await
}

async fn spawn_with(
    shim: Option<&Path>,
    program: &str,
    args: &[&str],
    configure: impl Fn(&mut Command),
) -> io::Result<Child> {
    if let Some(shim) = shim
        && let Some(guardian) = Guardian::of_process(shim)
        && let Some(spawned) = guarded(guardian, program, args, &configure).await
    {
        return spawned;
    }
    if let Some(shim) = shim
        && let Some(spawned) = through_shim(shim, program, args, &configure).await
    {
        return spawned;
    }
    let mut cmd = Command::new(program);
    cmd.args(args);
    configure(&mut cmd);
    cmd.stdin(Stdio::null());
    isolate_in_fork(&mut cmd);
    cmd.spawn()
}

/// Started directly (`posix_spawn`: no hook) and registered with the
/// guardian at once. `None` if the guardian could not be told: the program
/// is killed and started through the launcher instead.
async fn guarded(
    guardian: &Guardian,
    program: &str,
    args: &[&str],
    configure: &impl Fn(&mut Command),
) -> Option<io::Result<Child>> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    configure(&mut cmd);
    cmd.stdin(Stdio::null()).process_group(0);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => return Some(Err(e)),
    };
    let pid = child.id()?;
    if guardian.register(pid).is_ok() {
        return Some(Ok(child));
    }
    super::kill_process_group(pid);
    let _ = child.wait().await;
    None
}

/// `None` when the shim itself could not be started (removed since it was
/// found, say): the caller starts the program without it, so that an
/// error names the program, not the shim.
async fn through_shim(
    shim: &Path,
    program: &str,
    args: &[&str],
    configure: &impl Fn(&mut Command),
) -> Option<io::Result<Child>> {
    // Both ends close-on-exec: the write end is inherited only as the
    // shim's standard input, which it moves to a close-on-exec descriptor.
    let (report, write_end) = io::pipe().ok()?;
    let mut cmd = Command::new(shim);
    cmd.arg(nix::unistd::getpid().to_string()).arg(program).args(args);
    configure(&mut cmd);
    cmd.stdin(Stdio::from(write_end)).process_group(0);
    let spawned = cmd.spawn();
    // Our copy of the write end: the pipe ends when the program starts.
    drop(cmd);
    let mut child = spawned.ok()?;
    // Until the program is known to run, dropping this future kills it.
    let mut group = child.id().map(GroupGuard::new);
    let mut report = match pipe::Receiver::from_owned_fd(OwnedFd::from(report)) {
        Ok(report) => report,
        Err(e) => return Some(Err(e)),
    };
    let mut errno = Vec::with_capacity(4);
    let read = report.read_to_end(&mut errno).await;
    let failed = match (read, <[u8; 4]>::try_from(errno.as_slice())) {
        (Ok(_), _) if errno.is_empty() => {
            if let Some(group) = group.as_mut() {
                group.disarm();
            }
            return Some(Ok(child));
        }
        (Ok(_), Ok(code)) => io::Error::from_raw_os_error(i32::from_ne_bytes(code)),
        (Ok(_), Err(_)) => io::Error::other(format!(
            "{} sent a report of {} bytes instead of an error number",
            shim.display(),
            errno.len()
        )),
        (Err(e), _) => e,
    };
    // The shim has exited, or is about to: make sure, then reap it (its
    // pid, and so its group id, stays reserved until then).
    if let Some(group) = group.as_mut() {
        group.kill();
    }
    let _ = child.wait().await;
    Some(Err(failed))
}

/// Without the shim: its work in a `pre_exec` hook.
fn isolate_in_fork(cmd: &mut Command) {
    cmd.process_group(0);
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec, where only
    // async-signal-safe calls are allowed. It makes two raw syscalls
    // (prctl, getppid) and builds an io::Error from an errno, which does not
    // allocate; it touches no lock and no shared state.
    #[allow(unsafe_code)]
    // the only way to set PR_SET_PDEATHSIG in the child; see docs/guarantees.md
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
            // The worker may have died between fork and prctl: then the
            // signal will never come, so do not start the program at all.
            if nix::unistd::getppid() != parent {
                return Err(io::Error::from_raw_os_error(nix::libc::ESRCH));
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(dir: &Path, name: &str, text: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn the_shim_is_looked_for_beside_the_binary_unless_named_or_turned_off() {
        let dir = tempfile::tempdir().unwrap();
        let exe = || Ok(dir.path().join("lifeboat"));
        let beside = dir.path().join(shim::NAME);
        assert_eq!(find(None, exe()), ExecShim::Missing(beside.clone()));
        script(dir.path(), shim::NAME, "");
        assert_eq!(find(None, exe()), ExecShim::Found(beside.clone()));
        assert_eq!(find(Some("".into()), exe()), ExecShim::Off);
        let named = script(dir.path(), "other-shim", "");
        assert_eq!(find(Some(named.clone().into()), exe()), ExecShim::Found(named));
        let missing = dir.path().join("nowhere");
        assert_eq!(find(Some(missing.clone().into()), exe()), ExecShim::Missing(missing));
        std::fs::write(dir.path().join("not-executable"), "").unwrap();
        assert!(matches!(
            find(Some(dir.path().join("not-executable").into()), exe()),
            ExecShim::Missing(_)
        ));
    }

    #[test]
    fn a_relative_shim_path_is_made_absolute() {
        let ExecShim::Missing(path) = find(Some("bin/lifeboat-exec".into()), Ok("/x/y".into()))
        else {
            panic!("found a shim at a relative path")
        };
        assert!(path.is_absolute(), "{path:?}");
    }

    fn quiet(cmd: &mut Command) {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    }

    // A stand-in for lifeboat-exec that speaks its protocol without the
    // prctl: the real one is tested through the `lifeboat` binary
    // (tests/exec_shim.rs).
    const PASS_THROUGH: &str = "#!/bin/sh\nshift\nexec \"$@\" 0</dev/null\n";

    #[tokio::test]
    async fn a_program_started_through_the_shim_keeps_its_pid_and_group() {
        let dir = tempfile::tempdir().unwrap();
        let shim = script(dir.path(), "shim", PASS_THROUGH);
        let child = spawn_with(
            Some(&shim),
            "sh",
            &["-c", "echo $$ $(cut -d' ' -f5 /proc/$$/stat)"],
            |cmd| {
                quiet(cmd);
            },
        )
        .await
        .unwrap();
        let pid = child.id().unwrap();
        let out = child.wait_with_output().await.unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let ids: Vec<u32> = text.split_whitespace().map(|n| n.parse().unwrap()).collect();
        assert_eq!(ids, [pid, pid], "{text}");
    }

    #[tokio::test]
    async fn an_error_number_reported_by_the_shim_is_the_spawn_error() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: String =
            nix::libc::ENOENT.to_ne_bytes().iter().map(|b| format!("\\{b:03o}")).collect();
        let shim =
            script(dir.path(), "shim", &format!("#!/bin/sh\nprintf '{bytes}' >&0\nexit 127\n"));
        let e = spawn_with(Some(&shim), "anything", &[], quiet).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
    }

    #[tokio::test]
    async fn a_shim_that_cannot_start_is_passed_over() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("removed-since");
        let child = spawn_with(Some(&gone), "true", &[], quiet).await.unwrap();
        assert!(child.wait_with_output().await.unwrap().status.success());
        let e = spawn_with(Some(&gone), "lifeboat-no-such-program", &[], quiet).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
    }
}
