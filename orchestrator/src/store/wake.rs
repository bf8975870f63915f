//! Wake-ups: how a write that gives a worker something to do reaches the
//! workers at once, instead of at their next poll.
//!
//! Every store has a `Doorbell`. A write that makes a run due (a new run, a
//! child's end waking its parent, a released lease, a request, a required
//! notification settled) rings it after it commits, and tells the other
//! processes on the same database: Postgres with `NOTIFY` in the write's own
//! transaction, SQLite with a datagram to each listening process (see
//! `sqlite/bell.rs`). Workers wait on the doorbell, on the earliest stored
//! timer (`Store::next_wake`) and, as a safety net for a lost ring, on the
//! poll interval.

use tokio::sync::{broadcast, watch};

use super::Change;

/// What a ring says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    /// Some run may be due now: workers claim.
    Due,
    /// An operator's or a person's request was queued for this run: its
    /// driver, if one runs, reads its requests now.
    Requests(String),
}

impl Wake {
    /// The text sent to other processes (a `NOTIFY` payload, a datagram).
    pub fn encode(&self) -> String {
        match self {
            Wake::Due => "due".into(),
            Wake::Requests(run) => format!("requests {run}"),
        }
    }

    /// The ring another process sent; anything else is heard as `Due`
    /// (claiming once too often costs one query; a lost ring, a poll).
    pub fn decode(text: &str) -> Wake {
        match text.strip_prefix("requests ") {
            Some(run) if !run.is_empty() && run.len() <= 64 => Wake::Requests(run.to_string()),
            _ => Wake::Due,
        }
    }
}

/// Whether committing `changes` can make a run due: a child created, a run
/// woken, or a lease released (a timer moved, or a concurrency key freed for
/// the next run in line).
pub fn commit_wakes(changes: &[Change]) -> bool {
    changes.iter().any(|c| {
        matches!(c, Change::CreateRun(_) | Change::WakeRun { .. } | Change::Release { .. })
    })
}

/// The process's end of the wake-ups: rung by this process's writes and by
/// the listener of other processes' rings.
pub struct Doorbell {
    /// Counts `Due` rings; each worker loop remembers the last it saw, so
    /// a ring while it was busy is not lost and several workers all hear it.
    due: watch::Sender<u64>,
    /// Runs with a request queued.
    requests: broadcast::Sender<String>,
}

impl Default for Doorbell {
    fn default() -> Self {
        Doorbell { due: watch::Sender::new(0), requests: broadcast::Sender::new(1024) }
    }
}

impl Doorbell {
    pub fn ring(&self, wake: &Wake) {
        match wake {
            Wake::Due => {
                self.due.send_modify(|n| *n = n.wrapping_add(1));
            }
            Wake::Requests(run) => {
                // Nobody listening (no worker in this process) is fine.
                let _ = self.requests.send(run.clone());
                // The run may be handed back; then a claim takes the request.
                self.due.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
    }

    /// A receiver that resolves `changed()` at the next `Due` ring.
    pub fn due(&self) -> watch::Receiver<u64> {
        self.due.subscribe()
    }

    /// Runs with a request queued, from now on.
    pub fn requests(&self) -> broadcast::Receiver<String> {
        self.requests.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_survives_the_wire_and_junk_is_heard_as_due() {
        for wake in [Wake::Due, Wake::Requests("0193-abc".into())] {
            assert_eq!(Wake::decode(&wake.encode()), wake);
        }
        assert_eq!(Wake::decode("requests "), Wake::Due);
        assert_eq!(Wake::decode(&format!("requests {}", "x".repeat(65))), Wake::Due);
        assert_eq!(Wake::decode("\u{0}garbage"), Wake::Due);
    }

    #[tokio::test]
    async fn a_ring_while_nobody_waits_is_heard_by_every_worker() {
        let bell = Doorbell::default();
        let (mut a, mut b) = (bell.due(), bell.due());
        let mut requests = bell.requests();
        bell.ring(&Wake::Requests("r1".into()));
        // Rung before anyone waited: both still hear it, once.
        a.changed().await.unwrap();
        b.changed().await.unwrap();
        assert!(!a.has_changed().unwrap());
        assert_eq!(requests.recv().await.unwrap(), "r1");
    }

    #[test]
    fn only_writes_that_can_make_a_run_due_ring() {
        let release = Change::Release { wake_at: Some(5) };
        let wake = Change::WakeRun { run_id: "p".into() };
        let done = Change::RequestDone { id: 1, at: 2 };
        assert!(commit_wakes(&[done.clone(), release]));
        assert!(commit_wakes(&[wake]));
        assert!(!commit_wakes(&[done]));
    }
}
