//! The executor: `engine` (worker loop, leases, heartbeat), `driver` (one
//! run's state machine, which runs the engine-native step kinds of
//! `crate::kinds` by suspending the run on a durable condition instead of
//! sleeping), `render` (templates), `backoff`, `inputs`, and
//! `runtime` (what a driver needs, below both engine and driver).

pub mod backoff;
pub mod controls;
pub mod dispatcher;
pub mod drill;
pub mod driver;
pub mod engine;
mod error;
pub mod freshness;
pub mod inputs;
pub mod links;
pub mod measured;
pub mod notifier;
pub mod people;
pub mod render;
pub mod runtime;

pub use error::{ExecError, ExecResult};
