-- Retention (store/prune.rs): the pruner walks ended runs oldest first and
-- deletes every row keyed by them, without reading history to do it.
-- Twin: migrations/sqlite/0007_retention.sql.

-- Ended runs in the order they ended (active runs have no finished_at).
CREATE INDEX runs_ended ON runs (finished_at, id) WHERE finished_at IS NOT NULL;
-- A run's requests, answered ones included (requests_open holds only open ones).
CREATE INDEX requests_by_run ON requests (run_id);
-- Schedule ticks by age, for pruning all but each schedule's latest.
CREATE INDEX schedule_ticks_by_age ON schedule_ticks (tick_at);
-- outbox.run_id was the only run id without COLLATE "C": joined to runs.id
-- (COLLATE "C") it could not use outbox_by_run, so deleting a run's
-- notifications read the whole outbox. A collation change rewrites no
-- rows; outbox_by_run is rebuilt.
ALTER TABLE outbox ALTER COLUMN run_id TYPE TEXT COLLATE "C";
