//! Child processes for the `shell` step: each in its own process group that
//! dies with the worker, killed as a whole, with bounded output capture.
//! `spawn.rs` starts them: directly, watched by this worker's guardian
//! (`guard.rs`, `lifeboat-exec --guard`) when `lifeboat-exec` is installed
//! beside the binary.

mod guard;
pub mod shim;
mod spawn;

pub(crate) use spawn::spawn;
pub use spawn::{EXEC_SHIM_ENV, ExecShim, exec_shim};

use std::collections::VecDeque;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::sync::CancellationToken;

/// Sends SIGKILL to every process of the group `pgid`.
///
/// For the executor after a crash: a shell step reports its child's pid
/// (which is its process-group id) through `AttemptContext::on_spawn`; when
/// the worker restarts and finds that attempt unfinished, it calls this so
/// no orphaned group keeps changing the world. A group that no longer exists
/// is not an error. `pgid` 0 and 1 are refused: they would mean "my own
/// group" and "init".
pub fn kill_process_group(pgid: u32) {
    let Ok(raw) = i32::try_from(pgid) else { return };
    if raw <= 1 {
        return;
    }
    // ESRCH: the group is already gone; EPERM: the pid was reused by a
    // process we may not signal. Neither leaves anything of ours to kill.
    let _ = killpg(Pid::from_raw(raw), Signal::SIGKILL);
}

/// Kills the process group `pgid` only if it still holds a process of the
/// given attempt (one whose environment has that attempt's
/// `LIFEBOAT_RUN_ID`, `LIFEBOAT_STEP_ID` and `LIFEBOAT_ATTEMPT`); returns
/// whether it did.
///
/// Prefer this to [`kill_process_group`] when cleaning up after a crash: a
/// recorded pgid may have been reused by an unrelated group since (after a
/// reboot, certainly). Reads `/proc`, so it sees only processes this worker
/// may inspect (same user, or root).
pub fn kill_orphaned_attempt(pgid: u32, run_id: &str, step_id: &str, attempt: u32) -> bool {
    let marks = [
        format!("{}={run_id}", crate::ENV_RUN_ID),
        format!("{}={step_id}", crate::ENV_STEP_ID),
        format!("{}={attempt}", crate::ENV_ATTEMPT),
    ];
    let Ok(entries) = std::fs::read_dir("/proc") else { return false };
    let ours = entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .any(|pid| process_group_of(pid) == Some(pgid) && environ_has(pid, &marks));
    if ours {
        kill_process_group(pgid);
    }
    ours
}

/// The process group of `pid`, from `/proc/<pid>/stat` (`pid (comm) state ppid pgrp ...`).
fn process_group_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(2)?.parse().ok()
}

/// Whether every `NAME=value` of `marks` is in `pid`'s environment.
fn environ_has(pid: u32, marks: &[String]) -> bool {
    let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else { return false };
    let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
    marks.iter().all(|mark| vars.contains(&mark.as_bytes()))
}

/// Kills the group on drop unless disarmed: if the attempt's future is
/// dropped (the executor gave up on it), its processes do not outlive it.
pub(crate) struct GroupGuard {
    pgid: Option<u32>,
}

impl GroupGuard {
    pub(crate) fn new(pgid: u32) -> Self {
        Self { pgid: Some(pgid) }
    }

    /// Lets the group live; the guard does nothing more.
    pub(crate) fn disarm(&mut self) {
        self.pgid = None;
    }

    /// Kills the group now (and tells the guardian it is gone); the guard
    /// does nothing more.
    pub(crate) fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            kill_process_group(pgid);
            if let Some(guardian) = guard::Guardian::started() {
                guardian.unregister(pgid);
            }
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Captured bytes of one stream: the first and last halves of the budget,
/// with what was dropped in between counted.
#[derive(Debug, Default)]
pub(crate) struct Captured {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    omitted: u64,
    total: u64,
}

impl Captured {
    pub(crate) fn truncated(&self) -> bool {
        self.omitted > 0
    }

