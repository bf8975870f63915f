//! `lifeboat-exec`: the launcher a `shell` step's program starts through,
//! `lifeboat-exec <parent-pid> <program> [args…]`. It asks the kernel to
//! SIGKILL it when its parent dies (`PR_SET_PDEATHSIG`), checks that its
//! parent is still `parent-pid`, then execs `program` (searched on `PATH`
//! as `execvp` does), which keeps its pid, its process group and that
//! signal.
//!
//! Why a separate program: the same two calls made in a `pre_exec` hook
//! make std `fork` the whole multi-threaded server for every step, where
//! without a hook it uses `posix_spawn` (`vfork`); see `spawn.rs`.
//!
//! The parent learns whether the exec worked as std does it internally:
//! standard input is the write end of a close-on-exec pipe. The shim moves
//! it to a close-on-exec descriptor and puts `/dev/null` in its place, so
//! the pipe closes, empty, when the program starts; if anything fails it
//! writes the error number there (4 bytes, native order) and exits 127.

use std::convert::Infallible;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::unistd::{Pid, dup2_stdin, execvp, getppid};

/// The shim's file name; `lifeboat` looks for it in its own directory.
pub const NAME: &str = "lifeboat-exec";

/// The exit status when the program could not be started (a shell's).
pub const CANNOT_START: i32 = 127;

/// The exit status when the shim was called with the wrong arguments.
pub const USAGE: i32 = 2;

/// The `lifeboat-exec` program. Returns only by exiting.
pub fn main() -> ! {
    if std::env::args_os().nth(1).is_some_and(|a| a == super::guard::GUARD_ARG) {
        super::guard::main();
    }
    let report = report_pipe();
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let Some((parent, program, argv)) = parse(&args) else {
        eprintln!(
            "usage: {NAME} <parent-pid> <program> [args...]\n\
             (lifeboat starts a shell step's program through it)"
        );
        fail(report, OsStr::new(""), Errno::EINVAL, USAGE);
    };
    let started = match &report {
        // The program's standard input is /dev/null, as without the shim.
        Some(_) => File::open("/dev/null")
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))
            .and_then(dup2_stdin),
        None => Ok(()),
    };
    let error = match started.and_then(|()| start(parent, &program, &argv)) {
        Err(error) => error,
        Ok(never) => match never {},
    };
    fail(report, args[1].as_os_str(), error, CANNOT_START)
}

/// The parent's pipe, taken off standard input (close-on-exec, so it closes
/// when the program starts); `None` when standard input is not a pipe (the
/// shim run by hand): then failures are only printed.
fn report_pipe() -> Option<File> {
    let pipe = match io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => File::from(fd),
        // No descriptor to spare in a process that has just started: left
        // on standard input, the pipe would stay open as long as the program.
        Err(e) => {
            eprintln!("{NAME}: cannot take the report pipe off standard input: {e}");
            std::process::exit(CANNOT_START);
        }
    };
    pipe.metadata().ok()?.file_type().is_fifo().then_some(pipe)
}

/// `<parent-pid> <program> [args…]` as the pid, the program and its argv.
fn parse(args: &[OsString]) -> Option<(Pid, CString, Vec<CString>)> {
    // 1 is a parent like any other: `lifeboat serve` is pid 1 in a container.
    let parent: i32 = args.first()?.to_str()?.parse().ok().filter(|pid| *pid > 0)?;
    let argv: Vec<CString> =
        args[1..].iter().map(|a| CString::new(a.as_bytes())).collect::<Result<_, _>>().ok()?;
    let program = argv.first()?.clone();
    Some((Pid::from_raw(parent), program, argv))
}

/// What the `pre_exec` hook did, then the exec: returns only on failure.
fn start(parent: Pid, program: &CString, argv: &[CString]) -> Result<Infallible, Errno> {
    restore_sigpipe()?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
    // The parent may have died before the prctl: then the signal will never
    // come, so do not start the program at all.
    if getppid() != parent {
        return Err(Errno::ESRCH);
    }
    execvp(program, argv)
}

/// Rust programs start with SIGPIPE ignored, and an ignored signal stays
/// ignored across exec: put back the default a program started by std gets
/// (`yes | head -1` ends `yes` by SIGPIPE, not by a write error).
fn restore_sigpipe() -> Result<(), Errno> {
    // SAFETY: SIG_DFL installs no handler, so no code of ours can run in a
    // signal context; this process is single-threaded and about to exec.
    #[allow(unsafe_code)]
    // the only way to change a disposition; nix has no safe form for SIG_DFL
    unsafe {
        nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl)?;
    }
    Ok(())
}

/// Reports `error` to the parent (or, run by hand, on stderr) and exits.
fn fail(report: Option<File>, program: &OsStr, error: Errno, status: i32) -> ! {
    match report {
        Some(mut pipe) => {
            let _ = pipe.write_all(&(error as i32).to_ne_bytes());
        }
        None if status == CANNOT_START => eprintln!(
            "{NAME}: cannot start `{}`: {}",
            program.to_string_lossy(),
            io::Error::from(error)
        ),
        None => {}
    }
    std::process::exit(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn pid_1_is_a_parent_like_any_other() {
        // `lifeboat serve` as a container's entry point.
        assert_eq!(parse(&os(&["1", "true"])).map(|p| p.0), Some(Pid::from_raw(1)));
    }

    #[test]
    fn arguments_are_the_parent_then_the_program_and_its_argv() {
        let (parent, program, argv) = parse(&os(&["4242", "bash", "-c", "true"])).unwrap();
        assert_eq!(parent, Pid::from_raw(4242));
        assert_eq!(program.to_str(), Ok("bash"));
        assert_eq!(
            argv.iter().map(|a| a.to_str().unwrap()).collect::<Vec<_>>(),
            ["bash", "-c", "true"]
        );
    }

    #[test]
    fn a_missing_program_or_a_bad_parent_is_a_usage_error() {
        for args in [&[][..], &["4242"], &["x", "bash"], &["0", "bash"], &["-5", "bash"]] {
            assert!(parse(&os(args)).is_none(), "{args:?}");
        }
    }
}
