//! Retention, once for both backends: which ended runs may be deleted and
//! in what order, and the SQL that deletes them. A backend supplies only its
//! transaction (SQLite: the write lock and `BEGIN IMMEDIATE`; Postgres: an
//! advisory lock serializing pruners across replicas, and row locks on the
//! trees it deletes) and how a list of ids is bound (`PruneTx`).
//!
//! A run is deleted only with its whole tree (a root run and every child
//! run below it, `root_run_id`), and a tree only when every run in it has
//! ended longer ago than its workflow's retention and none of its
//! notifications is still being delivered. So an active run, a run whose
//! parent (or any relative) is still active, and a run a notification waits
//! on are never touched. Deleting a tree removes every row keyed by its
//! runs (`RUN_TABLES`, `runs` last) in one transaction. The
//! audit log is never touched: its hash chain would break (`audit verify`),
//! and it is the evidence kept longest. Definitions stay too (shared by
//! runs, content-addressed, small).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::*;

/// How long ended runs are kept, resolved to cutoffs (unix ms) at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrunePolicy {
    /// Runs that ended before this may go; `None`: kept forever.
    pub cutoff: Option<i64>,
    /// Cutoffs replacing `cutoff` for the runs of these workflows.
    pub workflows: BTreeMap<String, Option<i64>>,
    /// Drill runs that ended before this may go, if their workflow's cutoff
    /// lets them too (the longer keep wins); `None`: kept forever.
    pub drills: Option<i64>,
    /// Only trees whose root run is of this workflow.
    pub only: Option<String>,
}

impl PrunePolicy {
    /// The cutoff of a run of `workflow`, a drill or not (`None`: kept
    /// forever).
    pub fn cutoff_of(&self, workflow: &str, drill: bool) -> Option<i64> {
        let cutoff = self.workflows.get(workflow).copied().unwrap_or(self.cutoff);
        match (drill, cutoff, self.drills) {
            (false, cutoff, _) => cutoff,
            // The longer keep: the earlier cutoff, and forever over both.
            (true, Some(run), Some(drill)) => Some(run.min(drill)),
            (true, _, _) => None,
        }
    }

    /// The newest cutoff of any workflow: no run that ended after it may go.
    fn scan_bound(&self) -> Option<i64> {
        self.workflows.values().chain([&self.cutoff]).flatten().copied().max()
    }

    /// The roots of the trees in `runs` that may go entirely: every run
    /// ended past its cutoff, no notification being delivered (`delivering`),
    /// and, with `only`, a root of that workflow.
    fn doomed(&self, runs: &[TreeRun], delivering: &BTreeSet<String>) -> Vec<String> {
        by_tree(runs)
            .into_iter()
            .filter(|(root, tree)| {
                !delivering.contains(*root)
                    && tree.iter().all(|run| self.may_delete(run))
                    && self.only.as_ref().is_none_or(|only| {
                        tree.iter().any(|r| r.id == r.root && &r.workflow == only)
                    })
            })
            .map(|(root, _)| root.to_string())
            .collect()
    }

    fn may_delete(&self, run: &TreeRun) -> bool {
        let ended = RunStatus::parse(&run.status).is_some_and(RunStatus::is_terminal);
        match (ended, run.finished_at, self.cutoff_of(&run.workflow, run.drill)) {
            (true, Some(at), Some(cutoff)) => at < cutoff,
            _ => false,
        }
    }
}

/// `runs` by the root of their tree.
fn by_tree(runs: &[TreeRun]) -> BTreeMap<&str, Vec<&TreeRun>> {
    let mut trees: BTreeMap<&str, Vec<&TreeRun>> = BTreeMap::new();
    for run in runs {
        trees.entry(run.root.as_str()).or_default().push(run);
    }
    trees
}

/// Where a pass over ended runs got to: the last run it looked at, in
/// (`finished_at`, `id`) order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneCursor {
    pub finished_at: i64,
    pub id: String,
}

