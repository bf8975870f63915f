-- The child workflows a run may start, pinned when its run tree began:
-- a JSON object {workflow name: definition hash}. NULL on runs created
-- before pinning existed (their children are resolved by name when started).
ALTER TABLE runs ADD COLUMN pins JSONB;
