//! Postgres wake-ups across replicas: a write that can make a run due sends
//! `NOTIFY` on the schema's channel inside its own transaction (delivered
//! when, and only if, it commits), and every worker `LISTEN`s on a
//! connection of its own. A listener that loses its connection reconnects
//! and rings once for whatever it missed; until it is back, the workers'
//! poll finds the work.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgConnection;
use sqlx::postgres::{PgListener, PgPool};

use crate::store::{Doorbell, Result, Wake};

/// The channel of the deployment in `schema`: two deployments in one
/// database do not wake each other.
pub(super) fn channel(schema: &str) -> String {
    format!("lifeboat_wake:{schema}")
}

/// Queues `wake` for the other replicas on `conn`'s open transaction: sent
/// when, and only if, it commits.
pub(super) async fn announce(conn: &mut PgConnection, channel: &str, wake: &Wake) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)").bind(channel).bind(wake.encode()).execute(conn).await?;
    Ok(())
}

/// Listens on `channel` for as long as the process runs, ringing `bell`.
pub(super) async fn hear(pool: PgPool, channel: String, bell: Arc<Doorbell>) {
    let mut failures = 0u32;
    loop {
        match listen_once(&pool, &channel, &bell).await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, "Listening for other replicas' wake-ups failed; polling until it is back.");
            }
        }
        // Whatever was sent while nobody listened.
        bell.ring(&Wake::Due);
        tokio::time::sleep(Duration::from_millis(200) * failures.min(25)).await;
    }
}

/// One listening connection, until it fails for good.
async fn listen_once(pool: &PgPool, channel: &str, bell: &Doorbell) -> Result<()> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(channel).await?;
    bell.ring(&Wake::Due);
    loop {
        match listener.try_recv().await? {
            Some(notification) => bell.ring(&Wake::decode(notification.payload())),
            // The connection dropped and sqlx listens again on a new one:
            // what was sent in between is lost, so look for work once.
            None => {
                tracing::warn!("The connection listening for wake-ups was lost and is back.");
                bell.ring(&Wake::Due);
            }
        }
    }
}
