//! The guardian: one `lifeboat-exec --guard` per worker process that kills
//! the process groups of the worker's shell steps when the worker dies,
//! however it dies.
//!
//! The worker starts it once, with the read end of a pipe as its standard
//! input, and writes `+PGID` when a step's group starts and `-PGID` when it
//! has been killed or has ended. When the worker dies, even by `kill -9`,
//! the kernel closes the write end; the guardian reads end-of-file, sends
//! SIGKILL to every group still registered, and exits.
//!
//! Why: with it, a step's program is started directly with `posix_spawn`
//! and nothing in between. The other ways to tie a child to its worker
//! cost an exec per step (`lifeboat-exec` as a launcher that sets
//! `PR_SET_PDEATHSIG`, about 1 ms each on the reference machine, most of a
//! `shell true` step) or a fork of the whole server (the same call in a
//! `pre_exec` hook). And it kills the whole group, where the parent-death
//! signal reaches only the program itself.
//!
//! What it cannot cover: a worker killed in the microseconds between
//! `posix_spawn` returning and `+PGID` being written. Its group is then
//! found by the next worker's recovery (the recorded pgid), like any
//! orphan.

use std::collections::HashSet;
use std::io::{self, BufRead, PipeWriter, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};

use super::kill_process_group;

/// The argument that makes `lifeboat-exec` the guardian.
pub const GUARD_ARG: &str = "--guard";

/// The guardian's side: reads `+PGID` / `-PGID` lines until end-of-file
/// (the worker is gone), then kills every group still registered. Returns
/// the groups it killed.
pub fn watch(input: impl BufRead) -> Vec<u32> {
    let mut live = HashSet::new();
    for line in input.split(b'\n') {
        let Ok(line) = line else { break };
        let text = String::from_utf8_lossy(&line);
        let (sign, number) = text.split_at(text.len().min(1));
        match (sign, number.trim().parse::<u32>()) {
            ("+", Ok(pgid)) if pgid > 1 => {
                live.insert(pgid);
            }
            ("-", Ok(pgid)) => {
                live.remove(&pgid);
            }
            _ => {}
        }
    }
    let mut killed: Vec<u32> = live.into_iter().collect();
    killed.sort_unstable();
    for &pgid in &killed {
        kill_process_group(pgid);
    }
    killed
}

/// What the guardian says on standard output once it watches.
const READY: &[u8] = b"ready\n";

/// `lifeboat-exec --guard`: says it is ready, [`watch`]es standard input,
/// then exits.
pub fn main() -> ! {
    // Its own directory is no mount to keep busy.
    let _ = std::env::set_current_dir("/");
    let mut out = io::stdout();
    if out.write_all(READY).and_then(|()| out.flush()).is_err() {
        std::process::exit(1);
    }
    watch(io::stdin().lock());
    std::process::exit(0)
}

/// The worker's side: the running guardian and the groups registered.
pub(crate) struct Guardian {
    shim: std::path::PathBuf,
    inner: Mutex<Option<Running>>,
}

struct Running {
    child: Child,
    pipe: PipeWriter,
    live: HashSet<u32>,
}

/// This process's guardian, once a step has needed one.
static GUARDIAN: OnceLock<Guardian> = OnceLock::new();

impl Guardian {
    /// This process's guardian, started on first use through `shim`;
    /// `None` if it cannot be started (the caller falls back to the
    /// launcher).
    pub(crate) fn of_process(shim: &Path) -> Option<&'static Guardian> {
        let guardian =
            GUARDIAN.get_or_init(|| Guardian { shim: shim.to_path_buf(), inner: Mutex::new(None) });
        guardian.ready().then_some(guardian)
    }

    /// This process's guardian if one was ever started.
    pub(crate) fn started() -> Option<&'static Guardian> {
        GUARDIAN.get()
    }

    /// Whether a guardian runs (starting one if none does).
    fn ready(&self) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        self.ensure(&mut inner).is_ok()
    }

    /// Starts a guardian if none runs, or the last one died, and gives it
    /// every group still registered.
    fn ensure(&self, inner: &mut Option<Running>) -> io::Result<()> {
        // Gone (killed by hand?): another is started with the same groups.
        if let Some(running) = inner.as_mut()
            && matches!(running.child.try_wait(), Ok(None))
        {
            return Ok(());
        }
        let live = inner.take().map(|r| r.live).unwrap_or_default();
        // Close-on-exec: no other child keeps the write end open, so it
        // closes exactly when this process dies.
        let (read_end, write_end) = io::pipe()?;
        let mut child = Command::new(&self.shim)
            .arg(GUARD_ARG)
            .stdin(Stdio::from(read_end))
            .stdout(Stdio::piped())
            // Its own group: a Ctrl-C meant for `lifeboat` does not reach it.
            .process_group(0)
            .spawn()?;
        // Trusted only once it says it watches (once per process: a few ms).
        let mut said = [0; READY.len()];
        let ready = child.stdout.take().map(|mut out| io::Read::read_exact(&mut out, &mut said));
        if !matches!(ready, Some(Ok(()))) || said != READY {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other("the guardian did not start"));
        }
        let mut running = Running { child, pipe: write_end, live };
        let all: String = running.live.iter().map(|pgid| format!("+{pgid}\n")).collect();
        running.pipe.write_all(all.as_bytes())?;
        *inner = Some(running);
        Ok(())
    }

    /// Registers a group that has just started; an error means no guardian
    /// could be told (the caller kills the group rather than leave it
    /// unguarded).
    pub(crate) fn register(&self, pgid: u32) -> io::Result<()> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        self.ensure(&mut inner)?;
        let running = inner.as_mut().expect("ensured");
        running.live.insert(pgid);
        if running.pipe.write_all(format!("+{pgid}\n").as_bytes()).is_err() {
            // It died since `ensure` looked: a new one gets every group.
            let _ = running.child.kill();
            let _ = running.child.wait();
            self.ensure(&mut inner)?;
        }
        Ok(())
    }

    /// Forgets a group that has been killed or has ended.
    pub(crate) fn unregister(&self, pgid: u32) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(running) = inner.as_mut()
            && running.live.remove(&pgid)
        {
            // A guardian that died is replaced at the next registration,
            // without this group.
            let _ = running.pipe.write_all(format!("-{pgid}\n").as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn sleeper() -> Child {
        Command::new("sleep").arg("30").process_group(0).spawn().unwrap()
    }

    fn ended(child: &mut Child) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn at_end_of_file_every_group_still_registered_is_killed_and_no_other() {
        let (mut kept, mut forgotten) = (sleeper(), sleeper());
        let (k, f) = (kept.id(), forgotten.id());
        let input = format!("+{k}\n+{f}\nnonsense\n+1\n+0\n-{f}\n");
        assert_eq!(watch(input.as_bytes()), [k]);
        assert!(ended(&mut kept), "the registered group lives on");
        assert!(forgotten.try_wait().unwrap().is_none(), "an unregistered group was killed");
        forgotten.kill().unwrap();
        forgotten.wait().unwrap();
    }

    #[test]
    fn a_real_pipe_closing_is_the_end() {
        let mut kept = sleeper();
        let (read_end, mut write_end) = io::pipe().unwrap();
        let guard = std::thread::spawn(move || watch(io::BufReader::new(read_end)));
        writeln!(write_end, "+{}", kept.id()).unwrap();
        drop(write_end);
        assert_eq!(guard.join().unwrap(), [kept.id()]);
        assert!(ended(&mut kept));
    }
}
