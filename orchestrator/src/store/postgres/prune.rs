//! Retention's SQL on Postgres (`store::prune` decides what goes): each
//! batch is one short transaction that first takes `PRUNE_LOCK`, so the
//! pruners of several replicas (and a `lifeboat prune` beside them) take
//! turns batch by batch and never delete the same rows twice; the trees a
//! batch deletes are locked (`FOR UPDATE`) before they are checked, so a
//! retry request cannot reopen a run between the check and the delete.

use super::*;
use crate::store::prune::{self, PruneTx, TreeRun, with_shared_pruning};

/// Membership in the `text[]` bound as `$1`.
pub(crate) const IN_ROOTS: &str = "= ANY($1)";

/// Advisory lock serializing pruners across replicas ("lbprune!").
const PRUNE_LOCK: i64 = 0x6c62_7072_756e_6521;

/// An open transaction, as `prune::batch` deletes through it.
pub(super) struct Pruning<'a>(pub(super) &'a mut Transaction<'static, Postgres>);

with_shared_pruning! {
in = IN_ROOTS, bind = std::convert::identity;
#[async_trait::async_trait]
impl PruneTx for Pruning<'_> {
    async fn trees(&mut self, roots: &[String], lock: bool) -> Result<Vec<TreeRun>> {
        let mut sql = prune::TREE_SQL.replace("{in_roots}", IN_ROOTS);
        if lock {
            // In id order, as claims and commits lock single rows: no cycle.
            sql.push_str(" ORDER BY id FOR UPDATE");
        }
        let rows: Vec<prune::TreeRow> =
            sqlx::query_as(&sql).bind(roots).fetch_all(&mut **self.0).await?;
        Ok(prune::tree_runs(rows))
    }
}
}

impl PostgresStore {
    pub(super) async fn prune_runs_batch(
        &self,
        policy: &PrunePolicy,
        after: Option<&PruneCursor>,
        limit: usize,
        dry_run: bool,
    ) -> Result<PruneBatch> {
        retrying(|| async {
            let mut tx = self.pool.begin().await?;
            if !dry_run {
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(PRUNE_LOCK)
                    .execute(&mut *tx)
                    .await?;
            }
            let batch = prune::batch(&mut Pruning(&mut tx), policy, after, limit, dry_run).await?;
            tx.commit().await?;
            Ok(batch)
        })
        .await
    }

    pub(super) async fn prune_markers_batch(
        &self,
        ticks_before: Option<i64>,
        now: i64,
        limit: usize,
        dry_run: bool,
    ) -> Result<Pruned> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        retrying(|| async {
            let mut pruned = Pruned::default();
            let mut tx = self.pool.begin().await?;
            if dry_run {
                if let Some(before) = ticks_before {
                    let n: i64 = sqlx::query_scalar(&prune::ticks_sql(false))
                        .bind(before)
                        .fetch_one(&mut *tx)
                        .await?;
                    pruned.schedule_ticks = n.max(0) as u64;
                }
                let n: i64 = sqlx::query_scalar(&prune::signatures_sql(false, ""))
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?;
                pruned.webhook_signatures = n.max(0) as u64;
                return Ok(pruned);
            }
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(PRUNE_LOCK)
                .execute(&mut *tx)
                .await?;
            if let Some(before) = ticks_before {
                pruned.schedule_ticks = sqlx::query(&prune::ticks_sql(true))
                    .bind(before)
                    .bind(limit)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            // SKIP LOCKED: `remember_signature` prunes these too, on every webhook.
            pruned.webhook_signatures =
                sqlx::query(&prune::signatures_sql(true, " FOR UPDATE SKIP LOCKED"))
                    .bind(now)
                    .bind(limit)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            tx.commit().await?;
            Ok(pruned)
        })
        .await
    }
}
