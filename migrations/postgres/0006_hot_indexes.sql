-- Indexes for the hot queries, so that what a worker, `pending` or a page of
-- `runs` costs follows the active runs, not the history. Each query and its
-- plan: docs/query-plans.md (kept current by orchestrator/src/store/plans.rs).
-- Twin: migrations/sqlite/0006_hot_indexes.sql (the same statements).
--
-- A partial index over active runs only applies when a query repeats its
-- predicate: the store writes `status IN ('queued','running','waiting','rolling_back')`
-- exactly as below.
--
-- Postgres: these are plain CREATE INDEX (a migration runs in a transaction,
-- where CONCURRENTLY is refused), so on a large `runs` table writers wait
-- while they are built, once, when the first replica of this version starts.

-- An older active run holding a concurrency key (the claim), the active run
-- of a key (`on_conflict: skip`). Replaces the index over every run with a
-- key. (The active runs themselves are found through `runs_claimable`, the
-- partial index of 0001, or the `(status, id)` ranges of active statuses.)
CREATE INDEX runs_active_by_concurrency ON runs (concurrency_key, id)
    WHERE status IN ('queued', 'running', 'waiting', 'rolling_back');
DROP INDEX runs_by_concurrency;

-- The run list, newest first, one page after a cursor (`before`): by status,
-- by workflow, by both. Ids are UUIDv7, so id order is creation order; the
-- list orders by id and the old (workflow, created_at) index goes.
-- `(status, id)` also serves the claim, `pending` and the metrics' counts:
-- four short ranges, one per active status.
CREATE INDEX runs_by_status ON runs (status, id);
CREATE INDEX runs_by_workflow_id ON runs (workflow, id);
CREATE INDEX runs_by_workflow_status ON runs (workflow, status, id);
DROP INDEX runs_by_workflow;

-- The dispatcher's claim: is an older row of the same run and channel still
-- pending (messages of one incident go out in order).
CREATE INDEX outbox_pending_by_run ON outbox (run_id, channel, id) WHERE status = 'pending';

-- Live workers: every `run --wait` registers one, so the table grows.
CREATE INDEX workers_by_heartbeat ON workers (heartbeat_at);
