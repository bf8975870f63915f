//! What starts runs without a person: schedules (cron ticks, live runs or
//! drills), and the `drill_overdue` notice (`overdue.rs`). Webhooks are
//! received by the HTTP server; both read the live set of workflows through
//! [`crate::catalog::WorkflowSource`], which the catalog implements.

pub mod overdue;
pub mod schedule;
