//! `ExecError`: what goes wrong driving a run, by kind, so callers (the
//! engine, `serve`, the CLI) can tell a corrupt run from a missing
//! definition from a database outage without reading message text.

use crate::store::StoreError;

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
    #[error(transparent)]
    Store(#[from] StoreError),
}
