//! lifeboat: a workflow-driven disaster-recovery orchestrator.
//!
//! `model` is the workflow file as types, `kinds` every kind a step can
//! use, `compile` turns a file into a graph or diagnostics, `exec` runs
//! them, `app` wires config, store and engine together for `serve` (HTTP)
//! and `cli` (the command line), which show runs through `views`. `viz`
//! draws graphs, `text` makes outside text safe to print. ARCHITECTURE.md
//! gives the layer order, which `layers.rs` enforces.

pub mod app;
pub mod audit_anchor;
pub mod catalog;
pub mod cli;
pub mod compile;
pub mod config;
pub mod doctor;
pub mod events;
pub mod exec;
pub mod kinds;
#[cfg(test)]
mod layers;
pub mod metrics;
pub mod model;
pub mod retention;
pub mod schema;
pub mod serve;
pub mod store;
pub mod suggest;
pub mod telemetry;
pub mod text;
pub mod triggers;
pub mod views;
pub mod viz;
