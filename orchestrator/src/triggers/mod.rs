//! What starts runs without a person: schedules (cron ticks). Webhooks are
//! received by the HTTP server; both read the live set of workflows through
//! [`WorkflowSource`], which `serve`'s catalog implements.

pub mod schedule;

use std::sync::Arc;

use crate::compile::CompiledWorkflow;

/// The workflows whose triggers are live now (the catalog of `serve`:
/// every valid file of the workflows directory, reloaded when it changes).
#[async_trait::async_trait]
pub trait WorkflowSource: Send + Sync {
    /// The current workflows.
    fn workflows(&self) -> Vec<Arc<CompiledWorkflow>>;

    /// Resolves when the set may have changed. The scheduler also looks
    /// again at least once a second, so a source that cannot tell may keep
    /// the default, which never resolves.
    async fn changed(&self) {
        std::future::pending::<()>().await
    }
}

/// A fixed set of workflows (tests, `lifeboat schedules`).
#[async_trait::async_trait]
impl WorkflowSource for Vec<Arc<CompiledWorkflow>> {
    fn workflows(&self) -> Vec<Arc<CompiledWorkflow>> {
        self.clone()
    }
}

/// Any closure returning the current workflows.
pub struct FnSource<F>(pub F);

#[async_trait::async_trait]
impl<F> WorkflowSource for FnSource<F>
where
    F: Fn() -> Vec<Arc<CompiledWorkflow>> + Send + Sync,
{
    fn workflows(&self) -> Vec<Arc<CompiledWorkflow>> {
        (self.0)()
    }
}
