//! `RunEvent`: every event a run records (the `events` table's `kind`), as
//! one closed enum. Code names events by variant, so a typo does not
//! compile; `notify_event` says which of them a workflow's `notify` rules
//! can name (`lifeboat_notify::Event`, which the compiler checks in the
//! workflow file), so a rule can never silently miss its event.

use lifeboat_notify::Event;

macro_rules! run_events {
    ($($variant:ident => $name:literal,)*) => {
        /// An event of a run, stored by its name (`as_str`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum RunEvent {
            $($variant,)*
        }

        impl RunEvent {
            pub const ALL: &'static [RunEvent] = &[$(RunEvent::$variant,)*];

            /// The name stored in `events.kind` and shown to users.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(RunEvent::$variant => $name,)*
                }
            }

            /// The event stored under `name`; `None` for a name this
            /// lifeboat does not know (written by a newer one).
            pub fn parse(name: &str) -> Option<RunEvent> {
                match name {
                    $($name => Some(RunEvent::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

run_events! {
    // The run.
    Started => "started",
    Succeeded => "succeeded",
    Failed => "failed",
    Cancelled => "cancelled",
    RollingBack => "rolling_back",
    RolledBack => "rolled_back",
    RollbackFailed => "rollback_failed",
    Retried => "retried",
    RtoBreached => "rto_breached",
    Quarantined => "quarantined",
    Paused => "paused",
    Resumed => "resumed",
    // Its steps.
    StepStarted => "step_started",
    StepSucceeded => "step_succeeded",
    StepFailed => "step_failed",
    StepSkipped => "step_skipped",
    StepRetrying => "step_retrying",
    StepWaiting => "step_waiting",
    StepInterrupted => "step_interrupted",
    NeedsHuman => "needs_human",
    FaultInjected => "fault_injected",
    ChildStarted => "child_started",
    Notification => "notification",
    RollbackStarted => "rollback_started",
    StepRolledBack => "step_rolled_back",
    RollbackStepFailed => "rollback_step_failed",
    // People: approvals and escalations.
    ApprovalRequested => "approval_requested",
    ApprovalRecorded => "approval_recorded",
    ApprovalTimedOut => "approval_timed_out",
    Approved => "approved",
    Rejected => "rejected",
    Acknowledged => "acknowledged",
    DecisionRefused => "decision_refused",
    Escalated => "escalated",
    StatusUpdate => "status_update",
    EscalationExhausted => "escalation_exhausted",
}

impl RunEvent {
    /// The event a workflow's `notify` rules name for this one, if they can.
    /// Exhaustive on purpose: a new event must decide here.
    pub fn notify_event(self) -> Option<Event> {
        use RunEvent::*;
        Some(match self {
            Started => Event::Started,
            Succeeded => Event::Succeeded,
            Failed => Event::Failed,
            RolledBack => Event::RolledBack,
            RollbackFailed => Event::RollbackFailed,
            Cancelled => Event::Cancelled,
            StepFailed => Event::StepFailed,
            ApprovalRequested => Event::ApprovalRequested,
            NeedsHuman => Event::NeedsHuman,
            Escalated => Event::Escalated,
            RtoBreached => Event::RtoBreached,
            RollingBack | Retried | Quarantined | Paused | Resumed | StepStarted
            | StepSucceeded | StepSkipped | StepRetrying | StepWaiting | StepInterrupted
            | ChildStarted | Notification | RollbackStarted | StepRolledBack
            | RollbackStepFailed | ApprovalRecorded | ApprovalTimedOut | Approved | Rejected
            | Acknowledged | DecisionRefused | StatusUpdate | EscalationExhausted
            | FaultInjected => return None,
        })
    }
}

impl std::fmt::Display for RunEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_parses_from_its_stored_name() {
        for event in RunEvent::ALL {
            assert_eq!(RunEvent::parse(event.as_str()), Some(*event));
        }
        assert_eq!(RunEvent::parse("from_a_newer_lifeboat"), None);
    }

    #[test]
    fn names_are_distinct() {
        let mut names: Vec<&str> = RunEvent::ALL.iter().map(|e| e.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), RunEvent::ALL.len());
    }

    /// Every event a notify rule may name is recorded under that name, and
    /// every one of them is reached from some run event.
    #[test]
    fn every_notify_event_is_a_run_event_of_the_same_name() {
        for e in RunEvent::ALL {
            if let Some(n) = e.notify_event() {
                assert_eq!(n.name(), e.as_str());
            }
        }
        // `drill_overdue` is about a workflow, not a run (triggers/overdue.rs).
        for n in Event::ALL.into_iter().filter(|n| *n != Event::DrillOverdue) {
            assert!(
                RunEvent::ALL.iter().any(|e| e.notify_event() == Some(n)),
                "no run event is notified as `{}`",
                n.name()
            );
        }
    }
}
