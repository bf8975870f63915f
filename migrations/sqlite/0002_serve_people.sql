-- Triggers, audit log and notification outbox. Twin: migrations/postgres/0002_serve_people.sql.

-- Webhook dedupe: at most one active run of a workflow per alert fingerprint.
ALTER TABLE runs ADD COLUMN dedupe_key TEXT;
CREATE UNIQUE INDEX runs_dedupe ON runs (workflow, dedupe_key)
    WHERE dedupe_key IS NOT NULL AND status IN ('queued', 'running', 'waiting', 'rolling_back');

-- A schedule tick creates at most one run, ever (inserted with the run).
CREATE TABLE schedule_ticks (
    schedule  TEXT NOT NULL,
    tick_at   INTEGER NOT NULL,
    run_id    TEXT NOT NULL,
    PRIMARY KEY (schedule, tick_at)
);

-- Append-only, hash-chained: hash = sha256(prev_hash, fields, payload_sha256).
CREATE TABLE audit (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    at              INTEGER NOT NULL,
    actor           TEXT NOT NULL,
    action          TEXT NOT NULL,
    run_id          TEXT,
    step_id         TEXT,
    payload         TEXT NOT NULL,
    payload_sha256  TEXT NOT NULL,
    prev_hash       TEXT NOT NULL,
    hash            TEXT NOT NULL
);
CREATE INDEX audit_by_run ON audit (run_id) WHERE run_id IS NOT NULL;

-- Durable outbox: written in the transaction of the transition that caused
-- the notification; delivered at least once by a dispatcher.
CREATE TABLE outbox (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    dedupe_key    TEXT NOT NULL UNIQUE,        -- (run, event, channel, recipient): a restart never pages twice
    run_id        TEXT NOT NULL,
    step_id       TEXT,                        -- a notify step with `required: true` waits for it
    event         TEXT NOT NULL,
    channel       TEXT NOT NULL,
    message       TEXT NOT NULL,               -- lifeboat_notify::Message as JSON, rendered when queued
    status        TEXT NOT NULL,               -- pending delivered failed
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_at       INTEGER NOT NULL,            -- due at; a claim pushes it one lease ahead
    claimed_by    TEXT,
    last_error    TEXT,
    detail        TEXT,
    created_at    INTEGER NOT NULL,
    finished_at   INTEGER
);
CREATE INDEX outbox_due ON outbox (next_at) WHERE status = 'pending';
CREATE INDEX outbox_by_run ON outbox (run_id);
