-- lifeboat schema, SQLite flavour. Times are unix milliseconds; JSON is TEXT.
-- The Postgres twin lives in migrations/postgres with the same shape.

-- Workflow sources by content hash: a run is pinned to the exact text it started with.
CREATE TABLE definitions (
    hash        TEXT PRIMARY KEY,
    workflow    TEXT NOT NULL,
    file        TEXT NOT NULL,
    source      TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE runs (
    id               TEXT PRIMARY KEY,          -- UUIDv7: sortable by creation
    workflow         TEXT NOT NULL,
    definition_hash  TEXT NOT NULL REFERENCES definitions(hash),
    status           TEXT NOT NULL,             -- queued running waiting succeeded failed rolling_back rolled_back rollback_failed cancelled
    inputs           TEXT NOT NULL,
    outputs          TEXT,
    trigger          TEXT NOT NULL,             -- {"kind": "manual"|"webhook"|"schedule"|"workflow", ...}
    concurrency_key  TEXT,
    parent_run_id    TEXT,
    parent_step_id   TEXT,
    root_run_id      TEXT NOT NULL,             -- the top of a tree of child runs
    cancelled_by     TEXT,                      -- set by `cancel`; the run ends `cancelled`
    paused           INTEGER NOT NULL DEFAULT 0,
    error            TEXT,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    wake_at          INTEGER,                   -- due for attention at; NULL: now
    woken            INTEGER NOT NULL DEFAULT 0, -- woken (request, child ended) since last claimed: a release keeps it due
    lease_owner      TEXT,
    lease_expires_at INTEGER
);
CREATE INDEX runs_claimable ON runs (wake_at) WHERE status IN ('queued', 'running', 'waiting', 'rolling_back');
CREATE INDEX runs_by_workflow ON runs (workflow, created_at);
CREATE INDEX runs_by_root ON runs (root_run_id);
CREATE INDEX runs_by_lease_owner ON runs (lease_owner) WHERE lease_owner IS NOT NULL;
CREATE INDEX runs_by_concurrency ON runs (concurrency_key) WHERE concurrency_key IS NOT NULL;

CREATE TABLE steps (
    run_id       TEXT NOT NULL REFERENCES runs(id),
    step_id      TEXT NOT NULL,
    status       TEXT NOT NULL,       -- pending running retry_wait waiting needs_human succeeded failed skipped cancelled rolled_back
    attempts     INTEGER NOT NULL DEFAULT 0,
    outputs      TEXT,
    error        TEXT,
    started_at   INTEGER,
    finished_at  INTEGER,
    wake_at      INTEGER,             -- retry_wait / waiting: due at
    state        TEXT,                -- kind-specific durable state (poll deadline, for_each progress, child run)
    rollback     TEXT,                -- NULL, or pending running succeeded failed
    PRIMARY KEY (run_id, step_id)
);

-- Every execution of a step body, recorded before its side effect starts.
CREATE TABLE attempts (
    run_id       TEXT NOT NULL,
    step_id      TEXT NOT NULL,
    phase        TEXT NOT NULL,       -- forward | rollback
    n            INTEGER NOT NULL,
    status       TEXT NOT NULL,       -- running succeeded failed interrupted
    worker       TEXT NOT NULL,
    pgid         INTEGER,             -- process group of a shell attempt, to clean up after a crash
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER,
    error        TEXT,
    stdout       TEXT,
    stderr       TEXT,
    PRIMARY KEY (run_id, step_id, phase, n)
);

-- Append-only history of every transition.
CREATE TABLE events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id   TEXT NOT NULL,
    at       INTEGER NOT NULL,
    kind     TEXT NOT NULL,
    step_id  TEXT,
    data     TEXT
);
CREATE INDEX events_by_run ON events (run_id, id);

-- Operator requests (cancel, pause, skip, mark, ...) for whichever worker owns the run.
CREATE TABLE requests (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id   TEXT NOT NULL,
    kind     TEXT NOT NULL,
    step_id  TEXT,
    data     TEXT,
    actor    TEXT NOT NULL,
    at       INTEGER NOT NULL,
    done_at  INTEGER
);
CREATE INDEX requests_open ON requests (run_id) WHERE done_at IS NULL;

CREATE TABLE workers (
    id            TEXT PRIMARY KEY,
    host          TEXT NOT NULL,
    pid           INTEGER NOT NULL,
    started_at    INTEGER NOT NULL,
    heartbeat_at  INTEGER NOT NULL
);