    /// The captured text (lossy UTF-8); when truncated, the head and the
    /// tail joined by a line saying how many bytes were left out.
    pub(crate) fn text(&self) -> String {
        let tail: Vec<u8> = self.tail.iter().copied().collect();
        if self.omitted == 0 {
            let mut all = self.head.clone();
            all.extend_from_slice(&tail);
            return String::from_utf8_lossy(&all).into_owned();
        }
        format!(
            "{}\n[... {} bytes omitted of {} ...]\n{}",
            String::from_utf8_lossy(&self.head),
            self.omitted,
            self.total,
            String::from_utf8_lossy(&tail),
        )
    }

    /// The end of the stream (lossy UTF-8): what the last line is read from.
    pub(crate) fn tail_text(&self) -> String {
        if self.omitted == 0 {
            return self.text();
        }
        let tail: Vec<u8> = self.tail.iter().copied().collect();
        String::from_utf8_lossy(&tail).into_owned()
    }
}

/// Reads `pipe` to its end (or until `stop`), keeping at most `max` bytes:
/// the first `max / 2` and the last `max - max / 2`. It keeps reading past
/// the bound, so the child never blocks on a full pipe.
pub(crate) async fn capture<R: AsyncRead + Unpin>(
    mut pipe: R,
    max: usize,
    stop: CancellationToken,
) -> Captured {
    let head_cap = max / 2;
    let tail_cap = max - head_cap;
    let mut out = Captured::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            read = pipe.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            () = stop.cancelled() => break,
        };
        out.total += n as u64;
        let mut chunk = &buf[..n];
        let room = head_cap.saturating_sub(out.head.len());
        if room > 0 {
            let take = room.min(chunk.len());
            out.head.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
        }
        if chunk.len() >= tail_cap {
            out.omitted += (out.tail.len() + chunk.len() - tail_cap) as u64;
            out.tail.clear();
            out.tail.extend(&chunk[chunk.len() - tail_cap..]);
        } else {
            let overflow = (out.tail.len() + chunk.len()).saturating_sub(tail_cap);
            out.tail.drain(..overflow);
            out.omitted += overflow as u64;
            out.tail.extend(chunk);
        }
    }
    out
}

/// How long output readers may go on after the process group is dead: a
/// descendant that escaped into another group or session can hold the pipes
/// open forever; it does not hold the step.
pub(crate) const DRAIN_GRACE: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;

    async fn capture_bytes(data: &[u8], max: usize) -> Captured {
        capture(data, max, CancellationToken::new()).await
    }

    #[tokio::test]
    async fn small_output_is_kept_whole() {
        let c = capture_bytes(b"hello\nworld\n", 100).await;
        assert!(!c.truncated());
        assert_eq!(c.text(), "hello\nworld\n");
    }

    #[tokio::test]
    async fn large_output_keeps_head_and_tail_within_the_bound() {
        let data: Vec<u8> = (0..10_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let c = capture_bytes(&data, 100).await;
        assert!(c.truncated());
        assert_eq!(c.head, &data[..50]);
        assert_eq!(c.tail.iter().copied().collect::<Vec<_>>(), &data[data.len() - 50..]);
        assert_eq!(c.omitted, 9_900);
        assert!(c.text().contains("[... 9900 bytes omitted of 10000 ...]"));
    }

    #[test]
    fn orphaned_attempt_is_killed_only_when_its_group_is_ours() {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .env(crate::ENV_RUN_ID, "run-9")
            .env(crate::ENV_STEP_ID, "promote")
            .env(crate::ENV_ATTEMPT, "2")
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = child.id();
        assert!(!kill_orphaned_attempt(pgid, "run-9", "promote", 1));
        assert!(!kill_orphaned_attempt(pgid, "other-run", "promote", 2));
        assert!(child.try_wait().unwrap().is_none(), "a group that is not ours was killed");
        assert!(kill_orphaned_attempt(pgid, "run-9", "promote", 2));
        let status = child.wait().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9));
    }

    #[test]
    fn killing_a_group_that_does_not_exist_is_harmless() {
        kill_process_group(0);
        kill_process_group(1);
        kill_process_group(u32::MAX);
        kill_process_group(4_000_000);
    }
}
