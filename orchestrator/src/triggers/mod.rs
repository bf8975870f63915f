//! What starts runs without a person: schedules (cron ticks). Webhooks are
//! received by the HTTP server; both read the live set of workflows through
//! [`crate::catalog::WorkflowSource`], which the catalog implements.

pub mod schedule;
