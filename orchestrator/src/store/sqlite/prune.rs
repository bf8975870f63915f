//! Retention's SQL on SQLite (`store::prune` decides what goes): each batch
//! is one `BEGIN IMMEDIATE` transaction under the store's write lock, so
//! workers queue behind it for one short batch at most; a list of ids is a
//! JSON array read back with `json_each`.

use super::*;
use crate::store::prune::{self, PruneTx, TreeRun, with_shared_pruning};

/// Membership in the JSON array bound as `$1`.
pub(crate) const IN_ROOTS: &str = "IN (SELECT value FROM json_each($1))";

/// A write transaction, as `prune::batch` deletes through it.
pub(super) struct Pruning<'a>(pub(super) &'a mut Transaction<'static, Sqlite>);

fn list(ids: &[String]) -> String {
    serde_json::to_string(ids).expect("strings are JSON")
}

with_shared_pruning! {
in = IN_ROOTS, bind = list;
#[async_trait::async_trait]
impl PruneTx for Pruning<'_> {
    async fn trees(&mut self, roots: &[String], _lock: bool) -> Result<Vec<TreeRun>> {
        // The write lock is held: nothing changes these rows until commit.
        let rows: Vec<prune::TreeRow> =
            sqlx::query_as(&prune::TREE_SQL.replace("{in_roots}", IN_ROOTS))
                .bind(list(roots))
                .fetch_all(&mut **self.0)
                .await?;
        Ok(prune::tree_runs(rows))
    }
}
}

impl SqliteStore {
    pub(super) async fn prune_runs_batch(
        &self,
        policy: &PrunePolicy,
        after: Option<&PruneCursor>,
        limit: usize,
        dry_run: bool,
    ) -> Result<PruneBatch> {
        if dry_run {
            // Reads only: no write lock, nobody waits.
            let mut tx = self.pool.begin().await?;
            return prune::batch(&mut Pruning(&mut tx), policy, after, limit, true).await;
        }
        let (_guard, mut tx) = self.write().await?;
        let batch = prune::batch(&mut Pruning(&mut tx), policy, after, limit, false).await?;
        tx.commit().await?;
        Ok(batch)
    }

    pub(super) async fn prune_markers_batch(
        &self,
        ticks_before: Option<i64>,
        now: i64,
        limit: usize,
        dry_run: bool,
    ) -> Result<Pruned> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut pruned = Pruned::default();
        if dry_run {
            if let Some(before) = ticks_before {
                let n: i64 = sqlx::query_scalar(&prune::ticks_sql(false))
                    .bind(before)
                    .fetch_one(&self.pool)
                    .await?;
                pruned.schedule_ticks = n.max(0) as u64;
            }
            let n: i64 = sqlx::query_scalar(&prune::signatures_sql(false, ""))
                .bind(now)
                .fetch_one(&self.pool)
                .await?;
            pruned.webhook_signatures = n.max(0) as u64;
            return Ok(pruned);
        }
        let (_guard, mut tx) = self.write().await?;
        if let Some(before) = ticks_before {
            pruned.schedule_ticks = sqlx::query(&prune::ticks_sql(true))
                .bind(before)
                .bind(limit)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        pruned.webhook_signatures = sqlx::query(&prune::signatures_sql(true, ""))
            .bind(now)
            .bind(limit)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(pruned)
    }
}
