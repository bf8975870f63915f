-- Run modes (issue #14): a run is `live` or a `drill`. A drill carries its
-- scenario, its faults and expectations (`drill`, read with the run: no
-- extra query per step), and, once it ended, its verdict — written in the
-- commit that ends the run. Twin: migrations/sqlite/0008_run_modes.sql.
ALTER TABLE runs ADD COLUMN mode TEXT NOT NULL DEFAULT 'live';
-- The scenario a drill ran (NULL: faults given by hand, or a live run).
ALTER TABLE runs ADD COLUMN scenario TEXT;
-- {"scenario", "faults": [{"step", "fault"}], "expect": {...}}.
ALTER TABLE runs ADD COLUMN drill JSONB;
-- {"passed", "expectations": [{"what", "expected", "actual", "ok"}], "recovery_ms", "rto_ms"}.
ALTER TABLE runs ADD COLUMN verdict JSONB;
-- Drill history, newest first, in all and per workflow (`lifeboat drills`).
CREATE INDEX runs_drills ON runs (id) WHERE mode = 'drill';
CREATE INDEX runs_drills_by_workflow ON runs (workflow, id) WHERE mode = 'drill';
