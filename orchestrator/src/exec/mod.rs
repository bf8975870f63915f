//! The executor: `engine` (worker loop, leases, heartbeat), `driver` (one
//! run's state machine, which runs the engine-native step kinds of
//! `crate::kinds` by suspending the run on a durable condition instead of
//! sleeping), `render` (templates), `backoff`, `inputs`.

pub mod backoff;
pub mod dispatcher;
pub mod driver;
pub mod engine;
pub mod inputs;
pub mod links;
pub mod notifier;
pub mod people;
pub mod render;
