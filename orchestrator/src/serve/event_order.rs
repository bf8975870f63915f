//! Every run's events in id order with none skipped, although writers
//! commit out of id order.
//!
//! An event's id is taken when it is inserted, not when its transaction
//! commits: on Postgres two workers (or two replicas) can commit events 41
//! and 42 in the order 42, 41. A stream that sent 42 and went on "after 42"
//! would never send 41. So the stream of every run's events sends an event
//! only once every id below it has been seen, and waits for a missing one
//! for at most `GAP_WAIT`: ids are contiguous (one identity or AUTOINCREMENT
//! counter) except where a transaction rolled back or retention pruned a
//! run, and neither ever fills.
//!
//! A run's own stream needs none of this: the store writes a run's events
//! only while holding its row lock (the worker's commit and a queued request
//! alike), so within one run they commit in id order.

use crate::store::EventRecord;

/// How long a missing event id holds back the events after it.
pub const GAP_WAIT_MS: i64 = 1_000;

/// Where the stream waits for a missing id, if it does.
#[derive(Debug, Default)]
pub struct InOrder {
    /// The id the missing ones follow, and since when (ms) they are missed.
    held: Option<(i64, i64)>,
}

impl InOrder {
    /// The events of `batch` (ids after `after`, ascending) the stream may
    /// send now: those up to the first missing id, unless that one has been
    /// missed for `GAP_WAIT_MS` or the event after it was written longer ago
    /// than that (its gap is a rollback or a pruned run, not a commit still
    /// under way). `now` and event times are ms since the epoch.
    pub fn release(&mut self, after: i64, batch: Vec<EventRecord>, now: i64) -> Vec<EventRecord> {
        let mut last = after;
        let mut out = Vec::with_capacity(batch.len());
        for e in batch {
            if e.id != last + 1 {
                let since = match self.held {
                    Some((at, since)) if at == last => since,
                    _ => now,
                };
                let settled = now - since >= GAP_WAIT_MS || now - e.at >= GAP_WAIT_MS;
                if !settled {
                    self.held = Some((last, since));
                    return out;
                }
            }
            last = e.id;
            out.push(e);
        }
        self.held = None;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: i64, at: i64) -> EventRecord {
        EventRecord {
            id,
            run_id: "r".into(),
            at,
            kind: "step_started".into(),
            step_id: None,
            data: None,
        }
    }

    fn ids(events: &[EventRecord]) -> Vec<i64> {
        events.iter().map(|e| e.id).collect()
    }

    #[test]
    fn contiguous_events_go_at_once() {
        let mut order = InOrder::default();
        let out = order.release(10, vec![event(11, 5_000), event(12, 5_000)], 5_000);
        assert_eq!(ids(&out), [11, 12]);
    }

    #[test]
    fn an_event_committed_before_a_lower_id_waits_for_it() {
        let mut order = InOrder::default();
        let out = order.release(10, vec![event(11, 5_000), event(13, 5_000)], 5_010);
        assert_eq!(ids(&out), [11], "13 waits: 12 may still commit");
        let out = order.release(11, vec![event(13, 5_000)], 5_200);
        assert!(out.is_empty());
        let out = order.release(11, vec![event(12, 5_000), event(13, 5_000)], 5_300);
        assert_eq!(ids(&out), [12, 13], "12 committed: both go, in order");
    }

    #[test]
    fn a_gap_that_never_fills_is_passed_after_the_wait() {
        let mut order = InOrder::default();
        assert!(order.release(11, vec![event(13, 5_000)], 5_010).is_empty());
        assert!(order.release(11, vec![event(13, 5_000)], 5_010 + GAP_WAIT_MS / 2).is_empty());
        let out = order.release(11, vec![event(13, 5_000), event(14, 6_000)], 5_010 + GAP_WAIT_MS);
        assert_eq!(ids(&out), [13, 14]);
    }

    #[test]
    fn each_gap_waits_its_own_time() {
        let mut order = InOrder::default();
        assert!(order.release(11, vec![event(13, 9_000)], 9_000).is_empty());
        // 12 arrives, then 14 is missing: 15 waits from now on, not from 9_000.
        let later = 9_000 + GAP_WAIT_MS - 10;
        let out =
            order.release(11, vec![event(12, 9_000), event(13, 9_000), event(15, later)], later);
        assert_eq!(ids(&out), [12, 13]);
        assert!(order.release(13, vec![event(15, later)], later + 20).is_empty());
    }

    #[test]
    fn old_gaps_from_rollbacks_or_pruning_do_not_wait() {
        // A stream resumed from an old Last-Event-ID reads events written
        // long ago, with pruned runs between them.
        let mut order = InOrder::default();
        let out =
            order.release(1, vec![event(5, 1_000), event(9, 2_000), event(10, 2_000)], 60_000);
        assert_eq!(ids(&out), [5, 9, 10]);
    }
}
