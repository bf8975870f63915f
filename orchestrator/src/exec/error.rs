//! `ExecError`: what goes wrong submitting or driving a run, by kind, so
//! callers (the engine, `serve`, the CLI) can tell a corrupt run from a
//! missing definition from a database outage without reading message text.

use crate::store::StoreError;

/// The result of everything in `exec`.
pub type ExecResult<T> = Result<T, ExecError>;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// A step row's `state` or `rollback` column cannot be read: the run
    /// cannot be resumed safely, so it is failed (quarantined), not guessed at.
    #[error(
        "run {run}, step `{step}`: the stored {what} cannot be read ({source}); the run is \
         failed rather than resumed on a guess: inspect it with `lifeboat show {run}`"
    )]
    CorruptState {
        run: String,
        step: String,
        /// `state` or `rollback`.
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// The definition a run is pinned to is not in the store.
    #[error(
        "definition {0} is missing from the store: the run cannot be driven (was the database \
         restored from a backup older than the run?)"
    )]
    DefinitionMissing(String),
    /// A run that can never be driven (its stored definition does not
    /// compile, or driving it panicked): it is failed with this reason
    /// instead of being handed back to be claimed again and again.
    #[error("{0}")]
    Quarantine(String),
    /// A template the run needs before it starts (its concurrency key)
    /// does not render with the run's inputs: the submission is refused.
    #[error("{what}: {message}")]
    Render { what: &'static str, message: String },
    /// Blocking work (loading the catalog, compiling a stored definition)
    /// could not be finished: its thread panicked or the runtime is
    /// shutting down.
    #[error("background task failed: {0}")]
    Background(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ExecError {
    /// Why the run must be quarantined (failed, never claimed again), if
    /// this error means it can never be driven.
    pub fn quarantine_reason(&self) -> Option<String> {
        match self {
            ExecError::Quarantine(reason) => Some(reason.clone()),
            ExecError::CorruptState { .. } => Some(self.to_string()),
            _ => None,
        }
    }

    /// The store error behind this one, if it is one.
    pub fn store(&self) -> Option<&StoreError> {
        match self {
            ExecError::Store(e) => Some(e),
            _ => None,
        }
    }
}
