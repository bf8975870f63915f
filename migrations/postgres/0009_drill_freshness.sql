-- Drill freshness and predicted RTO (issue #14, parts 4 and 5).
-- Twin: migrations/sqlite/0009_drill_freshness.sql.

-- The newest drill with a verdict per (workflow, scenario, verdict): what
-- "last drilled N days ago (passed|failed)" reads, one row per key, written
-- in the commit that records the verdict (never a scan of the drill
-- history). `scenario` is '' for a drill run without one. It outlives the
-- runs it names: retention may delete a drill, its freshness stays.
CREATE TABLE drill_freshness (
    workflow  TEXT NOT NULL,
    scenario  TEXT NOT NULL,
    verdict   TEXT NOT NULL,               -- passed | failed
    run_id    TEXT NOT NULL,
    at        BIGINT NOT NULL,            -- when that drill ended (unix ms)
    PRIMARY KEY (workflow, scenario, verdict)
);
-- Drills that ended before this migration: the newest of each key.
INSERT INTO drill_freshness (workflow, scenario, verdict, run_id, at)
SELECT DISTINCT ON (workflow, COALESCE(scenario, ''), (verdict->>'passed')::boolean)
       workflow, COALESCE(scenario, ''),
       CASE WHEN (verdict->>'passed')::boolean THEN 'passed' ELSE 'failed' END,
       id, COALESCE(finished_at, created_at)
FROM runs WHERE mode = 'drill' AND verdict IS NOT NULL
ORDER BY workflow, COALESCE(scenario, ''), (verdict->>'passed')::boolean,
         COALESCE(finished_at, created_at) DESC;

-- A `drill_overdue` notification fires once per overdue period of each
-- scenario, across every replica: the period's row is inserted with its
-- notifications, and its primary key lets exactly one replica do it (as
-- `schedule_ticks` does for ticks). `due_at`: when the scenario's last
-- passing drill went stale (0: it never passed).
CREATE TABLE drill_overdue (
    workflow  TEXT NOT NULL,
    scenario  TEXT NOT NULL,
    due_at    BIGINT NOT NULL,
    fired_at  BIGINT NOT NULL,
    PRIMARY KEY (workflow, scenario, due_at)
);

-- Predicted RTO: the last N successful runs of a workflow in one mode
-- (live or drill), newest first, without reading older history.
CREATE INDEX runs_succeeded_by_workflow ON runs (workflow, mode, id) WHERE status = 'succeeded';
