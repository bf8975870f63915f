//! The events of a run that notification rules can subscribe to.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Started,
    Succeeded,
    Failed,
    RolledBack,
    RollbackFailed,
    Cancelled,
    StepFailed,
    ApprovalRequested,
    NeedsHuman,
    Escalated,
    RtoBreached,
    /// Not about a run: a workflow's drills are older than its
    /// `objectives.drill_every` (once per overdue period).
    DrillOverdue,
}

impl Event {
    pub const ALL: [Event; 12] = [
        Event::Started,
        Event::Succeeded,
        Event::Failed,
        Event::RolledBack,
        Event::RollbackFailed,
        Event::Cancelled,
        Event::StepFailed,
        Event::ApprovalRequested,
        Event::NeedsHuman,
        Event::Escalated,
        Event::RtoBreached,
        Event::DrillOverdue,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Event::Started => "started",
            Event::Succeeded => "succeeded",
            Event::Failed => "failed",
            Event::RolledBack => "rolled_back",
            Event::RollbackFailed => "rollback_failed",
            Event::Cancelled => "cancelled",
            Event::StepFailed => "step_failed",
            Event::ApprovalRequested => "approval_requested",
            Event::NeedsHuman => "needs_human",
            Event::Escalated => "escalated",
            Event::RtoBreached => "rto_breached",
            Event::DrillOverdue => "drill_overdue",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_serde() {
        for e in Event::ALL {
            assert_eq!(serde_json::to_value(e).unwrap(), e.name());
        }
    }
}
