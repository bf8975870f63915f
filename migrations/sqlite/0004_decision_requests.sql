-- A person's decision on a step is queued once: while an approve, reject or
-- ack of theirs on that step waits for the run's worker, another is refused
-- (people::decide answers 409 first; this index makes it hold between
-- concurrent requests and replicas). Duplicates already open are closed
-- first, keeping each person's earliest, as decide now would have.
-- Twin: migrations/postgres/0004_decision_requests.sql.
UPDATE requests SET done_at = at
 WHERE done_at IS NULL AND kind IN ('approve', 'reject', 'ack')
   AND id NOT IN (SELECT MIN(id) FROM requests
                   WHERE done_at IS NULL AND kind IN ('approve', 'reject', 'ack')
                   GROUP BY run_id, step_id, actor);
CREATE UNIQUE INDEX requests_one_open_decision ON requests (run_id, step_id, actor)
    WHERE done_at IS NULL AND kind IN ('approve', 'reject', 'ack');
