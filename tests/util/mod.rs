//! Helpers shared by the end-to-end tests, one module per concern. Every
//! helper is re-exported here, so tests name it `crate::util::NAME`.

mod clock;
mod database;
mod documents;
mod http;
mod otlp;
mod poll;
mod process;
mod receivers;
mod sandbox;
mod sse;
mod users;

pub use clock::tick_ms;
pub use database::on_postgres;
pub use documents::{attempts, is_terminal, ms, step};
pub use http::{Api, Page, Reply, alertmanager_payload, free_port};
pub use otlp::{OtlpReceiver, SpanRecord, Stall};
pub use poll::eventually;
pub use process::{
    Serve, lifeboat, lifeboat_in, output_or_timeout, output_within, pid_alive, root, scratch,
    stderr, stdout, tool_missing,
};
pub use receivers::{Answer, Receiver, SmtpSink};
pub use sandbox::{Sandbox, crash_seed, exec_fixture};
pub use sse::{events_of, follow, until};
pub use users::users_toml;

// Reachable for tests, though none names them today (helpers return them).
#[allow(unused_imports)]
pub use {
    clock::FastClock,
    receivers::Received,
    sandbox::FAST_EXECUTOR,
    users::{USERS, token},
};
