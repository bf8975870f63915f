//! Delivers the outbox: claims due rows (a lease per row, so several
//! dispatchers on one database share the work and a dead one's rows are
//! taken over), sends each through its channel once per attempt, and
//! records the outcome. At least once: a crash between sending and
//! recording sends that one message again, with the same idempotency key.
//!
//! Retries only what may succeed later (429, 5xx, connection errors,
//! SMTP 4xx), after the server's `Retry-After` or an exponential backoff;
//! a channel that keeps failing never blocks or fails a run (unless a
//! `notify` step is `required: true`, and then only that step).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use lifeboat_notify::{Channel, ChannelConfig, Message, SendError};
use tokio_util::sync::CancellationToken;

use crate::store::{OutboxOutcome, OutboxRecord, Store, now_ms};

/// Attempts before a message is given up as failed.
pub const MAX_ATTEMPTS: u32 = 8;
/// How long a claimed row is ours before another dispatcher may take it
/// (a dispatcher killed mid-send delays that message by at most this).
const CLAIM_LEASE_MS: i64 = 20_000;
/// One delivery attempt may take this long; well under the claim, so a
/// live dispatcher always records its outcome before anyone else may send.
const SEND_TIMEOUT: Duration = Duration::from_secs(15);
const BATCH: usize = 32;

pub struct Dispatcher {
    store: Arc<dyn Store>,
    worker: String,
    configs: IndexMap<String, ChannelConfig>,
    /// Built once per channel; a configuration error is kept and reported per message.
    channels: HashMap<String, Result<Arc<dyn Channel>, String>>,
    /// Delay unit of the backoff (tests shorten it).
    pub backoff_unit: Duration,
    pub poll: Duration,
}

impl Dispatcher {
    pub fn new(
        store: Arc<dyn Store>,
        worker: String,
        configs: IndexMap<String, ChannelConfig>,
    ) -> Self {
        let backoff_ms = std::env::var("LIFEBOAT_NOTIFY_BACKOFF_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        Dispatcher {
            store,
            worker,
            configs,
            channels: HashMap::new(),
            backoff_unit: Duration::from_millis(backoff_ms),
            poll: Duration::from_millis(200),
        }
    }

    /// Runs until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let sent = match self.deliver_due().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "Outbox: could not claim notifications; retrying.");
                    0
                }
            };
            if sent == 0 {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(self.poll) => {}
                }
            } else if shutdown.is_cancelled() {
                return;
            }
        }
    }

    /// One round: claims and delivers what is due. Returns how many rows it handled.
    pub async fn deliver_due(&mut self) -> crate::store::Result<usize> {
        let rows = self.store.outbox_claim(&self.worker, now_ms(), CLAIM_LEASE_MS, BATCH).await?;
        let count = rows.len();
        let mut sends = Vec::new();
        for row in rows {
            let channel = self.channel(&row.channel);
            sends.push(async move {
                let outcome = deliver(channel, &row).await;
                (row, outcome)
            });
        }
        for (row, result) in futures_util::future::join_all(sends).await {
            let outcome = self.outcome(&row, result);
            crate::metrics::notification(&row.channel, outcome_name(&outcome));
            if let Err(e) = self.store.outbox_finish(row.id, outcome).await {
                // The claim lease runs out and the row is sent again (at least once).
                tracing::warn!(error = %e, id = row.id, "Outbox: could not record a delivery.");
            }
        }
        Ok(count)
    }

    fn channel(&mut self, name: &str) -> Result<Arc<dyn Channel>, String> {
        if let Some(c) = self.channels.get(name) {
            return c.clone();
        }
        let built = match self.configs.get(name) {
            None => Err(format!("channel `{name}` is not configured in lifeboat.toml")),
            Some(config) => lifeboat_notify::build(name, config, &|k| std::env::var(k).ok())
                .map(Arc::from)
                .map_err(|e| e.to_string()),
        };
        self.channels.insert(name.to_string(), built.clone());
        built
    }

    fn outcome(&self, row: &OutboxRecord, result: Result<String, SendError>) -> OutboxOutcome {
        match result {
            Ok(detail) => OutboxOutcome::Delivered { detail },
            Err(SendError::Retryable { message, retry_after }) if row.attempts < MAX_ATTEMPTS => {
                let backoff = self.backoff_unit.as_millis() as i64 * (1i64 << row.attempts.min(10));
                let wait = retry_after.map(|d| d.as_millis() as i64).unwrap_or(backoff);
                OutboxOutcome::Retry { error: message, at: now_ms() + wait.max(1) }
            }
            Err(SendError::Retryable { message, .. }) => OutboxOutcome::Failed {
                error: format!("{message} (gave up after {} attempts)", row.attempts),
            },
            Err(SendError::Permanent(message)) => OutboxOutcome::Failed { error: message },
        }
    }
}

fn outcome_name(outcome: &OutboxOutcome) -> &'static str {
    match outcome {
        OutboxOutcome::Delivered { .. } => "delivered",
        OutboxOutcome::Retry { .. } => "retry",
        OutboxOutcome::Failed { .. } => "failed",
    }
}

async fn deliver(
    channel: Result<Arc<dyn Channel>, String>,
    row: &OutboxRecord,
) -> Result<String, SendError> {
    let channel = channel.map_err(SendError::Permanent)?;
    let message: Message = serde_json::from_value(row.message.clone())
        .map_err(|e| SendError::Permanent(format!("stored message is unreadable: {e}")))?;
    match tokio::time::timeout(SEND_TIMEOUT, channel.send(&message)).await {
        Ok(result) => result.map(|d| d.detail),
        Err(_) => {
            Err(SendError::retryable(format!("no answer within {}s", SEND_TIMEOUT.as_secs())))
        }
    }
}