/// Rows deleted (or, in a dry run, that would be), per table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Pruned {
    pub runs: u64,
    pub steps: u64,
    pub attempts: u64,
    pub events: u64,
    pub requests: u64,
    pub outbox: u64,
    pub schedule_ticks: u64,
    pub webhook_signatures: u64,
    /// When the oldest and newest of the deleted runs ended (unix ms).
    pub oldest_ended_at: Option<i64>,
    pub newest_ended_at: Option<i64>,
}

impl Pruned {
    pub fn add(&mut self, other: &Pruned) {
        self.runs += other.runs;
        self.steps += other.steps;
        self.attempts += other.attempts;
        self.events += other.events;
        self.requests += other.requests;
        self.outbox += other.outbox;
        self.schedule_ticks += other.schedule_ticks;
        self.webhook_signatures += other.webhook_signatures;
        self.oldest_ended_at = min_some(self.oldest_ended_at, other.oldest_ended_at);
        self.newest_ended_at = self.newest_ended_at.max(other.newest_ended_at);
    }

    /// Nothing was (or would be) deleted.
    pub fn is_empty(&self) -> bool {
        self.counts().iter().all(|(_, n)| *n == 0)
    }

    /// Each table and its count, in the order they are reported.
    pub fn counts(&self) -> [(&'static str, u64); 8] {
        [
            ("runs", self.runs),
            ("steps", self.steps),
            ("attempts", self.attempts),
            ("events", self.events),
            ("requests", self.requests),
            ("outbox", self.outbox),
            ("schedule_ticks", self.schedule_ticks),
            ("webhook_signatures", self.webhook_signatures),
        ]
    }
}

fn min_some(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What one batch did, and where the next one starts (`None`: the pass is over).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneBatch {
    pub pruned: Pruned,
    pub next: Option<PruneCursor>,
}

/// A run of a tree being considered.
#[derive(Debug, Clone)]
pub(crate) struct TreeRun {
    pub id: String,
    pub root: String,
    pub workflow: String,
    pub status: String,
    pub finished_at: Option<i64>,
    /// A drill run (kept `PrunePolicy::drills`).
    pub drill: bool,
}

/// Every table with rows of a run, with its count in `Pruned`: the tables
/// with a `run_id` column first (`steps` references `runs`), `runs` last.
/// The audit log is not one of them, ever; `schedule_ticks` is pruned by
/// age instead (`ticks_sql`), keeping each schedule's latest tick, which
/// the scheduler's catch-up starts from.
type Count = fn(&mut Pruned) -> &mut u64;
pub(crate) const RUN_TABLES: [(&str, Count); 6] = [
    ("attempts", |p| &mut p.attempts),
    ("events", |p| &mut p.events),
    ("requests", |p| &mut p.requests),
    ("outbox", |p| &mut p.outbox),
    ("steps", |p| &mut p.steps),
    ("runs", |p| &mut p.runs),
];

/// The oldest ended runs, after the cursor: `$1` bound, `($2, $3)` cursor,
/// `$4` limit. Served by `runs_ended` (migration 0007) without reading history.
pub(crate) const ENDED_SQL: &str = "SELECT finished_at, id, root_run_id FROM runs \
     WHERE finished_at < $1 AND (finished_at, id) > ($2, $3) ORDER BY finished_at, id LIMIT $4";

/// The runs of the trees `$1` (`{in_roots}`: the backend's test of membership in a bound list of ids).
pub(crate) const TREE_SQL: &str = "SELECT id, root_run_id, workflow, status, finished_at, mode FROM runs WHERE root_run_id {in_roots}";

/// The trees of `$1` with a notification still being delivered.
pub(crate) const DELIVERING_SQL: &str = "SELECT DISTINCT r.root_run_id FROM runs r \
     JOIN outbox o ON o.run_id = r.id WHERE r.root_run_id {in_roots} AND o.status = 'pending'";

/// `table`'s rows of the runs of the trees `$1`: deleted, or counted.
pub(crate) fn rows_sql(table: &str, delete: bool) -> String {
    let verb = if delete { "DELETE" } else { "SELECT COUNT(*)" };
    if table == "runs" {
        format!("{verb} FROM runs WHERE root_run_id {{in_roots}}")
    } else {
        format!(
            "{verb} FROM {table} WHERE run_id IN (SELECT id FROM runs WHERE root_run_id {{in_roots}})"
        )
    }
}

/// Schedule ticks older than `$1` that are not their schedule's latest;
/// `$2` limits a delete.
pub(crate) const TICKS_WHERE: &str = "t.tick_at < $1 AND t.tick_at < \
     (SELECT MAX(m.tick_at) FROM schedule_ticks m WHERE m.schedule = t.schedule)";

pub(crate) fn ticks_sql(delete: bool) -> String {
    if delete {
        format!(
            "DELETE FROM schedule_ticks WHERE (schedule, tick_at) IN \
             (SELECT t.schedule, t.tick_at FROM schedule_ticks t WHERE {TICKS_WHERE} LIMIT $2)"
        )
    } else {
        format!("SELECT COUNT(*) FROM schedule_ticks t WHERE {TICKS_WHERE}")
    }
}

/// Webhook signatures past their replay window (`$1` now); `$2` limits a delete.
pub(crate) fn signatures_sql(delete: bool, lock: &str) -> String {
    if delete {
        format!(
            "DELETE FROM webhook_signatures WHERE (hook, signature) IN \
             (SELECT hook, signature FROM webhook_signatures WHERE expires_at <= $1 LIMIT $2{lock})"
        )
    } else {
        "SELECT COUNT(*) FROM webhook_signatures WHERE expires_at <= $1".into()
    }
}

/// Every statement retention runs on the runs' tables, with `in_roots` for the
/// backend's membership test: for the query-plan tests.
#[cfg(test)]
pub(crate) fn statements(in_roots: &str) -> Vec<String> {
    let mut out = vec![ENDED_SQL.to_string(), TREE_SQL.into(), DELIVERING_SQL.into()];
    for (table, _) in RUN_TABLES {
        out.push(rows_sql(table, true));
        out.push(rows_sql(table, false));
    }
    out.push(ticks_sql(true));
    out.push(ticks_sql(false));
    out.push(signatures_sql(true, ""));
    out.iter().map(|s| s.replace("{in_roots}", in_roots)).collect()
}

/// One open transaction of a backend, as a batch prunes through it.
#[async_trait::async_trait]
pub(crate) trait PruneTx: Send {
    /// `ENDED_SQL`.
    async fn ended(
        &mut self,
        before: i64,
        after: Option<&PruneCursor>,
        limit: i64,
    ) -> Result<Vec<(i64, String, String)>>;
    /// `TREE_SQL`; when `lock`, the rows are locked until commit where the
    /// backend can (Postgres), so a retry cannot reopen a run being deleted.
    async fn trees(&mut self, roots: &[String], lock: bool) -> Result<Vec<TreeRun>>;
    /// `DELIVERING_SQL`.
    async fn delivering(&mut self, roots: &[String]) -> Result<Vec<String>>;
    /// Runs `rows_sql` for `roots`: rows deleted, or counted.
    async fn rows(&mut self, sql: &str, roots: &[String], delete: bool) -> Result<u64>;
}

/// Wraps a backend's `impl PruneTx` (which writes `trees`), adding the
/// methods that differ only in how the list of root ids is bound: `$in` is
/// the backend's membership test for `{in_roots}`, `$bind` turns `&[String]`
/// into what it binds.
macro_rules! with_shared_pruning {
    (in = $in:expr, bind = $bind:expr; $(#[$attr:meta])* impl PruneTx for $tx:ty { $($own:tt)* }) => {
        $(#[$attr])*
        impl PruneTx for $tx {
            $($own)*

            async fn ended(
                &mut self,
                before: i64,
                after: Option<&PruneCursor>,
                limit: i64,
            ) -> Result<Vec<(i64, String, String)>> {
                Ok(sqlx::query_as(prune::ENDED_SQL)
                    .bind(before)
                    .bind(after.map_or(i64::MIN, |c| c.finished_at))
                    .bind(after.map_or("", |c| c.id.as_str()))
                    .bind(limit)
                    .fetch_all(&mut **self.0)
                    .await?)
            }

            async fn delivering(&mut self, roots: &[String]) -> Result<Vec<String>> {
                Ok(sqlx::query_scalar(&prune::DELIVERING_SQL.replace("{in_roots}", $in))
                    .bind($bind(roots))
                    .fetch_all(&mut **self.0)
                    .await?)
            }

            async fn rows(&mut self, sql: &str, roots: &[String], delete: bool) -> Result<u64> {
                let query = sql.replace("{in_roots}", $in);
                if delete {
                    let done = sqlx::query(&query).bind($bind(roots)).execute(&mut **self.0).await?;
                    Ok(done.rows_affected())
                } else {
                    let n: i64 =
                        sqlx::query_scalar(&query).bind($bind(roots)).fetch_one(&mut **self.0).await?;
                    Ok(n.max(0) as u64)
                }
            }
        }
    };
}
pub(crate) use with_shared_pruning;

/// The rows of `TREE_SQL`.
pub(crate) type TreeRow = (String, String, String, String, Option<i64>, String);

/// `TREE_SQL`'s rows as runs.
pub(crate) fn tree_runs(rows: Vec<TreeRow>) -> Vec<TreeRun> {
    rows.into_iter()
        .map(|(id, root, workflow, status, finished_at, mode)| TreeRun {
            id,
            root,
            workflow,
            status,
            finished_at,
            drill: RunMode::parse(&mode) == Some(RunMode::Drill),
        })
        .collect()
}

/// One batch: the next `limit` ended runs after `after`; the trees rooted
/// at them that may go entirely are deleted (or counted, `dry_run`).
pub(crate) async fn batch(
    tx: &mut impl PruneTx,
    policy: &PrunePolicy,
    after: Option<&PruneCursor>,
    limit: usize,
    dry_run: bool,
) -> Result<PruneBatch> {
    let Some(bound) = policy.scan_bound() else {
        return Ok(PruneBatch::default());
    };
    let ended = tx.ended(bound, after, i64::try_from(limit).unwrap_or(i64::MAX)).await?;
    let Some((finished_at, id, _)) = ended.last() else {
        return Ok(PruneBatch::default());
    };
    let next = Some(PruneCursor { finished_at: *finished_at, id: id.clone() });
    // Each tree is considered once per pass, when the pass reaches its root
    // (children are found from it): a dry run counts a tree once, as the
    // delete deletes it once.
    let roots: Vec<String> =
        ended.iter().filter(|(_, id, root)| id == root).map(|(_, id, _)| id.clone()).collect();
    if roots.is_empty() {
        return Ok(PruneBatch { pruned: Pruned::default(), next });
    }
    let delivering: BTreeSet<String> = tx.delivering(&roots).await?.into_iter().collect();
    let mut runs = tx.trees(&roots, false).await?;
    let mut doomed = policy.doomed(&runs, &delivering);
    if !dry_run && !doomed.is_empty() {
        // Locked, then checked again: a retry may have reopened one meanwhile.
        // Only whole ended trees are locked, which no worker holds.
        runs = tx.trees(&doomed, true).await?;
        doomed = policy.doomed(&runs, &delivering);
    }
    let trees = by_tree(&runs);
    let mut pruned = Pruned::default();
    if doomed.is_empty() {
        return Ok(PruneBatch { pruned, next });
    }
    for (table, count) in RUN_TABLES {
        *count(&mut pruned) = tx.rows(&rows_sql(table, !dry_run), &doomed, !dry_run).await?;
    }
    let ended_at =
        doomed.iter().flat_map(|root| &trees[root.as_str()]).filter_map(|r| r.finished_at);
    pruned.oldest_ended_at = ended_at.clone().min();
    pruned.newest_ended_at = ended_at.max();
    Ok(PruneBatch { pruned, next })
}
