//! lifeboat: a workflow-driven disaster-recovery orchestrator.
//!
//! `model` is the workflow file as types, `compile` turns a file into a
//! graph or diagnostics, `exec` holds the executor's step kinds, `viz`
//! draws graphs, `cli` is the command line, `text` makes outside text safe
//! to print.

pub mod audit_anchor;
pub mod catalog;
pub mod cli;
pub mod compile;
pub mod config;
pub mod events;
pub mod exec;
pub mod metrics;
pub mod model;
pub mod schema;
pub mod serve;
pub mod store;
pub mod text;
pub mod triggers;
pub mod viz;
