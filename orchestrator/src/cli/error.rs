//! The CLI's own errors and its exit codes (docs/exit-codes.md). Commands
//! return `anyhow::Error`; the code comes from the typed error inside it —
//! its type and variant, never its text.

use crate::app::AppError;
use crate::config::ConfigError;
use crate::exec::ExecError;
use crate::store::StoreError;

/// An error in what the user asked for (exit 1), as opposed to a usage or
/// internal error (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

pub fn input_error(message: impl Into<String>) -> anyhow::Error {
    InputError(message.into()).into()
}

/// What the user named does not exist (exit 3): a workflow, a run.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotFound(pub String);

pub fn not_found(message: impl Into<String>) -> anyhow::Error {
    NotFound(message.into()).into()
}

/// The exit code of a command that failed with `e`.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if let Some(store) = e.downcast_ref::<StoreError>() {
        store_code(store)
    } else if let Some(exec) = e.downcast_ref::<ExecError>() {
        exec_code(exec)
    } else if let Some(app) = e.downcast_ref::<AppError>() {
        match app {
            AppError::Config(_) | AppError::Templates(_) => 1,
            AppError::Database { error, .. } => store_code(error),
        }
    } else if e.downcast_ref::<ConfigError>().is_some() || e.downcast_ref::<InputError>().is_some()
    {
        1
    } else if let Some(t) = e.downcast_ref::<crate::telemetry::TelemetryError>() {
        // A bad `OTEL_*` variable is bad input; an exporter that cannot be built is ours.
        match t {
            crate::telemetry::TelemetryError::Env { .. } => 1,
            crate::telemetry::TelemetryError::Exporter { .. } => 2,
        }
    } else if e.downcast_ref::<NotFound>().is_some() {
        3
    } else {
        2
    }
}

fn store_code(e: &StoreError) -> u8 {
    match e {
        StoreError::NotFound(_) => 3,
        StoreError::Unavailable(_) | StoreError::SchemaBehind(_) => 4,
        StoreError::Ambiguous { .. } | StoreError::Conflict(_) | StoreError::Config(_) => 1,
        StoreError::Corrupt { .. } | StoreError::Database(_) | StoreError::Sqlite(_) => 2,
    }
}

fn exec_code(e: &ExecError) -> u8 {
    match e {
        ExecError::Store(store) => store_code(store),
        // The run's own template does not render with the inputs given.
        ExecError::Render { .. } => 1,
        ExecError::CorruptState { .. }
        | ExecError::DefinitionMissing(_)
        | ExecError::Quarantine(_)
        | ExecError::Background(_) => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_come_from_the_error_inside_whatever_wraps_it() {
        let code = |e: anyhow::Error| exit_code(&e);
        let outage = || StoreError::Unavailable("connection refused".into());
        assert_eq!(code(outage().into()), 4);
        assert_eq!(code(anyhow::Error::new(outage()).context("listing runs")), 4);
        assert_eq!(code(ExecError::Store(outage()).into()), 4);
        let opening = AppError::Database { url: "sqlite://x.db".into(), error: outage() };
        assert_eq!(code(opening.into()), 4);
        assert_eq!(code(ExecError::Store(StoreError::NotFound("run 01".into())).into()), 3);
        assert_eq!(code(not_found("no workflow `x`")), 3);
        assert_eq!(code(ConfigError::Missing("nope.toml".into()).into()), 1);
        assert_eq!(code(AppError::Config(ConfigError::Invalid("bad".into())).into()), 1);
        let key = ExecError::Render { what: "concurrency key", message: "x".into() };
        assert_eq!(code(key.into()), 1);
        assert_eq!(code(input_error("bad --input")), 1);
        assert_eq!(code(ExecError::DefinitionMissing("abc".into()).into()), 2);
        assert_eq!(code(StoreError::corrupt("x").into()), 2);
        assert_eq!(code(anyhow::anyhow!("something else")), 2);
    }
}
